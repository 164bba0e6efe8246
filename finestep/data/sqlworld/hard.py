"""The hard (long-horizon) tier of SQLWorld: databases and questions that need several look-ups of the data.

A hard database is a domain instantiated as usual, then *hardened* (:func:`harden`):

- each categorical column stores its values in a style of its own (``code``, ``upper``, or ``lower`` for proper
  nouns), never as a question says them, so every value a question names must be looked up, column by column;
- the event table (the domain's last, e.g. ``visits``) gets a date column (``visit_date``) written in a format
  of the database's (``2023/05/14``, ``14.05.2023``, ``05/14/2023`` or ``20230514``, never ISO), all in one year;
- money columns (``amount``, ``price``, ``cost``, ``late_fee``) are stored in cents (integers) in about half
  of the databases and in dollars in the others: only the values say which;
- the event table has more rows (300-500), so that questions with three or four filters still have answers.

A hard question (:func:`hard_question`) filters the event table on three or four *facts* reached through the
foreign keys (a bridge table when a fact sits two hops away, e.g. loans -> books -> authors): categorical values
(``status cancelled``, ``patients from Boston``), a month (``in May 2023``) and a money threshold (``with cost
above 250 dollars``), and asks for a count, an average or a list of names. Each fact is a :class:`Lookup`: the
query that shows it, what it must show, and whether an answer written without it is wrong (checked by
execution). The natural solution is one look-up per fact, then the answer: 4 or 5 turns.
"""

from __future__ import annotations

import random
import sqlite3
from dataclasses import dataclass, replace
from typing import Any

from finestep.data.sqlworld.domains import CATEGORIES, ColumnSpec, Domain, encode
from finestep.data.sqlworld.generate import ColumnInst, DbInstance, TableInst
from finestep.data.sqlworld.questions import (
    MAX_LIST_ROWS,
    _answer_ok,
    _fails,
    _wrong_name,
    misspell,
    sql_literal,
)

__all__ = [
    "DATE_FORMATS",
    "HARD_TIER",
    "HardDb",
    "HardQuestion",
    "Lookup",
    "hard_domain",
    "hard_question",
    "harden",
]

HARD_TIER = "hard"
MONEY_KEYS = frozenset({"amount", "price", "cost", "late_fee"})
EVENT_ROWS = (300, 500)
_MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
           "November", "December")  # fmt: skip
DATE_FORMATS: dict[str, tuple[str, str]] = {  # name -> (how a date is written, the LIKE pattern of a month)
    "ymd_slash": ("{y}/{m:02d}/{d:02d}", "{y}/{m:02d}/%"),
    "dmy_dot": ("{d:02d}.{m:02d}.{y}", "%.{m:02d}.{y}"),
    "mdy_slash": ("{m:02d}/{d:02d}/{y}", "{m:02d}/%/{y}"),
    "compact": ("{y}{m:02d}{d:02d}", "{y}{m:02d}%"),
}
_ISO_MONTH = "{y}-{m:02d}-%"  # what an agent writes without looking: ISO dates


@dataclass(frozen=True)
class Lookup:
    """One fact a hard question needs from the data.

    Attributes:
        kind: ``value`` (a categorical value's stored form), ``date`` (the date format) or ``unit`` (dollars
            or cents).
        table, column: where the fact is seen.
        probe_sql: the look-up the expert makes (``SELECT DISTINCT c FROM t`` or ``SELECT c FROM t LIMIT 3``).
        surface: the fact as the question implies it (the value's words, an ISO month pattern, the dollar
            threshold); ``stored``: as the database needs it.
        witness: the value a result must show in ``column`` to reveal the fact (``None``: any value of the
            column does, as for a date format or a unit).
        required: an answer written with ``surface`` (the other facts right) returns a wrong result.
        skip_sql: that answer.
        failing_probe_sql: ``probe_sql`` with its column misspelled (it errors).
    """

    kind: str
    table: str
    column: str
    probe_sql: str
    surface: str
    stored: str
    witness: str | None
    required: bool
    skip_sql: str
    failing_probe_sql: str

    @classmethod
    def from_dict(cls, entry: dict[str, Any]) -> Lookup:
        """The inverse of :func:`dataclasses.asdict`."""
        return cls(**entry)


@dataclass(frozen=True)
class HardDb:
    """A hardened database and what its questions need to know about it.

    Attributes:
        db: the database (written as any other).
        event: the event table; ``date_column``: its date column.
        year: the year of every date; ``date_format``: a :data:`DATE_FORMATS` key.
        cents: money columns store cents (else dollars).
    """

    db: DbInstance
    event: TableInst
    date_column: ColumnInst
    year: int
    date_format: str
    cents: bool


@dataclass(frozen=True)
class HardQuestion:
    """A verified hard question: gold SQL, its look-ups, and what the scripted expert needs."""

    template: str
    question: str
    gold_sql: str
    lookups: tuple[Lookup, ...]
    skip_sql: str
    failing_sql: str
    misspelling: tuple[str, str]
    distractor_probe_sql: str


def hard_domain(domain: Domain) -> Domain:
    """``domain`` with a larger event table (its last table), so that several filters still leave rows."""
    *parents, event = domain.tables
    return replace(domain, tables=(*parents, replace(event, rows=EVENT_ROWS)))


def _column_style(category: str, rng: random.Random) -> str:
    """A storage style under which no value of ``category`` is stored as a question says it."""
    values = CATEGORIES[category].values
    styles = ["code", "upper"] + (["lower"] if all(s != s.lower() for s, _ in values) else [])
    return rng.choice(styles)


def harden(db: DbInstance, rng: random.Random) -> HardDb:
    """The hard version of ``db`` (instantiated in the ``plain`` style): see the module docstring.

    Pure: ``rng`` decides the column styles, the date format and year, the unit and the dates.
    """
    if db.style != "plain":
        raise ValueError(f"harden needs a database instantiated in the plain style, got {db.style!r}")
    cents = rng.random() < 0.5
    year = rng.randint(2019, 2024)
    date_format = rng.choice(sorted(DATE_FORMATS))
    tables, rows, present = [], {}, {}
    for k, table in enumerate(db.tables):
        columns, convert = list(table.columns), {}
        for i, column in enumerate(columns):
            if column.spec.kind == "cat":
                style = _column_style(column.spec.ref, rng)
                codes = dict(CATEGORIES[column.spec.ref].values)
                convert[i] = lambda v, s=style, c=codes: encode(str(v), c[str(v)], s)
                present[(table.name, column.name)] = tuple(
                    (surface, encode(surface, codes[surface], style)) for surface, _ in db.present[(table.name, column.name)]
                )  # fmt: skip
            elif column.spec.key in MONEY_KEYS and column.spec.kind == "real" and cents:
                columns[i] = ColumnInst(replace(column.spec, kind="cents"), column.name)
                convert[i] = lambda v: round(float(v) * 100)  # type: ignore[arg-type]
        table_rows = [
            tuple(convert[i](v) if i in convert else v for i, v in enumerate(row))
            for row in db.rows[table.name]
        ]
        if k == len(db.tables) - 1:  # the event table gets its dates
            spec = ColumnSpec("date", (f"{table.singular}_date",), "date")
            columns.append(ColumnInst(spec, spec.names[0]))
            pattern = DATE_FORMATS[date_format][0]
            table_rows = [
                (*row, pattern.format(y=year, m=rng.randint(1, 12), d=rng.randint(1, 28)))
                for row in table_rows
            ]
        tables.append(replace(table, columns=tuple(columns)))
        rows[tables[-1].name] = table_rows
    hard = DbInstance(db.db_id, db.domain, "mixed", tuple(tables), rows, present)
    event = hard.tables[-1]
    return HardDb(hard, event, event.columns[-1], year, date_format, cents)


# --- questions --------------------------------------------------------------------------------------------


def _reach(db: DbInstance, event: TableInst) -> dict[str, tuple[str, ColumnInst] | None]:
    """Table name -> ``(child table name, foreign key)`` it is joined through, for every table the event table
    reaches by foreign keys (``None`` for the event table itself), in breadth-first order."""
    reach: dict[str, tuple[str, ColumnInst] | None] = {event.name: None}
    frontier = [event]
    while frontier:
        child = frontier.pop(0)
        for fk in child.of_kind("fk"):
            parent = db.table(fk.spec.ref)
            if parent.name not in reach:
                reach[parent.name] = (child.name, fk)
                frontier.append(parent)
    return reach


@dataclass(frozen=True)
class _Fact:
    lookup_kind: str
    table: TableInst
    column: ColumnInst
    pred: str  # how the question says it of its own table: "from Boston", "in May 2023"
    op: str
    surface: str
    stored: str
    witness: str | None
    probe_sql: str

    def phrase(self, event: TableInst) -> str:
        """How the question says it of the event table's rows: ``from Boston`` becomes ``of patients from
        Boston`` when it is about a parent table."""
        return self.pred if self.table is event else f"of {self.table.plural} {self.pred}"

    def literal(self, value: str) -> str:
        """``value`` as it is written in the SQL (a number bare, anything else quoted)."""
        return value if self.lookup_kind == "unit" else sql_literal(value)


@dataclass(frozen=True)
class _Draft:
    template: str
    question: str
    sql: str  # with {0}, {1}, ... where the facts' literals go
    facts: list[_Fact]
    refs: list[tuple[TableInst, ColumnInst]]


def _facts(hard: HardDb, reach: dict[str, Any], rng: random.Random) -> list[_Fact]:
    """Every fact a question about the event table could need, each with a random value or threshold."""
    db, event = hard.db, hard.event
    facts = []
    for name in reach:
        table = next(t for t in db.tables if t.name == name)
        for column in table.columns:
            kind = column.spec.kind
            if kind == "cat":
                surface, stored = rng.choice(db.present[(table.name, column.name)])
                pred = column.spec.pred.format(v=surface, col=column.phrase)
                facts.append(_Fact("value", table, column, pred, "=",
                                   surface, stored, stored,
                                   f"SELECT DISTINCT {column.name} FROM {table.name}"))  # fmt: skip
            elif column.spec.key in MONEY_KEYS and kind in ("real", "cents"):
                scale = 100 if kind == "cents" else 1
                value = float(rng.choice(db.values(table, column))) / scale  # type: ignore[arg-type]
                dollars = max(int(column.spec.step), int(round(value / column.spec.step) * column.spec.step))
                pred = f"with {column.phrase} above {dollars} dollars"
                facts.append(_Fact("unit", table, column, pred, ">",
                                   str(dollars), str(dollars * scale), None,
                                   f"SELECT {column.name} FROM {table.name} LIMIT 3"))  # fmt: skip
    month = rng.randint(1, 12)
    pattern = DATE_FORMATS[hard.date_format][1]
    date = hard.date_column
    facts.append(_Fact("date", event, date, f"in {_MONTHS[month - 1]} {hard.year}", "LIKE",
                       _ISO_MONTH.format(y=hard.year, m=month), pattern.format(y=hard.year, m=month), None,
                       f"SELECT {date.name} FROM {event.name} LIMIT 3"))  # fmt: skip
    return facts


def _draft(hard: HardDb, rng: random.Random, agg: str) -> _Draft | None:
    """A question of aggregate ``agg`` on three or four random facts, or ``None`` when the database cannot ask
    it (no named table to list, no numeric column to average)."""
    db, event = hard.db, hard.event
    reach = _reach(db, event)
    facts = _facts(hard, reach, rng)
    n = min(len(facts), 4 if rng.random() < 0.3 else 3)
    chosen = sorted(rng.sample(range(len(facts)), n))
    picked = [facts[i] for i in chosen]
    target: TableInst | None = None
    if agg == "list":
        named = [t for t in db.tables if t.name in reach and t is not event and t.name_column is not None]
        if not named:
            return None
        target = rng.choice(named)
    numeric = [c for c in event.numeric if c.spec.key not in MONEY_KEYS]
    if agg == "avg" and not numeric:
        return None
    needed = {f.table.name for f in picked} | ({target.name} if target else set())
    for name in list(needed):  # the bridge tables on the way
        link = reach[name]
        while link is not None:
            needed.add(link[0])
            link = reach[link[0]]
    joined = [name for name in reach if name in needed]
    alias = {name: f"T{k + 1}" for k, name in enumerate(joined)} if len(joined) > 1 else {}

    def ref(table: TableInst, column: ColumnInst) -> str:
        return f"{alias[table.name]}.{column.name}" if alias else column.name

    source = f"FROM {event.name}" + (" T1" if alias else "")
    for name in joined[1:]:
        child, fk = reach[name]
        source += f" JOIN {name} {alias[name]} ON {alias[child]}.{fk.name} = {alias[name]}.id"
    where = " AND ".join(f"{ref(f.table, f.column)} {f.op} {{{k}}}" for k, f in enumerate(picked))
    about = [f for f in picked if target is None or f.table is not target]  # the list's own filters go first
    others = [f.phrase(event) for f in about if f.table is not event]
    owns = [f.phrase(event) for f in about if f.table is event and f.lookup_kind != "date"]
    dates = [f.phrase(event) for f in about if f.lookup_kind == "date"]
    words = " ".join(" ".join([" and ".join(others), " and ".join(owns), *dates]).split())
    refs = [(f.table, f.column) for f in picked]
    if agg == "count":
        question, sql = (
            f"How many {event.plural} {words} are there?",
            f"SELECT count(*) {source} WHERE {where}",
        )
    elif agg == "avg":
        num = rng.choice(numeric)
        refs.append((event, num))
        question = f"What is the average {num.phrase} of {event.plural} {words}?"
        sql = f"SELECT avg({ref(event, num)}) {source} WHERE {where}"
    else:
        assert target is not None and target.name_column is not None
        refs.append((target, target.name_column))
        own = " and ".join(f.pred for f in picked if f.table is target)
        question = (
            " ".join(
                f"List the {target.name_column.phrase} of {target.plural} {own} that have "
                f"{event.plural} {words}".split()
            )
            + "."
        )
        sql = f"SELECT DISTINCT {ref(target, target.name_column)} {source} WHERE {where}"
    return _Draft(f"h_{agg}", question, sql, picked, refs)


AGGREGATES = ("count", "avg", "list")


def _distractor(db: DbInstance, facts: list[_Fact], rng: random.Random) -> str:
    """A look-up of a categorical column the question does not filter on (a wasted tool call)."""
    used = {(f.table.name, f.column.name) for f in facts}
    pool = [(t, c) for t in db.tables for c in t.of_kind("cat") if (t.name, c.name) not in used]
    pool = pool or [(t, c) for t in db.tables for c in t.numeric if (t.name, c.name) not in used]
    table, column = rng.choice(pool)
    return f"SELECT DISTINCT {column.name} FROM {table.name}"


def hard_question(
    hard: HardDb, conn: sqlite3.Connection, rng: random.Random, agg: str
) -> HardQuestion | None:
    """A verified hard question of aggregate ``agg`` (one of :data:`AGGREGATES`) on the database open in
    ``conn``, or ``None`` when the draw is rejected: the answer must be non-empty (at most a dozen rows, no NULL,
    not a zero count), every categorical value and the date must be required (an answer without that look-up
    returns another result), and a unit look-up is required exactly when money is stored in cents."""
    draft = _draft(hard, rng, agg)
    if draft is None:
        return None
    facts, sql = draft.facts, draft.sql
    stored = [f.literal(f.stored) for f in facts]
    gold = sql.format(*stored)
    try:
        rows = conn.execute(gold).fetchall()
        if not _answer_ok(rows, MAX_LIST_ROWS if agg == "list" else 1):
            return None
        lookups = []
        for k, f in enumerate(facts):
            skip = sql.format(*stored[:k], f.literal(f.surface), *stored[k + 1 :])
            required = set(conn.execute(skip).fetchall()) != set(rows)
            if required != (f.surface != f.stored):
                return None
            failing_probe = misspell(f.probe_sql, f.column.name, _wrong_name(f.table, f.column, rng))
            if not _fails(conn, failing_probe):
                return None
            lookups.append(Lookup(f.lookup_kind, f.table.name, f.column.name, f.probe_sql, f.surface, f.stored,
                                  f.witness, required, skip, failing_probe))  # fmt: skip
    except sqlite3.Error as exc:  # pragma: no cover - a template bug, not a rejection
        raise RuntimeError(f"{hard.db.db_id}: hard question wrote failing SQL {gold!r}: {exc}") from exc
    table, column = rng.choice(draft.refs)
    wrong = _wrong_name(table, column, rng)
    failing = misspell(gold, column.name, wrong)
    if failing == gold or not _fails(conn, failing):
        return None
    skip_all = sql.format(*(f.literal(f.surface) for f in facts))
    return HardQuestion(draft.template, draft.question, gold, tuple(lookups), skip_all, failing, (column.name, wrong),
                        _distractor(hard.db, facts, rng))  # fmt: skip
