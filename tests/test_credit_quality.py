"""Credit quality: the SQLWorld oracle labels, the pairwise AUC statistics and the benchmark script."""

from __future__ import annotations

import importlib.util
import itertools
import json
import random
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from finestep.agent.expert import expert_trajectory
from finestep.credit import ESTIMATORS, CreditConfig, StepBatch, compute_advantages
from finestep.credit import config as credit_config
from finestep.data.sqlworld import (
    ExpertConfig,
    OracleLabel,
    TaskMeta,
    World,
    build_world,
    label_values,
    oracle_labels,
    solution_correct,
)
from finestep.eval.credit_quality import (
    auc_group,
    auc_within,
    bad_positive_share,
    pair_counts,
    pairwise_auc,
)
from finestep.rewards import RewardStep
from finestep.sql.executor import ExecutionResult, execute

ROOT = Path(__file__).resolve().parents[1]


# --------------------------------------------------------------------------------------------------------
# Oracle labels on hand-built trajectories
# --------------------------------------------------------------------------------------------------------


def meta(required: bool = True, tier: str = "tier2") -> TaskMeta:
    """A tier2 task filtering customers on state: the question says California, the database stores CA."""
    probe = "SELECT DISTINCT state FROM customers" if tier != "tier1" else None
    return TaskMeta(
        "t", tier, "t2_count", "shop", "code" if required else "plain", probe,
        "California" if probe else None, ("CA" if required else "California") if probe else None,
        required and probe is not None, "SELECT count(*) FROM customers WHERE state = 'California'",
        "SELECT count(*) FROM customers WHERE stat = 'CA'", ("state", "stat"),
        "SELECT DISTINCT stat FROM customers" if probe else None, "SELECT DISTINCT tier FROM customers",
    )  # fmt: skip


def ok(columns: tuple[str, ...], *rows: tuple) -> ExecutionResult:
    return ExecutionResult(columns=columns, rows=tuple(rows))


ERROR = ExecutionResult(error_kind="error", error="no such column: stat")
STATES = ok(("state",), ("NY",), ("CA",), ("TX",))
PROBE = "SELECT DISTINCT state FROM customers"
ANSWER = "SELECT count(*) FROM customers WHERE state = 'CA'"


def sql(text: str, result: ExecutionResult | None) -> RewardStep:
    return RewardStep("sql", text, result)


def solution(text: str = ANSWER) -> RewardStep:
    return RewardStep("solution", text, ok(("count(*)",), (3,)))


def reasons(labels: list[OracleLabel]) -> list[str]:
    return [f"{label.label}:{label.reason}" for label in labels]


def test_clean_probe_then_answer() -> None:
    labels = oracle_labels([sql(PROBE, STATES), solution()], meta(), solved=True)
    assert reasons(labels) == ["good:required_probe", "good:correct"]
    assert label_values(labels) == [1, 1]


def test_repeated_wasted_and_second_lookup_are_bad() -> None:
    steps = [
        sql("SELECT DISTINCT tier FROM customers", ok(("tier",), ("GLD",))),  # a column the question does not need
        sql(PROBE, STATES),
        sql("select distinct STATE from customers;", STATES),  # the same query again (canonical form)
        sql("SELECT state, name FROM customers LIMIT 5", ok(("state", "name"), ("CA", "Ann"))),  # value known
        solution(),
    ]
    assert reasons(oracle_labels(steps, meta(), solved=True)) == [
        "bad:unneeded", "good:required_probe", "bad:repeated", "bad:unneeded", "good:correct",
    ]  # fmt: skip


def test_probe_not_required_is_unneeded_and_wrong_solution_is_bad() -> None:
    plain = ok(("state",), ("New York",), ("California",))
    labels = oracle_labels([sql(PROBE, plain), solution()], meta(required=False), solved=False)
    assert reasons(labels) == ["bad:unneeded", "bad:wrong"]
    tier1 = oracle_labels([sql("SELECT max(age) FROM customers", ok(("m",), (3,))), solution()], meta(tier="tier1"),
                          solved=True)  # fmt: skip
    assert reasons(tier1) == ["bad:unneeded", "good:correct"]


def test_failure_and_its_repair() -> None:
    steps = [sql("SELECT DISTINCT stat FROM customers", ERROR), sql(PROBE, STATES), solution()]
    assert reasons(oracle_labels(steps, meta(), solved=True)) == ["bad:error", "good:repair", "good:correct"]
    # A repair of a query that was not needed is still the right move once the query failed.
    plain = ok(("state",), ("California",))
    steps = [sql("SELECT DISTINCT stat FROM customers", ERROR), sql(PROBE, plain), solution()]
    assert reasons(oracle_labels(steps, meta(required=False), solved=True)) == [
        "bad:error", "good:repair", "good:correct",
    ]  # fmt: skip
    # Each failure is repaired once; an unrelated query after a failure repairs nothing; an error again is bad.
    steps = [
        sql("SELECT DISTINCT stat FROM customers", ERROR),
        sql("SELECT count(*) FROM orders WHERE amount > 250", ok(("c",), (4,))),
        sql("SELECT DISTINCT stat FROM customers", ERROR),
        sql(PROBE, STATES),
        sql("SELECT DISTINCT state FROM customers ORDER BY state", STATES),
    ]
    assert reasons(oracle_labels(steps, meta(), solved=False)) == [
        "bad:error", "bad:unneeded", "bad:error", "good:repair", "bad:unneeded",
    ]  # fmt: skip


def test_format_neutral_and_answer_checks() -> None:
    steps = [
        RewardStep("none", None, None, "no action"),
        RewardStep("sql", PROBE, STATES, truncated=True),
        sql(PROBE, None),  # never executed
        sql(ANSWER, ok(("count(*)",), (3,))),  # the answer run as a tool call
        solution(),
    ]
    labels = oracle_labels(steps, meta(), solved=True, matches_gold=[False, False, False, True, True])
    assert reasons(labels) == ["bad:format", "bad:format", "neutral:not_executed", "neutral:answer_check",
                               "good:correct"]  # fmt: skip
    assert label_values(labels) == [-1, -1, 0, 0, 1]
    # Without matches_gold, the answer check is an unneeded tool call.
    assert reasons(oracle_labels(steps[3:], meta(), solved=True)) == ["bad:unneeded", "good:correct"]
    with pytest.raises(ValueError, match="matches_gold"):
        oracle_labels(steps, meta(), solved=True, matches_gold=[True])


def test_lookup_counts_only_shown_rows_of_the_probed_column() -> None:
    late = ok(("state",), *[(f"S{i}",) for i in range(10)], ("CA",))
    assert reasons(oracle_labels([sql(PROBE, late)], meta(), True)) == ["bad:unneeded"]
    assert reasons(oracle_labels([sql(PROBE, late)], meta(), True, shown_rows=20)) == ["good:required_probe"]
    other_column = ok(("tier",), ("CA",))
    assert reasons(oracle_labels([sql("SELECT DISTINCT tier FROM customers", other_column)], meta(), True)) == [
        "bad:unneeded"
    ]
    star = ok(("id", "name", "state"), (1, "Ann", "CA"))
    assert reasons(oracle_labels([sql("SELECT * FROM customers", star)], meta(), True)) == ["good:required_probe"]


# --------------------------------------------------------------------------------------------------------
# Oracle labels on the scripted expert's trajectories
# --------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    return build_world(tmp_path_factory.mktemp("credit-quality") / "world", seed=0, n_train_dbs=4, n_test_dbs=0)


EXPECTED = {  # the expert's step role -> the reasons the oracle may give it
    "wasted_probe": {"bad:unneeded"},
    "redundant_probe": {"bad:repeated"},
    "failing_probe": {"bad:error"},
    "failing_query": {"bad:error"},
}


def test_oracle_agrees_with_the_expert_script(world: World) -> None:
    config = ExpertConfig(p_redundant_probe=0.4, p_fail_repair=0.4, p_skip_probe=0.3, p_wasted_probe=0.4)
    seen: set[str] = set()
    for task in world.train:
        task_meta = world.meta[task.id]
        for k in range(3):
            line = expert_trajectory(task, task_meta, config, random.Random(f"{task.id}:{k}"))
            views = [RewardStep(s["kind"], s["sql"], execute(task.db_path, s["sql"])) for s in line["steps"]]
            solved = solution_correct(line)
            labels = oracle_labels(views, task_meta, solved)
            roles = [s["role"] for s in line["steps"]]
            for t, (role, label) in enumerate(zip(roles, reasons(labels))):
                seen.add(label)
                if role == "solution":
                    assert label == ("good:correct" if solved else "bad:wrong")
                elif role == "probe":
                    after_failure = t > 0 and roles[t - 1] == "failing_probe"
                    want = "good:repair" if after_failure else (
                        "good:required_probe" if task_meta.probe_required else "bad:unneeded")
                    assert label == want, (task.id, line["steps"])
                else:
                    assert label in EXPECTED[role], (task.id, role, label)
    assert {"good:correct", "good:required_probe", "good:repair", "bad:unneeded", "bad:repeated", "bad:error",
            "bad:wrong"} <= seen  # fmt: skip


# --------------------------------------------------------------------------------------------------------
# Pairwise AUC
# --------------------------------------------------------------------------------------------------------


def brute_force(adv: np.ndarray, labels: np.ndarray, keys: np.ndarray) -> tuple[float, int]:
    wins, pairs = 0.0, 0
    for i, j in itertools.product(range(adv.size), repeat=2):
        if labels[i] == 1 and labels[j] == -1 and keys[i] == keys[j]:
            pairs += 1
            wins += 1.0 if adv[i] > adv[j] else 0.5 if adv[i] == adv[j] else 0.0
    return wins, pairs


def test_auc_by_hand() -> None:
    # group 0: good 1.0, 0.5 vs bad 0.5, 0.0 -> 1 + 1 + 0.5 + 1 = 3.5 of 4; group 1: good 0.0 vs bad 2.0 -> 0 of 1.
    adv = np.array([1.0, 0.5, 0.5, 0.0, 0.0, 2.0, 9.0])
    labels = np.array([1, 1, -1, -1, 1, -1, 0])
    groups = np.array([0, 0, 0, 0, 1, 1, 1])
    assert pair_counts(adv, labels, groups) == (3.5, 5)
    assert auc_group(adv, labels, groups) == pytest.approx(3.5 / 5)
    # trajectories: (0: good 1.0, bad 0.5), (1: good 0.5, bad 0.0), (2: good 0.0, bad 2.0, neutral 9.0)
    trajs = np.array([0, 0, 1, 1, 2, 2, 2])
    labels_t = np.array([1, -1, 1, -1, 1, -1, 0])
    assert pairwise_auc(adv, labels_t, trajs) == (pytest.approx(2 / 3), 3)
    assert auc_within(adv, labels_t, trajs) == pytest.approx(2 / 3)
    # Bad steps: 0.5, 0.0, 2.0 in the first labelling: only 2.0 is > 0 (0.0 does not count).
    assert bad_positive_share(adv, labels) == pytest.approx(2 / 3)
    assert bad_positive_share(np.array([0.0, -1.0, 0.1]), np.array([-1, -1, -1])) == pytest.approx(1 / 3)


def test_auc_edge_cases() -> None:
    assert np.isnan(auc_group(np.array([1.0, 2.0]), np.array([1, 1]), np.array([0, 0])))
    assert np.isnan(auc_group(np.array([1.0, 2.0]), np.array([1, -1]), np.array([0, 1])))  # different groups
    assert np.isnan(bad_positive_share(np.array([1.0]), np.array([1])))
    assert np.isnan(auc_within(np.zeros(0), np.zeros(0, np.int64), np.zeros(0, np.int64)))
    assert auc_group(np.array([3.0, 3.0]), np.array([1, -1]), np.array(["a", "a"])) == 0.5  # any hashable keys
    with pytest.raises(ValueError, match="labels"):
        auc_group(np.array([1.0]), np.array([2]), np.array([0]))
    with pytest.raises(ValueError, match="finite"):
        auc_group(np.array([np.nan]), np.array([1]), np.array([0]))
    with pytest.raises(ValueError, match="shape"):
        auc_group(np.array([1.0, 2.0]), np.array([1, -1]), np.array([0]))


arrays = st.integers(0, 30).flatmap(lambda n: st.tuples(
    st.lists(st.sampled_from([-1.0, -0.5, 0.0, 0.25, 1.0]) | st.floats(-3, 3), min_size=n, max_size=n),
    st.lists(st.sampled_from([-1, 0, 1]), min_size=n, max_size=n),
    st.lists(st.integers(0, 3), min_size=n, max_size=n),
))  # fmt: skip


@given(arrays)
def test_auc_matches_brute_force_and_flips_with_the_sign(data: tuple[list, list, list]) -> None:
    adv, labels, keys = (np.array(x) for x in data)
    adv = adv.astype(np.float64)
    wins, pairs = pair_counts(adv, labels, keys)
    expected = brute_force(adv, labels, keys)
    assert pairs == expected[1] and wins == pytest.approx(expected[0])
    if pairs:
        assert auc_group(-adv, labels, keys) == pytest.approx(1.0 - auc_group(adv, labels, keys))
        assert auc_group(adv, -labels, keys) == pytest.approx(1.0 - auc_group(adv, labels, keys))


@st.composite
def labelled_batches(draw) -> tuple[StepBatch, np.ndarray]:
    """A StepBatch of 1-3 groups of 2-5 trajectories of 1-4 steps, with random labels per step."""
    groups, outcomes, rewards, flags = [], [], [], []
    for g in range(draw(st.integers(1, 3))):
        for _ in range(draw(st.integers(2, 5))):
            n = draw(st.integers(1, 4))
            groups.append(g)
            outcomes.append(draw(st.sampled_from([-1.0, 0.0, 1.0])))
            rewards.append(draw(st.lists(st.sampled_from([0.1, -0.2, -0.3, -0.5, 0.0, 0.3]), min_size=n, max_size=n)))
            flags.append([False] * (n - 1) + [draw(st.booleans())])
    batch = StepBatch.from_lists(groups, outcomes, rewards, flags)
    labels = np.array(draw(st.lists(st.sampled_from([-1, 0, 1]), min_size=batch.n_steps, max_size=batch.n_steps)))
    return batch, labels


@settings(suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(labelled_batches())
def test_outcome_only_estimators_sit_at_one_half_within_trajectories(data: tuple[StepBatch, np.ndarray]) -> None:
    batch, labels = data
    for name in ("grpo", "rloo", "grpo_shaped"):
        adv = compute_advantages(batch, CreditConfig(estimator=name)).advantages
        auc, pairs = pairwise_auc(adv, labels, batch.traj)
        assert pairs == 0 or auc == 0.5
    for name in ESTIMATORS:  # every estimator: within-trajectory pairs are a subset of the group's
        adv = compute_advantages(batch, CreditConfig(estimator=name)).advantages
        assert pair_counts(adv, labels, batch.traj)[1] <= pair_counts(adv, labels, batch.step_group)[1]


# --------------------------------------------------------------------------------------------------------
# The benchmark script (a fast smoke test: a one-database world, the expert only)
# --------------------------------------------------------------------------------------------------------


def test_benchmark_script_smoke(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spec = importlib.util.spec_from_file_location("credit_quality_bench", ROOT / "benchmarks" / "credit_quality.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, module)  # dataclasses look their module up there
    spec.loader.exec_module(module)
    out = tmp_path / "credit_quality.json"
    assert module.main(["--world-dbs", "1", "--tasks", "6", "--group-size", "4", "--batch-tasks", "2",
                        "--out", str(out)]) == 0  # fmt: skip
    result = json.loads(out.read_text())
    names = set(ESTIMATORS) | {f"finestep-{a}" for a in credit_config.ABLATIONS}
    assert set(result["estimators"]) == names
    assert result["n_steps"] == sum(result["label_counts"].values()) and result["n_steps"] > 0
    assert result["tasks"] == 6 and result["group_size"] == 4 and list(result["by_source"]) == ["expert"]
    assert result["by_source"]["expert"]["n_trajectories"] == 24
    for row in result["estimators"].values():
        for key in ("auc_group", "auc_within", "bad_positive_share"):
            assert row[key] is None or 0.0 <= row[key] <= 1.0
    if result["n_pairs_within"]:
        assert result["estimators"]["grpo"]["auc_within"] == 0.5
