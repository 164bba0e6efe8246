"""Speed of the credit estimators on a large batch, against straightforward per-trajectory Python loops.

Builds a fixed-seed batch (default 512 tasks x 16 trajectories x 6 steps: random process rewards, solution
flags, links and GiGPO anchors), times every registered estimator (median of ``--repeats`` runs, one thread),
the token mapping of the same batch, and the loop references of ``finestep.credit.reference`` for the ratio.
Writes ``benchmarks/results/credit_speed.json`` (atomically) and prints a table.

    .venv/bin/python benchmarks/credit_speed.py [--tasks 512 --group 16 --steps 6 --repeats 20]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

    from finestep.credit import StepBatch

# numpy (and finestep, which imports it) is imported inside the functions, after pin_threads() has run.

RESULTS = Path(__file__).resolve().parent / "results" / "credit_speed.json"
RULE_VALUES = (0.1, -0.2, -0.3, -0.5, 0.0, 0.2, 0.1 - 0.3)  # executes / errors / redundant / ...
TARGET_MS = 50.0
THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS")


def pin_threads() -> None:
    """One thread for every numeric library; must run before numpy is first imported."""
    if "numpy" in sys.modules:
        print("warning: numpy was imported before the thread pins were set", file=sys.stderr)
    for var in THREAD_VARS:
        os.environ[var] = "1"


def make_batch(tasks: int, group: int, steps: int, seed: int) -> StepBatch:
    """A random batch of ``tasks * group`` trajectories of ``steps`` steps each (vectorized, fixed seed)."""
    import numpy as np

    from finestep.credit import StepBatch

    rng = np.random.default_rng(seed)
    n = tasks * group
    s = n * steps
    traj = np.repeat(np.arange(n), steps)
    position = np.tile(np.arange(steps), n)
    last = position == steps - 1
    # Links: each non-first step links back to a random earlier step with probability 0.3.
    linked = (position > 0) & (rng.random(s) < 0.3)
    src = np.flatnonzero(linked)
    dst = src - 1 - (rng.random(src.size) * position[src]).astype(np.int64)
    # Anchors: histories over a 3-action vocabulary; step t's anchor codes the actions before it.
    actions = rng.integers(0, 3, size=(n, steps))
    codes = np.zeros((n, steps), dtype=np.int64)
    for t in range(1, steps):
        codes[:, t] = codes[:, t - 1] * 3 + actions[:, t - 1] + 1
    return StepBatch(
        group=np.repeat(np.arange(tasks), group),
        outcome=rng.choice([-1.0, 0.0, 1.0], size=n, p=[0.1, 0.5, 0.4]),
        traj=traj,
        process_reward=np.where(last, 0.0, rng.choice(RULE_VALUES, size=s)),
        is_solution=last & (rng.random(s) < 0.9),
        anchor=codes.reshape(-1),
        link_src=src,
        link_dst=dst,
    )


def time_call(fn: Callable[[], object], repeats: int) -> dict[str, float]:
    """Median and min wall time of ``fn()`` in milliseconds over ``repeats`` runs (after one warm-up run)."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
    return {"median_ms": statistics.median(times), "min_ms": min(times), "runs": repeats}


def token_inputs(batch: StepBatch, prompt: int, step_tokens: int, obs_tokens: int) -> dict[str, np.ndarray]:
    """Token layout: prompt, then per step its tokens followed by an observation (none after the last)."""
    import numpy as np

    pos = batch.position
    start = prompt + pos * (step_tokens + obs_tokens)
    step_spans = np.stack([start, start + step_tokens], axis=1)
    has_obs = batch.remaining > 0
    obs_start = start[has_obs] + step_tokens
    lengths = prompt + batch.lengths * step_tokens + np.maximum(batch.lengths - 1, 0) * obs_tokens
    return {
        "step_spans": step_spans, "seq_lengths": lengths,
        "obs_seq": batch.traj[has_obs], "obs_spans": np.stack([obs_start, obs_start + obs_tokens], axis=1),
        "prompt_lengths": np.full(batch.n_traj, prompt),
        "step_truncated": np.zeros(batch.n_steps, dtype=bool),
    }


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; return the process exit status (1 if an estimator misses the target)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=512, help="groups (tasks) in the batch")
    parser.add_argument("--group", type=int, default=16, help="trajectories per task (G)")
    parser.add_argument("--steps", type=int, default=6, help="steps per trajectory")
    parser.add_argument("--repeats", type=int, default=20, help="timed runs per estimator (median reported)")
    parser.add_argument("--reference-repeats", type=int, default=3, help="timed runs of the loop references")
    parser.add_argument("--seed", type=int, default=0, help="random seed of the batch")
    parser.add_argument("--prompt-tokens", type=int, default=256, help="prompt tokens per row (token mapping)")
    parser.add_argument("--step-tokens", type=int, default=48, help="generated tokens per step (token mapping)")
    parser.add_argument("--obs-tokens", type=int, default=32, help="observation tokens per step (token mapping)")
    parser.add_argument("--out", type=Path, default=RESULTS, help="JSON result file")
    args = parser.parse_args(argv)
    pin_threads()
    import numpy as np

    from finestep.credit import (
        ESTIMATORS,
        REFERENCES,
        CreditConfig,
        batch_token_advantages,
        compute_advantages,
    )

    batch = make_batch(args.tasks, args.group, args.steps, args.seed)
    rows: list[dict] = []
    check: dict[str, float] = {}
    # every estimator with its defaults (finestep: version 2, whose A^P scale spans the batch), and finestep v1
    configs = [(name, CreditConfig(estimator=name)) for name in sorted(ESTIMATORS)]
    configs.append(("finestep-v1", CreditConfig.ablation("v1")))
    for name, config in configs:
        row = {"name": name, "kind": "vectorized", **time_call(lambda c=config: compute_advantages(batch, c),
                                                             args.repeats)}
        if config.estimator in REFERENCES:
            ref = REFERENCES[config.estimator](batch, config)
            check[name] = float(np.abs(compute_advantages(batch, config).advantages - ref).max())
        rows.append(row)
    config = CreditConfig()
    adv = compute_advantages(batch, config).advantages
    layout = token_inputs(batch, args.prompt_tokens, args.step_tokens, args.obs_tokens)
    rows.append({"name": "tokens (finestep -> B x T)", "kind": "vectorized",
                 **time_call(lambda: batch_token_advantages(batch, adv, config=config, **layout), args.repeats)})
    rows.append({"name": "StepBatch construction", "kind": "vectorized", **time_call(
        lambda: make_batch(args.tasks, args.group, args.steps, args.seed), args.repeats)})
    for name in ("finestep", "grpo"):
        ref = REFERENCES[name]
        config = CreditConfig(estimator=name)
        rows.append({"name": f"{name} (python loop)", "kind": "reference",
                     **time_call(lambda r=ref, c=config: r(batch, c), args.reference_repeats)})
    by_name = {r["name"]: r["median_ms"] for r in rows}
    speedup = {n: by_name[f"{n} (python loop)"] / by_name[n] for n in ("finestep", "grpo")}

    result = {
        "benchmark": "credit_speed",
        "batch": {"tasks": args.tasks, "group": args.group, "steps": args.steps, "trajectories": batch.n_traj,
                  "total_steps": batch.n_steps, "links": int(batch.link_src.size), "seed": args.seed},
        "token_layout": {"rows": batch.n_traj, "width": int(layout["seq_lengths"].max())},
        "threads": 1,
        "target_ms": TARGET_MS,
        "results": rows,
        "speedup_vs_loop": speedup,
        "max_abs_diff_vs_reference": check,
        "environment": {"python": platform.python_version(), "numpy": np.__version__,
                        "machine": platform.machine(), "processor": platform.processor() or platform.machine()},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=args.out.parent, suffix=".tmp", delete=False) as tmp:
        json.dump(result, tmp, indent=2)
    os.replace(tmp.name, args.out)

    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"credit estimators: {batch.n_traj} trajectories, {batch.n_steps} steps, 1 thread")
    for col in ("estimator", "median ms", "min ms", "runs", "vs loop", "max |diff| vs loop"):
        table.add_column(col, justify="left" if col == "estimator" else "right")
    for r in rows:
        table.add_row(r["name"], f"{r['median_ms']:.2f}", f"{r['min_ms']:.2f}", str(r["runs"]),
                      f"{speedup[r['name']]:.0f}x" if r["name"] in speedup else "",
                      f"{check[r['name']]:.1e}" if r["name"] in check else "")
    Console().print(table)
    print(f"wrote {args.out}")
    slow = [r["name"] for r in rows if r["kind"] == "vectorized" and r["name"] in {n for n, _ in configs}
            and r["median_ms"] > TARGET_MS]
    if slow:
        print(f"over the {TARGET_MS:.0f} ms target: {', '.join(slow)}", file=sys.stderr)
    return 1 if slow else 0


if __name__ == "__main__":
    sys.exit(main())
