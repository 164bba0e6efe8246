"""Credit quality: how well step advantages rank steps known to be good above steps known to be bad.

Pure numpy, no I/O. Inputs are flat per-step arrays (S,): ``advantages`` (float), ``labels`` (int: +1 good,
-1 bad, 0 neutral, e.g. from :func:`finestep.data.sqlworld.oracle_labels`) and integer keys (the group, i.e.
task, or the trajectory of each step). Neutral steps take part in no pair.

- :func:`auc_group`: over every (good, bad) pair of steps of the same group (the trajectories sampled for one
  task), the share where the good step's advantage is strictly higher, ties counting one half. Pairs are
  pooled over all groups (each pair weighs the same, so a group with more pairs counts more).
- :func:`auc_within`: the same over pairs of steps of the same trajectory. An estimator that gives every
  step of a trajectory the same advantage (``grpo``, ``rloo``, ``grpo_shaped``) scores exactly 0.5 here.
- :func:`bad_positive_share`: the share of bad steps whose advantage is strictly positive (pushed up by the
  update); 0 is best. Zero advantage does not count as positive.

Every statistic is ``nan`` where it has nothing to count (no pairs, no bad steps).
"""

from __future__ import annotations

import numpy as np

__all__ = ["auc_group", "auc_within", "bad_positive_share", "pair_counts", "pairwise_auc"]


def _check(advantages: object, labels: object, keys: object | None = None) -> tuple[np.ndarray, ...]:
    adv = np.asarray(advantages, dtype=np.float64)
    lab = np.asarray(labels)
    if adv.ndim != 1 or lab.shape != adv.shape:
        raise ValueError(f"advantages and labels must be 1-D of one length, got {adv.shape} and {lab.shape}")
    if lab.size and not np.isin(lab, (-1, 0, 1)).all():
        raise ValueError("labels must be +1 (good), -1 (bad) or 0 (neutral)")
    if not np.all(np.isfinite(adv)):
        raise ValueError("advantages must be finite")
    if keys is None:
        return adv, lab.astype(np.int64)
    key = np.asarray(keys)
    if key.shape != adv.shape:
        raise ValueError(f"keys must have the shape of advantages {adv.shape}, got {key.shape}")
    return adv, lab.astype(np.int64), key


def pair_counts(advantages: object, labels: object, keys: object) -> tuple[float, int]:
    """``(wins, pairs)`` over the (good, bad) step pairs sharing a key: wins counts the pairs where the good
    step's advantage is higher, plus one half per tie; pairs is ``sum_k good_k * bad_k``.

    Vectorized: advantages become dense ranks, ``(key, rank)`` one sortable code, and each good step finds the
    bad steps of its key below and equal to it by binary search. O(S log S).
    """
    adv, lab, key = _check(advantages, labels, keys)
    good, bad = lab > 0, lab < 0
    if not good.any() or not bad.any():
        return 0.0, 0
    _, key_index = np.unique(key, return_inverse=True)
    key_index = key_index.reshape(-1).astype(np.int64)
    _, rank = np.unique(adv, return_inverse=True)
    rank = rank.reshape(-1).astype(np.int64)
    width = int(rank.max()) + 1
    code = key_index * width + rank
    bad_codes = np.sort(code[bad])
    good_codes = code[good]
    floor = key_index[good] * width  # the smallest code of the good step's key
    left = np.searchsorted(bad_codes, good_codes, side="left")
    below = left - np.searchsorted(bad_codes, floor, side="left")
    equal = np.searchsorted(bad_codes, good_codes, side="right") - left
    n_keys = int(key_index.max()) + 1
    pairs = int(np.dot(np.bincount(key_index[good], minlength=n_keys), np.bincount(key_index[bad], minlength=n_keys)))
    return float(below.sum() + 0.5 * equal.sum()), pairs


def pairwise_auc(advantages: object, labels: object, keys: object) -> tuple[float, int]:
    """``(auc, pairs)``: the share of (good, bad) pairs with a shared key that the advantages order right
    (ties one half), ``nan`` without pairs."""
    wins, pairs = pair_counts(advantages, labels, keys)
    return (wins / pairs if pairs else float("nan")), pairs


def auc_group(advantages: object, labels: object, groups: object) -> float:
    """Pairwise AUC over (good, bad) pairs of the same group, pooled over groups (module docstring)."""
    return pairwise_auc(advantages, labels, groups)[0]


def auc_within(advantages: object, labels: object, trajectories: object) -> float:
    """Pairwise AUC over (good, bad) pairs of the same trajectory, pooled over trajectories."""
    return pairwise_auc(advantages, labels, trajectories)[0]


def bad_positive_share(advantages: object, labels: object) -> float:
    """The share of bad steps (label -1) with advantage > 0 (strictly); ``nan`` without bad steps."""
    adv, lab = _check(advantages, labels)
    bad = lab < 0
    return float(np.mean(adv[bad] > 0)) if bad.any() else float("nan")
