"""Execution-result equivalence, as the official BIRD and Spider scorers define it.

``bird``: the two results are equal as *sets* of row tuples (BIRD's ``evaluation_ex.py``: ``set(pred) ==
set(gold)``); row order, duplicates and column names are ignored, column order is not.

``spider``: test-suite-sql-eval's execution metric: the results are equal as *bags* of rows under some
permutation of the predicted columns; row order matters only when the gold query has ``ORDER BY``. Two empty
results are equal whatever their columns.

Under both, a prediction that raised an error never matches, even when the gold result is empty.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from typing import Any

__all__ = ["METRICS", "bird_match", "gold_orders_rows", "results_match", "spider_match"]

Row = tuple[Any, ...]


def bird_match(pred_rows: Sequence[Row], gold_rows: Sequence[Row]) -> bool:
    """BIRD execution match: ``set(pred_rows) == set(gold_rows)``."""
    return set(pred_rows) == set(gold_rows)


def gold_orders_rows(gold_sql: str) -> bool:
    """Whether row order matters for this gold query (test-suite-sql-eval: it contains ``order by``)."""
    return "order by" in gold_sql.lower()


def _column_candidates(pred_rows: Sequence[Row], gold_rows: Sequence[Row], n_cols: int) -> list[list[int]]:
    """For each gold column, the predicted columns holding the same multiset of values."""
    gold_columns = [Counter(row[i] for row in gold_rows) for i in range(n_cols)]
    pred_columns = [Counter(row[j] for row in pred_rows) for j in range(n_cols)]
    return [[j for j in range(n_cols) if pred_columns[j] == gold_columns[i]] for i in range(n_cols)]


def _permutations(candidates: list[list[int]], twin_of: list[int]) -> Iterator[list[int]]:
    """Injective choices ``perm[i] in candidates[i]``: gold column i is read from predicted column perm[i].

    ``twin_of[j]`` is the previous predicted column with exactly the same values as column ``j`` (or -1); such
    columns are interchangeable, so ``j`` is tried only once its twin is taken (no factorial blow-up on, say,
    ten all-NULL columns).
    """
    chosen: list[int] = []
    used: set[int] = set()

    def extend(i: int) -> Iterator[list[int]]:
        if i == len(candidates):
            yield list(chosen)
            return
        for j in candidates[i]:
            if j not in used and (twin_of[j] < 0 or twin_of[j] in used):
                chosen.append(j)
                used.add(j)
                yield from extend(i + 1)
                used.discard(j)
                chosen.pop()

    return extend(0)


def spider_match(pred_rows: Sequence[Row], gold_rows: Sequence[Row], order_matters: bool) -> bool:
    """Spider (test-suite) execution match: equal under some column permutation; bags, or lists if ordered."""
    if not pred_rows and not gold_rows:
        return True
    if len(pred_rows) != len(gold_rows):
        return False
    n_cols = len(gold_rows[0])
    if any(len(row) != n_cols for row in pred_rows):
        return False
    gold_list = list(gold_rows)
    gold_bag = None if order_matters else Counter(gold_rows)
    pred_columns = [tuple(row[j] for row in pred_rows) for j in range(n_cols)]
    last_seen: dict[tuple[Any, ...], int] = {}
    twin_of = []
    for j, column in enumerate(pred_columns):
        twin_of.append(last_seen.get(column, -1))
        last_seen[column] = j
    for perm in _permutations(_column_candidates(pred_rows, gold_rows, n_cols), twin_of):
        permuted = [tuple(row[j] for j in perm) for row in pred_rows]
        if order_matters and permuted == gold_list:
            return True
        if not order_matters and Counter(permuted) == gold_bag:
            return True
    return False


def _bird(pred_rows: Sequence[Row], gold_rows: Sequence[Row], gold_sql: str) -> bool:
    return bird_match(pred_rows, gold_rows)


def _spider(pred_rows: Sequence[Row], gold_rows: Sequence[Row], gold_sql: str) -> bool:
    return spider_match(pred_rows, gold_rows, gold_orders_rows(gold_sql))


METRICS: dict[str, Callable[[Sequence[Row], Sequence[Row], str], bool]] = {"bird": _bird, "spider": _spider}


def results_match(
    pred_rows: Sequence[Row] | None,
    gold_rows: Sequence[Row],
    gold_sql: str,
    metric: str = "bird",
) -> bool:
    """Whether a prediction's rows match the gold rows under ``metric`` (``bird`` or ``spider``).

    ``pred_rows`` is ``None`` when the prediction raised an error: that never matches.
    """
    try:
        compare = METRICS[metric]
    except KeyError:
        raise ValueError(f"unknown metric {metric!r}; expected one of {sorted(METRICS)}") from None
    if pred_rows is None:
        return False
    return compare(pred_rows, gold_rows, gold_sql)
