"""Inside a sandbox worker: the loop that answers queries under a time and memory bound.

A worker is a fresh Python interpreter that imports this module, :mod:`finestep.sql.engine` and the engine
registry (:mod:`finestep.sql.engines`; a driver such as ``duckdb`` or ``psycopg`` only when its first database
opens), nothing else
(:mod:`finestep.sql.workers` starts it with ``python -c``): never the caller's script, whatever the caller
imported (torch, transformers) or how it runs (a script, ``python -m``, a notebook, a console script). The
supervisor hands it one end of a socket pair as file descriptor ``argv[1]``, and its own process id as
``argv[2]``. Protocol over that channel:

- in: ``("limits", SandboxLimits)`` first; then ``("run", token, db_path, start, queries)``, where
  ``queries[k]`` has index ``start + k``, and ``("truncate", token, end)`` between two queries, which
  shortens the current run to the indices below ``end``;
- out: ``("ready",)`` once the memory bounds are set; ``("batch", [(token, index, result_fields), ...])``,
  and ``("done", token)`` after the last answer of a run.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import sys
import threading
import time
from collections import OrderedDict
from multiprocessing.connection import Connection
from typing import Any

from finestep.sql.engine import (
    ErrorKind,
    ExecutionResult,
    SandboxLimits,
    file_version,
    open_readonly,
    run_query,
)
from finestep.sql.engines import Engine, engine_for

__all__ = ["address_space_bytes", "serve"]

_OPEN_CONNECTIONS = 8  # most recently used databases kept open
_FLUSH_S = 0.001
_ROW_OVERHEAD_BYTES = 200  # Python objects per fetched row beyond the counted value bytes (tuple, ints, floats)


def address_space_bytes(limits: SandboxLimits) -> int:
    """Address space a worker may add to what it had when it started: SQLite's heap, the largest result the
    caps allow (as Python objects, and once more while it is sent back), and 128 MB for everything else."""
    return limits.max_memory_bytes + 4 * limits.max_bytes + _ROW_OVERHEAD_BYTES * limits.max_rows + 128 * 2**20


def _limit_memory(limits: SandboxLimits) -> None:
    probe = sqlite3.connect(":memory:")
    probe.execute(f"PRAGMA hard_heap_limit = {int(limits.max_memory_bytes)}")  # process-wide, this process only
    probe.close()
    _cap_address_space(limits)


def _cap_address_space(limits: SandboxLimits) -> None:
    """Cap this process's address space at what it uses now plus :func:`address_space_bytes`."""
    try:
        import resource

        with open("/proc/self/statm", encoding="ascii") as handle:
            vm_now = int(handle.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
        cap = vm_now + address_space_bytes(limits)
        _, hard = resource.getrlimit(resource.RLIMIT_AS)
        if hard != resource.RLIM_INFINITY:
            cap = min(cap, hard)
        resource.setrlimit(resource.RLIMIT_AS, (cap, hard))
    except (ImportError, OSError, ValueError):  # pragma: no cover - not Linux: SQLite's heap limit still holds
        pass


def _lift_address_space() -> None:
    """Lift the soft address-space cap to the hard limit (before opening a DuckDB file, which reserves hundreds
    of MB of address space it does not use; :func:`_cap_address_space` follows)."""
    try:
        import resource

        _, hard = resource.getrlimit(resource.RLIMIT_AS)
        resource.setrlimit(resource.RLIMIT_AS, (hard, hard))
    except (ImportError, OSError, ValueError):  # pragma: no cover - not Linux
        pass


class _Outbox:
    """Answers on their way to the supervisor, sent in batches: by the worker between runs, or by a thread
    within ``_FLUSH_S`` of the first one waiting, so that answers are never held back behind a slow query
    (SQLite releases the GIL while it runs). The thread also ends the worker once the supervisor is gone."""

    def __init__(self, channel: Connection, limits: SandboxLimits, supervisor: int) -> None:
        self.channel = channel
        self.limits = limits
        self.supervisor = supervisor
        self.items: list[tuple[Any, ...]] = []
        self.lock = threading.Condition()
        threading.Thread(target=self._flush_soon, daemon=True, name="finestep-sql-outbox").start()

    def put(self, item: tuple[Any, ...]) -> None:
        with self.lock:
            self.items.append(item)
            if len(self.items) == 1:
                self.lock.notify()

    def flush(self, then: tuple[Any, ...] | None = None) -> None:
        with self.lock:
            if self.items:
                items, self.items = self.items, []
                try:
                    self.channel.send(("batch", items))
                except MemoryError:  # the batch is too large to pickle: answer each query too_large instead
                    keys = [(token, index) for token, index, _ in items]
                    del items
                    too_large = _as_tuple(_too_large(self.limits))
                    self.channel.send(("batch", [(token, index, too_large) for token, index in keys]))
            if then is not None:
                self.channel.send(then)

    def _flush_soon(self) -> None:
        while True:
            with self.lock:
                while not self.items:
                    self.lock.wait(timeout=1.0)
                    if os.getppid() != self.supervisor:  # the supervisor is gone (killed): so is the work
                        os._exit(0)
            time.sleep(_FLUSH_S)
            self.flush()


def _as_tuple(result: ExecutionResult) -> tuple[Any, ...]:
    # A plain tuple pickles several times faster than the dataclass (Spider queries take ~0.1 ms each).
    return (result.columns, result.rows, result.error_kind, result.error, result.elapsed_s, result.truncated_rows,
            result.truncated_bytes, result.nbytes)  # fmt: skip


def _too_large(limits: SandboxLimits) -> ExecutionResult:
    message = f"query needs more memory than the sandbox allows ({limits.max_memory_bytes >> 20} MB)"
    return ExecutionResult(error_kind=ErrorKind.TOO_LARGE, error=message)


def _answer(
    connections: OrderedDict[tuple[Any, ...], Any], db_path: str, sql: str, limits: SandboxLimits
) -> ExecutionResult:
    engine = engine_for(db_path)
    if engine.name != "sqlite":
        return _answer_engine(connections, engine, db_path, sql, limits)
    db_path = engine.path(db_path)  # type: ignore[attr-defined]  # a plain path stays as it is
    start = time.perf_counter()
    key = file_version(db_path) or (db_path,)
    conn = connections.get(key)
    try:
        if conn is None:
            conn = open_readonly(db_path, limits)
            connections[key] = conn
            while len(connections) > _OPEN_CONNECTIONS:
                connections.popitem(last=False)[1].close()
        connections.move_to_end(key)
        return run_query(conn, sql, limits)
    except FileNotFoundError as exc:
        return ExecutionResult(error_kind=ErrorKind.MISSING_DATABASE, error=str(exc), elapsed_s=time.perf_counter() - start)
    except sqlite3.Error as exc:
        message = f"cannot open database: {exc}"
        return ExecutionResult(error_kind=ErrorKind.RUNTIME, error=message, elapsed_s=time.perf_counter() - start)
    except MemoryError:
        return _too_large(limits)


def _answer_engine(
    connections: OrderedDict[tuple[Any, ...], Any], engine: Engine, db: str, sql: str, limits: SandboxLimits
) -> ExecutionResult:
    """One query on a database of an engine other than SQLite (DuckDB, PostgreSQL)."""
    start = time.perf_counter()
    key = engine.version(db) or (db,)
    conn = connections.get(key)
    try:
        if conn is None:
            if engine.caps_address_space_per_open:
                _lift_address_space()
            try:
                conn = engine.open(db, limits)
            finally:
                if engine.caps_address_space_per_open:
                    _cap_address_space(limits)
            connections[key] = conn
            while len(connections) > _OPEN_CONNECTIONS:
                connections.popitem(last=False)[1].close()
        connections.move_to_end(key)
        return engine.run(conn, sql, limits)
    except FileNotFoundError as exc:
        return ExecutionResult(error_kind=ErrorKind.MISSING_DATABASE, error=str(exc), elapsed_s=time.perf_counter() - start)
    except MemoryError:
        return _too_large(limits)
    except Exception as exc:  # noqa: BLE001 - the driver's connection errors, an unsafe role
        message = f"cannot open database {db}: {exc}"
        return ExecutionResult(error_kind=ErrorKind.RUNTIME, error=message, elapsed_s=time.perf_counter() - start)


def _loop(channel: Connection, limits: SandboxLimits, outbox: _Outbox) -> None:
    connections: OrderedDict[tuple[Any, ...], Any] = OrderedDict()
    while True:
        try:
            message = channel.recv()
        except EOFError:  # the supervisor closed the channel (it stopped this worker, or ended)
            return
        if message[0] != "run":
            continue  # a truncate that came after its run had ended
        _, token, db_path, index, queries = message
        offset, end = index, index + len(queries)
        while index < end:
            while channel.poll():
                message = channel.recv()
                if message[0] == "truncate" and message[1] == token:
                    end = min(end, message[2])
            if index >= end:
                break
            result = _answer(connections, db_path, queries[index - offset], limits)
            outbox.put((token, index, _as_tuple(result)))
            del result
            index += 1
        outbox.flush(then=("done", token))


def serve(argv: list[str] | None = None) -> None:
    """A worker's whole life: read the limits, bound memory, say ready, answer runs until the channel closes."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the supervisor's to handle
    argv = sys.argv[1:] if argv is None else argv
    channel = Connection(int(argv[0]))
    supervisor = int(argv[1])
    if os.getppid() != supervisor:  # the supervisor died while this process started
        return
    kind, limits = channel.recv()
    if kind != "limits" or not isinstance(limits, SandboxLimits):
        raise SystemExit(f"finestep sandbox worker: expected the limits first, got {kind!r}")
    outbox = _Outbox(channel, limits, supervisor)
    _limit_memory(limits)
    channel.send(("ready",))
    _loop(channel, limits, outbox)
