"""BIRD: ``dev.json`` or ``mini_dev_sqlite.json`` (question, evidence, SQL, difficulty) and ``dev_databases/``."""

from __future__ import annotations

from pathlib import Path

from finestep.data.task import Benchmark, DataError, Task, read_json, require_field

__all__ = ["BIRD_LEVELS", "find_databases", "load_bird"]

BIRD_LEVELS = ("simple", "moderate", "challenging")
_SPLIT_FILES = ("dev.json", "mini_dev_sqlite.json")
_DATABASE_DIRS = ("dev_databases", "databases", "train_databases")


def _find_split(data_dir: Path) -> Path:
    for name in _SPLIT_FILES:
        if (data_dir / name).is_file():
            return data_dir / name
    raise DataError(f"{data_dir}: no BIRD question file; expected one of {', '.join(_SPLIT_FILES)}")


def find_databases(data_dir: Path) -> Path:
    """The folder of BIRD's databases inside ``data_dir`` (``dev_databases/`` or another usual name)."""
    for name in _DATABASE_DIRS:
        if (data_dir / name).is_dir():
            return data_dir / name
    return data_dir / _DATABASE_DIRS[0]  # absent: every question is reported unavailable


def load_bird(data_dir: str | Path, split_file: str | None = None, databases: Path | None = None) -> Benchmark:
    """Load BIRD questions from ``data_dir`` (or the JSON file ``split_file`` inside it).

    Databases are looked up as ``<dir>/<db_id>/<db_id>.sqlite`` under ``databases`` if given, else under
    ``dev_databases/`` (or ``databases/``) of ``data_dir``.
    """
    data_dir = Path(data_dir)
    if data_dir.is_file():
        data_dir, split_file = data_dir.parent, data_dir.name
    if not data_dir.is_dir():
        raise DataError(f"{data_dir}: BIRD directory not found")
    path = data_dir / split_file if split_file else _find_split(data_dir)
    databases = databases or find_databases(data_dir)
    entries = read_json(path)
    if not isinstance(entries, list):
        raise DataError(f"{path}: expected a JSON list of questions, got {type(entries).__name__}")
    tasks = []
    for i, entry in enumerate(entries):
        db_id = require_field(entry, "db_id", path, i)
        question_id = entry.get("question_id", i) if isinstance(entry, dict) else i
        tasks.append(
            Task(
                id=str(question_id),
                index=i,
                question=require_field(entry, "question", path, i),
                db_id=db_id,
                db_path=databases / db_id / f"{db_id}.sqlite",
                gold_sql=require_field(entry, "SQL", path, i),
                evidence=entry.get("evidence") or "",
                difficulty=entry.get("difficulty"),
            )
        )
    return Benchmark.from_tasks("bird", path, tasks)
