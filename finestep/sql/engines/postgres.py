"""``postgres``: a real PostgreSQL server (``postgresql://USER@HOST:PORT/DB``, libpq's URI form) via ``psycopg`` 3.

Read-only by construction, in three layers: the connecting role must have no write grant, no superuser and no
server-file role (checked when the connection opens: :func:`unsafe_role` names what is wrong), the session
runs with ``default_transaction_read_only``, and every query runs in its own ``BEGIN READ ONLY`` transaction that
is rolled back (a ``SET`` inside a query never outlives it). Limits: ``statement_timeout`` and ``work_mem`` are
set for each query's transaction; ``temp_file_limit`` is set on the role by ``finestep db import`` (only a
superuser can set it, so the query cannot lift it; a role without one is refused); a timer cancels the query from
the client at the deadline, ``client_connection_check_interval`` ends a query whose worker was killed, and
session advisory locks are released after each query. Rows come through a server-side cursor, ``max_rows`` at
most, so a huge result never crosses the socket whole.
"""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from finestep.sql.engine import ErrorKind, ExecutionResult, SandboxLimits
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

__all__ = ["PostgresEngine", "unsafe_role"]

_SESSION_OPTIONS = "-c default_transaction_read_only=on -c client_connection_check_interval=1000"
_ROLE_CHECK = """
SELECT r.rolsuper,
       pg_has_role(current_user, 'pg_read_server_files', 'MEMBER'),
       pg_has_role(current_user, 'pg_write_server_files', 'MEMBER'),
       pg_has_role(current_user, 'pg_execute_server_program', 'MEMBER'),
       current_setting('temp_file_limit'),
       (SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE n.nspname NOT IN ('pg_catalog', 'information_schema') AND c.relkind IN ('r', 'p', 'v', 'm')
           AND (has_table_privilege(c.oid, 'INSERT') OR has_table_privilege(c.oid, 'UPDATE')
                OR has_table_privilege(c.oid, 'DELETE') OR has_table_privilege(c.oid, 'TRUNCATE')) LIMIT 1),
       has_database_privilege(current_database(), 'CREATE') OR has_database_privilege(current_database(), 'TEMP')
  FROM pg_roles r WHERE r.rolname = current_user
"""
# The catalog of the current schema: tables (and partitioned tables) in creation order (their oids), columns in order.
_COLUMNS = """
SELECT c.relname::text, obj_description(c.oid, 'pg_class'), a.attname::text, format_type(a.atttypid, a.atttypmod)
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
  JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
 WHERE n.nspname = current_schema() AND c.relkind IN ('r', 'p')
 ORDER BY c.oid, a.attnum
"""
_KEYS = """
SELECT c.relname::text, con.contype::text, a.attname::text, rc.relname::text, ra.attname::text
  FROM pg_constraint con JOIN pg_class c ON c.oid = con.conrelid JOIN pg_namespace n ON n.oid = c.relnamespace
 CROSS JOIN LATERAL unnest(con.conkey, con.confkey) WITH ORDINALITY AS k(attnum, refnum, pos)
  JOIN pg_attribute a ON a.attrelid = con.conrelid AND a.attnum = k.attnum
  LEFT JOIN pg_class rc ON rc.oid = con.confrelid
  LEFT JOIN pg_attribute ra ON ra.attrelid = con.confrelid AND ra.attnum = k.refnum
 WHERE n.nspname = current_schema() AND con.contype IN ('p', 'f')
 ORDER BY con.oid, k.pos
"""
_READ_STARTS = ("select", "with", "values", "table", "(")
# Session and transaction control: refused before running (the rollback after each query would undo them anyway).
_CONTROL = frozenset({"set", "reset", "discard", "begin", "start", "commit", "end", "rollback", "abort", "savepoint",
                      "release", "prepare", "execute", "deallocate", "listen", "notify", "unlisten", "lock", "do",
                      "call", "load", "checkpoint", "vacuum", "cluster", "reindex", "security", "declare", "fetch",
                      "move", "close"})  # fmt: skip


def unsafe_role(conn: Any) -> str | None:
    """Why the connection's role may not run untrusted SQL, or ``None`` when it is a read-only role."""
    row = conn.execute(_ROLE_CHECK).fetchone()
    superuser, read_files, write_files, program, temp_limit, writable, create = row
    user = conn.info.user
    if superuser:
        return f"role {user} is a superuser"
    if read_files or write_files or program:
        return f"role {user} may read or write server files or run programs (pg_*_server_* roles)"
    if writable:
        return f"role {user} may write table {writable}"
    if create:
        return f"role {user} may create schemas or temporary tables in this database"
    if temp_limit in ("-1", ""):
        return f"role {user} has no temp_file_limit (ALTER ROLE {user} SET temp_file_limit = '256MB', as a superuser)"
    return None


def _register_loaders(conn: Any) -> None:
    """Values as SQLite's driver gives them: numeric as float, booleans 0/1, dates, times and the rest as text."""
    from psycopg.adapt import Loader
    from psycopg.types.numeric import FloatLoader
    from psycopg.types.string import TextLoader

    class IntBoolLoader(Loader):
        def load(self, data: Any) -> int:
            return 1 if bytes(data) == b"t" else 0

    conn.adapters.register_loader("numeric", FloatLoader)
    conn.adapters.register_loader("bool", IntBoolLoader)
    for name in ("date", "time", "timetz", "timestamp", "timestamptz", "interval", "uuid", "json", "jsonb"):
        conn.adapters.register_loader(name, TextLoader)


def _classify(exc: BaseException, timed_out: bool) -> str:
    state = getattr(getattr(exc, "diag", None), "sqlstate", None) or ""
    message = str(exc).lower()
    if timed_out or state == "57014":  # query_canceled: statement_timeout or our cancel
        return ErrorKind.TIMEOUT
    if "multiple commands" in message:
        return ErrorKind.MULTIPLE_STATEMENTS
    if state in ("25006", "42501") or state.startswith("2F") or "read-only" in message:
        return ErrorKind.FORBIDDEN  # read-only transaction, insufficient privilege
    if state in ("53200", "53100", "54000", "53400") or isinstance(exc, MemoryError):
        return ErrorKind.TOO_LARGE  # out of memory, disk full (temp_file_limit), program limit, configuration limit
    if state == "42601":
        return ErrorKind.SYNTAX
    if state in ("42P01", "42703", "42883", "42702", "3F000"):
        return ErrorKind.SCHEMA  # undefined table / column / function, ambiguous column, no schema
    return ErrorKind.RUNTIME


@register_engine
class PostgresEngine(Engine):
    """A database on a PostgreSQL server, through a read-only role (module docstring)."""

    name = "postgres"
    title = "PostgreSQL"
    prefixes = ("postgresql://", "postgres://")

    def version(self, db: str) -> tuple[Any, ...] | None:
        # The server's data is taken as fixed while a sandbox lives (the sandbox's role cannot change it).
        return ("postgres", db)

    def open(self, db: str, limits: SandboxLimits) -> Any:
        try:
            import psycopg
        except ImportError as exc:  # pragma: no cover - an install without the engines extra
            raise EngineError(f"{db}: psycopg is not installed (pip install 'finestep[engines]')") from exc
        try:
            conn = psycopg.connect(db, autocommit=True, options=_SESSION_OPTIONS, connect_timeout=10)
        except psycopg.OperationalError as exc:
            if 'database "' in str(exc) and "does not exist" in str(exc):  # as a missing SQLite file
                raise FileNotFoundError(f"database not found on the server: {db}") from None
            raise
        try:
            reason = unsafe_role(conn)
            if reason is not None:
                raise EngineError(f"{db}: {reason}; the sandbox connects only as a read-only role "
                                  "(finestep db import creates one: finestep_reader)")  # fmt: skip
            _register_loaders(conn)
        except BaseException:
            conn.close()
            raise
        return conn

    def _begin(self, conn: Any, limits: SandboxLimits) -> None:
        work_mem = max(64, (int(limits.max_memory_bytes) >> 10) // 4)  # kB: a sort or hash gets a quarter
        conn.execute(f"BEGIN READ ONLY; SET LOCAL statement_timeout = {int(limits.timeout_s * 1000)}; "
                     f"SET LOCAL work_mem = {work_mem}; SET LOCAL hash_mem_multiplier = 1")  # fmt: skip

    def _end(self, conn: Any) -> None:
        if conn.closed:
            return
        try:
            conn.execute("ROLLBACK")
            conn.execute("SELECT pg_advisory_unlock_all()")
        except Exception:  # noqa: BLE001, S110 - a broken connection: the next query reports it
            pass

    def run(self, conn: Any, sql: str, limits: SandboxLimits) -> ExecutionResult:
        start = time.perf_counter()
        text, error = checked_text(sql, limits, start)
        if error is not None:
            return error
        assert text is not None
        if not text.strip():
            return ExecutionResult(elapsed_s=time.perf_counter() - start)
        first = text.lstrip(" \t\n\r\f").split(None, 1)[0].rstrip(";").lower()
        if first in _CONTROL:
            return failed(start, ErrorKind.FORBIDDEN, f"not authorized: {first.upper()} does not run in the sandbox")
        # The server's statement_timeout stops the query at the limit; the client cancels it 10% later if it has not.
        deadline = Deadline(limits.timeout_s * 1.1, conn.cancel_safe)
        try:
            with deadline:
                self._begin(conn, limits)
                if text.lstrip(" \t\n\r\f(").lower().startswith(_READ_STARTS):
                    cursor = conn.cursor(name="finestep_query")
                    try:
                        cursor.execute(text)
                        columns = tuple(d.name for d in cursor.description or ())
                        return fetch_result(cursor, columns, limits, start)
                    finally:
                        cursor.close()
                # Anything else (EXPLAIN, SHOW, a write): one statement through the extended protocol.
                cursor = conn.cursor()
                cursor.execute(text, binary=True)
                if cursor.description is None:  # a statement without rows
                    return ExecutionResult(elapsed_s=time.perf_counter() - start)
                description = cursor.description
                columns = tuple(d.name for d in description)
                return fetch_result(ValueCursor(cursor, [True] * len(columns)), columns, limits, start)
        except Exception as exc:  # noqa: BLE001 - psycopg.Error and its subclasses, MemoryError
            kind = _classify(exc, deadline.fired)
            message = f"query exceeded the {limits.timeout_s:g} s time limit" if kind == ErrorKind.TIMEOUT else str(exc)
            return failed(start, kind, message.strip().split("\n", 1)[0])  # the LINE context names our cursor
        finally:
            self._end(conn)

    def database(self, prefix: str, db_id: str) -> str:
        parts = urlsplit(prefix)
        return urlunsplit((parts.scheme, parts.netloc, "/" + db_id, parts.query, parts.fragment))

    def catalog(self, conn: Any, limits: SandboxLimits) -> list[Table]:
        """``pg_class``, ``pg_attribute`` and ``pg_constraint`` of the current schema; an imported table's declared
        types and keys come from its comment (:mod:`finestep.sql.engines.catalog`)."""
        return tables_from_catalog(catalog_rows(self, conn, _COLUMNS, limits), catalog_rows(self, conn, _KEYS, limits))
