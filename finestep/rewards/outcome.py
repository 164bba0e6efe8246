"""The outcome reward R of a trajectory (FINESTEP.md section 1)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from finestep.data.steps import RewardStep
from finestep.rewards.config import OutcomeConfig
from finestep.sql.compare import results_match

__all__ = ["outcome_reward"]


def outcome_reward(
    steps: Sequence[RewardStep], gold_rows: Sequence[tuple[Any, ...]], gold_sql: str, config: OutcomeConfig
) -> float:
    """R: ``correct`` if the solution's result equals the gold result, ``wrong`` if it executes but differs,
    ``error`` if it raises, ``format_failure`` without a well-formed, complete solution step.

    The solution is the last step of kind ``solution``; its ``result`` must hold the solution executed on the
    database. A solution that errors never matches, even when the gold result is empty.
    """
    solutions = [s for s in steps if s.kind == "solution"]
    if not solutions or not solutions[-1].format_ok or not solutions[-1].sql:
        return config.format_failure
    result = solutions[-1].result
    if result is None:
        raise ValueError("the solution step has no execution result; execute it before scoring")
    if not result.ok:
        return config.error
    if result.truncated:
        return config.wrong  # a result over the size caps cannot be shown equal
    return config.correct if results_match(result.rows, gold_rows, gold_sql, config.metric) else config.wrong
