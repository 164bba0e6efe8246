"""Read-only, time-limited, size-capped execution of untrusted SQL on SQLite databases.

Every query a learning model writes goes through :func:`execute` (or a :class:`SqlSandbox`, which adds a
bounded result cache and a process pool). Safety is by construction, not by inspecting the SQL text:

- the database is opened with a ``mode=ro`` URI and ``PRAGMA query_only``, and an authorizer allows only
  reads, a fixed list of introspection pragmas and non-extension functions (no ATTACH, writes, state-changing
  pragmas, transactions or ``load_extension``);
- a progress handler aborts the statement inside SQLite once its deadline passes, so a runaway query returns a
  ``timeout`` result in the calling thread and nothing is left running;
- rows and bytes are fetched incrementally up to caps and SQLite's own length limit bounds any single value,
  so a huge result or ``randomblob(1e9)`` is reported, never an out-of-memory;
- temporary storage stays in memory, and the connection is closed on every path.
"""

from __future__ import annotations

import multiprocessing
import os
import re
import sqlite3
import threading
import time
import urllib.request
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

__all__ = [
    "ErrorKind",
    "ExecutionResult",
    "SandboxLimits",
    "SqlSandbox",
    "default_workers",
    "execute",
    "execute_on",
    "normalize_sql",
    "open_readonly",
    "parallel_map",
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
        timeout_s: wall-clock limit enforced inside SQLite.
        max_rows: rows fetched at most; more are reported as ``truncated_rows``.
        max_bytes: approximate bytes of fetched values at most; more are reported as ``truncated_bytes``.
        max_value_bytes: SQLite's length limit: the largest string or blob a query may build.
        max_sql_chars: the longest SQL text accepted.
        progress_interval: SQLite VM instructions between deadline checks.
    """

    timeout_s: float = 5.0
    max_rows: int = 10_000
    max_bytes: int = 32 * 2**20
    max_value_bytes: int = 8 * 2**20
    max_sql_chars: int = 100_000
    progress_interval: int = 20_000

    def __post_init__(self) -> None:
        for name in ("timeout_s", "max_rows", "max_bytes", "max_value_bytes", "max_sql_chars", "progress_interval"):
            if getattr(self, name) <= 0:
                raise ValueError(f"SandboxLimits.{name} must be positive, got {getattr(self, name)!r}")


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


def _authorize(action: int, arg1: str | None, arg2: str | None, _db: str | None, _trigger: str | None) -> int:
    if action in (sqlite3.SQLITE_SELECT, sqlite3.SQLITE_READ, sqlite3.SQLITE_RECURSIVE):
        return sqlite3.SQLITE_OK
    if action == sqlite3.SQLITE_FUNCTION:
        return sqlite3.SQLITE_DENY if (arg2 or "").lower() in _FORBIDDEN_FUNCTIONS else sqlite3.SQLITE_OK
    if action == sqlite3.SQLITE_PRAGMA and (arg1 or "").lower() in _INTROSPECTION_PRAGMAS:
        return sqlite3.SQLITE_OK
    if action == sqlite3.SQLITE_UPDATE and arg1 in _SCHEMA_TABLES:
        # SQLite asks this while it declares an eponymous virtual table (json_each, pragma_table_info, ...).
        # SQL can never write the schema table ("may not be modified"), so allowing it opens no write path.
        return sqlite3.SQLITE_OK
    return sqlite3.SQLITE_DENY


def _decode_text(raw: bytes) -> str:
    # Real benchmark databases contain text that is not valid UTF-8; show it rather than fail the query.
    return raw.decode("utf-8", errors="replace")


def _readonly_uri(db_path: str | os.PathLike[str]) -> str:
    return "file:" + urllib.request.pathname2url(os.path.abspath(db_path)) + "?mode=ro"


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

def _strip_sql(sql: str) -> str:
    return sql.strip().rstrip(" \t\n\r\f\v;")


def _classify(exc: BaseException, timed_out: bool) -> str:
    message = str(exc).lower()
    if timed_out or message == "interrupted":
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


def _fetch_capped(cursor: sqlite3.Cursor, limits: SandboxLimits) -> tuple[list[tuple[Any, ...]], int, bool, bool]:
    """Fetch rows until the result ends or a cap is reached: ``(rows, nbytes, truncated_rows, truncated_bytes)``.

    Sizes are the length of the rows' text form (``repr``), computed per batch in C; batches shrink as rows grow,
    so the memory held beyond the byte cap stays within one small batch.
    """
    rows: list[tuple[Any, ...]] = []
    nbytes = 0
    batch_size = 64
    while True:
        wanted = min(batch_size, limits.max_rows + 1 - len(rows))
        batch = cursor.fetchmany(wanted)
        if not batch:
            return rows, nbytes, False, False
        size = len(repr(batch))
        if nbytes + size <= limits.max_bytes and len(rows) + len(batch) <= limits.max_rows:
            rows.extend(batch)
            nbytes += size
            if len(batch) < wanted:  # a short batch: the result is exhausted, no need to ask again
                return rows, nbytes, False, False
            batch_size = max(1, min(1024, (limits.max_bytes - nbytes) * len(batch) // (8 * size)))
            continue
        for row in batch:  # this batch crosses a cap: take rows one by one up to it
            if len(rows) >= limits.max_rows:
                return rows, nbytes, True, False
            row_size = len(repr(row)) + 2
            if nbytes + row_size > limits.max_bytes:
                return rows, nbytes, False, True
            rows.append(row)
            nbytes += row_size


def _run(conn: sqlite3.Connection, sql: str, limits: SandboxLimits) -> ExecutionResult:
    """One query on an open sandbox connection, within its own deadline."""
    start = time.perf_counter()

    def failed(kind: str, message: str) -> ExecutionResult:
        return ExecutionResult(error_kind=kind, error=message, elapsed_s=time.perf_counter() - start)

    if not isinstance(sql, str):
        return failed(ErrorKind.EMPTY, f"expected SQL text, got {type(sql).__name__}")
    sql = _strip_sql(sql)
    if not sql:
        return failed(ErrorKind.EMPTY, "empty SQL")
    if len(sql) > limits.max_sql_chars:
        return failed(ErrorKind.TOO_LARGE, f"SQL text has {len(sql)} characters, limit {limits.max_sql_chars}")

    deadline = start + limits.timeout_s
    timed_out = False

    def past_deadline() -> int:
        nonlocal timed_out
        if time.perf_counter() > deadline:
            timed_out = True
            return 1
        return 0

    conn.set_progress_handler(past_deadline, limits.progress_interval)
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
            if attempt == 0 and "could not decode" in str(exc).lower():
                # Text that is not UTF-8: decode it leniently and run again (SQLite's own decoding is much
                # faster, so it is kept for the common case).
                conn.text_factory = _decode_text
                continue
            kind = _classify(exc, timed_out)
            message = f"query exceeded the {limits.timeout_s:g} s time limit" if kind == ErrorKind.TIMEOUT else str(exc)
            return failed(kind, message)
        finally:
            if cursor is not None:
                cursor.close()
    raise AssertionError("unreachable")  # pragma: no cover


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
        return [_run(conn, sql, limits) for sql in queries]
    finally:
        conn.close()


def execute(db_path: str | os.PathLike[str], sql: str, limits: SandboxLimits | None = None) -> ExecutionResult:
    """Run one SQL statement read-only on ``db_path`` within ``limits``; never raises for a bad query.

    Trailing semicolons and whitespace are ignored; a second statement is an error of kind
    ``multiple_statements``.
    """
    return execute_on(db_path, [sql], limits)[0]


# --- normalization and cache -------------------------------------------------------------------------------

# A quoted literal or identifier is kept as written; whitespace elsewhere collapses to one space.
_SQL_PIECES = re.compile(r"'(?:[^']|'')*'|\"(?:[^\"]|\"\")*\"|`[^`]*`|\[[^\]]*\]|\s+")


def normalize_sql(sql: str) -> str:
    """Whitespace-insensitive form of ``sql`` for cache keys: quoted text untouched, trailing ``;`` dropped."""
    collapsed = _SQL_PIECES.sub(lambda m: " " if m.group(0).isspace() else m.group(0), sql)
    return _strip_sql(collapsed)


class _ResultCache:
    """Thread-safe LRU of execution results bounded by entry count and by approximate bytes."""

    def __init__(self, max_entries: int, max_bytes: int) -> None:
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self._entries: OrderedDict[tuple[Any, ...], ExecutionResult] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def get(self, key: tuple[Any, ...]) -> ExecutionResult | None:
        with self._lock:
            result = self._entries.get(key)
            if result is None:
                self.misses += 1
                return None
            self._entries.move_to_end(key)
            self.hits += 1
            return result

    def put(self, key: tuple[Any, ...], result: ExecutionResult) -> None:
        if self.max_entries <= 0 or result.nbytes > self.max_bytes:
            return
        with self._lock:
            old = self._entries.pop(key, None)
            if old is not None:
                self._bytes -= old.nbytes
            self._entries[key] = result
            self._bytes += result.nbytes
            while len(self._entries) > self.max_entries or self._bytes > self.max_bytes:
                _, evicted = self._entries.popitem(last=False)
                self._bytes -= evicted.nbytes

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def nbytes(self) -> int:
        """Approximate bytes of the cached rows."""
        return self._bytes


# --- process pool ------------------------------------------------------------------------------------------

T = TypeVar("T")
R = TypeVar("R")


def _pool_context() -> multiprocessing.context.BaseContext:
    # fork is unsafe once threads exist (progress bars, torch); forkserver keeps worker start-up cheap.
    methods = multiprocessing.get_all_start_methods()
    return multiprocessing.get_context("forkserver" if "forkserver" in methods else "spawn")


def parallel_map(
    fn: Callable[[T], R],
    items: Sequence[T],
    workers: int,
    on_result: Callable[[int], None] | None = None,
    chunksize: int | None = None,
) -> list[R]:
    """``[fn(x) for x in items]`` over a process pool, results in input order.

    ``fn`` must be a picklable module-level function. ``on_result(n_done)`` is called after each chunk arrives
    (for progress bars). ``workers <= 1`` or a single item runs in this process.
    """
    if workers <= 1 or len(items) <= 1:
        results = []
        for i, item in enumerate(items):
            results.append(fn(item))
            if on_result is not None:
                on_result(i + 1)
        return results
    chunksize = chunksize or max(1, min(32, len(items) // (workers * 8)))
    results = []
    with ProcessPoolExecutor(max_workers=workers, mp_context=_pool_context()) as pool:
        for result in pool.map(fn, items, chunksize=chunksize):
            results.append(result)
            if on_result is not None:
                on_result(len(results))
    return results


def _execute_job(job: tuple[str, str, SandboxLimits]) -> ExecutionResult:
    return execute(*job)


def default_workers() -> int:
    """Worker processes to use by default: the cores this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


class SqlSandbox:
    """The sandbox with a bounded cache of results keyed by database file and normalized SQL.

    Rollouts repeat the same probes many times; a hit costs a dictionary lookup. The key includes the file's
    size and modification time, so a database replaced on disk is never answered from stale entries.
    """

    def __init__(
        self,
        limits: SandboxLimits | None = None,
        cache_entries: int = 4096,
        cache_bytes: int = 256 * 2**20,
    ) -> None:
        self.limits = limits or SandboxLimits()
        self.cache = _ResultCache(cache_entries, cache_bytes)

    def _key(self, db_path: str | os.PathLike[str], sql: str) -> tuple[Any, ...] | None:
        try:
            stat = os.stat(db_path)
        except OSError:
            return None
        return (os.path.abspath(db_path), stat.st_size, stat.st_mtime_ns, normalize_sql(sql) if isinstance(sql, str) else sql)

    def execute(self, db_path: str | os.PathLike[str], sql: str) -> ExecutionResult:
        """Run one query (see :func:`execute`), answering repeats from the cache."""
        key = self._key(db_path, sql)
        if key is not None:
            hit = self.cache.get(key)
            if hit is not None:
                return replace(hit, cached=True)
        result = execute(db_path, sql, self.limits)
        if key is not None:
            self.cache.put(key, result)
        return result

    def execute_many(
        self,
        jobs: Iterable[tuple[str | os.PathLike[str], str]],
        workers: int | None = None,
        on_result: Callable[[int], None] | None = None,
    ) -> list[ExecutionResult]:
        """Run ``(db_path, sql)`` jobs over a process pool; results in input order, cache consulted first."""
        jobs = list(jobs)
        results: list[ExecutionResult | None] = [None] * len(jobs)
        keys = [self._key(db, sql) for db, sql in jobs]
        pending = []
        for i, key in enumerate(keys):
            hit = self.cache.get(key) if key is not None else None
            if hit is not None:
                results[i] = replace(hit, cached=True)
            else:
                pending.append(i)
        n_cached = len(jobs) - len(pending)
        progress = None if on_result is None else (lambda n: on_result(n_cached + n))
        fresh = parallel_map(
            _execute_job,
            [(str(jobs[i][0]), jobs[i][1], self.limits) for i in pending],
            workers if workers is not None else default_workers(),
            on_result=progress,
        )
        for i, result in zip(pending, fresh):
            results[i] = result
            if keys[i] is not None:
                self.cache.put(keys[i], result)
        return results  # type: ignore[return-value]
