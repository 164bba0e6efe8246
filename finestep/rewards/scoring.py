"""One scoring path: steps -> outcome R, process rules r_t, links -> ``ScoredTrajectory`` -> ``StepBatch``.

Training, evaluation, ``finestep credit``, the bench and the verl agent loop all score here:

- ``score_episodes(trajectories, sandbox, config)``: rollout trajectories (``finestep.agent.trajectory``); the
  gold query of each task runs in the sandbox (once per task, through its cache);
- ``score_record(record, sandbox, config)``: a line of a trajectory file; given values are used as is, missing
  ones computed by executing the steps' SQL (docs/trajectories.md);
- ``step_batch(scored)``: the estimators' input, with the logical links and GiGPO's anchors (two steps of a
  group share an anchor when their trajectories took the same actions before them: ``history_anchors`` of
  each step's ``action_key``).

Both read the steps as ``RewardStep`` and go through ``score_steps``; the question and the evidence are the
context in which a literal does not count as taken from an observation (``uses`` links).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from finestep.agent.trajectory import Trajectory
from finestep.credit.batch import StepBatch, history_anchors
from finestep.data.steps import RewardStep
from finestep.data.task import DataError
from finestep.rewards.config import RewardConfig
from finestep.rewards.links import step_links
from finestep.rewards.outcome import outcome_reward
from finestep.rewards.process import process_rewards, total_process_reward
from finestep.rewards.records import TrajectoryRecord
from finestep.sql.analysis import canonical_sql
from finestep.sql.engines import engine_for
from finestep.sql.executor import ExecutionResult, SqlSandbox
from finestep.sql.schema import schema_columns

__all__ = ["ScoredTrajectory", "action_key", "score_episodes", "score_record", "score_steps", "step_batch"]


@dataclass
class ScoredTrajectory:
    """Everything the estimators need of one trajectory, one entry per step where a list.

    Attributes:
        group: the task id (trajectories of one task form a group).
        outcome: R.
        process_reward: r_t, the sum of the weighted rule values (or the given value).
        rule_values: per step, each registered rule's weighted value (``None`` where r_t was given).
        links: per step, the earlier steps it repairs or uses.
        is_solution, truncated: per step, the step submitted the solution / was cut off by the token budget.
        actions: per step, its action key (``action_key``): GiGPO's anchors are the histories of these.
    """

    group: str
    outcome: float
    process_reward: list[float]
    rule_values: list[dict[str, float] | None]
    links: list[list[int]]
    is_solution: list[bool]
    truncated: list[bool]
    actions: list[str]

    @property
    def correct(self) -> bool:
        """The outcome is a success (R > 0)."""
        return self.outcome > 0


def action_key(step: RewardStep) -> str:
    """What a step did, for comparing histories: its kind and its SQL's canonical form."""
    return f"{step.kind}:{canonical_sql(step.sql) if step.sql else ''}"


def score_steps(
    steps: Sequence[RewardStep],
    config: RewardConfig,
    group: str,
    *,
    gold_rows: Sequence[tuple[Any, ...]] | None = None,
    gold_sql: str = "",
    schema: dict[str, frozenset[str]] | None = None,
    context_text: str = "",
    outcome: float | None = None,
    given_rewards: Sequence[float | None] | None = None,
    given_links: Sequence[Sequence[int] | None] | None = None,
) -> ScoredTrajectory:
    """Score one trajectory's steps; ``outcome``, ``given_rewards[t]`` and ``given_links[t]`` are used where given.

    ``gold_rows`` (the gold query's result) is needed to compute R; ``schema`` and ``gold_rows`` feed the rules
    (``grounded``, ``progress``); ``context_text`` is the question and evidence (``step_links``).
    """
    rewards_given = list(given_rewards) if given_rewards is not None else [None] * len(steps)
    links_given = list(given_links) if given_links is not None else [None] * len(steps)
    if outcome is None:
        if gold_rows is None:
            raise ValueError("the gold result is needed to compute the outcome")
        outcome = outcome_reward(steps, gold_rows, gold_sql, config.outcome)
    computed = None
    if any(r is None for r in rewards_given):
        computed = process_rewards(steps, config.process, schema, gold_rows, gold_sql, config.outcome.metric,
                                   context_text)
    rule_values = [None if given is not None else computed[t] for t, given in enumerate(rewards_given)]  # type: ignore[index]
    rewards = [float(given) if given is not None else total_process_reward(rule_values[t])  # type: ignore[arg-type]
               for t, given in enumerate(rewards_given)]  # fmt: skip
    linked = step_links(steps, config.links, context_text) if any(k is None for k in links_given) else None
    links = [list(given) if given is not None else linked[t] for t, given in enumerate(links_given)]  # type: ignore[index]
    return ScoredTrajectory(
        group, float(outcome), rewards, rule_values, links, [s.kind == "solution" for s in steps],
        [s.truncated for s in steps], [action_key(s) for s in steps],
    )  # fmt: skip


def _context(question: str, evidence: str) -> str:
    return f"{question}\n{evidence}"


def score_episodes(
    trajectories: Sequence[Trajectory], sandbox: SqlSandbox, config: RewardConfig
) -> list[ScoredTrajectory]:
    """Rewards of every rollout trajectory; the gold query of each task runs once (through the sandbox's cache), on
    the task's own database: the engine its episodes ran their SQL on (``data.engine`` moves both)."""
    scores = []
    for traj in trajectories:
        task = traj.task
        gold = sandbox.execute(task.db_path, task.gold_sql)
        if not gold.ok:
            raise ValueError(f"task {task.id}: the gold query fails on {task.db_path}: {gold.error}")
        scores.append(score_steps(
            [s.reward_view() for s in traj.steps], config, task.id, gold_rows=gold.rows, gold_sql=task.gold_sql,
            schema=schema_columns(task.db_path), context_text=_context(task.question, task.evidence),
        ))  # fmt: skip
    return scores


def _is_sqlite_file(path: Path) -> bool:
    """An empty file (SQLite's empty database) or one that starts with SQLite's header."""
    try:
        with open(path, "rb") as handle:
            header = handle.read(16)
    except OSError:
        return False
    return header in (b"", b"SQLite format 3\x00")


def score_record(record: TrajectoryRecord, sandbox: SqlSandbox, config: RewardConfig) -> ScoredTrajectory:
    """Fill in R, r_t and links where a trajectory-file record lacks them, by executing its SQL on its database."""
    where = f"{record.source}:{record.line}" if record.source else f"line {record.line}"
    missing = []
    if record.outcome is None:
        missing.append("outcome")
    if any("process_reward" not in s for s in record.steps):
        missing.append("steps[].process_reward")
    if any("links" not in s for s in record.steps):
        missing.append("steps[].links")
    results: list[ExecutionResult | None] = [None] * len(record.steps)
    gold_rows = None
    if missing:
        if record.db_path is None:
            raise DataError(f"{where}: field 'db_path' is needed to compute {', '.join(missing)}")
        if isinstance(record.db_path, Path):
            if not record.db_path.is_file():
                raise DataError(f"{where}: field 'db_path': database file not found: {record.db_path}")
            if not _is_sqlite_file(record.db_path):
                raise DataError(f"{where}: field 'db_path': not a SQLite database: {record.db_path}")
        elif not engine_for(record.db_path).exists(record.db_path):
            raise DataError(f"{where}: field 'db_path': database not found: {record.db_path}")
        results = [sandbox.execute(record.db_path, s["sql"]) if s.get("sql") else None for s in record.steps]
        if record.gold_sql is not None:
            gold = sandbox.execute(record.db_path, record.gold_sql)
            if not gold.ok:
                raise DataError(f"{where}: field 'gold_sql' fails on its database: {gold.error}")
            gold_rows = gold.rows
    if record.outcome is None and gold_rows is None:
        raise DataError(f"{where}: field 'gold_sql' is needed to compute the outcome")
    steps = [
        RewardStep(s["kind"], s.get("sql"), results[t], s.get("format_error"), bool(s.get("truncated", False)))
        for t, s in enumerate(record.steps)
    ]
    needs_schema = "steps[].process_reward" in missing and record.db_path is not None
    return score_steps(
        steps, config, record.task_id, gold_rows=gold_rows, gold_sql=record.gold_sql or "",
        schema=schema_columns(record.db_path) if needs_schema else None,  # type: ignore[arg-type]
        context_text=_context(record.question, str(record.raw.get("evidence") or "")), outcome=record.outcome,
        given_rewards=[s.get("process_reward") for s in record.steps], given_links=[s.get("links") for s in record.steps],
    )  # fmt: skip


def step_batch(scored: Sequence[ScoredTrajectory]) -> StepBatch:
    """The estimators' input for scored trajectories: groups by task, R, r_t, solution flags, links and anchors."""
    return StepBatch.from_lists(
        groups=[s.group for s in scored],
        outcomes=[s.outcome for s in scored],
        process_rewards=[s.process_reward for s in scored],
        is_solution=[s.is_solution for s in scored],
        links=[s.links for s in scored],
        anchors=history_anchors([s.actions for s in scored]),
    )
