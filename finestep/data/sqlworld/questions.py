"""Question templates of SQLWorld, in three tiers, and their verification against the database.

SQL is written in one canonical style: upper-case keywords, lower-case aggregate functions, ``T1`` for the
child table and ``T2`` for the parent in joins, string literals in single quotes::

    SELECT count(*) FROM orders WHERE amount > 250
    SELECT count(*) FROM customers WHERE state = 'CA'
    SELECT sum(T1.amount) FROM orders T1 JOIN customers T2 ON T1.customer_id = T2.id WHERE T2.state = 'CA'

- ``tier1`` (filter/count): numeric filters and aggregates, no categorical value: no probe is needed.
- ``tier2`` (value probe): a filter on a categorical column, named in the question by its surface form.
- ``tier3`` (join + aggregate + probe): the same filter on the other side of a foreign key.

A template draws a :class:`Draft` (question and SQL with a placeholder for the categorical literal);
:func:`realize` checks it on the database (non-empty, no NULL, not a zero count, unique top row where it
orders, at most a dozen rows) and fills the metadata an expert needs. Rejected drafts are redrawn.
"""

from __future__ import annotations

import random
import re
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass

from finestep.data.sqlworld.generate import ColumnInst, DbInstance, TableInst

__all__ = ["LIT", "TEMPLATES", "Draft", "Probe", "Question", "misspell", "realize", "sql_literal"]

LIT = "{lit}"  # where a draft's SQL takes the categorical literal
MAX_LIST_ROWS = 12


def sql_literal(value: str) -> str:
    """``value`` as a single-quoted SQL string literal."""
    return "'" + value.replace("'", "''") + "'"


@dataclass(frozen=True)
class Probe:
    """The categorical filter of a question: where its value is stored, as said and as stored."""

    table: str
    column: str
    surface: str
    stored: str

    @property
    def sql(self) -> str:
        """The query that shows the stored values."""
        return f"SELECT DISTINCT {self.column} FROM {self.table}"

    @property
    def required(self) -> bool:
        """Whether the question's surface form differs from the stored value (so only a probe finds it)."""
        return self.surface != self.stored


@dataclass(frozen=True)
class Draft:
    """A question not yet checked on the database.

    Attributes:
        template: the template's name.
        tier: ``tier1``, ``tier2`` or ``tier3``.
        question: the question text.
        sql: the gold SQL, with :data:`LIT` where the categorical literal goes (tiers 2 and 3).
        table: the table the question is mainly about.
        probe: the categorical filter (tiers 2 and 3), else ``None``.
        columns: ``(table, column)`` references a failing variant may misspell.
        unique_check: SQL whose single value must be 1 for the answer to be unambiguous, or ``None``.
        max_rows: the most rows the answer may have.
    """

    template: str
    tier: str
    question: str
    sql: str
    table: TableInst
    probe: Probe | None
    columns: tuple[tuple[TableInst, ColumnInst], ...]
    unique_check: str | None = None
    max_rows: int = 1


@dataclass(frozen=True)
class Question:
    """A verified question: gold SQL and what an expert (or an analysis) needs to know about it."""

    template: str
    tier: str
    question: str
    gold_sql: str
    probe: Probe | None
    skip_probe_sql: str
    failing_sql: str
    misspelling: tuple[str, str]
    failing_probe_sql: str | None
    distractor_probe_sql: str


# --- templates --------------------------------------------------------------------------------------------


def _fmt(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else f"{x:g}"


def _threshold(db: DbInstance, table: TableInst, column: ColumnInst, rng: random.Random) -> str:
    """A round number near a random stored value of a numeric column."""
    step = column.spec.step
    value = float(rng.choice(db.values(table, column)))  # type: ignore[arg-type]
    return _fmt(round(round(value / step) * step, 6))


def _probe(db: DbInstance, table: TableInst, column: ColumnInst, rng: random.Random) -> tuple[Probe, str]:
    """A random value occurring in a categorical column, and the phrase restricting a question to it."""
    surface, stored = rng.choice(db.present[(table.name, column.name)])
    phrase = column.spec.pred.format(v=surface, col=column.phrase)
    return Probe(table.name, column.name, surface, stored), phrase


def _numeric_table(
    db: DbInstance, rng: random.Random, named: bool = False
) -> tuple[TableInst, ColumnInst] | None:
    tables = [t for t in db.tables if t.numeric and (t.name_column is not None or not named)]
    if not tables:
        return None
    table = rng.choice(tables)
    return table, rng.choice(table.numeric)


def t1_count_above(db: DbInstance, rng: random.Random, below: bool = False) -> Draft | None:
    """How many {plural} have {num} above/below {x}?"""
    picked = _numeric_table(db, rng)
    if picked is None:
        return None
    table, num = picked
    x = _threshold(db, table, num, rng)
    word, op = ("below", "<") if below else ("above", ">")
    return Draft(
        "t1_count_below" if below else "t1_count_above", "tier1",
        f"How many {table.plural} have {num.phrase} {word} {x}?",
        f"SELECT count(*) FROM {table.name} WHERE {num.name} {op} {x}", table, None, ((table, num),),
    )  # fmt: skip


def t1_count_below(db: DbInstance, rng: random.Random) -> Draft | None:
    """How many {plural} have {num} below {x}?"""
    return t1_count_above(db, rng, below=True)


def t1_average(db: DbInstance, rng: random.Random) -> Draft | None:
    """What is the average {num} of all {plural}?"""
    picked = _numeric_table(db, rng)
    if picked is None:
        return None
    table, num = picked
    return Draft("t1_average", "tier1", f"What is the average {num.phrase} of all {table.plural}?",
                 f"SELECT avg({num.name}) FROM {table.name}", table, None, ((table, num),))  # fmt: skip


def t1_list_above(db: DbInstance, rng: random.Random) -> Draft | None:
    """List the {name} of {plural} with {num} above {x}."""
    picked = _numeric_table(db, rng, named=True)
    if picked is None:
        return None
    table, num = picked
    name = table.name_column
    assert name is not None
    x = _threshold(db, table, num, rng)
    return Draft(
        "t1_list_above", "tier1", f"List the {name.phrase} of {table.plural} with {num.phrase} above {x}.",
        f"SELECT {name.name} FROM {table.name} WHERE {num.name} > {x}", table, None, ((table, num), (table, name)),
        max_rows=MAX_LIST_ROWS,
    )  # fmt: skip


def t1_top(db: DbInstance, rng: random.Random) -> Draft | None:
    """Which {singular} has the highest {num}?"""
    picked = _numeric_table(db, rng, named=True)
    if picked is None:
        return None
    table, num = picked
    name = table.name_column
    assert name is not None
    check = f"SELECT count(*) FROM {table.name} WHERE {num.name} = (SELECT max({num.name}) FROM {table.name})"
    return Draft(
        "t1_top", "tier1", f"Which {table.singular} has the highest {num.phrase}?",
        f"SELECT {name.name} FROM {table.name} ORDER BY {num.name} DESC LIMIT 1", table, None,
        ((table, num), (table, name)), unique_check=check,
    )  # fmt: skip


def _cat_table(db: DbInstance, rng: random.Random, need: str = "") -> tuple[TableInst, ColumnInst] | None:
    """A table with a categorical column (and a numeric or name column when ``need`` says so)."""
    tables = [
        t for t in db.tables
        if t.of_kind("cat") and (need != "numeric" or t.numeric) and (need != "name" or t.name_column is not None)
    ]  # fmt: skip
    if not tables:
        return None
    table = rng.choice(tables)
    return table, rng.choice(table.of_kind("cat"))


def t2_count(db: DbInstance, rng: random.Random) -> Draft | None:
    """How many {plural} {pred} are there?"""
    picked = _cat_table(db, rng)
    if picked is None:
        return None
    table, cat = picked
    probe, pred = _probe(db, table, cat, rng)
    return Draft("t2_count", "tier2", f"How many {table.plural} {pred} are there?",
                 f"SELECT count(*) FROM {table.name} WHERE {cat.name} = {LIT}", table, probe, ((table, cat),))  # fmt: skip


def t2_list(db: DbInstance, rng: random.Random) -> Draft | None:
    """List the {name} of {plural} {pred}."""
    picked = _cat_table(db, rng, "name")
    if picked is None:
        return None
    table, cat = picked
    name = table.name_column
    assert name is not None
    probe, pred = _probe(db, table, cat, rng)
    return Draft(
        "t2_list", "tier2", f"List the {name.phrase} of {table.plural} {pred}.",
        f"SELECT {name.name} FROM {table.name} WHERE {cat.name} = {LIT}", table, probe, ((table, cat), (table, name)),
        max_rows=MAX_LIST_ROWS,
    )  # fmt: skip


def _t2_numeric(db: DbInstance, rng: random.Random, agg: str) -> Draft | None:
    picked = _cat_table(db, rng, "numeric")
    if picked is None:
        return None
    table, cat = picked
    num = rng.choice(table.numeric)
    probe, pred = _probe(db, table, cat, rng)
    refs = ((table, cat), (table, num))
    if agg == "count_above":
        x = _threshold(db, table, num, rng)
        return Draft(
            "t2_count_above", "tier2", f"How many {table.plural} {pred} have {num.phrase} above {x}?",
            f"SELECT count(*) FROM {table.name} WHERE {cat.name} = {LIT} AND {num.name} > {x}", table, probe, refs,
        )  # fmt: skip
    word = {"avg": "average", "max": "highest"}[agg]
    return Draft(f"t2_{agg}", "tier2", f"What is the {word} {num.phrase} of {table.plural} {pred}?",
                 f"SELECT {agg}({num.name}) FROM {table.name} WHERE {cat.name} = {LIT}", table, probe, refs)  # fmt: skip


def t2_average(db: DbInstance, rng: random.Random) -> Draft | None:
    """What is the average {num} of {plural} {pred}?"""
    return _t2_numeric(db, rng, "avg")


def t2_max(db: DbInstance, rng: random.Random) -> Draft | None:
    """What is the highest {num} of {plural} {pred}?"""
    return _t2_numeric(db, rng, "max")


def t2_count_above(db: DbInstance, rng: random.Random) -> Draft | None:
    """How many {plural} {pred} have {num} above {x}?"""
    return _t2_numeric(db, rng, "count_above")


def _join(child: TableInst, fk: ColumnInst, parent: TableInst) -> str:
    return f"FROM {child.name} T1 JOIN {parent.name} T2 ON T1.{fk.name} = T2.id"


def _t3_parent_filter(db: DbInstance, rng: random.Random, agg: str) -> Draft | None:
    links = [
        (c, fk, p) for c, fk, p in db.foreign_keys() if p.of_kind("cat") and (agg == "count" or c.numeric)
    ]
    if not links:
        return None
    child, fk, parent = rng.choice(links)
    cat = rng.choice(parent.of_kind("cat"))
    probe, pred = _probe(db, parent, cat, rng)
    where = f"{_join(child, fk, parent)} WHERE T2.{cat.name} = {LIT}"
    if agg == "count":
        return Draft("t3_count", "tier3", f"How many {child.plural} belong to {parent.plural} {pred}?",
                     f"SELECT count(*) {where}", child, probe, ((parent, cat), (child, fk)))  # fmt: skip
    num = rng.choice(child.numeric)
    word = {"sum": "total", "avg": "average"}[agg]
    return Draft(
        f"t3_{agg}", "tier3", f"What is the {word} {num.phrase} of {child.plural} of {parent.plural} {pred}?",
        f"SELECT {agg}(T1.{num.name}) {where}", child, probe, ((parent, cat), (child, num), (child, fk)),
    )  # fmt: skip


def t3_sum(db: DbInstance, rng: random.Random) -> Draft | None:
    """What is the total {num} of {child plural} of {parent plural} {pred}?"""
    return _t3_parent_filter(db, rng, "sum")


def t3_average(db: DbInstance, rng: random.Random) -> Draft | None:
    """What is the average {num} of {child plural} of {parent plural} {pred}?"""
    return _t3_parent_filter(db, rng, "avg")


def t3_count(db: DbInstance, rng: random.Random) -> Draft | None:
    """How many {child plural} belong to {parent plural} {pred}?"""
    return _t3_parent_filter(db, rng, "count")


def t3_list(db: DbInstance, rng: random.Random) -> Draft | None:
    """List the {name} of {parent plural} that have {child plural} {pred}."""
    links = [(c, fk, p) for c, fk, p in db.foreign_keys() if c.of_kind("cat") and p.name_column is not None]
    if not links:
        return None
    child, fk, parent = rng.choice(links)
    cat = rng.choice(child.of_kind("cat"))
    name = parent.name_column
    assert name is not None
    probe, pred = _probe(db, child, cat, rng)
    return Draft(
        "t3_list", "tier3", f"List the {name.phrase} of {parent.plural} that have {child.plural} {pred}.",
        f"SELECT DISTINCT T2.{name.name} {_join(child, fk, parent)} WHERE T1.{cat.name} = {LIT}", parent, probe,
        ((child, cat), (parent, name), (child, fk)), max_rows=MAX_LIST_ROWS,
    )  # fmt: skip


TEMPLATES: dict[str, tuple[Callable[[DbInstance, random.Random], Draft | None], ...]] = {
    "tier1": (t1_count_above, t1_count_below, t1_average, t1_list_above, t1_top),
    "tier2": (t2_count, t2_list, t2_average, t2_max, t2_count_above),
    "tier3": (t3_sum, t3_average, t3_count, t3_list),
}


# --- verification -----------------------------------------------------------------------------------------

_QUOTED = re.compile(r"('(?:[^']|'')*')")


def misspell(sql: str, right: str, wrong: str) -> str:
    """``sql`` with the identifier ``right`` replaced by ``wrong`` everywhere outside string literals."""
    word = re.compile(rf"\b{re.escape(right)}\b")
    parts = _QUOTED.split(sql)
    return "".join(p if i % 2 else word.sub(wrong, p) for i, p in enumerate(parts))


def _wrong_name(table: TableInst, column: ColumnInst, rng: random.Random) -> str:
    """A plausible name that ``table`` lacks: another variant of the column, else a dropped letter."""
    taken = {c.name for c in table.columns}
    variants = [n for n in column.spec.names if n not in taken]
    if variants and rng.random() < 0.5:
        return rng.choice(variants)
    name = column.name
    candidates = [name[:i] + name[i + 1 :] for i in range(1, len(name)) if name[i] != "_"]
    candidates = [c for c in candidates if c not in taken and len(c) > 1]
    return rng.choice(candidates) if candidates else name + "s"


def _fails(conn: sqlite3.Connection, sql: str) -> bool:
    try:
        conn.execute(sql).fetchall()
    except sqlite3.Error:
        return True
    return False


def _answer_ok(rows: list[tuple[object, ...]], max_rows: int) -> bool:
    if not rows or len(rows) > max_rows or any(v is None for row in rows for v in row):
        return False
    return rows != [(0,)]


def _distractor(db: DbInstance, draft: Draft, rng: random.Random) -> str:
    """A probe of a categorical column the question does not need."""
    pool = [(t, c) for t in db.tables for c in t.of_kind("cat")]
    if draft.probe is not None:
        pool = [(t, c) for t, c in pool if (t.name, c.name) != (draft.probe.table, draft.probe.column)]
    same = [(t, c) for t, c in pool if t is draft.table]
    table, column = rng.choice(same or pool)
    return f"SELECT DISTINCT {column.name} FROM {table.name}"


def realize(db: DbInstance, draft: Draft, conn: sqlite3.Connection, rng: random.Random) -> Question | None:
    """The verified question of ``draft`` on the database open in ``conn``, or ``None`` if it is rejected."""
    stored = sql_literal(draft.probe.stored) if draft.probe else ""
    surface = sql_literal(draft.probe.surface) if draft.probe else ""
    gold, skip = draft.sql.replace(LIT, stored), draft.sql.replace(LIT, surface)
    try:
        rows = conn.execute(gold).fetchall()
        if not _answer_ok(rows, draft.max_rows):
            return None
        if draft.unique_check is not None and conn.execute(draft.unique_check).fetchall() != [(1,)]:
            return None
        skip_rows = conn.execute(skip).fetchall()
    except sqlite3.Error as exc:  # pragma: no cover - a template bug, not a rejection
        raise RuntimeError(
            f"{db.db_id}: template {draft.template} wrote failing SQL {gold!r}: {exc}"
        ) from exc
    if draft.probe is not None and draft.probe.required and set(skip_rows) == set(rows):
        return None
    table, column = rng.choice(draft.columns)
    wrong = _wrong_name(table, column, rng)
    failing = misspell(gold, column.name, wrong)
    if failing == gold or not _fails(conn, failing):
        return None
    failing_probe = None
    if draft.probe is not None:
        probe_table = next(t for t in db.tables if t.name == draft.probe.table)
        probe_column = next(c for c in probe_table.columns if c.name == draft.probe.column)
        failing_probe = misspell(
            draft.probe.sql, draft.probe.column, _wrong_name(probe_table, probe_column, rng)
        )
        if not _fails(conn, failing_probe):
            return None
    return Question(
        draft.template, draft.tier, draft.question, gold, draft.probe, skip, failing, (column.name, wrong),
        failing_probe, _distractor(db, draft, rng),
    )  # fmt: skip
