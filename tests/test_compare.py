"""Result equivalence: hand-computed cases of both metrics, and properties over random results."""

from __future__ import annotations

import random

from hypothesis import given
from hypothesis import strategies as st

from finestep.sql.compare import bird_match, gold_orders_rows, results_match, spider_match

# --- BIRD: set of row tuples ---------------------------------------------------------------------------------


def test_bird_ignores_order_and_duplicates() -> None:
    assert bird_match([(1, "a"), (2, "b")], [(2, "b"), (1, "a")])
    assert bird_match([(1, "a"), (1, "a")], [(1, "a")])  # sets: duplicates collapse


def test_bird_respects_column_order_and_values() -> None:
    assert not bird_match([("a", 1)], [(1, "a")])  # tuples differ
    assert not bird_match([(1,)], [(1,), (2,)])
    assert bird_match([(1,)], [(1.0,)])  # Python equality: 1 == 1.0, as the official scorer


def test_bird_empty_results_match() -> None:
    assert bird_match([], [])


# --- Spider: bag of rows, column permutation, order only with ORDER BY ----------------------------------------


def test_spider_allows_column_permutation() -> None:
    assert spider_match([("a", 1), ("b", 2)], [(1, "a"), (2, "b")], order_matters=False)


def test_spider_counts_duplicates() -> None:
    assert not spider_match([(1,), (1,)], [(1,), (2,)], order_matters=False)
    # same set, different bags: BIRD says equal, Spider says not
    assert bird_match([(1,), (1,), (2,)], [(1,), (2,), (2,)])
    assert not spider_match([(1,), (1,), (2,)], [(1,), (2,), (2,)], order_matters=False)


def test_spider_row_order_only_when_ordered() -> None:
    pred, gold = [(1,), (2,)], [(2,), (1,)]
    assert spider_match(pred, gold, order_matters=False)
    assert not spider_match(pred, gold, order_matters=True)


def test_spider_permutation_must_be_consistent_across_rows() -> None:
    # each column holds the same values, but no single column mapping makes the rows equal
    pred = [(1, 2), (2, 1), (3, 3)]
    gold = [(1, 1), (2, 2), (3, 3)]
    assert not spider_match(pred, gold, order_matters=False)


def test_spider_column_count_and_empty() -> None:
    assert not spider_match([(1, 2)], [(1,)], order_matters=False)
    assert spider_match([], [], order_matters=True)
    assert not spider_match([], [(None,)], order_matters=False)


def test_spider_many_identical_columns_is_fast() -> None:
    rows = [(None,) * 12] * 3  # 12! column orders if equal columns were not collapsed
    assert spider_match(rows, rows, order_matters=True)


def test_order_detection_follows_the_official_rule() -> None:
    assert gold_orders_rows("SELECT a FROM t ORDER BY a")
    assert gold_orders_rows("select a from t order by a desc")
    assert not gold_orders_rows("SELECT a FROM t GROUP BY a")


def test_errors_never_match_even_an_empty_gold() -> None:
    for metric in ("bird", "spider"):
        assert not results_match(None, [], "SELECT a FROM t WHERE 0", metric)
        assert results_match([], [], "SELECT a FROM t WHERE 0", metric)


# --- properties -------------------------------------------------------------------------------------------------

values = st.one_of(st.integers(-3, 3), st.sampled_from(["x", "y"]), st.none())


@st.composite
def results(draw: st.DrawFn) -> list[tuple[object, ...]]:
    n_cols = draw(st.integers(1, 4))
    return draw(st.lists(st.tuples(*[values] * n_cols), min_size=1, max_size=8))


@given(results(), st.randoms())
def test_spider_invariant_under_row_shuffle_and_column_permutation(rows: list, rnd: random.Random) -> None:
    perm = list(range(len(rows[0])))
    rnd.shuffle(perm)
    shuffled = [tuple(row[j] for j in perm) for row in rows]
    rnd.shuffle(shuffled)
    assert spider_match(shuffled, rows, order_matters=False)
    assert spider_match([tuple(row[j] for j in perm) for row in rows], rows, order_matters=True)


@given(results(), results())
def test_spider_is_symmetric_and_implies_bird_up_to_columns(a: list, b: list) -> None:
    assert spider_match(a, b, order_matters=False) == spider_match(b, a, order_matters=False)
    if spider_match(a, b, order_matters=True):
        assert spider_match(a, b, order_matters=False)
    if bird_match(a, b) and len(a) == len(b) and len(set(a)) == len(a):
        assert spider_match(a, b, order_matters=False)


@given(results())
def test_dropping_a_row_breaks_spider_equality(rows: list) -> None:
    assert not spider_match(rows[:-1], rows, order_matters=False)
