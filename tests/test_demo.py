"""The SQLWorld demo (--quick) and bench end to end: report files present and sane."""

from __future__ import annotations

import importlib.util
import io
import json
import re
from pathlib import Path

import pytest

from finestep.bench.compare import estimator_overrides, run_bench
from finestep.bench.report import DIAGNOSTIC_KEYS, plot_diagnostics
from finestep.cli import PlainProgress, main
from finestep.data.sqlworld import load_world

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "sqlworld-tiny.yaml"
RATES = ("redundant_rate", "error_rate", "format_failure_rate")


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("demo")
    assert main(["demo", "--quick", "--out", str(out)]) == 0
    return out


def _sane(metrics: dict) -> None:
    assert 0.0 <= metrics["ex"] <= 100.0
    assert all(0.0 <= metrics[key] <= 1.0 for key in RATES)
    assert 0.0 <= metrics["tool_calls"] <= 4.0 and 1.0 <= metrics["turns"] <= 4.0


@pytest.mark.slow
def test_quick_demo_writes_a_sane_report(demo: Path) -> None:
    summary = json.loads((demo / "summary.json").read_text())
    _sane(summary["before"])
    _sane(summary["after"])
    assert summary["held_out_tasks"] == 32 and summary["rl_steps"] == 8
    report = (demo / "report.md").read_text()
    assert "| EX % (held out) |" in report and "training_curves.png" in report
    png = (demo / "training_curves.png").read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 10_000
    viewer = (demo / "trajectories.html").read_text()
    assert viewer.count("<table>") == 4 and "rgba(" in viewer  # one table per viewer task, coloured rows
    lines = (demo / "rl" / "metrics.jsonl").read_text().splitlines()
    assert sum(json.loads(line)["kind"] == "train" for line in lines) == 8


@pytest.mark.slow
def test_bench_compares_estimators_from_one_start(demo: Path, tmp_path: Path) -> None:
    common = [f"data.path={demo / 'world'}", f"model.path={demo / 'model-sft'}", "trainer.max_steps=2",
              "trainer.tasks_per_step=2", "rollout.group_size=4", "data.max_eval_tasks=8"]  # fmt: skip
    results = run_bench(CONFIG, tmp_path, ["grpo", "finestep-no_logical"], 2, common)
    for name in ("grpo", "finestep-no_logical"):
        entry = results["estimators"][name]
        assert entry["seeds"] == [0, 1]
        assert {"ex_mean", "ex_std", "tool_calls_mean", "redundant_rate_mean", "error_rate_mean"} <= set(entry)
        assert 0.0 <= entry["ex_mean"] <= 100.0 and entry["ex_std"] >= 0.0
    assert json.loads((tmp_path / "results.json").read_text()) == results
    assert (tmp_path / "learning_curves.png").stat().st_size > 10_000
    assert (tmp_path / "diagnostics.png").stat().st_size > 10_000
    for text in (tmp_path / "runs" / "grpo-seed0" / "metrics.jsonl").read_text().splitlines():
        line = json.loads(text)  # every train line has the diagnostics (entropy and the log-prob gap need tokens)
        if line["kind"] == "train":
            needed = {key for key, _ in DIAGNOSTIC_KEYS} - ({"entropy", "rollout_logprob_gap"} if
                                                           line["n_tokens"] == 0 else set())  # fmt: skip
            assert needed <= set(line)
    assert "| grpo |" in (tmp_path / "results.md").read_text()


@pytest.mark.slow
def test_parallel_bench_evaluates_the_warm_start_and_a_second_split_and_resumes(demo: Path, tmp_path: Path) -> None:
    common = [f"data.path={demo / 'world'}", f"model.path={demo / 'model-sft'}", "trainer.max_steps=1",
              "trainer.tasks_per_step=2", "rollout.group_size=2", "data.max_eval_tasks=4",
              "data.eval_split=test"]  # fmt: skip
    results = run_bench(CONFIG, tmp_path, ["grpo", "finestep"], 1, common, jobs=2, secondary="test", world_seed=0)
    assert results["world_seed"] == 0 and results["n_eval"] == 4 and results["eval_split"] == "test"
    assert results["n_secondary"] == 4  # secondary_tasks unset: data.max_eval_tasks
    assert 0.0 <= results["warm_start"]["ex"] <= 100.0
    # the second split here is the first one again, so the warm start's two evaluations must agree exactly
    assert results["warm_start"]["secondary"]["ex"] == results["warm_start"]["ex"]
    for name in ("grpo", "finestep"):
        entry = results["estimators"][name]
        assert entry["secondary_ex_mean"] == entry["ex_mean"]  # greedy: the same tasks, the same answers
        assert entry["per_seed"][0]["secondary"]["ex"] == entry["per_seed"][0]["ex"]
    stamp = (tmp_path / "runs" / "grpo-seed0" / "run.json").stat().st_mtime_ns
    again = run_bench(CONFIG, tmp_path, ["grpo", "finestep"], 1, common, secondary="test", world_seed=0)
    assert (tmp_path / "runs" / "grpo-seed0" / "run.json").stat().st_mtime_ns == stamp  # reused, not rerun
    assert again["estimators"] == results["estimators"]

    # benchmarks/hard_comparison.py adds the regime and the test split: here the eval split is test too
    out = tmp_path / "hard.json"
    spec = importlib.util.spec_from_file_location("hard_comparison", CONFIG.parents[1] / "benchmarks" / "hard_comparison.py")
    assert spec is not None and spec.loader is not None
    hard_comparison = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(hard_comparison)
    assert hard_comparison.main(["--bench", str(tmp_path), "--out", str(out), "--test-tasks", "4"]) == 0
    written = json.loads(out.read_text())
    assert written["test"]["warm_start"]["ex"] == results["warm_start"]["ex"]
    assert written["test"]["grpo"]["per_seed"][0]["ex"] == results["estimators"]["grpo"]["per_seed"][0]["ex"]
    regime = written["regime"]
    assert regime["max_turns"] == 4 and regime["expert_tool_calls"]["clean"] > 0
    assert set(regime["outcome_variance_share_first_10_steps"]) == {"grpo", "finestep"}
    assert (tmp_path / "hard-learning_curves.png").stat().st_size > 10_000
    assert written["eval_curves"]["grpo"][0]["1"] == results["estimators"]["grpo"]["per_seed"][0]["ex"]
    assert all(0.0 <= v <= 1.0 for v in regime["outcome_variance_share_first_10_steps"].values())


def test_the_secondary_split_can_have_its_own_question_count(demo: Path) -> None:
    from finestep.bench.compare import _eval_split_tasks, _load_config

    config = _load_config(CONFIG, [f"data.path={demo / 'world'}", f"model.path={demo / 'model-sft'}",
                                   "data.max_eval_tasks=4"], "grpo", 0)  # fmt: skip
    test = load_world(demo / "world").test
    assert _eval_split_tasks(config, "test") == test[:4]
    assert _eval_split_tasks(config, "test", 2) == test[:2]  # --secondary-tasks 2
    assert len(_eval_split_tasks(config, "test", 10_000)) == len(test)


def test_estimator_names() -> None:
    assert estimator_overrides("grpo") == ["credit.estimator=grpo"]
    assert estimator_overrides("finestep-no_temporal") == [
        "credit.estimator=finestep", "credit.gamma_p=0.0", "credit.gamma_o=1.0"
    ]  # fmt: skip
    with pytest.raises(ValueError, match="unknown ablation"):
        estimator_overrides("finestep-no_everything")


def test_diagnostics_plot_has_a_panel_per_diagnostic(tmp_path: Path) -> None:
    import matplotlib.image

    step = {key: 0.5 for key, _ in DIAGNOSTIC_KEYS}
    curves = {
        "grpo": [[{**step, "approx_kl": 0.01 * i} for i in range(6)], [dict(step) for _ in range(7)]],
        "finestep": [[{**step, "rollout_logprob_gap": None} for _ in range(6)]],  # a missing value: a gap
        "empty": [],
    }
    path = plot_diagnostics(curves, tmp_path / "diagnostics.png")
    image = matplotlib.image.imread(path)
    assert image.shape[1] > image.shape[0] > 400  # 2 rows of 4 panels
    assert len(DIAGNOSTIC_KEYS) == 8


class _FakeLog(io.StringIO):
    """A piped stdout: not a terminal; counts flushes."""

    flushes = 0

    def isatty(self) -> bool:
        return False

    def flush(self) -> None:
        self.flushes += 1
        super().flush()


def test_plain_progress_prints_stages_and_every_tenth_flushed() -> None:
    log, now = _FakeLog(), [0.0]
    say = PlainProgress(log, clock=lambda: now[0])
    say("building the world", None)
    now[0] = 2.0
    for step in range(1, 101):
        say(f"SFT warm start (loss {1 / step:.3f})", step / 100)
        now[0] += 0.5
    for step in range(1, 26):
        say(f"FineStep RL step {step}/25: reward +0.10", step / 25)
        now[0] += 4.0
    say.close()
    lines = log.getvalue().splitlines()
    assert lines[:3] == ["[    0 s] building the world", "[    2 s] done building the world (2 s)",
                         "[    2 s] SFT warm start (loss 1.000) [1%]"]  # fmt: skip
    sft = [line for line in lines if line.startswith("[") and "SFT warm start (loss" in line]
    assert [line.rsplit("[", 1)[1] for line in sft] == ["1%]"] + [f"{10 * k}%]" for k in range(1, 11)]
    rl = [line for line in lines if "FineStep RL step" in line]
    assert [line.split("step ")[1].split("/")[0] for line in rl] == ["1", "3", "5", "8", "10", "13", "15", "18",
                                                                    "20", "23", "25"]  # fmt: skip
    assert lines[-1] == "[  152 s] done FineStep RL (100 s)"
    assert "[   52 s] done SFT warm start (50 s)" in lines
    assert log.flushes == len(lines)


def test_piped_demo_prints_progress_lines(monkeypatch: pytest.MonkeyPatch) -> None:
    import finestep.bench.demo as demo_module

    def fake_run_demo(out: Path, demo: object, say) -> dict:
        say("building the world", None)
        for step in range(1, 6):
            say(f"FineStep RL step {step}/5: reward +0.00", step / 5)
        return {"held_out_tasks": 1, "wall_time_s": 1.0, "before": {"ex": 0.0}, "after": {"ex": 1.0}}

    monkeypatch.setattr(demo_module, "run_demo", fake_run_demo)
    log = _FakeLog()
    monkeypatch.setattr("sys.stdout", log)
    assert main(["demo", "--quick", "--out", "unused"]) == 0
    text = log.getvalue()
    assert "] building the world" in text and "FineStep RL step 5/5" in text and "done FineStep RL" in text
    assert "EX % (held out)" in text  # the summary table still comes last


def test_stage_reporter_prints_plain_lines_when_piped() -> None:
    """`finestep bench` prepares its warm start through the same reporter: a piped run shows every stage."""
    from rich.console import Console

    from finestep.cli.sqlworld import stage_reporter

    log = _FakeLog()
    with stage_reporter(Console(file=log, force_terminal=False)) as say:
        say("building the world", None)
        say("SFT warm start, stage 1/2 (loss 2.000)", 0.5)
    stages = [re.sub(r"\(\d+ s\)", "(N s)", line.split("] ", 1)[1]) for line in log.getvalue().splitlines()]
    assert stages == ["building the world", "done building the world (N s)",
                      "SFT warm start, stage 1/2 (loss 2.000) [50%]", "done SFT warm start, stage 1/2 (N s)"]  # fmt: skip
