"""Reading predicted SQL in the formats the public scorers use, aligned with a benchmark's questions.

Three formats, detected from the content:

- **lines** (Spider): one SQL per line, line ``i`` answering question ``i``. Windows line ends, trailing ``;`` and
  tabs inside a query are kept within their line; a line ending in ``<TAB>db_id`` (the gold-file layout) has
  that suffix removed when it names the question's database. An empty line is an empty prediction.
- **bird**: BIRD's JSON object ``{"0": "SQL\\t----- bird -----\\tdb_id", ...}`` keyed by question position; a
  ``null`` value is an empty prediction (BIRD's script runs an empty query for it).
- **jsonl**: one ``{"id": ..., "sql": ...}`` object per line; ``id`` is the task id or its 0-based position.

A question without a prediction gets ``None``: it is not scored, and reported as missing.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from finestep.data.task import DataError, Task, parse_json, read_text

__all__ = ["BIRD_SEPARATOR", "detect_format", "read_predictions"]

BIRD_SEPARATOR = "\t----- bird -----\t"
FORMATS = ("lines", "bird", "jsonl")


def detect_format(text: str) -> str:
    """``bird`` for a JSON object, ``jsonl`` when the first non-empty line is a JSON object, else ``lines``."""
    stripped = text.lstrip()
    if not stripped.startswith("{"):
        return "lines"
    first_line = stripped.splitlines()[0].strip()
    try:
        first = json.loads(first_line)
    except (json.JSONDecodeError, RecursionError):
        return "bird"  # a pretty-printed object spans several lines (the reader reports real errors)
    return "jsonl" if isinstance(first, dict) and "sql" in first else "bird"


def _split_lines(text: str) -> list[str]:
    # splitlines() would also split on form feeds and other separators that may sit inside a query.
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    if lines and lines[-1] == "":
        lines.pop()  # the file's final line end
    return lines


def _read_lines(path: Path, text: str, tasks: list[Task]) -> list[str | None]:
    lines = _split_lines(text)
    while len(lines) > len(tasks) and not lines[-1].strip():
        lines.pop()  # blank lines after the last question's
    if len(lines) != len(tasks):
        raise DataError(
            f"{path}: {len(lines)} predictions for {len(tasks)} questions; a line-per-query file must have one "
            "line per question, in order (write an empty line for a question without a prediction)"
        )
    predictions: list[str | None] = []
    for line, task in zip(lines, tasks):
        sql, _, suffix = line.rpartition("\t")
        predictions.append(sql.strip() if sql and suffix.strip() == task.db_id else line.strip())
    return predictions


def _read_bird(path: Path, text: str, tasks: list[Task]) -> list[str | None]:
    entries = parse_json(text, str(path))
    if not isinstance(entries, dict):
        raise DataError(f"{path}: expected BIRD's JSON object {{\"0\": \"SQL\\t----- bird -----\\tdb_id\"}}")
    predictions: list[str | None] = [None] * len(tasks)
    for key, value in entries.items():
        if not key.isdigit() or int(key) >= len(tasks):
            raise DataError(f"{path}: key {key!r} is not a question position 0..{len(tasks) - 1}")
        if value is None:  # BIRD's script runs the empty query " " for a value that is not a string
            predictions[int(key)] = ""
            continue
        if not isinstance(value, str):
            raise DataError(f"{path}: key {key!r}: expected a string, got {type(value).__name__}")
        sql, sep, db_id = value.partition(BIRD_SEPARATOR)
        task = tasks[int(key)]
        if sep and db_id.strip() != task.db_id:
            raise DataError(f"{path}: key {key!r}: prediction is for database {db_id.strip()!r}, question is on {task.db_id!r}")
        predictions[int(key)] = sql.strip()
    return predictions


def _read_jsonl(path: Path, text: str, tasks: list[Task]) -> list[str | None]:
    by_id = {task.id: task.index for task in tasks}
    predictions: list[str | None] = [None] * len(tasks)
    for line_no, line in enumerate(_split_lines(text), start=1):
        if not line.strip():
            continue
        entry: Any = parse_json(line, f"{path}:{line_no}", one_line=True)
        if not isinstance(entry, dict) or "sql" not in entry or "id" not in entry:
            raise DataError(f"{path}:{line_no}: expected an object with fields 'id' and 'sql'")
        if not isinstance(entry["sql"], str):
            raise DataError(f"{path}:{line_no}: field 'sql' should be a string, got {type(entry['sql']).__name__}")
        key = entry["id"]
        if not isinstance(key, (str, int)) or isinstance(key, bool):
            raise DataError(f"{path}:{line_no}: field 'id' should be a task id (string) or a position (integer), got {key!r}")
        if str(key) in by_id:
            index = by_id[str(key)]
        elif isinstance(key, int) and 0 <= key < len(tasks):
            index = key
        else:
            raise DataError(f"{path}:{line_no}: field 'id' {key!r} names no question of this benchmark")
        if predictions[index] is not None:
            raise DataError(f"{path}:{line_no}: a second prediction for question {key!r}")
        predictions[index] = entry["sql"].strip()
    return predictions


_READERS = {"lines": _read_lines, "bird": _read_bird, "jsonl": _read_jsonl}


def read_predictions(path: str | Path, tasks: list[Task], fmt: str | None = None) -> list[str | None]:
    """One predicted SQL (or ``None``) per task, in task order, from ``path`` in format ``fmt`` (auto if None)."""
    path = Path(path)
    text = read_text(path, "predictions file")
    fmt = fmt or detect_format(text)
    if fmt not in _READERS:
        raise DataError(f"unknown predictions format {fmt!r}; expected one of {', '.join(FORMATS)}")
    return _READERS[fmt](path, text, tasks)
