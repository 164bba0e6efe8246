"""Benchmark loaders: Spider and BIRD layouts, missing databases, malformed files."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from finestep.data import DataError, load_benchmark, load_bird, load_spider
from tests.conftest import make_db


def write_bird(root: Path, name: str = "dev.json") -> Path:
    (root / "dev_databases" / "league").mkdir(parents=True)
    make_db(root / "dev_databases" / "league" / "league.sqlite")
    entries = [
        {"question_id": 7, "db_id": "league", "question": "How many players?", "evidence": "",
         "SQL": "SELECT count(*) FROM player", "difficulty": "simple"},
        {"question_id": 8, "db_id": "league", "question": "Top scorer?", "evidence": "top = max(goals)",
         "SQL": "SELECT name FROM player ORDER BY goals DESC LIMIT 1", "difficulty": "moderate"},
        {"question_id": 9, "db_id": "gone", "question": "?", "evidence": "", "SQL": "SELECT 1",
         "difficulty": "challenging"},
    ]  # fmt: skip
    (root / name).write_text(json.dumps(entries))
    return root


def test_bird_loader_reads_evidence_difficulty_and_reports_missing(tmp_path: Path) -> None:
    bench = load_bird(write_bird(tmp_path))
    assert [t.id for t in bench.tasks] == ["7", "8", "9"]
    assert bench.tasks[1].evidence == "top = max(goals)" and bench.tasks[1].difficulty == "moderate"
    assert [t.id for t in bench.unavailable] == ["9"] and bench.missing_databases == ["gone"]
    assert [t.index for t in bench.available] == [0, 1]


def test_bird_mini_dev_file_name(tmp_path: Path) -> None:
    bench = load_benchmark("bird", write_bird(tmp_path, "mini_dev_sqlite.json"))
    assert len(bench.tasks) == 3 and bench.source.name == "mini_dev_sqlite.json"


def test_malformed_json_names_file_and_position(tmp_path: Path) -> None:
    (tmp_path / "dev.json").write_text('[\n  {"db_id": "a",\n   "question": }\n]')
    with pytest.raises(DataError, match=r"dev\.json:3:16: malformed JSON"):
        load_bird(tmp_path)


def test_missing_field_names_entry_and_field(tmp_path: Path) -> None:
    (tmp_path / "dev.json").write_text(json.dumps([{"db_id": "a", "question": "q"}]))
    with pytest.raises(DataError, match=r"entry 0: missing field 'SQL'"):
        load_bird(tmp_path)
    (tmp_path / "dev.json").write_text(json.dumps([{"db_id": 3, "question": "q", "query": "x"}]))
    with pytest.raises(DataError, match=r"entry 0: field 'db_id' should be str"):
        load_spider(tmp_path)


def test_unknown_benchmark_and_missing_dir(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="unknown benchmark"):
        load_benchmark("wikisql", tmp_path)
    with pytest.raises(DataError, match="not found"):
        load_spider(tmp_path / "nope")


def test_spider_dev_counts_and_official_hardness(spider: Path) -> None:
    bench = load_spider(spider)
    assert len(bench.tasks) == 1034
    assert len(bench.unavailable) == 62 and bench.missing_databases == ["wta_1"]
    # the official scorer's split of Spider dev by hardness
    assert Counter(t.difficulty for t in bench.tasks) == {"easy": 248, "medium": 446, "hard": 174, "extra": 166}
