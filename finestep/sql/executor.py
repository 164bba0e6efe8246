"""The SQL sandbox: read-only, time-limited, memory-bounded, size-capped execution of untrusted SQL.

Every query a learning model writes goes through a :class:`SqlSandbox` (rollouts, rewards, evaluation) or,
for trusted internal use, the in-process :func:`execute`. The sandbox runs the engine of the
database (:mod:`finestep.sql.engines`: SQLite by default, :mod:`finestep.sql.engine`; DuckDB; PostgreSQL) in
supervised worker processes (:mod:`finestep.sql.workers`) that add a hard deadline and a memory bound, and
keeps a bounded cache of results. docs/sandbox.md lists the promises and how each is kept.
"""

from __future__ import annotations

import os
import re
import sys
import threading
import weakref
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import replace
from typing import Any

from finestep.sql.engine import ErrorKind, ExecutionResult, SandboxLimits, open_readonly, strip_sql
from finestep.sql.engines import engine_for, execute, execute_on
from finestep.sql.workers import WorkerPool, WorkerStartError, hard_deadline_s, worker_starts

__all__ = [
    "ErrorKind",
    "ExecutionResult",
    "SandboxLimits",
    "SqlSandbox",
    "WorkerStartError",
    "default_workers",
    "execute",
    "execute_on",
    "hard_deadline_s",
    "normalize_sql",
    "open_readonly",
    "shared_sandbox",
    "strip_sql",
    "worker_starts",
]


# --- normalization and cache -------------------------------------------------------------------------------

# Quoted text and comments (with the line end that closes a -- comment) are kept as written; runs of SQLite's
# whitespace elsewhere collapse to one space. A non-breaking space is not whitespace to SQLite.
_SQL_PIECES = re.compile(
    r"""'(?:[^']|'')*'?|"(?:[^"]|"")*"?|`[^`]*`?|\[[^\]]*\]?|--[^\n]*\n?|/\*(?:.|\n)*?(?:\*/|\Z)|[ \t\n\r\f]+""",
    re.DOTALL,
)


def normalize_sql(sql: str) -> str:
    """A whitespace-insensitive form of ``sql`` that SQLite reads exactly as ``sql``: quoted text and comments
    untouched, runs of whitespace outside them made one space, what follows the last statement dropped."""
    collapsed = _SQL_PIECES.sub(lambda m: " " if not m.group(0).strip(" \t\n\r\f") else m.group(0), sql)
    return strip_sql(collapsed)


# Only answers that the same query on the same file always gets are kept: not a timeout (load can cause
# one), not a memory failure, not a runtime error (a worker that died, a file that could not be opened).
_CACHEABLE_KINDS = frozenset(
    {None, ErrorKind.SYNTAX, ErrorKind.SCHEMA, ErrorKind.FORBIDDEN, ErrorKind.MULTIPLE_STATEMENTS, ErrorKind.EMPTY}
)


def entry_nbytes(sql: str, result: ExecutionResult) -> int:
    """Memory one cache entry holds: the SQL key, column names, error text, rows and values as Python objects."""
    size = sys.getsizeof(sql) + sys.getsizeof(result) + sys.getsizeof(result.columns) + sys.getsizeof(result.rows)
    size += sum(sys.getsizeof(name) for name in result.columns) + sys.getsizeof(result.error or "")
    for row in result.rows:
        size += sys.getsizeof(row) + sum(sys.getsizeof(value) for value in row)
    return size + 200  # the key tuple, the dictionary slot and the LRU links


class _ResultCache:
    """Thread-safe LRU of execution results bounded by entry count and by the bytes the entries hold."""

    def __init__(self, max_entries: int, max_bytes: int) -> None:
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self._entries: OrderedDict[tuple[Any, ...], tuple[ExecutionResult, int]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def get(self, key: tuple[Any, ...]) -> ExecutionResult | None:
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                self.misses += 1
                return None
            self._entries.move_to_end(key)
            self.hits += 1
            return entry[0]

    def put(self, key: tuple[Any, ...], result: ExecutionResult) -> None:
        if self.max_entries <= 0 or result.error_kind not in _CACHEABLE_KINDS:
            return
        size = entry_nbytes(key[-1], result)
        if size > self.max_bytes:
            return
        with self._lock:
            old = self._entries.pop(key, None)
            if old is not None:
                self._bytes -= old[1]
            self._entries[key] = (result, size)
            self._bytes += size
            while len(self._entries) > self.max_entries or self._bytes > self.max_bytes:
                _, (_, evicted) = self._entries.popitem(last=False)
                self._bytes -= evicted

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def nbytes(self) -> int:
        """Bytes the cached entries hold (see :func:`entry_nbytes`)."""
        return self._bytes


# --- the sandbox -------------------------------------------------------------------------------------------


def default_workers() -> int:
    """Worker processes to use by default: the cores this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


_RUN_LENGTH = 16  # queries on one database handed to a worker at once (it keeps the connection open)


def _runs(jobs: Sequence[tuple[str, str]]) -> list[tuple[str, list[str]]]:
    """Consecutive ``(db_path, sql)`` jobs on one database as ``(db_path, [sql, ...])`` runs of at most 16."""
    runs: list[tuple[str, list[str]]] = []
    for db_path, sql in jobs:
        if runs and runs[-1][0] == db_path and len(runs[-1][1]) < _RUN_LENGTH:
            runs[-1][1].append(sql)
        else:
            runs.append((db_path, [sql]))
    return runs


class SqlSandbox:
    """The sandbox: queries run in supervised worker processes, with a bounded cache of results.

    Rollouts repeat the same probes many times; a hit costs a dictionary lookup. The key is the database file
    (:func:`file_version`: a file replaced or written, its WAL file included, is never answered from stale
    entries) and
    the SQL exactly as SQLite reads it (:func:`strip_sql`). Timeouts and other answers that depend on the
    machine's load are never cached.

    ``isolated=False`` runs queries in this process: the deadline is then checked only between SQLite
    instructions and memory is not bounded. Call :meth:`close` (or let the sandbox be garbage-collected) to stop
    its worker processes. Library code uses :func:`shared_sandbox`, one per process and limits, so that a
    process's episodes share one cache and one set of workers.
    """

    def __init__(
        self,
        limits: SandboxLimits | None = None,
        cache_entries: int = 4096,
        cache_bytes: int = 256 * 2**20,
        isolated: bool = True,
    ) -> None:
        self.limits = limits or SandboxLimits()
        self.cache = _ResultCache(cache_entries, cache_bytes)
        self.isolated = isolated
        self.pool = WorkerPool(self.limits, max_idle=default_workers()) if self.isolated else None
        if self.pool is not None:
            weakref.finalize(self, self.pool.close)

    def close(self) -> None:
        """Stop the idle worker processes (a later query starts a new one)."""
        if self.pool is not None:
            self.pool.close()

    def __enter__(self) -> SqlSandbox:  # noqa: PYI034 - typing.Self needs Python 3.11
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def _key(self, db_path: str | os.PathLike[str], sql: str) -> tuple[Any, ...] | None:
        version = engine_for(db_path).version(os.fspath(db_path)) if isinstance(sql, str) else None
        return None if version is None else (*version, strip_sql(sql))

    def _run(
        self, jobs: Sequence[tuple[str, str]], workers: int, on_result: Callable[[int], None] | None = None
    ) -> list[ExecutionResult]:
        if self.pool is None:
            results = []
            for db_path, sql in jobs:
                results.append(execute(db_path, sql, self.limits))
                if on_result is not None:
                    on_result(len(results))
            return results
        runs = _runs(jobs)
        done = [0]

        def finished(run: int) -> None:
            done[0] += len(runs[run][1])
            if on_result is not None:
                on_result(done[0])

        return [result for answers in self.pool.run(runs, workers, finished) for result in answers]

    def execute(self, db_path: str | os.PathLike[str], sql: str) -> ExecutionResult:
        """Run one query (never raises for a bad one), answering repeats from the cache.

        ``sql`` must be one string; anything else is answered with an ``empty`` error that says so.
        """
        if not isinstance(sql, str):
            message = f"expected the SQL as one string, got {type(sql).__name__} (execute_many runs several)"
            return ExecutionResult(error_kind=ErrorKind.EMPTY, error=message)
        key = self._key(db_path, sql)
        if key is not None:
            hit = self.cache.get(key)
            if hit is not None:
                return replace(hit, cached=True)
        result = self._run([(str(db_path), sql)], 1)[0]
        if key is not None:
            self.cache.put(key, result)
        return result

    def execute_many(
        self,
        jobs: Iterable[tuple[str | os.PathLike[str], str]],
        workers: int | None = None,
        on_result: Callable[[int], None] | None = None,
    ) -> list[ExecutionResult]:
        """Run ``(db_path, sql)`` jobs over ``workers`` processes (all usable cores by default); results in
        input order, the cache consulted first. ``on_result(n_done)`` is called as answers arrive."""
        jobs = list(jobs)
        results: list[ExecutionResult | None] = [None] * len(jobs)
        keys = [self._key(db, sql) for db, sql in jobs]
        pending = []
        for i, key in enumerate(keys):
            hit = self.cache.get(key) if key is not None else None
            if hit is not None:
                results[i] = replace(hit, cached=True)
            elif not isinstance(jobs[i][1], str):
                results[i] = self.execute(*jobs[i])
            else:
                pending.append(i)
        n_cached = len(jobs) - len(pending)
        progress = None if on_result is None else (lambda n: on_result(n_cached + n))
        workers = workers if workers is not None else default_workers()
        fresh = self._run([(str(jobs[i][0]), jobs[i][1]) for i in pending], workers, progress)
        for i, result in zip(pending, fresh):
            results[i] = result
            if keys[i] is not None:
                self.cache.put(keys[i], result)
        return results  # type: ignore[return-value]


_shared: dict[SandboxLimits, SqlSandbox] = {}
_shared_owner = os.getpid()
_shared_lock = threading.Lock()


def shared_sandbox(limits: SandboxLimits | None = None) -> SqlSandbox:
    """This process's sandbox for ``limits`` (default :class:`SandboxLimits`): created on first use, then the
    same object every time, so rollouts, the expert, evaluation and scoring share its workers and its cache
    (one worker start per process and limit setting while queries run one at a time). A forked child gets
    sandboxes of its own. Creating it starts no worker; the first query does."""
    global _shared_owner
    limits = limits if limits is not None else SandboxLimits()
    with _shared_lock:
        if _shared_owner != os.getpid():
            _shared.clear()
            _shared_owner = os.getpid()
        sandbox = _shared.get(limits)
        if sandbox is None:
            sandbox = _shared[limits] = SqlSandbox(limits)
        return sandbox
