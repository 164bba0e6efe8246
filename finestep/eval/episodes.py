"""Scoring rollout episodes: outcome and process rewards, links, and the efficiency metrics of FINESTEP.md.

Used by the trainer (rewards for credit) and by ``finestep agent-eval`` (EX and efficiency on a benchmark).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from finestep.agent.trajectory import Trajectory
from finestep.rewards import RewardConfig, outcome_reward, process_rewards, step_links
from finestep.rewards.process import total_process_reward
from finestep.sql.analysis import canonical_sql
from finestep.sql.executor import SqlSandbox
from finestep.sql.schema import schema_columns

__all__ = ["EpisodeScore", "episode_metrics", "score_episodes"]


@dataclass
class EpisodeScore:
    """The rewards of one trajectory: R, per-step rule values and r_t, links."""

    outcome: float
    rule_values: list[dict[str, float]]
    process_reward: list[float]
    links: list[list[int]]

    @property
    def correct(self) -> bool:
        return self.outcome > 0


def score_episodes(trajectories: Sequence[Trajectory], sandbox: SqlSandbox, config: RewardConfig) -> list[EpisodeScore]:
    """Rewards of every trajectory; the gold query of each task runs once (through the sandbox's cache)."""
    scores = []
    for traj in trajectories:
        task = traj.task
        gold = sandbox.execute(task.db_path, task.gold_sql)
        if not gold.ok:
            raise ValueError(f"task {task.id}: the gold query fails on {task.db_path}: {gold.error}")
        steps = [s.reward_view() for s in traj.steps]
        rules = process_rewards(
            steps, config.process, schema_columns(task.db_path), gold.rows, task.gold_sql, config.outcome.metric
        )
        scores.append(
            EpisodeScore(
                outcome=outcome_reward(steps, gold.rows, task.gold_sql, config.outcome),
                rule_values=rules,
                process_reward=[total_process_reward(r) for r in rules],
                links=step_links(steps, config.links, f"{task.question}\n{task.evidence}"),
            )
        )
    return scores


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


def episode_metrics(trajectories: Sequence[Trajectory], scores: Sequence[EpisodeScore]) -> dict[str, float]:
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
