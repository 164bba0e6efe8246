"""Gold SQL written for SQLite in another engine's dialect, through sqlglot (``finestep eval --engine
--transpile-gold``, ``data.engine`` in training).

Identifiers: SQLite's are case-insensitive even when quoted, so on PostgreSQL (where the import lower-cases every
name) they are lower-cased; a double-quoted name that is no column of the database is a string, as SQLite reads it.
"""

from __future__ import annotations

import sqlite3
from functools import lru_cache

__all__ = ["DIALECTS", "column_names", "transpile"]

DIALECTS = {"duckdb": "duckdb", "postgres": "postgres", "sqlite": "sqlite"}


@lru_cache(maxsize=256)
def column_names(sqlite_path: str) -> frozenset[str]:
    """The lower-cased table and column names of a SQLite file (what a double-quoted name may refer to)."""
    conn = sqlite3.connect(f"file:{sqlite_path}?mode=ro", uri=True)
    try:
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        names = {t.lower() for t in tables}
        for table in tables:
            names |= {r[1].lower() for r in conn.execute(f'PRAGMA table_info("{table}")')}
        return frozenset(names)
    finally:
        conn.close()


def transpile(sql: str, engine: str, columns: frozenset[str] = frozenset()) -> str:
    """``sql`` written for SQLite in ``engine``'s dialect; ``ValueError`` when sqlglot cannot transpile it."""
    import sqlglot
    from sqlglot import exp

    try:
        tree = sqlglot.parse_one(sql, read="sqlite")
    except sqlglot.errors.ParseError as exc:
        raise ValueError(f"does not transpile: {str(exc).splitlines()[0]}") from None
    aliases = {a.alias.lower() for a in tree.find_all(exp.Alias)}

    def fix(node: exp.Expression) -> exp.Expression:
        if isinstance(node, exp.Column) and not node.table and isinstance(node.this, exp.Identifier):
            name = node.this.name
            if node.this.quoted and columns and name.lower() not in columns and name.lower() not in aliases:
                return exp.Literal.string(name)  # SQLite: a "quoted" name that is no column is a string
        if engine == "postgres" and isinstance(node, exp.Identifier):
            return exp.Identifier(this=node.name.lower(), quoted=node.quoted)
        return node

    try:
        return tree.transform(fix).sql(dialect=DIALECTS[engine])
    except Exception as exc:  # noqa: BLE001 - sqlglot's unsupported features
        raise ValueError(f"does not transpile: {exc}") from None
