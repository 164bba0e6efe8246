"""Tests of finestep.credit: batch construction, hand-computed estimator cases, properties, loop reference."""

from __future__ import annotations

import math
import statistics
from dataclasses import fields

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from finestep.credit import (
    ABLATIONS,
    ESTIMATORS,
    REFERENCES,
    CreditConfig,
    StepBatch,
    UnknownEstimatorError,
    compute_advantages,
    discounted_reverse_cumsum,
    get_estimator,
    group_normalize,
    history_anchors,
    register_estimator,
)
from finestep.credit.config import EQUAL_OUTCOMES, OUTCOME_NORMS, PROCESS_SCALES
from finestep.credit.ops import NORMALIZE_MODES, group_center, pooled_std
from finestep.credit.reference import reference_advantages

# What the built-in estimators give on identical trajectories (test_identical_trajectories); an estimator
# registered later is held to the property every estimator shares: identical trajectories, identical advantages.
ZERO_ON_IDENTICAL = {"grpo", "grpo_shaped", "rloo", "gigpo", "finestep"}
LATE_STEP_FAVOURED = {"ps_grpo"}

EPS = 1e-6
SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
V1 = ABLATIONS["v1"]  # FineStep version 1: outcome_norm="steps", process_scale="group"


def z(values: list[float], trajectories: int | None = None, eps: float = EPS) -> list[float]:
    """z-score with the sample std whose n - 1 counts trajectories: n values from k trajectories divide the
    squared deviations by n (k - 1) / k (= n - 1 when every value is its own trajectory)."""
    n = len(values)
    k = n if trajectories is None else trajectories
    mean = statistics.mean(values)
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n * (k - 1) / k))
    return [(v - mean) / (std + eps) for v in values]


# --------------------------------------------------------------------------------------------------------
# Strategies


REWARD = st.integers(-10, 10).map(lambda k: k / 10) | st.sampled_from([-0.3, -0.2, 0.1, 0.2])
OUTCOME = st.sampled_from([-1.0, 0.0, 1.0]) | st.integers(-20, 20).map(lambda k: k / 10)


@st.composite
def trajectory(draw, n_steps: int, outcome=OUTCOME):
    """(R, rewards, is_solution, links, anchors) of one trajectory with n_steps steps."""
    rewards = draw(st.lists(REWARD, min_size=n_steps, max_size=n_steps))
    solved = n_steps > 0 and draw(st.booleans())
    flags = [False] * max(n_steps - 1, 0) + ([solved] if n_steps else [])
    links = [draw(st.lists(st.integers(0, t - 1), max_size=2, unique=True)) if t else [] for t in range(n_steps)]
    anchors = draw(st.lists(st.sampled_from([None, "a", "b", "c"]), min_size=n_steps, max_size=n_steps))
    return draw(outcome), rewards, flags, links, anchors


@st.composite
def batches(draw, min_steps: int = 0, max_steps: int = 5, max_group: int = 5, same_length: bool = False):
    """A StepBatch of 1-3 groups of 1-max_group trajectories (zero-step trajectories allowed by default)."""
    cols: dict[str, list] = {k: [] for k in ("groups", "outcomes", "rewards", "flags", "links", "anchors")}
    for g in range(draw(st.integers(1, 3))):
        common = draw(st.integers(min_steps, max_steps))
        for _ in range(draw(st.integers(1, max_group))):
            n_steps = common if same_length else draw(st.integers(min_steps, max_steps))
            R, rewards, flags, links, anchors = draw(trajectory(n_steps))
            for key, value in zip(cols, (f"task-{g}", R, rewards, flags, links, anchors)):
                cols[key].append(value)
    return StepBatch.from_lists(*cols.values())


unit = st.floats(0.0, 1.0)
configs = st.builds(
    CreditConfig,
    gamma_p=unit, gamma_o=unit, beta=unit, gigpo_gamma=unit,
    lam=st.floats(0.0, 2.0), omega=st.floats(0.0, 2.0),
    normalize=st.sampled_from(NORMALIZE_MODES),
    outcome_norm=st.sampled_from(OUTCOME_NORMS), process_scale=st.sampled_from(PROCESS_SCALES),
    per_step_index_norm=st.booleans(), use_process=st.booleans(), process_internal_only=st.booleans(),
    equal_outcome=st.sampled_from(EQUAL_OUTCOMES), process_center=st.booleans(),
    equal_outcome_process=st.sampled_from([0.0, 0.5, 1.0]),
)


# --------------------------------------------------------------------------------------------------------
# StepBatch


def test_from_lists_layout():
    b = StepBatch.from_lists(
        groups=["q1", "q1", "q2"], outcomes=[1, 0, -1],
        process_rewards=[[0.1, 0.0], [], [-0.2, 0.1, 0.0]],
        is_solution=[[False, True], [], [False, False, True]],
        links=[[[], [0]], [], [[], [0], [0, 1]]],
    )
    assert b.n_traj == 3 and b.n_steps == 5 and b.n_groups == 2
    assert b.traj.tolist() == [0, 0, 2, 2, 2]
    assert b.position.tolist() == [0, 1, 0, 1, 2]
    assert b.remaining.tolist() == [1, 0, 2, 1, 0]
    assert b.lengths.tolist() == [2, 0, 3] and b.group_size.tolist() == [2, 1]
    assert sorted(zip(b.link_src.tolist(), b.link_dst.tolist())) == [(1, 0), (3, 2), (4, 2), (4, 3)]
    assert (b.anchor == -1).all()
    with pytest.raises(ValueError):
        b.outcome[0] = 3.0  # read-only


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"outcomes": [1.0]}, "outcomes has 1 entries but groups has 2"),
        ({"is_solution": [[False], [False]]}, "trajectory 0: is_solution has 1 flags but 2 step rewards"),
        ({"is_solution": [[True, False], [True]]}, "trajectory 0: only the last step may be a solution"),
        ({"links": [[[], [1]], [[]]]}, "trajectory 0, step 1: link target 1 must be an earlier step"),
        ({"links": [[[], []], [[-1]]]}, "trajectory 1, step 0: link target -1"),
        ({"links": [[[]], [[]]]}, "trajectory 0: links has 1 entries but 2 steps"),
        ({"anchors": [["a", "b"], []]}, "trajectory 1: anchors has 0 entries but 1 steps"),
        ({"outcomes": [1.0, float("nan")]}, "must be finite"),
    ],
)
def test_from_lists_validation(kwargs, message):
    args = {
        "groups": ["g", "g"], "outcomes": [1.0, 0.0], "process_rewards": [[0.1, 0.0], [0.2]],
        "is_solution": [[False, True], [False]], **kwargs,
    }
    with pytest.raises(ValueError, match=message):
        StepBatch.from_lists(**args)


def test_direct_constructor_validation():
    ok = {"group": [0, 0], "outcome": [1.0, 0.0], "traj": [0, 0, 1], "process_reward": [0.0, 0.1, 0.2],
          "is_solution": [False, True, False]}
    StepBatch(**ok)
    with pytest.raises(ValueError, match="non-decreasing"):
        StepBatch(**{**ok, "traj": [0, 1, 0]})
    with pytest.raises(ValueError, match="solution step but not the last"):
        StepBatch(**{**ok, "is_solution": [True, False, False]})
    with pytest.raises(ValueError, match="same trajectory"):
        StepBatch(**ok, link_src=[2], link_dst=[1])
    with pytest.raises(ValueError, match="later step"):
        StepBatch(**ok, link_src=[0], link_dst=[1])
    with pytest.raises(ValueError, match=r"traj must lie in \[0, 2\)"):
        StepBatch(**{**ok, "traj": [0, 0, 2]})


def test_history_anchors():
    keys = history_anchors([["x", "y", "z"], ["x", "w"]])
    assert keys == [[(), ("x",), ("x", "y")], [(), ("x",)]]
    b = StepBatch.from_lists(["g", "g"], [1, 0], [[0, 0, 0], [0, 0]], [[0, 0, 0], [0, 0]], anchors=keys)
    assert b.anchor.tolist() == [0, 1, 2, 0, 1]


# --------------------------------------------------------------------------------------------------------
# Registry and config


def test_unknown_estimator_error_lists_names():
    with pytest.raises(UnknownEstimatorError, match="unknown credit estimator 'ppo'.*finestep.*grpo.*rloo"):
        get_estimator("ppo")
    batch = StepBatch.from_lists(["g"], [1.0], [[0.0]], [[True]])
    with pytest.raises(ValueError, match="registered estimators: finestep, gigpo, grpo"):
        compute_advantages(batch, CreditConfig(estimator="nope"))


def test_registry_contents_and_duplicate_registration():
    assert set(ESTIMATORS) >= {"finestep", "grpo", "grpo_shaped", "rloo", "gigpo", "ps_grpo"}
    with pytest.raises(ValueError, match="already registered"):
        register_estimator("grpo")(lambda batch, config: None)


def test_config_defaults_validation_and_ablations():
    c = CreditConfig()
    assert (c.gamma_p, c.gamma_o, c.beta, c.lam, c.eps, c.normalize) == (0.5, 0.9, 0.3, 0.5, 1e-6, "group")
    assert not c.per_step_index_norm and c.use_process and c.omega == 1.0
    assert (c.outcome_norm, c.process_scale) == ("trajectory", "batch")  # version 2
    with pytest.raises(ValueError, match="gamma_p must lie in"):
        CreditConfig(gamma_p=1.5)
    with pytest.raises(ValueError, match="normalize must be one of"):
        CreditConfig(normalize="batch")
    with pytest.raises(ValueError, match="outcome_norm must be one of"):
        CreditConfig(outcome_norm="group")
    with pytest.raises(ValueError, match="process_scale must be one of"):
        CreditConfig(process_scale="steps")
    with pytest.raises(ValueError, match="unknown ablation"):
        CreditConfig.ablation("no_everything")
    with pytest.raises(ValueError, match="unknown CreditConfig fields"):
        c.with_overrides(lamda=0.1)
    assert CreditConfig.ablation("no_temporal").gamma_p == 0.0 and CreditConfig.ablation("no_temporal").gamma_o == 1
    assert CreditConfig.ablation("no_process").effective_lam == 0.0
    assert CreditConfig.ablation("no_logical").beta == 0.0
    assert CreditConfig.ablation("no_group_norm").normalize == "none"
    assert not CreditConfig.ablation("no_masking").process_internal_only
    v1 = CreditConfig.ablation("v1")
    assert (v1.outcome_norm, v1.process_scale) == ("steps", "group")
    assert (v1.equal_outcome_process, CreditConfig().equal_outcome_process) == (1.0, 0.0)  # v1 ungated; default gated
    assert CreditConfig.ablation("ungated").equal_outcome_process == 1.0
    assert set(ABLATIONS) == {"full", "no_process", "no_temporal", "no_logical", "no_group_norm", "no_masking", "v1",
                              "ungated", "gated"}
    for name, switches in ABLATIONS.items():  # every ablation is a valid config, its help text documents the fields
        CreditConfig.ablation(name)
        assert all(f in {f.name for f in fields(CreditConfig)} for f in switches)
    assert all(f.metadata.get("help") for f in fields(CreditConfig))


# --------------------------------------------------------------------------------------------------------
# Hand-computed cases


def test_grpo_hand_computed_group_of_four():
    # R = [1, 1, 0, -1]; mean = (1 + 1 + 0 - 1) / 4 = 0.25
    # squared deviations: 0.75^2 + 0.75^2 + 0.25^2 + 1.25^2 = 0.5625 + 0.5625 + 0.0625 + 1.5625 = 2.75
    # sample std = sqrt(2.75 / 3) = 0.957427...; A_i = (R_i - 0.25) / (0.957427 + 1e-6)
    std = math.sqrt(2.75 / 3)
    expected = [0.75 / (std + EPS), 0.75 / (std + EPS), -0.25 / (std + EPS), -1.25 / (std + EPS)]
    assert expected[0] == pytest.approx(0.783349, abs=1e-6) and expected[3] == pytest.approx(-1.305582, abs=1e-6)
    b = StepBatch.from_lists(
        ["q"] * 4, [1.0, 1.0, 0.0, -1.0],
        [[0.1, 0.0], [0.0], [-0.2, 0.1, 0.0], [0.0]],
        [[False, True], [True], [False, False, True], [True]],
    )
    out = compute_advantages(b, CreditConfig(estimator="grpo"))
    # every step of trajectory i gets A_i
    per_step = [expected[0]] * 2 + [expected[1]] + [expected[2]] * 3 + [expected[3]]
    np.testing.assert_allclose(out.advantages, per_step, rtol=1e-12)
    np.testing.assert_allclose(out.extras["trajectory_advantage"], expected, rtol=1e-12)
    # rloo on the same batch: R_i - mean of the others
    rloo = compute_advantages(b, CreditConfig(estimator="rloo")).extras["trajectory_advantage"]
    np.testing.assert_allclose(rloo, [1 - 0 / 3, 1 - 0 / 3, 0 - 1 / 3, -1 - 2 / 3], rtol=1e-12)


def test_finestep_v1_hand_computed_without_smoothing():
    # Version 1 (outcome_norm=steps, process_scale=group). Trajectory A: r = [0.1, -0.2, 0.0 (solution)], R = 1, T = 3.  Trajectory B: r = [-0.3, 0.0 (solution)], R = 0.
    b = StepBatch.from_lists(
        ["q", "q"], [1.0, 0.0], [[0.1, -0.2, 0.0], [-0.3, 0.0]], [[False, False, True], [False, True]],
        links=[[[], [0], []], [[], []]],  # ignored with beta = 0
    )
    out = compute_advantages(b, CreditConfig(beta=0.0, **V1))
    # P (gamma_p = 0.5): A: [0.1 + 0.5 * -0.2 + 0.25 * 0, -0.2 + 0.5 * 0, 0] = [0, -0.2, 0];  B: [-0.3 + 0, 0]
    P = [0.1 + 0.5 * -0.2 + 0.25 * 0.0, -0.2 + 0.5 * 0.0, 0.0, -0.3 + 0.5 * 0.0, 0.0]
    np.testing.assert_allclose(out.process_return, P, atol=1e-15)
    np.testing.assert_allclose(out.smoothed_process_return, P, atol=1e-15)
    # O (gamma_o = 0.9): A: [0.9^2 * 1, 0.9 * 1, 1] = [0.81, 0.9, 1];  B: [0.9 * 0, 0] = [0, 0]
    O = [0.81, 0.9, 1.0, 0.0, 0.0]
    np.testing.assert_allclose(out.outcome_return, O, atol=1e-15)
    # A^O over all 5 steps of the 2 trajectories: mean = 2.71 / 5 = 0.542, sum of squared deviations 0.99728,
    # divided by n (k - 1) / k = 5 * 1 / 2 = 2.5: std = sqrt(0.99728 / 2.5) = 0.631595
    A_O = z(O, trajectories=2)
    assert A_O[0] == pytest.approx((0.81 - 0.542) / (math.sqrt(0.99728 / 2.5) + EPS))
    # A^P over the 3 internal steps [A0, A1, B0] (2 trajectories) with P~ = [0, -0.2, -0.3]: mean = -0.5 / 3,
    # squared deviations 0.046667, divided by 3 * 1 / 2 = 1.5: std = sqrt(0.046667 / 1.5) = 0.176383
    zA0, zA1, zB0 = z([0.0, -0.2, -0.3], trajectories=2)
    assert zB0 == pytest.approx((-0.3 + 0.5 / 3) / (math.sqrt((0.04 + 0.09 - 0.25 / 3) / 1.5) + EPS))
    # A = A^O + 0.5 A^P on internal steps, A^O on solution steps
    expected = [A_O[0] + 0.5 * zA0, A_O[1] + 0.5 * zA1, A_O[2], A_O[3] + 0.5 * zB0, A_O[4]]
    np.testing.assert_allclose(out.advantages, expected, rtol=1e-12)
    np.testing.assert_allclose(out.process_advantage, [zA0, zA1, 0.0, zB0, 0.0], rtol=1e-12)


def test_finestep_v1_hand_computed_with_links():
    # Version 1. A: r = [-0.2, 0.1, 0.1, 0 (solution)], R = 1; step 1 repairs step 0, step 2 uses steps 0 and 1.
    # B: r = [0.1, 0 (solution)], R = 0, no links.
    b = StepBatch.from_lists(
        ["q", "q"], [1.0, 0.0], [[-0.2, 0.1, 0.1, 0.0], [0.1, 0.0]],
        [[False, False, False, True], [False, True]],
        links=[[[], [0], [0, 1], []], [[], []]],
    )
    out = compute_advantages(b, CreditConfig(**V1))  # beta = 0.3, gamma_p = 0.5, gamma_o = 0.9, lam = 0.5
    # P_A: P3 = 0; P2 = 0.1 + 0.5 * 0 = 0.1; P1 = 0.1 + 0.5 * 0.1 = 0.15; P0 = -0.2 + 0.5 * 0.15 = -0.125
    P_A = [-0.125, 0.15, 0.1, 0.0]
    # L(0) = {1, 2}, L(1) = {0, 2}, L(2) = {0, 1}, L(3) = {}:
    smoothed_A = [
        0.7 * -0.125 + 0.3 * (0.15 + 0.1) / 2,  # -0.05
        0.7 * 0.15 + 0.3 * (-0.125 + 0.1) / 2,  # 0.10125
        0.7 * 0.1 + 0.3 * (-0.125 + 0.15) / 2,  # 0.07375
        0.0,  # no links: unchanged
    ]
    np.testing.assert_allclose(smoothed_A, [-0.05, 0.10125, 0.07375, 0.0], atol=1e-15)
    np.testing.assert_allclose(out.process_return, P_A + [0.1, 0.0], atol=1e-15)
    np.testing.assert_allclose(out.smoothed_process_return, smoothed_A + [0.1, 0.0], atol=1e-15)
    # O: A = [0.9^3, 0.9^2, 0.9, 1] = [0.729, 0.81, 0.9, 1]; B = [0, 0]
    A_O = z([0.729, 0.81, 0.9, 1.0, 0.0, 0.0], trajectories=2)  # 6 steps, 2 trajectories: divide by 3
    # A^P over internal steps A0, A1, A2, B0 (2 trajectories): P~ = [-0.05, 0.10125, 0.07375, 0.1]
    A_P = z([-0.05, 0.10125, 0.07375, 0.1], trajectories=2)
    expected = [A_O[0] + 0.5 * A_P[0], A_O[1] + 0.5 * A_P[1], A_O[2] + 0.5 * A_P[2], A_O[3],
                A_O[4] + 0.5 * A_P[3], A_O[5]]
    np.testing.assert_allclose(out.advantages, expected, rtol=1e-12)
    # The failed step 0 (r = -0.2) is pulled up by its repair: P~0 = -0.05 > P0 = -0.125.
    assert out.smoothed_process_return[0] > out.process_return[0]


def _two_groups(extra: tuple = ()) -> StepBatch:
    """Group q: A r = [0.1, -0.2, 0 (solution)], R = 1; B r = [-0.3, 0 (solution)], R = 0.
    Group p (equal outcomes): C r = [0.2, 0 (solution)], R = 1; D r = [0.0, 0 (solution)], R = 1.
    ``extra``: more (group, R, rewards, flags) trajectories."""
    rows = [("q", 1.0, [0.1, -0.2, 0.0], [False, False, True]), ("q", 0.0, [-0.3, 0.0], [False, True]),
            ("p", 1.0, [0.2, 0.0], [False, True]), ("p", 1.0, [0.0, 0.0], [False, True]), *extra]
    return StepBatch.from_lists(*map(list, zip(*rows)))


def test_finestep_v2_hand_computed_two_groups():
    ungated = CreditConfig(beta=0.0, equal_outcome_process=1.0)  # gamma_p 0.5, gamma_o 0.9, lam 0.5
    out = compute_advantages(_two_groups(), ungated)
    # A^O: GRPO's a over q's trajectories, R = [1, 0]: mean 0.5, std sqrt(0.5 / 1): a = +-0.5 / (0.707107 + eps),
    # discounted by gamma_o^(T - t): A [0.81, 0.9, 1] a_A, B [0.9, 1] a_B. Group p has equal R: A^O = 0.
    a = 0.5 / (math.sqrt(0.5) + EPS)
    A_O = [0.81 * a, 0.9 * a, a, 0.9 * -a, -a, 0.0, 0.0, 0.0, 0.0]
    np.testing.assert_allclose(out.outcome_advantage, A_O, rtol=1e-12, atol=0)
    # P: A [0.1 - 0.1, -0.2, 0], B [-0.3, 0], C [0.2, 0], D [0, 0]. Internal steps centred per group:
    # q: [0, -0.2, -0.3] - (-0.5 / 3) = [1/6, -1/30, -2/15]; p: [0.2, 0] - 0.1 = [0.1, -0.1].
    c = [1 / 6, -1 / 30, -2 / 15, 0.1, -0.1]
    # batch std of c: 5 values from 4 trajectories, mean 0: sum c^2 = 1/15, divided by 5 * 3 / 4: std = 2/15
    std = math.sqrt((1 / 15) / (5 * 3 / 4))
    assert std == pytest.approx(2 / 15)
    A_P = [x / (std + EPS) for x in c]  # ~ [1.25, -0.25, -1.0, 0.75, -0.75]
    np.testing.assert_allclose(A_P, [1.25, -0.25, -1.0, 0.75, -0.75], rtol=1e-5)
    np.testing.assert_allclose(out.process_advantage, [A_P[0], A_P[1], 0.0, A_P[2], 0.0, A_P[3], 0.0, A_P[4], 0.0],
                               rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(out.advantages, np.array(A_O) + 0.5 * out.process_advantage, rtol=1e-12)
    # the default (gated): group p, whose outcomes are equal, gets nothing; group q is unchanged
    gated = compute_advantages(_two_groups(), CreditConfig(beta=0.0))
    np.testing.assert_array_equal(gated.advantages[5:], np.zeros(4))
    np.testing.assert_array_equal(gated.advantages[:5], out.advantages[:5])
    # outcome_return stays O = gamma_o^(T - t) R (an intermediate, not the advantage)
    np.testing.assert_allclose(out.outcome_return, [0.81, 0.9, 1.0, 0.0, 0.0, 0.9, 1.0, 0.9, 1.0])


def test_finestep_v2_outcome_is_grpo_discounted():
    b = _two_groups((("q", -1.0, [0.1], [False]), ("r", 1.0, [], [])))  # a trajectory without solution; zero steps
    grpo = compute_advantages(b, CreditConfig(estimator="grpo"))
    out = compute_advantages(b, CreditConfig())
    a = grpo.extras["trajectory_advantage"]
    np.testing.assert_allclose(out.outcome_advantage, 0.9 ** b.remaining * a[b.traj], rtol=1e-15, atol=0)
    # gamma_o = 1: finestep's A^O is grpo's advantage exactly, on every step
    one = compute_advantages(b, CreditConfig(gamma_o=1.0))
    np.testing.assert_array_equal(one.outcome_advantage, grpo.advantages)
    # group p (trajectories 2, 3) has equal outcomes: A^O = 0 there
    assert np.all(out.outcome_advantage[np.isin(b.traj, [2, 3])] == 0.0)


def test_finestep_v2_batch_scale():
    # Group p's process returns differ by a hair (1e-4): version 2 gives it a proportionally small A^P,
    # version 1 (its own std) a unit-scale one.
    hair = 1e-4
    b = StepBatch.from_lists(["q", "q", "p", "p"], [1.0, 0.0, 1.0, 1.0],
                             [[0.1, -0.2, 0.0], [-0.3, 0.0], [0.1, 0.0], [0.1 + hair, 0.0]],
                             [[False, False, True], [False, True], [False, True], [False, True]])
    p_steps = np.flatnonzero(np.isin(b.traj, [2, 3]) & ~b.is_solution)
    v2 = compute_advantages(b, CreditConfig(beta=0.0, equal_outcome_process=1.0))  # ungated: group p's A^P kept
    v1 = compute_advantages(b, CreditConfig(beta=0.0, **V1))
    c_p = [-hair / 2, hair / 2]
    c = [1 / 6, -1 / 30, -2 / 15, *c_p]
    std = math.sqrt(sum(x * x for x in c) / (5 * 3 / 4))
    np.testing.assert_allclose(v2.process_advantage[p_steps], np.array(c_p) / (std + EPS), rtol=1e-6)
    assert np.abs(v2.process_advantage[p_steps]).max() < 1e-3
    np.testing.assert_allclose(v1.process_advantage[p_steps], z([0.1, 0.1 + hair]), rtol=1e-6)  # ~ +-0.697
    assert np.abs(v1.process_advantage[p_steps]).min() > 0.6
    # and group p's outcomes are equal: A^O = 0, so in v2 its advantages are tiny too
    assert np.abs(v2.advantages[np.isin(b.traj, [2, 3])]).max() < 1e-3
    # process_scale=none keeps the centred returns; group = version 1's scale with v2's outcome
    none = compute_advantages(b, CreditConfig(beta=0.0, process_scale="none", equal_outcome_process=1.0))
    np.testing.assert_allclose(none.process_advantage[p_steps], c_p, rtol=1e-6)
    group = compute_advantages(b, CreditConfig(beta=0.0, process_scale="group", equal_outcome_process=1.0))
    np.testing.assert_array_equal(group.process_advantage, v1.process_advantage)
    np.testing.assert_array_equal(group.outcome_advantage, v2.outcome_advantage)


def test_finestep_v2_dead_groups_take_no_part_in_the_batch_std():
    # Group r: equal process returns (zero spread) -> A^P = 0 on its steps, and the other groups' A^P unchanged
    # (its zeros do not deflate the batch std). Group s: one trajectory -> 0 too.
    base = compute_advantages(_two_groups(), CreditConfig())
    extra = (("r", 1.0, [0.1, 0.0], [False, True]), ("r", 0.0, [0.1, 0.0], [False, True]),
             ("s", 1.0, [0.3, -0.2, 0.0], [False, False, True]))
    more = compute_advantages(_two_groups(extra), CreditConfig())
    n = base.advantages.size
    np.testing.assert_allclose(more.process_advantage[:n], base.process_advantage, rtol=1e-12)
    assert np.all(more.process_advantage[n:] == 0.0)
    # a batch where every group is dead (or has no internal step) gets A^P = 0, never a division by ~0
    dead = StepBatch.from_lists(["r", "r", "s"], [1.0, 0.0, 1.0], [[0.1, 0.0], [0.1, 0.0], [0.2]],
                                [[False, True], [False, True], [False]])
    assert np.all(compute_advantages(dead, CreditConfig()).process_advantage == 0.0)


def test_finestep_v1_switches_reproduce_version_1_numbers():
    # Advantages of the version 1 code (before version 2 became the default), to 12 decimals.
    b = StepBatch.from_lists(
        ["q", "q", "p", "p", "p"], [1.0, 0.0, 1.0, 1.0, -1.0],
        [[0.1, -0.2, 0.0], [-0.3, 0.0], [0.1, 0.0], [0.1, -0.5, 0.0], [0.2]],
        [[False, False, True], [False, True], [False, True], [False, False, True], [False]],
        links=[[[], [0], [1]], [[], []], [[], [0]], [[], [], [0, 1]], [[]]],
    )
    golden = {
        (): [0.802283800884, 0.661308651229, 0.725147309491, -1.330596002337, -0.858143759266, 0.568957850911,
             0.452178040217, 0.120107978161, -0.263084044475, 0.452178040217, -1.330337865032],
        (("per_step_index_norm", True),): [
            1.060656853893, 0.707105670077, 0.0, -1.060656853893, -0.707105670077, 0.667823628508,
            0.707096781328, 0.012166633797, -0.707096781328, 0.0, -0.679990262305],
        (("process_internal_only", False), ("gamma_o", 1.0)): [
            0.754124929239, 0.482162631729, 0.754124929239, -1.505135552936, -0.485276937272, 0.630656688792,
            0.535902648481, 0.216107762432, -0.364260734473, 0.23387414499, -1.252280510221],
    }  # fmt: skip
    for switches, want in golden.items():
        got = compute_advantages(b, CreditConfig.ablation("v1", **dict(switches))).advantages
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-11)


def test_ps_grpo_and_gigpo_hand_computed():
    # A: r = [0.1, 0 (solution)], R = 1; B: r = [-0.2, 0 (solution)], R = 0. Anchors: both first steps share the
    # empty history; the second steps differ.
    b = StepBatch.from_lists(["q", "q"], [1.0, 0.0], [[0.1, 0.0], [-0.2, 0.0]], [[False, True], [False, True]],
                             anchors=history_anchors([["x", "y"], ["u", "v"]]))
    # ps_grpo: step rewards with R on the last step: [0.1, 0 + 1, -0.2, 0 + 0] normalized over the 4 steps,
    # then summed from each step to the end of its trajectory (4 steps, 2 trajectories: divide by 2).
    n = z([0.1, 1.0, -0.2, 0.0], trajectories=2)
    ps = compute_advantages(b, CreditConfig(estimator="ps_grpo")).advantages
    np.testing.assert_allclose(ps, [n[0] + n[1], n[1], n[2] + n[3], n[3]], rtol=1e-12)
    # gigpo: episode advantage z([1, 0]) = +-1/(sqrt(0.5) + eps); step returns (gamma 0.95):
    # A0: 0.1 + 0.95 * 1 = 1.05, B0: -0.2 + 0.95 * 0 = -0.2 -> anchor group {A0, B0}: z([1.05, -0.2]);
    # second steps have distinct anchors: step advantage 0.
    episode = z([1.0, 0.0])
    step = z([0.1 + 0.95 * 1.0, -0.2 + 0.95 * 0.0])
    gg = compute_advantages(b, CreditConfig(estimator="gigpo", omega=0.5)).advantages
    np.testing.assert_allclose(gg, [episode[0] + 0.5 * step[0], episode[0], episode[1] + 0.5 * step[1], episode[1]])


def test_gigpo_large_anchor_ids():
    # 64-bit history hashes as anchor ids: same comparison as small ids, no int64 overflow in the group key.
    small = StepBatch.from_lists(["q"] * 3, [1.0, 0.0, 0.0], [[0.1, 0.0], [-0.2, 0.0], [0.0]],
                                 [[False, True], [False, True], [True]], anchors=[[0, 1], [0, 2], [0]])
    big_ids = np.array([2**62, 2**62 + 5, 2**62, 7, 2**62])
    big = StepBatch(group=[3, 3, 3], outcome=small.outcome, traj=small.traj,
                    process_reward=small.process_reward, is_solution=small.is_solution, anchor=big_ids)
    config = CreditConfig(estimator="gigpo")
    np.testing.assert_allclose(compute_advantages(big, config).advantages,
                               compute_advantages(small, config).advantages)


# --------------------------------------------------------------------------------------------------------
# Edge cases: groups of one, equal rewards, zero-step trajectories


@pytest.mark.parametrize("name", sorted(ESTIMATORS))
def test_group_of_one_and_all_zero_rewards_give_zero(name):
    one = StepBatch.from_lists(["q"], [1.0], [[0.1, -0.3, 0.0]], [[False, False, True]], links=[[[], [0], []]],
                               anchors=[["a", "a", "b"]])
    zero = StepBatch.from_lists(["q"] * 3, [0.0] * 3, [[0.0, 0.0], [0.0], []], [[False, True], [True], []])
    for batch in (one, zero):
        out = compute_advantages(batch, CreditConfig(estimator=name))
        assert np.all(out.advantages == 0.0), (name, out.advantages)


@pytest.mark.parametrize("name", sorted(ESTIMATORS))
def test_identical_trajectories(name):
    # Three identical correct trajectories. Trajectory-level comparisons give exactly 0, and so does FineStep
    # version 2 (equal outcomes: A^O = 0; equal process returns: A^P = 0). The step-level streams of FineStep
    # version 1 (O = [0.9, 1] differs between the steps) and ps_grpo (rewards [0.1, 0 + 1]) still vary across
    # the steps of a trajectory, so they are not 0 -- but every trajectory gets the same advantages.
    batch = StepBatch.from_lists(["q"] * 3, [1.0] * 3, [[0.1, 0.0]] * 3, [[False, True]] * 3,
                                 anchors=history_anchors([["x", "y"]] * 3))
    adv = compute_advantages(batch, CreditConfig(estimator=name)).advantages.reshape(3, 2)
    assert np.all(adv == adv[0])
    if name in ZERO_ON_IDENTICAL:
        assert np.all(adv == 0.0)
    elif name in LATE_STEP_FAVOURED:
        assert adv[0, 0] < 0 < adv[0, 1]
    if name == "finestep":  # version 1 favours the late step of identical trajectories
        v1 = compute_advantages(batch, CreditConfig(**V1)).advantages.reshape(3, 2)
        assert np.all(v1 == v1[0]) and v1[0, 0] < 0 < v1[0, 1]


def test_zero_step_trajectories():
    # Group q: trajectory 0 has 2 steps (R = 1), trajectory 1 has none (R = -1). Group p: no steps at all.
    b = StepBatch.from_lists(["q", "q", "p"], [1.0, -1.0, 0.0], [[0.1, 0.0], [], []], [[False, True], [], []])
    # Trajectory-level estimators: the zero-step trajectory's R is part of the group statistics.
    grpo = compute_advantages(b, CreditConfig(estimator="grpo")).advantages
    np.testing.assert_allclose(grpo, [z([1.0, -1.0])[0]] * 2)
    # Step-level streams: only one trajectory of q has steps, so they give 0 (a group of one trajectory): ps_grpo,
    # FineStep version 1, FineStep's process term. FineStep version 2's A^O is GRPO's a_i, discounted.
    for config in (CreditConfig(estimator="ps_grpo"), CreditConfig(**V1)):
        assert np.all(compute_advantages(b, config).advantages == 0.0)
    out = compute_advantages(b, CreditConfig())
    np.testing.assert_allclose(out.advantages, [0.9 * grpo[0], grpo[1]], rtol=1e-15)
    assert np.all(out.process_advantage == 0.0)
    empty = StepBatch.from_lists(["q", "q"], [1.0, 0.0], [[], []], [[], []])
    for name in ESTIMATORS:
        assert compute_advantages(empty, CreditConfig(estimator=name)).advantages.shape == (0,)


# --------------------------------------------------------------------------------------------------------
# Properties


@SETTINGS
@given(batch=batches(), config=configs, name=st.sampled_from(sorted(ESTIMATORS)))
def test_every_advantage_is_finite(batch, config, name):
    out = compute_advantages(batch, config.with_overrides(estimator=name))
    assert out.advantages.shape == (batch.n_steps,) and out.advantages.dtype == np.float64
    assert np.all(np.isfinite(out.advantages))


def test_every_builtin_estimator_registers_its_loop_reference():
    assert set(REFERENCES) >= ZERO_ON_IDENTICAL | LATE_STEP_FAVOURED and set(REFERENCES) <= set(ESTIMATORS)


@pytest.mark.parametrize("name", sorted(REFERENCES))
@SETTINGS
@given(batch=batches(), config=configs)
def test_vectorized_equals_loop_reference(batch, config, name):
    config = config.with_overrides(estimator=name)
    np.testing.assert_allclose(
        compute_advantages(batch, config).advantages, reference_advantages(batch, config), rtol=1e-6, atol=1e-6
    )


@pytest.mark.parametrize("version", [{}, V1], ids=["v2", "v1"])
@SETTINGS
@given(batch=batches(), config=configs)
def test_finestep_versions_equal_loop_reference(batch, config, version):
    config = config.with_overrides(estimator="finestep", normalize="group", **version or {
        "outcome_norm": "trajectory", "process_scale": "batch"})
    np.testing.assert_allclose(
        compute_advantages(batch, config).advantages, reference_advantages(batch, config), rtol=1e-6, atol=1e-6
    )


@SETTINGS
@given(batch=batches(min_steps=1, same_length=True), normalize=st.sampled_from(["center", "none"]))
def test_finestep_v1_without_process_or_discount_equals_grpo_unscaled(batch, normalize):
    # lam = 0, gamma_o = 1: O_{i,t} = R_i on every step; with equal lengths the step mean is the trajectory mean.
    fs = compute_advantages(batch, CreditConfig(lam=0.0, gamma_o=1.0, normalize=normalize, **V1)).advantages
    grpo = compute_advantages(batch, CreditConfig(estimator="grpo", normalize=normalize)).advantages
    np.testing.assert_allclose(fs, grpo, atol=1e-12)


@SETTINGS
@given(batch=batches(min_steps=1, max_steps=1, same_length=True))
def test_finestep_v1_without_process_or_discount_equals_grpo_one_step(batch):
    fs = compute_advantages(batch, CreditConfig(lam=0.0, gamma_o=1.0, **V1)).advantages
    grpo = compute_advantages(batch, CreditConfig(estimator="grpo")).advantages
    np.testing.assert_allclose(fs, grpo, rtol=1e-9, atol=1e-12)


@SETTINGS
@given(batch=batches(min_steps=1, same_length=True))
def test_finestep_v1_without_process_or_discount_is_grpo(batch):
    # Over G trajectories of T steps each, O = R_i repeated T times: mean(O) = mean(R) and the squared deviations
    # sum to T * sum_i (R_i - mean R)^2, divided by n (k - 1) / k = G T (G - 1) / G = T (G - 1): std(O) = std(R).
    fs = compute_advantages(batch, CreditConfig(lam=0.0, gamma_o=1.0, **V1)).advantages
    grpo = compute_advantages(batch, CreditConfig(estimator="grpo")).advantages
    np.testing.assert_allclose(fs, grpo, rtol=1e-9, atol=1e-12)


@SETTINGS
@given(batch=batches(), normalize=st.sampled_from(NORMALIZE_MODES), process_scale=st.sampled_from(PROCESS_SCALES))
def test_finestep_v2_outcome_is_grpo_exactly(batch, normalize, process_scale):
    # Version 2 with gamma_o = 1: A^O is GRPO's advantage on every step, bit for bit, whatever the trajectory
    # lengths (zero-step trajectories included); lam = 0 leaves A = A^O.
    config = CreditConfig(gamma_o=1.0, normalize=normalize, process_scale=process_scale)
    out = compute_advantages(batch, config)
    grpo = compute_advantages(batch, CreditConfig(estimator="grpo", normalize=normalize)).advantages
    np.testing.assert_array_equal(out.outcome_advantage, grpo)
    np.testing.assert_array_equal(compute_advantages(batch, config.with_overrides(lam=0.0)).advantages, grpo)


@SETTINGS
@given(batch=batches(), config=configs, normalize=st.sampled_from(["group", "center"]))
def test_finestep_v2_equal_outcomes_give_zero_outcome_advantage(batch, config, normalize):
    out = compute_advantages(batch, config.with_overrides(outcome_norm="trajectory", normalize=normalize,
                                                          equal_outcome="zero"))  # fmt: skip
    for g in range(batch.n_groups):
        members = batch.group_index == g
        if np.ptp(batch.outcome[members]) == 0.0:
            assert np.all(out.outcome_advantage[members[batch.traj]] == 0.0)


def test_equal_outcome_batch_credits_only_the_solutions_of_equal_groups_by_hand():
    # q1: both right (equal), q2: right and wrong. Batch R = 1, 1, 1, 0: mean 0.75, sample std 0.5.
    b = StepBatch.from_lists(
        groups=["q1", "q1", "q2", "q2"], outcomes=[1, 1, 1, 0],
        process_rewards=[[0.0, 0.0], [0.0], [0.0], [0.0, 0.0]],
        is_solution=[[False, True], [True], [True], [False, True]],
    )  # fmt: skip
    zero = compute_advantages(b, CreditConfig(lam=0.0))
    batch = compute_advantages(b, CreditConfig(lam=0.0, equal_outcome="batch"))
    relative = (1 - 0.75) / (0.5 + 1e-6)
    # q1's probe keeps A^O = 0; its two solutions get (1 - 0.75) / 0.5; q2 (mixed) is unchanged
    np.testing.assert_allclose(batch.outcome_advantage[:3], [0.0, relative, relative])
    np.testing.assert_allclose(zero.outcome_advantage[:3], [0.0, 0.0, 0.0])
    np.testing.assert_array_equal(batch.outcome_advantage[3:], zero.outcome_advantage[3:])


def test_gated_variant_gives_groups_of_equal_outcomes_no_credit_by_hand():
    # q1: both wrong (equal outcomes), its probes differ in process reward; q2: right and wrong.
    b = StepBatch.from_lists(
        groups=["q1", "q1", "q2", "q2"], outcomes=[0, 0, 1, 0],
        process_rewards=[[0.1, 0.0], [-0.3, 0.0], [0.1, 0.0], [-0.2, 0.0]],
        is_solution=[[False, True], [False, True], [False, True], [False, True]],
    )  # fmt: skip
    v2 = compute_advantages(b, CreditConfig.ablation("ungated"))
    gated = compute_advantages(b, CreditConfig())  # the default
    half = compute_advantages(b, CreditConfig(equal_outcome_process=0.5))
    assert np.all(v2.advantages[[0, 2]] != 0.0)  # v2 credits q1's probes by process reward alone
    np.testing.assert_array_equal(gated.advantages[:4], np.zeros(4))  # q1: nothing, as under GRPO
    np.testing.assert_array_equal(gated.advantages[4:], v2.advantages[4:])  # q2 (mixed) is v2's, bit for bit
    np.testing.assert_allclose(half.advantages[:4], 0.5 * v2.advantages[:4])  # A^O is 0 in q1: only A^P scales


def test_uncentred_process_term_keeps_the_rules_signs_by_hand():
    # one group, internal steps with P~ = r (gamma_p = 0, beta = 0): -0.3, 0.0, -0.2 (solutions excluded)
    b = StepBatch.from_lists(
        groups=["q", "q"], outcomes=[1, 1],
        process_rewards=[[-0.3, 0.0, 0.0], [-0.2, 0.0]],
        is_solution=[[False, False, True], [False, True]],
    )  # fmt: skip
    config = CreditConfig(gamma_p=0.0, beta=0.0, process_center=False, equal_outcome_process=1.0)  # one equal group
    values = np.array([-0.3, 0.0, -0.2])
    dev = values - values.mean()
    std = np.sqrt(np.dot(dev, dev) / (3 * (2 - 1) / 2))  # Bessel's correction counted in 2 trajectories
    out = compute_advantages(b, config).process_advantage
    np.testing.assert_allclose(out, [-0.3 / (std + 1e-6), 0.0, 0.0, -0.2 / (std + 1e-6), 0.0])
    centred = compute_advantages(b, config.with_overrides(process_center=True)).process_advantage
    assert centred[1] > 0.0  # centring makes the step no rule fired on look good: what the switch removes


@SETTINGS
@given(batch=batches(min_steps=1), config=configs)
def test_finestep_v2_process_scale_is_one_number_for_the_batch(batch, config):
    # process_scale = batch divides the centred returns (process_scale = none) of every group by one scalar.
    config = config.with_overrides(normalize="group", process_center=True)
    scaled = compute_advantages(batch, config.with_overrides(process_scale="batch")).process_advantage
    centred = compute_advantages(batch, config.with_overrides(process_scale="none")).process_advantage
    assert np.all(scaled[centred == 0.0] == 0.0)
    ratio = scaled[centred != 0.0] / centred[centred != 0.0]
    if ratio.size:
        np.testing.assert_allclose(ratio, ratio[0], rtol=1e-9)
        assert ratio[0] > 0.0


@SETTINGS
@given(batch=batches(), shift=st.floats(-100, 100), name=st.sampled_from(["grpo", "rloo"]))
def test_grpo_invariant_to_constant_reward_shift(batch, shift, name):
    shifted = StepBatch(
        group=batch.group, outcome=batch.outcome + shift, traj=batch.traj,
        process_reward=batch.process_reward, is_solution=batch.is_solution,
    )
    config = CreditConfig(estimator=name)
    np.testing.assert_allclose(
        compute_advantages(shifted, config).advantages, compute_advantages(batch, config).advantages, atol=1e-8
    )


@SETTINGS
@given(
    data=st.data(),
    n_internal=st.integers(1, 5),
    others=st.lists(st.integers(0, 5), max_size=3),
    config=st.builds(
        CreditConfig, gamma_p=unit, gamma_o=unit, beta=st.floats(0.0, 0.9), lam=st.floats(0.05, 2.0),
        normalize=st.sampled_from(NORMALIZE_MODES), per_step_index_norm=st.booleans(),
        process_internal_only=st.booleans(), outcome_norm=st.sampled_from(OUTCOME_NORMS),
        process_scale=st.sampled_from(PROCESS_SCALES), equal_outcome_process=st.sampled_from([0.0, 0.5, 1.0]),
    ),
)
def test_redundant_step_gets_lower_advantage(data, n_internal, others, config):
    # Two correct trajectories, identical (rewards, links) except that step j of the second one is also
    # flagged redundant (-0.3). Its advantage must be strictly lower than step j of the first, unless the
    # group's outcomes are all equal and the process term is gated there: then the twins get the same advantages
    # (0 under version 2's outcome term, the same position-only A^O under version 1's).
    rewards = data.draw(st.lists(REWARD, min_size=n_internal, max_size=n_internal)) + [0.0]
    j = data.draw(st.integers(0, n_internal - 1))
    links = [data.draw(st.lists(st.integers(0, t - 1), max_size=2, unique=True)) if t else []
             for t in range(n_internal + 1)]
    redundant = list(rewards)
    redundant[j] -= 0.3
    cols = [["q", "q"], [1.0, 1.0], [rewards, redundant], [[False] * n_internal + [True]] * 2, [links, links]]
    for n_steps in others:
        R, r, flags, lk, _ = data.draw(trajectory(n_steps))
        for col, value in zip(cols, ("q", R, r, flags, lk)):
            col.append(value)
    batch = StepBatch.from_lists(*cols)
    adv = compute_advantages(batch, config).advantages
    first, second = batch.offsets[0], batch.offsets[1]
    length = n_internal + 1
    if np.ptp(batch.outcome) == 0.0 and config.equal_outcome_process == 0.0:
        np.testing.assert_array_equal(adv[second : second + length], adv[first : first + length])
        return
    assert adv[second + j] < adv[first + j]
    # and no step of the redundant trajectory is credited above its twin
    assert np.all(adv[second : second + length] <= adv[first : first + length] + 1e-12)


@SETTINGS
@given(batch=batches(), config=configs)
def test_no_process_ablation_is_lambda_zero(batch, config):
    a = compute_advantages(batch, config.with_overrides(use_process=False)).advantages
    b = compute_advantages(batch, config.with_overrides(lam=0.0)).advantages
    np.testing.assert_array_equal(a, b)


def test_process_internal_only_switch():
    b = StepBatch.from_lists(["q", "q"], [1.0, 0.0], [[0.1, -0.5], [0.0, 0.0]], [[False, True], [False, True]])
    on = compute_advantages(b, CreditConfig())
    off = compute_advantages(b, CreditConfig(process_internal_only=False))
    solution = b.is_solution
    np.testing.assert_array_equal(on.advantages[solution], on.outcome_advantage[solution])
    # off: A^P over all four steps (P~ = [0.1 - 0.25, -0.5, 0, 0]) and added to the solution steps too
    np.testing.assert_allclose(off.process_advantage, z([0.1 + 0.5 * -0.5, -0.5, 0.0, 0.0], trajectories=2), rtol=1e-12)
    np.testing.assert_allclose(off.advantages, off.outcome_advantage + 0.5 * off.process_advantage)


def test_per_step_index_normalization():
    # Per (group, index): index 0 holds P of both first steps, index 1 both solution steps.
    b = StepBatch.from_lists(["q", "q"], [1.0, 0.0], [[0.2, 0.0], [-0.2, 0.0]], [[False, True], [False, True]])
    out = compute_advantages(b, CreditConfig(per_step_index_norm=True, **V1))
    # v1: O at index 0: [0.9, 0], at index 1: [1, 0] -> each z([x, 0]) = +-1/(sqrt(x^2/2) + eps)
    np.testing.assert_allclose(out.outcome_advantage, [z([0.9, 0.0])[0], z([1.0, 0.0])[0],
                                                      z([0.9, 0.0])[1], z([1.0, 0.0])[1]], rtol=1e-12)
    np.testing.assert_allclose(out.process_advantage, [z([0.2, -0.2])[0], 0.0, z([0.2, -0.2])[1], 0.0])
    # v2: A^O is GRPO's a_i discounted (a trajectory-level statistic: per_step_index_norm leaves it alone);
    # A^P centred per (group, index): index 0 gives c = [0.2, -0.2], the batch std of 2 values from 2
    # trajectories is sqrt(0.08 / 1), the same as the group's here.
    v2 = compute_advantages(b, CreditConfig(per_step_index_norm=True))
    a = z([1.0, 0.0])
    np.testing.assert_allclose(v2.outcome_advantage, [0.9 * a[0], a[0], 0.9 * a[1], a[1]], rtol=1e-12)
    np.testing.assert_allclose(v2.process_advantage, [z([0.2, -0.2])[0], 0.0, z([0.2, -0.2])[1], 0.0], rtol=1e-12)
    # With a second, shorter-lived group the batch std mixes both groups' centred values.
    b2 = StepBatch.from_lists(["q", "q", "p", "p"], [1.0, 0.0, 1.0, 0.0],
                              [[0.2, 0.0], [-0.2, 0.0], [0.1, 0.0, 0.0], [0.0, 0.0, 0.0]],
                              [[False, True], [False, True], [False, False, True], [False, False, True]])
    v2 = compute_advantages(b2, CreditConfig(per_step_index_norm=True, beta=0.0))
    # P: q index 0 [0.2, -0.2]; p index 0 [0.1, 0], index 1 [0, 0] (dead: zero spread)
    c = [0.2, -0.2, 0.05, -0.05]
    std = math.sqrt(sum(x * x for x in c) / (4 * 3 / 4))  # 4 live values from 4 trajectories
    internal = ~b2.is_solution
    np.testing.assert_allclose(v2.process_advantage[internal],
                               [c[0] / (std + EPS), c[1] / (std + EPS), c[2] / (std + EPS), 0.0,
                                c[3] / (std + EPS), 0.0], rtol=1e-12)


# --------------------------------------------------------------------------------------------------------
# Primitives


@SETTINGS
@given(lengths=st.lists(st.integers(0, 8), min_size=1, max_size=6), gamma=unit, data=st.data())
def test_discounted_reverse_cumsum_matches_definition(lengths, gamma, data):
    values = data.draw(st.lists(REWARD, min_size=sum(lengths), max_size=sum(lengths)))
    remaining = [n - 1 - t for n in lengths for t in range(n)]
    expected, start = [], 0
    for n in lengths:
        seg = values[start : start + n]
        expected += [sum(gamma ** (k - t) * seg[k] for k in range(t, n)) for t in range(n)]
        start += n
    got = discounted_reverse_cumsum(np.array(values), np.array(remaining, dtype=np.int64), gamma)
    np.testing.assert_allclose(got, expected, atol=1e-12)


def test_discounted_reverse_cumsum_long_trajectory_no_overflow():
    n = 5000  # 0.5^-5000 would overflow a gamma^-t scaling; the scan is exact
    got = discounted_reverse_cumsum(np.ones(n), np.arange(n)[::-1].copy(), 0.5)
    assert np.all(np.isfinite(got)) and got[0] == pytest.approx(2.0) and got[-1] == 1.0


def test_group_center_and_pooled_std():
    centred, live = group_center(np.array([1.0, 3.0, 5.0, 2.0, 2.0, 7.0]), np.array([0, 0, 0, 1, 1, 2]), 3)
    np.testing.assert_allclose(centred, [-2.0, 0.0, 2.0, 0.0, 0.0, 0.0])
    assert live.tolist() == [True, True, True, False, False, False]  # zero spread; a single value
    # 4 values from 2 trajectories: divide the squared deviations by 4 * 1 / 2 = 2
    assert pooled_std(np.array([1.0, -1.0, 2.0, -2.0]), np.array([0, 0, 1, 1])) == pytest.approx(math.sqrt(10 / 2))
    assert pooled_std(np.array([1.0, -1.0]), np.array([4, 4])) == 0.0  # one trajectory
    assert pooled_std(np.array([0.3, 0.1 + 0.2]), np.array([0, 1])) == 0.0  # zero spread up to rounding
    assert pooled_std(np.zeros(0), np.zeros(0, dtype=np.int64)) == 0.0


def test_group_normalize_degenerate_segments():
    values = np.array([1.0, 1.0, 5.0, 0.3, 0.1 + 0.2])  # segment 2 is equal up to rounding
    ids = np.array([0, 0, 1, 2, 2])
    out = group_normalize(values, ids, 3)
    assert np.all(out == 0.0)
    out = group_normalize(np.array([1.0, 3.0]), np.array([0, 0]), 1, n_sources=np.array([1]))
    assert np.all(out == 0.0)  # one trajectory behind both values
    np.testing.assert_allclose(group_normalize(np.array([1.0, 3.0]), np.array([0, 0]), 1), z([1.0, 3.0]))
    with pytest.raises(ValueError, match="normalize mode"):
        group_normalize(values, ids, 3, mode="batch")
