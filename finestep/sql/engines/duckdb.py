"""``duckdb``: DuckDB files (``duckdb:PATH``), embedded through the ``duckdb`` package.

Read-only by construction: the file is opened ``read_only=True`` with ``enable_external_access=false`` (no file,
URL, ``read_csv``, ``ATTACH``, ``COPY``, ``INSTALL`` or ``LOAD``), extension auto-install and auto-load off, no
temporary directory (nothing is spilled beside the file) and the configuration locked (``SET`` of a limit
fails). Only one read statement runs per query (``SELECT``, ``EXPLAIN``, ``PRAGMA``): DuckDB's own temporary
catalog would otherwise accept ``CREATE TEMP TABLE``. ``memory_limit`` and ``threads`` bound the engine; a
timer calls ``interrupt()`` at the deadline, and the supervising worker pool kills the process at 1.25x.
"""

from __future__ import annotations

import os
import time
from typing import Any

from finestep.sql.engine import ErrorKind, ExecutionResult, SandboxLimits, file_version
from finestep.sql.engines import Engine, EngineError, register_engine
from finestep.sql.engines.catalog import Table
from finestep.sql.engines.common import (
    Deadline,
    ValueCursor,
    catalog_rows,
    checked_text,
    failed,
    fetch_result,
    tables_from_catalog,
)

__all__ = ["DuckdbEngine", "duckdb_config"]

# The catalog of the database's own schema (``main``), tables in creation order (their oids), columns in order.
_COLUMNS = """
SELECT t.table_name, t.comment, c.column_name, c.data_type
  FROM duckdb_tables() t JOIN duckdb_columns() c ON c.table_oid = t.table_oid
 WHERE t.database_name = current_database() AND t.schema_name = current_schema() AND NOT t.internal
       AND NOT t.temporary
 ORDER BY t.table_oid, c.column_index
"""
_KEYS = """
SELECT table_name, CASE constraint_type WHEN 'PRIMARY KEY' THEN 'p' ELSE 'f' END,
       unnest(constraint_column_names), referenced_table, unnest(referenced_column_names)
  FROM duckdb_constraints()
 WHERE database_name = current_database() AND schema_name = current_schema()
       AND constraint_type IN ('PRIMARY KEY', 'FOREIGN KEY')
 ORDER BY table_oid, constraint_index
"""
_READ_STATEMENTS = frozenset({"SELECT", "EXPLAIN", "PRAGMA"})
# DuckDB types whose Python values are not SQLite's (int, float, str, bytes, None): converted to plain values.
_PLAIN_TYPES = frozenset({"BIGINT", "INTEGER", "SMALLINT", "TINYINT", "UBIGINT", "UINTEGER", "USMALLINT",
                          "UTINYINT", "HUGEINT", "UHUGEINT", "DOUBLE", "FLOAT", "VARCHAR", "BLOB", '"NULL"'})  # fmt: skip


def duckdb_config(limits: SandboxLimits) -> dict[str, Any]:
    """The connection configuration of the sandbox (documented in docs/sandbox.md)."""
    return {
        "enable_external_access": False,
        "autoinstall_known_extensions": False,
        "autoload_known_extensions": False,
        "allow_community_extensions": False,
        "threads": 1,
        "memory_limit": f"{int(limits.max_memory_bytes) >> 20}MB",
        "temp_directory": "",
        "max_temp_directory_size": "0B",
        "lock_configuration": True,
    }


def _classify(exc: BaseException, timed_out: bool) -> str:
    name = type(exc).__name__
    message = str(exc).lower()
    if timed_out:
        return ErrorKind.TIMEOUT
    if name == "PermissionException" or "read-only mode" in message or "configuration has been locked" in message:
        return ErrorKind.FORBIDDEN
    if name == "OutOfMemoryException" or isinstance(exc, MemoryError) or "out of memory" in message:
        return ErrorKind.TOO_LARGE
    if name == "ParserException":
        return ErrorKind.SYNTAX
    if name in ("CatalogException", "BinderException"):
        return ErrorKind.SCHEMA
    return ErrorKind.RUNTIME


@register_engine
class DuckdbEngine(Engine):
    """A DuckDB file, read-only, no external access, locked configuration (module docstring)."""

    name = "duckdb"
    title = "DuckDB"
    prefixes = ("duckdb:",)
    caps_address_space_per_open = True

    @staticmethod
    def path(db: str) -> str:
        return db[len("duckdb:"):]

    def version(self, db: str) -> tuple[Any, ...] | None:
        version = file_version(self.path(db))
        return None if version is None else ("duckdb", *version)

    def exists(self, db: str) -> bool:
        return os.path.isfile(self.path(db))

    def open(self, db: str, limits: SandboxLimits) -> Any:
        path = self.path(db)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"database file not found: {path} (from {db})")
        try:
            import duckdb
        except ImportError as exc:  # pragma: no cover - an install without the engines extra
            raise EngineError(f"{db}: the duckdb package is not installed (pip install 'finestep[engines]')") from exc
        return duckdb.connect(path, read_only=True, config=duckdb_config(limits))

    def run(self, conn: Any, sql: str, limits: SandboxLimits) -> ExecutionResult:
        start = time.perf_counter()
        text, error = checked_text(sql, limits, start)
        if error is not None:
            return error
        assert text is not None
        try:
            statements = conn.extract_statements(text)
        except Exception as exc:  # noqa: BLE001 - a parse error
            return failed(start, _classify(exc, False), str(exc))
        if not statements:
            return ExecutionResult(elapsed_s=time.perf_counter() - start)
        if len(statements) > 1:
            return failed(start, ErrorKind.MULTIPLE_STATEMENTS, "You can only execute one statement at a time.")
        kind = statements[0].type.name
        if kind not in _READ_STATEMENTS:
            return failed(start, ErrorKind.FORBIDDEN, f"not authorized: {kind} statements do not run in the sandbox")
        deadline = Deadline(limits.timeout_s, conn.interrupt)
        try:
            with deadline:
                conn.execute(text)
                description = conn.description or ()
                columns = tuple(d[0] for d in description)
                convert = [str(d[1]) not in _PLAIN_TYPES for d in description]
                return fetch_result(ValueCursor(conn, convert), columns, limits, start)
        except Exception as exc:  # noqa: BLE001 - duckdb's errors have no common base class besides Exception
            if type(exc).__name__ == "InterruptException" and not deadline.fired:
                raise KeyboardInterrupt from None
            kind = _classify(exc, deadline.fired)
            if kind == ErrorKind.TIMEOUT:
                message = f"query exceeded the {limits.timeout_s:g} s time limit"
            elif kind == ErrorKind.TOO_LARGE and isinstance(exc, MemoryError):
                message = f"query needs more memory than the sandbox allows ({limits.max_memory_bytes >> 20} MB)"
            else:
                message = str(exc)
            return failed(start, kind, message)

    def database(self, prefix: str, db_id: str) -> str:
        return "duckdb:" + os.path.join(self.path(prefix), f"{db_id}.duckdb")

    def catalog(self, conn: Any, limits: SandboxLimits) -> list[Table]:
        """``duckdb_tables()``, ``duckdb_columns()`` and ``duckdb_constraints()``; an imported table's declared types
        and keys come from its comment (:mod:`finestep.sql.engines.catalog`)."""
        return tables_from_catalog(catalog_rows(self, conn, _COLUMNS, limits), catalog_rows(self, conn, _KEYS, limits))
