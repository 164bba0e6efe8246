"""Supervised worker processes: a hard deadline and a memory bound for any query.

SQLite checks its deadline between virtual-machine instructions, and one built-in call is one instruction:
``instr()`` or ``replace()`` on megabyte strings runs for minutes whatever the limit, and a sort of large
values can fill memory between two checks. So queries run in worker processes that the calling process
supervises:

- a worker is a fresh interpreter that imports only :mod:`finestep.sql.worker_process` and the engine (never
  the caller's ``__main__``: a script that imports torch does not pay for it again per worker), in a session of
  its own, so a terminal's Ctrl-C reaches the caller only;
- each worker sets SQLite's process-wide heap limit to ``limits.max_memory_bytes`` and its own address-space
  limit (``RLIMIT_AS``) to that plus room for the largest result the caps allow; past either, the query fails
  as ``too_large`` and the worker carries on;
- the caller waits for each answer at most ``timeout_s * HARD_DEADLINE_FACTOR + HARD_DEADLINE_SLACK_S``; a
  worker that overruns is killed (``SIGKILL``), its query answered ``timeout``, and a fresh worker takes the
  rest of its work;
- workers ignore Ctrl-C: the caller gets ``KeyboardInterrupt``, kills every worker and re-raises it;
- a worker that dies or hangs before it is ready is a failed start: its work goes to the next one, and
  ``MAX_START_FAILURES`` failed starts in a row raise :class:`WorkerStartError`, naming the cause;
- work is handed out in runs of queries on one database (a worker keeps a few connections open), and an idle
  worker takes the not-yet-started half of a busy worker's run, so slow queries spread over all workers.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import Any

from finestep.sql.engine import ErrorKind, ExecutionResult, SandboxLimits
from finestep.sql.worker_process import address_space_bytes

__all__ = [
    "HARD_DEADLINE_FACTOR",
    "HARD_DEADLINE_SLACK_S",
    "MAX_START_FAILURES",
    "WorkerPool",
    "WorkerStartError",
    "address_space_bytes",
    "hard_deadline_s",
    "worker_starts",
]

HARD_DEADLINE_FACTOR = 1.25
HARD_DEADLINE_SLACK_S = 0.05
STARTUP_TIMEOUT_S = 30.0  # a worker that has not said ready by then failed to start (a loaded machine is slow)
MAX_START_FAILURES = 3  # failed starts in a row before the pool gives up with WorkerStartError
# The worker's code: the interpreter's own directory first on sys.path (not the caller's working directory).
_WORKER_CODE = "import sys; del sys.path[0]; from finestep.sql.worker_process import serve; serve()"
_PACKAGE_ROOT = str(Path(__file__).resolve().parents[2])  # the folder that holds finestep/, for PYTHONPATH
_log = logging.getLogger(__name__)

Job = tuple[str, Sequence[str]]  # (database path, queries run one after the other on it)

_starts = 0  # worker processes this process has started (see worker_starts)
_starts_lock = threading.Lock()


class WorkerStartError(RuntimeError):
    """The sandbox could not start a worker process ``MAX_START_FAILURES`` times in a row."""


def hard_deadline_s(limits: SandboxLimits) -> float:
    """Seconds the supervisor waits for one query's answer before it kills the worker."""
    return limits.timeout_s * HARD_DEADLINE_FACTOR + HARD_DEADLINE_SLACK_S


def worker_starts() -> int:
    """Sandbox worker processes started by this process so far (tests and benchmarks count them)."""
    return _starts


def _worker_env() -> dict[str, str]:
    """The caller's environment, with the folder that holds this ``finestep`` first on ``PYTHONPATH`` (a
    notebook or a script may have imported it from a path the worker would not otherwise search)."""
    env = dict(os.environ)
    paths = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    env["PYTHONPATH"] = os.pathsep.join([_PACKAGE_ROOT, *[p for p in paths if p != _PACKAGE_ROOT]])
    return env


class _Worker:
    """One worker process, its channel, and the run of queries it is working on."""

    def __init__(self, limits: SandboxLimits) -> None:
        global _starts
        if not sys.executable:
            raise WorkerStartError("cannot start a sandbox worker: sys.executable is empty (an embedded Python?)")
        ours, theirs = socket.socketpair()
        self.stderr = tempfile.TemporaryFile()  # noqa: SIM115 - kept open for the worker's life; read if it fails to start
        command = [sys.executable, "-c", _WORKER_CODE, str(theirs.fileno()), str(os.getpid())]
        try:
            self.process = subprocess.Popen(
                command, pass_fds=(theirs.fileno(),), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                stderr=self.stderr, env=_worker_env(), start_new_session=True,
            )  # fmt: skip
        except OSError as exc:
            ours.close()
            self.stderr.close()
            raise WorkerStartError(f"cannot start a sandbox worker ({sys.executable}): {exc}") from exc
        finally:
            theirs.close()
        with _starts_lock:
            _starts += 1
        self.channel = Connection(ours.detach())
        self.ready = False
        self.started = time.perf_counter()
        self.last_event = self.started
        self.run: _Run | None = None
        try:
            self.channel.send(("limits", limits))
        except OSError:  # it died at once: the first read of its pipe reports it
            pass

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()
        self.channel.close()
        self.stderr.close()

    def stderr_tail(self, limit: int = 2000) -> str:
        """The last ``limit`` characters the worker wrote to its standard error."""
        try:
            self.stderr.seek(0)
            return self.stderr.read().decode("utf-8", "replace")[-limit:].strip()
        except (OSError, ValueError):
            return ""

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

    Thread-safe: concurrent :meth:`run` calls use distinct workers. Up to ``max_idle`` idle workers are kept for
    the next call until :meth:`close`; a worker whose supervisor ends sees its channel close and exits.
    """

    def __init__(self, limits: SandboxLimits, max_idle: int = 1) -> None:
        self.limits = limits
        self.max_idle = max_idle
        self._idle: list[_Worker] = []
        self._lock = threading.Lock()
        self._tokens = 0
        self._owner = os.getpid()
        self._start_failures = 0  # failed starts in a row
        self.killed = 0  # workers killed for overrunning their deadline (for tests and benchmarks)
        self.started = 0  # workers this pool has started

    def _forget_if_forked(self) -> None:
        """In a forked child the idle workers are the parent's: forget them (never kill them). Call locked."""
        if self._owner != os.getpid():
            self._owner, self._idle = os.getpid(), []

    def _take(self) -> _Worker:
        while True:
            with self._lock:
                self._forget_if_forked()
                worker = self._idle.pop() if self._idle else None
            if worker is None:
                self.started += 1
                return _Worker(self.limits)
            if worker.alive():
                return worker
            worker.kill()  # died while idle (killed from outside): reap it and take another

    def _give_back(self, worker: _Worker) -> None:
        with self._lock:
            self._forget_if_forked()
            if len(self._idle) < self.max_idle and worker.alive():
                self._idle.append(worker)
                return
        worker.kill()

    def idle_pids(self) -> list[int]:
        """Process ids of the idle workers (to measure their memory)."""
        with self._lock:
            self._forget_if_forked()
            return [worker.pid for worker in self._idle]

    def close(self) -> None:
        """Stop every idle worker."""
        with self._lock:
            self._forget_if_forked()
            idle, self._idle = self._idle, []
        for worker in idle:
            worker.kill()

    def _failed_start(self, worker: _Worker, cause: str) -> None:
        """Count a worker that died or hung before it was ready; raise once ``MAX_START_FAILURES`` in a row."""
        self._start_failures += 1
        detail = worker.stderr_tail()
        worker.kill()
        message = f"a sandbox worker failed to start: {cause}" + (f"; its error output:\n{detail}" if detail else "")
        if self._start_failures >= MAX_START_FAILURES:
            self._start_failures = 0
            raise WorkerStartError(f"{MAX_START_FAILURES} sandbox workers in a row failed to start ({sys.executable} "
                                   f"-c {_WORKER_CODE!r}). The last: {message}")  # fmt: skip
        _log.warning("%s (try %d of %d)", message, self._start_failures, MAX_START_FAILURES)

    def run(
        self, jobs: Sequence[Job], workers: int = 1, on_job_done: Callable[[int], None] | None = None
    ) -> list[list[ExecutionResult]]:
        """Run every job's queries over at most ``workers`` processes; ``results[j][i]`` answers ``jobs[j][1][i]``.

        ``on_job_done(j)`` is called when job ``j`` has all its answers. Never raises for a bad query; on
        ``KeyboardInterrupt`` (or any other exception) the workers in use are killed before it propagates.
        Raises :class:`WorkerStartError` when ``MAX_START_FAILURES`` workers in a row fail to start.
        """
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

        def retry(worker: _Worker) -> None:
            """The worker never started: its whole run goes back to the queue, no query is answered."""
            del busy[worker.channel]
            run = worker.run
            if run is not None and run.running < run.end:
                queue.appendleft((run.job, run.running, run.end))

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
                        code = worker.process.wait()
                        if not worker.ready:
                            retry(worker)
                            self._failed_start(worker, f"it exited with code {code} before it was ready")
                            continue
                        kind = ErrorKind.TOO_LARGE if code == -signal.SIGKILL else ErrorKind.RUNTIME
                        lost(worker, kind, f"the sandbox worker died (exit code {code}) running this query")
                        continue
                    worker.last_event = time.perf_counter()
                    run = worker.run
                    assert run is not None
                    if message[0] == "ready":
                        worker.ready = True
                        self._start_failures = 0
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
                    if worker.ready:
                        self.killed += 1
                        limit = f"{self.limits.timeout_s:g} s"
                        lost(worker, ErrorKind.TIMEOUT, f"query exceeded the {limit} time limit (its worker was stopped)")
                    else:
                        retry(worker)
                        self._failed_start(worker, f"it was not ready after {STARTUP_TIMEOUT_S:g} s")
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
