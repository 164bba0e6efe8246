"""Running a trained agent: on a whole benchmark (``finestep agent-eval``) or on one question (``finestep ask``)."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from finestep.agent.generators import Generator
from finestep.agent.protocol import Protocol
from finestep.agent.rollout import RolloutConfig, rollout
from finestep.agent.trajectory import Trajectory
from finestep.atomic import atomic_write_json, atomic_write_text
from finestep.data.task import Benchmark, Task
from finestep.eval.episodes import episode_metrics
from finestep.eval.execution import EvalReport, score_predictions
from finestep.eval.predictions import BIRD_SEPARATOR
from finestep.rewards import RewardConfig, score_episodes
from finestep.sql.executor import SqlSandbox

__all__ = ["ask", "predictions_text", "run_agent_eval"]


def predictions_text(benchmark: Benchmark, sql_by_index: dict[int, str]) -> tuple[str, str]:
    """Predictions in the benchmark's own format: ``(file name, text)``.

    Spider: one SQL per line (newlines inside a query flattened); BIRD: ``predict_dev.json``, the JSON dict
    ``{"0": "SQL\\t----- bird -----\\tdb_id"}`` that BIRD's evaluation script reads.
    """
    if benchmark.name == "bird":
        entries = {
            str(t.index): f"{sql_by_index.get(t.index, '')}{BIRD_SEPARATOR}{t.db_id}" for t in benchmark.tasks
        }
        return "predict_dev.json", json.dumps(entries, indent=2, ensure_ascii=False) + "\n"
    lines = [" ".join(sql_by_index.get(t.index, "").split()) for t in benchmark.tasks]
    return "predictions.sql", "".join(line + "\n" for line in lines)


def run_agent_eval(
    benchmark: Benchmark,
    generator: Generator,
    protocol: Protocol,
    config: RolloutConfig,
    out_dir: Path,
    batch_tasks: int = 16,
    limit: int | None = None,
    on_progress: Callable[[int, int], None] | None = None,
) -> tuple[EvalReport, dict[str, Any]]:
    """Run the agent on every available task and write trajectories, predictions and metrics to ``out_dir``.

    Returns the execution-accuracy report (official semantics) and the efficiency metrics.
    """
    if limit:  # the first `limit` available tasks, as a benchmark of their own
        benchmark = Benchmark.from_tasks(
            benchmark.name, benchmark.source, [replace(t, index=i) for i, t in enumerate(benchmark.available[:limit])]
        )
    tasks = benchmark.available
    sandbox = SqlSandbox()
    trajectories: list[Trajectory] = []
    for start in range(0, len(tasks), batch_tasks):
        trajectories += rollout(tasks[start : start + batch_tasks], generator, protocol, sandbox, config)
        if on_progress is not None:
            on_progress(min(start + batch_tasks, len(tasks)), len(tasks))
    sql = {t.task.index: (t.solution.action.sql or "") for t in trajectories if t.solution is not None}
    predictions = [sql.get(t.index, "") for t in benchmark.tasks]
    report = score_predictions(benchmark, predictions, metric=benchmark.name, workers=1)
    efficiency = episode_metrics(trajectories, score_episodes(trajectories, sandbox, RewardConfig()))
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out_dir / "trajectories.jsonl",
                      "".join(json.dumps(t.to_json(), ensure_ascii=False) + "\n" for t in trajectories))  # fmt: skip
    name, text = predictions_text(benchmark, sql)
    atomic_write_text(out_dir / name, text)
    atomic_write_json(out_dir / "metrics.json", {**report.to_json(), "efficiency": efficiency})
    return report, efficiency


def ask(
    question: str,
    db_path: Path,
    generator: Generator,
    protocol: Protocol,
    config: RolloutConfig,
    evidence: str = "",
    on_turn: Callable[[int, list[Trajectory]], None] | None = None,
) -> Trajectory:
    """Answer one question greedily on one database; ``on_turn`` sees each step as it happens."""
    task = Task(id="ask", index=0, question=question, db_id=db_path.stem, db_path=db_path, gold_sql="",
                evidence=evidence)  # fmt: skip
    return rollout([task], generator, protocol, SqlSandbox(), config, on_turn=on_turn)[0]
