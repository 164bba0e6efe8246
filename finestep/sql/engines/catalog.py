"""What an engine's catalog says of a database: its tables, columns and keys (the records of the schema prompt),
and the *declared schema* that ``finestep db import`` leaves in each copied table's comment.

An import changes column types (SQLite's ``INTEGER``/``REAL``/``TEXT`` become ``BIGINT``/``DOUBLE``/``VARCHAR`` on
DuckDB, ``BIGINT``/``DOUBLE PRECISION``/``TEXT`` on PostgreSQL), cannot always keep the keys (DuckDB cannot add
foreign keys to filled tables; a key the data violates is not kept), and DuckDB's catalog forgets the order in
which tables were created. So that a model sees the same schema text on every engine, the importer writes into
each table's comment (``COMMENT ON TABLE t IS 'finestep:{...}'``, in the target's names) what SQLite's catalog
says: the table's position, its declared types, primary key and foreign keys, and, for a column whose sample
values SQLite reads from an index (sorted by the index, not in storage order), that index's columns.
:func:`Declared.apply` puts them over what the engine's catalog says. A database not made by the import shows its
catalog's own types and keys, its tables in the catalog's order.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from typing import Any

__all__ = ["DECLARED_MARK", "Column", "Declared", "Table"]

DECLARED_MARK = "finestep:"


@dataclass(frozen=True)
class Column:
    """One column: name, declared type, primary-key flag and a few distinct non-null sample values.

    ``sample_order``: the order in which the samples are read, as ``(column, descending)`` terms; empty: the order
    the engine stores the rows in (an imported column that SQLite reads through an index has that index's).
    """

    name: str
    type: str
    primary_key: bool
    samples: tuple[object, ...] = ()
    sample_order: tuple[tuple[str, bool], ...] = ()


@dataclass(frozen=True)
class Table:
    """One table: its columns and its foreign keys as ``(column, ref_table, ref_column)``."""

    name: str
    columns: tuple[Column, ...]
    foreign_keys: tuple[tuple[str, str, str], ...] = field(default_factory=tuple)


@dataclass(frozen=True)
class Declared:
    """A source table's declared schema as the import records it (module docstring), in the target's names.

    Attributes:
        position: the table's place among the source's tables (SQLite's ``sqlite_master`` order).
        types: column -> declared type (``""`` when the source declared none).
        primary_key: the columns SQLite flags as the primary key.
        foreign_keys: ``(column, ref_table, ref_column)`` in SQLite's ``foreign_key_list`` order.
        sample_order: column -> the ``(column, descending)`` terms of the index SQLite samples it through.
    """

    position: int
    types: dict[str, str]
    primary_key: tuple[str, ...] = ()
    foreign_keys: tuple[tuple[str, str, str], ...] = ()
    sample_order: dict[str, tuple[tuple[str, bool], ...]] = field(default_factory=dict)

    def comment(self) -> str:
        """The table comment that records it."""
        doc = {"position": self.position, "types": self.types, "primary_key": list(self.primary_key),
               "foreign_keys": [list(fk) for fk in self.foreign_keys],
               "sample_order": {c: [[name, desc] for name, desc in terms] for c, terms in self.sample_order.items()}}  # fmt: skip
        return DECLARED_MARK + json.dumps(doc, ensure_ascii=False, separators=(",", ":"))

    @classmethod
    def parse(cls, comment: str | None) -> Declared | None:
        """The record in a table comment, or ``None`` when the comment is not one (or is damaged)."""
        if not comment or not comment.startswith(DECLARED_MARK):
            return None
        try:
            doc: Any = json.loads(comment[len(DECLARED_MARK):])
            return cls(
                int(doc["position"]), {str(k): str(v) for k, v in doc["types"].items()},
                tuple(str(c) for c in doc.get("primary_key", ())),
                tuple((str(a), str(b), str(c)) for a, b, c in doc.get("foreign_keys", ())),
                {str(c): tuple((str(n), bool(d)) for n, d in terms) for c, terms in doc.get("sample_order", {}).items()},
            )  # fmt: skip
        except (ValueError, KeyError, TypeError, AttributeError):
            return None

    def apply(self, table: Table) -> Table:
        """``table`` as the catalog gave it, with these declared types, keys and sample orders (unchanged when they
        do not name exactly its columns: the table was altered since the import)."""
        if set(self.types) != {c.name for c in table.columns}:
            return table
        key = set(self.primary_key)
        columns = tuple(replace(c, type=self.types[c.name], primary_key=c.name in key,
                                sample_order=self.sample_order.get(c.name, ())) for c in table.columns)  # fmt: skip
        return Table(table.name, columns, self.foreign_keys)
