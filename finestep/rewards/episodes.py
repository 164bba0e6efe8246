"""The efficiency metrics of FINESTEP.md over scored rollout episodes (EX, tool calls, redundant calls, errors).

Scoring itself is ``finestep.rewards.scoring``; these metrics only consume its scores. They live below training,
evaluation, the bench and the integrations, which all report them (ARCHITECTURE.md).
"""

from __future__ import annotations

from collections.abc import Sequence

from finestep.agent.trajectory import Trajectory
from finestep.rewards.scoring import ScoredTrajectory
from finestep.sql.analysis import canonical_sql

__all__ = ["episode_metrics"]


def _repeats(trajectory: Trajectory) -> int:
    """Tool calls whose canonical SQL equals an earlier tool call's in the same trajectory."""
    seen: set[str] = set()
    repeats = 0
    for step in trajectory.steps:
        view = step.reward_view()
        if view.kind == "sql" and view.sql:
            form = canonical_sql(view.sql)
            repeats += form in seen
            seen.add(form)
    return repeats


def episode_metrics(trajectories: Sequence[Trajectory], scores: Sequence[ScoredTrajectory]) -> dict[str, float]:
    """EX and efficiency: tool calls, redundant-call rate, error-step rate, turns, format failures, tokens.

    Rates are over all tool calls of the batch; per-task figures are means over trajectories.
    """
    n = max(1, len(trajectories))
    tool_calls = [s for t in trajectories for s in t.steps if s.reward_view().kind == "sql"]
    redundant = sum(_repeats(t) for t in trajectories)  # measured directly: independent of reward weights
    errors = sum(1 for s in tool_calls if s.result is not None and not s.result.ok)
    format_failures = sum(1 for t in trajectories if t.solution is None)
    return {
        "ex": 100.0 * sum(score.correct for score in scores) / n,
        "reward": sum(score.outcome for score in scores) / n,
        "process_reward": sum(sum(score.process_reward) for score in scores) / n,
        "tool_calls": len(tool_calls) / n,
        "redundant_rate": redundant / max(1, len(tool_calls)),
        "error_rate": errors / max(1, len(tool_calls)),
        "turns": sum(len(t.steps) for t in trajectories) / n,
        "format_failure_rate": format_failures / n,
        "generated_tokens": sum(t.n_generated for t in trajectories) / n,
    }
