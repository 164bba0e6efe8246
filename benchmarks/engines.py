"""Rollout time per RL step on SQLite, DuckDB and PostgreSQL (issue 21, part 5: training on a server).

The SQLWorld demo's world (``finestep demo``'s pipeline: 96 training and 16 test databases, 12 questions each,
1 ``valid`` and 2 ``heldout`` more per training database) is imported into DuckDB files and into a throwaway
PostgreSQL server (``finestep db import``). The demo's tiny model, warm-started with ``--sft-epochs`` epochs of
SFT on the expert's trajectories (the demo trains 8 and then 4 more; one is enough for the model to write its
turns as SQL, mostly failing queries at this stage), runs RL steps of ``configs/sqlworld-tiny.yaml`` at the demo's temperature on each
engine (``data.engine``) with the same seeds. The engines take turns step by step, in a rotating order, so a
load on the shared machine falls on all three alike; each engine's first step is a warm-up (worker start,
connections, schema reads) and is left out.

Reported per engine, medians over the measured steps: the rollout's wall time, its generation time, the rest of
it (the environment: parsing, SQL, observations), its SQL execution time, reward + credit (the gold query runs
there) and the whole step, each with its ratio to SQLite measured in the same run; the SQL statements per step;
and the share of episodes token-for-token identical to SQLite's (the same model and seeds give the same episodes
until an observation differs: an error message is worded differently on each engine, and the batch's sampling
then diverges). Because generation dominates and depends on the episodes, the SQLite run's turns are also played
again through the environment on each engine (``same_turns``: identical work; a fresh sandbox with its result
cache, as in training): the rollout time of identical episodes is SQLite's generation time plus that. Two query
workloads are
then replayed once per engine in a sandbox without a result cache (cold): every distinct query the RL episodes
ran, and the world's own gold and probe queries (what a trained model runs: they succeed).

Results go to ``benchmarks/results/engines.json`` (atomically) and the Markdown tables are printed.

    .venv/bin/python benchmarks/engines.py [--steps 2 --sft-epochs 1 --out runs/bench-engines-sft1]
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import signal
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results" / "engines.json"
ENGINES = ("sqlite", "duckdb", "postgres")
TIMINGS = {"rollout_s": "rollout", "generate_s": "generation", "environment_s": "environment", "execute_s": "SQL",
           "reward_s": "reward + credit", "step_s": "RL step"}  # fmt: skip


def _prepare(out: Path, sft_epochs: int, steps: int) -> tuple[Any, Any, dict[str, Path]]:
    """The demo's world, tiny model and a shorter warm start under ``out`` (reused when there), and the RL config."""
    from finestep.bench.demo import CONFIG, DemoConfig
    from finestep.bench.pipeline import pipeline_paths, prepare, rl_config

    demo = DemoConfig.full()
    pipeline = replace(demo.pipeline, sft=replace(demo.pipeline.sft, epochs=sft_epochs), sft_continue=None)
    paths = pipeline_paths(out)
    config = rl_config(CONFIG, paths["world"], paths["sft"], [
        f"trainer.max_steps={steps + 1}", f"rollout.temperature={demo.temperature}", "data.eval_split=heldout",
        "data.max_eval_tasks=0", "trainer.save_every=0",
    ])  # fmt: skip
    paths = prepare(out, pipeline, config.rollout, lambda message, _fraction: print(f"  {message}", flush=True))
    return pipeline, config, paths


def _import(world: Path, out: Path, admin_url: str) -> tuple[dict[str, str | None], dict[str, float]]:
    """The world on every engine: ``({engine: data.engine}, {engine: import seconds})``."""
    from finestep.sql.engines.importer import import_benchmark, reader_url

    prefixes: dict[str, str | None] = {"sqlite": None}
    seconds: dict[str, float] = {}
    for engine, target in (("duckdb", f"duckdb:{out / 'duckdb'}"), ("postgres", admin_url)):
        start = time.perf_counter()
        reports = import_benchmark(world, target)
        seconds[engine] = time.perf_counter() - start
        failed = [f"{r.db_id}: {r.error}" for r in reports if r.error]
        if failed:
            raise RuntimeError(f"import into {engine} failed: {failed[:3]}")
        prefixes[engine] = target if engine == "duckdb" else reader_url(admin_url)
    return prefixes, seconds


def _replay(queries: set[tuple[str, str]], databases: dict[str, dict[str, str]]) -> dict[str, Any]:
    """Each distinct ``(db_id, sql)`` once per engine, in a sandbox without a result cache (every database opened
    first, so only the queries are timed); ``databases``: ``{engine: {db_id: database string}}``."""
    from finestep.sql.executor import SqlSandbox

    texts = sorted(queries)
    out: dict[str, Any] = {}
    for engine, named in databases.items():
        with SqlSandbox(cache_entries=0) as sandbox:
            for db_id in sorted({d for d, _ in texts}):
                sandbox.execute(named[db_id], "SELECT 1")
            times, ok = [], 0
            for db_id, sql in texts:
                start = time.perf_counter()
                ok += sandbox.execute(named[db_id], sql).ok
                times.append(time.perf_counter() - start)
        times.sort()
        out[engine] = {"queries": len(times), "ok": ok, "total_s": sum(times), "median_ms": 1000 * statistics.median(times),
                       "p90_ms": 1000 * times[int(0.9 * (len(times) - 1))]}  # fmt: skip
    for row in out.values():
        row["ratio_total_vs_sqlite"] = row["total_s"] / out["sqlite"]["total_s"]
    return out


def _run_steps(base: Path, prefixes: dict[str, str | None], args: argparse.Namespace) -> tuple[dict[str, Any], dict[str, Any], Any]:
    """``(metrics per engine and step, (rollout seconds, episodes) per engine and step, the tokenizer)``: the engines
    in turns, each from a fresh run folder."""
    from finestep.train import rl
    from finestep.train.config import load_train_config

    captured: dict[str, list[tuple[float, list[Any]]]] = {engine: [] for engine in ENGINES}
    running = {"engine": ""}
    rollout = rl.rollout

    def timed_rollout(*a: Any, **k: Any) -> list[Any]:  # the trainer's own rollout, timed and its episodes kept
        start = time.perf_counter()
        episodes = rollout(*a, **k)
        captured[running["engine"]].append((time.perf_counter() - start, episodes))
        return episodes

    rl.rollout = timed_rollout
    shutil.rmtree(args.out / "rl", ignore_errors=True)
    try:
        trainers = {engine: rl.RLTrainer(load_train_config(base, [f"data.engine={prefix}"] if prefix else []),
                                         args.out / "rl" / engine) for engine, prefix in prefixes.items()}  # fmt: skip
        metrics: dict[str, list[dict[str, float]]] = {engine: [] for engine in ENGINES}
        for step in range(args.steps + 1):
            for engine in ENGINES[step % 3:] + ENGINES[: step % 3]:
                print(f"  step {step} on {engine}", flush=True)
                running["engine"] = engine
                metrics[engine].append(trainers[engine].train_step())
        for trainer in trainers.values():
            trainer.log.close()
    finally:
        rl.rollout = rollout
    return metrics, captured, trainers["sqlite"].tokenizer


def _same_turns(sqlite_steps: list[tuple[float, list[Any]]], prefixes: dict[str, str | None], config: Any,
                tokenizer: Any) -> dict[str, Any]:  # fmt: skip
    """Every turn of the SQLite run's episodes (token for token) through a fresh environment on each engine, timed
    per RL step (the first left out, as a warm-up): the engine-dependent part of a rollout on identical work."""
    from finestep.agent.protocol import get_protocol
    from finestep.agent.rollout import make_env
    from finestep.sql.engines import database_for
    from finestep.sql.executor import SqlSandbox

    protocol = get_protocol(config.rollout.protocol)
    out: dict[str, Any] = {}
    for engine, prefix in prefixes.items():
        per_step, executed = [], 0
        with SqlSandbox() as sandbox:
            for _, episodes in sqlite_steps:
                start = time.perf_counter()
                for traj in episodes:
                    task = traj.task if prefix is None else replace(traj.task, db_path=database_for(prefix, traj.task.db_id))
                    env = make_env(config.rollout, protocol, sandbox, tokenizer)
                    env.reset(task, traj.sample, traj.token_ids[: traj.prompt_length])
                    for step in traj.steps:
                        turn = env.step(step.text, traj.token_ids[step.span[0] : step.span[1]], None, step.stop_reason)
                        executed += turn.step.result is not None
                        if turn.done:
                            break
                per_step.append(time.perf_counter() - start)
        out[engine] = {"environment_s_median": statistics.median(per_step[1:]), "per_step": per_step[1:],
                       "sql_statements": executed}  # fmt: skip
    for row in out.values():
        row["ratio_vs_sqlite"] = row["environment_s_median"] / out["sqlite"]["environment_s_median"]
    return out


def _summary(metrics: dict[str, Any], captured: dict[str, Any]) -> tuple[dict[str, Any], set[tuple[str, str]]]:
    """``(timings per engine, the distinct queries the episodes ran)``."""
    engines: dict[str, Any] = {}
    queries: set[tuple[str, str]] = set()
    for engine in ENGINES:
        measured, rollouts = metrics[engine][1:], captured[engine][1:]  # the warm-up step left out
        per_step = {"rollout_s": [seconds for seconds, _ in rollouts],
                    "generate_s": [m["time_generate"] for m in measured],
                    "environment_s": [seconds - m["time_generate"] for (seconds, _), m in zip(rollouts, measured)],
                    "execute_s": [m["time_execute"] for m in measured],
                    "reward_s": [m["time_reward_credit"] for m in measured],
                    "step_s": [m["time_step"] for m in measured]}  # fmt: skip
        executed = [[s for t in episodes for s in t.steps if s.result is not None] for _, episodes in rollouts]
        same = [a.token_ids == b.token_ids for (_, mine), (_, lite) in zip(rollouts, captured["sqlite"][1:])
                for a, b in zip(mine, lite)]  # fmt: skip
        engines[engine] = {
            **{f"{key}_median": statistics.median(values) for key, values in per_step.items()},
            "per_step": per_step,
            "sql_per_step": statistics.mean(len(e) for e in executed),
            "sql_ok_per_step": statistics.mean(sum(s.result.ok for s in e) for e in executed),
            "episodes_per_step": statistics.mean(len(episodes) for _, episodes in rollouts),
            "episodes_identical_to_sqlite": sum(same) / len(same),
            "reward_mean": statistics.mean(m["reward"] for m in measured),
        }
        queries |= {(t.task.db_id, s.action.sql) for _, eps in captured[engine] for t in eps for s in t.steps
                    if s.result is not None}  # fmt: skip
    for row in engines.values():
        for key in TIMINGS:
            row[f"ratio_{key[:-2]}_vs_sqlite"] = row[f"{key}_median"] / engines["sqlite"][f"{key}_median"]
    return engines, queries


def measure(args: argparse.Namespace) -> dict[str, Any]:
    """Prepare, import, then the RL steps on every engine in turns, then the cold replay (module docstring)."""
    import torch

    from finestep.data.sqlworld import load_world
    from finestep.sql.engines import database_for
    from finestep.sql.engines.importer import find_databases
    from finestep.sql.engines.pg_server import PostgresServer
    from finestep.train.config import save_train_config

    started = time.perf_counter()
    print("preparing the demo's world and warm start", flush=True)
    pipeline, config, paths = _prepare(args.out, args.sft_epochs, args.steps)
    prepared = time.perf_counter() - started
    server = None if args.pg else PostgresServer().start()
    try:
        print("importing the world into DuckDB and PostgreSQL", flush=True)
        prefixes, import_s = _import(paths["world"], args.out, args.pg or server.url())  # type: ignore[union-attr]
        base = args.out / "config.yaml"
        base.write_text(save_train_config(config))
        print("RL steps, the engines in turns", flush=True)
        metrics, captured, tokenizer = _run_steps(base, prefixes, args)
        engines, queries = _summary(metrics, captured)
        print("the SQLite run's turns again through the environment on every engine", flush=True)
        same_turns = _same_turns(captured["sqlite"], prefixes, config, tokenizer)
        generation = engines["sqlite"]["generate_s_median"]
        for row in same_turns.values():  # the rollout of identical episodes: SQLite's generation time plus this
            row["rollout_s"] = generation + row["environment_s_median"]
            row["rollout_ratio_vs_sqlite"] = row["rollout_s"] / (generation + same_turns["sqlite"]["environment_s_median"])
        sqlite = {db_id: str(path) for db_id, path in find_databases(paths["world"]).items()}
        databases = {engine: sqlite if prefix is None else {d: database_for(prefix, d) for d in sqlite}
                     for engine, prefix in prefixes.items()}  # fmt: skip
        world = load_world(paths["world"])
        expert = {(t.db_id, t.gold_sql) for t in world.train}
        expert |= {(t.db_id, world.meta[t.id].probe_sql) for t in world.train if world.meta[t.id].probe_sql}
        print(f"replaying {len(queries)} + {len(expert)} distinct queries once per engine (no result cache)", flush=True)
        cold = {"episodes": _replay(queries, databases), "gold_and_probes": _replay(expert, databases)}
    finally:
        if server is not None:
            server.stop()
    return {
        "benchmark": "engines",
        "command": "python benchmarks/engines.py " + " ".join(sys.argv[1:]),
        "date": time.strftime("%Y-%m-%d"),
        "world": {"n_train_dbs": pipeline.n_train_dbs, "n_test_dbs": pipeline.n_test_dbs,
                  "questions_per_db": pipeline.questions_per_db, "valid_per_db": pipeline.valid_per_db,
                  "heldout_per_db": pipeline.heldout_per_db, "seed": pipeline.seed},
        "model": {"tiny": {k: getattr(pipeline.tiny, k) for k in ("vocab_size", "hidden_size", "num_layers")},
                  "sft_epochs": args.sft_epochs},
        "rl": {"config": "configs/sqlworld-tiny.yaml", "tasks_per_step": config.trainer.tasks_per_step,
               "group_size": config.rollout.group_size, "max_turns": config.rollout.max_turns,
               "temperature": config.rollout.temperature, "seed": config.trainer.seed,
               "steps_measured": args.steps, "warm_up_steps": 1},
        "postgres": "given by --pg" if args.pg else "a throwaway server (initdb, Unix socket, fsync off)",
        "import_s": import_s,
        "engines": engines,
        "same_turns": same_turns,
        "cold_queries": cold,
        "prepare_s": prepared,
        "total_s": time.perf_counter() - started,
        "environment": {"python": platform.python_version(), "torch": torch.__version__, "cpus": os.cpu_count(),
                        "torch_threads": torch.get_num_threads(),
                        "machine": platform.machine()},
    }


def markdown(result: dict[str, Any]) -> str:
    """The result as the Markdown tables of docs/benchmarks.md."""
    lines = ["| engine | " + " | ".join(f"{name} s (x SQLite)" for name in TIMINGS.values())
             + " | SQL statements (ok) | episodes as on SQLite |", "| --- |" + " --- |" * (len(TIMINGS) + 2)]  # fmt: skip
    for engine, row in result["engines"].items():
        cells = [f"{row[f'{key}_median']:.3f} ({row[f'ratio_{key[:-2]}_vs_sqlite']:.2f})" for key in TIMINGS]
        lines.append(f"| {engine} | " + " | ".join(cells) + f" | {row['sql_per_step']:.1f} ({row['sql_ok_per_step']:.1f}) | "
                     f"{100 * row['episodes_identical_to_sqlite']:.0f}% |")  # fmt: skip
    lines += ["", ("| engine, the SQLite run's turns replayed | environment s/step (x SQLite) | rollout s/step: SQLite's "
              "generation + environment (x SQLite) |"), "| --- | --- | --- |"]  # fmt: skip
    for engine, row in result["same_turns"].items():
        lines.append(f"| {engine} | {row['environment_s_median']:.3f} ({row['ratio_vs_sqlite']:.2f}) | "
                     f"{row['rollout_s']:.3f} ({row['rollout_ratio_vs_sqlite']:.3f}) |")  # fmt: skip
    lines += ["", ("| workload (each distinct query once, no result cache) | engine | queries (ok) | median ms | p90 ms "
              "| total s (x SQLite) |"), "| --- | --- | --- | --- | --- | --- |"]  # fmt: skip
    for workload, rows in result["cold_queries"].items():
        for engine, row in rows.items():
            lines.append(f"| {workload} | {engine} | {row['queries']} ({row['ok']}) | {row['median_ms']:.2f} | "
                         f"{row['p90_ms']:.2f} | {row['total_s']:.2f} ({row['ratio_total_vs_sqlite']:.2f}) |")  # fmt: skip
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Measure, write the JSON result, print the tables."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, help="working folder: the world, the models, the DuckDB files, the RL runs "
                        "(reused when there; default runs/bench-engines-sft<N>)")  # fmt: skip
    parser.add_argument("--steps", type=int, default=2, help="RL steps measured per engine, after one warm-up")
    parser.add_argument("--sft-epochs", type=int, default=1, help="epochs of the warm start (the demo's: 8 + 4)")
    parser.add_argument("--pg", help="a PostgreSQL superuser's URL to import into (default: a throwaway server)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1: on a shared machine more "
                        "threads than free cores slow every step down; 0: torch's default)")  # fmt: skip
    parser.add_argument("--result", type=Path, default=RESULTS, help="JSON result file")
    args = parser.parse_args(argv)
    args.out = args.out or Path(f"runs/bench-engines-sft{args.sft_epochs}")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # a timeout still stops the throwaway server
    import torch

    from finestep.atomic import atomic_write_json

    if args.threads > 0:
        torch.set_num_threads(args.threads)

    result = measure(args)
    atomic_write_json(args.result, result)
    print(markdown(result))
    print(f"{result['total_s']:.0f} s in all ({result['prepare_s']:.0f} s preparing); wrote {args.result}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
