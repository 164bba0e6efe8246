"""What the engines other than SQLite share: the text checks before a query runs, a deadline timer, value
conversion to SQLite's Python types, the capped fetch, and catalog rows made into tables."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

from finestep.sql.engine import ErrorKind, ExecutionResult, SandboxLimits, _fetch_capped, strip_sql
from finestep.sql.engines.catalog import Column, Declared, Table

__all__ = ["Deadline", "ValueCursor", "catalog_rows", "checked_text", "failed", "fetch_result", "plain_value",
           "tables_from_catalog"]  # fmt: skip


def failed(start: float, kind: str, message: str) -> ExecutionResult:
    """An error answer timed from ``start``."""
    return ExecutionResult(error_kind=kind, error=message, elapsed_s=time.perf_counter() - start)


def checked_text(sql: object, limits: SandboxLimits, start: float) -> tuple[str | None, ExecutionResult | None]:
    """``(text to run, None)`` or ``(None, error answer)``: not a string, empty, too long (as SQLite's path)."""
    if not isinstance(sql, str):
        return None, failed(start, ErrorKind.EMPTY, f"expected the SQL as one string, got {type(sql).__name__}")
    text = sql if limits.verbatim else strip_sql(sql)
    if not limits.verbatim and not text:
        return None, failed(start, ErrorKind.EMPTY, "empty SQL")
    if len(text) > limits.max_sql_chars:
        return None, failed(start, ErrorKind.TOO_LARGE, f"SQL text has {len(text)} characters, limit {limits.max_sql_chars}")
    return text, None


class _Watchdog:
    """One daemon thread that calls each armed ``stop()`` when its deadline passes.

    A thread per query (``threading.Timer``) costs a start and a join on every query: 0.2 ms on an idle machine,
    10-20 ms on a loaded one, where each wake-up waits for a core. The watchdog is woken only when a new deadline
    comes before the one it sleeps until; with equal limits, successive queries arm later deadlines, so it wakes
    about once per limit, not once per query."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._armed: dict[int, tuple[float, Callable[[], Any], Deadline]] = {}
        self._firing: set[int] = set()
        self._wake_at: float | None = None  # when the thread looks next; None: it waits for a notify
        self._thread: threading.Thread | None = None

    def arm(self, owner: Deadline, at: float, stop: Callable[[], Any]) -> None:
        with self._cond:
            self._armed[id(owner)] = (at, stop, owner)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._loop, name="finestep-deadline", daemon=True)
                self._thread.start()
            elif self._wake_at is None or at < self._wake_at:
                self._cond.notify_all()

    def disarm(self, owner: Deadline) -> None:
        """Forget ``owner``'s deadline; if its ``stop()`` is under way, wait until it has returned."""
        with self._cond:
            self._armed.pop(id(owner), None)
            while id(owner) in self._firing:
                self._cond.wait()

    def _loop(self) -> None:
        with self._cond:
            while True:
                now = time.monotonic()
                due = [key for key, (at, _, _) in self._armed.items() if at <= now]
                for key in due:
                    _, stop, owner = self._armed.pop(key)
                    owner.fired = True
                    self._firing.add(key)
                    self._cond.release()
                    try:
                        stop()
                    except Exception:  # noqa: BLE001, S110 - the connection may be gone; the supervisor's kill remains
                        pass
                    finally:
                        self._cond.acquire()
                        self._firing.discard(key)
                        self._cond.notify_all()
                if due:
                    continue
                nearest = min((at for at, _, _ in self._armed.values()), default=None)
                if nearest is None and self._wake_at is not None and self._wake_at > now:
                    nearest = self._wake_at  # keep the planned wake-up: a later deadline armed meanwhile needs no notify
                self._wake_at = nearest
                self._cond.wait(None if nearest is None else nearest - now)


_WATCHDOG = _Watchdog()


class Deadline:
    """Calls ``stop()`` (from the process's watchdog thread) when ``timeout_s`` passes, unless the ``with`` block
    ends first. Leaving the block waits for a ``stop()`` under way, so a late cancel never reaches the next query;
    ``fired`` says whether it was called."""

    def __init__(self, timeout_s: float, stop: Callable[[], Any]) -> None:
        self.fired = False
        self.timeout_s = timeout_s
        self.stop = stop

    def __enter__(self) -> Deadline:  # noqa: PYI034
        _WATCHDOG.arm(self, time.monotonic() + self.timeout_s, self.stop)
        return self

    def __exit__(self, *_exc: object) -> None:
        _WATCHDOG.disarm(self)


def plain_value(value: Any) -> Any:
    """A value as SQLite's driver would give it: numbers, text, bytes or None (decimals become floats, booleans
    0/1, dates, times, intervals, UUIDs, lists and structs their text)."""
    kind = value.__class__
    if value is None or kind is int or kind is float or kind is str or kind is bytes:
        return value
    if kind is bool:
        return int(value)
    if kind.__name__ == "Decimal":
        return float(value)
    if kind is memoryview or kind is bytearray:
        return bytes(value)
    return str(value)


class ValueCursor:
    """A cursor whose ``fetchmany`` gives rows of :func:`plain_value` (only columns ``convert`` marks)."""

    def __init__(self, cursor: Any, convert: list[bool]) -> None:
        self.cursor = cursor
        self.columns = [i for i, flag in enumerate(convert) if flag]

    def fetchmany(self, size: int) -> list[tuple[Any, ...]]:
        rows = self.cursor.fetchmany(size)
        if not self.columns:
            return rows
        out = []
        for row in rows:
            values = list(row)
            for i in self.columns:
                values[i] = plain_value(values[i])
            out.append(tuple(values))
        return out


def fetch_result(cursor: Any, columns: tuple[str, ...], limits: SandboxLimits, start: float) -> ExecutionResult:
    """The capped rows of ``cursor`` (a :class:`ValueCursor` or any ``fetchmany``) as an answer."""
    rows, nbytes, truncated_rows, truncated_bytes = _fetch_capped(cursor, limits)
    return ExecutionResult(columns=columns, rows=tuple(rows), elapsed_s=time.perf_counter() - start,
                           truncated_rows=truncated_rows, truncated_bytes=truncated_bytes, nbytes=nbytes)  # fmt: skip


def catalog_rows(engine: Any, conn: Any, sql: str, limits: SandboxLimits) -> tuple[tuple[Any, ...], ...]:
    """The rows of catalog query ``sql`` run by ``engine`` on ``conn`` (no row or byte cap: the catalog is trusted
    text of bounded size); :class:`RuntimeError` when it fails (a catalog that cannot be read is no schema)."""
    result = engine.run(conn, sql, replace(limits, max_rows=10**7, max_bytes=2**30))
    if not result.ok:
        raise RuntimeError(f"cannot read the catalog: {result.error}")
    return result.rows


def tables_from_catalog(columns: Sequence[Sequence[Any]], keys: Sequence[Sequence[Any]]) -> list[Table]:
    """Tables from catalog rows: ``columns`` as ``(table, table comment, column, type)`` in table then column order;
    ``keys`` as ``(table, 'p' or 'f', column, referenced table, referenced column)``, each key's columns in order.
    Tables whose comments record their declared schema (``finestep db import``) show it, in its order."""
    order: dict[str, list[Column]] = {}
    comments: dict[str, str | None] = {}
    for table, comment, column, kind in columns:
        order.setdefault(table, []).append(Column(column, str(kind), False))
        comments[table] = comment
    primary: dict[str, set[str]] = {}
    foreign: dict[str, list[tuple[str, str, str]]] = {}
    for table, kind, column, ref_table, ref_column in keys:
        if kind == "p":
            primary.setdefault(table, set()).add(column)
        else:
            foreign.setdefault(table, []).append((column, ref_table or "", ref_column or ""))
    tables, positions = [], []
    for table, cols in order.items():
        key = primary.get(table, set())
        found = Table(table, tuple(replace(c, primary_key=c.name in key) for c in cols), tuple(foreign.get(table, ())))
        declared = Declared.parse(comments[table])
        tables.append(found if declared is None else declared.apply(found))
        positions.append(None if declared is None else declared.position)
    if None not in positions:  # all imported: the source's order (DuckDB's catalog does not keep it)
        tables = [t for _, t in sorted(zip(positions, tables), key=lambda pair: pair[0])]
    return tables
