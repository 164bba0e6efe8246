"""``sqlite``: the default engine, SQLite files through Python's ``sqlite3`` (:mod:`finestep.sql.engine`)."""

from __future__ import annotations

import os
import sqlite3
from typing import Any

from finestep.sql.engine import ExecutionResult, SandboxLimits, file_version, open_readonly, run_query
from finestep.sql.engines import Engine, register_engine

__all__ = ["SqliteEngine"]


@register_engine
class SqliteEngine(Engine):
    """A SQLite file: ``mode=ro`` URI, ``query_only``, an authorizer and a progress-handler deadline
    (docs/sandbox.md). A ``sqlite:`` prefix is accepted and dropped; any other string is a path."""

    name = "sqlite"
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
