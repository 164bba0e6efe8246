"""Training-data hygiene: gold queries with empty or failing results are counted, reported and kept out of RL."""

from __future__ import annotations

from pathlib import Path

from finestep.data.hygiene import check_gold
from finestep.data.task import Task
from finestep.rewards import ProcessConfig, RewardStep, process_rewards
from finestep.sql.executor import execute
from finestep.sql.schema import schema_columns
from finestep.train.config import DataConfig
from finestep.train.data import load_task_data, load_task_split


def test_check_gold_sorts_usable_empty_and_failing(db: Path) -> None:
    golds = ["SELECT name FROM player", "SELECT name FROM player WHERE goals > 99", "SELECT nope FROM player",
             "SELECT 1 WHERE 0"]  # fmt: skip
    tasks = [Task(id=f"t{i}", index=i, question="q", db_id="league", db_path=db, gold_sql=g) for i, g in enumerate(golds)]
    check = check_gold(tasks)
    assert [t.id for t in check.usable] == ["t0"]
    assert [t.id for t in check.empty] == ["t1", "t3"] and [t.id for t in check.failing] == ["t2"]
    assert check.summary() == "4 gold queries checked: 2 return no rows (ids t1, t3), 1 fail (ids t2)"


def test_progress_never_fires_on_an_empty_result(db: Path) -> None:
    gold_sql = "SELECT name FROM player WHERE goals > 99"  # no rows
    steps = [RewardStep("sql", sql, execute(db, sql)) for sql in ("SELECT name FROM team WHERE id > 9",)]
    (rules,) = process_rewards(steps, ProcessConfig(), schema_columns(db), execute(db, gold_sql).rows, gold_sql)
    assert rules["progress"] == 0.0 and rules["executes"] == 0.1  # the empty result matches the gold, yet no progress


def test_training_split_drops_empty_gold_and_evaluation_keeps_it(spider: Path) -> None:
    # Spider dev, training databases in file order: questions 45.. ; 59 and 60 (pets_1, cat-and-dog owners via
    # INTERSECT) return no rows.
    config = DataConfig(benchmark="spider", path=str(spider), max_train_tasks=20)
    data = load_task_data(config)
    assert [t.index for t in data.train] == [*range(45, 59), *range(61, 67)]
    assert data.gold_check.summary() == "22 gold queries checked: 2 return no rows (ids 59, 60), 0 fail"
    kept = load_task_data(DataConfig(benchmark="spider", path=str(spider), max_train_tasks=20, drop_empty_gold=False))
    assert [t.index for t in kept.train] == list(range(45, 65))
    assert kept.gold_check.summary() == "20 gold queries checked: 2 return no rows (ids 59, 60), 0 fail"
    full = load_task_data(DataConfig(benchmark="spider", path=str(spider), max_eval_tasks=None))
    assert (len(full.train), len(full.gold_check.empty), len(full.gold_check.failing)) == (744, 45, 0)
    train, evaluation = load_task_split(DataConfig(benchmark="spider", path=str(spider), max_eval_tasks=None))
    assert len(train) == 744 and len(evaluation) == 972 - 789  # held-out questions are never dropped


def test_verl_rows_leave_out_empty_gold(spider: Path) -> None:
    from finestep.data import load_spider
    from finestep.integrations.verl_data import build_rows

    tasks = load_spider(spider).tasks[13:16]  # 14 and 15 (stadiums of capacity 5000-10000) return no rows
    rows, skipped = build_rows(tasks, "spider", workers=1)
    assert [r["extra_info"]["task_id"] for r in rows] == ["13"]
    assert skipped == {"missing_database": 0, "gold_fails": 0, "gold_empty": 2}
    rows, skipped = build_rows(tasks, "spider", workers=1, drop_empty_gold=False)
    assert len(rows) == 3 and skipped["gold_empty"] == 0


def test_failing_gold_is_always_left_out_of_training(tmp_path: Path) -> None:
    from tests.test_data import write_bird

    data = write_bird(tmp_path / "bird")  # two tasks on league; one on a missing database
    (data / "dev.json").write_text(
        '[{"question_id": 1, "db_id": "league", "question": "a", "SQL": "SELECT nope FROM player"},'
        ' {"question_id": 2, "db_id": "league", "question": "b", "SQL": "SELECT name FROM player WHERE goals > 99"},'
        ' {"question_id": 3, "db_id": "league", "question": "c", "SQL": "SELECT name FROM player"}]'
    )
    for drop, kept in ((True, ["3"]), (False, ["2", "3"])):
        config = DataConfig(benchmark="bird", path=str(data), eval_databases=0, drop_empty_gold=drop)
        result = load_task_data(config)
        assert [t.id for t in result.train] == kept
        assert result.gold_check.summary() == "3 gold queries checked: 1 return no rows (ids 2), 1 fail (ids 1)"
