"""``finestep bench``: estimators compared from one warm start with one budget, over several seeds."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from finestep.atomic import atomic_write_json, atomic_write_text
from finestep.bench.pipeline import run_rl
from finestep.bench.report import markdown_table, plot_curves, plot_diagnostics
from finestep.credit import ABLATIONS
from finestep.train.config import TrainConfig, load_train_config

__all__ = ["estimator_overrides", "run_bench", "summarize"]

SUMMARY_KEYS = ("ex", "tool_calls", "redundant_rate", "error_rate", "format_failure_rate", "turns", "generated_tokens")


def estimator_overrides(name: str) -> list[str]:
    """Config overrides for an estimator name: a registered estimator (``grpo``) or a FineStep ablation
    (``finestep-no_logical``, one of ``ABLATIONS``)."""
    if name.startswith("finestep-"):
        ablation = name.removeprefix("finestep-")
        if ablation not in ABLATIONS:
            raise ValueError(f"unknown ablation {ablation!r}; expected one of {sorted(ABLATIONS)}")
        return ["credit.estimator=finestep", *(f"credit.{k}={v}" for k, v in ABLATIONS[ablation].items())]
    return [f"credit.estimator={name}"]


def summarize(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean and spread of the held-out metrics over one estimator's seeds (the documented results schema)."""
    out: dict[str, Any] = {"seeds": [r["seed"] for r in runs]}
    for key in SUMMARY_KEYS:
        values = [float(r["final"].get(key, 0.0)) for r in runs]
        out[f"{key}_mean"] = statistics.fmean(values)
        out[f"{key}_std"] = statistics.stdev(values) if len(values) > 1 else 0.0
    out["wall_time_mean"] = statistics.fmean(r["wall_time"] for r in runs)
    out["per_seed"] = [{"seed": r["seed"], **{k: r["final"].get(k) for k in SUMMARY_KEYS}} for r in runs]
    return out


def run_bench(
    base_config: Path,
    out: Path,
    estimators: list[str],
    seeds: int,
    common: list[str],
    on_run: Callable[[str, int, dict[str, Any]], None] | None = None,
    on_step: Callable[[str, int, dict[str, float]], None] | None = None,
) -> dict[str, Any]:
    """Run every estimator with ``seeds`` seeds from the same start and budget; write results.json, a markdown
    table, the learning curves and the training diagnostics (``diagnostics.png``) under ``out``. ``common``
    overrides apply to every run (model, data, budget)."""
    results: dict[str, Any] = {"estimators": {}, "base_config": str(base_config), "common_overrides": common}
    curves: dict[str, list[list[dict[str, Any]]]] = {}
    for name in estimators:
        runs = []
        for seed in range(seeds):
            run_dir = out / "runs" / f"{name}-seed{seed}"
            config: TrainConfig = load_train_config(
                base_config, [*common, *estimator_overrides(name), f"trainer.seed={seed}"]
            )
            start = time.perf_counter()
            result = run_rl(config, run_dir, None if on_step is None else lambda m, n=name, s=seed: on_step(n, s, m))
            run = {"seed": seed, "final": result["final"], "wall_time": time.perf_counter() - start,
                   "curve": result["curve"]}  # fmt: skip
            runs.append(run)
            if on_run is not None:
                on_run(name, seed, run)
        curves[name] = [r["curve"] for r in runs]
        results["estimators"][name] = summarize(runs)
        atomic_write_json(out / "results.json", results)  # after every estimator: a partial bench is kept
    plot_curves(curves, out / "learning_curves.png")
    plot_diagnostics(curves, out / "diagnostics.png")
    rows = [{"estimator": n, **s} for n, s in results["estimators"].items()]
    columns = [("estimator", "estimator"), ("ex_mean", "EX mean"), ("ex_std", "EX std"),
               ("tool_calls_mean", "tool calls"), ("redundant_rate_mean", "redundant rate"),
               ("error_rate_mean", "error rate"), ("wall_time_mean", "wall s")]  # fmt: skip
    atomic_write_text(out / "results.md", markdown_table(rows, columns))
    return results
