"""Majority vote by execution result and the unbiased pass@k estimator, on hand-computed cases."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from finestep.eval.voting import majority_vote, mean_pass_at_k, pass_at_k, pass_at_k_levels


def test_majority_vote_by_result_set() -> None:
    six, seven = [(6,)], [(7,)]
    assert majority_vote([seven, six, [(6,), (6,)], None]) == 1  # {6} twice (as sets), {7} once
    assert majority_vote([None, None]) is None
    assert majority_vote([]) is None
    assert majority_vote([None, six]) == 1  # a failed candidate does not vote


def test_majority_vote_ties_go_to_the_first() -> None:
    a, b = [(1,)], [(2,)]
    assert majority_vote([a, b]) == 0
    assert majority_vote([b, a, a, b]) == 0  # 2-2: b appeared first
    assert majority_vote([None, b, a, a, b, [(3,)]]) == 1
    assert majority_vote([[], [], [(1,)]]) == 0  # empty results vote like any other


def test_pass_at_k_hand_values() -> None:
    assert pass_at_k(4, 1, 1) == 0.25
    assert pass_at_k(4, 1, 2) == 0.5  # 1 - C(3,2)/C(4,2) = 1 - 3/6
    assert pass_at_k(4, 2, 2) == pytest.approx(5 / 6)  # 1 - C(2,2)/C(4,2)
    assert pass_at_k(8, 1, 4) == 0.5  # 1 - C(7,4)/C(8,4) = 1 - 35/70
    assert pass_at_k(8, 0, 8) == 0.0 and pass_at_k(4, 3, 2) == 1.0
    assert mean_pass_at_k([1, 2], 4, 2) == pytest.approx(100 * (0.5 + 5 / 6) / 2)
    assert pass_at_k_levels(8) == [1, 2, 4, 8] and pass_at_k_levels(6) == [1, 2, 4, 6] and pass_at_k_levels(1) == [1]
    with pytest.raises(ValueError, match="pass@k"):
        pass_at_k(4, 5, 1)


@given(st.integers(1, 20).flatmap(lambda n: st.tuples(st.just(n), st.integers(0, n), st.integers(1, n))))
def test_pass_at_k_is_the_chance_a_random_k_subset_holds_a_right_answer(case: tuple[int, int, int]) -> None:
    n, c, k = case
    # pass@1 is the fraction right; pass@k grows with k; it equals 1 - P(all k drawn are wrong).
    assert pass_at_k(n, c, 1) == pytest.approx(c / n)
    assert pass_at_k(n, c, k) >= pass_at_k(n, c, max(1, k - 1)) - 1e-12
    all_wrong = math.prod((n - c - i) / (n - i) for i in range(k)) if n - c >= k else 0.0
    assert pass_at_k(n, c, k) == pytest.approx(1 - all_wrong)
