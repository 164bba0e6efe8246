"""The engine registry: one definition per database engine, each behind the same sandbox, environment and evaluator.

A database is named by one string everywhere a path is accepted:

- a SQLite file, as always (``path/to/db.sqlite``; ``sqlite:PATH`` also works): engine ``sqlite``, the default;
- ``duckdb:PATH``: a DuckDB file (the ``duckdb`` package), opened read-only;
- ``postgresql://USER@HOST:PORT/DBNAME`` (libpq's URI form, so a Unix-socket server is
  ``postgresql://USER@/DB?host=DIR&port=N``): a real PostgreSQL server through ``psycopg`` 3.

Each engine is one :class:`Engine` subclass registered with :func:`register_engine`: how to open a database
read-only, run one query within a :class:`~finestep.sql.engine.SandboxLimits`, classify its errors and stop it at
its deadline, and read its catalog (tables, columns, keys and sample values: the schema prompt,
:mod:`finestep.sql.schema`). :func:`engine_for` picks the engine of a database string. The engine modules import their driver
(``duckdb``, ``psycopg``) only when a database of theirs is opened, so a SQLite-only process never loads them.
"""

from __future__ import annotations

import importlib
import os
import time
from collections.abc import Sequence
from typing import Any, ClassVar

from finestep.sql.engine import ErrorKind, ExecutionResult, SandboxLimits
from finestep.sql.engines.catalog import Column, Table

__all__ = [
    "ENGINE_MODULES",
    "Engine",
    "EngineError",
    "database_for",
    "database_name",
    "engine_for",
    "engine_names",
    "execute",
    "execute_on",
    "get_engine",
    "is_engine_url",
    "quote_identifier",
    "register_engine",
]

# The built-in engines, imported on first look-up (their drivers are imported later still, on first open).
ENGINE_MODULES = ("finestep.sql.engines.sqlite", "finestep.sql.engines.duckdb", "finestep.sql.engines.postgres")
_ENGINES: dict[str, Engine] = {}
_loaded = False


class EngineError(RuntimeError):
    """A database cannot be opened as the sandbox requires (missing driver, unsafe role, bad URL)."""


def quote_identifier(name: str) -> str:
    """``name`` as a double-quoted SQL identifier (the same on every engine)."""
    return '"' + name.replace('"', '""') + '"'


class Engine:
    """How the sandbox uses one database engine. Subclasses override the methods below.

    Attributes:
        name: the registry key (``sqlite``, ``duckdb``, ``postgres``).
        title: the engine as a prompt names it (``SQLite``, ``DuckDB``, ``PostgreSQL``).
        prefixes: the prefixes of the database strings it accepts (the default engine has none).
        caps_address_space_per_open: a worker re-caps its address space after opening a database of this engine
            (DuckDB reserves hundreds of MB of address space per database it opens).
    """

    name: ClassVar[str] = ""
    title: ClassVar[str] = ""
    prefixes: ClassVar[tuple[str, ...]] = ()
    caps_address_space_per_open: ClassVar[bool] = False

    def accepts(self, db: str) -> bool:
        """Whether ``db`` names a database of this engine."""
        return db.startswith(self.prefixes)

    def version(self, db: str) -> tuple[Any, ...] | None:
        """What identifies the content of ``db`` for the result cache; ``None`` when it cannot be read."""
        raise NotImplementedError

    def exists(self, db: str) -> bool:
        """Whether ``db`` can be looked for at all (a file engine: the file exists; a server: assumed)."""
        return True

    def open(self, db: str, limits: SandboxLimits) -> Any:
        """A read-only connection to ``db`` under ``limits``; ``FileNotFoundError`` when it does not exist,
        :class:`EngineError` (or the driver's error) when it cannot be opened safely. The caller closes it."""
        raise NotImplementedError

    def run(self, conn: Any, sql: str, limits: SandboxLimits) -> ExecutionResult:
        """One query on a connection from :meth:`open`, within its deadline and caps; never raises for a bad
        query (``KeyboardInterrupt`` aside)."""
        raise NotImplementedError

    def close(self, conn: Any) -> None:
        """Close a connection from :meth:`open`."""
        conn.close()

    def prepare_process(self, limits: SandboxLimits) -> None:
        """Process-wide limits a worker sets once, before it caps its address space (SQLite's heap limit)."""

    def database(self, prefix: str, db_id: str) -> str:
        """The database string of benchmark database ``db_id`` under ``prefix`` (``finestep eval --engine``)."""
        raise NotImplementedError

    def catalog(self, conn: Any, limits: SandboxLimits) -> list[Table]:
        """The tables of a database open through :meth:`open`, in the order they were created, each with its columns
        in order, its primary key and its foreign keys (no sample values)."""
        raise NotImplementedError

    def sample_sql(self, table: str, column: Column, k: int) -> str:
        """A query for up to ``k`` distinct non-null values of ``column``, in the order they first come among the first
        1,000 non-null rows the engine scans (a hash ``DISTINCT`` would lose that order, hence the numbering; the
        inner ``LIMIT`` bounds the scan, so a table of millions of rows costs no more than a small one); with a
        ``sample_order``, among the first 1,000 in that order (NULLs first, as in a SQLite index)."""
        col, name = quote_identifier(column.name), quote_identifier(table)
        if column.sample_order:
            terms = ", ".join(f"{quote_identifier(c)} {'DESC NULLS LAST' if desc else 'ASC NULLS FIRST'}"
                              for c, desc in column.sample_order)  # fmt: skip
            inner = (f"SELECT {col} AS v, row_number() OVER (ORDER BY {terms}, {col}) AS n FROM {name} "
                     f"WHERE {col} IS NOT NULL")  # fmt: skip
            return f"SELECT v FROM ({inner}) AS s WHERE n <= 1000 GROUP BY v ORDER BY min(n) LIMIT {int(k)}"
        return (f"SELECT v FROM (SELECT v, row_number() OVER () AS n FROM (SELECT {col} AS v FROM {name} "
                f"WHERE {col} IS NOT NULL LIMIT 1000) AS s) AS r GROUP BY v ORDER BY min(n) LIMIT {int(k)}")  # fmt: skip

    def samples(self, conn: Any, table: str, column: Column, k: int, limits: SandboxLimits) -> tuple[object, ...]:
        """Up to ``k`` sample values of ``column`` (:meth:`sample_sql`); none when the query fails (a time limit, an
        odd column: the schema is still useful without them)."""
        result = self.run(conn, self.sample_sql(table, column, k), limits)
        return tuple(row[0] for row in result.rows) if result.ok else ()


def register_engine(cls: type[Engine]) -> type[Engine]:
    """Class decorator: register one instance of ``cls`` under ``cls.name``."""
    if not cls.name:
        raise ValueError(f"{cls.__name__}: an engine needs a name")
    _ENGINES[cls.name] = cls()
    return cls


def _load() -> None:
    global _loaded
    if not _loaded:
        for module in ENGINE_MODULES:
            importlib.import_module(module)
        _loaded = True


def engine_names() -> list[str]:
    """The registered engines' names."""
    _load()
    return sorted(_ENGINES)


def get_engine(name: str) -> Engine:
    """The engine registered as ``name``; ``ValueError`` naming the known ones otherwise."""
    _load()
    try:
        return _ENGINES[name]
    except KeyError:
        raise ValueError(f"unknown engine {name!r}; known: {', '.join(sorted(_ENGINES))}") from None


def engine_for(db: str | os.PathLike[str]) -> Engine:
    """The engine of database string ``db``: the one whose prefix it starts with, else SQLite."""
    _load()
    text = os.fspath(db)
    for engine in _ENGINES.values():
        if engine.prefixes and engine.accepts(text):
            return engine
    return _ENGINES["sqlite"]


def is_engine_url(db: object) -> bool:
    """Whether ``db`` is a string naming a database of an engine other than SQLite's plain paths."""
    return isinstance(db, str) and db.startswith(("duckdb:", "postgresql://", "postgres://", "sqlite:"))


def database_name(db: str | os.PathLike[str]) -> str:
    """``db`` as the sandbox keys it: a path as given, a URL unchanged."""
    return os.fspath(db)


def database_for(prefix: str, db_id: str) -> str:
    """The database of benchmark database ``db_id`` on the engine named by ``prefix``: ``duckdb:DIR`` ->
    ``duckdb:DIR/<db_id>.duckdb``; ``postgresql://USER@HOST/?...`` -> the URL with database ``db_id``; a folder
    of SQLite files in Spider's layout -> ``DIR/<db_id>/<db_id>.sqlite``."""
    return engine_for(prefix).database(prefix, db_id)


def execute_on(
    db: str | os.PathLike[str], queries: Sequence[str], limits: SandboxLimits | None = None
) -> list[ExecutionResult]:
    """Run ``queries`` one after the other on one read-only connection to ``db``, in this process (trusted
    SQL: no hard deadline or memory bound; untrusted SQL goes through :class:`~finestep.sql.executor.SqlSandbox`)."""
    engine = engine_for(db)
    limits = limits or SandboxLimits()
    if engine.name == "sqlite":  # SQLite's own path, unchanged
        from finestep.sql.engine import execute_on as sqlite_execute_on

        return sqlite_execute_on(db, queries, limits)
    start = time.perf_counter()
    try:
        conn = engine.open(os.fspath(db), limits)
    except FileNotFoundError as exc:
        return [ExecutionResult(error_kind=ErrorKind.MISSING_DATABASE, error=str(exc),
                                elapsed_s=time.perf_counter() - start)] * len(queries)  # fmt: skip
    except Exception as exc:  # noqa: BLE001 - the driver's connection errors, an unsafe role: one clear answer
        message = f"cannot open database {db}: {exc}"
        return [ExecutionResult(error_kind=ErrorKind.RUNTIME, error=message,
                                elapsed_s=time.perf_counter() - start)] * len(queries)  # fmt: skip
    try:
        return [engine.run(conn, sql, limits) for sql in queries]
    finally:
        engine.close(conn)


def execute(db: str | os.PathLike[str], sql: str, limits: SandboxLimits | None = None) -> ExecutionResult:
    """One query on ``db`` in this process (see :func:`execute_on`)."""
    return execute_on(db, [sql], limits)[0]
