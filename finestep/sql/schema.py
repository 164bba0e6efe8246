"""A database's schema as prompt text: CREATE TABLE statements, with a few sample values per column.

Example output (``sample_values=2``)::

    CREATE TABLE singer (
      singer_id INT PRIMARY KEY, -- e.g. 1, 2
      name TEXT, -- e.g. 'Joe Sharp', 'Timbaland'
      FOREIGN KEY (stadium_id) REFERENCES stadium(stadium_id)
    );

The text is capped at ``max_chars``: when over, sample values are dropped first, then whole tables from the end
(with a comment saying how many were left out), so a prompt never silently loses its first tables.
"""

from __future__ import annotations

import os
from dataclasses import replace
from functools import lru_cache

from finestep.sql.engine import SandboxLimits
from finestep.sql.engines import engine_for
from finestep.sql.engines.catalog import Column, Table

__all__ = ["Column", "Table", "read_schema", "schema_columns", "schema_prompt"]

_SAMPLE_LIMITS = SandboxLimits(timeout_s=2.0, max_rows=50, max_bytes=2**20)


def _clip(values: tuple[object, ...], max_value_chars: int) -> tuple[object, ...]:
    clipped: list[object] = []
    for value in values:
        if isinstance(value, bytes):
            value = f"<{len(value)} bytes>"
        elif isinstance(value, str) and len(value) > max_value_chars:
            value = value[:max_value_chars] + "..."
        clipped.append(value)
    return tuple(clipped)


def read_schema(
    db_path: str | os.PathLike[str], sample_values: int = 3, max_value_chars: int = 40
) -> list[Table]:
    """The tables of database ``db_path`` (read-only; a SQLite path or another engine's database string,
    :mod:`finestep.sql.engines`), each column with up to ``sample_values`` distinct samples.

    The engine's catalog gives the tables in creation order and their columns and keys; a database made by
    ``finestep db import`` shows the declared types and keys of its SQLite source, so the text is the same on
    every engine (names aside: PostgreSQL's are lower case)."""
    engine = engine_for(db_path)
    db = os.fspath(db_path)
    conn = engine.open(db, _SAMPLE_LIMITS)
    try:
        tables = engine.catalog(conn, _SAMPLE_LIMITS)
        if sample_values <= 0:
            return tables
        return [
            replace(table, columns=tuple(
                replace(c, samples=_clip(engine.samples(conn, table.name, c, sample_values, _SAMPLE_LIMITS),
                                         max_value_chars))
                for c in table.columns
            ))
            for table in tables
        ]  # fmt: skip
    finally:
        engine.close(conn)


def _format_value(value: object) -> str:
    return "'" + value.replace("'", "''") + "'" if isinstance(value, str) else repr(value)


def _format_table(table: Table, with_samples: bool) -> str:
    entries: list[tuple[str, str]] = []  # (definition, comment)
    key_columns = [c.name for c in table.columns if c.primary_key]
    for column in table.columns:
        inline_key = column.primary_key and len(key_columns) == 1
        definition = f"{column.name} {column.type}".rstrip() + (" PRIMARY KEY" if inline_key else "")
        samples = ", ".join(_format_value(v) for v in column.samples) if with_samples else ""
        entries.append((definition, f" -- e.g. {samples}" if samples else ""))
    if len(key_columns) > 1:
        entries.append((f"PRIMARY KEY ({', '.join(key_columns)})", ""))
    entries += [(f"FOREIGN KEY ({c}) REFERENCES {t}({rc})", "") for c, t, rc in table.foreign_keys]
    lines = [
        f"  {definition}{',' if i < len(entries) - 1 else ''}{comment}" for i, (definition, comment) in enumerate(entries)
    ]
    return f"CREATE TABLE {table.name} (\n" + "\n".join(lines) + "\n);"


def _format_compact(table: Table) -> str:
    references = {column: f"{ref}.{ref_col}" for column, ref, ref_col in table.foreign_keys}
    columns = [f"{c.name} -> {references[c.name]}" if c.name in references else c.name for c in table.columns]
    # "TABLE name": the name follows a space, so a BPE tokenizer reads it as in "FROM name" (a tiny model
    # copies it; at the start of a line it was other tokens)
    return f"TABLE {table.name}({', '.join(columns)})"


def schema_prompt(
    db_path: str | os.PathLike[str],
    sample_values: int = 3,
    max_chars: int = 12_000,
    max_value_chars: int = 40,
    style: str = "create",
) -> str:
    """The schema of ``db_path`` as text for a prompt, at most ``max_chars`` characters.

    ``style="create"``: CREATE TABLE statements (with sample values unless ``sample_values=0``);
    ``style="compact"``: one line per table, ``TABLE titles(id, title, writer_id -> writers.id)``, no values
    (for small models, where every prompt token costs).
    """
    if style == "compact":
        return "\n".join(_format_compact(t) for t in read_schema(db_path, sample_values=0))[:max_chars]
    if style != "create":
        raise ValueError(f"schema style must be 'create' or 'compact', got {style!r}")
    tables = read_schema(db_path, sample_values, max_value_chars)
    for with_samples in ((True, False) if sample_values > 0 else (False,)):
        text = "\n\n".join(_format_table(t, with_samples) for t in tables)
        if len(text) <= max_chars:
            return text
    kept: list[str] = []
    size = 0
    for table in tables:
        block = _format_table(table, False)
        if size + len(block) + 80 > max_chars:
            break
        kept.append(block)
        size += len(block) + 2
    kept.append(f"-- {len(tables) - len(kept)} more tables not shown (schema over {max_chars} characters)")
    return "\n\n".join(kept)[:max_chars]


@lru_cache(maxsize=256)
def _schema_columns_cached(db: str, _version: object) -> dict[str, frozenset[str]]:
    return {t.name.lower(): frozenset(c.name.lower() for c in t.columns) for t in read_schema(db, sample_values=0)}


def schema_columns(db_path: str | os.PathLike[str]) -> dict[str, frozenset[str]]:
    """Lower-cased table name -> lower-cased column names of database ``db_path`` (cached per version of its
    content: a file's path, size and time; a server's database string)."""
    engine = engine_for(db_path)
    db = os.fspath(db_path)
    if engine.name == "sqlite":  # as before: the absolute path, size and modification time
        path = db.removeprefix("sqlite:")
        stat = os.stat(path)
        return _schema_columns_cached(os.path.abspath(path), (stat.st_size, stat.st_mtime_ns))
    version = engine.version(db)
    if version is None:
        raise FileNotFoundError(f"database not found: {db}")
    return _schema_columns_cached(db, version)
