"""Vectorized segment primitives shared by the credit estimators: arrays in, arrays out, no loops per step.

Shapes: ``S`` elements (steps or trajectories), ``K`` segments (groups, anchor groups, ...), ``L`` links.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "NORMALIZE_MODES",
    "ZERO_SPREAD_RTOL",
    "discounted_reverse_cumsum",
    "group_center",
    "group_normalize",
    "link_smooth",
    "pooled_std",
]

NORMALIZE_MODES = ("group", "center", "none")

# A segment whose sample std is at most ZERO_SPREAD_RTOL * (1 + |mean|) has "zero spread": equal values up to
# floating-point rounding. It contributes exactly 0 (never (x - mean) / eps, never NaN).
ZERO_SPREAD_RTOL = 1e-12


def _segment_moments(
    x: np.ndarray, ids: np.ndarray, n_ids: int, n_sources: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(dev (S,), std (K,), dead (K,))``: deviations from the segment mean, the segment's sample std (Bessel's
    correction counted in sources, see ``group_normalize``) and the degenerate-segment flags."""
    count = np.bincount(ids, minlength=n_ids).astype(np.float64)
    mean = np.bincount(ids, weights=x, minlength=n_ids) / np.maximum(count, 1.0)
    dev = x - mean[ids]
    sources = count if n_sources is None else np.asarray(n_sources, dtype=np.float64)
    dof = count * (sources - 1.0) / np.maximum(sources, 1.0)
    var = np.bincount(ids, weights=dev * dev, minlength=n_ids) / np.maximum(dof, 1e-12)
    std = np.sqrt(var)
    dead = (count < 2) | (sources < 2) | (std <= ZERO_SPREAD_RTOL * (1.0 + np.abs(mean)))
    return dev, std, dead


def group_normalize(
    values: np.ndarray,
    ids: np.ndarray,
    n_ids: int,
    *,
    mode: str = "group",
    eps: float = 1e-6,
    n_sources: np.ndarray | None = None,
) -> np.ndarray:
    """Normalize ``values`` within the segments given by ``ids``.

    Args:
        values: (S,) float, the stream to normalize.
        ids: (S,) int in ``[0, n_ids)``, the segment of each value (need not be sorted).
        n_ids: K, the number of segments.
        mode: ``"group"``: ``(x - mean) / (std + eps)`` with the sample std, its n - 1 counted in trajectories
            (see below);
            ``"center"``: ``x - mean``; ``"none"``: ``x`` unchanged (raw returns, no baseline).
        eps: added to the std in ``"group"`` mode.
        n_sources: (K,) optional count of distinct trajectories behind each segment's values; a segment fed by
            fewer than two trajectories contributes 0 (a group of one trajectory). Defaults to the value count.
            The variance is ``sum (x - mean)^2 / (n * (k - 1) / k)`` with n values from k trajectories: Bessel's
            correction counts the independent samples (trajectories), not the steps, which share one outcome.
            With one value per trajectory (k = n) this is the usual ``n - 1``; with G trajectories of T steps
            each it is ``T (G - 1)``, so a stream repeated T times per trajectory normalizes exactly as GRPO.

    Returns:
        (S,) float64. Under ``"group"`` and ``"center"``, a segment with fewer than two values, fewer than two
        sources, or zero spread (see ``ZERO_SPREAD_RTOL``) gets exactly 0.
    """
    if mode not in NORMALIZE_MODES:
        raise ValueError(f"normalize mode must be one of {NORMALIZE_MODES}, got {mode!r}")
    x = np.asarray(values, dtype=np.float64)
    if mode == "none" or x.size == 0:
        return x.copy()
    ids = np.asarray(ids, dtype=np.int64)
    dev, std, dead = _segment_moments(x, ids, n_ids, n_sources)
    out = dev if mode == "center" else dev / (std + eps)[ids]
    out[dead[ids]] = 0.0
    return out


def group_center(
    values: np.ndarray, ids: np.ndarray, n_ids: int, *, n_sources: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """``x - mean`` within segments, and which values are *live* (their segment is not degenerate).

    Args: as ``group_normalize``.

    Returns:
        ``(centred, live)``, both (S,): ``centred`` float64 (exactly 0 in a degenerate segment, as
        ``group_normalize(mode="center")``), ``live`` bool (False in a degenerate segment).
    """
    x = np.asarray(values, dtype=np.float64)
    if x.size == 0:
        return x.copy(), np.zeros(0, dtype=bool)
    ids = np.asarray(ids, dtype=np.int64)
    dev, _, dead = _segment_moments(x, ids, n_ids, n_sources)
    live = ~dead[ids]
    dev[~live] = 0.0
    return dev, live


def pooled_std(values: np.ndarray, traj: np.ndarray) -> float:
    """Sample std of one pooled stream, Bessel's correction counted in trajectories; 0.0 if degenerate.

    Args:
        values: (n,) float, e.g. the centred process returns of every live step of a batch.
        traj: (n,) int, the trajectory of each value.

    Returns:
        ``sqrt(sum (x - mean)^2 / (n (k - 1) / k))`` with ``k`` distinct trajectories; ``0.0`` when ``n < 2``,
        ``k < 2`` or the spread is zero (``ZERO_SPREAD_RTOL``).
    """
    x = np.asarray(values, dtype=np.float64)
    n = x.size
    k = np.unique(np.asarray(traj)).size if n else 0
    if n < 2 or k < 2:
        return 0.0
    mean = float(x.mean())
    dev = x - mean
    std = float(np.sqrt(np.dot(dev, dev) / (n * (k - 1) / k)))
    return 0.0 if std <= ZERO_SPREAD_RTOL * (1.0 + abs(mean)) else std


def discounted_reverse_cumsum(values: np.ndarray, remaining: np.ndarray, gamma: float) -> np.ndarray:
    """Per-trajectory ``out[t] = sum_{k >= t} gamma^(k - t) * values[k]`` over flat, contiguous trajectories.

    Args:
        values: (S,) float, the steps of each trajectory contiguous and in order.
        remaining: (S,) int, the number of steps after each step in its trajectory (0 on a last step).
        gamma: discount in ``[0, 1]``; ``gamma = 0`` returns ``values``, ``0^0 = 1``.

    Returns:
        (S,) float64.

    The scan runs over ``remaining`` (at most max T iterations, each vectorized over every trajectory), with
    ``out[s] = values[s] + gamma * out[s + 1]``: exact for any trajectory length (no ``gamma^-t`` scaling that
    could overflow).
    """
    out = np.array(values, dtype=np.float64, copy=True)
    rem = np.asarray(remaining, dtype=np.int64)
    if out.size == 0 or gamma == 0.0:
        return out
    max_rem = int(rem.max())
    if max_rem == 0:
        return out
    # Stable radix sort on small keys: steps with the same `remaining` together, one slice per scan level.
    order = np.argsort(rem.astype(np.int32 if max_rem >= 2**15 else np.int16), kind="stable")
    bounds = np.concatenate(([0], np.cumsum(np.bincount(rem, minlength=max_rem + 1))))
    for level in range(1, max_rem + 1):
        idx = order[bounds[level] : bounds[level + 1]]
        out[idx] += gamma * out[idx + 1]
    return out


def link_smooth(
    values: np.ndarray, link_src: np.ndarray, link_dst: np.ndarray, beta: float
) -> np.ndarray:
    """Logical smoothing: ``(1 - beta) * x[t] + beta * mean_{k in L(t)} x[k]``, unchanged where ``L(t)`` is empty.

    Args:
        values: (S,) float, e.g. the process returns P.
        link_src: (L,) int, the later step of each link.
        link_dst: (L,) int, the earlier step it points back to. Links are undirected here: ``L(t)`` holds the
            steps ``t`` points to and the steps pointing to ``t``. Pairs must be unique (``StepBatch`` dedupes).
        beta: smoothing weight in ``[0, 1]``.

    Returns:
        (S,) float64. Neighbours contribute their unsmoothed values.
    """
    x = np.asarray(values, dtype=np.float64)
    src = np.asarray(link_src, dtype=np.int64)
    dst = np.asarray(link_dst, dtype=np.int64)
    if src.size == 0 or beta == 0.0:
        return x.copy()
    n = x.size
    both = np.concatenate((src, dst))
    other = np.concatenate((dst, src))
    degree = np.bincount(both, minlength=n).astype(np.float64)
    total = np.bincount(both, weights=x[other], minlength=n)
    linked = degree > 0
    out = x.copy()
    out[linked] = (1.0 - beta) * x[linked] + beta * total[linked] / degree[linked]
    return out
