"""Execution accuracy of predicted SQL against gold SQL, scored in parallel through the sandbox.

Queries run in supervised worker processes (:mod:`finestep.sql.workers`): a query that overruns its limit
is answered ``timeout`` by killing its worker, one that needs too much memory ``too_large``, and slow queries
spread over all workers, so runaways cost at most about ``runaways x limit / workers`` of wall time.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from finestep.data.task import Benchmark, Task
from finestep.sql.compare import results_match
from finestep.sql.executor import ExecutionResult, SandboxLimits, default_workers, execute_on
from finestep.sql.workers import WorkerPool

__all__ = ["EVAL_LIMITS", "EvalReport", "QuestionScore", "score_pair", "score_pairs", "score_predictions"]

# BIRD's scorer gives each query 30 s; results are fetched whole (up to these caps) so that they can be compared.
EVAL_LIMITS = SandboxLimits(
    timeout_s=30.0, max_rows=1_000_000, max_bytes=256 * 2**20, max_value_bytes=64 * 2**20, max_memory_bytes=512 * 2**20
)


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


def _verdict(
    pred_sql: str | None, pred: ExecutionResult, gold: ExecutionResult, gold_sql: str, metric: str, limits: SandboxLimits
) -> tuple[bool, str | None]:
    if pred_sql is None:
        return False, "no prediction"
    if not pred.ok:
        return False, _describe("prediction", pred)
    if not gold.ok:
        return False, _describe("gold", gold)
    if pred.truncated or gold.truncated:
        side = "prediction" if pred.truncated else "gold"
        return False, f"{side} result over the size limit ({limits.max_rows} rows / {limits.max_bytes} bytes)"
    return results_match(pred.rows, gold.rows, gold_sql, metric), None


def score_pairs(
    job: tuple[str, Sequence[tuple[str | None, str]], str, SandboxLimits],
) -> list[tuple[bool, str | None]]:
    """Execute predictions and their gold queries on one database, in this process, and compare each pair.

    ``job`` is ``(db_path, [(pred_sql, gold_sql), ...], metric, limits)``; all queries run on one read-only
    connection (closed before returning), each within its own limits. Returns ``(correct, error)`` per pair,
    where ``error`` says why a prediction failed or could not be compared (``None`` when both ran). For
    untrusted predictions use :func:`score_predictions`, which adds a hard deadline and a memory bound.
    """
    db_path, pairs, metric, limits = job
    queries = [q for pred_sql, gold_sql in pairs for q in (pred_sql or "", gold_sql)]
    results = execute_on(db_path, queries, limits)
    return [
        _verdict(pred_sql, results[2 * i], results[2 * i + 1], gold_sql, metric, limits)
        for i, (pred_sql, gold_sql) in enumerate(pairs)
    ]


def score_pair(job: tuple[str | None, str, str, str, SandboxLimits]) -> tuple[bool, str | None]:
    """One prediction against its gold query: ``job = (pred_sql, gold_sql, db_path, metric, limits)``."""
    pred_sql, gold_sql, db_path, metric, limits = job
    return score_pairs((db_path, [(pred_sql, gold_sql)], metric, limits))[0]


def _chunks_by_database(tasks: list[Task], max_chunk: int) -> list[list[Task]]:
    """Consecutive tasks on the same database, in runs of at most ``max_chunk`` (input order kept)."""
    chunks: list[list[Task]] = []
    for task in tasks:
        if chunks and chunks[-1][0].db_path == task.db_path and len(chunks[-1]) < max_chunk:
            chunks[-1].append(task)
        else:
            chunks.append([task])
    return chunks


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
    workers = max(1, default_workers() if workers is None else workers)
    start = time.perf_counter()
    # Questions on one database go to a worker together (opening a database costs more than most Spider
    # queries); an idle worker takes over the unstarted half of a busy worker's run.
    chunks = _chunks_by_database(benchmark.available, max_chunk=16)
    jobs = [(str(c[0].db_path), [q for t in c for q in (predictions[t.index] or "", t.gold_sql)]) for c in chunks]
    n_done = [0]

    def finished(chunk: int) -> None:
        n_done[0] += len(chunks[chunk])
        if on_progress is not None:
            on_progress(n_done[0])

    pool = WorkerPool(limits, max_idle=0)
    try:
        answers = pool.run(jobs, workers, finished)
    finally:
        pool.close()
    verdicts: dict[int, tuple[bool, str | None]] = {}
    for chunk, results in zip(chunks, answers):
        for i, task in enumerate(chunk):
            pred_sql = predictions[task.index]
            verdicts[task.index] = _verdict(pred_sql, results[2 * i], results[2 * i + 1], task.gold_sql, metric, limits)
    scores = []
    for task in benchmark.tasks:
        correct, error = verdicts.get(task.index, (None, f"database {task.db_id} not found"))
        scores.append(QuestionScore(task.index, task.id, task.db_id, task.difficulty, correct, error))
    return EvalReport(
        benchmark.name, metric, scores, benchmark.missing_databases, time.perf_counter() - start, workers
    )
