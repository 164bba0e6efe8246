"""One SQLWorld database: a domain instantiated with naming variants, an encoding style and random rows.

:func:`instantiate` is pure (a :class:`random.Random` in, a :class:`DbInstance` out); :func:`write_database`
is the only I/O. Row values come from small word lists, so the same seed always gives the same rows and,
written by the same SQLite library, the same bytes.
"""

from __future__ import annotations

import random
import sqlite3
from dataclasses import dataclass
from pathlib import Path

from finestep.data.sqlworld.domains import CATEGORIES, ColumnSpec, Domain, TableSpec, encode

__all__ = ["ColumnInst", "DbInstance", "TableInst", "instantiate", "write_database"]

# fmt: off
_FIRST = ("Ann", "Bob", "Carla", "Dan", "Eva", "Frank", "Gina", "Hugo", "Ivy", "Jack", "Kim", "Leo", "Mia",
    "Nick", "Olga", "Paul", "Rosa", "Sam", "Tina", "Victor", "Wendy", "Yuri")
_LAST = ("Adams", "Brown", "Clark", "Diaz", "Evans", "Fischer", "Garcia", "Hill", "Ito", "Jones", "Khan",
    "Lopez", "Moore", "Novak", "Ortiz", "Park", "Reed", "Silva")
_ADJ = ("Red", "Blue", "Green", "Silver", "Golden", "Quiet", "Swift", "Bright", "Dark", "Little", "Grand",
    "Wild", "Old", "Happy", "Iron", "Crystal")
_THING = ("Lamp", "Chair", "Kettle", "Clock", "Mug", "Desk", "Brush", "Bottle", "Basket", "Radio",
    "Candle", "Pillow", "Scarf", "Jacket", "Helmet", "Tent")
_BOOK = ("River", "Garden", "Shadow", "Empire", "Voyage", "Winter", "Secret", "Harbor", "Mirror", "Forest",
    "Storm", "Castle")
_ANIMAL = ("Lions", "Tigers", "Wolves", "Eagles", "Bears", "Hawks", "Sharks", "Falcons", "Rams", "Foxes")
_SUBJECT = ("Algebra", "Poetry", "Genetics", "Statistics", "Painting", "Robotics", "Ethics", "Accounting",
    "Optics", "Ecology", "Drama", "Logic")
_COURSE_LEVEL = ("Intro to", "Advanced", "Applied", "Topics in")
# fmt: on


def _name_value(generator: str, rng: random.Random) -> str:
    """A random value of a ``name`` column."""
    if generator == "person":
        return f"{rng.choice(_FIRST)} {rng.choice(_LAST)}"
    if generator == "product":
        return f"{rng.choice(_ADJ)} {rng.choice(_THING)}"
    if generator == "book":
        return f"The {rng.choice(_ADJ)} {rng.choice(_BOOK)}"
    if generator == "team":
        return f"{rng.choice(_ADJ)} {rng.choice(_ANIMAL)}"
    if generator == "course":
        return f"{rng.choice(_COURSE_LEVEL)} {rng.choice(_SUBJECT)}"
    if generator == "plate":
        letters = "".join(rng.choice("ABCDEFGHKLMNPRSTXZ") for _ in range(2))
        return f"{letters}-{rng.randrange(1000, 10000)}"
    raise ValueError(f"unknown name generator {generator!r}")


@dataclass(frozen=True)
class ColumnInst:
    """A column as it appears in one database: its template and its SQL name."""

    spec: ColumnSpec
    name: str

    @property
    def phrase(self) -> str:
        """How a question names the column (``unit_price`` -> ``unit price``)."""
        return self.name.replace("_", " ")


@dataclass(frozen=True)
class TableInst:
    """A table as it appears in one database: SQL name, the nouns questions use, and its columns."""

    spec: TableSpec
    name: str
    singular: str
    plural: str
    columns: tuple[ColumnInst, ...]

    def column(self, key: str) -> ColumnInst:
        """The column whose template key is ``key``."""
        for column in self.columns:
            if column.spec.key == key:
                return column
        raise KeyError(f"{self.name} has no column {key!r}")

    def of_kind(self, kind: str) -> list[ColumnInst]:
        """The columns whose template is of ``kind`` (``int``, ``real``, ``cat``, ...)."""
        return [c for c in self.columns if c.spec.kind == kind]

    @property
    def numeric(self) -> list[ColumnInst]:
        """The non-key numeric columns."""
        return [c for c in self.columns if c.spec.kind in ("int", "real")]

    @property
    def name_column(self) -> ColumnInst | None:
        """The column naming a row, if the table has one."""
        names = self.of_kind("name")
        return names[0] if names else None


@dataclass(frozen=True)
class DbInstance:
    """A generated database before it is written.

    Attributes:
        db_id: the database's name.
        domain: the domain's name.
        style: how categorical values are stored (see :data:`~finestep.data.sqlworld.domains.STYLES`).
        tables: parents before children.
        rows: table name -> rows, in column order.
        present: ``(table, column)`` -> the ``(surface, stored)`` values that occur in it, in category order.
    """

    db_id: str
    domain: str
    style: str
    tables: tuple[TableInst, ...]
    rows: dict[str, list[tuple[object, ...]]]
    present: dict[tuple[str, str], tuple[tuple[str, str], ...]]

    def table(self, key: str) -> TableInst:
        """The table whose template key is ``key``."""
        for table in self.tables:
            if table.spec.key == key:
                return table
        raise KeyError(f"{self.db_id} has no table {key!r}")

    def values(self, table: TableInst, column: ColumnInst) -> list[object]:
        """The stored values of one column, row by row."""
        index = table.columns.index(column)
        return [row[index] for row in self.rows[table.name]]

    def foreign_keys(self) -> list[tuple[TableInst, ColumnInst, TableInst]]:
        """``(child, fk column, parent)`` for every foreign key."""
        return [(t, c, self.table(c.spec.ref)) for t in self.tables for c in t.of_kind("fk")]


def _pick_tables(domain: Domain, rng: random.Random) -> tuple[TableInst, ...]:
    tables: dict[str, TableInst] = {}
    for spec in domain.tables:
        name, singular, plural = rng.choice(spec.names)
        columns = []
        used: set[str] = set()
        for col in spec.columns:
            if col.optional and rng.random() < 0.3:
                continue
            if col.kind == "fk":
                col_name = f"{tables[col.ref].singular}_id"
            else:
                choices = [n for n in col.names if n not in used] or list(col.names)
                col_name = rng.choice(choices)
            used.add(col_name)
            columns.append(ColumnInst(col, col_name))
        tables[spec.key] = TableInst(spec, name, singular, plural, tuple(columns))
    return tuple(tables.values())


def _row_value(column: ColumnInst, i: int, parents: dict[str, int], cat_pool: list[str], weights: list[float],
               rng: random.Random) -> object:  # fmt: skip
    spec = column.spec
    if spec.kind == "id":
        return i + 1
    if spec.kind == "fk":
        return rng.randint(1, parents[spec.ref])
    if spec.kind == "int":
        return rng.randint(int(spec.lo), int(spec.hi))
    if spec.kind == "real":
        return round(rng.uniform(spec.lo, spec.hi), 2)
    if spec.kind == "name":
        return _name_value(spec.ref, rng)
    return rng.choices(cat_pool, weights)[0]


def instantiate(db_id: str, domain: Domain, style: str, rng: random.Random) -> DbInstance:
    """A database of ``domain`` with random naming variants and rows, categorical values stored in ``style``."""
    tables = _pick_tables(domain, rng)
    rows: dict[str, list[tuple[object, ...]]] = {}
    present: dict[tuple[str, str], tuple[tuple[str, str], ...]] = {}
    counts: dict[str, int] = {}
    for table in tables:
        n = rng.randint(*table.spec.rows)
        pools: dict[str, tuple[list[str], list[float]]] = {}
        for column in table.of_kind("cat"):
            values = list(CATEGORIES[column.spec.ref].values)
            chosen = sorted(rng.sample(range(len(values)), rng.randint(min(4, len(values)), len(values))))
            stored = [encode(*values[k], style) for k in chosen]
            pools[column.name] = (stored, [0.3 + rng.random() for _ in chosen])
        table_rows = []
        for i in range(n):
            row = []
            for column in table.columns:
                pool, weights = pools.get(column.name, ([], []))
                row.append(_row_value(column, i, counts, pool, weights, rng))
            table_rows.append(tuple(row))
        counts[table.spec.key] = n
        rows[table.name] = table_rows
        for column in table.of_kind("cat"):
            index = table.columns.index(column)
            occurring = {r[index] for r in table_rows}
            present[(table.name, column.name)] = tuple(
                (surface, encode(surface, code, style))
                for surface, code in CATEGORIES[column.spec.ref].values
                if encode(surface, code, style) in occurring
            )
    return DbInstance(db_id, domain.name, style, tables, rows, present)


def create_statement(table: TableInst, parents: dict[str, TableInst]) -> str:
    """The CREATE TABLE statement of one table (foreign keys as table constraints)."""
    parts = [
        f"{c.name} {c.spec.sql_type}" + (" PRIMARY KEY" if c.spec.kind == "id" else "") for c in table.columns
    ]
    parts += [
        f"FOREIGN KEY ({c.name}) REFERENCES {parents[c.spec.ref].name}(id)" for c in table.of_kind("fk")
    ]
    return f"CREATE TABLE {table.name} ({', '.join(parts)})"


def write_database(path: Path, db: DbInstance) -> Path:
    """Write ``db`` as a new SQLite file at ``path`` (which must not exist); the same input gives the same bytes."""
    if path.exists():
        raise FileExistsError(path)
    conn = sqlite3.connect(path)
    try:
        conn.execute("PRAGMA journal_mode = OFF")
        conn.execute("PRAGMA synchronous = OFF")
        parents = {t.spec.key: t for t in db.tables}
        with conn:
            for table in db.tables:
                conn.execute(create_statement(table, parents))
                marks = ", ".join("?" * len(table.columns))
                conn.executemany(f"INSERT INTO {table.name} VALUES ({marks})", db.rows[table.name])
    finally:
        conn.close()
    return path
