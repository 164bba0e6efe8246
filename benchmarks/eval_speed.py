"""Benchmark for the "eval speed" issue: how fast finestep scores Spider dev next to the usual alternatives.

Spider dev is scored gold against gold: ``dev_gold.sql`` is the prediction file. A question costs running the
prediction, running the gold query and comparing the two results as sets (BIRD's metric). All 972 questions
whose database is present are scored, and every variant must find all of them correct.

Four variants run over the same pairs:

- ``plain loop``: one process, a bare ``sqlite3.connect`` per question, both queries, ``fetchall``,
  ``set(a) == set(b)``. There are no safety checks at all: this is the baseline.
- ``ours, 1 process``: ``score_predictions(..., workers=1)``. Every query runs in the read-only sandbox
  (``mode=ro``, an authorizer, a progress-handler deadline per query, capped fetches) in one supervised worker
  process (hard deadline, memory bound; its start is timed); consecutive questions on one database (runs of
  up to 16) share one connection.
  Target: at most 1.3x the time of the plain loop.
- ``classic pool``: how BIRD's ``evaluation_ex.py`` and test-suite-sql-eval do it. A
  ``multiprocessing.Pool`` gets one ``apply_async`` per question, and each query (on its own connection, as
  in test-suite-sql-eval's ``exec_on_db``) runs under a ``func_timeout``-style limit: a new thread per call,
  ``join(timeout)``, and a thread that overruns is abandoned, still running. Any error scores 0. Results
  are collected in question order.
- ``ours, N processes``: ``score_predictions(..., workers=N)``, N supervised worker processes, as many as the
  classic pool has. Target: faster than the classic pool on the same cores.
- ``ours, --workers auto``: the default, which starts on one worker process and spreads the rest over every
  core only when the projected remaining work exceeds a second (on Spider it should stay on one).
- ``ours, spider metric, 1 process``: test-suite-sql-eval's rules (DISTINCT removal and the other rewrites,
  the quick check, column permutations) instead of BIRD's set comparison.

Machine noise should hit all variants alike, so every repeat runs all four in turn. The table shows the
median and the minimum over the repeats, and the JSON file (written atomically) also holds every single
timing. The pooled timings include starting the pool, because each real scoring run pays for that too.
Before the timed repeats, one untimed plain loop warms the OS page cache.

Run from the repository root:  ``.venv/bin/python benchmarks/eval_speed.py``
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import platform
import shlex
import sqlite3
import statistics
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from finestep.atomic import atomic_write_json
from finestep.data import load_spider
from finestep.data.task import Benchmark
from finestep.eval.execution import EVAL_LIMITS, score_predictions
from finestep.eval.predictions import read_predictions
from finestep.sql.executor import default_workers

Pair = tuple[str, str, str]  # (predicted SQL, gold SQL, database path)

N_EXPECTED = 972  # Spider dev questions whose database ships with the data
TIMEOUT_S = EVAL_LIMITS.timeout_s  # the classic pool's per-query limit, the same as ours


# --- (a) the plain loop ----------------------------------------------------------------------------------


def plain_loop(pairs: list[Pair]) -> int:
    """Correct answers counted by a bare sqlite3 loop: no sandbox, no limits, one process."""
    correct = 0
    for pred_sql, gold_sql, db_path in pairs:
        conn = sqlite3.connect(db_path)
        pred_rows = conn.execute(pred_sql).fetchall()
        gold_rows = conn.execute(gold_sql).fetchall()
        correct += set(pred_rows) == set(gold_rows)
        conn.close()
    return correct


# --- (b) the classic evaluator: multiprocessing.Pool + apply_async + func_timeout ------------------------


class FunctionTimedOut(Exception):
    """Raised by :func:`func_timeout` when the call is still running after its timeout."""


def func_timeout(timeout: float, func: Callable[..., Any], args: tuple[Any, ...] = ()) -> Any:
    """Call ``func(*args)`` as the ``func_timeout`` package does: in a new thread, joined with a timeout.

    A call that overruns is abandoned, so its thread keeps running in the background, and
    :class:`FunctionTimedOut` is raised. An exception raised by the call is raised again here.
    """
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["value"] = func(*args)
        except BaseException as exc:  # noqa: BLE001 - handed to the caller, as func_timeout does
            outcome["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        raise FunctionTimedOut(f"{getattr(func, '__name__', func)} ran past {timeout} s")
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


def _exec_on_db(db_path: str, sql: str) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(db_path)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


def classic_score(pred_sql: str, gold_sql: str, db_path: str, idx: int) -> tuple[int, int]:
    """One question as the classic evaluators score it; any error or timeout scores 0."""
    try:
        pred_rows = func_timeout(TIMEOUT_S, _exec_on_db, (db_path, pred_sql))
        gold_rows = func_timeout(TIMEOUT_S, _exec_on_db, (db_path, gold_sql))
    except Exception:  # noqa: BLE001 - FunctionTimedOut, sqlite3.Error, ...: scored 0, as BIRD does
        return idx, 0
    return idx, int(set(pred_rows) == set(gold_rows))


def classic_pool(pairs: list[Pair], workers: int) -> int:
    """Correct answers counted by a ``multiprocessing.Pool`` with one ``apply_async`` per question."""
    pool = multiprocessing.Pool(processes=workers)
    pending = [pool.apply_async(classic_score, (*pair, i)) for i, pair in enumerate(pairs)]
    pool.close()
    pool.join()
    results = [job.get() for job in pending]  # in question order
    return sum(res for _, res in results)


# --- ours --------------------------------------------------------------------------------------------------


def ours(benchmark: Benchmark, predictions: list[str | None], workers: int | str, metric: str = "bird") -> int:
    """Correct answers counted by finestep's scorer (the read-only sandbox) over ``workers`` processes."""
    report = score_predictions(benchmark, predictions, metric=metric, limits=EVAL_LIMITS, workers=workers)
    return sum(bool(s.correct) for s in report.scored)


# --- the run -----------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Time finestep's execution scorer on Spider dev (gold against gold) next to a plain "
        "sqlite3 loop and the classic multiprocessing.Pool + func_timeout evaluator.",
        epilog="Example: .venv/bin/python benchmarks/eval_speed.py --repeats 7 --workers 4",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--spider-dir",
        type=Path,
        default=Path(os.environ.get("FINESTEP_SPIDER_DIR", "../shared/data/spider")),
        help="Spider folder holding dev.json, dev_gold.sql and database/ ($FINESTEP_SPIDER_DIR overrides "
        "the default)",
    )
    parser.add_argument(
        "--repeats", type=int, default=5, help="timed rounds of all variants; the median and min are reported"
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=default_workers(),
        help="processes for both pooled variants; the default is all usable cores",
    )
    parser.add_argument(
        "--out", type=Path, default=Path("benchmarks/results/eval_speed.json"), help="JSON file to write"
    )
    args = parser.parse_args(argv)
    if args.repeats < 1 or args.workers < 1:
        parser.error("--repeats and --workers must be at least 1")
    return args


def timed(fn: Callable[[], int]) -> tuple[float, int]:
    start = time.perf_counter()
    n_correct = fn()
    return time.perf_counter() - start, n_correct


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    console = Console()
    benchmark = load_spider(args.spider_dir)
    predictions = read_predictions(args.spider_dir / "dev_gold.sql", benchmark.tasks)
    pairs: list[Pair] = []
    for task in benchmark.available:
        pred_sql = predictions[task.index]
        assert pred_sql is not None, f"question {task.index} has no gold prediction"
        pairs.append((pred_sql, task.gold_sql, str(task.db_path)))
    n = len(pairs)

    # key -> (label, run); each run returns the number of questions it found correct
    variants: dict[str, tuple[str, Callable[[], int]]] = {
        "plain": ("(a) plain loop", lambda: plain_loop(pairs)),
        "ours_1": ("ours, 1 process", lambda: ours(benchmark, predictions, 1)),
        "classic_pool": (f"(b) classic, {args.workers} proc", lambda: classic_pool(pairs, args.workers)),
        "ours_pool": (f"ours, {args.workers} proc", lambda: ours(benchmark, predictions, args.workers)),
        "ours_auto": ("ours, --workers auto", lambda: ours(benchmark, predictions, "auto")),
        "ours_spider_1": ("ours, spider metric, 1 proc", lambda: ours(benchmark, predictions, 1, "spider")),
    }
    console.print(f"{n} questions, {args.repeats} repeats, {args.workers} workers, {os.cpu_count()} CPUs")
    plain_loop(pairs)  # warm the page cache
    times: dict[str, list[float]] = {key: [] for key in variants}
    counts: dict[str, set[int]] = {key: set() for key in variants}
    for repeat in range(args.repeats):
        for key, (_, run) in variants.items():
            elapsed, n_correct = timed(run)
            times[key].append(elapsed)
            counts[key].add(n_correct)
        console.print(
            f"  repeat {repeat + 1} (s): " + "  ".join(f"{k}={t[-1]:.3f}" for k, t in times.items())
        )

    agree = all(c == {n} for c in counts.values())
    median = {key: statistics.median(t) for key, t in times.items()}
    ratios = {
        "ours_1_vs_plain": median["ours_1"] / median["plain"],
        "ours_pool_vs_classic": median["ours_pool"] / median["classic_pool"],
    }
    targets = {
        "ours_1_within_1.3x_of_plain": ratios["ours_1_vs_plain"] <= 1.3,
        "ours_pool_faster_than_classic": ratios["ours_pool_vs_classic"] < 1.0,
    }

    table = Table(title=f"Spider dev, gold vs gold: {n} questions (q), 2 queries + compare each")
    table.add_column("variant", no_wrap=True)
    for column in ("median s", "min s", "ms/q", "vs plain", "correct"):
        table.add_column(column, justify="right", no_wrap=True)
    for key, t in times.items():
        table.add_row(
            variants[key][0],
            f"{median[key]:.3f}",
            f"{min(t):.3f}",
            f"{1000 * median[key] / n:.3f}",
            f"{median[key] / median['plain']:.2f}x",
            "/".join(str(c) for c in sorted(counts[key])),
        )
    console.print(table)
    verdict = {True: "[green]met[/]", False: "[red]MISSED[/]"}
    console.print(
        f"ours 1 process / plain loop: {ratios['ours_1_vs_plain']:.2f} (target <= 1.3: "
        f"{verdict[targets['ours_1_within_1.3x_of_plain']]})"
    )
    console.print(
        f"ours pooled / classic pool:  {ratios['ours_pool_vs_classic']:.2f} (target < 1: "
        f"{verdict[targets['ours_pool_faster_than_classic']]})"
    )
    console.print(f"every variant counts {n} correct: {'[green]yes[/]' if agree else '[red]NO[/]'}")

    atomic_write_json(
        args.out,
        {
            "benchmark": "eval_speed",
            "command": shlex.join([sys.executable, *sys.argv]),
            "machine": {
                "cpu_count": os.cpu_count(),
                "usable_cpus": default_workers(),
                "platform": platform.platform(),
                "processor": platform.processor() or platform.machine(),
                "python": platform.python_version(),
                "sqlite": sqlite3.sqlite_version,
            },
            "spider_dir": str(args.spider_dir),
            "n_questions": n,
            "repeats": args.repeats,
            "workers": args.workers,
            "classic_pool_start_method": multiprocessing.get_start_method(),
            "variants": {
                key: {
                    "label": variants[key][0],
                    "median_s": median[key],
                    "min_s": min(t),
                    "ms_per_question": 1000 * median[key] / n,
                    "vs_plain": median[key] / median["plain"],
                    "times_s": t,
                    "n_correct": sorted(counts[key]),
                }
                for key, t in times.items()
            },
            "ratios": ratios,
            "targets": targets,
            "all_agree": agree,
        },
    )
    console.print(f"wrote {args.out}")
    assert agree, f"variants disagree: expected {n} correct from each, got {counts}"
    assert n == N_EXPECTED, f"expected {N_EXPECTED} available Spider dev questions, found {n}"
    return 0


if __name__ == "__main__":
    sys.exit(main())
