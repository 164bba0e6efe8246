"""Static analysis of SQL text with sqlglot: canonical form, referenced identifiers, literals, similarity.

These feed the process rewards (``redundant``, ``grounded``) and the logical links (``repairs``, ``uses``).
Every function accepts any text: a query sqlglot cannot parse falls back to a normalized token form.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from functools import lru_cache

import sqlglot
from sqlglot import exp
from sqlglot.errors import SqlglotError

__all__ = [
    "References",
    "canonical_sql",
    "query_literals",
    "query_references",
    "sql_similarity",
    "sql_tokens",
]

_DIALECT = "sqlite"
_WORDS = re.compile(r"'(?:[^']|'')*'|\"(?:[^\"]|\"\")*\"|`[^`]*`|\[[^\]]*\]|\w+|[^\w\s]")


@lru_cache(maxsize=8192)
def _parse(sql: str) -> exp.Expression | None:
    text = sql.strip().rstrip(";").strip()
    if not text:
        return None
    try:
        statements = sqlglot.parse(text, dialect=_DIALECT)
    except (SqlglotError, ValueError, RecursionError):
        return None
    if len(statements) != 1 or statements[0] is None:
        return None
    return statements[0]


def _fallback_form(sql: str) -> str:
    pieces = []
    for token in _WORDS.findall(sql.strip().rstrip(";")):
        pieces.append(token if token[0] in "'" else token.strip('"`[]').lower())
    return " ".join(pieces)


def _maybe_string(node: exp.Expression | None) -> bool:
    """A double-quoted, unqualified column compared in a predicate: SQLite reads it as a string if no such
    column exists."""
    return (
        isinstance(node, exp.Column)
        and bool(node.this.args.get("quoted"))
        and not node.table
        and isinstance(node.parent, exp.Predicate)
    )


@lru_cache(maxsize=8192)
def canonical_sql(sql: str) -> str:
    """A form equal for queries that differ only in case of keywords and identifiers, identifier quoting,
    whitespace, string-quote style and a trailing semicolon.

    SQLite identifiers are case-insensitive, so ``select A from t`` and ``SELECT a FROM T;`` share one form.
    String and number literals keep their values (a probe of another value is a different query).
    """
    tree = _parse(sql)
    if tree is None:
        return _fallback_form(sql)
    tree = tree.copy()
    for node in tree.find_all(exp.Identifier):
        if _maybe_string(node.parent):
            continue  # `WHERE x = "France"`: SQLite may read it as a case-sensitive string
        node.set("this", node.name.lower())
        node.set("quoted", False)
    try:
        return tree.sql(dialect=_DIALECT, normalize=True, comments=False)
    except (SqlglotError, ValueError):  # pragma: no cover - generator edge cases
        return _fallback_form(sql)


def sql_tokens(sql: str) -> list[str]:
    """Lower-cased tokens of ``sql`` (quoted strings kept whole, case preserved) for similarity."""
    return [t if t[0] == "'" else t.lower() for t in _WORDS.findall(sql.strip().rstrip(";"))]


def sql_similarity(a: str, b: str) -> float:
    """Normalized token similarity in [0, 1]: difflib's ratio over the two token sequences."""
    tokens_a, tokens_b = sql_tokens(a), sql_tokens(b)
    if not tokens_a and not tokens_b:
        return 1.0
    return difflib.SequenceMatcher(None, tokens_a, tokens_b, autojunk=False).ratio()


@dataclass(frozen=True)
class References:
    """Identifiers a query names, lower-cased.

    ``tables``: tables read (CTE names excluded); ``columns``: unquoted column names; ``quoted_columns``:
    double-quoted names, which SQLite reads as strings when no such column exists; ``aliases``: names the
    query itself defines (column and table aliases, CTE names and their columns).
    """

    tables: frozenset[str]
    columns: frozenset[str]
    quoted_columns: frozenset[str]
    aliases: frozenset[str]


@lru_cache(maxsize=8192)
def query_references(sql: str) -> References | None:
    """The tables and columns ``sql`` refers to, or ``None`` when it cannot be parsed."""
    tree = _parse(sql)
    if tree is None:
        return None
    aliases: set[str] = set()
    for node in tree.find_all(exp.Alias, exp.TableAlias, exp.CTE):
        if node.alias:
            aliases.add(node.alias.lower())
        if isinstance(node, exp.TableAlias):
            aliases.update(c.name.lower() for c in node.columns)
    tables = {t.name.lower() for t in tree.find_all(exp.Table) if t.name} - aliases
    columns, quoted = set(), set()
    for column in tree.find_all(exp.Column):
        name = column.name.lower()
        if not name or isinstance(column.this, exp.Star):
            continue
        (quoted if column.this.args.get("quoted") else columns).add(name)
    return References(frozenset(tables), frozenset(columns), frozenset(quoted), frozenset(aliases))


def _literal_value(node: exp.Literal) -> str:
    return node.this if node.is_string else node.this.lower()


@lru_cache(maxsize=8192)
def query_literals(sql: str) -> frozenset[str]:
    """Literal values a query compares against: strings, and numbers outside LIMIT/OFFSET other than 0 and 1.

    Double-quoted names that are not column references are included when ``sql`` parses (SQLite reads
    ``WHERE name = "Joe"`` as a string). Used to find which earlier observation a value came from.
    """
    tree = _parse(sql)
    if tree is None:
        return frozenset(m[1:-1].replace("''", "'") for m in re.findall(r"'(?:[^']|'')*'", sql))
    values = set()
    for node in tree.find_all(exp.Literal):
        if node.find_ancestor(exp.Limit, exp.Offset):
            continue
        value = _literal_value(node)
        if node.is_string or value not in {"0", "1"}:
            values.add(value)
    values.update(column.name for column in tree.find_all(exp.Column) if _maybe_string(column))
    return frozenset(values)
