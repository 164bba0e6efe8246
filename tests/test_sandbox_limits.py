"""Hostile queries against the sandbox's time, memory and cache promises (issue 11's measured failures).

Each case failed before supervised workers: a builtin call that SQLite cannot interrupt ran 12.9x its
limit, an in-memory sort of blobs grew to 2.25 GB, 64 fetched blobs reached 1.28 GB against a 32 MB cap,
Ctrl-C became a timeout, and the cache answered a different query or a stale timeout.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import pytest

from finestep.sql.engine import strip_sql
from finestep.sql.executor import ErrorKind, ExecutionResult, SandboxLimits, SqlSandbox, _ResultCache, execute
from finestep.sql.workers import hard_deadline_s

# One builtin call, quadratic in the size of its arguments: one VM instruction the progress handler cannot stop.
INSTR = "SELECT instr(printf('%.*c', 2000000, 'a'), printf('%.*c', 1000000, 'a') || 'b')"
REPLACE = "SELECT length(replace(printf('%.*c', 2000000, 'a'), printf('%.*c', 1000000, 'a') || 'b', 'x'))"
SORT_BLOBS = "SELECT zeroblob(100000) FROM airports a, routes b ORDER BY random()"  # flight_4: 483M rows x 100 kB
BIG_ROWS = "SELECT zeroblob(4000000) FROM airports LIMIT 64"
RUNAWAY_CTE = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT count(*) FROM c"
MB = 2**20


def vm_hwm(pid: int) -> int:
    """Peak resident bytes of process ``pid``."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM")  # pragma: no cover


@pytest.fixture
def flight_4(spider: Path) -> Path:
    return spider / "database" / "flight_4" / "flight_4.sqlite"


# --- time ---------------------------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("sql", [INSTR, REPLACE], ids=["instr", "replace"])
def test_an_uninterruptible_builtin_call_is_stopped_within_1_5x_its_limit(db: Path, sql: str) -> None:
    limits = SandboxLimits(timeout_s=1.0)
    with SqlSandbox(limits) as sandbox:
        sandbox.execute(db, "SELECT 1")  # the worker is up: time the query, not the process start
        start = time.perf_counter()
        result = sandbox.execute(db, sql)
        elapsed = time.perf_counter() - start
        assert result.error_kind == ErrorKind.TIMEOUT, result
        assert limits.timeout_s <= elapsed < 1.5 * limits.timeout_s
        assert sandbox.pool is not None and sandbox.pool.killed == 1
        # the replacement worker answers the next query, and the timeout was not cached
        assert sandbox.execute(db, "SELECT count(*) FROM numbers").rows == ((200,),)
        assert len(sandbox.cache) == 2  # the two answered queries, not the timeout
    assert hard_deadline_s(limits) < 1.5 * limits.timeout_s


def test_a_timeout_is_never_cached(db: Path) -> None:
    with SqlSandbox(SandboxLimits(timeout_s=0.2)) as sandbox:
        first = sandbox.execute(db, RUNAWAY_CTE)
        again = sandbox.execute(db, RUNAWAY_CTE)
    assert first.error_kind == again.error_kind == ErrorKind.TIMEOUT
    assert not again.cached and len(sandbox.cache) == 0


# --- memory -------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_an_in_memory_sort_of_blobs_stops_at_the_memory_cap(flight_4: Path) -> None:
    limits = SandboxLimits(timeout_s=10.0)  # a long limit: the memory cap, not the deadline, must stop it
    with SqlSandbox(limits) as sandbox:
        sandbox.execute(flight_4, "SELECT count(*) FROM airports")
        assert sandbox.pool is not None
        (pid,) = sandbox.pool.idle_pids()
        baseline = vm_hwm(pid)
        start = time.perf_counter()
        result = sandbox.execute(flight_4, SORT_BLOBS)
        elapsed = time.perf_counter() - start
        assert result.error_kind == ErrorKind.TOO_LARGE, result
        assert elapsed < limits.timeout_s
        assert sandbox.pool.idle_pids() == [pid]  # the worker survived it
        assert vm_hwm(pid) - baseline < limits.max_memory_bytes + 64 * MB  # was 2.25 GB


@pytest.mark.slow
def test_huge_rows_stop_at_the_byte_cap_before_they_fill_memory(flight_4: Path) -> None:
    limits = SandboxLimits(timeout_s=10.0)  # max_bytes 32 MB; each row is 4 MB
    with SqlSandbox(limits) as sandbox:
        sandbox.execute(flight_4, "SELECT count(*) FROM airports")
        assert sandbox.pool is not None
        (pid,) = sandbox.pool.idle_pids()
        baseline = vm_hwm(pid)
        result = sandbox.execute(flight_4, BIG_ROWS)
        assert result.ok and result.truncated_bytes and len(result.rows) == 8 and result.nbytes == 32_000_000
        assert vm_hwm(pid) - baseline < 200 * MB  # was 1.28 GB


def test_rows_are_measured_without_building_their_text(db: Path) -> None:
    result = execute(db, "SELECT zeroblob(1000), 'abc', 7, NULL, 2.5")
    assert result.nbytes == 1000 + 3 + 8 + 8 + 8


# --- Ctrl-C ------------------------------------------------------------------------------------------------


@pytest.fixture
def ctrl_c() -> Iterator[None]:
    """Ctrl-C as a terminal delivers it, even when pytest was started with SIGINT ignored (a background job of a
    non-interactive shell): Python then installs no KeyboardInterrupt handler and children inherit the SIG_IGN."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


def test_ctrl_c_in_process_is_an_interrupt_not_a_timeout(db: Path, ctrl_c: None) -> None:
    timer = threading.Timer(0.3, os.kill, (os.getpid(), signal.SIGINT))
    timer.start()
    start = time.perf_counter()
    with pytest.raises(KeyboardInterrupt):
        execute(db, RUNAWAY_CTE, SandboxLimits(timeout_s=30.0))
    assert time.perf_counter() - start < 2.0
    timer.cancel()


def _finestep(*args: str) -> subprocess.Popen[str]:
    code = "import sys; from finestep.cli import main; sys.exit(main())"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    return subprocess.Popen([sys.executable, "-c", code, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env)  # fmt: skip


def _interrupt(process: subprocess.Popen[str], after_s: float) -> tuple[int, float, str, str]:
    time.sleep(after_s)
    process.send_signal(signal.SIGINT)
    sent = time.perf_counter()
    out, err = process.communicate(timeout=30)
    return process.returncode, time.perf_counter() - sent, out, err


@pytest.mark.slow
def test_ctrl_c_stops_finestep_sql_with_exit_130(db: Path, ctrl_c: None) -> None:
    process = _finestep("sql", "--db", str(db), "--timeout", "60", INSTR)
    code, waited, out, err = _interrupt(process, 3.0)
    assert code == 130 and waited < 1.0, (code, waited, err)
    assert "interrupted" in err and "time limit" not in out + err


@pytest.mark.slow
def test_ctrl_c_stops_finestep_eval_within_a_second_without_output(tmp_path: Path, ctrl_c: None) -> None:
    from tests.test_eval_runaways import write_runaway_benchmark

    data, preds = write_runaway_benchmark(tmp_path, n_runaways=8, n_normal=8)
    out = tmp_path / "report.json"
    process = _finestep("eval", "--benchmark", "bird", "--data", str(data), "--predictions", str(preds),
                        "--workers", "2", "--timeout", "60", "--out", str(out))  # fmt: skip
    code, waited, _, err = _interrupt(process, 4.0)
    assert code == 130 and waited < 1.0, (code, waited, err)
    assert not out.exists()


# --- the cache ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("first", "second", "second_rows"),
    [
        # a -- comment runs to the line end: the line break makes WHERE part of the query
        ("SELECT name FROM team -- x WHERE id = 1", "SELECT name FROM team -- x\nWHERE id = 1", 1),
        # to SQLite a non-breaking space is part of a name, not whitespace
        ("SELECT name FROM team WHERE id = 1", "SELECT name FROM team WHERE id\u00a0= 1", None),
    ],
    ids=["comment", "nbsp"],
)
def test_the_cache_never_answers_a_different_query(db: Path, first: str, second: str, second_rows: int | None) -> None:
    with SqlSandbox() as sandbox:
        sandbox.execute(db, first)
        result = sandbox.execute(db, second)
        assert not result.cached
        expected = execute(db, second)
        assert (result.rows, result.error_kind) == (expected.rows, expected.error_kind)
        if second_rows is not None:
            assert len(result.rows) == second_rows


def test_the_cache_counts_every_byte_it_holds() -> None:
    # 3,000 entries whose bytes are in column names, error text and the SQL key, under a 1 MB cap
    cache = _ResultCache(max_entries=10_000, max_bytes=MB)
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for i in range(3000):
        sql = f"SELECT {i} AS \"{'c' * 50_000}\" -- {'x' * 50_000}"
        result = ExecutionResult(columns=("c" * 50_000 + str(i),), rows=((i,),), error=None)
        cache.put(("db", 0, 0, 0, sql), result)
        del sql, result
    held = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    assert cache.nbytes <= MB and held < 2 * MB  # was 558 MB
    assert 0 < len(cache) < 20


# --- legitimate reads --------------------------------------------------------------------------------------


def test_trailing_semicolons_and_comments_are_not_a_second_statement(db: Path) -> None:
    assert execute(db, "SELECT 1;; -- done").rows == ((1,),)
    assert execute(db, "SELECT 1; /* c */ ;\n-- done\n").rows == ((1,),)
    assert execute(db, "SELECT 1; SELECT 2").error_kind == ErrorKind.MULTIPLE_STATEMENTS
    assert strip_sql("SELECT '--;' ;; -- x") == "SELECT '--;'"


def test_a_list_of_sql_is_a_clear_error_not_a_type_error(db: Path) -> None:
    with SqlSandbox() as sandbox:
        result = sandbox.execute(db, ["SELECT 1"])  # type: ignore[arg-type]
    assert result.error_kind == ErrorKind.EMPTY and "one string, got list" in (result.error or "")


def _make_special_db(path: Path, wal: bool) -> Path:
    conn = sqlite3.connect(path)
    if wal:
        conn.execute("PRAGMA journal_mode = WAL")
    conn.executescript(
        "CREATE VIRTUAL TABLE docs USING fts5(body); INSERT INTO docs VALUES ('hello world'), ('bye');"
        "CREATE VIRTUAL TABLE box USING rtree(id, x0, x1); INSERT INTO box VALUES (1, 0, 5), (2, 6, 9);"
        "CREATE TABLE t (a); INSERT INTO t VALUES (1);"
    )
    conn.commit()
    conn.close()
    return path


@pytest.mark.parametrize("wal", [False, True], ids=["rollback", "wal"])
def test_fts5_rtree_and_wal_databases_are_readable_and_left_untouched(tmp_path: Path, wal: bool) -> None:
    db = _make_special_db(tmp_path / "special.sqlite", wal)
    before = sorted(os.listdir(tmp_path))
    content = db.read_bytes()
    with SqlSandbox() as sandbox:
        assert sandbox.execute(db, "SELECT body FROM docs WHERE docs MATCH 'hello'").rows == (("hello world",),)
        assert sandbox.execute(db, "SELECT id FROM box WHERE x0 > 3").rows == ((2,),)
        assert sandbox.execute(db, "SELECT a FROM t").rows == ((1,),)
        assert sandbox.execute(db, "INSERT INTO box_node VALUES (9, x'00')").error_kind == ErrorKind.FORBIDDEN
    assert execute(db, "SELECT count(*) FROM docs").rows == ((2,),)
    assert sorted(os.listdir(tmp_path)) == before  # no -wal or -shm file left beside it
    assert db.read_bytes() == content


def test_a_worker_killed_from_outside_is_replaced(db: Path) -> None:
    with SqlSandbox(SandboxLimits(timeout_s=5.0)) as sandbox:
        assert sandbox.execute(db, "SELECT 1").rows == ((1,),)
        assert sandbox.pool is not None
        (pid,) = sandbox.pool.idle_pids()
        os.kill(pid, signal.SIGKILL)  # while idle (as the system's OOM killer would)
        time.sleep(0.1)
        assert sandbox.execute(db, "SELECT count(*) FROM numbers").rows == ((200,),)
        (pid,) = sandbox.pool.idle_pids()
        threading.Timer(0.3, os.kill, (pid, signal.SIGKILL)).start()  # while busy
        result = sandbox.execute(db, RUNAWAY_CTE)
        assert result.error_kind == ErrorKind.TOO_LARGE and "died" in (result.error or "")
        assert sandbox.execute(db, "SELECT 2").rows == ((2,),)


def test_a_write_to_a_wal_database_is_never_answered_from_the_cache(tmp_path: Path) -> None:
    db = tmp_path / "w.sqlite"
    writer = sqlite3.connect(db)
    writer.execute("PRAGMA journal_mode = WAL")
    writer.execute("CREATE TABLE t (a)")
    writer.execute("INSERT INTO t VALUES (1)")
    writer.commit()  # the writer stays open: the change lives in the -wal file, the main file is unchanged
    with SqlSandbox() as sandbox:
        assert sandbox.execute(db, "SELECT count(*) FROM t").rows == ((1,),)
        writer.execute("INSERT INTO t VALUES (2)")
        writer.commit()
        again = sandbox.execute(db, "SELECT count(*) FROM t")
    writer.close()
    assert not again.cached and again.rows == ((2,),)
