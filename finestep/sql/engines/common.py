"""What the engines other than SQLite share: the text checks before a query runs, a deadline timer, value
conversion to SQLite's Python types, and the capped fetch."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from finestep.sql.engine import ErrorKind, ExecutionResult, SandboxLimits, _fetch_capped, strip_sql

__all__ = ["Deadline", "ValueCursor", "checked_text", "failed", "fetch_result", "plain_value"]


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


class Deadline:
    """Calls ``stop()`` from a timer thread when ``timeout_s`` passes, unless cancelled first (``with``). Leaving
    the ``with`` block waits for a ``stop()`` under way, so a late cancel never reaches the next query."""

    def __init__(self, timeout_s: float, stop: Callable[[], Any]) -> None:
        self.fired = False

        def fire() -> None:
            self.fired = True
            try:
                stop()
            except Exception:  # noqa: BLE001, S110 - the connection may be gone; the supervisor's kill remains
                pass

        self._timer = threading.Timer(timeout_s, fire)
        self._timer.daemon = True

    def __enter__(self) -> Deadline:  # noqa: PYI034
        self._timer.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._timer.cancel()
        self._timer.join()


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
