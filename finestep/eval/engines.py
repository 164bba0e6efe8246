"""Evaluation on another engine (``finestep eval --engine``): gold written for SQLite, transpiled with sqlglot.

A question is *comparable* on the engine when its gold query transpiles and the transpiled gold's result on the
engine agrees with the original gold's result on SQLite (by the scorer's own comparison). The others are set apart
with their reason (``does not transpile``, ``fails on the engine: <kind>``, ``disagrees with SQLite``) and not
scored; the report counts them (:mod:`finestep.data.engines`, which training shares). Gold written for the engine
itself (BIRD's ``mini_dev_postgresql.json``) runs as given, with no SQLite to agree with (:func:`runnable_tasks`).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from finestep.data.engines import comparable_gold, reason_counts
from finestep.data.task import Benchmark, Task
from finestep.eval.official import Scorer
from finestep.sql.engines import database_for, execute_on
from finestep.sql.engines.transpile import DIALECTS, column_names, transpile

__all__ = ["DIALECTS", "column_names", "comparable_tasks", "on_engine", "reason_counts", "runnable_tasks", "transpile"]


def on_engine(benchmark: Benchmark, prefix: str) -> Benchmark:
    """The benchmark with each task's database on the engine named by ``prefix`` (``duckdb:DIR``, a URL)."""
    tasks = [replace(t, db_path=database_for(prefix, t.db_id)) for t in benchmark.tasks]
    return Benchmark.from_tasks(benchmark.name, benchmark.source, tasks)


def comparable_tasks(
    sqlite_tasks: list[Task], engine_tasks: list[Task], scorer: Scorer, transpile_gold: bool, limits: Any
) -> tuple[dict[int, str], dict[int, str]]:
    """``(gold per comparable question index, reason per other question index)`` (module docstring)."""
    gold, reasons = comparable_gold(sqlite_tasks, engine_tasks, scorer.match, transpile_gold, limits)
    return ({sqlite_tasks[i].index: sql for i, sql in gold.items()},
            {sqlite_tasks[i].index: why for i, why in reasons.items()})  # fmt: skip


def runnable_tasks(engine_tasks: list[Task], limits: Any) -> tuple[dict[int, str], dict[int, str]]:
    """For gold written in the engine's own dialect: ``(gold per question index whose gold runs there, reason per
    other question index)``; nothing is compared with SQLite (the gold may not even run there)."""
    gold: dict[int, str] = {}
    reasons: dict[int, str] = {}
    by_db: dict[str, list[Task]] = {}
    for task in engine_tasks:
        by_db.setdefault(str(task.db_path), []).append(task)
    for db, tasks in by_db.items():
        for task, result in zip(tasks, execute_on(db, [t.gold_sql for t in tasks], limits)):
            if result.ok:
                gold[task.index] = task.gold_sql
            else:
                reasons[task.index] = f"fails on the engine: {result.error_kind}"
    return gold, reasons
