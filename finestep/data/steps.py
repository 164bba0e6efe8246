"""What the reward rules (and the SQLWorld oracle) see of a trajectory's steps: each step's action and tool result."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from finestep.sql.executor import ExecutionResult

__all__ = ["RewardStep", "StepKind"]

StepKind = Literal["sql", "solution", "none"]


@dataclass(frozen=True)
class RewardStep:
    """One assistant turn as the reward rules see it.

    Attributes:
        kind: ``sql`` (a tool call), ``solution`` (the final answer) or ``none`` (no usable action).
        sql: the SQL of the action, if any.
        result: the execution result of ``sql`` (the tool's answer, or the solution executed for scoring).
        format_error: why the turn's format is broken (no action, several actions, broken tags), else None.
        truncated: the turn was cut off by the token budget.
    """

    kind: StepKind
    sql: str | None = None
    result: ExecutionResult | None = None
    format_error: str | None = None
    truncated: bool = False

    @property
    def format_ok(self) -> bool:
        return self.kind != "none" and self.format_error is None and not self.truncated

    @property
    def failed(self) -> bool:
        """A tool call that raised an error or returned no rows (a candidate for a later repair)."""
        return self.result is not None and (not self.result.ok or not self.result.rows)
