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
import sqlite3
from dataclasses import dataclass, field
from functools import lru_cache

from finestep.sql.executor import SandboxLimits, open_readonly

__all__ = ["Column", "Table", "read_schema", "schema_columns", "schema_prompt"]

_SAMPLE_LIMITS = SandboxLimits(timeout_s=2.0, max_rows=50, max_bytes=2**20)


@dataclass(frozen=True)
class Column:
    """One column: name, declared type, primary-key flag and a few distinct non-null sample values."""

    name: str
    type: str
    primary_key: bool
    samples: tuple[object, ...] = ()


@dataclass(frozen=True)
class Table:
    """One table: its columns and its foreign keys as ``(column, ref_table, ref_column)``."""

    name: str
    columns: tuple[Column, ...]
    foreign_keys: tuple[tuple[str, str, str], ...] = field(default_factory=tuple)


def _quote(identifier: str) -> str:
    return '"' + identifier.replace('"', '""') + '"'


def _samples(conn: sqlite3.Connection, table: str, column: str, k: int, max_value_chars: int) -> tuple[object, ...]:
    # The inner LIMIT bounds the scan, so a table of millions of rows costs no more than a small one.
    col = _quote(column)
    query = (
        f"SELECT DISTINCT {col} FROM (SELECT {col} FROM {_quote(table)} WHERE {col} IS NOT NULL LIMIT 1000) LIMIT {k}"
    )
    try:
        values = [row[0] for row in conn.execute(query).fetchall()]
    except sqlite3.Error:  # a time limit or an odd column; the schema is still useful without samples
        return ()
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
    """The tables of ``db_path`` (read-only), each column with up to ``sample_values`` distinct samples."""
    conn = open_readonly(db_path, _SAMPLE_LIMITS)
    try:
        names = [
            row[0]
            for row in conn.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY rowid"
            )
        ]
        tables = []
        for name in names:
            info = conn.execute(f"PRAGMA table_info({_quote(name)})").fetchall()
            columns = tuple(
                Column(
                    name=col[1],
                    type=col[2] or "",
                    primary_key=bool(col[5]),
                    samples=_samples(conn, name, col[1], sample_values, max_value_chars) if sample_values > 0 else (),
                )
                for col in info
            )
            keys = conn.execute(f"PRAGMA foreign_key_list({_quote(name)})").fetchall()
            foreign = tuple((fk[3], fk[2], fk[4] or "") for fk in keys)
            tables.append(Table(name, columns, foreign))
        return tables
    finally:
        conn.close()


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
def _schema_columns_cached(path: str, _size: int, _mtime_ns: int) -> dict[str, frozenset[str]]:
    return {t.name.lower(): frozenset(c.name.lower() for c in t.columns) for t in read_schema(path, sample_values=0)}


def schema_columns(db_path: str | os.PathLike[str]) -> dict[str, frozenset[str]]:
    """Lower-cased table name -> lower-cased column names of ``db_path`` (cached per file version)."""
    stat = os.stat(db_path)
    return _schema_columns_cached(os.path.abspath(db_path), stat.st_size, stat.st_mtime_ns)
