"""Evaluation on another engine (``finestep eval --engine``): gold written for SQLite, transpiled with sqlglot.

A question is *comparable* on the engine when its gold query transpiles and the transpiled gold's result on the
engine agrees with the original gold's result on SQLite (by the scorer's own comparison). The others are set apart
with their reason (``does not transpile``, ``fails on the engine: <kind>``, ``disagrees with SQLite``) and not
scored; the report counts them. Identifiers: SQLite's are case-insensitive even when quoted, so on PostgreSQL
(where the import lower-cases every name) they are lower-cased; a double-quoted name that is no column of the
database is a string, as SQLite reads it.
"""

from __future__ import annotations

import sqlite3
from collections import Counter
from dataclasses import replace
from functools import lru_cache
from typing import Any

from finestep.data.task import Benchmark, Task
from finestep.eval.official import Scorer
from finestep.sql.engines import database_for, engine_for, execute_on

__all__ = ["DIALECTS", "comparable_tasks", "on_engine", "transpile"]

DIALECTS = {"duckdb": "duckdb", "postgres": "postgres", "sqlite": "sqlite"}


@lru_cache(maxsize=256)
def _column_names(sqlite_path: str) -> frozenset[str]:
    conn = sqlite3.connect(f"file:{sqlite_path}?mode=ro", uri=True)
    try:
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        names = {t.lower() for t in tables}
        for table in tables:
            names |= {r[1].lower() for r in conn.execute(f'PRAGMA table_info("{table}")')}
        return frozenset(names)
    finally:
        conn.close()


def transpile(sql: str, engine: str, columns: frozenset[str] = frozenset()) -> str:
    """``sql`` written for SQLite in ``engine``'s dialect; ``ValueError`` when sqlglot cannot transpile it."""
    import sqlglot
    from sqlglot import exp

    try:
        tree = sqlglot.parse_one(sql, read="sqlite")
    except sqlglot.errors.ParseError as exc:
        raise ValueError(f"does not transpile: {str(exc).splitlines()[0]}") from None
    aliases = {a.alias.lower() for a in tree.find_all(exp.Alias)}

    def fix(node: exp.Expression) -> exp.Expression:
        if isinstance(node, exp.Column) and not node.table and isinstance(node.this, exp.Identifier):
            name = node.this.name
            if node.this.quoted and columns and name.lower() not in columns and name.lower() not in aliases:
                return exp.Literal.string(name)  # SQLite: a "quoted" name that is no column is a string
        if engine == "postgres" and isinstance(node, exp.Identifier):
            return exp.Identifier(this=node.name.lower(), quoted=node.quoted)
        return node

    try:
        return tree.transform(fix).sql(dialect=DIALECTS[engine])
    except Exception as exc:  # noqa: BLE001 - sqlglot's unsupported features
        raise ValueError(f"does not transpile: {exc}") from None


def on_engine(benchmark: Benchmark, prefix: str) -> Benchmark:
    """The benchmark with each task's database on the engine named by ``prefix`` (``duckdb:DIR``, a URL)."""
    tasks = [replace(t, db_path=database_for(prefix, t.db_id)) for t in benchmark.tasks]
    return Benchmark.from_tasks(benchmark.name, benchmark.source, tasks)


def comparable_tasks(
    sqlite_tasks: list[Task], engine_tasks: list[Task], scorer: Scorer, transpile_gold: bool, limits: Any
) -> tuple[dict[int, str], dict[int, str]]:
    """``(gold per comparable question index, reason per other question index)`` (module docstring)."""
    engine = engine_for(str(engine_tasks[0].db_path)).name if engine_tasks else "sqlite"
    gold: dict[int, str] = {}
    reasons: dict[int, str] = {}
    by_db: dict[str, list[tuple[Task, Task]]] = {}
    for lite, other in zip(sqlite_tasks, engine_tasks):
        by_db.setdefault(lite.db_id, []).append((lite, other))
    for pairs in by_db.values():
        texts = []
        for lite, _ in pairs:
            try:
                texts.append(transpile(lite.gold_sql, engine, _column_names(str(lite.db_path))) if transpile_gold
                             else lite.gold_sql)  # fmt: skip
            except ValueError as exc:
                texts.append(None)
                reasons[lite.index] = str(exc)
        mine = execute_on(pairs[0][0].db_path, [lite.gold_sql for lite, _ in pairs], limits)
        theirs = execute_on(pairs[0][1].db_path, [t or "SELECT 1" for t in texts], limits)
        for (lite, _), text, a, b in zip(pairs, texts, mine, theirs):
            if text is None:
                continue
            if not b.ok:
                reasons[lite.index] = f"fails on the engine: {b.error_kind}"
            elif not a.ok or not scorer.match(b.rows, a.rows, lite.gold_sql):
                reasons[lite.index] = "disagrees with SQLite"
            else:
                gold[lite.index] = text
    return gold, reasons


def reason_counts(reasons: dict[int, str]) -> dict[str, int]:
    """How many questions each reason set apart (the reason's kind, before any detail)."""
    return dict(Counter(r.split(":")[0] if r.startswith("does not") else r for r in reasons.values()))
