"""Benchmark behind ``--workers auto``: one process, a pool of every core, and auto, on a light and a heavy load.

- light: Spider dev scored gold against gold (972 questions; well under a millisecond of SQL each), where a
  pool's start-up (a forkserver and its workers) costs more than it saves;
- heavy: the same questions, each prediction a recursive query counting to ``--heavy-n`` (about 10 ms each), where
  the work is long enough for a pool to pay.

``auto`` should match the better of the two on both. Every repeat runs all variants in turn (noise hits them
alike); the table shows the median and the minimum, and the JSON file (written atomically) every timing.

Run from the repository root:  ``.venv/bin/python benchmarks/eval_workers.py``
"""

from __future__ import annotations

import argparse
import os
import shlex
import statistics
import sys
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from finestep.atomic import atomic_write_json
from finestep.data import load_spider
from finestep.eval.execution import AUTO_POOL_AFTER_S, score_predictions
from finestep.sql.executor import default_workers


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--spider-dir", type=Path,
                        default=Path(os.environ.get("FINESTEP_SPIDER_DIR", "../shared/data/spider")))  # fmt: skip
    parser.add_argument("--repeats", type=int, default=3, help="timed rounds of every variant")
    parser.add_argument("--heavy-n", type=int, default=20_000, help="rows the heavy query counts")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/eval_workers.json"))
    args = parser.parse_args(argv)
    console = Console()
    benchmark = load_spider(args.spider_dir)
    heavy_sql = (
        f"WITH RECURSIVE c(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM c WHERE n < {args.heavy_n}) "
        "SELECT count(*) FROM c"
    )
    loads = {"light": [t.gold_sql for t in benchmark.tasks], "heavy": [heavy_sql] * len(benchmark.tasks)}
    cores = default_workers()
    variants: dict[str, int | str] = {"1 process": 1, f"{cores} processes": cores, "auto": "auto"}
    times: dict[tuple[str, str], list[float]] = {(load, v): [] for load in loads for v in variants}
    chosen: dict[tuple[str, str], set[int]] = {key: set() for key in times}
    for repeat in range(args.repeats):
        for load, predictions in loads.items():
            for name, workers in variants.items():
                start = time.perf_counter()
                report = score_predictions(benchmark, predictions, "bird", workers=workers)
                times[(load, name)].append(time.perf_counter() - start)
                chosen[(load, name)].add(report.workers)
        console.print(f"  repeat {repeat + 1}: " + "  ".join(f"{k[0]}/{k[1]}={t[-1]:.2f}" for k, t in times.items()))
    table = Table(title=f"Spider dev, 972 questions, {cores} cores (auto moves to a pool past {AUTO_POOL_AFTER_S} s)")
    for column in ("load", "workers", "median s", "min s", "processes used"):
        table.add_column(column, justify="left" if column in ("load", "workers") else "right")
    for (load, name), values in times.items():
        used = "/".join(str(n) for n in sorted(chosen[(load, name)]))
        table.add_row(load, name, f"{statistics.median(values):.3f}", f"{min(values):.3f}", used)
    console.print(table)
    atomic_write_json(args.out, {
        "benchmark": "eval_workers", "command": shlex.join([sys.executable, *sys.argv]), "cores": cores,
        "auto_pool_after_s": AUTO_POOL_AFTER_S, "heavy_n": args.heavy_n,
        "results": [{"load": load, "workers": name, "times_s": values, "median_s": statistics.median(values),
                     "processes_used": sorted(chosen[(load, name)])} for (load, name), values in times.items()],
    })  # fmt: skip
    console.print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
