"""Worker starts of a finestep checkout, measured from scripts that import transformers at the top (issue 18).

Used by ``benchmarks/sandbox_limits.py --sections starts``; each measurement runs in a fresh process whose
``PYTHONPATH`` puts the checkout's ``finestep`` first, so an older commit (a ``git worktree``) is measured by
the same harness. Worker starts are counted by wrapping ``finestep.sql.workers._Worker.__init__`` (the class
both designs share), so no counter of the code under test is trusted.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.table import Table

EPISODES = 100
CREDIT_QUALITY_ARGS = ["--tasks", "16"]

# Patches the worker class to count starts; imported first by both scripts below.
_COUNT = """
import atexit, json, os
import finestep.sql.workers as _workers
_STARTS = [0]
_init = _workers._Worker.__init__
def _counted(self, *args, **kwargs):
    _STARTS[0] += 1
    _init(self, *args, **kwargs)
_workers._Worker.__init__ = _counted
if os.environ.get("STARTS_OUT"):
    atexit.register(lambda: open(os.environ["STARTS_OUT"], "w").write(json.dumps({"worker_starts": _STARTS[0]})))
"""

# A training-style script: transformers at the top, the work under the main guard (a re-import of this file by
# a worker runs the imports again, never the work).
EPISODES_SCRIPT = (
    "import time\nimport torch  # noqa: F401\nimport transformers  # noqa: F401\n"
    + _COUNT
    + """
import random, sys
from finestep.agent.expert import expert_trajectory
from finestep.data.sqlworld import load_world
from finestep.sql.executor import SqlSandbox

if __name__ == "__main__":
    world, n = load_world(sys.argv[1]), int(sys.argv[2])
    tasks = world.split("train")
    start = time.perf_counter()
    first = SqlSandbox(cache_entries=0).execute(tasks[0].db_path, "SELECT 1")
    first_s = time.perf_counter() - start
    starts_first = _STARTS[0]
    start = time.perf_counter()
    for i in range(n):
        task = tasks[i % len(tasks)]
        expert_trajectory(task, world.meta[task.id], rng=random.Random(i), trajectory_id=f"e{i}")
    print(json.dumps({"first_answer_s": first_s, "first_ok": first.rows == ((1,),), "episodes": n,
                      "episodes_wall_s": time.perf_counter() - start, "worker_starts": _STARTS[0] - starts_first}))
"""
)

# Runs a script as __main__ with worker starts counted (credit_quality.py, unchanged).
RUN_COUNTED = _COUNT + """
import runpy, sys
if __name__ == "__main__":
    sys.argv = sys.argv[1:]
    runpy.run_path(sys.argv[0], run_name="__main__")
"""


def _env(checkout: Path, **extra: str) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(checkout), "OMP_NUM_THREADS": "1", **extra}


def _run_script(code: str, args: list[str], checkout: Path, timeout_s: float, tmp: Path) -> dict[str, Any]:
    script = tmp / f"script-{time.monotonic_ns()}.py"
    script.write_text(code)
    done = subprocess.run([sys.executable, str(script), *args], capture_output=True, text=True, cwd=tmp,
                          env=_env(checkout), timeout=timeout_s, check=False)  # fmt: skip
    if done.returncode != 0:
        raise RuntimeError(f"{script.name} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _credit_quality_runs(checkout: Path, copies: int, timeout_s: float, tmp: Path) -> list[dict[str, Any]]:
    """``copies`` runs of ``credit_quality.py --tasks 16`` started together: each run's wall time (``None`` if
    it had not finished within ``timeout_s``), exit code and worker starts."""
    runner = tmp / "run_counted.py"
    runner.write_text(RUN_COUNTED)
    processes = []
    start = time.perf_counter()
    for k in range(copies):
        counts = tmp / f"starts-{copies}-{k}.json"
        command = [sys.executable, str(runner), str(checkout / "benchmarks" / "credit_quality.py"),
                   *CREDIT_QUALITY_ARGS, "--out", str(tmp / f"cq-{copies}-{k}.json")]  # fmt: skip
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=checkout,
                                   env=_env(checkout, STARTS_OUT=str(counts)), start_new_session=True)  # fmt: skip
        processes.append((process, counts))
    runs = []
    for process, counts in processes:
        left = max(0.0, timeout_s - (time.perf_counter() - start))
        try:
            _, err = process.communicate(timeout=left)
            wall: float | None = time.perf_counter() - start
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)  # the run and the workers of its process group
            _, err = process.communicate()
            wall = None
        starts = json.loads(counts.read_text())["worker_starts"] if counts.is_file() else None
        runs.append({"wall_s": None if wall is None else round(wall, 1), "finished": wall is not None,
                     "exit_code": process.returncode, "worker_starts": starts,
                     "stderr_tail": err.decode(errors="replace")[-300:] if process.returncode else ""})  # fmt: skip
    return runs


def measure_starts(checkout: Path, world: Path, timeout_s: float, log: Callable[[str], None]) -> dict[str, Any]:
    """Every measurement of the ``starts`` section for one checkout (see the module docstring)."""
    with tempfile.TemporaryDirectory(prefix="worker-starts-") as name:
        tmp = Path(name)
        episodes = _run_script(EPISODES_SCRIPT, [str(world), str(EPISODES)], checkout, timeout_s, tmp)
        log(f"  {EPISODES} expert episodes: {episodes['worker_starts']} worker starts, "
            f"{episodes['episodes_wall_s']:.1f} s; first answer {episodes['first_answer_s']:.2f} s")  # fmt: skip
        (alone,) = _credit_quality_runs(checkout, 1, timeout_s, tmp)
        log(f"  credit_quality alone: {alone}")
        two = _credit_quality_runs(checkout, 2, timeout_s, tmp)
        log(f"  credit_quality two at once: {two}")
    slowest = None if any(r["wall_s"] is None for r in two) or alone["wall_s"] is None else max(r["wall_s"] for r in two)
    return {
        "first_answer_s": round(episodes["first_answer_s"], 3),
        "episodes": {"n": EPISODES, "worker_starts": episodes["worker_starts"],
                     "wall_s": round(episodes["episodes_wall_s"], 2)},
        "credit_quality_command": ["benchmarks/credit_quality.py", *CREDIT_QUALITY_ARGS],
        "credit_quality_alone": alone,
        "credit_quality_two": two,
        "two_at_once_vs_alone": None if slowest is None else round(slowest / alone["wall_s"], 2),
    }


def starts_table(results: dict[str, dict[str, Any]]) -> Table:
    """One row per checkout: the numbers of :func:`measure_starts`."""
    table = Table(title="Sandbox worker starts, scripts importing transformers at the top")
    for column in ("checkout", "100 episodes: starts", "wall s", "first answer s", "credit_quality alone: s",
                   "starts", "two at once: s", "starts", "two / alone"):  # fmt: skip
        table.add_column(column, justify="left" if column == "checkout" else "right")

    def wall(run: dict[str, Any]) -> str:
        return f"{run['wall_s']:.0f}" if run["wall_s"] is not None else "did not finish"

    for name, r in results.items():
        two = r["credit_quality_two"]
        ratio = r["two_at_once_vs_alone"]
        table.add_row(f"{name} ({r['commit']})", str(r["episodes"]["worker_starts"]), f"{r['episodes']['wall_s']:.1f}",
                      f"{r['first_answer_s']:.2f}", wall(r["credit_quality_alone"]),
                      str(r["credit_quality_alone"]["worker_starts"]), " / ".join(wall(x) for x in two),
                      " / ".join(str(x["worker_starts"]) for x in two), "-" if ratio is None else f"{ratio:.2f}x")  # fmt: skip
    return table
