"""Benchmark for issue 11: does every hostile query get its answer within 1.5x its limit and bounded memory?

Each query of the issue runs on a real Spider database (flight_4: 7,184 airports, 67,240 routes) with a 2 s
limit, through the two paths that run untrusted SQL:

- **trainer**: ``SqlSandbox`` (rollouts and rewards), default caps (32 MB of rows, 256 MB of SQLite heap);
- **evaluator**: the ``WorkerPool`` that ``finestep eval`` scores with, evaluation caps (256 MB of rows,
  512 MB of SQLite heap), timeout 2 s instead of 30 s.

For each: the verdict, the wall time and its ratio to the limit, the worker's peak resident memory above its
baseline (sampled every 5 ms while the query runs, and its high-water mark when it survives), and the calling
process's growth (it only receives answers). Last, ``score_predictions`` with 10 runaway predictions on one
database and 2 workers, against the bound ``runaways x limit / workers``.

Section ``starts`` (issue 18): worker starts, from scripts that import transformers at the top as training
scripts do, for this checkout and, with ``--before DIR``, another checkout (e.g. a ``git worktree`` of an older
commit) in the same run:

- 100 scripted-expert episodes through the public per-episode API (``expert_trajectory`` with its defaults):
  worker starts and wall time;
- the time to the first answer of a new ``SqlSandbox``;
- ``benchmarks/credit_quality.py --tasks 16`` alone, then two at once (each run's wall time and worker starts).

Run from the repository root:  ``.venv/bin/python benchmarks/sandbox_limits.py [--sections limits,starts]
[--before DIR]`` (writes ``benchmarks/results/sandbox_limits.json``, or ``sandbox_starts.json`` for the
``starts`` section, atomically).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from finestep.atomic import atomic_write_json
from finestep.data import load_benchmark
from finestep.data.sqlworld import build_world
from finestep.eval.execution import EVAL_LIMITS, score_predictions
from finestep.sql.executor import SandboxLimits, SqlSandbox
from finestep.sql.workers import WorkerPool

sys.path.insert(0, str(Path(__file__).resolve().parent))
from worker_starts import measure_starts, starts_table  # the benchmarks folder is not a package

MB = 2**20
LIMIT_S = 2.0
QUERIES = {
    "instr on megabyte strings": "SELECT instr(printf('%.*c', 2000000, 'a'), printf('%.*c', 1000000, 'a') || 'b')",
    "replace on megabyte strings": (
        "SELECT length(replace(printf('%.*c', 2000000, 'a'), printf('%.*c', 1000000, 'a') || 'b', 'x'))"
    ),
    "in-memory sort of blobs": "SELECT zeroblob(100000) FROM airports a, routes b ORDER BY random()",
    "64 rows of 4 MB": "SELECT zeroblob(4000000) FROM airports LIMIT 64",
    "recursive CTE": "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT count(*) FROM c",
    "cross join": "SELECT count(*) FROM routes a, routes b",
    "1 GB blob": "SELECT length(randomblob(1000000000))",
}


def _status(pid: int, field: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return 0


class PeakSampler:
    """Samples a process's resident memory every 5 ms in a thread; ``peak`` is the largest seen."""

    def __init__(self, pid: int) -> None:
        self.pid, self.peak, self._stop = pid, 0, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, _status(self.pid, "VmRSS"))
            self._stop.wait(0.005)

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        return max(self.peak, _status(self.pid, "VmHWM"))


def measure(run: Any, pids: Any, sql: str) -> dict[str, Any]:
    """Run ``sql`` with ``run`` (a warm worker waiting), sampling the worker ``pids()[0]``."""
    (pid,) = pids()
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")  # reset the high-water mark to the current RSS
    except OSError:
        pass
    baseline = _status(pid, "VmRSS")
    parent_before = _status(os.getpid(), "VmRSS")
    sampler = PeakSampler(pid)
    start = time.perf_counter()
    result = run(sql)
    elapsed = time.perf_counter() - start
    peak = sampler.stop()
    if result.error_kind:
        verdict = result.error_kind
    else:
        verdict = "truncated_bytes" if result.truncated_bytes else "truncated_rows" if result.truncated_rows else "ok"
    return {
        "verdict": verdict,
        "error": result.error,
        "wall_s": round(elapsed, 3),
        "vs_limit": round(elapsed / LIMIT_S, 3),
        "worker_peak_above_baseline_mb": round((peak - baseline) / MB, 1),
        "caller_growth_mb": round((_status(os.getpid(), "VmRSS") - parent_before) / MB, 1),
    }


def trainer_path(db: Path) -> dict[str, Any]:
    out = {}
    with SqlSandbox(SandboxLimits(timeout_s=LIMIT_S), cache_entries=0) as sandbox:
        assert sandbox.pool is not None
        for name, sql in QUERIES.items():
            sandbox.execute(db, "SELECT count(*) FROM airports")  # a warm worker, connection open
            out[name] = measure(lambda q: sandbox.execute(db, q), sandbox.pool.idle_pids, sql)
    return out


def evaluator_path(db: Path) -> dict[str, Any]:
    out = {}
    pool = WorkerPool(replace(EVAL_LIMITS, timeout_s=LIMIT_S), max_idle=1)
    try:
        for name, sql in QUERIES.items():
            pool.run([(str(db), ["SELECT count(*) FROM airports"])])
            out[name] = measure(lambda q: pool.run([(str(db), [q])])[0][0], pool.idle_pids, sql)
    finally:
        pool.close()
    return out


def runaways(workers: int, n_runaways: int = 10, n_normal: int = 10) -> dict[str, Any]:
    """``score_predictions`` on one database, the first ``n_runaways`` predictions never finishing."""
    runaway = QUERIES["recursive CTE"]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "dev_databases" / "one").mkdir(parents=True)
        conn = sqlite3.connect(root / "dev_databases" / "one" / "one.sqlite")
        conn.execute("CREATE TABLE t (a)")
        conn.executemany("INSERT INTO t VALUES (?)", [(i,) for i in range(100)])
        conn.commit()
        conn.close()
        n = n_runaways + n_normal
        entries = [{"question_id": i, "db_id": "one", "question": "?", "evidence": "", "difficulty": "simple",
                    "SQL": f"SELECT count(*) + {i} FROM t"} for i in range(n)]  # fmt: skip
        (root / "dev.json").write_text(json.dumps(entries))
        bench = load_benchmark("bird", root)
        predictions = [runaway if i < n_runaways else e["SQL"] for i, e in enumerate(entries)]
        start = time.perf_counter()
        report = score_predictions(bench, predictions, limits=replace(EVAL_LIMITS, timeout_s=LIMIT_S), workers=workers)
        elapsed = time.perf_counter() - start
    bound = n_runaways * LIMIT_S / workers
    return {
        "runaways": n_runaways, "questions": n, "workers": workers, "wall_s": round(elapsed, 3),
        "bound_s": bound, "vs_bound": round(elapsed / bound, 3), "n_correct": sum(bool(s.correct) for s in report.scores),
    }  # fmt: skip


def limits_section(db: Path, out: Path, console: Console) -> None:
    """The hostile queries on both paths, the runaway spread, the table and ``out``."""
    paths = {"trainer": trainer_path(db), "evaluator": evaluator_path(db)}
    spread = runaways(workers=2)
    table = Table(title=f"Hostile queries on flight_4, limit {LIMIT_S:g} s")
    for column in ("query", "path", "verdict", "wall s", "x limit", "worker peak MB", "caller MB"):
        table.add_column(column, justify="left" if column in ("query", "path", "verdict") else "right")
    for name in QUERIES:
        for path, rows in paths.items():
            row = rows[name]
            table.add_row(name, path, row["verdict"], f"{row['wall_s']:.2f}", f"{row['vs_limit']:.2f}",
                          f"{row['worker_peak_above_baseline_mb']:.0f}", f"{row['caller_growth_mb']:.0f}")  # fmt: skip
    console.print(table)
    console.print(f"{spread['runaways']} runaways on one database, {spread['workers']} workers: {spread['wall_s']:.2f} s "
                  f"(bound {spread['bound_s']:.1f} s, {spread['vs_bound']:.2f}x); {spread['n_correct']} correct")  # fmt: skip
    worst = max(row["vs_limit"] for rows in paths.values() for row in rows.values())
    atomic_write_json(out, {
        "benchmark": "sandbox_limits",
        "command": shlex.join([Path(sys.executable).name, *sys.argv]),
        "machine": _machine(),
        "limit_s": LIMIT_S, "queries": QUERIES, "results": paths, "runaways": spread,
        "worst_vs_limit": worst, "within_1_5x": worst <= 1.5,
    })  # fmt: skip
    console.print(f"worst wall time / limit: {worst:.2f} (target <= 1.5); wrote {out}")


def _machine() -> dict[str, Any]:
    return {"cpu_count": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
            "sqlite": sqlite3.sqlite_version}  # fmt: skip


def starts_section(before: Path | None, timeout_s: float, out: Path, console: Console) -> None:
    """Worker starts of this checkout (and of ``before``): the table and ``out``."""
    checkouts = {"after": ROOT} if before is None else {"before": before.resolve(), "after": ROOT}
    results = {}
    with tempfile.TemporaryDirectory(prefix="sandbox-starts-") as tmp:
        world = build_world(Path(tmp) / "world", seed=0, n_train_dbs=9, n_test_dbs=0).root  # 108 training tasks
        for name, checkout in checkouts.items():
            console.print(f"[bold]{name}[/bold]: {checkout} ({_commit(checkout)})")
            results[name] = {"checkout": str(checkout), "commit": _commit(checkout),
                             **measure_starts(checkout, world, timeout_s, console.print)}  # fmt: skip
    console.print(starts_table(results))
    after = results["after"]
    targets = {
        "one_start_per_process": after["episodes"]["worker_starts"] <= 1
        and all(run["worker_starts"] <= 1 for run in [after["credit_quality_alone"], *after["credit_quality_two"]]),
        "first_answer_under_0_3_s": after["first_answer_s"] < 0.3,
        "two_at_once_within_1_3x": after["two_at_once_vs_alone"] is not None and after["two_at_once_vs_alone"] <= 1.3,
    }
    atomic_write_json(out, {
        "benchmark": "sandbox_starts", "command": shlex.join([Path(sys.executable).name, *sys.argv]),
        "machine": _machine(), "timeout_s": timeout_s, "results": results, "targets_met": targets,
    })  # fmt: skip
    console.print(f"targets: {targets}; wrote {out}")


def _commit(checkout: Path) -> str:
    done = subprocess.run(["git", "-C", str(checkout), "rev-parse", "--short", "HEAD"], capture_output=True,
                          text=True, check=False)  # fmt: skip
    return done.stdout.strip() or "unknown"


ROOT = Path(__file__).resolve().parent.parent


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--spider-dir", type=Path,
                        default=Path(os.environ.get("FINESTEP_SPIDER_DIR", "../shared/data/spider")))  # fmt: skip
    parser.add_argument("--sections", default="limits,starts",
                        help="comma-separated: limits (hostile queries), starts (worker starts, issue 18)")  # fmt: skip
    parser.add_argument("--before", type=Path, help="starts: another checkout to measure too (e.g. a worktree "
                        "of an older commit)")  # fmt: skip
    parser.add_argument("--timeout", type=float, default=900.0,
                        help="starts: seconds a credit_quality run may take before it counts as not finished")  # fmt: skip
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/sandbox_limits.json"))
    parser.add_argument("--starts-out", type=Path, default=Path("benchmarks/results/sandbox_starts.json"))
    args = parser.parse_args(argv)
    sections = {s.strip() for s in args.sections.split(",") if s.strip()}
    if not sections or sections - {"limits", "starts"}:
        parser.error(f"--sections: choose from limits, starts (got {args.sections!r})")
    if args.before is not None and not (args.before / "finestep" / "sql" / "workers.py").is_file():
        parser.error(f"--before {args.before}: not a finestep checkout (no finestep/sql/workers.py)")
    console = Console(width=150)
    if "limits" in sections:
        db = args.spider_dir / "database" / "flight_4" / "flight_4.sqlite"
        if not db.is_file():
            parser.error(f"{db}: Spider's flight_4 database not found (set --spider-dir)")
        limits_section(db, args.out, console)
    if "starts" in sections:
        starts_section(args.before, args.timeout, args.starts_out, console)
    return 0


if __name__ == "__main__":
    sys.exit(main())
