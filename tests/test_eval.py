"""End to end: finestep eval and finestep sql on hand-made and real Spider data."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from finestep.cli import main
from finestep.data import load_spider
from finestep.eval.execution import EVAL_LIMITS, score_pair, score_predictions
from tests.test_data import write_bird


def test_score_pair_verdicts(db: Path) -> None:
    gold = "SELECT name FROM player WHERE goals = 7"
    assert score_pair(("SELECT name FROM player WHERE goals > 5 AND goals < 8", gold, str(db), "bird", EVAL_LIMITS)) == (True, None)
    assert score_pair(("SELECT id FROM player", gold, str(db), "bird", EVAL_LIMITS)) == (False, None)
    correct, error = score_pair(("SELECT nope FROM player", gold, str(db), "bird", EVAL_LIMITS))
    assert not correct and error.startswith("prediction schema: no such column")
    assert score_pair((None, gold, str(db), "bird", EVAL_LIMITS)) == (False, "no prediction")


def test_eval_cli_on_bird_layout(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = write_bird(tmp_path / "bird")
    preds = tmp_path / "predict_dev.json"
    sep = "\t----- bird -----\t"
    preds.write_text(json.dumps({"0": f"SELECT count(id) FROM player{sep}league", "1": f"SELECT 'Bob'{sep}league"}))
    out = tmp_path / "out" / "report.json"
    assert main(["eval", "--benchmark", "bird", "--data", str(data), "--predictions", str(preds), "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["ex"] == 50.0 and report["n_scored"] == 2 and report["n_unavailable"] == 1
    assert [(q["index"], q["db_id"], q["correct"]) for q in report["per_question"]] == [
        (0, "league", True), (1, "league", False), (2, "gone", None)
    ]  # fmt: skip
    assert report["by_difficulty"] == {"simple": {"ex": 100.0, "n": 1}, "moderate": {"ex": 0.0, "n": 1}}
    assert "moderate" in capsys.readouterr().out


def test_eval_cli_reports_bad_input_with_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = write_bird(tmp_path / "bird")
    preds = tmp_path / "p.jsonl"
    preds.write_text('{"id": 7, "sql": 1}\n')
    assert main(["eval", "--benchmark", "bird", "--data", str(data), "--predictions", str(preds)]) == 2
    assert "p.jsonl:1: field 'sql'" in capsys.readouterr().err


def test_sql_cli_prints_the_observation(db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["sql", "--db", str(db), "SELECT name, goals FROM player ORDER BY id LIMIT 2", "--turns-left", "3"]) == 0
    assert capsys.readouterr().out == (
        "<observation>\n| name | goals |\n|---|---|\n| Ann | 10 |\n| Bob | 3 |\n(2 rows)\nTurns left: 3\n</observation>\n"
    )
    assert main(["sql", "--db", str(db), "DROP TABLE player"]) == 1
    assert capsys.readouterr().out == "<observation>\nError (forbidden): not authorized\n</observation>\n"


@pytest.mark.parametrize("metric", ["spider", "bird"])
def test_spider_gold_scores_100_percent(spider: Path, metric: str) -> None:
    bench = load_spider(spider)
    databases = sorted((spider / "database").glob("*/*.sqlite"))
    before = {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in databases}
    report = score_predictions(bench, [t.gold_sql for t in bench.tasks], metric, workers=2)
    result = report.to_json()
    assert (result["ex"], result["n_scored"], result["n_unavailable"]) == (100.0, 972, 62)
    assert {q["db_id"] for q in result["per_question"] if q["correct"] is None} == {"wta_1"}
    assert before == {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in databases}


def test_eval_cli_on_spider_gold_file(spider: Path, tmp_path: Path) -> None:
    out = tmp_path / "r.json"
    args = ["eval", "--benchmark", "spider", "--data", str(spider), "--predictions", str(spider / "dev_gold.sql")]
    assert main([*args, "--out", str(out), "--workers", "1"]) == 0
    result = json.loads(out.read_text())
    assert (result["ex"], result["n_scored"], result["n_unavailable"]) == (100.0, 972, 62)
    assert [q["index"] for q in result["per_question"]] == list(range(1034))


def test_eval_cli_with_own_gold_files(spider: Path, tmp_path: Path) -> None:
    # Three Spider gold lines (the second on a database that is not shipped), predictions for two of them.
    gold = tmp_path / "gold.sql"
    gold.write_text("SELECT count(*) FROM singer\tconcert_singer\n\nSELECT 1\twta_1\nSELECT name FROM pets\tpets_1\n")
    preds = tmp_path / "p.jsonl"
    preds.write_text('{"id": 0, "sql": "SELECT 6"}\n{"id": "2", "sql": "SELECT 1"}\n')
    out = tmp_path / "r.json"
    argv = ["eval", "--benchmark", "spider", "--data", str(spider), "--gold", str(gold), "--predictions", str(preds)]
    assert main([*argv, "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert [(q["db_id"], q["correct"]) for q in result["per_question"]] == [
        ("concert_singer", True), ("wta_1", None), ("pets_1", False)
    ]  # fmt: skip
    assert (result["n_scored"], result["n_missing"], result["n_unavailable"], result["ex"]) == (2, 0, 1, 50.0)
    gold.write_text("SELECT 1\n")
    assert main(argv) == 2


def test_eval_cli_with_bird_json_gold(tmp_path: Path) -> None:
    data = write_bird(tmp_path / "bird")
    own = tmp_path / "mine.json"
    own.write_text(json.dumps([{"question_id": 70, "db_id": "league", "question": "Empty?", "SQL":
                                "SELECT name FROM player WHERE goals > 99", "difficulty": "simple"}]))  # fmt: skip
    preds = tmp_path / "predict_dev.json"
    preds.write_text(json.dumps({"0": None}))  # BIRD runs an empty query: no rows, as the gold
    out = tmp_path / "r.json"
    argv = ["eval", "--benchmark", "bird", "--data", str(data), "--gold", str(own), "--predictions", str(preds)]
    assert main([*argv, "--out", str(out), "--workers", "2"]) == 0
    result = json.loads(out.read_text())
    assert (result["ex"], result["n_scored"], result["per_question"][0]["id"]) == (100.0, 1, "70")
    assert result["variant"] == "BIRD evaluation_ex.py"


def test_workers_auto_rule() -> None:
    from finestep.eval.execution import AUTO_POOL_AFTER_S, _pool_pays

    assert AUTO_POOL_AFTER_S == 1.0
    assert _pool_pays(elapsed_s=0.5, jobs_done=10, jobs_left=100, cores=2)  # 5 s to go
    assert not _pool_pays(elapsed_s=0.05, jobs_done=10, jobs_left=100, cores=2)  # 0.5 s to go
    assert not _pool_pays(elapsed_s=0.5, jobs_done=10, jobs_left=100, cores=1)
    assert not _pool_pays(elapsed_s=9.0, jobs_done=10, jobs_left=1, cores=2)  # one job left: nothing to share
    assert not _pool_pays(elapsed_s=0.0, jobs_done=0, jobs_left=100, cores=2)  # no pace measured yet


def test_workers_auto_moves_to_a_pool_when_the_work_is_long(spider: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from finestep.eval import execution
    from finestep.sql.executor import default_workers

    bench = load_spider(spider)
    golds = [t.gold_sql for t in bench.tasks]
    small = score_predictions(bench, golds, "spider", workers=1)
    monkeypatch.setattr(execution, "AUTO_POOL_AFTER_S", 0.0)  # any remaining work counts as long
    done: list[int] = []
    pooled = score_predictions(bench, golds, "spider", on_progress=done.append)
    assert pooled.workers == default_workers()
    assert [s.correct for s in pooled.scores] == [s.correct for s in small.scores]
    assert done[-1] == 972 and done == sorted(done)
