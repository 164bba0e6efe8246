"""Straightforward per-trajectory loop implementations of every estimator: the ground truth of the tests.

Written from the definitions in FINESTEP.md with plain Python loops and lists, deliberately sharing no code
with the vectorized estimators (only the ``ZERO_SPREAD_RTOL`` constant). Slow; for tests and benchmarks.
"""

from __future__ import annotations

import math

import numpy as np

from finestep.credit.batch import StepBatch
from finestep.credit.config import CreditConfig
from finestep.credit.ops import ZERO_SPREAD_RTOL

__all__ = [
    "ref_finestep",
    "ref_gigpo",
    "ref_grpo",
    "ref_grpo_shaped",
    "ref_ps_grpo",
    "ref_rloo",
    "reference_advantages",
]


def _trajectories(batch: StepBatch) -> list[dict]:
    """Per trajectory: group key, R, and the flat indices, rewards, flags, anchors and linked steps."""
    neighbours: dict[int, set[int]] = {}
    for a, b in zip(batch.link_src.tolist(), batch.link_dst.tolist()):
        neighbours.setdefault(a, set()).add(b)
        neighbours.setdefault(b, set()).add(a)
    steps_of: list[list[int]] = [[] for _ in range(batch.n_traj)]
    for s, i in enumerate(batch.traj.tolist()):
        steps_of[i].append(s)
    group, outcome = batch.group.tolist(), batch.outcome.tolist()
    reward, solution, anchor = batch.process_reward.tolist(), batch.is_solution.tolist(), batch.anchor.tolist()
    out = []
    for i, steps in enumerate(steps_of):
        out.append({
            "group": group[i],
            "R": outcome[i],
            "steps": steps,
            "r": [reward[s] for s in steps],
            "sol": [solution[s] for s in steps],
            "anchor": [anchor[s] for s in steps],
            "links": [sorted(neighbours.get(s, ())) for s in steps],
        })
    return out


def _normalize(values: list[float], sources: list[int], mode: str, eps: float) -> list[float]:
    """Normalize one group's stream: (v - mean) / (sample std + eps), or v - mean, or v; 0 if degenerate.

    The sample std's n - 1 counts trajectories: n values from k trajectories divide by n (k - 1) / k.
    """
    n = len(values)
    if mode == "none":
        return list(values)
    std = _sample_std(values, len(set(sources)))
    if std == 0.0:
        return [0.0] * n
    mean = sum(values) / n
    if mode == "center":
        return [v - mean for v in values]
    return [(v - mean) / (std + eps) for v in values]


def _by_group(trajs: list[dict]) -> dict[int, list[int]]:
    groups: dict[int, list[int]] = {}
    for i, tr in enumerate(trajs):
        groups.setdefault(tr["group"], []).append(i)
    return groups


def _normalize_buckets(buckets: dict, mode: str, eps: float, out: dict[int, float]) -> None:
    """buckets: key -> list of (flat step, trajectory, value); writes normalized values into out[flat step]."""
    for items in buckets.values():
        normed = _normalize([v for _, _, v in items], [i for _, i, _ in items], mode, eps)
        for (s, _, _), z in zip(items, normed):
            out[s] = z


def _centre_or_none(values: list[float], sources: list[int]) -> list[float] | None:
    """One bucket's values minus their mean, or None if the bucket is degenerate (it then gives 0)."""
    if _sample_std(values, len(set(sources))) == 0.0:
        return None
    mean = sum(values) / len(values)
    return [v - mean for v in values]


def _ref_process_v2(p_buckets: dict, config: CreditConfig, A_P: dict[int, float]) -> None:
    """Version 2 process term: centre each bucket, divide by the std of the live centred values of the batch
    (``process_center=False``: the values as they are, divided by their std over the batch)."""
    if not config.process_center:
        items = [item for bucket in p_buckets.values() for item in bucket]
        scale = config.normalize == "group" and config.process_scale == "batch"
        std = _sample_std([v for _, _, v in items], len({i for _, i, _ in items})) if scale else 1.0
        for s, _, v in items:
            A_P[s] = (v / (std + config.eps) if std > 0 else 0.0) if scale else v
        return
    live: list[tuple[int, int, float]] = []  # (flat step, trajectory, centred value) of non-degenerate buckets
    for items in p_buckets.values():
        centred = _centre_or_none([v for _, _, v in items], [i for _, i, _ in items])
        for (s, i, _), c in zip(items, centred or [0.0] * len(items)):
            A_P[s] = c
            if centred is not None:
                live.append((s, i, c))
    if config.normalize == "center" or config.process_scale == "none":
        return
    std = _sample_std([c for _, _, c in live], len({i for _, i, _ in live}))
    for s, c in list(A_P.items()):
        A_P[s] = c / (std + config.eps) if std > 0 else 0.0


def _sample_std(values: list[float], k: int) -> float:
    """Sample std, Bessel's correction counted in ``k`` trajectories; 0.0 when degenerate."""
    n = len(values)
    if n < 2 or k < 2:
        return 0.0
    mean = sum(values) / n
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n * (k - 1) / k))
    return 0.0 if std <= ZERO_SPREAD_RTOL * (1 + abs(mean)) else std


def ref_finestep(batch: StepBatch, config: CreditConfig) -> np.ndarray:
    """FineStep by the definitions (version 2, or version 1 by its switches), one step at a time."""
    trajs = _trajectories(batch)
    P: dict[int, float] = {}
    O: dict[int, float] = {}
    for tr in trajs:
        T = len(tr["steps"])
        for t, s in enumerate(tr["steps"]):  # t is 0-based: exponent (T - 1) - t == T_i - t with 1-based t
            P[s] = sum(config.gamma_p ** (k - t) * tr["r"][k] for k in range(t, T))
            O[s] = config.gamma_o ** (T - 1 - t) * tr["R"]
    P_smooth: dict[int, float] = {}
    for tr in trajs:
        for s, linked in zip(tr["steps"], tr["links"]):
            if linked:
                P_smooth[s] = (1 - config.beta) * P[s] + config.beta * sum(P[k] for k in linked) / len(linked)
            else:
                P_smooth[s] = P[s]
    v1_outcome = config.outcome_norm == "steps" or config.normalize == "none"
    v1_process = config.normalize == "none" or (config.normalize == "group" and config.process_scale == "group")
    A_O: dict[int, float] = {}
    A_P: dict[int, float] = {}
    p_all: dict = {}
    process_weight: dict[int, float] = {}  # per step: equal_outcome_process in groups of equal outcomes, else 1
    outcomes = [tr["R"] for tr in trajs]
    std_R = _sample_std(outcomes, len(outcomes))
    mean_R = sum(outcomes) / len(outcomes) if outcomes else 0.0
    batch_relative = [(R - mean_R) / (std_R + config.eps) if std_R > 0 else 0.0 for R in outcomes]
    for g, members in _by_group(trajs).items():
        o_buckets: dict = {}
        p_buckets: dict = {}
        for i in members:
            for t, s in enumerate(trajs[i]["steps"]):
                key = (g, t) if config.per_step_index_norm else g
                o_buckets.setdefault(key, []).append((s, i, O[s]))
                if not (config.process_internal_only and trajs[i]["sol"][t]):
                    p_buckets.setdefault(key, []).append((s, i, P_smooth[s]))
        equal_group = len({trajs[i]["R"] for i in members}) == 1
        for i in members:
            for s in trajs[i]["steps"]:
                process_weight[s] = config.equal_outcome_process if equal_group else 1.0
        if v1_outcome:
            _normalize_buckets(o_buckets, config.normalize, config.eps, A_O)
        else:  # GRPO's a_i over every trajectory of the group (zero-step ones too), discounted per step
            a = _normalize([trajs[i]["R"] for i in members], members, config.normalize, config.eps)
            for i, a_i in zip(members, a):
                T = len(trajs[i]["steps"])
                for t, s in enumerate(trajs[i]["steps"]):
                    A_O[s] = config.gamma_o ** (T - 1 - t) * a_i
                    if equal_group and config.equal_outcome == "batch" and trajs[i]["sol"][t]:
                        A_O[s] = batch_relative[i]
        if v1_process:
            _normalize_buckets(p_buckets, config.normalize, config.eps, A_P)
        else:
            p_all.update(p_buckets)
    if p_all:
        _ref_process_v2(p_all, config, A_P)
    lam = config.lam if config.use_process else 0.0
    return np.array([A_O[s] + lam * process_weight[s] * A_P.get(s, 0.0) for s in range(batch.n_steps)],
                    dtype=np.float64)


def _trajectory_scores(
    batch: StepBatch, trajs: list[dict], scores: list[float], config: CreditConfig
) -> np.ndarray:
    A = [0.0] * len(trajs)
    for members in _by_group(trajs).values():
        normed = _normalize([scores[i] for i in members], members, config.normalize, config.eps)
        for i, z in zip(members, normed):
            A[i] = z
    out = np.zeros(batch.n_steps)
    for i, tr in enumerate(trajs):
        for s in tr["steps"]:
            out[s] = A[i]
    return out


def ref_grpo(batch: StepBatch, config: CreditConfig) -> np.ndarray:
    """GRPO: the trajectory's normalized R on each of its steps."""
    trajs = _trajectories(batch)
    return _trajectory_scores(batch, trajs, [tr["R"] for tr in trajs], config)


def ref_grpo_shaped(batch: StepBatch, config: CreditConfig) -> np.ndarray:
    """GRPO on R + sum of process rewards."""
    trajs = _trajectories(batch)
    return _trajectory_scores(batch, trajs, [tr["R"] + sum(tr["r"]) for tr in trajs], config)


def ref_rloo(batch: StepBatch, config: CreditConfig) -> np.ndarray:
    """RLOO: R_i minus the mean of the other trajectories' R (0 in a group of one or with equal R)."""
    trajs = _trajectories(batch)
    out = np.zeros(batch.n_steps)
    for members in _by_group(trajs).values():
        values = [trajs[i]["R"] for i in members]
        if len(members) < 2 or max(values) == min(values):
            continue
        for i in members:
            others = [trajs[j]["R"] for j in members if j != i]
            for s in trajs[i]["steps"]:
                out[s] = trajs[i]["R"] - sum(others) / len(others)
    return out


def _step_rewards(tr: dict) -> list[float]:
    T = len(tr["r"])
    return [tr["r"][t] + (tr["R"] if t == T - 1 else 0.0) for t in range(T)]


def ref_gigpo(batch: StepBatch, config: CreditConfig) -> np.ndarray:
    """Episode GRPO plus omega times the return normalized within (group, anchor) buckets."""
    trajs = _trajectories(batch)
    episode = ref_grpo(batch, config)
    step_adv: dict[int, float] = {}
    buckets: dict = {}
    for i, tr in enumerate(trajs):
        rew = _step_rewards(tr)
        T = len(rew)
        for t, s in enumerate(tr["steps"]):
            ret = sum(config.gigpo_gamma ** (k - t) * rew[k] for k in range(t, T))
            if tr["anchor"][t] >= 0:
                buckets.setdefault((tr["group"], tr["anchor"][t]), []).append((s, i, ret))
    for items in buckets.values():
        if len({i for _, i, _ in items}) < 2:
            continue
        normed = _normalize([v for _, _, v in items], [i for _, i, _ in items], config.normalize, config.eps)
        for (s, _, _), z in zip(items, normed):
            step_adv[s] = z
    return np.array([episode[s] + config.omega * step_adv.get(s, 0.0) for s in range(batch.n_steps)])


def ref_ps_grpo(batch: StepBatch, config: CreditConfig) -> np.ndarray:
    """Step rewards (R added on the last step) normalized over the group, summed from each step to the end."""
    trajs = _trajectories(batch)
    normalized: dict[int, float] = {}
    buckets: dict = {}
    for i, tr in enumerate(trajs):
        for s, rew in zip(tr["steps"], _step_rewards(tr)):
            buckets.setdefault(tr["group"], []).append((s, i, rew))
    _normalize_buckets(buckets, config.normalize, config.eps, normalized)
    out = np.zeros(batch.n_steps)
    for tr in trajs:
        for t, s in enumerate(tr["steps"]):
            out[s] = sum(normalized[k] for k in tr["steps"][t:])
    return out


def reference_advantages(batch: StepBatch, config: CreditConfig) -> np.ndarray:
    """(S,) advantages of ``config.estimator`` by its loop reference (registered beside the estimator)."""
    from finestep.credit.estimators import (
        reference_advantages as by_registry,  # the registry imports this module
    )

    return by_registry(batch, config)
