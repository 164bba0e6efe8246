"""``sqlite``: the default engine, SQLite files through Python's ``sqlite3`` (:mod:`finestep.sql.engine`)."""

from __future__ import annotations

import os
import sqlite3
from typing import Any

from finestep.sql.engine import ExecutionResult, SandboxLimits, file_version, open_readonly, run_query
from finestep.sql.engines import Engine, quote_identifier, register_engine
from finestep.sql.engines.catalog import Column, Table

__all__ = ["SqliteEngine"]


@register_engine
class SqliteEngine(Engine):
    """A SQLite file: ``mode=ro`` URI, ``query_only``, an authorizer and a progress-handler deadline
    (docs/sandbox.md). A ``sqlite:`` prefix is accepted and dropped; any other string is a path."""

    name = "sqlite"
    title = "SQLite"
    prefixes = ("sqlite:",)

    @staticmethod
    def path(db: str) -> str:
        return db.removeprefix("sqlite:")

    def version(self, db: str) -> tuple[Any, ...] | None:
        return file_version(self.path(db))

    def exists(self, db: str) -> bool:
        return os.path.isfile(self.path(db))

    def open(self, db: str, limits: SandboxLimits) -> sqlite3.Connection:
        return open_readonly(self.path(db), limits)

    def run(self, conn: sqlite3.Connection, sql: str, limits: SandboxLimits) -> ExecutionResult:
        return run_query(conn, sql, limits)

    def prepare_process(self, limits: SandboxLimits) -> None:
        probe = sqlite3.connect(":memory:")
        probe.execute(f"PRAGMA hard_heap_limit = {int(limits.max_memory_bytes)}")  # process-wide
        probe.close()

    def database(self, prefix: str, db_id: str) -> str:
        return os.path.join(self.path(prefix), db_id, f"{db_id}.sqlite")

    def catalog(self, conn: sqlite3.Connection, limits: SandboxLimits) -> list[Table]:
        """``sqlite_master`` in ``rowid`` order, ``PRAGMA table_info`` and ``PRAGMA foreign_key_list``."""
        names = [
            row[0]
            for row in conn.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY rowid"
            )
        ]
        tables = []
        for name in names:
            info = conn.execute(f"PRAGMA table_info({quote_identifier(name)})").fetchall()
            columns = tuple(Column(name=col[1], type=col[2] or "", primary_key=bool(col[5])) for col in info)
            keys = conn.execute(f"PRAGMA foreign_key_list({quote_identifier(name)})").fetchall()
            tables.append(Table(name, columns, tuple((fk[3], fk[2], fk[4] or "") for fk in keys)))
        return tables

    def sample_sql(self, table: str, column: Column, k: int) -> str:
        # SQLite's DISTINCT keeps the order in which values first come (the scan's: storage or an index's order).
        col = quote_identifier(column.name)
        return (f"SELECT DISTINCT {col} FROM (SELECT {col} FROM {quote_identifier(table)} WHERE {col} IS NOT NULL "
                f"LIMIT 1000) LIMIT {int(k)}")  # fmt: skip

    def samples(self, conn: sqlite3.Connection, table: str, column: Column, k: int,
                limits: SandboxLimits) -> tuple[object, ...]:  # fmt: skip
        try:
            return tuple(row[0] for row in conn.execute(self.sample_sql(table, column, k)).fetchall())
        except sqlite3.Error:  # an odd column; the schema is still useful without samples
            return ()
