"""Bad input never crashes: every case is a clear error naming the file, line, key or flag, with exit code 2,
no traceback and nothing half-written (issue 11: 12 tracebacks and 7 silent acceptances before)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from finestep.cli import main
from finestep.data import load_benchmark
from finestep.data.task import DataError
from finestep.eval.predictions import read_predictions
from tests.test_data import write_bird

DEEP = "[" * 100_000 + "]" * 100_000  # deeper than Python's recursion limit
SPIDER_TINY = Path(__file__).resolve().parents[1] / "configs" / "spider-tiny.yaml"


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    """Exit code and standard error of ``finestep argv`` (argparse errors included)."""
    try:
        code = main(argv)
    except SystemExit as exc:
        code = int(exc.code or 0)
    return code, capsys.readouterr().err


def eval_argv(tmp_path: Path, predictions: str | None = None, *extra: str) -> list[str]:
    data = write_bird(tmp_path / "bird")
    preds = tmp_path / "p.jsonl"
    if predictions is not None:
        preds.write_text(predictions)
    return ["eval", "--benchmark", "bird", "--data", str(data), "--predictions", str(preds), *extra]


def credit_argv(tmp_path: Path, *lines: str, extra: tuple[str, ...] = ()) -> list[str]:
    path = tmp_path / "t.jsonl"
    path.write_text("".join(line + "\n" for line in lines))
    return ["credit", "--input", str(path), "--no-table", *extra]


STEP = '{"kind": "solution", "sql": "SELECT 1", "process_reward": 0, "links": []}'


def trajectory(outcome: str = "1", reward: str = "0", db_path: str | None = None) -> str:
    db = f', "db_path": "{db_path}", "gold_sql": "SELECT 1"' if db_path else ""
    step = STEP.replace('"process_reward": 0', f'"process_reward": {reward}')
    return f'{{"task_id": "q", "trajectory_id": "a", "outcome": {outcome}{db}, "steps": [{step}]}}'


def train_argv(override: str) -> Callable[[Path], list[str]]:
    return lambda t: ["train", "--config", str(SPIDER_TINY), "--run-dir", str(t / "run"), override]


# (name, argv builder, fragment the error must contain)
CASES: list[tuple[str, Callable[[Path], list[str]], str]] = [
    # eval: predictions
    ("jsonl nested too deeply", lambda t: eval_argv(t, '{"id": "7", "sql": "SELECT 1"}\n{"id": "8", "sql": ' + DEEP + "}\n"),
     "p.jsonl:2: JSON nested too deeply"),
    ("first line nested too deeply", lambda t: eval_argv(t, '{"id": "7", "sql": ' + DEEP + "}\n"), "p.jsonl"),
    ("id true", lambda t: eval_argv(t, '{"id": true, "sql": "SELECT 1"}\n'), "p.jsonl:1: field 'id'"),
    ("predictions is a folder", lambda t: eval_argv(t, None) if (t / "p.jsonl").mkdir() is None else [],
     "p.jsonl: is a folder"),
    ("out below a file", lambda t: eval_argv(t, '{"id": "7", "sql": "SELECT 1"}\n', "--out",
                                             str(_file(t / "f") / "r.json")), "is a file, not a folder"),
    ("out is a folder", lambda t: eval_argv(t, '{"id": "7", "sql": "SELECT 1"}\n', "--out", str(t)), "is a folder"),
    ("timeout nan", lambda t: eval_argv(t, "", "--timeout", "nan"), "--timeout: expected a number > 0"),
    ("timeout zero", lambda t: eval_argv(t, "", "--timeout", "0"), "--timeout: expected a number > 0"),
    ("workers negative", lambda t: eval_argv(t, "", "--workers", "-3"), "--workers: expected an integer >= 1"),
    # credit
    ("credit nested too deeply", lambda t: credit_argv(t, DEEP), "t.jsonl:1: JSON nested too deeply"),
    ("credit input is a folder", lambda t: ["credit", "--input", str(t), "--no-table"], "is a folder"),
    ("credit 400-digit outcome", lambda t: credit_argv(t, trajectory(outcome="9" * 400)),
     "t.jsonl:1: field 'outcome': expected a finite number, got an integer of 400 digits"),
    ("credit NaN outcome", lambda t: credit_argv(t, trajectory(outcome="NaN")),
     "t.jsonl:1: field 'outcome': expected a finite number, got nan"),
    ("credit infinite reward", lambda t: credit_argv(t, trajectory(), trajectory(reward="-Infinity")),
     "t.jsonl:2: steps[0].process_reward: expected a finite number, got -inf"),
    ("credit db_path not a database", lambda t: credit_argv(t, trajectory(outcome="null", db_path=str(_file(t / "x.db")))),
     "t.jsonl:1: field 'db_path': not a SQLite database"),
    ("credit out is a folder", lambda t: credit_argv(t, trajectory(), extra=("--out", str(t))), "--out"),
    # train
    ("train config is a folder", lambda t: ["train", "--config", str(t), "--run-dir", str(t / "run")], "is a folder"),
    ("train run dir is a file", lambda t: ["train", "--config", str(SPIDER_TINY), "--run-dir", str(_file(t / "r"))],
     "--run-dir"),
    *[
        (f"train {override}", train_argv(override), message)
        for override, message in [
            ("optim.minibatch_size=0", "optim.minibatch_size: must be >= 1, got 0"),
            ("data.eval_databases=-1", "data.eval_databases: must be >= 0, got -1"),
            ("trainer.tasks_per_step=0", "trainer.tasks_per_step: must be >= 1, got 0"),
            ("model.tiny.vocab_size=1", "model.tiny.vocab_size: must be >= 272, got 1"),
            ("optim.lr=.nan", "optim.lr: expected a finite number"),
            ("optim.lr=0", "optim.lr: must be > 0, got 0.0"),
            ("optim.grad_clip=0", "optim.grad_clip: must be > 0, got 0.0"),
            ("trainer.device=gpu", "trainer.device: expected auto, cpu, cuda, cuda:N or mps, got 'gpu'"),
            ("rollout.top_p=0", "rollout.top_p: top_p must be in (0, 1], got 0.0"),
            ("rollout.temperature=-1", "rollout.temperature: temperature must be >= 0, got -1.0"),
            ("rewards.links.link_threshold=2", "rewards.links.link_threshold: must be in [0, 1], got 2.0"),
        ]
    ],
]  # fmt: skip


def _file(path: Path) -> Path:
    path.write_text("not a folder, not a database\n")
    return path


@pytest.mark.parametrize(("name", "argv", "message"), CASES, ids=[case[0] for case in CASES])
def test_bad_input_is_a_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str, argv: Callable[[Path], list[str]], message: str
) -> None:
    code, err = run(argv(tmp_path), capsys)
    flat = " ".join(err.split())
    assert code == 2, err
    assert message in flat, flat
    assert "Traceback" not in err
    assert not (tmp_path / "run").exists()  # no half-made run folder


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA device")
@pytest.mark.parametrize("device", ["cuda", "cuda:0"])
def test_a_cuda_device_on_a_machine_without_one(tmp_path: Path, capsys: pytest.CaptureFixture[str], device: str) -> None:
    run_dir = tmp_path / "run"
    argv = ["train", "--config", str(SPIDER_TINY), "--run-dir", str(run_dir), f"trainer.device={device}"]
    code, err = run(argv, capsys)
    assert code == 2 and f"trainer.device: {device} requested but this machine has no CUDA device" in " ".join(err.split())
    assert not run_dir.exists()


def test_a_failed_set_up_leaves_no_run_folder(spider: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run_dir = tmp_path / "run"
    argv = ["train", "--config", str(SPIDER_TINY), "--run-dir", str(run_dir), f"data.path={spider}",
            "model.init=pretrained", f"model.path={tmp_path / 'no-model'}"]  # fmt: skip
    code, err = run(argv, capsys)
    assert code == 2 and "no-model" in err and "Traceback" not in err
    assert not run_dir.exists()


def test_exponent_learning_rate_on_the_command_line_is_accepted() -> None:
    from finestep.train.config import load_train_config

    assert load_train_config(SPIDER_TINY, ["optim.lr=3e-5"]).optim.lr == 3e-5


def test_a_boolean_id_is_not_question_1(tmp_path: Path) -> None:
    bench = load_benchmark("bird", write_bird(tmp_path / "bird"))
    path = tmp_path / "p.jsonl"
    path.write_text('{"id": true, "sql": "SELECT 1"}\n')
    with pytest.raises(DataError, match="field 'id'"):
        read_predictions(path, bench.tasks)
    path.write_text('{"id": 1, "sql": "SELECT 1"}\n')  # a position is still an integer
    assert read_predictions(path, bench.tasks)[1] == "SELECT 1"
