"""Tasks on another engine (``data.engine`` in training, ``finestep eval --engine``): each task's database becomes
the engine's database of the same ``db_id`` (``finestep db import``'s naming: ``duckdb:DIR/<db_id>.duckdb``, one
PostgreSQL database per ``db_id``), and its gold query is checked there.

A task is *comparable* on the engine when its gold query (transpiled from SQLite with sqlglot, when asked) runs
there and its result agrees with the original gold's on SQLite (by the caller's comparison: the reward's metric in
training, the official scorer's in evaluation). The others are set apart with their reason (``does not
transpile``, ``fails on the engine: <kind>``, ``fails on SQLite: <kind>``, ``disagrees with SQLite``), so that a reward is never computed
against a gold answer that differs from SQLite's.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

from finestep.data.task import DataError, Task
from finestep.sql.engine import ErrorKind, SandboxLimits
from finestep.sql.engines import database_for, engine_for, execute_on
from finestep.sql.engines.transpile import column_names, transpile

__all__ = ["Match", "check_databases", "comparable_gold", "reason_counts", "tasks_on_engine"]

# (rows on the engine, rows on SQLite, the SQLite gold query) -> whether they agree
Match = Callable[[Sequence[tuple[Any, ...]], Sequence[tuple[Any, ...]], str], bool]


def check_databases(db_ids: Sequence[str], prefix: str, key: str, limits: SandboxLimits | None = None) -> dict[str, str]:
    """``{db_id: database string}`` on the engine named by ``prefix``, each opened once: a missing database or one
    that cannot be opened (an unsafe role, a server that does not answer) raises :class:`DataError` that names
    ``key`` (the config key or flag that gave ``prefix``), the ``db_id`` and how to import it."""
    limits = limits or SandboxLimits(timeout_s=10.0)
    found = {}
    for db_id in sorted(set(db_ids)):
        db = database_for(prefix, db_id)
        probe = execute_on(db, ["SELECT 1"], limits)[0]
        if probe.error_kind == ErrorKind.MISSING_DATABASE:
            raise DataError(f"{key}: database {db_id!r} is not on {prefix} ({db} not found); import the "
                            f"benchmark first: finestep db import --data DIR --to URL_OR_DUCKDB_DIR")  # fmt: skip
        if not probe.ok:
            raise DataError(f"{key}: database {db_id!r} on {prefix} cannot be used: {probe.error}")
        found[db_id] = db
    return found


def comparable_gold(
    sqlite_tasks: Sequence[Task], engine_tasks: Sequence[Task], match: Match, transpile_gold: bool,
    limits: SandboxLimits,
) -> tuple[dict[int, str], dict[int, str]]:  # fmt: skip
    """``(gold on the engine per comparable position, reason per other position)``; positions index both lists,
    whose tasks pair up (the same question on SQLite and on the engine)."""
    engine = engine_for(str(engine_tasks[0].db_path)).name if engine_tasks else "sqlite"
    gold: dict[int, str] = {}
    reasons: dict[int, str] = {}
    by_db: dict[str, list[int]] = {}
    for position, task in enumerate(sqlite_tasks):
        by_db.setdefault(task.db_id, []).append(position)
    for positions in by_db.values():
        texts: list[str | None] = []
        for i in positions:
            lite = sqlite_tasks[i]
            try:
                texts.append(transpile(lite.gold_sql, engine, column_names(str(lite.db_path))) if transpile_gold
                             else lite.gold_sql)  # fmt: skip
            except ValueError as exc:
                texts.append(None)
                reasons[i] = str(exc)
        mine = execute_on(sqlite_tasks[positions[0]].db_path, [sqlite_tasks[i].gold_sql for i in positions], limits)
        theirs = execute_on(engine_tasks[positions[0]].db_path, [t or "SELECT 1" for t in texts], limits)
        for i, text, a, b in zip(positions, texts, mine, theirs):
            if text is None:
                continue
            if not b.ok:
                reasons[i] = f"fails on the engine: {b.error_kind}"
            elif not a.ok:  # gold that is not SQLite's (e.g. written for the engine: finestep eval --engine-gold)
                reasons[i] = f"fails on SQLite: {a.error_kind}"
            elif not match(b.rows, a.rows, sqlite_tasks[i].gold_sql):
                reasons[i] = "disagrees with SQLite"
            else:
                gold[i] = text
    return gold, reasons


def tasks_on_engine(
    tasks: Sequence[Task], prefix: str, match: Match, transpile_gold: bool, limits: SandboxLimits,
    key: str = "data.engine",
) -> tuple[list[Task], dict[str, str]]:  # fmt: skip
    """The comparable ``tasks`` on the engine named by ``prefix`` (their databases and gold queries there), and the
    reason each other task was set apart, by task id. Every database is checked first (:func:`check_databases`)."""
    databases = check_databases([t.db_id for t in tasks], prefix, key)
    moved = [replace(t, db_path=databases[t.db_id]) for t in tasks]
    gold, reasons = comparable_gold(tasks, moved, match, transpile_gold, limits)
    kept = [replace(moved[i], gold_sql=gold[i]) for i in range(len(tasks)) if i in gold]
    return kept, {tasks[i].id: reason for i, reason in reasons.items()}


def reason_counts(reasons: dict[Any, str]) -> dict[str, int]:
    """How many tasks each reason set apart (the reason's kind, before any detail)."""
    return dict(Counter(r.split(":")[0] if r.startswith("does not") else r for r in reasons.values()))
