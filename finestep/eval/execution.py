"""Execution accuracy of predicted SQL against gold SQL, scored through the sandbox by the official rules.

Which texts run and how results compare is the job of :class:`finestep.eval.official.Scorer` (test-suite-sql-eval
for ``spider``, BIRD's ``evaluation_ex.py`` for ``bird``); this module runs the pairs, in this process or over a
process pool, and collects the verdicts.
"""

from __future__ import annotations

import itertools
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from finestep.data.task import Benchmark, Task
from finestep.eval.official import Scorer
from finestep.sql.executor import ExecutionResult, SandboxLimits, default_workers, execute_on, parallel_map

__all__ = [
    "AUTO_POOL_AFTER_S", "EVAL_LIMITS", "NO_PREDICTION", "EvalReport", "QuestionScore", "score_pair", "score_pairs",
    "score_predictions",
]  # fmt: skip

NO_PREDICTION = "no prediction"
# --workers auto: scoring starts in this process and moves to a pool of every usable core only when the rest of
# the work, projected from the questions done so far, would take longer than this. Starting a forkserver pool
# costs about 0.1-0.3 s (docs/benchmarks.md), so below a second of work one process wins.
AUTO_POOL_AFTER_S = 1.0

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


def _verdict(
    pred: ExecutionResult, gold: ExecutionResult, gold_sql: str, scorer: Scorer, limits: SandboxLimits
) -> tuple[bool, str | None]:
    if not pred.ok:
        return False, _describe("prediction", pred)
    if not gold.ok:
        return False, _describe("gold", gold)
    if pred.truncated or gold.truncated:
        side = "prediction" if pred.truncated else "gold"
        return False, f"{side} result over the size limit ({limits.max_rows} rows / {limits.max_bytes} bytes)"
    return scorer.match(pred.rows, gold.rows, gold_sql), None


def _as_scorer(metric: str | Scorer) -> Scorer:
    return metric if isinstance(metric, Scorer) else Scorer(metric)


def score_pairs(
    job: tuple[str, Sequence[tuple[str | None, str]], str | Scorer, SandboxLimits],
) -> list[tuple[bool, str | None]]:
    """Execute predictions and their gold queries on one database and compare each pair.

    ``job`` is ``(db_path, [(pred_sql, gold_sql), ...], metric or Scorer, limits)``; all queries run on one
    read-only connection (closed before returning), each within its own limits, as the scorer's official script
    would run them. Returns ``(correct, error)`` per pair, where ``error`` says why a prediction failed or could
    not be compared (``None`` when both ran); a ``None`` prediction is ``(False, "no prediction")``.
    """
    db_path, pairs, metric, limits = job
    scorer = _as_scorer(metric)
    texts = [scorer.queries(pred_sql, gold_sql) for pred_sql, gold_sql in pairs if pred_sql is not None]
    as_official = replace(limits, verbatim=True, text_errors=scorer.text_errors)
    results = iter(execute_on(db_path, [q for pair in texts for q in pair], as_official))
    executed = iter(texts)
    verdicts: list[tuple[bool, str | None]] = []
    for pred_sql, _ in pairs:
        if pred_sql is None:
            verdicts.append((False, NO_PREDICTION))
            continue
        pred, gold = next(results), next(results)
        verdicts.append(_verdict(pred, gold, next(executed)[1], scorer, limits))
    return verdicts


def score_pair(job: tuple[str | None, str, str, str | Scorer, SandboxLimits]) -> tuple[bool, str | None]:
    """One prediction against its gold query: ``job = (pred_sql, gold_sql, db_path, metric or Scorer, limits)``."""
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
    """Execution accuracy of one predictions file; ``to_json`` gives the documented JSON layout.

    A question is scored (``correct`` True or False), missing (no prediction given: ``error == "no
    prediction"``) or unavailable (its database file is missing); EX is over the scored questions.
    """

    benchmark: str
    metric: str
    scores: list[QuestionScore]
    unavailable_databases: list[str]
    elapsed_s: float
    workers: int
    extra: dict[str, Any] = field(default_factory=dict)
    variant: str = ""

    @property
    def scored(self) -> list[QuestionScore]:
        """The questions with a verdict."""
        return [s for s in self.scores if s.correct is not None]

    @property
    def missing(self) -> list[QuestionScore]:
        """The questions without a prediction (on an available database)."""
        return [s for s in self.scores if s.correct is None and s.error == NO_PREDICTION]

    @property
    def ex(self) -> float:
        """Execution accuracy in percent over the scored questions (0 when none could be scored)."""
        scored = self.scored
        return 100.0 * sum(bool(s.correct) for s in scored) / len(scored) if scored else 0.0

    def breakdown(self, key: str) -> dict[str, dict[str, float]]:
        """EX and count per value of ``key`` (``difficulty`` or ``db_id``) over the scored questions."""
        groups: dict[str, list[bool]] = defaultdict(list)
        for score in self.scored:
            groups[str(getattr(score, key))].append(bool(score.correct))
        return {name: {"ex": 100.0 * sum(v) / len(v), "n": len(v)} for name, v in groups.items()}

    def to_json(self) -> dict[str, Any]:
        """The report as documented in docs/evaluation.md (one entry per question under ``per_question``)."""
        scored = self.scored
        n_missing = len(self.missing)
        return {
            "benchmark": self.benchmark,
            "metric": self.metric,
            "variant": self.variant,
            "ex": round(self.ex, 4),
            "n_questions": len(self.scores),
            "n_scored": len(scored),
            "n_correct": sum(bool(s.correct) for s in scored),
            "n_missing": n_missing,
            "n_unavailable": len(self.scores) - len(scored) - n_missing,
            "unavailable_databases": self.unavailable_databases,
            "by_difficulty": self.breakdown("difficulty") if any(s.difficulty for s in scored) else {},
            "by_database": self.breakdown("db_id"),
            "elapsed_s": round(self.elapsed_s, 3),
            "workers": self.workers,
            **self.extra,
            "per_question": [asdict(s) for s in self.scores],
        }


def _shifted(progress: Callable[[int], None] | None, offset: int) -> Callable[[int], None] | None:
    """``progress`` counting from ``offset`` (jobs done before a pool took over)."""
    return None if progress is None else (lambda k: progress(offset + k))


def _pool_pays(elapsed_s: float, jobs_done: int, jobs_left: int, cores: int) -> bool:
    """Whether ``--workers auto`` hands the ``jobs_left`` remaining jobs to a pool: there is more than one core and
    more than one job left, and they would take over :data:`AUTO_POOL_AFTER_S` at the pace of the ``jobs_done``
    jobs that took ``elapsed_s`` seconds."""
    if cores <= 1 or jobs_left <= 1 or jobs_done == 0:
        return False
    return elapsed_s / jobs_done * jobs_left > AUTO_POOL_AFTER_S


def _run_jobs(
    jobs: list[Any], workers: int | str, progress: Callable[[int], None] | None
) -> tuple[list[list[tuple[bool, str | None]]], int]:
    """``score_pairs`` over ``jobs``: ``(results in job order, processes used)``.

    ``workers="auto"`` starts in this process and hands the rest to a pool of every usable core once the
    projected remaining time passes :data:`AUTO_POOL_AFTER_S`.
    """
    if workers != "auto":
        return parallel_map(score_pairs, jobs, int(workers), progress, chunksize=1), int(workers)
    cores = default_workers()
    results: list[list[tuple[bool, str | None]]] = []
    start = time.perf_counter()
    for n, job in enumerate(jobs):
        if _pool_pays(time.perf_counter() - start, n, len(jobs) - n, cores):
            rest = parallel_map(score_pairs, jobs[n:], cores, _shifted(progress, n), chunksize=1)
            return results + rest, cores
        results.append(score_pairs(job))
        if progress is not None:
            progress(len(results))
    return results, 1


def score_predictions(
    benchmark: Benchmark,
    predictions: list[str | None],
    metric: str = "bird",
    limits: SandboxLimits = EVAL_LIMITS,
    workers: int | str | None = "auto",
    on_progress: Callable[[int], None] | None = None,
    keep_distinct: bool = False,
) -> EvalReport:
    """Score ``predictions`` (one per task, in order; ``None`` = not given) against the benchmark's gold SQL.

    ``metric`` ``spider`` reproduces test-suite-sql-eval (``keep_distinct`` its ``--keep_distinct``), ``bird``
    BIRD's ``evaluation_ex.py``. Questions whose database is missing, or without a prediction, get
    ``correct=None``; the rest run in ``workers`` processes (an int; ``None`` = every usable core; ``"auto"``:
    see :func:`_run_jobs`). ``on_progress(n_done)`` is called as questions finish.
    """
    if len(predictions) != len(benchmark.tasks):
        raise ValueError(f"{len(predictions)} predictions for {len(benchmark.tasks)} questions")
    scorer = Scorer(metric, keep_distinct)
    workers = default_workers() if workers is None else workers
    start = time.perf_counter()
    # Questions on one database share a connection (opening one costs more than most Spider queries); runs are
    # capped so that the pool still balances its work.
    given = [t for t in benchmark.available if predictions[t.index] is not None]
    chunks = _chunks_by_database(given, max_chunk=16)
    jobs = [(str(c[0].db_path), [(predictions[t.index], t.gold_sql) for t in c], scorer, limits) for c in chunks]
    done = list(itertools.accumulate(len(c) for c in chunks))
    progress = None if on_progress is None else (lambda n: on_progress(done[n - 1]))
    results, used = _run_jobs(jobs, workers, progress)
    verdicts: dict[int, tuple[bool | None, str | None]] = {}
    for chunk, chunk_verdicts in zip(chunks, results):
        verdicts.update(zip((t.index for t in chunk), chunk_verdicts))
    available = {t.index for t in benchmark.available}
    scores = []
    for task in benchmark.tasks:
        if task.index not in available:
            correct, error = None, f"database {task.db_id} not found"
        else:
            correct, error = verdicts.get(task.index, (None, NO_PREDICTION))
        scores.append(QuestionScore(task.index, task.id, task.db_id, task.difficulty, correct, error))
    return EvalReport(
        benchmark.name, metric, scores, benchmark.missing_databases, time.perf_counter() - start, used,
        variant=scorer.variant,
    )  # fmt: skip
