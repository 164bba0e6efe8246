"""The sandbox: nothing a query does can change the database, exhaust memory or run past its time limit."""

from __future__ import annotations

import hashlib
import os
import tempfile
import threading
import time
from pathlib import Path

import pytest

from finestep.sql.executor import ErrorKind, SandboxLimits, SqlSandbox, execute

ATTACKS = [
    ("INSERT INTO team VALUES (9, 'x', 'y')", ErrorKind.FORBIDDEN),
    ("UPDATE player SET goals = 0", ErrorKind.FORBIDDEN),
    ("DELETE FROM player", ErrorKind.FORBIDDEN),
    ("REPLACE INTO team VALUES (1, 'x', 'y')", ErrorKind.FORBIDDEN),
    ("DROP TABLE player", ErrorKind.FORBIDDEN),
    ("CREATE TABLE evil (a)", ErrorKind.FORBIDDEN),
    ("CREATE TEMP TABLE evil (a)", ErrorKind.FORBIDDEN),
    ("CREATE INDEX evil ON player(goals)", ErrorKind.FORBIDDEN),
    ("ALTER TABLE player ADD COLUMN evil", ErrorKind.FORBIDDEN),
    ("CREATE VIEW evil AS SELECT 1", ErrorKind.FORBIDDEN),
    ("ATTACH DATABASE ':memory:' AS other", ErrorKind.FORBIDDEN),
    ("SELECT load_extension('/tmp/libevil.so')", ErrorKind.FORBIDDEN),
    ("PRAGMA writable_schema = ON", ErrorKind.FORBIDDEN),
    ("PRAGMA journal_mode = DELETE", ErrorKind.FORBIDDEN),
    ("PRAGMA query_only = OFF", ErrorKind.FORBIDDEN),
    ("PRAGMA user_version = 7", ErrorKind.FORBIDDEN),
    ("VACUUM", ErrorKind.FORBIDDEN),
    ("REINDEX", ErrorKind.FORBIDDEN),
    ("ANALYZE", ErrorKind.FORBIDDEN),
    ("BEGIN IMMEDIATE", ErrorKind.FORBIDDEN),
    ("UPDATE sqlite_master SET sql = 'x'", ErrorKind.FORBIDDEN),
    ("SELECT * FROM pragma_user_version", ErrorKind.FORBIDDEN),
    ("SELECT 1; DELETE FROM player", ErrorKind.MULTIPLE_STATEMENTS),
    ("SELECT 1; SELECT 2", ErrorKind.MULTIPLE_STATEMENTS),
]


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize(("sql", "kind"), ATTACKS)
def test_writes_and_escapes_are_refused(db: Path, sql: str, kind: str) -> None:
    before = digest(db)
    result = execute(db, sql)
    assert result.error_kind == kind, result
    assert result.rows == ()
    assert digest(db) == before
    # the database still answers normally afterwards
    assert execute(db, "SELECT count(*) FROM player").rows == ((4,),)


def test_vacuum_into_cannot_write_a_file(db: Path, tmp_path: Path) -> None:
    target = tmp_path / "copy.sqlite"
    assert execute(db, f"VACUUM INTO '{target}'").error_kind == ErrorKind.FORBIDDEN
    assert not target.exists()


def test_introspection_pragmas_are_allowed(db: Path) -> None:
    result = execute(db, "PRAGMA table_info(player)")
    assert result.ok
    assert [row[1] for row in result.rows] == ["id", "name", "team_id", "goals"]
    assert execute(db, "SELECT name FROM pragma_table_info('team')").rows == (("id",), ("name",), ("city",))
    assert execute(db, "SELECT value FROM json_each('[1, 2]')").rows == ((1,), (2,))


def test_runaway_recursive_cte_times_out_within_limit(db: Path) -> None:
    limit = 0.5
    sql = "WITH RECURSIVE r(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM r) SELECT count(*) FROM r"
    start = time.perf_counter()
    result = execute(db, sql, SandboxLimits(timeout_s=limit))
    elapsed = time.perf_counter() - start
    assert result.error_kind == ErrorKind.TIMEOUT
    assert limit <= elapsed < 1.5 * limit
    # nothing left running behind our back (the engines' one deadline watchdog per process, idle, aside)
    assert [t for t in threading.enumerate() if t.name != "finestep-deadline"] == [threading.main_thread()]


def test_huge_cross_join_is_cut_off(db: Path) -> None:
    limits = SandboxLimits(timeout_s=0.5, max_rows=1000)
    rows = execute(db, "SELECT a.n, b.n, c.n, d.n FROM numbers a, numbers b, numbers c, numbers d", limits)
    assert rows.ok and rows.truncated_rows and len(rows.rows) == 1000
    # 200**4 = 1.6e9 rows: counting them cannot finish in time
    start = time.perf_counter()
    counted = execute(db, "SELECT count(*) FROM numbers a, numbers b, numbers c, numbers d", limits)
    assert counted.error_kind == ErrorKind.TIMEOUT
    assert time.perf_counter() - start < 0.75


def test_gigabyte_blob_is_refused_not_allocated(db: Path) -> None:
    for sql in ("SELECT randomblob(1000000000)", "SELECT length(zeroblob(1000000000))"):
        result = execute(db, sql)
        assert result.error_kind == ErrorKind.TOO_LARGE, result


def test_byte_cap_truncates(db: Path) -> None:
    limits = SandboxLimits(max_bytes=2000, max_value_bytes=1000)
    result = execute(db, "SELECT printf('%.500c', 'x') FROM numbers", limits)
    assert result.ok and result.truncated_bytes and not result.truncated_rows
    assert 0 < len(result.rows) < 200 and result.nbytes <= 2000


def test_non_utf8_text_is_returned_not_an_error(db: Path) -> None:
    result = execute(db, "SELECT name FROM team WHERE id = 4")
    assert result.ok
    assert result.rows == (("Caf\ufffd\ufffd",),) or result.rows[0][0].startswith("Caf")


@pytest.mark.parametrize(
    ("sql", "kind"),
    [
        ("", ErrorKind.EMPTY),
        ("  ;; ", ErrorKind.EMPTY),
        ("SELEC name FROM team", ErrorKind.SYNTAX),
        ("SELECT nope FROM team", ErrorKind.SCHEMA),
        ("SELECT * FROM nowhere", ErrorKind.SCHEMA),
        ("SELECT abs('a', 'b')", ErrorKind.RUNTIME),
    ],
)
def test_errors_are_classified(db: Path, sql: str, kind: str) -> None:
    result = execute(db, sql)
    assert result.error_kind == kind and result.error


def test_result_record(db: Path) -> None:
    result = execute(db, "SELECT name, goals FROM player WHERE goals = 7 ORDER BY name;  ")
    assert result.ok and result.columns == ("name", "goals")
    assert result.rows == (("Cid", 7), ("Dee", 7))
    assert not result.truncated and result.elapsed_s > 0


def test_missing_database_is_reported(tmp_path: Path) -> None:
    result = execute(tmp_path / "absent.sqlite", "SELECT 1")
    assert result.error_kind == ErrorKind.MISSING_DATABASE
    assert not (tmp_path / "absent.sqlite").exists()  # mode=ro never creates the file


def test_no_temp_files_left(db: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    tmp_dir = tmp_path / "tmp"
    tmp_dir.mkdir()
    monkeypatch.setenv("SQLITE_TMPDIR", str(tmp_dir))
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_dir))
    # a large sort and a materialized subquery would spill to etilqs_* files with a file temp store
    sql = "SELECT a.n * 1000 + b.n AS k FROM numbers a, numbers b ORDER BY k DESC LIMIT 3"
    assert execute(db, sql).rows == ((199199,), (199198,), (199197,))
    assert os.listdir(tmp_dir) == []


def test_cache_answers_repeats_of_the_exact_text(db: Path) -> None:
    sandbox = SqlSandbox(cache_entries=2)
    first = sandbox.execute(db, "SELECT name FROM team WHERE id = 1")
    again = sandbox.execute(db, "SELECT name FROM team WHERE id = 1 ;  -- the same query")
    assert not first.cached and again.cached and again.rows == first.rows == (("Lions",),)
    # other whitespace is another key (SQLite reads a comment up to the line end, so no collapsing is safe)
    assert not sandbox.execute(db, "SELECT  name FROM team WHERE id = 1").cached
    assert sandbox.execute(db, "SELECT 'a  b'").rows == (("a  b",),)
    assert sandbox.execute(db, "SELECT 'a b'").rows == (("a b",),)
    assert len(sandbox.cache) == 2  # bounded: the oldest entries were evicted
    assert not sandbox.execute(db, "SELECT name FROM team WHERE id = 1").cached


def test_cache_is_bounded_by_bytes(db: Path) -> None:
    sandbox = SqlSandbox(cache_entries=100, cache_bytes=5000)
    for i in range(10):
        sandbox.execute(db, f"SELECT n, printf('%.40c', 'x'), {i} FROM numbers")  # 200 rows * ~55 bytes: too big
    assert len(sandbox.cache) == 0
    for i in range(100):  # 10 rows: about 500 bytes of Python objects each, fewer than 100 fit
        sandbox.execute(db, f"SELECT n FROM numbers WHERE n < 10 AND {i} = {i}")
    assert 0 < len(sandbox.cache) < 100 and sandbox.cache.nbytes <= 5000


def test_execute_many_keeps_input_order_over_a_pool(db: Path) -> None:
    sandbox = SqlSandbox()
    jobs = [(db, f"SELECT {i} + count(*) FROM numbers") for i in range(40)] + [(db, "DELETE FROM team")]
    results = sandbox.execute_many(jobs, workers=2)
    assert [r.rows for r in results[:40]] == [((200 + i,),) for i in range(40)]
    assert results[40].error_kind == ErrorKind.FORBIDDEN
    assert all(r.cached for r in sandbox.execute_many(jobs[:5], workers=2))
