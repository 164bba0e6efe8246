"""``finestep db import``: a benchmark's SQLite databases into DuckDB files or PostgreSQL databases."""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.console import Console
from rich.table import Table


def _cmd_db_import(args: argparse.Namespace, console: Console) -> int:
    from finestep.atomic import atomic_write_json
    from finestep.sql.engines import engine_for
    from finestep.sql.engines.importer import import_benchmark, reader_url

    reports = import_benchmark(args.data, args.to, args.db or None, reader=args.reader)
    table = Table(title=f"import {args.data} -> {args.to}")
    for column in ("db_id", "tables", "rows", "coerced", "keys not kept", "s", "error"):
        table.add_column(column)
    for r in reports:
        table.add_row(r.db_id, str(r.tables), str(r.rows), str(len(r.coerced)), str(len(r.keys_not_kept)),
                      f"{r.elapsed_s:.2f}", r.error or "")  # fmt: skip
    console.print(table)
    for r in reports:
        for line in r.coerced:
            console.print(f"[yellow]coerced[/yellow] {r.db_id}: {line}", highlight=False)
    failed = [r for r in reports if r.error]
    console.print(f"{len(reports) - len(failed)} of {len(reports)} databases imported, "
                  f"{sum(r.rows for r in reports)} rows, {sum(len(r.coerced) for r in reports)} columns coerced")  # fmt: skip
    if engine_for(args.to).name == "postgres":
        console.print(f"the sandbox connects as the read-only role: --engine '{reader_url(args.to, args.reader)}'",
                      highlight=False, soft_wrap=True)  # fmt: skip
    if args.out:
        atomic_write_json(args.out, {"to": args.to, "databases": [r.to_json() for r in reports]})
        console.print(f"wrote {args.out}")
    return 1 if failed else 0


def add_db_parser(commands: argparse._SubParsersAction) -> None:
    """Register the ``db`` sub-command group (``db import``)."""
    db = commands.add_parser("db", help="databases on other engines (DuckDB, PostgreSQL)")
    sub = db.add_subparsers(dest="db_command", required=True, metavar="DB_COMMAND")
    imp = sub.add_parser(
        "import",
        help="copy a benchmark's SQLite databases into DuckDB files or PostgreSQL databases",
        description="Copy every <db_id>/<db_id>.sqlite below --data to --to, keeping types, keys and NULLs; "
        "the report names every column it coerced and every key it could not keep.",
    )
    imp.add_argument("--data", type=Path, required=True, help="benchmark folder (e.g. ../shared/data/spider)")
    imp.add_argument("--to", required=True, help="duckdb:OUT_DIR (writes OUT_DIR/<db_id>.duckdb) or a superuser's "
                     "postgresql://USER@HOST:PORT/ URL (one database per db_id; Unix socket: "
                     "postgresql://USER@/postgres?host=DIR&port=N)")  # fmt: skip
    imp.add_argument("--db", action="append", help="only this db_id (repeatable)")
    imp.add_argument("--reader", default="finestep_reader", help="PostgreSQL: the read-only role the sandbox uses")
    imp.add_argument("--out", type=Path, help="write the report as JSON here")
    imp.set_defaults(handler=_cmd_db_import)
