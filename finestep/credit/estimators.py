"""Step-level advantage estimators: FineStep and the baselines of FINESTEP.md, one registry.

Every estimator is ``fn(batch: StepBatch, config: CreditConfig) -> StepAdvantages``, pure and vectorized over
all steps and trajectories of the batch (loops run at most over the step position, never per step or per
trajectory). Shapes: ``N`` trajectories, ``S`` steps, ``K`` groups.

Group rule shared by every normalized stream (``normalize`` = ``"group"`` or ``"center"``): a group whose
stream has fewer than two values, values from fewer than two trajectories, or zero spread contributes exactly 0.
Only finestep's ``process_scale="batch"`` (its default) looks across groups: the scale of ``A^P`` is one number
for the whole batch, so the estimator must see every group of the update at once.
Under ``normalize="none"`` (raw returns) nothing is zeroed, except gigpo's anchor groups of one trajectory.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from finestep.credit import reference
from finestep.credit.batch import StepBatch
from finestep.credit.config import CreditConfig
from finestep.credit.ops import (
    discounted_reverse_cumsum,
    group_center,
    group_normalize,
    link_smooth,
    pooled_std,
)

__all__ = [
    "ANCHOR_ESTIMATORS",
    "ESTIMATORS",
    "REFERENCES",
    "Estimator",
    "StepAdvantages",
    "UnknownEstimatorError",
    "compute_advantages",
    "estimator_help",
    "get_estimator",
    "get_reference",
    "reference_advantages",
    "register_estimator",
]


@dataclass(frozen=True, eq=False)
class StepAdvantages:
    """The output of an estimator. Every array is (S,) float64, aligned with the batch's steps.

    advantages: ``A_{i,t}``, what every token of step t receives.
    outcome_return, process_return, smoothed_process_return: ``O``, ``P``, ``P~`` (finestep only).
    outcome_advantage, process_advantage: ``A^O``, ``A^P`` (finestep only; ``A^P`` is 0 on the steps that do
        not receive the process term, i.e. solution steps when ``process_internal_only``).
    The intermediates are ``None`` for estimators that do not define them. ``extras`` holds estimator-specific
    arrays: ``trajectory_advantage`` (N,) for the trajectory-level baselines, ``episode_advantage`` and
    ``step_advantage``, ``step_reward``, ``step_return`` (S,) for gigpo, ``step_reward`` and
    ``normalized_reward`` (S,) for ps_grpo.
    """

    advantages: np.ndarray
    outcome_return: np.ndarray | None = None
    process_return: np.ndarray | None = None
    smoothed_process_return: np.ndarray | None = None
    outcome_advantage: np.ndarray | None = None
    process_advantage: np.ndarray | None = None
    extras: dict[str, np.ndarray] = field(default_factory=dict)


Estimator = Callable[[StepBatch, CreditConfig], StepAdvantages]
Reference = Callable[[StepBatch, CreditConfig], np.ndarray]
ESTIMATORS: dict[str, Estimator] = {}
#: loop references of the estimators that have one (``credit.reference``): the tests' ground truth.
REFERENCES: dict[str, Reference] = {}
#: estimators that compare steps through ``StepBatch.anchor`` (without anchors they reduce to another one).
ANCHOR_ESTIMATORS: set[str] = set()


class UnknownEstimatorError(ValueError):
    """Raised by ``get_estimator`` for a name that is not registered."""


def register_estimator(
    name: str, *, reference: Reference | None = None, uses_anchors: bool = False
) -> Callable[[Estimator], Estimator]:
    """Decorator registering ``fn(batch, config) -> StepAdvantages`` under ``name`` (names are unique).

    ``reference``: a slow loop implementation ``ref(batch, config) -> (S,) advantages`` of the same definition,
    which the tests compare the estimator with (every registered reference is tested). ``uses_anchors``: the
    estimator needs ``StepBatch.anchor`` (GiGPO); integrations that cannot provide anchors (verl) leave it out.
    The first line of ``fn``'s docstring is its help text (``finestep credit --help``).
    """

    def decorate(fn: Estimator) -> Estimator:
        if name in ESTIMATORS:
            raise ValueError(f"estimator {name!r} is already registered")
        ESTIMATORS[name] = fn
        if reference is not None:
            REFERENCES[name] = reference
        if uses_anchors:
            ANCHOR_ESTIMATORS.add(name)
        return fn

    return decorate


def get_estimator(name: str) -> Estimator:
    """The estimator registered under ``name``; ``UnknownEstimatorError`` lists the known names otherwise."""
    try:
        return ESTIMATORS[name]
    except KeyError:
        raise UnknownEstimatorError(
            f"unknown credit estimator {name!r}; registered estimators: {', '.join(sorted(ESTIMATORS))}"
        ) from None


def get_reference(name: str) -> Reference | None:
    """The loop reference registered with estimator ``name``, or None."""
    get_estimator(name)
    return REFERENCES.get(name)


def reference_advantages(batch: StepBatch, config: CreditConfig) -> np.ndarray:
    """(S,) advantages of ``config.estimator`` computed by its registered loop reference (ValueError if none)."""
    ref = get_reference(config.estimator)
    if ref is None:
        raise ValueError(f"estimator {config.estimator!r} has no loop reference; those with one: {sorted(REFERENCES)}")
    return ref(batch, config)


def estimator_help(name: str) -> str:
    """The first line of the docstring of the estimator registered under ``name``."""
    doc = (get_estimator(name).__doc__ or "").strip()
    return doc.splitlines()[0] if doc else ""


def compute_advantages(batch: StepBatch, config: CreditConfig) -> StepAdvantages:
    """Run the estimator named by ``config.estimator`` on ``batch``."""
    return get_estimator(config.estimator)(batch, config)


def _sources(batch: StepBatch, selected: np.ndarray | None = None) -> np.ndarray:
    """(K,) number of distinct trajectories with at least one (selected) step in each group."""
    traj = batch.traj if selected is None else batch.traj[selected]
    has_steps = np.bincount(traj, minlength=batch.n_traj) > 0
    return np.bincount(batch.group_index, weights=has_steps, minlength=batch.n_groups)


def _step_buckets(batch: StepBatch, selected: np.ndarray, config: CreditConfig) -> tuple[np.ndarray, int, np.ndarray | None]:
    """``(ids, n_ids, n_sources)`` of the selected steps' statistics: per group, or per (group, step index)."""
    if config.per_step_index_norm:
        width = int(batch.lengths.max())
        # One step per trajectory per (group, index): the value count is the trajectory count.
        return batch.step_group[selected] * width + batch.position[selected], batch.n_groups * width, None
    return batch.step_group[selected], batch.n_groups, _sources(batch, selected)


def _normalize_steps(
    values: np.ndarray, batch: StepBatch, selected: np.ndarray, config: CreditConfig
) -> np.ndarray:
    """Normalize the selected steps' values per group (or per (group, step index)); 0 on the others. (S,)"""
    out = np.zeros(batch.n_steps, dtype=np.float64)
    if not selected.any():
        return out
    ids, n_ids, sources = _step_buckets(batch, selected, config)
    out[selected] = group_normalize(
        values[selected], ids, n_ids, mode=config.normalize, eps=config.eps, n_sources=sources
    )
    return out


def _outcome_advantage(batch: StepBatch, O: np.ndarray, config: CreditConfig) -> np.ndarray:
    """(S,) ``A^O``: v2 ``gamma_o^(T_i-t) a_i`` with GRPO's ``a_i``; v1 ``O`` normalized over the group's steps.

    ``normalize="none"`` keeps the raw ``O`` under both; ``"center"`` drops the std (``a_i = R_i - mean R``).
    """
    if config.outcome_norm == "steps" or config.normalize == "none":
        return _normalize_steps(O, batch, np.ones(batch.n_steps, dtype=bool), config)
    a = group_normalize(batch.outcome, batch.group_index, batch.n_groups, mode=config.normalize, eps=config.eps)
    A_O = config.gamma_o ** batch.remaining.astype(np.float64) * a[batch.traj]
    if config.equal_outcome == "batch" and batch.n_traj:
        return _equal_groups_solution(batch, A_O, config)
    return A_O


def _equal_groups_solution(batch: StepBatch, A_O: np.ndarray, config: CreditConfig) -> np.ndarray:
    """(S,) ``A_O`` with the solution steps of groups whose outcomes are all equal given the batch-relative
    outcome ``(R_i - mean R) / (std R + eps)`` (sample std over the batch's trajectories; 0 if it is 0)."""
    R = batch.outcome
    std = pooled_std(R, np.arange(batch.n_traj))
    relative = (R - R.mean()) / (std + config.eps) if std > 0 else np.zeros_like(R)
    chosen = batch.is_solution & ~batch.outcome_varies[batch.step_group]
    out = A_O.copy()
    out[chosen] = relative[batch.traj[chosen]]
    return out


def _process_advantage(
    batch: StepBatch, P_smooth: np.ndarray, selected: np.ndarray, config: CreditConfig
) -> np.ndarray:
    """(S,) ``A^P`` on the selected steps, 0 elsewhere: ``P~`` centred per group, then scaled.

    ``process_scale="batch"`` (v2) divides by the std of the centred values over the live steps of the whole
    batch (``pooled_std``: steps of degenerate groups, which get 0, take no part); ``"group"`` (v1) by the
    group's own std; ``"none"`` (or ``normalize="center"``) keeps the centred values; ``normalize="none"`` keeps
    the raw ``P~``.
    """
    if config.normalize == "none" or (config.normalize == "group" and config.process_scale == "group"):
        return _normalize_steps(P_smooth, batch, selected, config)
    out = np.zeros(batch.n_steps, dtype=np.float64)
    if not selected.any():
        return out
    if not config.process_center:  # the rules' signs kept: scaled by the batch's spread of P~ alone
        values = P_smooth[selected]
        if config.normalize == "group" and config.process_scale == "batch":
            std = pooled_std(values, batch.traj[selected])
            values = values / (std + config.eps) if std > 0.0 else np.zeros_like(values)
        out[selected] = values
        return out
    ids, n_ids, sources = _step_buckets(batch, selected, config)
    centred, live = group_center(P_smooth[selected], ids, n_ids, n_sources=sources)
    if config.normalize == "group" and config.process_scale == "batch":
        std = pooled_std(centred[live], batch.traj[selected][live])
        centred = centred / (std + config.eps) if std > 0.0 else np.zeros_like(centred)
    out[selected] = centred
    return out


@register_estimator("finestep", reference=reference.ref_finestep)
def finestep(batch: StepBatch, config: CreditConfig) -> StepAdvantages:
    """FineStep (FINESTEP.md section 2, version 2 by default): temporal, logical and group-relative step credit.

    ``P_{i,t} = sum_{k>=t} gamma_p^(k-t) r_{i,k}``; ``O_{i,t} = gamma_o^(T_i-t) R_i``;
    ``P~ = (1 - beta) P + beta * mean_{k in L(t)} P_k`` (links in both directions, unchanged without links).
    v2: ``A^O = gamma_o^(T_i-t) a_i`` with ``a_i`` GRPO's advantage of trajectory i in its group;
    ``A^P = c / (std_batch(c) + eps)`` with ``c = P~ - mean`` over the internal steps of the group and
    ``std_batch`` over the live internal steps of the whole batch. v1 (``outcome_norm="steps"``,
    ``process_scale="group"``): ``A^O`` = O normalized over all steps of the group, ``A^P`` = P~ normalized
    over the group's internal steps. ``A = A^O + lambda A^P`` on internal steps and ``A^O`` on solution steps;
    in a group whose outcomes are all equal ``A^P`` is multiplied by ``equal_outcome_process`` (0 by default:
    such a group gets no credit, as under GRPO; 1 is version 2 as first written).
    With ``process_internal_only=False`` A^P is computed over and added to every step. With
    ``per_step_index_norm`` the step-level group statistics are per (group, step index). Returns every
    intermediate, (S,) each.
    """
    P = discounted_reverse_cumsum(batch.process_reward, batch.remaining, config.gamma_p)
    O = config.gamma_o ** batch.remaining.astype(np.float64) * batch.outcome[batch.traj]
    P_smooth = link_smooth(P, batch.link_src, batch.link_dst, config.beta)
    A_O = _outcome_advantage(batch, O, config)
    process_steps = ~batch.is_solution if config.process_internal_only else np.ones(batch.n_steps, dtype=bool)
    A_P = _process_advantage(batch, P_smooth, process_steps, config)
    if config.equal_outcome_process != 1.0 and batch.n_traj:
        A_P = A_P * np.where(batch.outcome_varies[batch.step_group], 1.0, config.equal_outcome_process)
    return StepAdvantages(
        advantages=A_O + config.effective_lam * A_P,
        outcome_return=O,
        process_return=P,
        smoothed_process_return=P_smooth,
        outcome_advantage=A_O,
        process_advantage=A_P,
    )


def _trajectory_level(batch: StepBatch, score: np.ndarray, config: CreditConfig) -> StepAdvantages:
    """Normalize one score per trajectory within its group, give it to every step of the trajectory."""
    A_traj = group_normalize(score, batch.group_index, batch.n_groups, mode=config.normalize, eps=config.eps)
    return StepAdvantages(advantages=A_traj[batch.traj], extras={"trajectory_advantage": A_traj})


@register_estimator("grpo", reference=reference.ref_grpo)
def grpo(batch: StepBatch, config: CreditConfig) -> StepAdvantages:
    """GRPO: ``A_i = (R_i - mean R) / (std R + eps)`` over the group's trajectories, on every step of i.

    Zero-step trajectories count in the group statistics. Uses ``normalize`` and ``eps``.
    """
    return _trajectory_level(batch, batch.outcome, config)


@register_estimator("grpo_shaped", reference=reference.ref_grpo_shaped)
def grpo_shaped(batch: StepBatch, config: CreditConfig) -> StepAdvantages:
    """GRPO on the shaped score ``R_i + sum_t r_{i,t}``: process rewards without step-level assignment."""
    score = batch.outcome + np.bincount(batch.traj, weights=batch.process_reward, minlength=batch.n_traj)
    return _trajectory_level(batch, score, config)


@register_estimator("rloo", reference=reference.ref_rloo)
def rloo(batch: StepBatch, config: CreditConfig) -> StepAdvantages:
    """RLOO: ``A_i = R_i - mean_{j != i} R_j = G/(G-1) (R_i - mean R)`` on every step; 0 in a group of one.

    Never divided by a std (``normalize`` is ignored); a group with zero spread gets exactly 0.
    """
    centered = group_normalize(batch.outcome, batch.group_index, batch.n_groups, mode="center")
    size = batch.group_size[batch.group_index].astype(np.float64)
    A_traj = centered * size / np.maximum(size - 1.0, 1.0)
    return StepAdvantages(advantages=A_traj[batch.traj], extras={"trajectory_advantage": A_traj})


def _step_rewards(batch: StepBatch) -> np.ndarray:
    """(S,) ``r_t``, plus ``R_i`` on the last step of each trajectory (the outcome as the final step's reward)."""
    return batch.process_reward + np.where(batch.remaining == 0, batch.outcome[batch.traj], 0.0)


@register_estimator("gigpo", reference=reference.ref_gigpo, uses_anchors=True)
def gigpo(batch: StepBatch, config: CreditConfig) -> StepAdvantages:
    """GiGPO: episode advantage (GRPO on R) plus ``omega *`` anchor-state step advantage.

    Step return: ``G_t = sum_{k>=t} gigpo_gamma^(k-t) rew_k`` with ``rew_k = r_k``, plus ``R_i`` on the last
    step. Steps of one group sharing an anchor id are an anchor group; their ``G_t`` are normalized within it
    (``normalize``, ``eps``). Steps with anchor -1, and anchor groups holding steps of fewer than two
    trajectories, get step advantage 0 (so without anchors gigpo equals grpo); two steps of one trajectory in
    an anchor group with other trajectories are both compared.
    """
    episode = grpo(batch, config)
    rewards = _step_rewards(batch)
    returns = discounted_reverse_cumsum(rewards, batch.remaining, config.gigpo_gamma)
    step_adv = np.zeros(batch.n_steps, dtype=np.float64)
    known = np.flatnonzero(batch.anchor >= 0)
    if known.size:
        anchor = batch.anchor[known]
        span = int(anchor.max()) + 1
        if span > 2**62 // batch.n_groups:  # e.g. 64-bit history hashes: densify first, no int64 overflow
            anchor = np.unique(anchor, return_inverse=True)[1].reshape(-1)
            span = int(anchor.max()) + 1
        uniq, ids = np.unique(batch.step_group[known] * span + anchor, return_inverse=True)
        ids = ids.reshape(-1)
        # distinct trajectories per anchor group: an anchor group needs two trajectories to compare
        pairs = np.sort(ids * batch.n_traj + batch.traj[known])  # sort-based distinct: faster than unique
        pairs = pairs[np.concatenate(([True], pairs[1:] != pairs[:-1]))]
        sources = np.bincount(pairs // batch.n_traj, minlength=uniq.size)
        values = group_normalize(
            returns[known], ids, uniq.size, mode=config.normalize, eps=config.eps, n_sources=sources
        )
        values[sources[ids] < 2] = 0.0  # also under normalize="none"
        step_adv[known] = values
    return StepAdvantages(
        advantages=episode.advantages + config.omega * step_adv,
        extras={
            "episode_advantage": episode.advantages,
            "step_advantage": step_adv,
            "step_reward": rewards,
            "step_return": returns,
            "trajectory_advantage": episode.extras["trajectory_advantage"],
        },
    )


@register_estimator("ps_grpo", reference=reference.ref_ps_grpo)
def ps_grpo(batch: StepBatch, config: CreditConfig) -> StepAdvantages:
    """Process-supervised GRPO (DeepSeekMath): normalize step rewards over the group, sum them to the end.

    Step rewards ``rew_t = r_t``, plus ``R_i`` on the last step of trajectory i (the outcome is the final
    step's reward, added to its own process reward). ``rew`` is normalized over all steps of the group
    (``normalize``, ``eps``; group rule of the module docstring) and ``A_t = sum_{k>=t} rew~_k`` (undiscounted)
    within the trajectory. A zero-step trajectory has no final step, so its R takes no part.
    """
    rewards = _step_rewards(batch)
    normalized = group_normalize(
        rewards, batch.step_group, batch.n_groups, mode=config.normalize, eps=config.eps,
        n_sources=_sources(batch),
    )
    return StepAdvantages(
        advantages=discounted_reverse_cumsum(normalized, batch.remaining, 1.0),
        extras={"step_reward": rewards, "normalized_reward": normalized},
    )
