"""SQLWorld: deterministic world building, verified gold queries, probes that matter, the scripted expert."""

from __future__ import annotations

import json
import re
import shutil
from collections import Counter
from pathlib import Path

import pytest

from finestep.agent.expert import expert_dataset, expert_trajectory
from finestep.agent.protocol import get_protocol
from finestep.data.sqlworld import (
    STYLES,
    TIERS,
    ExpertConfig,
    World,
    build_world,
    clean_expert,
    load_world,
    solution_correct,
    write_jsonl,
)
from finestep.data.sqlworld.domains import CATEGORIES, DOMAINS, encode
from finestep.data.task import DataError
from finestep.sql.analysis import canonical_sql
from finestep.sql.executor import execute
from finestep.sql.schema import schema_prompt

SMALL = {"n_train_dbs": 4, "n_test_dbs": 2, "questions_per_db": 12}


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    return build_world(tmp_path_factory.mktemp("sqlworld") / "world", seed=0, **SMALL)


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_seed_gives_identical_bytes_and_another_seed_differs(tmp_path: Path) -> None:
    a = _files(build_world(tmp_path / "a", seed=3, **SMALL).root)
    b = _files(build_world(tmp_path / "b", seed=3, **SMALL).root)
    c = _files(build_world(tmp_path / "c", seed=4, **SMALL).root)
    assert len(a) == 1 + 6 and "world.json" in a
    assert a == b
    assert a.keys() == c.keys() and a["world.json"] != c["world.json"]
    assert any(a[name] != c[name] for name in a if name.endswith(".sqlite"))


def test_build_replaces_a_previous_world_and_leaves_no_temporary_folders(tmp_path: Path) -> None:
    build_world(tmp_path / "world", seed=1, n_train_dbs=1, n_test_dbs=1, questions_per_db=3)
    rebuilt = build_world(tmp_path / "world", seed=2, n_train_dbs=2, n_test_dbs=1, questions_per_db=3)
    assert [p.name for p in tmp_path.iterdir()] == ["world"]
    assert rebuilt.seed == 2 and len(rebuilt.train) == 6
    assert sorted(p.name for p in (tmp_path / "world" / "databases").iterdir()) == [
        "w0000.sqlite", "w0001.sqlite", "w0002.sqlite",
    ]  # fmt: skip


def test_every_gold_query_executes_and_is_nonempty(world: World) -> None:
    for task in world.train + world.test:
        result = execute(task.db_path, task.gold_sql)
        assert result.ok, (task.id, task.gold_sql, result.error)
        assert result.rows and result.rows != ((0,),), (task.id, task.gold_sql)
        assert all(v is not None for row in result.rows for v in row), task.id


def test_metadata_is_consistent_with_the_database(world: World) -> None:
    for task in world.train + world.test:
        meta = world.meta[task.id]
        assert meta.tier == task.difficulty
        failing = execute(task.db_path, meta.failing_sql)
        assert not failing.ok and failing.error_kind == "schema", (task.id, meta.failing_sql)
        assert execute(task.db_path, meta.distractor_probe_sql).ok
        if meta.tier == "tier1":
            assert meta.probe_sql is None and meta.skip_probe_sql == task.gold_sql and not meta.probe_required
            continue
        probe = execute(task.db_path, meta.probe_sql)
        assert probe.ok and (meta.stored_value,) in probe.rows
        assert meta.distractor_probe_sql != meta.probe_sql
        assert not execute(task.db_path, meta.failing_probe_sql).ok
        assert f"'{meta.stored_value}'" in task.gold_sql and f"'{meta.surface_value}'" in meta.skip_probe_sql
        assert meta.surface_value in task.question
        assert meta.probe_required == (meta.surface_value != meta.stored_value)
        if not meta.probe_required:
            assert meta.skip_probe_sql == task.gold_sql


def test_splits_tiers_and_probe_necessity(world: World) -> None:
    train_dbs = {t.db_id for t in world.train}
    test_dbs = {t.db_id for t in world.test}
    assert len(train_dbs) == 4 and len(test_dbs) == 2 and not train_dbs & test_dbs
    assert len(world.train) == 48 and len(world.test) == 24
    for tasks in (world.train, world.test):
        assert Counter(t.difficulty for t in tasks) == {tier: len(tasks) // 3 for tier in TIERS}
    assert {d["style"] for d in world.databases.values() if d["split"] == "train"} == set(STYLES)
    for tier in ("tier2", "tier3"):
        required = Counter(world.meta[t.id].probe_required for t in world.train if t.difficulty == tier)
        assert required[True] > 0 and required[False] > 0, (tier, required)


def test_schema_prompt_shows_no_stored_values(world: World) -> None:
    for task in world.train + world.test:
        meta = world.meta[task.id]
        if meta.stored_value is not None:
            schema = schema_prompt(task.db_path, sample_values=0)
            assert f"'{meta.stored_value}'" not in schema


def test_domains_codes_never_equal_the_surface_form() -> None:
    assert len(DOMAINS) == 6
    for category in CATEGORIES.values():
        for surface, code in category.values:
            assert encode(surface, code, "code") != surface and encode(surface, code, "upper") != surface
        stored = [encode(s, c, "code") for s, c in category.values]
        assert len(set(stored)) == len(stored), category.key


def test_load_world_gives_tasks_with_existing_absolute_databases(world: World, tmp_path: Path) -> None:
    moved = tmp_path / "elsewhere"
    shutil.copytree(world.root, moved)
    loaded = load_world(moved)
    assert [t.id for t in loaded.train] == [t.id for t in world.train]
    for split in ("train", "test"):
        for i, task in enumerate(loaded.split(split)):
            assert re.fullmatch(r"w\d{4}-q\d{2}", task.id) and task.index == i
            assert task.db_path.is_absolute() and task.db_path.is_file() and moved in task.db_path.parents
            assert task.evidence == "" and task.difficulty in TIERS and task.id in loaded.meta
    assert loaded.benchmark("test").available == loaded.test
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "world.json").write_text(json.dumps({"tasks": []}))
    with pytest.raises(DataError, match="not a SQLWorld file"):
        load_world(tmp_path / "bad")


def test_clean_expert_scores_100_percent_and_probes_exactly_when_needed(world: World) -> None:
    for split in ("train", "test"):
        lines = expert_dataset(world, split, n_per_task=1, config=clean_expert)
        assert len(lines) == len(world.split(split))
        assert all(solution_correct(line) for line in lines)
        for line in lines:
            kinds = [s["kind"] for s in line["steps"]]
            assert kinds == (["solution"] if line["difficulty"] == "tier1" else ["sql", "solution"])
            assert line["behaviours"] == []


def test_skipping_the_probe_is_wrong_exactly_where_it_is_required(world: World) -> None:
    lines = expert_dataset(world, "train", n_per_task=1, config=ExpertConfig(0.0, 0.0, 1.0, 0.0))
    for line in lines:
        meta = world.meta[line["task_id"]]
        assert all(s["kind"] == "solution" for s in line["steps"])
        assert solution_correct(line) == (not meta.probe_required), line["task_id"]
        assert ("skip_probe" in line["behaviours"]) == (meta.tier != "tier1")
    assert sum(not solution_correct(line) for line in lines) > 0


def _executable_in_order(line: dict) -> list[bool]:
    return [execute(line["db_path"], s["sql"]).ok for s in line["steps"]]


def test_imperfect_expert_has_redundant_failing_and_wasted_steps(world: World) -> None:
    config = ExpertConfig(p_redundant_probe=0.5, p_fail_repair=0.5, p_skip_probe=0.2, p_wasted_probe=0.5)
    lines = expert_dataset(world, "train", n_per_task=2, config=config, seed=7)
    assert lines == expert_dataset(world, "train", n_per_task=2, config=config, seed=7)
    behaviours = Counter(b for line in lines for b in line["behaviours"])
    assert all(behaviours[b] > 0 for b in ("redundant_probe", "fail_repair", "skip_probe", "wasted_probe"))
    protocol = get_protocol("tags")
    n_redundant = n_failed = 0
    for line in lines:
        steps = line["steps"]
        assert 1 <= len(steps) <= config.max_steps and steps[-1]["kind"] == "solution"
        assert all(s["kind"] == "sql" for s in steps[:-1])
        for step in steps:
            action = protocol.parse_action(step["text"])
            assert action.ok and (action.kind, action.sql) == (step["kind"], step["sql"])
        ok = _executable_in_order(line)
        failing = [i for i, s in enumerate(steps) if s["role"] in ("failing_probe", "failing_query")]
        assert [i for i, good in enumerate(ok) if not good] == failing
        n_failed += len(failing)
        forms = [canonical_sql(s["sql"]) for s in steps if s["kind"] == "sql"]
        n_redundant += len(forms) - len(set(forms))
        if "skip_probe" not in line["behaviours"] and "fail_repair" not in line["behaviours"]:
            assert solution_correct(line)
    assert n_redundant > 0 and n_failed > 0


def test_expert_trajectory_format_and_reasoning_prefix(world: World, tmp_path: Path) -> None:
    task = next(t for t in world.train if t.difficulty == "tier3")
    line = expert_trajectory(task, world.meta[task.id], ExpertConfig(0, 0, 0, 0, reasoning=True))
    assert {"task_id", "trajectory_id", "db_path", "gold_sql", "question", "steps"} <= line.keys()
    assert line["steps"][0]["text"] == f"Check values. <sql>{world.meta[task.id].probe_sql}</sql>"
    assert line["steps"][1]["text"] == f"Answer. <solution>{task.gold_sql}</solution>"
    path = write_jsonl(tmp_path / "expert.jsonl", [line, line])
    assert [json.loads(x) for x in path.read_text().splitlines()] == [line, line]
    with pytest.raises(ValueError, match="p_skip_probe"):
        ExpertConfig(p_skip_probe=1.5)


def test_default_world_sizes_and_domains(tmp_path: Path) -> None:
    world = build_world(tmp_path / "world")  # speed is not asserted here: tests do not time (benchmarks do)
    assert len(world.train) == 24 * 12 and len(world.test) == 8 * 12
    assert {world.databases[t.db_id]["domain"] for t in world.test} == {d.name for d in DOMAINS}


def test_valid_and_heldout_are_new_questions_on_training_databases(world: World, tmp_path: Path) -> None:
    extended = build_world(tmp_path / "world", seed=0, **SMALL, valid_per_db=1, heldout_per_db=2)
    # the training and test questions do not depend on the extra counts
    assert [(t.id, t.question, t.gold_sql) for t in extended.train] == [(t.id, t.question, t.gold_sql) for t in world.train]
    assert [t.question for t in extended.test] == [t.question for t in world.test]
    assert len(extended.valid) == 4 and len(extended.heldout) == 8
    train_dbs = {t.db_id for t in extended.train}
    seen = {(t.db_id, t.question) for t in extended.train}
    for split in ("valid", "heldout"):
        tasks = extended.split(split)
        assert {t.db_id for t in tasks} <= train_dbs
        assert not seen & {(t.db_id, t.question) for t in tasks}  # never a training question
        assert len({t.difficulty for t in tasks}) >= 2  # the rotation spreads the tiers
    assert world.valid == [] and world.heldout == []
    with pytest.raises(ValueError, match="unknown split"):
        world.split("dev")


def test_training_data_reads_the_configured_evaluation_split(world: World, tmp_path: Path) -> None:
    from finestep.train.config import DataConfig
    from finestep.train.data import load_task_split

    extended = build_world(tmp_path / "world", seed=0, **SMALL, valid_per_db=1, heldout_per_db=2)
    config = DataConfig(benchmark="sqlworld", path=str(extended.root), eval_split="heldout", max_eval_tasks=None)
    train, evaluation = load_task_split(config)
    assert [t.id for t in train] == [t.id for t in extended.train]
    assert [t.id for t in evaluation] == [t.id for t in extended.heldout]
    with pytest.raises(DataError, match="data.eval_split: the world at .* has no 'heldout' questions"):
        load_task_split(DataConfig(benchmark="sqlworld", path=str(world.root), eval_split="heldout"))
    with pytest.raises(DataError, match="data.eval_split: expected one of valid, heldout, test; got 'train'"):
        load_task_split(DataConfig(benchmark="sqlworld", path=str(world.root), eval_split="train"))
