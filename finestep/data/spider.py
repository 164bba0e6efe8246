"""Spider 1.0: ``dev.json`` (or another split file), ``tables.json`` and ``database/<db_id>/<db_id>.sqlite``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from finestep.data.task import Benchmark, DataError, Task, read_json, require_field

__all__ = ["SPIDER_LEVELS", "load_spider", "spider_hardness"]

SPIDER_LEVELS = ("easy", "medium", "hard", "extra")

# Positions in Spider's parsed-SQL encoding (see its process_sql.py).
_LIKE_OP = 9
_NO_AGG = 0


def _count_agg(units: list[Any]) -> int:
    # The official scorer counts any unit whose first slot is not "none"; for condition lists that slot is the
    # NOT flag or the 'and'/'or' connective, and we keep that behaviour so the levels agree with the scorer.
    return sum(1 for unit in units if unit[0] != _NO_AGG)


def _conditions(sql: dict[str, Any]) -> list[Any]:
    return sql["from"]["conds"][::2] + sql["where"][::2] + sql["having"][::2]


def spider_hardness(sql: dict[str, Any]) -> str:
    """Spider's difficulty level (easy/medium/hard/extra) of a parsed query, as the official scorer grades it."""
    clauses = (
        bool(sql["where"]) + bool(sql["groupBy"]) + bool(sql["orderBy"]) + (sql["limit"] is not None)
        + max(0, len(sql["from"]["table_units"]) - 1)
    )
    connectives = sql["from"]["conds"][1::2] + sql["where"][1::2] + sql["having"][1::2]
    clauses += connectives.count("or") + sum(1 for cond in _conditions(sql) if cond[1] == _LIKE_OP)

    nested = sum(isinstance(v, dict) for cond in _conditions(sql) for v in (cond[3], cond[4]))
    nested += sum(sql[key] is not None for key in ("intersect", "except", "union"))

    aggregates = _count_agg(sql["select"][1]) + _count_agg(sql["where"][::2]) + _count_agg(sql["groupBy"])
    if sql["orderBy"]:
        order_units = sql["orderBy"][1]
        aggregates += _count_agg([u[1] for u in order_units if u[1]] + [u[2] for u in order_units if u[2]])
    aggregates += _count_agg(sql["having"])
    others = (aggregates > 1) + (len(sql["select"][1]) > 1) + (len(sql["where"]) > 1) + (len(sql["groupBy"]) > 1)

    if clauses <= 1 and others == 0 and nested == 0:
        return "easy"
    if nested == 0 and ((others <= 2 and clauses <= 1) or (clauses <= 2 and others < 2)):
        return "medium"
    if (nested == 0 and ((others > 2 and clauses <= 2) or (2 < clauses <= 3 and others <= 2))) or (
        clauses <= 1 and others == 0 and nested <= 1
    ):
        return "hard"
    return "extra"


def load_spider(data_dir: str | Path, split_file: str = "dev.json") -> Benchmark:
    """Load a Spider split from ``data_dir`` (holding ``split_file`` and ``database/``).

    Questions whose database file is missing are kept, in ``Benchmark.unavailable``.
    """
    data_dir = Path(data_dir)
    path = data_dir / split_file
    if not data_dir.is_dir():
        raise DataError(f"{data_dir}: Spider directory not found (set --data or FINESTEP_SPIDER_DIR)")
    entries = read_json(path)
    if not isinstance(entries, list):
        raise DataError(f"{path}: expected a JSON list of questions, got {type(entries).__name__}")
    tasks = []
    for i, entry in enumerate(entries):
        db_id = require_field(entry, "db_id", path, i)
        parsed = entry.get("sql")
        try:
            difficulty = spider_hardness(parsed) if isinstance(parsed, dict) else None
        except (KeyError, IndexError, TypeError) as exc:
            raise DataError(f"{path}: entry {i}: field 'sql' is not Spider's parsed form ({exc!r})") from None
        tasks.append(
            Task(
                id=str(i),
                index=i,
                question=require_field(entry, "question", path, i),
                db_id=db_id,
                db_path=data_dir / "database" / db_id / f"{db_id}.sqlite",
                gold_sql=require_field(entry, "query", path, i),
                difficulty=difficulty,
            )
        )
    return Benchmark.from_tasks("spider", path, tasks)
