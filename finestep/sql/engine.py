"""The sandbox's engine: read-only, time-limited, size-capped execution of untrusted SQL in this process.

:func:`execute` and :func:`execute_on` run queries on a read-only connection in the calling process. Safety is
by construction, not by inspecting the SQL text:

- the database is opened with a ``mode=ro`` URI and ``PRAGMA query_only``, and an authorizer allows only
  reads, a fixed list of introspection pragmas and non-extension functions (no ATTACH, writes, state-changing
  pragmas, transactions or ``load_extension``);
- a progress handler aborts the statement inside SQLite once its deadline passes;
- rows are fetched in batches sized from the rows already seen, up to row and byte caps, and SQLite's own
  length limit bounds any single value;
- temporary storage stays in memory, and the connection is closed on every path.

What this process cannot do alone is stop one built-in call that loops for minutes inside SQLite
(``instr`` or ``replace`` on megabyte strings) or bound SQLite's memory without bounding its own:
:mod:`finestep.sql.workers` runs the same engine in supervised worker processes that add both, and
:class:`finestep.sql.executor.SqlSandbox` uses them.
"""

from __future__ import annotations

import os
import re
import sqlite3
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote as _quote_path  # POSIX's pathname2url, without urllib.request's imports

__all__ = [
    "SQL_TOKENS",
    "ErrorKind",
    "ExecutionResult",
    "SandboxLimits",
    "execute",
    "execute_on",
    "file_version",
    "open_readonly",
    "rows_nbytes",
    "run_query",
    "strip_sql",
]


class ErrorKind:
    """Names of the ways a query can fail (``ExecutionResult.error_kind``)."""

    SYNTAX = "syntax"  # the SQL does not parse
    SCHEMA = "schema"  # no such table / column / function
    FORBIDDEN = "forbidden"  # a write, ATTACH, a state-changing pragma, an extension
    TIMEOUT = "timeout"  # the time limit was reached
    TOO_LARGE = "too_large"  # a single value or the SQL text is over SQLite's length limit, or out of memory
    MULTIPLE_STATEMENTS = "multiple_statements"
    EMPTY = "empty"  # no SQL at all
    MISSING_DATABASE = "missing_database"
    RUNTIME = "runtime"  # any other error raised while running


@dataclass(frozen=True)
class SandboxLimits:
    """Resource limits for one query.

    Attributes:
        timeout_s: wall-clock limit: SQLite aborts the statement when it passes; a worker process that has not
            answered by ``timeout_s * HARD_DEADLINE_FACTOR`` (see :mod:`finestep.sql.workers`) is killed.
        max_rows: rows fetched at most; more are reported as ``truncated_rows``.
        max_bytes: bytes of fetched values at most (text and blob lengths, 8 per number or NULL); more are
            reported as ``truncated_bytes``.
        max_value_bytes: SQLite's length limit: the largest string or blob a query may build.
        max_sql_chars: the longest SQL text accepted.
        max_memory_bytes: in a worker process, SQLite's heap limit (sorts, hash tables, built values) and,
            with the result caps, the address-space limit of the process; over it a query is ``too_large``.
        progress_interval: SQLite VM instructions between deadline checks.
        verbatim: run the text exactly as Python's ``sqlite3`` would, as the official scorers do: trailing
            semicolons are not stripped (``SELECT 1;;`` is two statements) and an empty or comment-only text
            gives an empty result instead of an ``empty`` error.
        text_errors: stored text that is not UTF-8: ``replace`` (U+FFFD), ``ignore`` (the bytes are dropped, as
            test-suite-sql-eval) or ``strict`` (the query fails, as BIRD's scorer, whose plain connection cannot
            decode it).
    """

    timeout_s: float = 5.0
    max_rows: int = 10_000
    max_bytes: int = 32 * 2**20
    max_value_bytes: int = 8 * 2**20
    max_sql_chars: int = 100_000
    max_memory_bytes: int = 256 * 2**20
    progress_interval: int = 5_000
    verbatim: bool = False
    text_errors: str = "replace"

    def __post_init__(self) -> None:
        for name in ("timeout_s", "max_rows", "max_bytes", "max_value_bytes", "max_sql_chars", "max_memory_bytes",
                     "progress_interval"):  # fmt: skip
            value = getattr(self, name)
            # `not value > 0` also refuses NaN, which compares false with everything and would disable the limit
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0 or value == float("inf"):
                raise ValueError(f"SandboxLimits.{name} must be a positive finite number, got {value!r}")
        if self.text_errors not in ("replace", "ignore", "strict"):
            raise ValueError(f"SandboxLimits.text_errors must be replace, ignore or strict, got {self.text_errors!r}")


@dataclass(frozen=True)
class ExecutionResult:
    """What running one query produced.

    ``rows`` holds at most ``limits.max_rows`` tuples; ``nbytes`` is the approximate size of their values.
    ``error_kind`` is ``None`` on success, else one of :class:`ErrorKind`.
    """

    columns: tuple[str, ...] = ()
    rows: tuple[tuple[Any, ...], ...] = ()
    error_kind: str | None = None
    error: str | None = None
    elapsed_s: float = 0.0
    truncated_rows: bool = False
    truncated_bytes: bool = False
    nbytes: int = 0
    cached: bool = field(default=False, compare=False)

    @property
    def ok(self) -> bool:
        """True when the query ran to completion without error (possibly truncated)."""
        return self.error_kind is None

    @property
    def truncated(self) -> bool:
        return self.truncated_rows or self.truncated_bytes


# --- read-only connections -------------------------------------------------------------------------------

# Pragmas that only report on the schema; everything else (including reading settings) is refused, because
# the same pragma names with an argument change state.
_INTROSPECTION_PRAGMAS = frozenset(
    {
        "table_info", "table_xinfo", "table_list", "index_list", "index_info", "index_xinfo",
        "foreign_key_list", "collation_list", "function_list", "module_list", "pragma_list",
    }
)  # fmt: skip
_FORBIDDEN_FUNCTIONS = frozenset({"load_extension", "fts3_tokenizer"})
_SCHEMA_TABLES = frozenset({"sqlite_master", "sqlite_temp_master"})
# The R-tree module prepares (never runs, on a read) statements that write its shadow tables when it opens a
# table; FTS5 reads ``PRAGMA data_version`` (which has no setter) to notice changes.
_RTREE_SHADOW_SUFFIXES = ("_node", "_rowid", "_parent")
_READ_ONLY_PRAGMAS = frozenset({"data_version"})


def _authorize(action: int, arg1: str | None, arg2: str | None, _db: str | None, _trigger: str | None) -> int:
    if action in (sqlite3.SQLITE_SELECT, sqlite3.SQLITE_READ, sqlite3.SQLITE_RECURSIVE):
        return sqlite3.SQLITE_OK
    if action == sqlite3.SQLITE_FUNCTION:
        return sqlite3.SQLITE_DENY if (arg2 or "").lower() in _FORBIDDEN_FUNCTIONS else sqlite3.SQLITE_OK
    if action == sqlite3.SQLITE_PRAGMA and (arg1 or "").lower() in _INTROSPECTION_PRAGMAS:
        return sqlite3.SQLITE_OK
    if action == sqlite3.SQLITE_PRAGMA and (arg1 or "").lower() in _READ_ONLY_PRAGMAS and arg2 is None:
        return sqlite3.SQLITE_OK
    if action in (sqlite3.SQLITE_INSERT, sqlite3.SQLITE_DELETE) and (arg1 or "").endswith(_RTREE_SHADOW_SUFFIXES):
        # Only preparing passes here: the connection is read-only (mode=ro, query_only), so running such a
        # statement fails with "attempt to write a readonly database" and is reported as forbidden.
        return sqlite3.SQLITE_OK
    if action == sqlite3.SQLITE_UPDATE and arg1 in _SCHEMA_TABLES:
        # SQLite asks this while it declares an eponymous virtual table (json_each, pragma_table_info, ...).
        # SQL can never write the schema table ("may not be modified"), so allowing it opens no write path.
        return sqlite3.SQLITE_OK
    return sqlite3.SQLITE_DENY


def _decode_text(raw: bytes) -> str:
    # Real benchmark databases contain text that is not valid UTF-8; show it rather than fail the query.
    return raw.decode("utf-8", errors="replace")


def _drop_undecodable(raw: bytes) -> str:
    # test-suite-sql-eval's text factory: bytes that are not UTF-8 are left out.
    return raw.decode("utf-8", errors="ignore")


def _is_quiet_wal(db_path: str | os.PathLike[str]) -> bool:
    """True for a WAL-mode database with no ``-wal`` or ``-shm`` file beside it (nobody is writing it)."""
    try:
        with open(db_path, "rb") as handle:
            header = handle.read(20)
    except OSError:
        return False
    path = os.fspath(db_path)
    return (
        len(header) == 20 and header[18:20] == b"\x02\x02"
        and not os.path.exists(path + "-wal") and not os.path.exists(path + "-shm")
    )  # fmt: skip


def file_version(db_path: str | os.PathLike[str]) -> tuple[Any, ...] | None:
    """What identifies the content of a database file: its path, inode, size and modification time, and those of
    its ``-wal`` file (in WAL mode a write changes only that); ``None`` when the file cannot be read."""
    path = os.path.abspath(db_path)
    try:
        stat = os.stat(path)
    except OSError:
        return None
    try:
        wal = os.stat(path + "-wal")
        wal_version: tuple[int, ...] = (wal.st_ino, wal.st_size, wal.st_mtime_ns)
    except OSError:
        wal_version = ()
    return (path, stat.st_ino, stat.st_size, stat.st_mtime_ns, wal_version)


def _readonly_uri(db_path: str | os.PathLike[str]) -> str:
    uri = "file:" + _quote_path(os.path.abspath(db_path)) + "?mode=ro"
    # A plain read-only open of a WAL database creates -wal and -shm files beside it and leaves them; when no
    # writer has them open, the file alone is the whole database and can be read as immutable instead.
    return uri + "&immutable=1" if _is_quiet_wal(db_path) else uri


def open_readonly(db_path: str | os.PathLike[str], limits: SandboxLimits | None = None) -> sqlite3.Connection:
    """Open ``db_path`` read-only with the sandbox's authorizer and limits; the caller must close it.

    Raises ``FileNotFoundError`` when the file does not exist (SQLite would otherwise report a vague error).
    """
    if not os.path.isfile(db_path):
        raise FileNotFoundError(f"database file not found: {db_path}")
    limits = limits or SandboxLimits()
    conn = sqlite3.connect(_readonly_uri(db_path), uri=True, isolation_level=None, check_same_thread=False)
    try:
        conn.executescript("PRAGMA query_only = ON; PRAGMA temp_store = MEMORY;")
        if hasattr(conn, "setlimit"):  # Python >= 3.11
            conn.setlimit(sqlite3.SQLITE_LIMIT_LENGTH, limits.max_value_bytes)
            conn.setlimit(sqlite3.SQLITE_LIMIT_SQL_LENGTH, limits.max_sql_chars)
            conn.setlimit(sqlite3.SQLITE_LIMIT_ATTACHED, 0)
        conn.set_authorizer(_authorize)
    except BaseException:
        conn.close()
        raise
    return conn


# --- one query ---------------------------------------------------------------------------------------------

# Pieces of SQL text, in the order SQLite's tokenizer tells them apart: quoted text and comments are opaque.
SQL_TOKENS = re.compile(
    r"""'(?:[^']|'')*'?|"(?:[^"]|"")*"?|`[^`]*`?|\[[^\]]*\]?"""  # quoted literal or identifier (maybe unclosed)
    r"|--[^\n]*\n?|/\*(?:.|\n)*?(?:\*/|\Z)"  # comments
    r"|;|[ \t\n\r\f]+|[^'\"`\[; \t\n\r\f/-]+|.",
    re.DOTALL,
)


_SQL_SPACE = " \t\n\r\f"  # SQLite's whitespace; a non-breaking space is part of a token to SQLite


def strip_sql(sql: str) -> str:
    """``sql`` without what SQLite ignores after its last statement: whitespace, semicolons and comments
    (``SELECT 1;; -- done`` -> ``SELECT 1``); leading whitespace goes too. Quoted text is never touched."""
    if "--" not in sql and "/*" not in sql:  # the common case: only whitespace and semicolons can trail
        return sql.strip(_SQL_SPACE).rstrip(_SQL_SPACE + ";")
    end = 0
    for match in SQL_TOKENS.finditer(sql):
        token = match.group(0)
        if token != ";" and token.strip(_SQL_SPACE) and not token.startswith(("--", "/*")):
            end = match.end()
    return sql[:end].lstrip(_SQL_SPACE)


def _classify(exc: BaseException, timed_out: bool) -> str:
    message = str(exc).lower()
    if timed_out:
        return ErrorKind.TIMEOUT
    if isinstance(exc, sqlite3.ProgrammingError) and "one statement" in message:
        return ErrorKind.MULTIPLE_STATEMENTS
    if any(word in message for word in ("not authorized", "authorization denied", "readonly", "prohibited", "may not be modified")):
        return ErrorKind.FORBIDDEN
    if "too big" in message or "too long" in message or isinstance(exc, MemoryError) or "out of memory" in message:
        return ErrorKind.TOO_LARGE
    if message.startswith(("near ", "incomplete input", "unrecognized token")) or "syntax error" in message:
        return ErrorKind.SYNTAX
    if message.startswith(("no such table", "no such column", "no such function", "ambiguous column")):
        return ErrorKind.SCHEMA
    return ErrorKind.RUNTIME


def rows_nbytes(rows: Sequence[Sequence[Any]]) -> int:
    """Bytes of the values in ``rows``: a text's or blob's length, 8 per number or NULL.

    Unlike ``len(repr(rows))`` it allocates nothing: a batch of blobs is measured without first building a text
    four times its size.
    """
    total = 0
    for row in rows:
        for value in row:
            kind = value.__class__
            total += len(value) if kind is str or kind is bytes else 8
    return total


_FIRST_BATCH = 16  # rows fetched before anything is known of their size; later batches follow the rows seen
_MAX_BATCH = 1024


def _fetch_capped(cursor: sqlite3.Cursor, limits: SandboxLimits) -> tuple[list[tuple[Any, ...]], int, bool, bool]:
    """Fetch rows until the result ends or a cap is reached: ``(rows, nbytes, truncated_rows, truncated_bytes)``.

    Each batch is sized so that rows like the ones seen so far fill at most an eighth of the bytes left, so the
    memory held beyond the byte cap stays within one small batch (and one row is never more than the value
    length limit times the column count).
    """
    rows: list[tuple[Any, ...]] = []
    nbytes = 0
    batch_size = _FIRST_BATCH
    while True:
        wanted = min(batch_size, limits.max_rows + 1 - len(rows))
        batch = cursor.fetchmany(wanted)
        if not batch:
            return rows, nbytes, False, False
        size = rows_nbytes(batch)
        if nbytes + size <= limits.max_bytes and len(rows) + len(batch) <= limits.max_rows:
            rows.extend(batch)
            nbytes += size
            if len(batch) < wanted:  # a short batch: the result is exhausted, no need to ask again
                return rows, nbytes, False, False
            per_row = max(1, nbytes // len(rows))
            batch_size = max(1, min(_MAX_BATCH, (limits.max_bytes - nbytes) // (8 * per_row)))
            continue
        for row in batch:  # this batch crosses a cap: take rows one by one up to it
            if len(rows) >= limits.max_rows:
                return rows, nbytes, True, False
            row_size = rows_nbytes((row,))
            if nbytes + row_size > limits.max_bytes:
                return rows, nbytes, False, True
            rows.append(row)
            nbytes += row_size


def run_query(conn: sqlite3.Connection, sql: str, limits: SandboxLimits) -> ExecutionResult:
    """One query on a connection from :func:`open_readonly`, within its own deadline and caps.

    Ctrl-C while SQLite runs aborts the statement and raises ``KeyboardInterrupt`` here: an interrupt is not
    a timeout.
    """
    start = time.perf_counter()

    def failed(kind: str, message: str) -> ExecutionResult:
        return ExecutionResult(error_kind=kind, error=message, elapsed_s=time.perf_counter() - start)

    if not isinstance(sql, str):
        return failed(ErrorKind.EMPTY, f"expected the SQL as one string, got {type(sql).__name__}")
    if not limits.verbatim:
        sql = strip_sql(sql)
        if not sql:
            return failed(ErrorKind.EMPTY, "empty SQL")
    if len(sql) > limits.max_sql_chars:
        return failed(ErrorKind.TOO_LARGE, f"SQL text has {len(sql)} characters, limit {limits.max_sql_chars}")

    deadline = start + limits.timeout_s
    timed_out = interrupted = False

    def stop_now() -> int:
        nonlocal timed_out, interrupted
        try:
            if time.perf_counter() > deadline:
                timed_out = True
                return 1
            return 0
        except KeyboardInterrupt:  # a signal handler raised here would otherwise be swallowed by sqlite3
            interrupted = True
            return 1

    conn.set_progress_handler(stop_now, limits.progress_interval)
    try:
        for attempt in range(2):
            cursor = None
            try:
                cursor = conn.execute(sql)
                columns = tuple(d[0] for d in cursor.description or ())
                rows, nbytes, truncated_rows, truncated_bytes = _fetch_capped(cursor, limits)
                return ExecutionResult(
                    columns=columns,
                    rows=tuple(rows),
                    elapsed_s=time.perf_counter() - start,
                    truncated_rows=truncated_rows,
                    truncated_bytes=truncated_bytes,
                    nbytes=nbytes,
                )
            except (sqlite3.Error, MemoryError, OverflowError, ValueError) as exc:
                if interrupted or (str(exc) == "interrupted" and not timed_out):
                    # the handler stopped for Ctrl-C, or a signal handler raised before its try block (sqlite3
                    # prints and drops an exception raised in a progress handler)
                    raise KeyboardInterrupt from None
                if attempt == 0 and limits.text_errors != "strict" and "could not decode" in str(exc).lower():
                    # Text that is not UTF-8: decode it leniently and run again (SQLite's own decoding is much
                    # faster, so it is kept for the common case).
                    conn.text_factory = _decode_text if limits.text_errors == "replace" else _drop_undecodable
                    continue
                kind = _classify(exc, timed_out)
                if kind == ErrorKind.TIMEOUT:
                    message = f"query exceeded the {limits.timeout_s:g} s time limit"
                elif isinstance(exc, MemoryError):
                    message = f"query needs more memory than the sandbox allows ({limits.max_memory_bytes >> 20} MB)"
                else:
                    message = str(exc)
                return failed(kind, message)
            finally:
                if cursor is not None:
                    cursor.close()
        raise AssertionError("unreachable")  # pragma: no cover
    finally:
        conn.set_progress_handler(None, 0)


def execute_on(
    db_path: str | os.PathLike[str], queries: Sequence[str], limits: SandboxLimits | None = None
) -> list[ExecutionResult]:
    """Run several queries one after the other on one read-only connection to ``db_path``.

    Each query has its own time limit and caps, exactly as with :func:`execute`; sharing the connection saves
    opening the file and reading its schema again (evaluation runs a prediction and its gold query this way).
    The connection is closed before returning, whatever happened.
    """
    limits = limits or SandboxLimits()
    start = time.perf_counter()
    try:
        conn = open_readonly(db_path, limits)
    except (FileNotFoundError, sqlite3.Error) as exc:
        kind = ErrorKind.MISSING_DATABASE if isinstance(exc, FileNotFoundError) else ErrorKind.RUNTIME
        message = str(exc) if isinstance(exc, FileNotFoundError) else f"cannot open database: {exc}"
        return [ExecutionResult(error_kind=kind, error=message, elapsed_s=time.perf_counter() - start)] * len(queries)
    try:
        return [run_query(conn, sql, limits) for sql in queries]
    finally:
        conn.close()


def execute(db_path: str | os.PathLike[str], sql: str, limits: SandboxLimits | None = None) -> ExecutionResult:
    """Run one SQL statement read-only on ``db_path`` within ``limits`` in this process; never raises for a
    bad query (only ``KeyboardInterrupt`` on Ctrl-C).

    Trailing semicolons, whitespace and comments are ignored; a second statement is an error of kind
    ``multiple_statements``. The deadline is checked between SQLite instructions; for a hard deadline and a
    memory bound use :class:`finestep.sql.executor.SqlSandbox` (supervised worker processes).
    """
    return execute_on(db_path, [sql], limits)[0]


