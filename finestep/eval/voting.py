"""Several sampled answers per question: majority vote by execution result, and pass@k.

Both are pure: execution results in, a choice or a number out.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

__all__ = ["majority_vote", "mean_pass_at_k", "pass_at_k", "pass_at_k_levels"]

Row = tuple[Any, ...]


def majority_vote(results: Sequence[Sequence[Row] | None]) -> int | None:
    """The candidate chosen by execution-result majority, as OmniSQL, Arctic-Text2SQL-R1 and SQL-R1 report it.

    ``results[i]`` is candidate ``i``'s rows, or ``None`` when it gave no SQL or its SQL failed; only executable
    candidates vote. Two results are the same answer when they hold the same set of rows. Returns the index of
    the first candidate whose answer is the most frequent; a tie goes to the answer that appeared first.
    ``None`` when no candidate is executable.
    """
    votes: dict[frozenset[Row], list[int]] = {}
    for index, rows in enumerate(results):
        if rows is not None:
            votes.setdefault(frozenset(rows), []).append(index)
    if not votes:
        return None
    # max() keeps the first of equal counts, and dicts iterate in first-appearance order.
    return max(votes.values(), key=len)[0]


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased estimate of the chance that at least one of ``k`` answers is right, from ``n`` samples of which
    ``c`` are right: ``1 - C(n - c, k) / C(n, k)`` (Chen et al., 2021), computed exactly."""
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"pass@k needs 0 <= c <= n and 1 <= k <= n, got n={n}, c={c}, k={k}")
    if n - c < k:
        return 1.0
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)


def pass_at_k_levels(n: int) -> list[int]:
    """The k reported for ``n`` samples: 1, 2, 4, ... up to ``n``, and ``n`` itself."""
    levels = [1 << i for i in range(n.bit_length()) if 1 << i <= n]
    return levels if levels[-1] == n else [*levels, n]


def mean_pass_at_k(correct_counts: Sequence[int], n: int, k: int) -> float:
    """pass@k in percent, averaged over questions; ``correct_counts[q]`` right answers of ``n`` for question q."""
    if not correct_counts:
        return 0.0
    return 100.0 * sum(pass_at_k(n, c, k) for c in correct_counts) / len(correct_counts)
