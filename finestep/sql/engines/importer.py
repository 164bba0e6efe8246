"""``finestep db import``: copy a benchmark's SQLite databases into DuckDB files or PostgreSQL databases.

Each column gets the type its values need, from its declared type and the storage classes SQLite actually holds
(SQLite lets any column hold any value): integers -> ``BIGINT``, numbers -> ``DOUBLE``, text -> ``TEXT``/
``VARCHAR``, blobs -> ``BYTEA``/``BLOB``. A column whose values do not fit its declared type (an ``INTEGER``
column holding text, a ``DATETIME`` column holding text) is *coerced* to the type that holds them all, and the
report names it; text that is not UTF-8 is decoded with replacement characters and NUL characters (which
PostgreSQL's text cannot hold) are dropped, also reported. NULLs stay NULL. Primary keys are kept when the data
satisfies them; foreign keys are added on PostgreSQL when the data and the referenced keys allow (DuckDB cannot
add them to filled tables); every key not kept is reported with its reason. Each table's comment records the
source's declared types and keys (:mod:`finestep.sql.engines.catalog`), so the schema prompt reads the same on
every engine.

On PostgreSQL, table and column names are lower-cased (unquoted names fold to lower case there, as SQLite's are
case-insensitive) and a read-only role (``finestep_reader`` by default) gets ``CONNECT`` and ``SELECT`` only, with
``default_transaction_read_only`` and a ``temp_file_limit``: the role the sandbox connects as.
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from finestep.sql.engine import SandboxLimits
from finestep.sql.engines import EngineError, database_for, engine_for
from finestep.sql.engines.catalog import Column, Declared, Table
from finestep.sql.engines.sqlite import SqliteEngine

__all__ = ["ImportReport", "find_databases", "import_benchmark", "import_database", "reader_url"]

_INSERT_CHUNK = 500
READER = "finestep_reader"


@dataclass
class ImportReport:
    """What importing one database did."""

    db_id: str
    target: str
    tables: int = 0
    rows: int = 0
    coerced: list[str] = field(default_factory=list)  # "table.column: declared X holds Y -> Z"
    keys_not_kept: list[str] = field(default_factory=list)
    error: str | None = None
    elapsed_s: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _world_databases(data_dir: Path) -> dict[str, Path] | None:
    """``{db_id: path}`` of a SQLWorld world's databases (``world.json`` lists them), or ``None`` when ``data_dir``
    holds no world."""
    try:
        doc = json.loads((data_dir / "world.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(doc, dict) or doc.get("format") != "sqlworld":
        return None
    return {str(d["db_id"]): data_dir / str(d["path"]) for d in doc.get("databases", [])}


def find_databases(data_dir: str | os.PathLike[str]) -> dict[str, Path]:
    """``{db_id: path}`` of the benchmark's SQLite files: a SQLWorld world's (``world.json``), else
    ``<db_id>/<db_id>.sqlite`` anywhere below (Spider's and BIRD's layout)."""
    world = _world_databases(Path(data_dir))
    if world is not None:
        return dict(sorted(world.items()))
    found: dict[str, Path] = {}
    for path in sorted(Path(data_dir).rglob("*.sqlite")):
        if path.parent.name == path.stem and path.stem not in found:
            found[path.stem] = path
    return found


def _affinity(declared: str) -> str:
    upper = (declared or "").upper()
    if "INT" in upper:
        return "integer"
    if any(word in upper for word in ("CHAR", "CLOB", "TEXT")):
        return "text"
    if not upper or "BLOB" in upper:
        return "none"
    if any(word in upper for word in ("REAL", "FLOA", "DOUB")):
        return "real"
    return "numeric"


_TYPES = {
    "duckdb": {"integer": "BIGINT", "real": "DOUBLE", "text": "VARCHAR", "blob": "BLOB"},
    "postgres": {"integer": "BIGINT", "real": "DOUBLE PRECISION", "text": "TEXT", "blob": "BYTEA"},
}
_NATURAL = {"integer": "integer", "real": "real", "text": "text", "numeric": "real", "none": "blob"}


@dataclass
class _Column:
    name: str
    target_name: str
    declared: str
    kind: str  # integer, real, text, blob
    as_text: bool  # read with CAST(... AS TEXT)


def _plan_columns(conn: sqlite3.Connection, table: str, lower: bool, report: ImportReport) -> list[_Column]:
    columns = []
    for _, name, declared, _notnull, _default, _pk in conn.execute(f'PRAGMA table_info("{table}")').fetchall():
        classes = {row[0] for row in conn.execute(f'SELECT DISTINCT typeof("{name}") FROM "{table}"')} - {"null"}
        affinity = _affinity(declared)
        if "text" in classes or ("blob" in classes and len(classes) > 1):
            kind = "text"
        elif "blob" in classes:
            kind = "blob"
        elif "real" in classes:
            kind = "real"
        elif "integer" in classes:
            kind = "integer" if affinity != "real" else "real"
        else:  # only NULLs: the declared type's own
            kind = {"integer": "integer", "real": "real", "numeric": "real", "text": "text", "none": "text"}[affinity]
        natural = _NATURAL[affinity]
        fits = kind == natural or (affinity in ("numeric", "none") and kind != "text") or (natural == "real" and kind == "integer")
        if classes and not fits:
            report.coerced.append(f"{table}.{name}: declared {declared or 'without a type'} holds "
                                  f"{'/'.join(sorted(classes))} -> {kind}")  # fmt: skip
        columns.append(_Column(name, name.lower() if lower else name, declared, kind, kind == "text" and classes != {"text"}))
    return columns


def _has_rowid(conn: sqlite3.Connection, table: str) -> bool:
    """Whether ``table`` is a rowid table whose ``_rowid_`` is not shadowed by a column of that name."""
    names = {row[1].lower() for row in conn.execute(f'PRAGMA table_info("{table}")')}
    if "_rowid_" in names:
        return False
    try:
        conn.execute(f'SELECT _rowid_ FROM "{table}" LIMIT 0')
    except sqlite3.OperationalError:  # WITHOUT ROWID: stored (and read) in primary-key order
        return False
    return True


def _rows(conn: sqlite3.Connection, table: str, columns: list[_Column], report: ImportReport) -> Iterator[tuple[Any, ...]]:
    select = ", ".join(f'CAST("{c.name}" AS TEXT)' if c.as_text else f'"{c.name}"' for c in columns)
    conn.text_factory = bytes
    bad: set[str] = set()
    # In rowid order (SQLite may otherwise read a covering index): the target stores the rows as SQLite does.
    order = " ORDER BY _rowid_" if _has_rowid(conn, table) else ""
    cursor = conn.execute(f'SELECT {select} FROM "{table}"{order}')
    while batch := cursor.fetchmany(_INSERT_CHUNK):
        for row in batch:
            values = list(row)
            for i, value in enumerate(values):
                if value.__class__ is bytes and columns[i].kind == "text":
                    text = value.decode("utf-8", "replace")
                    if "\ufffd" in text or "\x00" in text:
                        bad.add(columns[i].name)
                    values[i] = text.replace("\x00", "")
            yield tuple(values)
    for name in sorted(bad):
        report.coerced.append(f"{table}.{name}: text that is not UTF-8 (replaced) or holds NUL characters (dropped)")


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _primary_key(conn: sqlite3.Connection, table: str, report: ImportReport) -> list[str]:
    info = conn.execute(f'PRAGMA table_info("{table}")').fetchall()
    key = [row[1] for row in sorted((r for r in info if r[5]), key=lambda r: r[5])]
    if not key:
        return []
    cols = ", ".join(_quote(c) for c in key)
    nulls = conn.execute(f'SELECT count(*) FROM "{table}" WHERE ' + " OR ".join(f"{_quote(c)} IS NULL" for c in key)).fetchone()[0]
    dupes = conn.execute(f'SELECT count(*) FROM (SELECT 1 FROM "{table}" GROUP BY {cols} HAVING count(*) > 1)').fetchone()[0]
    if nulls or dupes:
        report.keys_not_kept.append(f"{table} primary key ({', '.join(key)}): {nulls} NULL and {dupes} duplicated values")
        return []
    return key


def _sample_order(conn: sqlite3.Connection, table: str, column: Column, name: Callable[[str], str]) -> tuple[tuple[str, bool], ...]:
    """The ``(column, descending)`` terms of the index SQLite reads ``column``'s sample values through (its planner
    prefers a covering index to the table), or ``()`` when it scans the table in ``rowid`` order."""
    plan = " ".join(str(row[3]) for row in conn.execute("EXPLAIN QUERY PLAN " + SqliteEngine().sample_sql(table, column, 3)))
    found = re.search(r"USING (?:COVERING )?INDEX (\S+)", plan)
    if found is None:
        return ()
    terms = []
    for _seq, cid, col, desc, _coll, key in conn.execute(f"PRAGMA index_xinfo({_quote(found.group(1))})"):
        if key and (cid < 0 or col is None):
            return ()  # an index on an expression: not reproduced
        if key:
            terms.append((name(col), bool(desc)))
    return tuple(terms)


def _declared(conn: sqlite3.Connection, source: Table, position: int, lower: bool) -> str:
    """The comment recording ``source``'s declared schema as SQLite's catalog gives it (the schema prompt on SQLite),
    in the target's names (:class:`~finestep.sql.engines.catalog.Declared`)."""
    def name(text: str) -> str:
        return text.lower() if lower else text

    orders = {name(c.name): _sample_order(conn, source.name, c, name) for c in source.columns}
    return Declared(
        position, {name(c.name): c.type for c in source.columns}, tuple(name(c.name) for c in source.columns if c.primary_key),
        tuple((name(a), name(b), name(c)) for a, b, c in source.foreign_keys), {c: o for c, o in orders.items() if o},
    ).comment()  # fmt: skip


def reader_url(url: str, reader: str = READER) -> str:
    """``url`` with its user replaced by the read-only role ``reader``."""
    parts = urlsplit(url)
    host = parts.netloc.rsplit("@", 1)[-1]
    return urlunsplit((parts.scheme, f"{reader}@{host}", parts.path, parts.query, parts.fragment))


def _create_target(kind: str, target: str, admin_url: str | None) -> Any:
    if kind == "duckdb":
        import duckdb

        path = target[len("duckdb:"):]
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        for leftover in (path, path + ".wal"):
            if os.path.exists(leftover):
                os.remove(leftover)
        return duckdb.connect(path)
    import psycopg

    parts = urlsplit(target)
    name = parts.path.lstrip("/")
    with psycopg.connect(admin_url, autocommit=True) as admin:
        admin.execute(f"DROP DATABASE IF EXISTS {_quote(name)} WITH (FORCE)")
        admin.execute(f"CREATE DATABASE {_quote(name)} TEMPLATE template0 ENCODING 'UTF8' LC_COLLATE 'C' LC_CTYPE 'C'")
    return psycopg.connect(target)


def _grant_reader(conn: Any, database: str, reader: str, temp_file_limit: str) -> None:
    exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", [reader]).fetchone()
    if not exists:
        conn.execute(f"CREATE ROLE {_quote(reader)} LOGIN")
    conn.execute(f"ALTER ROLE {_quote(reader)} SET default_transaction_read_only = on")
    conn.execute(f"ALTER ROLE {_quote(reader)} SET temp_file_limit = '{temp_file_limit}'")
    conn.execute(f"REVOKE ALL ON DATABASE {_quote(database)} FROM PUBLIC")
    conn.execute(f"GRANT CONNECT ON DATABASE {_quote(database)} TO {_quote(reader)}")
    conn.execute("REVOKE CREATE ON SCHEMA public FROM PUBLIC")
    conn.execute(f"GRANT USAGE ON SCHEMA public TO {_quote(reader)}")
    conn.execute(f"GRANT SELECT ON ALL TABLES IN SCHEMA public TO {_quote(reader)}")


def import_database(source: str | os.PathLike[str], target: str, admin_url: str | None = None,
                    reader: str = READER, temp_file_limit: str = "256MB") -> ImportReport:  # fmt: skip
    """Copy the SQLite file ``source`` into ``target`` (``duckdb:FILE`` or a PostgreSQL database URL, which is
    dropped and created again through ``admin_url``, a superuser's URL on that server)."""
    start = time.perf_counter()
    engine = engine_for(target).name
    if engine not in _TYPES:
        raise EngineError(f"--to {target}: import writes DuckDB (duckdb:DIR) or PostgreSQL (postgresql://...) only")
    report = ImportReport(Path(source).stem, target)
    lower = engine == "postgres"
    src = sqlite3.connect(f"file:{os.path.abspath(source)}?mode=ro", uri=True)
    out = _create_target(engine, target, admin_url)
    try:
        catalog = SqliteEngine().catalog(src, SandboxLimits())  # the tables in the schema prompt's order
        tables = [t.name for t in catalog]
        keys: dict[str, list[str]] = {}
        for position, table in enumerate(tables):
            columns = _plan_columns(src, table, lower, report)
            key = _primary_key(src, table, report)
            keys[table] = key
            types = _TYPES[engine]
            body = [f"{_quote(c.target_name)} {types[c.kind]}" for c in columns]
            if key:
                body.append("PRIMARY KEY (" + ", ".join(_quote(k.lower() if lower else k) for k in key) + ")")
            name = _quote(table.lower() if lower else table)
            out.execute(f"CREATE TABLE {name} ({', '.join(body)})")
            comment = _declared(src, catalog[position], position, lower)
            out.execute(f"COMMENT ON TABLE {name} IS '" + comment.replace("'", "''") + "'")
            src.text_factory = str
            if engine == "postgres":
                with out.cursor().copy(f"COPY {name} FROM STDIN") as copy:
                    for row in _rows(src, table, columns, report):
                        copy.write_row(row)
                        report.rows += 1
            elif any(c.kind == "blob" for c in columns):
                _insert_chunks(out, name, len(columns), _rows(src, table, columns, report), report)
            else:
                _copy_csv(out, name, _rows(src, table, columns, report), report)
            src.text_factory = str
            report.tables += 1
        _foreign_keys(src, out, engine, tables, keys, report)
        if engine == "postgres":
            out.commit()
            out.autocommit = True
            _grant_reader(out, urlsplit(target).path.lstrip("/"), reader, temp_file_limit)
            out.execute("ANALYZE")
    finally:
        src.close()
        out.close()
    report.elapsed_s = round(time.perf_counter() - start, 3)
    return report


def _insert_chunks(out: Any, name: str, width: int, rows: Iterator[tuple[Any, ...]], report: ImportReport) -> None:
    """DuckDB: rows as multi-row INSERTs (tables with blobs, which CSV cannot carry)."""
    marks = "(" + ", ".join("?" * width) + ")"
    chunk: list[tuple[Any, ...]] = []
    for row in [*rows, None]:
        if row is not None:
            chunk.append(row)
        if chunk and (row is None or len(chunk) == _INSERT_CHUNK):
            out.execute(f"INSERT INTO {name} VALUES " + ", ".join([marks] * len(chunk)), [v for r in chunk for v in r])
            report.rows += len(chunk)
            chunk = []


def _copy_csv(out: Any, name: str, rows: Iterator[tuple[Any, ...]], report: ImportReport) -> None:
    """DuckDB: rows through a temporary CSV file (20x faster than INSERTs): text quoted, numbers bare, NULL an
    empty unquoted field, so an empty text stays an empty text."""
    def field(value: Any) -> str:
        if value is None:
            return ""
        if value.__class__ is str:
            return '"' + value.replace('"', '""') + '"'
        return repr(value)

    with tempfile.NamedTemporaryFile("w", suffix=".csv", newline="", encoding="utf-8", delete=False) as handle:
        for row in rows:
            handle.write(",".join(map(field, row)) + "\n")
            report.rows += 1
    try:
        if os.path.getsize(handle.name) == 0:  # an empty table: nothing to copy (DuckDB cannot sniff an empty file)
            return
        path = handle.name.replace("'", "''")
        out.execute(f"COPY {name} FROM '{path}' (FORMAT csv, HEADER false, NULLSTR '', ALLOW_QUOTED_NULLS false, DELIMITER ',', "
                    "NEW_LINE '\\n', QUOTE '\"', ESCAPE '\"')")  # fmt: skip
    finally:
        os.remove(handle.name)


def _foreign_keys(src: sqlite3.Connection, out: Any, engine: str, tables: list[str], keys: dict[str, list[str]],
                  report: ImportReport) -> None:  # fmt: skip
    for table in tables:
        groups: dict[int, list[tuple[str, str, str | None]]] = {}
        for row in src.execute(f'PRAGMA foreign_key_list("{table}")').fetchall():
            groups.setdefault(row[0], []).append((row[2], row[3], row[4]))
        for refs in groups.values():
            parent = refs[0][0]
            child_cols = [r[1] for r in refs]
            parent_cols = [r[2] or (keys.get(parent) or [None] * len(refs))[i] for i, r in enumerate(refs)]
            what = f"{table} ({', '.join(child_cols)}) -> {parent} ({', '.join(str(c) for c in parent_cols)})"
            if engine == "duckdb":
                report.keys_not_kept.append(f"foreign key {what}: DuckDB cannot add foreign keys to filled tables")
                continue
            if None in parent_cols:
                report.keys_not_kept.append(f"foreign key {what}: the referenced columns are unknown")
                continue
            sql = (f"ALTER TABLE {_quote(table.lower())} ADD FOREIGN KEY ({', '.join(_quote(c.lower()) for c in child_cols)}) "
                   f"REFERENCES {_quote(parent.lower())} ({', '.join(_quote(str(c).lower()) for c in parent_cols)})")  # fmt: skip
            try:
                out.execute("SAVEPOINT fk")
                out.execute(sql)
                out.execute("RELEASE SAVEPOINT fk")
            except Exception as exc:  # noqa: BLE001 - psycopg's errors: the key is reported, the import goes on
                out.execute("ROLLBACK TO SAVEPOINT fk")
                report.keys_not_kept.append(f"foreign key {what}: {str(exc).splitlines()[0]}")


def import_benchmark(data_dir: str | os.PathLike[str], to: str, db_ids: list[str] | None = None,
                     reader: str = READER) -> list[ImportReport]:  # fmt: skip
    """Import every database of the benchmark under ``data_dir`` (or those in ``db_ids``) to ``to``: ``duckdb:DIR``
    writes ``DIR/<db_id>.duckdb``; ``postgresql://ADMIN@HOST/...`` creates one database per ``db_id`` on that server
    as the superuser ADMIN. A database that fails is reported with its error; the others go on."""
    found = find_databases(data_dir)
    if not found:
        raise FileNotFoundError(f"--data {data_dir}: no SQLite databases (<db_id>/<db_id>.sqlite below it, or a "
                                "SQLWorld world.json)")
    wanted = db_ids or sorted(found)
    missing = [d for d in wanted if d not in found]
    if missing:
        raise FileNotFoundError(f"--data {data_dir}: no database {', '.join(missing)}")
    reports = []
    for db_id in wanted:
        target = database_for(to, db_id)
        try:
            reports.append(import_database(found[db_id], target, admin_url=database_for(to, "postgres"), reader=reader))
        except Exception as exc:  # noqa: BLE001 - one database's failure is reported, the rest imported
            reports.append(ImportReport(db_id, target, error=f"{type(exc).__name__}: {exc}"))
    return reports
