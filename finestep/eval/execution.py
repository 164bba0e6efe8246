"""Execution accuracy of predicted SQL against gold SQL, scored in parallel through the sandbox."""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from finestep.data.task import Benchmark
from finestep.sql.compare import results_match
from finestep.sql.executor import ExecutionResult, SandboxLimits, default_workers, execute_on, parallel_map

__all__ = ["EVAL_LIMITS", "EvalReport", "QuestionScore", "score_pair", "score_predictions"]

# BIRD's scorer gives each query 30 s; results are fetched whole (up to these caps) so that they can be compared.
EVAL_LIMITS = SandboxLimits(timeout_s=30.0, max_rows=1_000_000, max_bytes=512 * 2**20, max_value_bytes=64 * 2**20)


@dataclass(frozen=True)
class QuestionScore:
    """The verdict on one question. ``correct`` is ``None`` when the question could not be scored."""

    index: int
    id: str
    db_id: str
    difficulty: str | None
    correct: bool | None
    error: str | None = None


def _describe(side: str, result: ExecutionResult) -> str:
    return f"{side} {result.error_kind}: {result.error}"


def score_pair(job: tuple[str | None, str, str, str, SandboxLimits]) -> tuple[bool, str | None]:
    """Execute a prediction and its gold query on one database and compare them.

    ``job`` is ``(pred_sql, gold_sql, db_path, metric, limits)``; returns ``(correct, error)`` where ``error``
    says why a prediction failed or could not be compared (``None`` when both ran).
    """
    pred_sql, gold_sql, db_path, metric, limits = job
    if pred_sql is None:
        return False, "no prediction"
    pred, gold = execute_on(db_path, [pred_sql, gold_sql], limits)
    if not pred.ok:
        return False, _describe("prediction", pred)
    if not gold.ok:
        return False, _describe("gold", gold)
    if pred.truncated or gold.truncated:
        side = "prediction" if pred.truncated else "gold"
        return False, f"{side} result over the size limit ({limits.max_rows} rows / {limits.max_bytes} bytes)"
    return results_match(pred.rows, gold.rows, gold_sql, metric), None


@dataclass
class EvalReport:
    """Execution accuracy of one predictions file; ``to_json`` gives the documented JSON layout."""

    benchmark: str
    metric: str
    scores: list[QuestionScore]
    unavailable_databases: list[str]
    elapsed_s: float
    workers: int
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def scored(self) -> list[QuestionScore]:
        return [s for s in self.scores if s.correct is not None]

    @property
    def ex(self) -> float:
        """Execution accuracy in percent over the scored questions (0 when none could be scored)."""
        scored = self.scored
        return 100.0 * sum(s.correct for s in scored) / len(scored) if scored else 0.0

    def breakdown(self, key: str) -> dict[str, dict[str, float]]:
        """EX and count per value of ``key`` (``difficulty`` or ``db_id``) over the scored questions."""
        groups: dict[str, list[bool]] = defaultdict(list)
        for score in self.scored:
            groups[str(getattr(score, key))].append(bool(score.correct))
        return {name: {"ex": 100.0 * sum(v) / len(v), "n": len(v)} for name, v in groups.items()}

    def to_json(self) -> dict[str, Any]:
        scored = self.scored
        return {
            "benchmark": self.benchmark,
            "metric": self.metric,
            "ex": round(self.ex, 4),
            "n_questions": len(self.scores),
            "n_scored": len(scored),
            "n_correct": sum(bool(s.correct) for s in scored),
            "n_unavailable": len(self.scores) - len(scored),
            "unavailable_databases": self.unavailable_databases,
            "by_difficulty": self.breakdown("difficulty") if any(s.difficulty for s in scored) else {},
            "by_database": self.breakdown("db_id"),
            "elapsed_s": round(self.elapsed_s, 3),
            "workers": self.workers,
            **self.extra,
            "per_question": [asdict(s) for s in self.scores],
        }


def score_predictions(
    benchmark: Benchmark,
    predictions: list[str | None],
    metric: str = "bird",
    limits: SandboxLimits = EVAL_LIMITS,
    workers: int | None = None,
    on_progress: Callable[[int], None] | None = None,
) -> EvalReport:
    """Score ``predictions`` (one per task, in order) against the benchmark's gold SQL.

    Questions whose database is missing are listed with ``correct=None``; the rest run over ``workers``
    processes (all usable cores by default); ``on_progress(n_done)`` is called as they finish.
    """
    if len(predictions) != len(benchmark.tasks):
        raise ValueError(f"{len(predictions)} predictions for {len(benchmark.tasks)} questions")
    workers = default_workers() if workers is None else workers
    start = time.perf_counter()
    available = benchmark.available
    jobs = [(predictions[t.index], t.gold_sql, str(t.db_path), metric, limits) for t in available]
    verdicts = dict(zip((t.index for t in available), parallel_map(score_pair, jobs, workers, on_progress)))
    scores = []
    for task in benchmark.tasks:
        correct, error = verdicts.get(task.index, (None, f"database {task.db_id} not found"))
        scores.append(QuestionScore(task.index, task.id, task.db_id, task.difficulty, correct, error))
    return EvalReport(
        benchmark.name, metric, scores, benchmark.missing_databases, time.perf_counter() - start, workers
    )
