"""The hard tier's comparison file (issue 19): a finished ``finestep bench --tier hard`` with its regime and the
unseen-database ``test`` split beside the held-out one.

    finestep bench --tier hard --out runs/bench-hard36 --estimators grpo,finestep,grpo_shaped --seeds 3 ...
    python benchmarks/hard_comparison.py --bench runs/bench-hard36 --out benchmarks/results/sqlworld-hard.json

Adds to the bench's ``results.json`` (today's schema: ``estimators``, ``warm_start``, ``world_seed``, ``n_eval``):
``regime`` (the turn budget, the clean and the default expert's tool calls per training question, the warm
start's EX on every split, the share of groups with outcome variance in RL's first 10 steps per estimator) and
``test``: the warm start's and every final model's greedy EX on the first ``--test-tasks`` questions of the
unseen databases (cached per model as ``test.json`` beside its run, so a rerun only evaluates what is new);
``eval_curves``: each run's EX on the eval split every ``trainer.eval_every`` steps, also plotted (mean over seeds,
their range shaded) in ``--curves``.
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import json
import statistics
from collections import defaultdict
from pathlib import Path
from typing import Any

from finestep.agent.expert import expert_dataset
from finestep.atomic import atomic_write_bytes, atomic_write_json
from finestep.bench.pipeline import evaluate_model
from finestep.data.sqlworld import clean_expert, load_world
from finestep.train.checkpoint import latest_checkpoint
from finestep.train.config import load_train_config

KEPT = ("ex", "tool_calls", "redundant_rate", "error_rate", "format_failure_rate", "turns")


def tool_calls(lines: list[dict[str, Any]]) -> float:
    """Mean tool calls (``sql`` steps) per expert trajectory."""
    return statistics.fmean(sum(step["kind"] == "sql" for step in line["steps"]) for line in lines)


def cached_eval(model: Path, tasks: list[Any], rollout: Any, cache: Path) -> dict[str, float]:
    """Greedy metrics of ``model`` on ``tasks``, read from ``cache`` when it holds the same question count."""
    if cache.is_file():
        cached = json.loads(cache.read_text(encoding="utf-8"))
        if cached.get("n") == len(tasks) and cached.get("model") == str(model):
            return cached["metrics"]
    metrics = {k: float(v) for k, v in evaluate_model(model, tasks, rollout)[0].items() if k in KEPT}
    atomic_write_json(cache, {"n": len(tasks), "model": str(model), "metrics": metrics})
    return metrics


def run_metrics(run_dir: Path) -> list[dict[str, Any]]:
    """The lines of a run's metrics.jsonl (``kind`` train or eval)."""
    return [json.loads(t) for t in (run_dir / "metrics.jsonl").read_text(encoding="utf-8").splitlines() if t]


def variance_share_first_steps(lines: list[dict[str, Any]], steps: int = 10) -> float:
    """Mean share of groups with outcome variance over a run's first ``steps`` training steps."""
    shares = [m["groups_with_outcome_variance"] for m in lines if m.get("kind") == "train" and m["step"] <= steps]
    return statistics.fmean(shares)


def eval_curve(lines: list[dict[str, Any]]) -> dict[int, float]:
    """A run's periodic evaluations (its ``kind == "eval"`` lines): step -> EX."""
    return {int(m["step"]): float(m["ex"]) for m in lines if m.get("kind") == "eval"}


def plot_eval_curves(curves: dict[str, list[dict[int, float]]], warm_ex: float, split: str, path: Path) -> None:
    """Mean EX on the eval split over RL steps per estimator (the seeds' range shaded), from the warm start."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(6.4, 4.0))
    for name, runs in curves.items():
        steps = [0, *sorted(set.intersection(*(set(run) for run in runs)))]
        values = [[warm_ex if step == 0 else run[step] for run in runs] for step in steps]
        seeds = f"{len(runs)} seed" + ("s" if len(runs) > 1 else "")
        axes.plot(steps, [statistics.fmean(v) for v in values], marker="o", label=f"{name} ({seeds})")
        axes.fill_between(steps, [min(v) for v in values], [max(v) for v in values], alpha=0.15)
    axes.set_xlabel("RL step")
    axes.set_ylabel(f"EX % on {split} (greedy)")
    axes.grid(alpha=0.3)
    axes.legend()
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=120)
    plt.close(figure)
    atomic_write_bytes(path, buffer.getvalue())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bench", type=Path, required=True, help="the bench's --out folder (results.json, runs)")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/sqlworld-hard.json"), help="JSON written")
    parser.add_argument("--test-tasks", type=int, default=384, help="questions of the test split evaluated")
    parser.add_argument("--command", default="", help="the bench command line, recorded in the file")
    parser.add_argument("--curves", type=Path, help="PNG of the eval split's EX over RL steps (default: --out's "
                        "name with -learning_curves.png)")  # fmt: skip
    args = parser.parse_args(argv)
    results_file = args.bench / "results.json"
    if not results_file.is_file():
        raise SystemExit(f"{results_file}: not found (run finestep bench --tier hard --out {args.bench} first)")
    results = json.loads(results_file.read_text(encoding="utf-8"))
    config = load_train_config(results["base_config"], results["common_overrides"])
    world_dir = Path(config.data.path)  # type: ignore[arg-type]
    world = load_world(world_dir)
    max_turns = config.rollout.max_turns
    expert_file = world_dir.parent / "expert.jsonl"  # the bench's pipeline_paths: beside the world
    expert_lines = [json.loads(t) for t in expert_file.read_text(encoding="utf-8").splitlines() if t]
    clean = expert_dataset(world, "train", 1, dataclasses.replace(clean_expert, max_steps=max_turns))

    test_tasks = world.split("test")[: args.test_tasks]
    warm = Path(results["warm_start"]["model"])
    test: dict[str, Any] = {"n": len(test_tasks), "warm_start": cached_eval(warm, test_tasks, config.rollout,
                                                                             args.bench / "warm-test.json")}  # fmt: skip
    variance: dict[str, list[float]] = defaultdict(list)
    curves: dict[str, list[dict[int, float]]] = defaultdict(list)
    for name, entry in results["estimators"].items():
        per_seed = []
        for seed in range(len(entry["per_seed"])):
            run_dir = args.bench / "runs" / f"{name}-seed{seed}"
            checkpoint = latest_checkpoint(run_dir)
            if checkpoint is None:
                raise SystemExit(f"{run_dir}: no checkpoint (is the bench finished?)")
            per_seed.append(cached_eval(checkpoint / "model", test_tasks, config.rollout, run_dir / "test.json"))
            lines = run_metrics(run_dir)
            variance[name].append(variance_share_first_steps(lines))
            curves[name].append(eval_curve(lines))
        values = [m["ex"] for m in per_seed]
        test[name] = {"ex_mean": statistics.fmean(values), "ex_std": statistics.stdev(values) if len(values) > 1
                      else 0.0, "per_seed": per_seed}  # fmt: skip

    warm_start = results["warm_start"]
    warm_ex = {results["eval_split"]: warm_start["ex"], "test": test["warm_start"]["ex"]}
    if "secondary" in warm_start:
        warm_ex[results["secondary_split"]] = warm_start["secondary"]["ex"]
    results["regime"] = {
        "max_turns": max_turns,
        "expert_tool_calls": {"clean": tool_calls(clean), "default": tool_calls(expert_lines)},
        "warm_start_ex": warm_ex,
        "outcome_variance_share_first_10_steps": {name: statistics.fmean(v) for name, v in variance.items()},
    }
    results["test"] = test
    results["eval_curves"] = {name: [{str(k): v for k, v in run.items()} for run in runs] for name, runs in curves.items()}
    curve_path = args.curves or args.out.with_name(args.out.stem + "-learning_curves.png")
    plot_eval_curves(curves, warm_start["ex"], results["eval_split"], curve_path)
    results.update(benchmark=f"sqlworld_{config.data.world_tier}", command=args.command, tier=config.data.world_tier)
    atomic_write_json(args.out, results)
    print(json.dumps({"regime": results["regime"], "test": {k: v.get("ex_mean", v.get("ex")) for k, v in test.items()
                                                            if isinstance(v, dict)}}, indent=1))  # fmt: skip
    print(f"wrote {args.out} and {curve_path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
