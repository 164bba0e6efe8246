"""Running a trained agent: on a whole benchmark (``finestep agent-eval``) or on one question (``finestep ask``)."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from finestep.agent.generators import Generator
from finestep.agent.protocol import Protocol
from finestep.agent.rollout import RolloutConfig, rollout
from finestep.agent.trajectory import Trajectory
from finestep.atomic import atomic_write_json, atomic_write_text
from finestep.data.task import Benchmark, Task
from finestep.eval.execution import EvalReport, score_predictions
from finestep.eval.predictions import BIRD_SEPARATOR
from finestep.eval.voting import majority_vote, mean_pass_at_k, pass_at_k_levels
from finestep.rewards import RewardConfig, score_episodes
from finestep.rewards.episodes import episode_metrics
from finestep.sql.executor import SqlSandbox, shared_sandbox

__all__ = ["SampledEval", "ask", "predictions_text", "run_agent_eval", "run_sampled_eval"]


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


def _first_available(benchmark: Benchmark, limit: int | None) -> Benchmark:
    """The first ``limit`` available tasks, as a benchmark of their own (all of them when ``limit`` is falsy)."""
    if not limit:
        return benchmark
    tasks = [replace(t, index=i) for i, t in enumerate(benchmark.available[:limit])]
    return Benchmark.from_tasks(benchmark.name, benchmark.source, tasks)


def _rollout_all(
    tasks: list[Task], generator: Generator, protocol: Protocol, sandbox: SqlSandbox, config: RolloutConfig,
    batch_tasks: int, on_progress: Callable[[int, int], None] | None,
) -> list[Trajectory]:  # fmt: skip
    trajectories: list[Trajectory] = []
    for start in range(0, len(tasks), batch_tasks):
        trajectories += rollout(tasks[start : start + batch_tasks], generator, protocol, sandbox, config)
        if on_progress is not None:
            on_progress(min(start + batch_tasks, len(tasks)), len(tasks))
    return trajectories


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
    benchmark = _first_available(benchmark, limit)
    sandbox = shared_sandbox()
    trajectories = _rollout_all(benchmark.available, generator, protocol, sandbox, config, batch_tasks, on_progress)
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


@dataclass
class SampledEval:
    """The outcome of K sampled episodes per question.

    ``majority``: EX of the majority-vote answers (official scorer); ``pass_at_k``: k -> pass@k in percent
    (unbiased estimator, over the questions); ``sample_ex``: EX of each sample index; ``efficiency``: the
    efficiency metrics averaged over all sampled episodes.
    """

    samples: int
    temperature: float
    majority: EvalReport
    pass_at_k: dict[int, float]
    sample_ex: list[float]
    efficiency: dict[str, float]

    def to_json(self) -> dict[str, Any]:
        """The layout of ``sampled_metrics.json``."""
        return {
            "samples": self.samples, "temperature": self.temperature, "majority_ex": round(self.majority.ex, 4),
            "pass_at_k": {str(k): round(v, 4) for k, v in self.pass_at_k.items()},
            "sample_ex": [round(v, 4) for v in self.sample_ex], "efficiency": self.efficiency,
            "majority": self.majority.to_json(),
        }  # fmt: skip


def run_sampled_eval(
    benchmark: Benchmark,
    generator: Generator,
    protocol: Protocol,
    config: RolloutConfig,
    out_dir: Path,
    batch_tasks: int = 16,
    limit: int | None = None,
    on_progress: Callable[[int, int], None] | None = None,
) -> SampledEval:
    """``config.group_size`` sampled episodes per available task, voted by execution result and scored.

    Writes ``samples.jsonl`` (every episode), ``sampled_metrics.json`` and the majority-vote predictions in the
    benchmark's own format under ``majority/`` (``predictions.sql`` or ``predict_dev.json``) to ``out_dir``.
    A sample that gives no solution answers with an empty prediction, as in the predictions files.
    """
    benchmark = _first_available(benchmark, limit)
    k = config.group_size
    sandbox = shared_sandbox()
    trajectories = _rollout_all(benchmark.available, generator, protocol, sandbox, config, batch_tasks, on_progress)
    answers: dict[int, list[str | None]] = {}
    for trajectory in trajectories:  # task by task, sample by sample
        solution = trajectory.solution
        answers.setdefault(trajectory.task.index, []).append(solution.action.sql if solution is not None else None)
    voted: dict[int, str] = {}
    for task in benchmark.available:
        candidates = answers[task.index]
        results = [sandbox.execute(task.db_path, sql) if sql else None for sql in candidates]
        choice = majority_vote([r.rows if r is not None and r.ok and not r.truncated else None for r in results])
        fallback = next((sql for sql in candidates if sql), "")
        voted[task.index] = (candidates[choice] or "") if choice is not None else fallback
    majority = score_predictions(benchmark, [voted.get(t.index, "") for t in benchmark.tasks], benchmark.name,
                                 workers=1)  # fmt: skip
    correct_counts = {t.index: 0 for t in benchmark.available}
    sample_ex = []
    for sample in range(k):
        preds = [(answers[t.index][sample] or "") if t.index in answers else None for t in benchmark.tasks]
        report = score_predictions(benchmark, preds, benchmark.name, workers=1)
        sample_ex.append(report.ex)
        for score in report.scored:
            correct_counts[score.index] += bool(score.correct)
    counts = list(correct_counts.values())
    pass_at = {level: mean_pass_at_k(counts, k, level) for level in pass_at_k_levels(k)}
    efficiency = episode_metrics(trajectories, score_episodes(trajectories, sandbox, RewardConfig()))
    result = SampledEval(k, config.temperature, majority, pass_at, sample_ex, efficiency)
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out_dir / "samples.jsonl",
                      "".join(json.dumps(t.to_json(), ensure_ascii=False) + "\n" for t in trajectories))  # fmt: skip
    name, text = predictions_text(benchmark, voted)
    (out_dir / "majority").mkdir(exist_ok=True)
    atomic_write_text(out_dir / "majority" / name, text)
    atomic_write_json(out_dir / "sampled_metrics.json", result.to_json())
    return result


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
    return rollout([task], generator, protocol, shared_sandbox(), config, on_turn=on_turn)[0]
