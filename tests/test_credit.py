"""Tests of finestep.credit: batch construction, hand-computed estimator cases, properties, loop reference."""

from __future__ import annotations

import math
import statistics

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from finestep.credit import (
    ABLATIONS,
    ESTIMATORS,
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
from finestep.credit.ops import NORMALIZE_MODES
from finestep.credit.reference import reference_advantages

EPS = 1e-6
SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


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
    per_step_index_norm=st.booleans(), use_process=st.booleans(), process_internal_only=st.booleans(),
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
    with pytest.raises(ValueError, match="gamma_p must lie in"):
        CreditConfig(gamma_p=1.5)
    with pytest.raises(ValueError, match="normalize must be one of"):
        CreditConfig(normalize="batch")
    with pytest.raises(ValueError, match="unknown ablation"):
        CreditConfig.ablation("no_everything")
    with pytest.raises(ValueError, match="unknown CreditConfig fields"):
        c.with_overrides(lamda=0.1)
    assert CreditConfig.ablation("no_temporal").gamma_p == 0.0 and CreditConfig.ablation("no_temporal").gamma_o == 1
    assert CreditConfig.ablation("no_process").effective_lam == 0.0
    assert CreditConfig.ablation("no_logical").beta == 0.0
    assert CreditConfig.ablation("no_group_norm").normalize == "none"
    assert not CreditConfig.ablation("no_masking").process_internal_only
    assert set(ABLATIONS) == {"full", "no_process", "no_temporal", "no_logical", "no_group_norm", "no_masking"}


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


def test_finestep_hand_computed_without_smoothing():
    # Trajectory A: r = [0.1, -0.2, 0.0 (solution)], R = 1, T = 3.  Trajectory B: r = [-0.3, 0.0 (solution)], R = 0.
    b = StepBatch.from_lists(
        ["q", "q"], [1.0, 0.0], [[0.1, -0.2, 0.0], [-0.3, 0.0]], [[False, False, True], [False, True]],
        links=[[[], [0], []], [[], []]],  # ignored with beta = 0
    )
    out = compute_advantages(b, CreditConfig(beta=0.0))
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


def test_finestep_hand_computed_with_links():
    # A: r = [-0.2, 0.1, 0.1, 0 (solution)], R = 1; step 1 repairs step 0, step 2 uses steps 0 and 1.
    # B: r = [0.1, 0 (solution)], R = 0, no links.
    b = StepBatch.from_lists(
        ["q", "q"], [1.0, 0.0], [[-0.2, 0.1, 0.1, 0.0], [0.1, 0.0]],
        [[False, False, False, True], [False, True]],
        links=[[[], [0], [0, 1], []], [[], []]],
    )
    out = compute_advantages(b, CreditConfig())  # beta = 0.3, gamma_p = 0.5, gamma_o = 0.9, lam = 0.5
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
    # Three identical correct trajectories. Trajectory-level comparisons give exactly 0. The step-level streams
    # of finestep (O = [0.9, 1] differs between the steps) and ps_grpo (rewards [0.1, 0 + 1]) still vary
    # across the steps of a trajectory, so they are not 0 -- but every trajectory gets the same advantages.
    batch = StepBatch.from_lists(["q"] * 3, [1.0] * 3, [[0.1, 0.0]] * 3, [[False, True]] * 3,
                                 anchors=history_anchors([["x", "y"]] * 3))
    adv = compute_advantages(batch, CreditConfig(estimator=name)).advantages.reshape(3, 2)
    assert np.all(adv == adv[0])
    if name in ("grpo", "grpo_shaped", "rloo", "gigpo"):
        assert np.all(adv == 0.0)
    else:
        assert adv[0, 0] < 0 < adv[0, 1]


def test_zero_step_trajectories():
    # Group q: trajectory 0 has 2 steps (R = 1), trajectory 1 has none (R = -1). Group p: no steps at all.
    b = StepBatch.from_lists(["q", "q", "p"], [1.0, -1.0, 0.0], [[0.1, 0.0], [], []], [[False, True], [], []])
    # Trajectory-level estimators: the zero-step trajectory's R is part of the group statistics.
    grpo = compute_advantages(b, CreditConfig(estimator="grpo")).advantages
    np.testing.assert_allclose(grpo, [z([1.0, -1.0])[0]] * 2)
    # Step-level streams: only one trajectory of q has steps, so FineStep gives 0 (a group of one trajectory).
    for name in ("finestep", "ps_grpo"):
        assert np.all(compute_advantages(b, CreditConfig(estimator=name)).advantages == 0.0)
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


@pytest.mark.parametrize("name", sorted(ESTIMATORS))
@SETTINGS
@given(batch=batches(), config=configs)
def test_vectorized_equals_loop_reference(batch, config, name):
    config = config.with_overrides(estimator=name)
    np.testing.assert_allclose(
        compute_advantages(batch, config).advantages, reference_advantages(batch, config), rtol=1e-6, atol=1e-6
    )


@SETTINGS
@given(batch=batches(min_steps=1, same_length=True), normalize=st.sampled_from(["center", "none"]))
def test_finestep_without_process_or_discount_equals_grpo_unscaled(batch, normalize):
    # lam = 0, gamma_o = 1: O_{i,t} = R_i on every step; with equal lengths the step mean is the trajectory mean.
    fs = compute_advantages(batch, CreditConfig(lam=0.0, gamma_o=1.0, normalize=normalize)).advantages
    grpo = compute_advantages(batch, CreditConfig(estimator="grpo", normalize=normalize)).advantages
    np.testing.assert_allclose(fs, grpo, atol=1e-12)


@SETTINGS
@given(batch=batches(min_steps=1, max_steps=1, same_length=True))
def test_finestep_without_process_or_discount_equals_grpo_one_step(batch):
    fs = compute_advantages(batch, CreditConfig(lam=0.0, gamma_o=1.0)).advantages
    grpo = compute_advantages(batch, CreditConfig(estimator="grpo")).advantages
    np.testing.assert_allclose(fs, grpo, rtol=1e-9, atol=1e-12)


@SETTINGS
@given(batch=batches(min_steps=1, same_length=True))
def test_finestep_without_process_or_discount_is_grpo(batch):
    # Over G trajectories of T steps each, O = R_i repeated T times: mean(O) = mean(R) and the squared deviations
    # sum to T * sum_i (R_i - mean R)^2, divided by n (k - 1) / k = G T (G - 1) / G = T (G - 1): std(O) = std(R).
    fs = compute_advantages(batch, CreditConfig(lam=0.0, gamma_o=1.0)).advantages
    grpo = compute_advantages(batch, CreditConfig(estimator="grpo")).advantages
    np.testing.assert_allclose(fs, grpo, rtol=1e-9, atol=1e-12)


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
        process_internal_only=st.booleans(),
    ),
)
def test_redundant_step_gets_lower_advantage(data, n_internal, others, config):
    # Two correct trajectories, identical (rewards, links) except that step j of the second one is also
    # flagged redundant (-0.3). Its advantage must be strictly lower than step j of the first.
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
    assert adv[second + j] < adv[first + j]
    # and no step of the redundant trajectory is credited above its twin
    length = n_internal + 1
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
    out = compute_advantages(b, CreditConfig(per_step_index_norm=True))
    # O at index 0: [0.9, 0], at index 1: [1, 0] -> each z([x, 0]) = +-1/(sqrt(x^2/2) + eps)
    np.testing.assert_allclose(out.outcome_advantage, [z([0.9, 0.0])[0], z([1.0, 0.0])[0],
                                                      z([0.9, 0.0])[1], z([1.0, 0.0])[1]], rtol=1e-12)
    np.testing.assert_allclose(out.process_advantage, [z([0.2, -0.2])[0], 0.0, z([0.2, -0.2])[1], 0.0])


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
