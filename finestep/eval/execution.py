"""Execution accuracy of predicted SQL against gold SQL, scored through the sandbox by the official rules.

Which texts run and how results compare is the job of :class:`finestep.eval.official.Scorer` (test-suite-sql-eval
for ``spider``, BIRD's ``evaluation_ex.py`` for ``bird``); this module runs the pairs and collects the verdicts.
Queries run in supervised worker processes (:mod:`finestep.sql.workers`): a query that overruns its limit
is answered ``timeout`` by killing its worker, one that needs too much memory ``too_large``, and slow queries
spread over all workers, so runaways cost at most about ``runaways x limit / workers`` of wall time.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from finestep.data.task import Benchmark, Task
from finestep.eval.official import Scorer
from finestep.sql.executor import ExecutionResult, SandboxLimits, default_workers, execute_on
from finestep.sql.workers import WorkerPool

__all__ = [
    "AUTO_POOL_AFTER_S", "EVAL_LIMITS", "NO_PREDICTION", "EvalReport", "QuestionScore", "score_pair", "score_pairs",
    "score_predictions",
]  # fmt: skip

NO_PREDICTION = "no prediction"
# --workers auto: scoring starts on one worker process and spreads the rest over every usable core only when it,
# projected from the questions done so far, would take longer than this. Starting worker processes costs about
# 0.1-0.3 s (docs/benchmarks.md), so below a second of work one worker wins.
AUTO_POOL_AFTER_S = 1.0
# --workers auto measures its pace over runs of this many jobs (of up to 16 questions each) before deciding again.
AUTO_STEP_JOBS = 8

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
    """Execute predictions and their gold queries on one database, in this process, and compare each pair.

    For untrusted predictions use :func:`score_predictions`, which adds a hard deadline and a memory bound.
    ``job`` is ``(db_path, [(pred_sql, gold_sql), ...], metric or Scorer, limits)``; all queries run on one
    read-only connection (closed before returning), each within its own limits, as the scorer's official script
    would run them. Returns ``(correct, error)`` per pair, where ``error`` says why a prediction failed or could
    not be compared (``None`` when both ran); a ``None`` prediction is ``(False, "no prediction")``.
    """
    db_path, pairs, metric, limits = job
    scorer = _as_scorer(metric)
    texts = _executed_texts(scorer, pairs)
    results = execute_on(db_path, [q for pair in texts for q in pair], _as_official(limits, scorer))
    return _pair_verdicts(scorer, pairs, texts, results, limits)


def _as_official(limits: SandboxLimits, scorer: Scorer) -> SandboxLimits:
    """``limits`` with the execution of the scorer's official script: text run as given, its text decoding."""
    return replace(limits, verbatim=True, text_errors=scorer.text_errors)


def _executed_texts(scorer: Scorer, pairs: Sequence[tuple[str | None, str]]) -> list[tuple[str, str]]:
    """The (prediction, gold) texts the official scorer runs, for the pairs that have a prediction."""
    return [scorer.queries(pred_sql, gold_sql) for pred_sql, gold_sql in pairs if pred_sql is not None]


def _pair_verdicts(
    scorer: Scorer,
    pairs: Sequence[tuple[str | None, str]],
    texts: list[tuple[str, str]],
    results: Sequence[ExecutionResult],
    limits: SandboxLimits,
) -> list[tuple[bool, str | None]]:
    """``(correct, error)`` per pair from the results of ``texts`` (prediction, gold, prediction, gold, ...)."""
    answers = iter(results)
    executed = iter(texts)
    verdicts: list[tuple[bool, str | None]] = []
    for pred_sql, _ in pairs:
        if pred_sql is None:
            verdicts.append((False, NO_PREDICTION))
            continue
        pred, gold = next(answers), next(answers)
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


def _pool_pays(elapsed_s: float, jobs_done: int, jobs_left: int, cores: int) -> bool:
    """Whether ``--workers auto`` spreads the ``jobs_left`` remaining jobs over every core: there is more than
    one core and more than one job left, and they would take over :data:`AUTO_POOL_AFTER_S` at the pace of the
    ``jobs_done`` jobs that took ``elapsed_s`` seconds."""
    if cores <= 1 or jobs_left <= 1 or jobs_done == 0:
        return False
    return elapsed_s / jobs_done * jobs_left > AUTO_POOL_AFTER_S


def _shifted(done: Callable[[int], None], offset: int) -> Callable[[int], None]:
    """``done`` for a slice of the jobs that starts at ``offset``."""
    return lambda j: done(offset + j)


def _run_jobs(
    pool: WorkerPool, jobs: list[tuple[str, list[str]]], workers: int | str, done: Callable[[int], None]
) -> tuple[list[list[ExecutionResult]], int]:
    """Every job's results from ``pool``: ``(results in job order, processes used)``; ``done(j)`` as job j ends.

    ``workers="auto"`` runs on one worker, :data:`AUTO_STEP_JOBS` jobs at a time, and gives the rest to every
    usable core once the projected remaining time passes :data:`AUTO_POOL_AFTER_S`.
    """
    if workers != "auto":
        return pool.run(jobs, int(workers), done), int(workers)
    cores = default_workers()
    results: list[list[ExecutionResult]] = []
    start = time.perf_counter()
    while len(results) < len(jobs):
        offset = len(results)
        if _pool_pays(time.perf_counter() - start, offset, len(jobs) - offset, cores):
            return results + pool.run(jobs[offset:], cores, _shifted(done, offset)), cores
        results += pool.run(jobs[offset : offset + AUTO_STEP_JOBS], 1, _shifted(done, offset))
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
    workers = max(1, default_workers()) if workers is None else workers
    start = time.perf_counter()
    # Questions on one database go to a worker together (opening a database costs more than most Spider
    # queries); an idle worker takes over the unstarted half of a busy worker's run.
    given = [t for t in benchmark.available if predictions[t.index] is not None]
    chunks = _chunks_by_database(given, max_chunk=16)
    pairs = [[(predictions[t.index], t.gold_sql) for t in chunk] for chunk in chunks]
    texts = [_executed_texts(scorer, chunk_pairs) for chunk_pairs in pairs]
    jobs = [(str(c[0].db_path), [q for pair in t for q in pair]) for c, t in zip(chunks, texts)]
    n_done = [0]

    def finished(chunk: int) -> None:
        n_done[0] += len(chunks[chunk])
        if on_progress is not None:
            on_progress(n_done[0])

    official = _as_official(limits, scorer)
    pool = WorkerPool(official, max_idle=1 if workers == "auto" else 0)
    try:
        answers, used = _run_jobs(pool, jobs, workers, finished)
    finally:
        pool.close()
    verdicts: dict[int, tuple[bool | None, str | None]] = {}
    for chunk, chunk_pairs, chunk_texts, results in zip(chunks, pairs, texts, answers):
        verdicts.update(zip((t.index for t in chunk), _pair_verdicts(scorer, chunk_pairs, chunk_texts, results, limits)))
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
