"""The hostile queries of the sandbox's promises, in each engine's dialect (tests and benchmarks run them).

Each case is ``(name, {engine: sql}, accepted verdicts)`` on Spider's flight_4 (airports, routes), imported to
every engine. A verdict is an error kind, ``truncated_bytes``/``truncated_rows`` or ``ok``. Whatever the verdict,
no query may change a byte of the database, outlive 1.5x its limit, or lift its own limits.
"""

from __future__ import annotations

__all__ = ["HOSTILE", "verdict"]

_RUNAWAY = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT count(*) FROM c"
_CROSS = "SELECT count(*) FROM routes a, routes b, airports c"
_STOPPED = frozenset({"timeout"})
_FORBIDDEN = frozenset({"forbidden"})
_MEMORY = frozenset({"too_large", "timeout"})

HOSTILE: list[tuple[str, dict[str, str], frozenset[str]]] = [
    ("recursive CTE", {"sqlite": _RUNAWAY, "duckdb": _RUNAWAY, "postgres": _RUNAWAY}, _STOPPED),
    ("cross join", {"sqlite": _CROSS, "duckdb": _CROSS, "postgres": _CROSS}, _STOPPED),
    ("sleep / busy builtin", {
        "sqlite": "SELECT instr(printf('%.*c', 2000000, 'a'), printf('%.*c', 1000000, 'a') || 'b')",
        "duckdb": "SELECT count(*) FROM range(1000000000) a, range(1000) b WHERE a.range % 7 = b.range",
        "postgres": "SELECT pg_sleep(30)",
    }, _STOPPED),
    ("1 GB string", {
        "sqlite": "SELECT length(randomblob(1000000000))",
        "duckdb": "SELECT length(repeat('a', 1000000000))",
        "postgres": "SELECT length(repeat('a', 1000000000))",
    }, frozenset({"too_large", "timeout", "ok"})),
    ("sort of big blobs", {
        "sqlite": "SELECT zeroblob(100000) FROM airports a, routes b ORDER BY random()",
        "duckdb": "SELECT repeat('x', 100000) FROM airports a, routes b ORDER BY random()",
        "postgres": "SELECT repeat('x', 100000) FROM airports a, routes b ORDER BY random()",
    }, _MEMORY),
    ("64 rows of 4 MB", {
        "sqlite": "SELECT zeroblob(4000000) FROM airports LIMIT 64",
        "duckdb": "SELECT repeat('x', 4000000) FROM airports LIMIT 64",
        "postgres": "SELECT repeat('x', 4000000) FROM airports LIMIT 64",
    }, frozenset({"truncated_bytes", "too_large"})),  # DuckDB builds the whole result within memory_limit first
    ("write", {e: "DELETE FROM routes" for e in ("sqlite", "duckdb", "postgres")}, _FORBIDDEN),
    ("DDL", {e: "DROP TABLE routes" for e in ("sqlite", "duckdb", "postgres")}, _FORBIDDEN),
    ("temp table", {e: "CREATE TEMP TABLE t AS SELECT 1 AS x" for e in ("sqlite", "duckdb", "postgres")}, _FORBIDDEN),
    ("file read", {
        "sqlite": "ATTACH '/etc/passwd' AS p",
        "duckdb": "SELECT * FROM read_csv('/etc/passwd')",
        "postgres": "SELECT pg_read_file('/etc/passwd')",
    }, _FORBIDDEN),
    ("file write / program", {
        "sqlite": "VACUUM INTO '/tmp/finestep-hostile.db'",
        "duckdb": "COPY routes TO '/tmp/finestep-hostile.csv'",
        "postgres": "COPY (SELECT 1) TO PROGRAM 'touch /tmp/finestep-hostile'",
    }, _FORBIDDEN),
    ("large object / attach", {
        "sqlite": "ATTACH ':memory:' AS m",
        "duckdb": "ATTACH '/tmp/finestep-hostile.duckdb' AS h",
        "postgres": "SELECT lo_import('/etc/passwd')",
    }, _FORBIDDEN),
    ("extension", {
        "sqlite": "SELECT load_extension('/tmp/x.so')",
        "duckdb": "INSTALL httpfs",
        "postgres": "CREATE EXTENSION dblink",
    }, _FORBIDDEN),
    ("remote / dblink", {
        "sqlite": "SELECT load_extension('mod_http')",
        "duckdb": "LOAD httpfs",
        "postgres": "SELECT dblink_exec('dbname=postgres', 'DROP TABLE routes')",
    }, frozenset({"forbidden", "schema"})),
    ("advisory lock", {
        "sqlite": "PRAGMA locking_mode = EXCLUSIVE",
        "duckdb": "SET lock_configuration = false",
        "postgres": "SELECT pg_advisory_lock(42)",
    }, frozenset({"forbidden", "ok"})),
    ("SET of a limit", {
        "sqlite": "PRAGMA hard_heap_limit = 0",
        "duckdb": "SET memory_limit = '100GB'",
        "postgres": "SET statement_timeout = 0",
    }, _FORBIDDEN),
    ("lift the limit inside the query", {
        "sqlite": "SELECT 1 FROM pragma_hard_heap_limit(0)",
        "duckdb": "RESET memory_limit",
        "postgres": "SELECT set_config('statement_timeout', '0', false), pg_sleep(30)",
    }, frozenset({"timeout", "forbidden", "schema"})),
]


def verdict(result: object) -> str:
    """An answer's verdict: its error kind, ``truncated_bytes``, ``truncated_rows`` or ``ok``."""
    kind = getattr(result, "error_kind", None)
    if kind:
        return str(kind)
    if getattr(result, "truncated_bytes", False):
        return "truncated_bytes"
    return "truncated_rows" if getattr(result, "truncated_rows", False) else "ok"
