"""Supervised worker processes: a hard deadline and a memory bound for any query.

SQLite checks its deadline between virtual-machine instructions, and one built-in call is one instruction:
``instr()`` or ``replace()`` on megabyte strings runs for minutes whatever the limit, and a sort of large
values can fill memory between two checks. So queries run in worker processes that the calling process
supervises:

- each worker sets SQLite's process-wide heap limit to ``limits.max_memory_bytes`` and its own address-space
  limit (``RLIMIT_AS``) to that plus room for the largest result the caps allow; past either, the query fails
  as ``too_large`` and the worker carries on;
- the caller waits for each answer at most ``timeout_s * HARD_DEADLINE_FACTOR + HARD_DEADLINE_SLACK_S``; a
  worker that overruns is killed (``SIGKILL``), its query answered ``timeout``, and a fresh worker takes the
  rest of its work;
- workers ignore Ctrl-C: the caller gets ``KeyboardInterrupt``, kills every worker and re-raises it;
- work is handed out in runs of queries on one database (a worker keeps a few connections open), and an idle
  worker takes the not-yet-started half of a busy worker's run, so slow queries spread over all workers.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import sqlite3
import sys
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from typing import Any

from finestep.sql.engine import (
    ErrorKind,
    ExecutionResult,
    SandboxLimits,
    execute_on,
    file_version,
    open_readonly,
    run_query,
)

__all__ = ["HARD_DEADLINE_FACTOR", "HARD_DEADLINE_SLACK_S", "WorkerPool", "hard_deadline_s", "isolation_available"]

HARD_DEADLINE_FACTOR = 1.25
HARD_DEADLINE_SLACK_S = 0.05
STARTUP_TIMEOUT_S = 60.0  # a worker that has not started by then is replaced (a loaded machine can be slow)
_OPEN_CONNECTIONS = 8  # per worker, most recently used databases
_FLUSH_S = 0.001
_ROW_OVERHEAD_BYTES = 200  # Python objects per fetched row beyond the counted value bytes (tuple, ints, floats)

Job = tuple[str, Sequence[str]]  # (database path, queries run one after the other on it)


def hard_deadline_s(limits: SandboxLimits) -> float:
    """Seconds the supervisor waits for one query's answer before it kills the worker."""
    return limits.timeout_s * HARD_DEADLINE_FACTOR + HARD_DEADLINE_SLACK_S


def isolation_available() -> bool:
    """False inside a daemonic process (a ``multiprocessing.Pool`` worker), which may not start children."""
    return not multiprocessing.current_process().daemon


def address_space_bytes(limits: SandboxLimits) -> int:
    """Address space a worker may add to what it had when it started: SQLite's heap, the largest result the
    caps allow (as Python objects, and once more while it is sent back), and 128 MB for everything else."""
    return limits.max_memory_bytes + 4 * limits.max_bytes + _ROW_OVERHEAD_BYTES * limits.max_rows + 128 * 2**20


# --- inside a worker ---------------------------------------------------------------------------------------


def _limit_memory(limits: SandboxLimits) -> None:
    probe = sqlite3.connect(":memory:")
    probe.execute(f"PRAGMA hard_heap_limit = {int(limits.max_memory_bytes)}")  # process-wide, this process only
    probe.close()
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


class _Outbox:
    """Answers on their way to the supervisor, sent in batches: by the worker between runs, or by a thread
    within ``_FLUSH_S`` of the first one waiting, so that answers are never held back behind a slow query
    (SQLite releases the GIL while it runs)."""

    def __init__(self, channel: Connection, limits: SandboxLimits) -> None:
        self.channel = channel
        self.limits = limits
        self.parent = os.getppid()
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
                    if os.getppid() != self.parent:  # the supervisor is gone (killed): so is the work
                        os._exit(0)
            time.sleep(_FLUSH_S)
            self.flush()


def _worker_main(channel: Connection, limits: SandboxLimits) -> None:
    """A worker's loop: ``("run", token, db_path, start, queries)`` in, where ``queries[k]`` has index
    ``start + k``; ``("batch", [(token, index, result), ...])`` and, after the last answer of a run,
    ``("done", token)`` out. ``("truncate", token, end)`` between two queries shortens the current run to the
    indices below ``end``."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the supervisor's to handle
    outbox = _Outbox(channel, limits)
    _limit_memory(limits)
    connections: OrderedDict[tuple[Any, ...], sqlite3.Connection] = OrderedDict()
    channel.send(("ready",))
    while True:
        try:
            message = channel.recv()
        except EOFError:
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


def _as_tuple(result: ExecutionResult) -> tuple[Any, ...]:
    # A plain tuple pickles several times faster than the dataclass (Spider queries take ~0.1 ms each).
    return (result.columns, result.rows, result.error_kind, result.error, result.elapsed_s, result.truncated_rows,
            result.truncated_bytes, result.nbytes)  # fmt: skip


def _too_large(limits: SandboxLimits) -> ExecutionResult:
    message = f"query needs more memory than the sandbox allows ({limits.max_memory_bytes >> 20} MB)"
    return ExecutionResult(error_kind=ErrorKind.TOO_LARGE, error=message)


def _answer(
    connections: OrderedDict[tuple[Any, ...], sqlite3.Connection], db_path: str, sql: str, limits: SandboxLimits
) -> ExecutionResult:
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


# --- the supervisor ----------------------------------------------------------------------------------------


def _context() -> multiprocessing.context.BaseContext:
    methods = multiprocessing.get_all_start_methods()
    # fork starts a worker in milliseconds but is unsafe once other threads exist (progress bars, torch's
    # thread pools): then forkserver, whose server process starts once.
    if "fork" in methods and threading.active_count() == 1 and "torch" not in sys.modules:
        return multiprocessing.get_context("fork")
    if "forkserver" in methods:
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload([__name__])
        return context
    return multiprocessing.get_context("spawn")  # pragma: no cover - not Linux


class _Worker:
    """One worker process and the run of queries it is working on."""

    def __init__(self, limits: SandboxLimits) -> None:
        context = _context()
        self.channel, child = context.Pipe()
        self.process = context.Process(target=_worker_main, args=(child, limits), daemon=True, name="finestep-sql")
        self.process.start()
        child.close()
        self.ready = False
        self.started = time.perf_counter()
        self.last_event = self.started
        self.run: _Run | None = None

    def kill(self) -> None:
        self.process.kill()
        self.process.join()
        self.channel.close()

    def deadline(self, limits: SandboxLimits) -> float:
        if not self.ready:
            return self.started + STARTUP_TIMEOUT_S
        return self.last_event + hard_deadline_s(limits)


@dataclass
class _Run:
    """Queries ``start..end-1`` of job ``job``, given to a worker under ``token``; ``running`` is the index
    the worker works on now (the one after its last answer)."""

    token: int
    job: int
    start: int
    end: int
    running: int


class WorkerPool:
    """Worker processes that run queries under ``limits`` with a hard deadline and a memory bound.

    Thread-safe: concurrent :meth:`run` calls use distinct workers. Idle workers are kept for the next call
    until :meth:`close` (or the end of the process: they are daemons).
    """

    def __init__(self, limits: SandboxLimits, max_idle: int = 1) -> None:
        self.limits = limits
        self.max_idle = max_idle
        self._idle: list[_Worker] = []
        self._lock = threading.Lock()
        self._tokens = 0
        self.killed = 0  # workers killed for overrunning their deadline (for tests and benchmarks)

    def _take(self) -> _Worker:
        while True:
            with self._lock:
                worker = self._idle.pop() if self._idle else None
            if worker is None:
                return _Worker(self.limits)
            if worker.process.is_alive():
                return worker
            worker.kill()  # died while idle (killed from outside): reap it and take another

    def _give_back(self, worker: _Worker) -> None:
        with self._lock:
            if len(self._idle) < self.max_idle and worker.process.is_alive():
                self._idle.append(worker)
                return
        worker.kill()

    def idle_pids(self) -> list[int]:
        """Process ids of the idle workers (to measure their memory)."""
        with self._lock:
            return [worker.process.pid for worker in self._idle if worker.process.pid is not None]

    def close(self) -> None:
        """Stop every idle worker."""
        with self._lock:
            idle, self._idle = self._idle, []
        for worker in idle:
            worker.kill()

    def run(
        self, jobs: Sequence[Job], workers: int = 1, on_job_done: Callable[[int], None] | None = None
    ) -> list[list[ExecutionResult]]:
        """Run every job's queries over at most ``workers`` processes; ``results[j][i]`` answers ``jobs[j][1][i]``.

        ``on_job_done(j)`` is called when job ``j`` has all its answers. Never raises for a bad query; on
        ``KeyboardInterrupt`` (or any other exception) the workers in use are killed before it propagates.
        """
        if not isolation_available():  # a daemonic process may not start workers: run here, soft deadline only
            answers = []
            for j, (db_path, queries) in enumerate(jobs):
                answers.append(execute_on(db_path, queries, self.limits))
                if on_job_done is not None:
                    on_job_done(j)
            return answers
        results: list[list[ExecutionResult | None]] = [[None] * len(queries) for _, queries in jobs]
        missing = [len(queries) for _, queries in jobs]
        queue: deque[tuple[int, int, int]] = deque((j, 0, len(q)) for j, (_, q) in enumerate(jobs) if len(q))
        for j, count in enumerate(missing):
            if count == 0 and on_job_done is not None:
                on_job_done(j)
        busy: dict[Connection, _Worker] = {}
        workers = max(1, workers)

        def answer(job: int, index: int, result: ExecutionResult) -> None:
            if results[job][index] is None:
                results[job][index] = result
                missing[job] -= 1
                if missing[job] == 0 and on_job_done is not None:
                    on_job_done(job)

        def dispatch(worker: _Worker, job: int, start: int, end: int) -> None:
            self._tokens += 1
            worker.run = _Run(self._tokens, job, start, end, start)
            worker.last_event = time.perf_counter()
            db_path, queries = jobs[job]
            busy[worker.channel] = worker
            try:
                worker.channel.send(("run", self._tokens, str(db_path), start, list(queries[start:end])))
            except OSError:  # it died between two runs: the next read of its pipe reports it, and it is replaced
                pass

        def lost(worker: _Worker, kind: str, message: str) -> None:
            """The worker is gone: its running query gets ``kind``, the rest of its run goes back to the queue."""
            del busy[worker.channel]
            run = worker.run
            if run is not None and run.running < run.end:
                answer(run.job, run.running, ExecutionResult(error_kind=kind, error=message,
                                                             elapsed_s=time.perf_counter() - worker.last_event))
                if run.running + 1 < run.end:
                    queue.appendleft((run.job, run.running + 1, run.end))
            worker.kill()

        try:
            while queue or busy:
                while queue and len(busy) < workers:
                    dispatch(self._take(), *queue.popleft())
                if not queue and len(busy) < workers:
                    self._steal(busy, dispatch)
                now = time.perf_counter()
                timeout = max(0.0, min(w.deadline(self.limits) for w in busy.values()) - now)
                for channel, worker, message in self._receive(busy, timeout):
                    if message is None:
                        worker.process.join()
                        code = worker.process.exitcode
                        kind = ErrorKind.TOO_LARGE if code == -signal.SIGKILL else ErrorKind.RUNTIME
                        lost(worker, kind, f"the sandbox worker died (exit code {code}) running this query")
                        continue
                    worker.last_event = time.perf_counter()
                    run = worker.run
                    assert run is not None
                    if message[0] == "ready":
                        worker.ready = True
                    elif message[0] == "batch":
                        for token, index, fields in message[1]:
                            if token == run.token:
                                if index < run.end:  # answers past a stolen boundary come from the thief
                                    answer(run.job, index, ExecutionResult(*fields))
                                run.running = index + 1
                    elif message[0] == "done" and message[1] == run.token:
                        del busy[channel]
                        worker.run = None
                        if queue and len(busy) < workers:
                            dispatch(worker, *queue.popleft())
                        else:
                            self._give_back(worker)
                now = time.perf_counter()
                for worker in [w for w in busy.values() if w.deadline(self.limits) <= now]:
                    self.killed += 1
                    if worker.ready:
                        limit = f"{self.limits.timeout_s:g} s"
                        lost(worker, ErrorKind.TIMEOUT, f"query exceeded the {limit} time limit (its worker was stopped)")
                    else:  # pragma: no cover - a machine too loaded to start a process in a minute
                        lost(worker, ErrorKind.RUNTIME, "the sandbox worker did not start")
        except BaseException:
            for worker in busy.values():
                worker.kill()
            raise
        return results  # type: ignore[return-value]

    @staticmethod
    def _receive(
        busy: dict[Connection, _Worker], timeout: float
    ) -> list[tuple[Connection, _Worker, tuple[Any, ...] | None]]:
        """Every message waiting from busy workers, after waiting up to ``timeout`` s for the first; ``None``
        for a worker whose process is gone."""
        if len(busy) == 1:  # one poll() call: cheaper than building a selector
            channel = next(iter(busy))
            ready = [channel] if channel.poll(timeout) else []
        else:
            ready = wait(list(busy), timeout)  # type: ignore[assignment]
        messages: list[tuple[Connection, _Worker, tuple[Any, ...] | None]] = []
        for channel in ready:
            worker = busy[channel]  # type: ignore[index]
            try:
                while True:
                    messages.append((channel, worker, channel.recv()))  # type: ignore[union-attr]
                    if not channel.poll(0):  # type: ignore[union-attr]
                        break
            except (EOFError, OSError):
                messages.append((channel, worker, None))
        return messages

    def _steal(self, busy: dict[Connection, _Worker], dispatch: Callable[[_Worker, int, int, int], None]) -> None:
        """Give an idle slot the not-yet-started half of the busiest run, if any run has two queries to go."""
        best, most = None, 1
        for worker in busy.values():
            run = worker.run
            if worker.ready and run is not None and run.end - run.running > most:
                best, most = worker, run.end - run.running
        if best is None:
            return
        run = best.run
        assert run is not None
        middle = run.running + 1 + (run.end - run.running - 1) // 2
        try:
            best.channel.send(("truncate", run.token, middle))
        except OSError:
            return  # it died: the next read of its pipe reports it
        end, run.end = run.end, middle
        dispatch(self._take(), run.job, middle, end)
