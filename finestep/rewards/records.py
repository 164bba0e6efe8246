"""Trajectory files (JSONL, documented in docs/trajectories.md): reading and validating them.

One trajectory per line::

    {"task_id": str, "trajectory_id": str, "outcome": float?, "db_path": str?, "gold_sql": str?,
     "question": str?, "steps": [{"kind": "sql" | "solution" | "none", "sql": str?, "process_reward": float?,
     "links": [int]?, "truncated": bool?, "format_error": str?, ...}]}

Scoring a record (``finestep.rewards.scoring.score_record``) uses whatever is given as is; a missing
``outcome``, ``process_reward`` or ``links`` is computed by executing the steps' SQL (and the gold query) on
``db_path`` in the sandbox (a SQLite file, or another engine's database: ``duckdb:PATH``,
``postgresql://...``). Malformed input raises :class:`DataError` naming the line and the field.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from finestep.data.task import DataError, parse_json, read_text

__all__ = ["TrajectoryRecord", "read_trajectories"]

_KINDS = ("sql", "solution", "none")


@dataclass
class TrajectoryRecord:
    """One validated line of a trajectory file; ``raw`` keeps every field, known or not, for the output."""

    line: int
    task_id: str
    trajectory_id: str
    steps: list[dict[str, Any]]
    outcome: float | None
    db_path: Path | str | None  # a string: another engine's database (duckdb:PATH, postgresql://...)
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
    db_path: Path | str | None = None
    if raw.get("db_path"):
        db_path = _database(raw["db_path"], db_root)
    return raw, db_path


def _database(text: str, db_root: Path) -> Path | str:
    """A record's ``db_path``: a SQLite path (relative to ``db_root``), ``duckdb:PATH`` (the same) or a server's URL."""
    if text.startswith(("postgresql://", "postgres://")):
        return text
    if text.startswith("duckdb:"):
        path = Path(text[len("duckdb:"):])
        return "duckdb:" + str(path if path.is_absolute() else db_root / path)
    path = Path(text)
    return path if path.is_absolute() else db_root / path


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
