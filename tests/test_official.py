"""The official scorers' rules, each on hand-computed cases, on a small database and on real Spider data."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from finestep.cli import main
from finestep.data import load_spider
from finestep.data.task import Benchmark, Task
from finestep.eval.execution import EVAL_LIMITS, score_pair, score_predictions
from finestep.eval.official import (
    Scorer,
    remove_distinct,
    repair_operators,
    replace_current_year,
    spider_prediction_text,
    spider_quick_check,
)
from finestep.sql.compare import spider_match

SPIDER = Scorer("spider")
KEEP = Scorer("spider", keep_distinct=True)
BIRD = Scorer("bird")


def test_remove_distinct_drops_every_distinct_token_and_keeps_the_first_statement() -> None:
    assert remove_distinct("SELECT DISTINCT name FROM t") == "SELECT  name FROM t"
    assert remove_distinct("SELECT count(DISTINCT state) FROM t") == "SELECT count( state) FROM t"
    assert remove_distinct("select Distinct a from t -- distinct") == "select  a from t -- distinct"
    kept = """SELECT 'distinct', "distinct", distinct_count, `distinct` FROM t WHERE x = 'it''s distinct'"""
    assert remove_distinct(kept) == kept
    assert remove_distinct("SELECT 1; SELECT DISTINCT 2") == "SELECT 1; "  # sqlparse keeps the space after ';'
    assert remove_distinct("SELECT ';' FROM t; -- c\nx") == "SELECT ';' FROM t; -- c\n"
    assert remove_distinct("SELECT @distinct FROM t WHERE a = 'open distinct") == "SELECT @distinct FROM t WHERE a = 'open "
    assert remove_distinct("") == ""


@given(st.text(alphabet="SELCTDIN abcdist(),;'\"-\n", max_size=40))
def test_remove_distinct_is_idempotent_and_only_shortens(sql: str) -> None:
    once = remove_distinct(sql)
    assert remove_distinct(once) == once and len(once) <= len(sql)


def test_prediction_text_first_tab_and_value_placeholder() -> None:
    assert spider_prediction_text("  SELECT a FROM t\tconcert_singer \n") == "SELECT a FROM t"
    assert spider_prediction_text("SELECT a\tFROM t") == "SELECT a"
    # Only " value " with a space on each side: the last one, at the end of the stripped line, stays.
    assert spider_prediction_text("SELECT * FROM t WHERE x = value AND y = value") == (
        "SELECT * FROM t WHERE x = 1 AND y = value"
    )


def test_operator_repair_and_current_year() -> None:
    assert repair_operators("a > = 1 AND b < = 2 AND c ! = 3 AND d >= 4") == "a >= 1 AND b <= 2 AND c != 3 AND d >= 4"
    assert replace_current_year("SELECT year(  curdate( ) ) - age FROM t") == "SELECT 2020- age FROM t"


def test_quick_check_tells_int_from_float_as_the_official_scorer_does() -> None:
    gold, pred = [(1.0, 1.5)], [(1, 1.5)]
    assert spider_match(pred, gold, order_matters=False)  # equal values...
    assert not spider_quick_check(gold, pred, order_matters=False)  # ...sorted differently: '1.0<' < '1.5<' < '1<'
    assert not SPIDER.match(pred, gold, "SELECT a, b FROM t")
    assert SPIDER.match([(1.5, 1)], [(1, 1.5)], "SELECT a, b FROM t")  # a column permutation
    assert not SPIDER.match([(2,), (1,)], [(1,), (2,)], "SELECT a FROM t ORDER BY a")
    assert SPIDER.match([], [], "SELECT a, b FROM t WHERE 0")


def test_scorer_queries_apply_the_rules_in_order() -> None:
    pred = "SELECT count(DISTINCT a) FROM t WHERE b > = value AND c = 2\tdb"
    gold = "SELECT count(DISTINCT a) FROM t WHERE b >= 1 ORDER BY YEAR(CURDATE())"
    assert SPIDER.queries(pred, gold) == (
        "SELECT count( a) FROM t WHERE b >= 1 AND c = 2", "SELECT count( a) FROM t WHERE b >= 1 ORDER BY 2020"
    )  # fmt: skip
    assert KEEP.queries(pred, gold)[0] == "SELECT count(DISTINCT a) FROM t WHERE b >= 1 AND c = 2"
    assert BIRD.queries(pred, gold) == (pred, gold)
    assert "DISTINCT removed" in SPIDER.variant and "--keep_distinct" in KEEP.variant and "BIRD" in BIRD.variant
    with pytest.raises(ValueError, match="keep_distinct"):
        Scorer("bird", keep_distinct=True)


def _verdict(scorer: Scorer, pred: str | None, gold: str, db: Path) -> tuple[bool, str | None]:
    return score_pair((pred, gold, str(db), scorer, EVAL_LIMITS))


def test_rules_end_to_end_on_a_database(db: Path) -> None:
    # player: (1 Ann team 1 goals 10), (2 Bob 1 3), (3 Cid 2 7), (4 Dee 3 7)
    gold = "SELECT count(team_id) FROM player"  # 4
    pred = "SELECT count(DISTINCT team_id) FROM player"  # 3, but 4 once DISTINCT is removed
    assert _verdict(SPIDER, pred, gold, db) == (True, None)
    assert _verdict(KEEP, pred, gold, db) == (False, None)
    assert _verdict(BIRD, pred, gold, db) == (False, None)

    gold = "SELECT name FROM player WHERE goals >= 10"  # Ann
    assert _verdict(SPIDER, "SELECT name FROM player WHERE goals > = 10", gold, db) == (True, None)
    assert _verdict(BIRD, "SELECT name FROM player WHERE goals > = 10", gold, db)[1].startswith("prediction syntax")
    assert _verdict(SPIDER, "SELECT name FROM player WHERE id = value AND goals > 5", gold, db) == (True, None)
    assert _verdict(SPIDER, "SELECT name FROM player WHERE goals >= 10\tWHERE nonsense", gold, db) == (True, None)
    assert _verdict(BIRD, "SELECT name FROM player WHERE goals >= 10\tWHERE nonsense", gold, db)[0] is False

    # Two trailing semicolons are two statements for sqlite3 (the official scripts run the text as given)...
    assert _verdict(BIRD, "SELECT name FROM player WHERE goals >= 10;;", gold, db)[1].startswith("prediction multiple")
    assert _verdict(KEEP, "SELECT name FROM player WHERE goals >= 10;;", gold, db)[0] is False
    # ...but test-suite-sql-eval's default keeps only the first statement.
    assert _verdict(SPIDER, "SELECT name FROM player WHERE goals >= 10;;", gold, db) == (True, None)


def test_empty_prediction_against_an_empty_gold_result(db: Path) -> None:
    empty_gold, some_gold = "SELECT name FROM player WHERE goals > 100", "SELECT name FROM player"
    for scorer in (BIRD, SPIDER, KEEP):
        assert _verdict(scorer, "", empty_gold, db) == (True, None)  # an empty query returns no rows
        assert _verdict(scorer, "", some_gold, db) == (False, None)
        assert _verdict(scorer, None, empty_gold, db) == (False, "no prediction")


def test_text_that_is_not_utf8(db: Path) -> None:
    gold = "SELECT name FROM team WHERE id = 4"  # bytes 43 61 66 65 94: 'Cafe' and a byte that is no UTF-8
    assert _verdict(SPIDER, "SELECT 'Cafe'", gold, db) == (True, None)  # undecodable bytes dropped
    correct, error = _verdict(BIRD, gold, gold, db)  # BIRD's plain connection cannot decode the value
    assert correct is False and "decode" in error.lower()


def test_subset_predictions_are_scored_over_the_questions_given(db: Path) -> None:
    tasks = [
        Task(id=f"q{i}", index=i, question="q", db_id="league", db_path=db, gold_sql=gold)
        for i, gold in enumerate(["SELECT count(*) FROM player", "SELECT name FROM team WHERE id = 1", "SELECT 1"])
    ]  # fmt: skip
    report = score_predictions(Benchmark.from_tasks("spider", db, tasks), ["SELECT 4", None, "SELECT 2"], "spider")
    data = report.to_json()
    assert (data["n_scored"], data["n_correct"], data["n_missing"], data["n_unavailable"], data["ex"]) == (2, 1, 1, 0, 50.0)
    assert [q["correct"] for q in data["per_question"]] == [True, None, False]
    assert data["workers"] == 1 and data["variant"] == SPIDER.variant


def test_real_spider_distinct_example(spider: Path, tmp_path: Path) -> None:
    """Spider dev #55 (pets_1): gold ``count(DISTINCT pettype)`` = 2; ``count(*)`` = 3 is right by default."""
    bench = load_spider(spider)
    task = bench.tasks[55]
    assert task.gold_sql == "SELECT count(DISTINCT pettype) FROM pets"
    preds = tmp_path / "p.jsonl"
    preds.write_text(json.dumps({"id": 55, "sql": "SELECT count(*) FROM pets"}) + "\n")
    verdicts = {}
    for flags in ([], ["--keep-distinct"]):
        out = tmp_path / f"r{len(flags)}.json"
        argv = ["eval", "--benchmark", "spider", "--data", str(spider), "--predictions", str(preds), "--out", str(out)]
        assert main(argv + flags) == 0
        report = json.loads(out.read_text())
        assert report["n_scored"] == 1 and report["n_missing"] == 971
        verdicts[report["variant"]] = report["per_question"][55]["correct"]
    assert verdicts == {SPIDER.variant: True, KEEP.variant: False}
