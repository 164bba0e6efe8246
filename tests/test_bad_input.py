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
    ("credit empty file", lambda t: credit_argv(t, extra=("--out", str(t / "run"))),
     "t.jsonl: no trajectories in the file: nothing to credit"),
    ("credit blank lines", lambda t: credit_argv(t, "", "  "), "t.jsonl: no trajectories in the file: nothing to credit"),
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
            # no silent fallback (issue 22): a path that would not be used, a generator that is not there
            ("model.path=/nonexistent", ("model.path: /nonexistent would not be used: model.init is tiny, which builds "
             "a new tiny model in the run folder; set model.init=pretrained")),
            ("model.generator=vllm", "model.generator: vllm is not installed here"),
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


# --- no silent fallback to a toy model, no half-made run folder (issue 22) -----------------------------------


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from finestep.models import build_tiny_model

    corpus = ["SELECT name FROM player WHERE goals = 7", "Who scored 7 goals?"] * 20
    return build_tiny_model(corpus, tmp_path_factory.mktemp("bad-model") / "model", vocab_size=300, hidden_size=16,
                            num_layers=1, num_heads=2, num_kv_heads=1, intermediate_size=32)  # fmt: skip


def _copy(model_dir: Path, target: Path) -> Path:
    import shutil

    shutil.copytree(model_dir, target)
    return target


def _edit_config(folder: Path, **changes: object) -> Path:
    import json

    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, **changes}))
    return folder


def _without_chat_template(folder: Path) -> Path:
    import json

    (folder / "chat_template.jinja").unlink(missing_ok=True)
    config = json.loads((folder / "tokenizer_config.json").read_text())
    config.pop("chat_template", None)
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    return folder


def _run_folder(t: Path) -> Path:
    (t / "old-run" / "checkpoints").mkdir(parents=True)
    (t / "old-run" / "config.yaml").write_text("model: {init: tiny}\n")
    (t / "old-run" / "checkpoints" / "latest").write_text("step-000003\n")
    return t / "old-run"


def _adapter_without_base(t: Path) -> Path:
    (t / "adapter").mkdir()
    (t / "adapter" / "adapter_config.json").write_text('{"base_model_name_or_path": "/models/gone", "r": 8}')
    return t / "adapter"


# (name, the model folder made from the tiny one in tmp_path, overrides, fragment the error must contain)
MODEL_CASES: list[tuple[str, Callable[[Path, Path], Path], list[str], str]] = [
    ("a run folder as the model", lambda m, t: _run_folder(t), [],
     ("model.path: {path} is a finestep run folder, not a model; continue the run with finestep train --resume {path}, "
     "or start from its newest checkpoint's model, {path}/checkpoints/step-000003/model")),
    ("a folder without config.json", lambda m, t: (t / "empty").mkdir() or t / "empty", [],
     "model.path: {path} has no config.json: not a Hugging Face model folder"),
    ("a file as the model", lambda m, t: _file(t / "model.bin"), [], "model.path: {path} is a file"),
    ("config.json without weights", lambda m, t: (_copy(m, t / "m") / "model.safetensors").unlink() or t / "m", [],
     "model.path: {path} has config.json but no weights"),
    ("an adapter whose base is gone", lambda m, t: _adapter_without_base(t), [],
     "model.path: {path} holds a LoRA adapter whose base model ('/models/gone'"),
    ("a tokenizer beyond the embedding", lambda m, t: _edit_config(_copy(m, t / "m"), vocab_size=64), [],
     "model.path: the tokenizer in {path} does not match the model's vocabulary: it has"),
    ("the model's eos not in the tokenizer", lambda m, t: _edit_config(_copy(m, t / "m"), eos_token_id=100_000,
                                                                       vocab_size=100_352), [],
     "model.path: the model's eos_token_id 100000 (config.json) are not tokens of the tokenizer"),
    ("json without a chat template", lambda m, t: _without_chat_template(_copy(m, t / "m")), ["rollout.protocol=json"],
     ("rollout.protocol: json: the json protocol writes tool calls and tool answers through the tokenizer's chat "
     "template, and this tokenizer has none")),
    ("LoRA targets that match nothing", lambda m, t: _copy(m, t / "m"),
     ["model.lora.enabled=true", "model.lora.target_modules=[qkv]"],
     "model.lora.target_modules: ['qkv'] name no module of this model; its linear layers are down_proj, gate_proj"),
]  # fmt: skip


@pytest.mark.parametrize(("name", "make", "overrides", "message"), MODEL_CASES, ids=[c[0] for c in MODEL_CASES])
def test_a_model_that_will_not_be_used_as_given_is_refused_before_any_work(
    spider: Path, model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str,
    make: Callable[[Path, Path], Path], overrides: list[str], message: str,
) -> None:  # fmt: skip
    path = make(model_dir, tmp_path)
    run_dir = tmp_path / "runs" / "new" / "run"  # parents that do not exist yet: none may be left behind
    argv = ["train", "--config", str(SPIDER_TINY), "--run-dir", str(run_dir), f"data.path={spider}",
            "model.init=pretrained", f"model.path={path}", *overrides]  # fmt: skip
    code, err = run(argv, capsys)
    assert code == 2, err
    assert message.format(path=path) in " ".join(err.split()), err
    assert "Traceback" not in err
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize(
    ("command", "extra"),
    [("sft", ["--data", "t.jsonl", "--out", "out"]), ("agent-eval", ["--benchmark", "spider"]),
     ("ask", ["--db", "x.sqlite", "how many?"])],
)  # fmt: skip
def test_the_commands_that_load_a_model_check_it_and_name_the_flag(
    model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], command: str, extra: list[str]
) -> None:
    bare = _without_chat_template(_copy(model_dir, tmp_path / "m"))
    code, err = run([command, "--model", str(bare), "--protocol", "json", "--device", "cpu", *extra], capsys)
    assert code == 2 and "--protocol: json: the json protocol writes tool calls" in " ".join(err.split()), err
    code, err = run([command, "--model", str(tmp_path / "gone"), "--device", "cpu", *extra], capsys)
    assert code == 2 and f"--model: no model folder at {tmp_path / 'gone'}" in " ".join(err.split()), err
    assert not (tmp_path / "out").exists()


def test_a_set_up_failure_after_the_run_folder_was_made_removes_it_and_its_new_parents(
    spider: Path, model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / "keep.txt").write_text("a file of the user's")
    run_dir = tmp_path / "runs" / "a" / "b"
    argv = ["train", "--config", str(SPIDER_TINY), "--run-dir", str(run_dir), f"data.path={spider}",
            "model.lora.enabled=true", "model.lora.target_modules=[qkv]"]  # fails once the tiny model is built
    code, err = run(argv, capsys)
    assert code == 2 and "model.lora.target_modules" in err
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["keep.txt"]  # runs/ was there: it stays


def test_a_failed_resume_keeps_the_users_run_folder(
    spider: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "config.yaml").write_text(SPIDER_TINY.read_text())
    code, err = run(["train", "--resume", str(run_dir), f"data.path={spider}"], capsys)
    assert code == 2 and "no checkpoint to resume from" in err
    assert (run_dir / "config.yaml").is_file()
