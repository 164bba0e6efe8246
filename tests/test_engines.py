"""DuckDB and PostgreSQL (a real, throwaway server) behind the same sandbox as SQLite: the registry, the import,
identical answers and observations, and every hostile query held on every engine."""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import psycopg
import pytest

from finestep.agent.protocol import ObservationFormat, format_observation
from finestep.cli import main
from finestep.sql.engines import EngineError, database_for, engine_for, execute, get_engine
from finestep.sql.engines.common import Deadline
from finestep.sql.engines.hostile import HOSTILE, verdict
from finestep.sql.engines.importer import import_benchmark, import_database, reader_url
from finestep.sql.executor import SandboxLimits, SqlSandbox
from tests.conftest import make_db

ENGINES = ("sqlite", "duckdb", "postgres")


@pytest.fixture(scope="session")
def league(tmp_path_factory: pytest.TempPathFactory, pg_server) -> dict[str, str]:
    """The small test database on every engine: ``{engine: database string}``."""
    root = tmp_path_factory.mktemp("league")
    (root / "league").mkdir()
    source = make_db(root / "league" / "league.sqlite")
    import_benchmark(root, f"duckdb:{root / 'duck'}")
    import_benchmark(root, pg_server.url())
    return {"sqlite": str(source), "duckdb": f"duckdb:{root / 'duck' / 'league.duckdb'}",
            "postgres": database_for(reader_url(pg_server.url()), "league")}  # fmt: skip


@pytest.fixture(scope="session")
def flight_4(tmp_path_factory: pytest.TempPathFactory, pg_server, spider: Path) -> dict[str, str]:
    """Spider's flight_4 (67,240 routes) on every engine."""
    root = tmp_path_factory.mktemp("flight")
    import_benchmark(spider, f"duckdb:{root}", ["flight_4"])
    import_benchmark(spider, pg_server.url(), ["flight_4"])
    return {"sqlite": str(spider / "database" / "flight_4" / "flight_4.sqlite"),
            "duckdb": f"duckdb:{root / 'flight_4.duckdb'}",
            "postgres": database_for(reader_url(pg_server.url()), "flight_4")}  # fmt: skip


def test_the_registry_names_each_engine_by_its_database_string() -> None:
    assert engine_for("a/b.sqlite").name == "sqlite" and engine_for(Path("x.db")).name == "sqlite"
    assert engine_for("duckdb:/data/x.duckdb").name == "duckdb"
    assert engine_for("postgresql://u@/db?host=/tmp&port=5").name == "postgres"
    assert database_for("duckdb:/out", "car_1") == "duckdb:/out/car_1.duckdb"
    assert database_for("postgresql://r@/?host=/s&port=7", "car_1") == "postgresql://r@/car_1?host=/s&port=7"
    assert database_for("/spider/database", "car_1") == "/spider/database/car_1/car_1.sqlite"
    with pytest.raises(ValueError, match="unknown engine"):
        get_engine("oracle")


QUERIES = [
    "SELECT name, city FROM team ORDER BY id",
    "SELECT t.name, count(*), sum(p.goals) FROM player p JOIN team t ON p.team_id = t.id GROUP BY t.name ORDER BY 1",
    "SELECT avg(goals) FROM player",
    "SELECT count(*) FROM numbers WHERE n % 3 = 0",
    "SELECT city FROM team WHERE city IS NULL",
]


@pytest.mark.parametrize("sql", QUERIES)
def test_every_engine_answers_as_sqlite_in_the_sandbox(league: dict[str, str], sql: str) -> None:
    with SqlSandbox(SandboxLimits(timeout_s=5)) as sandbox:
        answers = {engine: sandbox.execute(db, sql) for engine, db in league.items()}
    expected = answers["sqlite"]
    assert expected.ok
    for engine in ("duckdb", "postgres"):
        assert answers[engine].ok, (engine, answers[engine].error)
        assert answers[engine].rows == expected.rows, engine
    text = {e: format_observation(r, 2, ObservationFormat()) for e, r in answers.items()}
    if sql.startswith("SELECT name, city"):  # column names as written: the same observation text
        assert text["duckdb"] == text["postgres"] == text["sqlite"]


def test_the_import_keeps_nulls_and_keys_and_names_what_it_coerced(tmp_path: Path, pg_server) -> None:
    source = make_db(tmp_path / "league.sqlite")
    report = import_database(source, f"duckdb:{tmp_path / 'l.duckdb'}")
    assert report.tables == 3 and report.rows == 4 + 4 + 200
    assert any(line.startswith("team.name: text that is not UTF-8") for line in report.coerced)
    assert execute(f"duckdb:{tmp_path / 'l.duckdb'}", "SELECT count(*) FROM team WHERE city IS NULL").rows == ((1,),)
    admin = pg_server.url("league_keys")
    report = import_database(source, admin, admin_url=pg_server.url())
    assert report.error is None and not report.keys_not_kept, report.keys_not_kept
    with psycopg.connect(admin) as conn:
        kinds = {r[0] for r in conn.execute("SELECT contype FROM pg_constraint WHERE conrelid = 'player'::regclass")}
    assert kinds == {"p", "f"}


def test_the_sandbox_refuses_a_role_that_can_write(pg_server, league: dict[str, str]) -> None:
    with pytest.raises(EngineError, match="superuser"):
        get_engine("postgres").open(pg_server.url("league"), SandboxLimits())
    answer = execute(pg_server.url("league"), "SELECT 1")
    assert answer.error_kind == "runtime" and "read-only role" in (answer.error or "")


def _fingerprint(db: str, pg_server) -> str:
    if db.startswith("postgresql://"):
        name = db.split("?")[0].rsplit("/", 1)[1]
        with psycopg.connect(pg_server.url(name)) as conn:
            rows = conn.execute("SELECT relname, n_tup_ins + n_tup_upd + n_tup_del FROM pg_stat_user_tables "
                                "ORDER BY 1").fetchall()  # fmt: skip
            rows += conn.execute("SELECT count(*) FROM routes").fetchall()
        return json.dumps(rows)
    path = db.removeprefix("duckdb:")
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


@pytest.mark.slow
@pytest.mark.parametrize("engine", ["duckdb", "postgres"])
def test_hostile_queries_are_held_on_every_engine(flight_4: dict[str, str], pg_server, engine: str) -> None:
    db = flight_4[engine]
    limits = SandboxLimits(timeout_s=2.0)  # 1 s was within 1.5x alone, not under a loaded machine
    before = _fingerprint(db, pg_server)
    failures = []
    with SqlSandbox(limits, cache_entries=0) as sandbox:
        sandbox.execute(db, "SELECT 1")  # the worker is up: time the queries, not the start
        for name, sqls, accepted in HOSTILE:
            start = time.perf_counter()
            result = sandbox.execute(db, sqls[engine])
            elapsed = time.perf_counter() - start
            if verdict(result) not in accepted or elapsed >= 1.5 * limits.timeout_s:
                failures.append((name, verdict(result), round(elapsed, 2), result.error))
        assert sandbox.execute(db, "SELECT count(*) FROM routes").rows == ((67240,),)
    assert not failures
    assert _fingerprint(db, pg_server) == before  # not a byte changed
    if engine == "postgres":  # the advisory lock did not outlive its query; the limits are the role's
        with psycopg.connect(pg_server.url("flight_4"), autocommit=True) as other:
            assert other.execute("SELECT pg_try_advisory_lock(42)").fetchone() == (True,)


def test_finestep_sql_and_db_import_take_engine_urls(tmp_path: Path, pg_server, capsys: pytest.CaptureFixture) -> None:
    (tmp_path / "data" / "cli_league").mkdir(parents=True)
    make_db(tmp_path / "data" / "cli_league" / "cli_league.sqlite")
    out = tmp_path / "report.json"
    code = main(["db", "import", "--data", str(tmp_path / "data"), "--to", f"duckdb:{tmp_path / 'duck'}",
                 "--out", str(out)])  # fmt: skip
    assert code == 0 and json.loads(out.read_text())["databases"][0]["db_id"] == "cli_league"
    assert main(["db", "import", "--data", str(tmp_path / "data"), "--to", pg_server.url()]) == 0
    capsys.readouterr()
    pg = database_for(reader_url(pg_server.url()), "cli_league")
    for db in (f"duckdb:{tmp_path / 'duck' / 'cli_league.duckdb'}", pg):
        assert main(["sql", "--db", db, "SELECT count(*) FROM numbers"]) == 0
        assert "200" in capsys.readouterr().out


def test_the_deadline_stops_only_late_work_and_waits_for_a_stop_under_way() -> None:
    calls: list[str] = []
    with Deadline(10.0, lambda: calls.append("early")) as quick:
        pass
    assert not quick.fired

    def slow_stop() -> None:
        time.sleep(0.2)
        calls.append("stopped")

    with Deadline(0.05, slow_stop) as late:
        time.sleep(0.1)  # the deadline passes inside the block; leaving it waits for the stop under way
    assert late.fired and calls == ["stopped"]
    start = time.perf_counter()
    # the watchdog sleeps until the outer deadline and is woken for the earlier, inner one
    with Deadline(5.0, lambda: calls.append("outer")) as outer, Deadline(0.05, lambda: calls.append("inner")) as inner:
        while not inner.fired and time.perf_counter() - start < 2.0:
            time.sleep(0.01)
    assert inner.fired and not outer.fired and calls == ["stopped", "inner"]
    assert time.perf_counter() - start < 1.0
