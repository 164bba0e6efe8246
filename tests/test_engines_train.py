"""Training on a server (issue 21, part 5): a SQLWorld world imported into DuckDB and into a throwaway PostgreSQL
server, the same prompt text on every engine, RL steps with ``data.engine``, rewards that agree with SQLite on the
same trajectories, and ``finestep eval --engine`` end to end (SQLite gold, and gold written for PostgreSQL)."""

from __future__ import annotations

import copy
import json
import random
import shutil
import sqlite3
from pathlib import Path

import pytest

from finestep.agent.trajectory import Trajectory
from finestep.cli import main
from finestep.data.sqlworld import ExpertConfig, World, build_world, expert_plan
from finestep.data.task import DataError, Task
from finestep.env import SqlEnv
from finestep.rewards import score_episodes
from finestep.rewards.config import RewardConfig
from finestep.sql.engine import ErrorKind
from finestep.sql.engines import database_for
from finestep.sql.engines.importer import find_databases, import_benchmark, reader_url
from finestep.sql.executor import SqlSandbox
from finestep.sql.schema import read_schema, schema_prompt
from finestep.train import rl
from finestep.train.config import DataConfig, load_train_config
from finestep.train.data import load_task_data

TINY = Path(__file__).resolve().parents[1] / "configs" / "spider-tiny.yaml"
SMALL = {"n_train_dbs": 2, "n_test_dbs": 1, "questions_per_db": 6}
ENGINES = ("duckdb", "postgres")
STYLES = ({"sample_values": 3}, {"sample_values": 0}, {"style": "compact"})


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    return build_world(tmp_path_factory.mktemp("engine-world") / "world", seed=0, **SMALL)


@pytest.fixture(scope="module")
def engines(world: World, tmp_path_factory: pytest.TempPathFactory, pg_server) -> dict[str, str]:
    """The world imported into every engine: ``{engine: data.engine prefix}``."""
    duck = tmp_path_factory.mktemp("engine-world-duckdb")
    reports = import_benchmark(world.root, f"duckdb:{duck}") + import_benchmark(world.root, pg_server.url())
    assert [r.error for r in reports] == [None] * 6 and {r.db_id for r in reports} == {"w0000", "w0001", "w0002"}
    return {"duckdb": f"duckdb:{duck}", "postgres": reader_url(pg_server.url())}


def _keyed_db(path: Path) -> Path:
    """A database whose prompt exercises what an import changes: types, a TEXT primary key that SQLite samples
    through its index (sorted, not in storage order), a composite key, foreign keys (DuckDB keeps none), an index,
    NULLs, and tables created in an order that is not alphabetical (DuckDB's catalog forgets it)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path)
    conn.executescript(
        """
        CREATE TABLE zone (code TEXT PRIMARY KEY, label VARCHAR(20));
        CREATE TABLE airport (id INTEGER PRIMARY KEY, zone TEXT REFERENCES zone(code), name TEXT, elevation REAL);
        CREATE TABLE route (src INTEGER, dst INTEGER, airline TEXT, PRIMARY KEY (src, dst),
                            FOREIGN KEY (src) REFERENCES airport(id), FOREIGN KEY (dst) REFERENCES airport(id));
        CREATE INDEX route_airline ON route(airline);
        INSERT INTO zone VALUES ('NZ', 'Pacific'), ('BR', 'South'), ('AU', NULL), ('CA', 'North');
        INSERT INTO airport VALUES (7, 'NZ', 'Auckland', 23.5), (3, 'AU', 'Sydney', NULL), (5, 'CA', 'Gander', 151);
        INSERT INTO route VALUES (7, 3, 'Qantas'), (3, 5, 'Air NZ'), (5, 7, 'Air Canada'), (7, 5, 'Air NZ');
        """
    )
    conn.commit()
    conn.close()
    return path


def test_the_schema_prompt_is_the_same_text_on_every_engine(
    world: World, engines: dict[str, str], tmp_path: Path, pg_server
) -> None:
    for db_id, path in find_databases(world.root).items():
        for style in STYLES:
            text = schema_prompt(path, **style)
            assert text.startswith("CREATE TABLE" if "sample_values" in style else "TABLE")
            for engine, prefix in engines.items():
                assert schema_prompt(database_for(prefix, db_id), **style) == text, (engine, db_id, style)
    source = _keyed_db(tmp_path / "data" / "airways" / "airways.sqlite")
    import_benchmark(tmp_path / "data", f"duckdb:{tmp_path / 'duck'}")
    import_benchmark(tmp_path / "data", pg_server.url())
    sqlite_tables = read_schema(source, sample_values=3)
    assert [t.name for t in sqlite_tables] == ["zone", "airport", "route"]
    assert sqlite_tables[0].columns[0].samples == ("AU", "BR", "CA")  # from its index, not in storage order
    for prefix in (f"duckdb:{tmp_path / 'duck'}", reader_url(pg_server.url())):
        db = database_for(prefix, "airways")
        for style in STYLES:
            assert schema_prompt(db, **style) == schema_prompt(source, **style), (db, style)
        assert read_schema(db, sample_values=3)[0].columns[0].samples == ("AU", "BR", "CA")


def test_the_environment_prompt_differs_only_in_the_engine_it_names(world: World, engines: dict[str, str]) -> None:
    task = world.train[0]
    chats = {"sqlite": SqlEnv("tags", schema_sample_values=2).prompt(task)}
    for engine, prefix in engines.items():
        moved = Task(task.id, task.index, task.question, task.db_id, database_for(prefix, task.db_id), task.gold_sql)
        chats[engine] = SqlEnv("tags", schema_sample_values=2).prompt(moved)
    assert chats["duckdb"][1] == chats["postgres"][1] == chats["sqlite"][1]  # schema and question
    system = chats["sqlite"][0]["content"]
    assert "a SQLite database" in system
    assert chats["duckdb"][0]["content"] == system.replace("a SQLite database", "a DuckDB database")
    assert chats["postgres"][0]["content"] == system.replace("a SQLite database", "a PostgreSQL database")
    brief = [SqlEnv("tags", brief_instructions=True).prompt(t) for t in (task, moved)]
    assert brief[0] == brief[1]  # the brief instructions name no engine


def test_a_database_missing_on_the_engine_stops_training_before_it_starts(
    world: World, engines: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    empty = f"duckdb:{tmp_path / 'nothing-imported'}"
    with pytest.raises(DataError, match=r"data\.engine: database 'w0000' is not on duckdb:.*finestep db import"):
        load_task_data(DataConfig(benchmark="sqlworld", path=str(world.root), engine=empty))
    bigger = build_world(tmp_path / "bigger", seed=0, n_train_dbs=4, n_test_dbs=1, questions_per_db=2)
    with pytest.raises(DataError, match=r"data\.engine: database 'w0003' is not on postgresql://"):
        load_task_data(DataConfig(benchmark="sqlworld", path=str(bigger.root), engine=engines["postgres"]))
    run = tmp_path / "run"
    code = main(["train", "--config", str(TINY), "--run-dir", str(run), "data.benchmark=sqlworld",
                 f"data.path={world.root}", f"data.engine={empty}"])  # fmt: skip
    assert code == 2 and "data.engine: database 'w0000'" in capsys.readouterr().err
    assert not run.exists()  # refused before anything was written
    with pytest.raises(ValueError, match="engine: expected duckdb:DIR or a PostgreSQL URL prefix"):
        DataConfig(benchmark="sqlworld", path=str(world.root), engine="/some/folder")


def _on_sqlite(trajectories: list[Trajectory], world: World, sandbox: SqlSandbox) -> list[Trajectory]:
    """The same trajectories on the world's SQLite files: each SQL step executed again there."""
    sqlite_tasks = {t.id: t for t in world.train + world.test}
    out = []
    for traj in trajectories:
        twin = copy.deepcopy(traj)
        twin.task = sqlite_tasks[traj.task.id]
        for step in twin.steps:
            if step.result is not None:
                step.result = sandbox.execute(twin.task.db_path, step.action.sql)
        out.append(twin)
    return out


def _assert_ran_on(trajectories: list[Trajectory], prefix: str) -> None:
    for traj in trajectories:
        assert traj.task.db_path == database_for(prefix, traj.task.db_id)
        for step in traj.steps:
            if step.result is not None:  # executed there: never a missing database or a connection failure
                assert step.result.error_kind != ErrorKind.MISSING_DATABASE, step.result.error
                assert "cannot open database" not in (step.result.error or "")


def _expert_episodes(tasks: list[Task], world: World, sandbox: SqlSandbox) -> list[Trajectory]:
    """The scripted SQLWorld expert (with its imperfections: wasted, redundant and failing queries, skipped probes)
    played through the environment, as a model's turns would be."""
    config = ExpertConfig(p_redundant_probe=0.5, p_fail_repair=0.5, p_skip_probe=0.3, p_wasted_probe=0.3)
    episodes = []
    for task in tasks:
        for k in range(2):
            plan, _ = expert_plan(task, world.meta[task.id], config, random.Random(f"engines:{task.id}:{k}"))
            env = SqlEnv("tags", sandbox, max_turns=config.max_steps)
            env.reset(task, sample=k)
            for kind, sql, _role in plan:
                env.step(env.protocol.render_action(kind, sql))
            episodes.append(env.trajectory)
    return episodes


@pytest.mark.parametrize("engine", ENGINES)
def test_expert_episodes_on_the_engine_score_as_on_sqlite(world: World, engines: dict[str, str], engine: str) -> None:
    data = load_task_data(DataConfig(benchmark="sqlworld", path=str(world.root), engine=engines[engine]))
    assert data.not_on_engine == {} and len(data.train) == 12 and len(data.evaluation) == 6
    with SqlSandbox() as sandbox:
        episodes = _expert_episodes(data.train, world, sandbox)
        _assert_ran_on(episodes, engines[engine])
        probes = [s for t in episodes for s in t.steps if s.action.kind == "sql" and s.result is not None]
        assert any(s.result.ok and s.result.rows for s in probes)  # rows from the engine came back
        assert all(s.observation for t in episodes for s in t.steps[:-1])
        there = score_episodes(episodes, sandbox, RewardConfig())
        here = score_episodes(_on_sqlite(episodes, world, sandbox), sandbox, RewardConfig())
    assert [s.outcome for s in there] == [s.outcome for s in here]  # identical EX, episode by episode
    assert {s.outcome for s in there} == {0.0, 1.0}  # right and wrong answers both (skipped probes)
    assert [s.process_reward for s in there] == [s.process_reward for s in here]


@pytest.mark.slow
@pytest.mark.parametrize("engine", ENGINES)
def test_rl_steps_on_the_engine(
    world: World, engines: dict[str, str], engine: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[Trajectory] = []
    rollout = rl.rollout

    def recording_rollout(*args, **kwargs):  # the trainer's own rollout, its episodes kept for the checks below
        episodes = rollout(*args, **kwargs)
        seen.extend(episodes)
        return episodes

    monkeypatch.setattr(rl, "rollout", recording_rollout)
    prefix = engines[engine]
    config = load_train_config(TINY, [
        "data.benchmark=sqlworld", f"data.path={world.root}", f"data.engine={prefix}", "data.max_eval_tasks=2",
        "trainer.max_steps=2", "trainer.tasks_per_step=2", "rollout.group_size=2", "trainer.save_every=0",
    ])  # fmt: skip
    trainer = rl.RLTrainer(config, tmp_path / "run")
    assert trainer.not_on_engine == {}
    assert all(t.db_path == database_for(prefix, t.db_id) for t in trainer.train_tasks + trainer.eval_tasks)
    final = trainer.run()
    lines = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in lines if m["kind"] == "train"] == [1, 2] and "ex" in final
    assert len(seen) == 2 * 2 * 2 + 2  # two steps of 2 tasks x 2 samples, then 2 greedy held-out episodes
    _assert_ran_on(seen, prefix)
    assert all(t.steps and t.steps[0].observation for t in seen if len(t.steps) > 1)
    with SqlSandbox() as sandbox:
        there = score_episodes(seen, sandbox, config.rewards)
        here = score_episodes(_on_sqlite(seen, world, sandbox), sandbox, config.rewards)
    assert [s.outcome for s in there] == [s.outcome for s in here]


def _bird_folder(world: World, root: Path) -> Path:
    """The world's databases in BIRD's layout (``dev_databases/<db_id>/<db_id>.sqlite``) under other names, with
    its training questions as ``dev.json``."""
    for db_id, path in find_databases(world.root).items():
        (root / "dev_databases" / f"mini_{db_id}").mkdir(parents=True)
        shutil.copy(path, root / "dev_databases" / f"mini_{db_id}" / f"mini_{db_id}.sqlite")
    questions = [{"question_id": i, "db_id": f"mini_{t.db_id}", "question": t.question, "evidence": "",
                  "SQL": t.gold_sql, "difficulty": t.difficulty} for i, t in enumerate(world.train)]  # fmt: skip
    (root / "dev.json").write_text(json.dumps(questions))
    return root


def test_eval_on_every_engine_scores_gold_against_itself(
    world: World, tmp_path: Path, pg_server, capsys: pytest.CaptureFixture[str]
) -> None:
    data = _bird_folder(world, tmp_path / "bird")
    import_benchmark(data, f"duckdb:{tmp_path / 'duck'}")
    import_benchmark(data, pg_server.url())
    gold = [q["SQL"] for q in json.loads((data / "dev.json").read_text())]
    predictions = tmp_path / "preds.sql"
    predictions.write_text("\n".join(gold) + "\n")
    for prefix in (f"duckdb:{tmp_path / 'duck'}", reader_url(pg_server.url())):
        out = tmp_path / "report.json"
        assert main(["eval", "--benchmark", "bird", "--data", str(data), "--predictions", str(predictions),
                     "--format", "lines", "--engine", prefix, "--transpile-gold", "--out", str(out)]) == 0  # fmt: skip
        report = json.loads(out.read_text())
        assert report["ex"] == 100.0 and report["n_scored"] == len(gold) == 12 and report["n_not_comparable"] == 0
        assert report["engine"] == prefix
    capsys.readouterr()


def test_eval_takes_a_bird_gold_file_written_for_postgresql(
    world: World, tmp_path: Path, pg_server, capsys: pytest.CaptureFixture[str]
) -> None:
    data = _bird_folder(world, tmp_path / "bird")
    import_benchmark(data, pg_server.url())
    # BIRD mini-dev's format; SQL written for PostgreSQL (a :: cast, ILIKE, a PostgreSQL-only function), one query
    # that only SQLite can run (strftime): reported, not scored
    rows = [("mini_w0000", "SELECT count(*)::integer FROM writers", "simple"),
            ("mini_w0000", "SELECT full_name FROM writers WHERE country ILIKE 'fr%' ORDER BY id", "moderate"),
            ("mini_w0001", "SELECT string_agg(DISTINCT field, ',' ORDER BY field) FROM doctors", "challenging"),
            ("mini_w0001", "SELECT strftime('%Y', 'now')", "simple")]  # fmt: skip
    gold_file = tmp_path / "mini_dev_postgresql.json"
    gold_file.write_text(json.dumps([
        {"question_id": i, "db_id": db, "question": f"question {i}", "evidence": "", "SQL": sql, "difficulty": level}
        for i, (db, sql, level) in enumerate(rows)
    ]))  # fmt: skip
    predictions = tmp_path / "preds.json"  # BIRD's predictions format: {question_id: "SQL\t----- bird -----\tdb_id"}
    predictions.write_text(json.dumps({str(i): f"{sql}\t----- bird -----\t{db}" for i, (db, sql, _) in enumerate(rows)}))
    out = tmp_path / "report.json"
    args = ["eval", "--benchmark", "bird", "--data", str(data), "--gold", str(gold_file), "--predictions",
            str(predictions), "--engine", reader_url(pg_server.url()), "--out", str(out)]  # fmt: skip
    assert main([*args, "--engine-gold"]) == 0
    report = json.loads(out.read_text())
    assert report["ex"] == 100.0 and report["n_scored"] == 3 and report["n_not_comparable"] == 1
    assert report["not_comparable_by_reason"] == {"fails on the engine: schema": 1}
    (tmp_path / "empty").mkdir()  # the engine's gold needs no SQLite file
    assert main([*args[:3], "--data", str(tmp_path / "empty"), *args[5:], "--engine-gold"]) == 0
    assert json.loads(out.read_text())["n_correct"] == 3
    # Without --engine-gold the gold is taken for SQLite's, which cannot run the PostgreSQL-only queries.
    assert main(args) == 0
    reasons = json.loads(out.read_text())["not_comparable_by_reason"]
    assert reasons.get("fails on SQLite: syntax", 0) + reasons.get("fails on SQLite: schema", 0) >= 2
    assert main([*args, "--engine-gold", "--transpile-gold"]) == 2
    capsys.readouterr()
