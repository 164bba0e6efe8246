"""The SQLWorld demo (--quick) and bench end to end: report files present and sane."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from finestep.bench.compare import estimator_overrides, run_bench
from finestep.cli import main

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
    assert "| grpo |" in (tmp_path / "results.md").read_text()


def test_estimator_names() -> None:
    assert estimator_overrides("grpo") == ["credit.estimator=grpo"]
    assert estimator_overrides("finestep-no_temporal") == [
        "credit.estimator=finestep", "credit.gamma_p=0.0", "credit.gamma_o=1.0"
    ]  # fmt: skip
    with pytest.raises(ValueError, match="unknown ablation"):
        estimator_overrides("finestep-no_everything")
