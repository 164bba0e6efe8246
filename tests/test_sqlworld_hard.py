"""SQLWorld's hard tier: deterministic worlds whose questions need several look-ups, the expert, the oracle."""

from __future__ import annotations

import json
import random
import statistics
from collections import Counter
from dataclasses import replace
from pathlib import Path

import pytest

from finestep.agent.expert import expert_dataset, expert_trajectory
from finestep.data.sqlworld import (
    ExpertConfig,
    Lookup,
    TaskMeta,
    World,
    build_world,
    clean_expert,
    expert_plan,
    oracle_labels,
    solution_correct,
)
from finestep.data.steps import RewardStep
from finestep.data.task import DataError
from finestep.sql.executor import ExecutionResult, execute

SMALL = {"n_train_dbs": 6, "n_test_dbs": 2, "questions_per_db": 6, "valid_per_db": 1, "heldout_per_db": 2}
HARD_EXPERT = ExpertConfig(max_steps=8)
CLEAN = replace(clean_expert, max_steps=8)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    return build_world(tmp_path_factory.mktemp("sqlworld-hard") / "world", seed=0, tier="hard", **SMALL)


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_hard_world_is_deterministic_and_recorded(world: World, tmp_path: Path) -> None:
    again = build_world(tmp_path / "again", seed=0, tier="hard", **SMALL)
    assert _files(world.root) == _files(again.root)
    doc = json.loads((world.root / "world.json").read_text())
    assert doc["params"]["tier"] == "hard" and world.tier == "hard"
    assert {t.difficulty for t in world.train + world.test + world.valid + world.heldout} == {"hard"}
    assert {d["style"] for d in world.databases.values()} == {"mixed"}
    other = build_world(tmp_path / "other", seed=1, tier="hard", **SMALL)
    assert _files(other.root)["world.json"] != _files(world.root)["world.json"]
    with pytest.raises(ValueError, match="build_world: unknown tier 'harder'"):
        build_world(tmp_path / "bad", tier="harder")


def test_default_worlds_are_unchanged_by_the_option(tmp_path: Path) -> None:
    plain = build_world(tmp_path / "a", seed=2, n_train_dbs=3, n_test_dbs=1, questions_per_db=6)
    explicit = build_world(
        tmp_path / "b", seed=2, n_train_dbs=3, n_test_dbs=1, questions_per_db=6, tier="default"
    )
    assert _files(plain.root) == _files(explicit.root)
    doc = json.loads((plain.root / "world.json").read_text())
    assert "tier" not in doc["params"] and all("lookups" not in t["meta"] for t in doc["tasks"])
    assert plain.tier == "default" and all(not m.lookups for m in plain.meta.values())


def test_every_hard_gold_executes_nonempty_and_every_lookup_matters(world: World) -> None:
    tasks = world.train + world.valid + world.heldout + world.test
    assert (
        len(world.train) == 36
        and len(world.valid) == 6
        and len(world.heldout) == 12
        and len(world.test) == 12
    )
    kinds = Counter()
    for task in tasks:
        gold = execute(task.db_path, task.gold_sql)
        assert gold.ok and gold.rows and gold.rows != ((0,),), (task.id, task.gold_sql)
        meta = world.meta[task.id]
        assert 3 <= len(meta.lookups) <= 4 and meta.probe_required
        assert not execute(task.db_path, meta.failing_sql).ok
        assert set(execute(task.db_path, meta.skip_probe_sql).rows or ()) != set(gold.rows)
        for lookup in meta.lookups:
            kinds[(lookup.kind, lookup.required)] += 1
            probe = execute(task.db_path, lookup.probe_sql)
            assert probe.ok and probe.rows and not execute(task.db_path, lookup.failing_probe_sql).ok
            if lookup.witness is not None:
                assert (lookup.witness,) in probe.rows and lookup.witness not in task.question
            skipped = execute(task.db_path, lookup.skip_sql)
            assert (set(skipped.rows or ()) != set(gold.rows)) == lookup.required, (task.id, lookup)
            assert lookup.required or lookup.kind == "unit"  # values and dates always need their look-up
    assert (
        kinds[("value", True)] and kinds[("date", True)] and kinds[("unit", True)] and kinds[("unit", False)]
    )


def test_clean_expert_scores_100_percent_with_at_least_2_5_tool_calls(world: World) -> None:
    for split in ("train", "heldout", "test"):
        lines = expert_dataset(world, split, n_per_task=1, config=CLEAN)
        assert all(solution_correct(line) for line in lines)
        calls = [sum(s["kind"] == "sql" for s in line["steps"]) for line in lines]
        assert statistics.fmean(calls) >= 2.5 and min(calls) >= 3
        assert all(4 <= len(line["steps"]) <= 5 and line["behaviours"] == [] for line in lines)


def test_default_expert_keeps_its_imperfections_within_8_turns(world: World) -> None:
    lines = expert_dataset(world, "train", n_per_task=4, config=HARD_EXPERT)
    behaviours = Counter(b for line in lines for b in line["behaviours"])
    assert all(behaviours[b] > 0 for b in ("redundant_probe", "fail_repair", "skip_probe", "wasted_probe"))
    assert max(len(line["steps"]) for line in lines) <= 8
    correct = [solution_correct(line) for line in lines]
    assert 0.7 < statistics.fmean(correct) < 1.0
    for line, ok in zip(lines, correct):
        if not ok:  # only a skipped look-up makes an answer wrong
            assert "skip_probe" in line["behaviours"]


def test_clean_plan_that_does_not_fit_names_max_steps(world: World) -> None:
    task = next(t for t in world.train if len(world.meta[t.id].lookups) == 4)
    with pytest.raises(ValueError, match="ExpertConfig.max_steps is 4"):
        expert_plan(task, world.meta[task.id], clean_expert, random.Random(0))


# --- the oracle on a hand-checked hard episode ------------------------------------------------------------

PROBE_STATUS = "SELECT DISTINCT status FROM visits"
PROBE_CITY = "SELECT DISTINCT city FROM patients"
PROBE_DATE = "SELECT visit_date FROM visits LIMIT 3"
PROBE_COST = "SELECT cost FROM visits LIMIT 3"
GOLD = (
    "SELECT count(*) FROM visits T1 JOIN patients T2 ON T1.patient_id = T2.id WHERE T1.cost > 150 "
    "AND T1.status = 'CNL' AND T2.city = 'BOSTON' AND T1.visit_date LIKE '03/%/2022'"
)


def _hard_meta() -> TaskMeta:
    """Visits of patients from Boston, cancelled, in March 2022, costing over 150 dollars (stored in dollars: the
    unit look-up is not required)."""
    lookups = (
        Lookup("unit", "visits", "cost", PROBE_COST, "150", "150", None, False, GOLD, "SELECT DISTINCT cots FROM visits"),
        Lookup("value", "visits", "status", PROBE_STATUS, "cancelled", "CNL", "CNL", True, "…", "SELECT stat FROM visits"),
        Lookup("value", "patients", "city", PROBE_CITY, "Boston", "BOSTON", "BOSTON", True, "…", "SELECT cty FROM patients"),
        Lookup("date", "visits", "visit_date", PROBE_DATE, "2022-03-%", "03/%/2022", None, True, "…", "SELECT d FROM visits"),
    )  # fmt: skip
    return TaskMeta(
        "h", "hard", "h_count", "clinic", "mixed", PROBE_COST, "150", "150", True, "…", "…", ("status", "stat"),
        lookups[0].failing_probe_sql, "SELECT DISTINCT specialty FROM doctors", lookups,
    )  # fmt: skip


def _ok(columns: tuple[str, ...], *rows: tuple) -> ExecutionResult:
    return ExecutionResult(columns=columns, rows=tuple(rows))


def test_oracle_labels_a_hand_checked_hard_episode() -> None:
    statuses = _ok(("status",), ("CMP",), ("CNL",))
    steps = [
        RewardStep("sql", PROBE_STATUS, statuses),  # a required value: good
        RewardStep("sql", "SELECT DISTINCT specialty FROM doctors", _ok(("specialty",), ("CARD",))),  # wasted
        RewardStep("sql", PROBE_STATUS, statuses),  # the same query again
        RewardStep("sql", PROBE_COST, _ok(("cost",), (120.5,), (300.0,))),  # dollars: the unit was not needed
        RewardStep("sql", "SELECT cty FROM patients", ExecutionResult(error_kind="schema", error="no such column")),
        RewardStep("sql", PROBE_CITY, _ok(("city",), ("BOSTON",), ("MIAMI",))),  # repairs the failed look-up
        RewardStep("sql", "SELECT * FROM visits LIMIT 2", _ok(("id", "status", "visit_date"), (1, "CNL", "03/14/2022"))),
        RewardStep("solution", GOLD, _ok(("count(*)",), (2,))),
    ]  # fmt: skip
    labels = [f"{x.label}:{x.reason}" for x in oracle_labels(steps, _hard_meta(), solved=True)]
    assert labels == [
        "good:required_probe", "bad:unneeded", "bad:repeated", "bad:unneeded", "bad:error", "good:repair",
        "good:required_probe",  # the first result showing the date format (the status was seen before)
        "good:correct",
    ]  # fmt: skip
    # the city shown by a plain look-up (no failure before it) is a required look-up; once shown, never again
    city = RewardStep("sql", PROBE_CITY, _ok(("city",), ("BOSTON",)))
    again = RewardStep("sql", "SELECT city FROM patients", _ok(("city",), ("BOSTON",)))
    assert [x.reason for x in oracle_labels([city, again], _hard_meta(), solved=False)] == [
        "required_probe",
        "unneeded",
    ]


def test_oracle_agrees_with_the_hard_expert(world: World) -> None:
    config = ExpertConfig(
        p_redundant_probe=0.4, p_fail_repair=0.4, p_skip_probe=0.3, p_wasted_probe=0.4, max_steps=8
    )
    for task in world.train[:18]:
        meta = world.meta[task.id]
        for k in range(3):
            line = expert_trajectory(task, meta, config, random.Random(f"{task.id}:{k}"))
            views = [RewardStep(s["kind"], s["sql"], execute(task.db_path, s["sql"])) for s in line["steps"]]
            labels = oracle_labels(views, meta, solution_correct(line))
            required = {x.probe_sql for x in meta.lookups if x.required}
            for t, (step, label) in enumerate(zip(line["steps"], labels)):
                role, reason = step["role"], f"{label.label}:{label.reason}"
                if role == "probe" and step["sql"] in required:
                    repaired = t > 0 and line["steps"][t - 1]["role"] == "failing_probe"
                    assert reason == ("good:repair" if repaired else "good:required_probe"), (
                        task.id,
                        line["steps"],
                    )
                elif role in ("wasted_probe", "redundant_probe"):
                    assert label.label == "bad", (task.id, role, reason)
                elif role in ("failing_probe", "failing_query"):
                    assert reason == "bad:error"


# --- the pipeline and the training data build and read hard worlds -----------------------------------------


def test_pipeline_builds_a_hard_world_from_config(tmp_path: Path) -> None:
    from finestep.bench.pipeline import PipelineConfig, prepare_data
    from finestep.train.config import load_train_config
    from finestep.train.data import load_task_data

    root = Path(__file__).resolve().parents[1]
    config = load_train_config(root / "configs" / "sqlworld-hard.yaml", [f"data.path={tmp_path / 'world'}",
                                                                         "model.path=unused"])  # fmt: skip
    assert config.data.world_tier == "hard" and config.rollout.max_turns == 8
    pipeline = PipelineConfig(tier=config.data.world_tier, n_train_dbs=2, n_test_dbs=1, questions_per_db=3,
                              valid_per_db=1, heldout_per_db=1)  # fmt: skip
    world, lines = prepare_data(tmp_path, pipeline, config.rollout)
    assert world.tier == "hard" and len(lines) == 2 * len(world.train)
    assert max(len(line["steps"]) for line in lines) <= 8
    data = load_task_data(config.data)
    assert [t.id for t in data.train] == [t.id for t in world.train]
    with pytest.raises(ValueError, match="a world of tier 'hard' is there"):
        prepare_data(tmp_path, replace(pipeline, tier="default"), config.rollout)
    with pytest.raises(DataError, match="data.world_tier: 'default', but the world at .* is of tier 'hard'"):
        load_task_data(replace(config.data, world_tier="default"))
    with pytest.raises(ValueError, match="PipelineConfig.tier: unknown tier 'medium'"):
        PipelineConfig(tier="medium")


# --- benchmarks/hard_facts.py: which facts an answer writes as stored ---------------------------------------


def _hard_facts_module():  # type: ignore[no-untyped-def]
    import importlib.util
    import sys

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "hard_facts.py"
    spec = importlib.util.spec_from_file_location("hard_facts_bench", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_hard_facts_gold_writes_every_fact_and_skip_answers_miss_the_required(world: World) -> None:
    facts = _hard_facts_module()
    for task in world.train:
        lookups = world.meta[task.id].lookups
        assert all(facts.fact_written(lookup, task.gold_sql) for lookup in lookups), task.gold_sql
        for lookup in lookups:  # the answer with this one fact as the question says it
            assert facts.fact_written(lookup, lookup.skip_sql) == (not lookup.required), (lookup, lookup.skip_sql)
    table = facts.fact_table(world.train, world.meta, [t.gold_sql for t in world.train],
                             [set() for _ in world.train])  # fmt: skip
    assert {row["written"] for row in table.values()} == {1.0} and {row["looked_up"] for row in table.values()} == {0.0}
    n_facts = sum(len(world.meta[t.id].lookups) for t in world.train)
    assert sum(row["facts"] for row in table.values()) == n_facts


def test_hard_facts_counts_a_hand_written_answer() -> None:
    facts = _hard_facts_module()
    unit = Lookup("unit", "titles", "price", "SELECT price FROM titles LIMIT 3", "50", "5000", None, True, "", "")
    value = Lookup("value", "authors", "nationality", "SELECT DISTINCT nationality FROM authors", "Japan", "JAPAN",
                   "JAPAN", True, "", "")  # fmt: skip
    assert facts.fact_written(unit, "SELECT 1 FROM t WHERE price > 5000")
    assert not facts.fact_written(unit, "SELECT 1 FROM t WHERE price > 50000")
    assert not facts.fact_written(unit, "SELECT 1 FROM t WHERE price > 5000.5")
    assert facts.fact_written(value, "SELECT 1 FROM t WHERE nationality = 'JAPAN'")
    assert not facts.fact_written(value, "SELECT 1 FROM t WHERE nationality = 'Japan'")
    assert facts._columns_read("SELECT DISTINCT Nationality FROM Authors") == {"authors.nationality"}
    assert facts._columns_read("SELECT count(*) FROM authors") == set()
