"""Reading predictions: every format stays aligned with its questions."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from finestep.data.task import DataError, Task
from finestep.eval.predictions import detect_format, read_predictions


@pytest.fixture
def tasks(tmp_path: Path) -> list[Task]:
    return [
        Task(id=str(100 + i), index=i, question="q", db_id=db, db_path=tmp_path / f"{db}.sqlite", gold_sql="SELECT 1")
        for i, db in enumerate(["shop", "shop", "zoo"])
    ]


def test_lines_with_crlf_semicolons_and_tabs(tmp_path: Path, tasks: list[Task]) -> None:
    path = tmp_path / "pred.sql"
    path.write_bytes(b"SELECT a\tFROM t;\r\nSELECT b FROM t\tshop\r\n\r\n")
    assert read_predictions(path, tasks) == ["SELECT a\tFROM t;", "SELECT b FROM t", ""]


def test_lines_count_mismatch_is_an_error(tmp_path: Path, tasks: list[Task]) -> None:
    path = tmp_path / "pred.sql"
    path.write_text("SELECT 1\nSELECT 2\nSELECT 3\nSELECT 4\n")
    with pytest.raises(DataError, match="4 predictions for 3 questions"):
        read_predictions(path, tasks)


def test_bird_dict(tmp_path: Path, tasks: list[Task]) -> None:
    path = tmp_path / "predict_dev.json"
    path.write_text(json.dumps({"0": "SELECT 1\t----- bird -----\tshop", "2": "SELECT\n 3\t----- bird -----\tzoo"}, indent=4))
    assert detect_format(path.read_text()) == "bird"
    assert read_predictions(path, tasks) == ["SELECT 1", None, "SELECT\n 3"]


def test_bird_dict_wrong_database_is_an_error(tmp_path: Path, tasks: list[Task]) -> None:
    path = tmp_path / "p.json"
    path.write_text(json.dumps({"1": "SELECT 1\t----- bird -----\tzoo"}))
    with pytest.raises(DataError, match="key '1'.*'zoo'.*'shop'"):
        read_predictions(path, tasks)


def test_jsonl_by_task_id_or_position(tmp_path: Path, tasks: list[Task]) -> None:
    path = tmp_path / "p.jsonl"
    path.write_text('{"id": "102", "sql": "SELECT 2"}\n{"id": 0, "sql": "SELECT 0;"}\n')
    assert read_predictions(path, tasks) == ["SELECT 0;", None, "SELECT 2"]


def test_jsonl_errors_name_the_line(tmp_path: Path, tasks: list[Task]) -> None:
    path = tmp_path / "p.jsonl"
    path.write_text('{"id": 0, "sql": "SELECT 0"}\n{"id": 1, "sql": }\n')
    with pytest.raises(DataError, match=r"p\.jsonl:2:"):
        read_predictions(path, tasks)
    path.write_text('{"id": 0, "sql": "SELECT 0"}\n{"id": "nope", "sql": "x"}\n')
    with pytest.raises(DataError, match=r"p\.jsonl:2: field 'id'"):
        read_predictions(path, tasks)
