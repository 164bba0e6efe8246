"""Trajectory files (JSONL, documented in docs/trajectories.md): reading, validating and scoring them.

One trajectory per line::

    {"task_id": str, "trajectory_id": str, "outcome": float?, "db_path": str?, "gold_sql": str?,
     "question": str?, "steps": [{"kind": "sql" | "solution" | "none", "sql": str?, "process_reward": float?,
     "links": [int]?, "truncated": bool?, "format_error": str?, ...}]}

Whatever is given is used as is; a missing ``outcome``, ``process_reward`` or ``links`` is computed by executing
the steps' SQL (and the gold query) on ``db_path`` in the sandbox. Malformed input raises :class:`DataError`
naming the line and the field.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from finestep.data.task import DataError, parse_json, read_text
from finestep.rewards.config import RewardConfig
from finestep.rewards.links import step_links
from finestep.rewards.outcome import outcome_reward
from finestep.rewards.process import process_rewards, total_process_reward
from finestep.rewards.steps import RewardStep
from finestep.sql.executor import ExecutionResult, SqlSandbox
from finestep.sql.schema import schema_columns

__all__ = ["ScoredTrajectory", "TrajectoryRecord", "read_trajectories", "score_trajectory"]

_KINDS = ("sql", "solution", "none")


@dataclass
class TrajectoryRecord:
    """One validated line of a trajectory file; ``raw`` keeps every field, known or not, for the output."""

    line: int
    task_id: str
    trajectory_id: str
    steps: list[dict[str, Any]]
    outcome: float | None
    db_path: Path | None
    gold_sql: str | None
    question: str
    raw: dict[str, Any] = field(repr=False)
    source: str = field(default="", repr=False)  # the file it was read from


def _expect(condition: bool, where: str, message: str) -> None:
    if not condition:
        raise DataError(f"{where}: {message}")


def _number_problem(value: Any) -> str | None:
    """Why ``value`` is not a finite number, or None (JSON allows NaN, Infinity and integers too large for a
    float: none of them is a reward)."""
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return f"expected a number, got {_short(value)}"
    try:
        finite = math.isfinite(value)
    except OverflowError:
        finite = False
    return None if finite else f"expected a finite number, got {_short(value)}"


def _expect_number(value: Any, where: str) -> None:
    problem = _number_problem(value)
    if problem is not None:
        raise DataError(f"{where}: {problem}")


def _short(value: Any) -> str:
    text = repr(value) if not isinstance(value, int) or value.bit_length() < 200 else f"an integer of {len(str(value))} digits"
    return text if len(text) <= 40 else text[:37] + "..."


def _validate_step(step: Any, where: str, index: int) -> None:
    _expect(isinstance(step, dict), where, "expected an object")
    _expect(step.get("kind") in _KINDS, f"{where}.kind", f"expected one of {list(_KINDS)}, got {step.get('kind')!r}")
    if step["kind"] != "none" or "sql" in step:
        _expect(isinstance(step.get("sql", ""), str), f"{where}.sql", "expected a string")
    if "process_reward" in step:
        _expect_number(step["process_reward"], f"{where}.process_reward")
    if "links" in step:
        links = step["links"]
        _expect(isinstance(links, list) and all(isinstance(k, int) and not isinstance(k, bool) for k in links),
                f"{where}.links", "expected a list of step indices")  # fmt: skip
        bad = [k for k in links if not 0 <= k < index]
        _expect(not bad, f"{where}.links", f"{bad[0] if bad else ''} is not an earlier step (0..{index - 1})")
    if "truncated" in step:
        _expect(isinstance(step["truncated"], bool), f"{where}.truncated", "expected true or false")


def _parse_line(text: str, where: str, db_root: Path) -> tuple[dict[str, Any], Path | None]:
    raw = parse_json(text, where, one_line=True)
    _expect(isinstance(raw, dict), where, "expected a JSON object")
    for key in ("task_id", "trajectory_id"):
        _expect(isinstance(raw.get(key), str), f"{where}: field {key!r}", "expected a string")
    _expect(isinstance(raw.get("steps"), list), f"{where}: field 'steps'", "expected a list")
    if raw.get("outcome") is not None:
        _expect_number(raw["outcome"], f"{where}: field 'outcome'")
    for key in ("db_path", "gold_sql", "question"):
        if raw.get(key) is not None:
            _expect(isinstance(raw[key], str), f"{where}: field {key!r}", "expected a string")
    for t, step in enumerate(raw["steps"]):
        _validate_step(step, f"{where}: steps[{t}]", t)
    solutions = [t for t, s in enumerate(raw["steps"]) if s["kind"] == "solution"]
    _expect(all(t == len(raw["steps"]) - 1 for t in solutions), f"{where}: field 'steps'",
            "a solution step must be the last step")  # fmt: skip
    db_path = None
    if raw.get("db_path"):
        db_path = Path(raw["db_path"])
        if not db_path.is_absolute():
            db_path = db_root / db_path
    return raw, db_path


def read_trajectories(path: str | Path, db_root: str | Path | None = None) -> list[TrajectoryRecord]:
    """Read and validate a trajectory JSONL file (blank lines skipped).

    A relative ``db_path`` is resolved against ``db_root`` (default: the file's own folder).
    """
    path = Path(path)
    root = Path(db_root) if db_root is not None else path.parent
    lines = read_text(path, "trajectory file").splitlines()
    records = []
    for number, text in enumerate(lines, start=1):
        if not text.strip():
            continue
        raw, db_path = _parse_line(text, f"{path}:{number}", root)
        records.append(
            TrajectoryRecord(
                line=number, task_id=raw["task_id"], trajectory_id=raw["trajectory_id"], steps=raw["steps"],
                outcome=raw.get("outcome"), db_path=db_path, gold_sql=raw.get("gold_sql"),
                question=raw.get("question") or "", raw=raw, source=str(path),
            )
        )  # fmt: skip
    return records


@dataclass
class ScoredTrajectory:
    """A record with everything the estimators need: R, r_t, per-rule values (None where given) and links."""

    record: TrajectoryRecord
    outcome: float
    process_reward: list[float]
    rule_values: list[dict[str, float] | None]
    links: list[list[int]]
    is_solution: list[bool]
    truncated: list[bool]


def _is_sqlite_file(path: Path) -> bool:
    """An empty file (SQLite's empty database) or one that starts with SQLite's header."""
    try:
        with open(path, "rb") as handle:
            header = handle.read(16)
    except OSError:
        return False
    return header in (b"", b"SQLite format 3\x00")


def _needs_execution(record: TrajectoryRecord) -> list[str]:
    missing = []
    if record.outcome is None:
        missing.append("outcome")
    if any("process_reward" not in s for s in record.steps):
        missing.append("steps[].process_reward")
    if any("links" not in s for s in record.steps):
        missing.append("steps[].links")
    return missing


def score_trajectory(record: TrajectoryRecord, sandbox: SqlSandbox, config: RewardConfig) -> ScoredTrajectory:
    """Fill in R, r_t and links where the record lacks them, by executing its SQL on its database."""
    where = f"{record.source}:{record.line}" if record.source else f"line {record.line}"
    missing = _needs_execution(record)
    results: list[ExecutionResult | None] = [None] * len(record.steps)
    gold_rows = None
    if missing:
        if record.db_path is None:
            raise DataError(f"{where}: field 'db_path' is needed to compute {', '.join(missing)}")
        if not record.db_path.is_file():
            raise DataError(f"{where}: field 'db_path': database file not found: {record.db_path}")
        if not _is_sqlite_file(record.db_path):
            raise DataError(f"{where}: field 'db_path': not a SQLite database: {record.db_path}")
        results = [sandbox.execute(record.db_path, s["sql"]) if s.get("sql") else None for s in record.steps]
        if record.gold_sql is not None:
            gold = sandbox.execute(record.db_path, record.gold_sql)
            if not gold.ok:
                raise DataError(f"{where}: field 'gold_sql' fails on its database: {gold.error}")
            gold_rows = gold.rows
    steps = [
        RewardStep(s["kind"], s.get("sql"), results[t], s.get("format_error"), bool(s.get("truncated", False)))
        for t, s in enumerate(record.steps)
    ]
    if record.outcome is not None:
        outcome = float(record.outcome)
    elif gold_rows is None:
        raise DataError(f"{where}: field 'gold_sql' is needed to compute the outcome")
    else:
        outcome = outcome_reward(steps, gold_rows, record.gold_sql or "", config.outcome)

    computed = None
    if any("process_reward" not in s for s in record.steps):
        schema = schema_columns(record.db_path) if record.db_path else None
        computed = process_rewards(
            steps, config.process, schema, gold_rows, record.gold_sql or "", config.outcome.metric
        )
    rule_values = [None if "process_reward" in s else computed[t] for t, s in enumerate(record.steps)]  # type: ignore[index]
    rewards = [
        float(s["process_reward"]) if "process_reward" in s else total_process_reward(rule_values[t])  # type: ignore[arg-type]
        for t, s in enumerate(record.steps)
    ]
    linked = step_links(steps, config.links, record.question) if "steps[].links" in missing else None
    links = [s["links"] if "links" in s else linked[t] for t, s in enumerate(record.steps)]  # type: ignore[index]
    return ScoredTrajectory(
        record, outcome, rewards, rule_values, links,
        [s.kind == "solution" for s in steps], [s.truncated for s in steps],
    )  # fmt: skip
