"""``finestep bench``: estimators compared from one warm start with one budget, over several seeds."""

from __future__ import annotations

import json
import multiprocessing
import statistics
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any

import torch

from finestep.atomic import atomic_write_json, atomic_write_text
from finestep.bench.pipeline import evaluate_model, run_rl
from finestep.bench.report import markdown_table, plot_curves, plot_diagnostics
from finestep.credit import ABLATIONS
from finestep.data.sqlworld import load_world
from finestep.data.task import Task
from finestep.models import quiet_libraries
from finestep.train.checkpoint import latest_checkpoint
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
    if all("final_secondary" in r for r in runs):
        values = [float(r["final_secondary"].get("ex", 0.0)) for r in runs]
        out["secondary_ex_mean"] = statistics.fmean(values)
        out["secondary_ex_std"] = statistics.stdev(values) if len(values) > 1 else 0.0
        for entry, r in zip(out["per_seed"], runs):
            entry["secondary"] = {k: r["final_secondary"].get(k) for k in SUMMARY_KEYS}
    return out


def _load_config(base_config: Path, common: list[str], name: str, seed: int) -> TrainConfig:
    return load_train_config(base_config, [*common, *estimator_overrides(name), f"trainer.seed={seed}"])


def _eval_split_tasks(config: TrainConfig, split: str, count: int | None = None) -> list[Task]:
    """The first ``count`` (default ``data.max_eval_tasks``) tasks of a SQLWorld split of the run's world."""
    tasks = load_world(Path(config.data.path)).split(split)  # type: ignore[arg-type]
    return tasks[: config.data.max_eval_tasks if count is None else count]


def _warm_start(
    base_config: Path, common: list[str], secondary: str | None, secondary_tasks: int | None = None
) -> dict[str, Any]:
    """Greedy metrics of the warm start (``model.path``) on the eval split (and the secondary split)."""
    config = _load_config(base_config, common, "grpo", 0)
    model = Path(config.model.path)  # type: ignore[arg-type]
    tasks = _eval_split_tasks(config, config.data.eval_split)
    out: dict[str, Any] = {"model": str(model), **evaluate_model(model, tasks, config.rollout)[0]}
    if secondary:
        out["secondary"] = evaluate_model(model, _eval_split_tasks(config, secondary, secondary_tasks),
                                          config.rollout)[0]  # fmt: skip
    return out


def _run_one(
    base_config: Path, common: list[str], name: str, seed: int, run_dir: Path, secondary: str | None,
    secondary_tasks: int | None = None, on_step: Callable[[dict[str, float]], None] | None = None,
) -> dict[str, Any]:
    """One RL run (reused when ``run_dir/run.json`` exists): final metrics, curve, and the secondary split's."""
    done = run_dir / "run.json"
    if done.is_file():
        return json.loads(done.read_text(encoding="utf-8"))
    config = _load_config(base_config, common, name, seed)
    start = time.perf_counter()
    result = run_rl(config, run_dir, on_step)
    run: dict[str, Any] = {"name": name, "seed": seed, "final": result["final"],
                           "wall_time": time.perf_counter() - start, "curve": result["curve"]}  # fmt: skip
    if secondary:
        checkpoint = latest_checkpoint(run_dir)
        assert checkpoint is not None  # run_rl always saves the final step
        tasks = _eval_split_tasks(config, secondary, secondary_tasks)
        run["final_secondary"] = evaluate_model(checkpoint / "model", tasks, config.rollout)[0]
    atomic_write_json(done, run)
    return run


def _execute(job: tuple[Any, ...], on_step: Callable[[dict[str, float]], None] | None = None) -> dict[str, Any]:
    """Run one bench job: ``("warm_start", *args)`` or ``("run", *args)``."""
    if job[0] == "warm_start":
        return _warm_start(*job[1:])
    return _run_one(*job[1:], on_step=on_step)


def _in_worker(job: tuple[Any, ...]) -> dict[str, Any]:
    torch.set_num_threads(1)  # one thread per run: parallel runs share the cores without oversubscription
    quiet_libraries()  # a spawned process starts with the libraries' defaults
    return _execute(job)


def run_bench(
    base_config: Path,
    out: Path,
    estimators: list[str],
    seeds: int,
    common: list[str],
    on_run: Callable[[str, int, dict[str, Any]], None] | None = None,
    on_step: Callable[[str, int, dict[str, float]], None] | None = None,
    jobs: int = 1,
    secondary: str | None = None,
    world_seed: int | None = None,
    secondary_tasks: int | None = None,
) -> dict[str, Any]:
    """Run every estimator with ``seeds`` seeds from the same start and budget; write results.json, a markdown
    table, the learning curves and the training diagnostics (``diagnostics.png``) under ``out``. ``common``
    overrides apply to every run (model, data, budget).

    ``jobs`` > 1 runs that many runs at once in separate processes (one thread each; ``on_step`` is then not
    called). For a SQLWorld bench the warm start is evaluated too (``warm_start`` in the results), and
    ``secondary`` names a second split every final model (and the warm start) is also evaluated on, on its first
    ``secondary_tasks`` questions (default ``data.max_eval_tasks``: e.g. a small split for the learning curves and
    a large one for the final numbers). A run whose
    ``run.json`` exists is reused, so an interrupted bench resumes.
    """
    results: dict[str, Any] = {"estimators": {}, "base_config": str(base_config), "common_overrides": common}
    probe = _load_config(base_config, common, "grpo", 0)
    sqlworld = probe.data.benchmark == "sqlworld"
    secondary = secondary if sqlworld else None  # only SQLWorld has named splits
    if sqlworld:
        results.update(world_seed=world_seed, eval_split=probe.data.eval_split, secondary_split=secondary,
                       n_eval=len(_eval_split_tasks(probe, probe.data.eval_split)))  # fmt: skip
        if secondary:
            results["n_secondary"] = len(_eval_split_tasks(probe, secondary, secondary_tasks))
    jobs_list: list[tuple[Any, ...]] = [("warm_start", base_config, common, secondary, secondary_tasks)] if sqlworld else []
    jobs_list += [("run", base_config, common, name, seed, out / "runs" / f"{name}-seed{seed}", secondary,
                   secondary_tasks) for name in estimators for seed in range(seeds)]  # fmt: skip
    finished: dict[tuple[str, int], dict[str, Any]] = {}

    def collect(job: tuple[Any, ...], value: dict[str, Any]) -> None:
        if job[0] == "warm_start":
            results["warm_start"] = value
            return
        finished[(job[3], job[4])] = value
        if on_run is not None:
            on_run(job[3], job[4], value)
        for name in estimators:  # summarize every estimator whose seeds are all done: a partial bench is kept
            if all((name, seed) in finished for seed in range(seeds)):
                results["estimators"][name] = summarize([finished[(name, seed)] for seed in range(seeds)])
        atomic_write_json(out / "results.json", results)

    if jobs <= 1:
        for job in jobs_list:
            step = None
            if on_step is not None and job[0] == "run":
                step = lambda m, n=job[3], s=job[4]: on_step(n, s, m)
            collect(job, _execute(job, step))
    else:
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=jobs, mp_context=context) as pool:
            futures = {pool.submit(_in_worker, job): job for job in jobs_list}
            for future in as_completed(futures):
                collect(futures[future], future.result())
    curves = {name: [finished[(name, seed)]["curve"] for seed in range(seeds)] for name in estimators}
    plot_curves(curves, out / "learning_curves.png")
    plot_diagnostics(curves, out / "diagnostics.png")
    rows = [{"estimator": n, **s} for n, s in results["estimators"].items()]
    columns = [("estimator", "estimator"), ("ex_mean", "EX mean"), ("ex_std", "EX std"),
               ("tool_calls_mean", "tool calls"), ("redundant_rate_mean", "redundant rate"),
               ("error_rate_mean", "error rate"), ("wall_time_mean", "wall s")]  # fmt: skip
    if secondary:
        columns.insert(3, ("secondary_ex_mean", f"{secondary} EX mean"))
        columns.insert(4, ("secondary_ex_std", f"{secondary} EX std"))
    table = markdown_table(rows, columns)
    if "warm_start" in results:
        warm = results["warm_start"]
        extra = f", {secondary} EX {warm['secondary']['ex']:.1f}" if secondary else ""
        table = f"Warm start: EX {warm['ex']:.1f}{extra}\n\n{table}"
    atomic_write_text(out / "results.md", table)
    return results
