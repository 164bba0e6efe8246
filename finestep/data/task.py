"""The Task record and the shared helpers of the benchmark loaders."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["Benchmark", "DataError", "Task", "read_json", "read_text", "require_field"]


class DataError(ValueError):
    """A benchmark or predictions file is malformed; the message names the file and the position or field."""


@dataclass(frozen=True)
class Task:
    """One question over one database.

    Attributes:
        id: stable identifier (BIRD's ``question_id``; the question's position for Spider).
        index: 0-based position in the source file.
        question: the natural-language question.
        db_id: the database's name.
        db_path: the SQLite file; it may not exist (see ``available``). A string names a database on another
            engine (``duckdb:PATH``, ``postgresql://...``: :mod:`finestep.sql.engines`).
        gold_sql: the reference query.
        evidence: external knowledge given with the question (BIRD), else empty.
        difficulty: the benchmark's difficulty label, if it has one.
    """

    id: str
    index: int
    question: str
    db_id: str
    db_path: Path | str
    gold_sql: str
    evidence: str = ""
    difficulty: str | None = None

    @property
    def available(self) -> bool:
        """Whether the task's database file exists (a server's database is taken to exist)."""
        if isinstance(self.db_path, str):
            from finestep.sql.engines import engine_for

            engine = engine_for(self.db_path)
            return engine.exists(self.db_path)
        return self.db_path.is_file()


@dataclass
class Benchmark:
    """The tasks of one split in file order, with those whose database is missing set apart."""

    name: str
    source: Path
    tasks: list[Task]
    unavailable: list[Task] = field(default_factory=list)

    @classmethod
    def from_tasks(cls, name: str, source: Path, tasks: list[Task]) -> Benchmark:
        return cls(name, source, tasks, [t for t in tasks if not t.available])

    @property
    def available(self) -> list[Task]:
        missing = {t.index for t in self.unavailable}
        return [t for t in self.tasks if t.index not in missing]

    @property
    def missing_databases(self) -> list[str]:
        return sorted({t.db_id for t in self.unavailable})


def read_text(path: Path, what: str = "file") -> str:
    """A UTF-8 text file (a byte-order mark is dropped); :class:`DataError` names the file when it is missing,
    a folder, unreadable or not UTF-8."""
    try:
        return path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise DataError(f"{path}: {what} not found") from None
    except IsADirectoryError:
        raise DataError(f"{path}: is a folder; expected a {what}") from None
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 text (byte {exc.start})") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot read the {what}: {exc.strerror or exc}") from None


def parse_json(text: str, where: str, one_line: bool = False) -> Any:
    """``json.loads(text)``; malformed or too deeply nested input raises :class:`DataError` that starts with
    ``where`` and the error's position (``line:column``, or only the column when ``one_line``: ``where`` then
    names the line, as ``file:line``)."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        position = str(exc.colno) if one_line else f"{exc.lineno}:{exc.colno}"
        raise DataError(f"{where}:{position}: malformed JSON: {exc.msg}") from None
    except RecursionError:
        raise DataError(f"{where}: JSON nested too deeply to read") from None


def read_json(path: Path) -> Any:
    """Parse a JSON file; malformed input raises :class:`DataError` naming the file, line and column."""
    return parse_json(read_text(path), str(path))


def require_field(entry: Any, key: str, path: Path, position: int, kind: type = str) -> Any:
    """``entry[key]``, checked to be of ``kind``; else :class:`DataError` naming file, entry and field."""
    if not isinstance(entry, dict):
        raise DataError(f"{path}: entry {position}: expected an object, got {type(entry).__name__}")
    if key not in entry:
        raise DataError(f"{path}: entry {position}: missing field {key!r}")
    value = entry[key]
    if not isinstance(value, kind):
        raise DataError(f"{path}: entry {position}: field {key!r} should be {kind.__name__}, got {type(value).__name__}")
    return value
