"""`finestep credit`: trajectory files in, rewards and advantages out, clear errors on bad lines."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest

from finestep.cli import main
from finestep.eval.credit_inspect import inspect_credit
from tests.conftest import make_db


def write(path: Path, *lines: dict) -> Path:
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return path


def test_given_values_are_used_as_is(tmp_path: Path) -> None:
    # Two trajectories of one task, everything given: GRPO on R = [1, 0] over a group of two.
    path = write(
        tmp_path / "t.jsonl",
        {"task_id": "q", "trajectory_id": "a", "outcome": 1.0,
         "steps": [{"kind": "sql", "sql": "x", "process_reward": 0.1, "links": []},
                   {"kind": "solution", "sql": "y", "process_reward": 0.0, "links": [0]}]},
        {"task_id": "q", "trajectory_id": "b", "outcome": 0.0,
         "steps": [{"kind": "solution", "sql": "z", "process_reward": 0.0, "links": []}]},
    )  # fmt: skip
    lines = inspect_credit(path, "grpo", [])
    # mean R = 0.5, sample std = sqrt(((0.5)^2 + (0.5)^2) / 1) = 0.7071: A = +-0.5 / (0.7071 + 1e-6)
    a = 0.5 / (math.sqrt(0.5) + 1e-6)
    assert lines[0]["advantages"] == pytest.approx([a, a]) and lines[1]["advantages"] == pytest.approx([-a])
    assert lines[0]["process_rewards"] == [None, None]  # given, not computed
    assert lines[0]["steps"][1]["links"] == [0]


def test_missing_values_are_computed_from_the_database(tmp_path: Path) -> None:
    db = make_db(tmp_path / "league.sqlite")
    gold = "SELECT name FROM player WHERE goals = 7"
    common = {"task_id": "q", "db_path": db.name, "gold_sql": gold, "question": "Who scored 7?"}
    path = write(
        tmp_path / "t.jsonl",
        {**common, "trajectory_id": "good", "steps": [
            {"kind": "sql", "sql": "SELECT nme FROM player WHERE goals = 7"},
            {"kind": "sql", "sql": "SELECT name FROM player WHERE goals = 7"},
            {"kind": "solution", "sql": "SELECT name FROM player WHERE goals = 7"}]},
        {**common, "trajectory_id": "bad", "steps": [
            {"kind": "sql", "sql": "SELECT name FROM player"},
            {"kind": "sql", "sql": "select NAME from PLAYER"},
            {"kind": "solution", "sql": "SELECT name FROM player"}]},
    )  # fmt: skip
    out = tmp_path / "out.jsonl"
    assert main(["credit", "--input", str(path), "--out", str(out), "beta=0", "--no-table"]) == 0
    good, bad = (json.loads(line) for line in out.read_text().splitlines())
    assert (good["outcome"], bad["outcome"]) == (1.0, 0.0)
    # good: error + ungrounded, then executes + progress, then the solution (format only)
    assert [s["process_reward"] for s in good["steps"]] == pytest.approx([-0.4, 0.3, 0.0])
    assert good["steps"][1]["links"] == [0]  # a near-edit of the failed query (similarity 14/16): repairs it
    assert good["process_rewards"][0] == {"executes": -0.2, "redundant": 0.0, "grounded": -0.2, "progress": 0.0, "format": 0.0,
                                            "reveals_gold": 0.0, "repairs": 0.0}
    assert [s["process_reward"] for s in bad["steps"]] == pytest.approx([0.1, -0.2, 0.0])
    assert all(len(line["advantages"]) == len(line["steps"]) == len(line["step_returns"]) for line in (good, bad))
    # the correct trajectory's steps all come out ahead of the wrong one's at the same position
    assert all(g > b for g, b in zip(good["advantages"], bad["advantages"]))
    # P_0 of "good" = -0.4 + 0.5 * 0.3 = -0.25 (gamma_p = 0.5; the solution's r is 0)
    assert good["step_returns"][0]["process"] == pytest.approx(-0.25)


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ({"task_id": "q", "steps": []}, "field 'trajectory_id': expected a string"),
        ({"task_id": "q", "trajectory_id": "a", "steps": [{"kind": "call"}]}, r"steps\[0\]\.kind: expected one of"),
        ({"task_id": "q", "trajectory_id": "a", "outcome": 1,
          "steps": [{"kind": "sql", "sql": "x", "process_reward": 0, "links": [0]}]}, r"steps\[0\]\.links: 0 is not an earlier step"),
        ({"task_id": "q", "trajectory_id": "a", "steps": [{"kind": "solution", "sql": "x"}]}, "'db_path' is needed"),
        ({"task_id": "q", "trajectory_id": "a", "outcome": "high", "steps": []}, "field 'outcome': expected a number"),
    ],
)  # fmt: skip
def test_malformed_lines_name_line_and_field(tmp_path: Path, line: dict, message: str, capsys: pytest.CaptureFixture[str]) -> None:
    ok = {"task_id": "q", "trajectory_id": "z", "outcome": 0.0, "steps": []}
    path = write(tmp_path / "t.jsonl", ok, line)
    assert main(["credit", "--input", str(path), "--no-table"]) == 2
    err = capsys.readouterr().err
    assert "t.jsonl:2" in err or "line 2" in err
    assert re.search(message, err), err


def test_broken_json_and_unknown_estimator(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "t.jsonl"
    path.write_text('{"task_id": "q"\n')
    assert main(["credit", "--input", str(path)]) == 2
    assert "t.jsonl:1:" in capsys.readouterr().err
    write(path, {"task_id": "q", "trajectory_id": "a", "outcome": 1.0, "steps": []})
    assert main(["credit", "--input", str(path), "--estimator", "ppo"]) == 2
    assert "grpo" in capsys.readouterr().err  # the error lists the registered names
    assert main(["credit", "--input", str(path), "gamma_p=2"]) == 2
    assert "gamma_p" in capsys.readouterr().err


def test_version_switches_are_credit_fields(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # FineStep version 1 is two bare credit keys away (outcome_norm, process_scale); bad values are usage errors.
    steps = [{"kind": "sql", "sql": "x", "process_reward": 0.1, "links": []},
             {"kind": "solution", "sql": "y", "process_reward": 0.0, "links": []}]
    path = write(tmp_path / "t.jsonl", *({"task_id": "q", "trajectory_id": t, "outcome": 1.0, "steps": steps}
                                         for t in "ab"))  # fmt: skip
    v2 = inspect_credit(path, "finestep", [])
    v1 = inspect_credit(path, "finestep", ["outcome_norm=steps", "process_scale=group"])
    assert v2[0]["advantages"] == [0.0, 0.0]  # identical trajectories: nothing to prefer
    assert v1[0]["advantages"][0] < 0 < v1[0]["advantages"][1]  # version 1 favours the late step
    assert main(["credit", "--input", str(path), "--no-table", "process_scale=task"]) == 2
    assert "process_scale" in capsys.readouterr().err


def test_table_on_request(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path / "t.jsonl", {"task_id": "q", "trajectory_id": "a", "outcome": 1.0,
                                        "steps": [{"kind": "solution", "sql": "SELECT 1", "process_reward": 0.0, "links": []}]})
    assert main(["credit", "--input", str(path), "--table", "--estimator", "rloo"]) == 0
    assert "task q: 1 trajectories" in capsys.readouterr().out


def test_example_file_runs(spider: Path, tmp_path: Path) -> None:
    example = Path(__file__).resolve().parents[1] / "examples" / "trajectories.jsonl"
    lines = inspect_credit(example, "finestep", [], db_root=spider / "database")
    assert [line["trajectory_id"] for line in lines] == ["a", "b", "c", "d", "x", "y"]
    b = lines[1]
    assert b["process_rewards"][1]["redundant"] == -0.3
    assert b["advantages"][1] < b["advantages"][0]  # the repeat earns less than the probe it repeats


def test_gigpo_compares_steps_with_equal_histories(tmp_path: Path) -> None:
    # Two trajectories of one task, everything given. Both first steps share the empty history (one anchor
    # group); the second steps' histories differ (SELECT 1 vs SELECT 2), so they are not compared.
    path = write(
        tmp_path / "t.jsonl",
        {"task_id": "q", "trajectory_id": "a", "outcome": 1.0,
         "steps": [{"kind": "sql", "sql": "SELECT 1", "process_reward": 0.1, "links": []},
                   {"kind": "solution", "sql": "SELECT 1", "process_reward": 0.0, "links": []}]},
        {"task_id": "q", "trajectory_id": "b", "outcome": 0.0,
         "steps": [{"kind": "sql", "sql": "SELECT 2", "process_reward": 0.1, "links": []},
                   {"kind": "solution", "sql": "SELECT 2", "process_reward": 0.0, "links": []}]},
    )  # fmt: skip
    a = 0.5 / (math.sqrt(0.5) + 1e-6)  # GRPO on R = [1, 0]; also any anchor group of two different returns
    grpo = [line["advantages"] for line in inspect_credit(path, "grpo", [])]
    assert grpo == [pytest.approx([a, a]), pytest.approx([-a, -a])]
    # gigpo: episode advantage + omega (1) * the first steps' anchor-group advantage, normalized over their
    # returns G = 0.1 + 0.95 * 1 and 0.1 + 0.95 * 0: +-a; the second steps have no partner: 0.
    out = tmp_path / "out.jsonl"
    assert main(["credit", "--input", str(path), "--estimator", "gigpo", "--out", str(out), "--no-table"]) == 0
    gigpo = [json.loads(line)["advantages"] for line in out.read_text().splitlines()]
    assert gigpo == [pytest.approx([2 * a, a]), pytest.approx([-2 * a, -a])]
    # with equal histories the second steps are compared too (returns 1 and 0: +-a)
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    lines[1]["steps"][0]["sql"] = "select 1;"  # the same canonical query: the same history
    same = write(tmp_path / "same.jsonl", *lines)
    assert [line["advantages"] for line in inspect_credit(same, "gigpo", [])] == [
        pytest.approx([2 * a, 2 * a]), pytest.approx([-2 * a, -2 * a])]
