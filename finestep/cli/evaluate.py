"""``finestep eval`` (score a predictions file) and ``finestep sql`` (one query in the sandbox)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from rich.console import Console

from finestep.cli.common import (
    _benchmarks,
    _check_output,
    _non_negative_int,
    _positive_float,
    _positive_int,
    _progress,
    _workers_arg,
    default_spider_dir,
)
from finestep.data.task import DataError


def _cmd_eval(args: argparse.Namespace, console: Console) -> int:
    from finestep.atomic import atomic_write_json
    from finestep.data import load_benchmark
    from finestep.eval.execution import EVAL_LIMITS, score_predictions
    from finestep.eval.predictions import read_predictions
    from finestep.eval.report import print_eval_report
    from finestep.sql.executor import SandboxLimits

    data = args.data or (default_spider_dir() if args.benchmark == "spider" else None)
    if data is None:
        raise DataError("--data is required for --benchmark bird (the folder holding dev.json and dev_databases/)")
    _check_output(args.out, "--out")
    if args.gold:
        from finestep.data.gold import load_gold

        benchmark = load_gold(args.gold, args.benchmark, data)
    else:
        benchmark = load_benchmark(args.benchmark, data)
    predictions = read_predictions(args.predictions, benchmark.tasks, args.format)
    metric = args.metric or args.benchmark
    if args.keep_distinct and metric != "spider":
        raise DataError("--keep-distinct is an option of --metric spider (test-suite-sql-eval's --keep_distinct)")
    limits = SandboxLimits(**{**EVAL_LIMITS.__dict__, "timeout_s": args.timeout})
    if (args.transpile_gold or args.transpile_predictions or args.engine_gold) and not args.engine:
        raise DataError("--transpile-gold, --transpile-predictions and --engine-gold are options of --engine")
    reasons: dict[int, str] = {}
    if args.engine:
        benchmark, predictions, reasons = _on_engine(args, benchmark, predictions, metric, limits)
    given = sum(1 for t in benchmark.available if predictions[t.index] is not None)
    with _progress(console) as progress:
        bar = progress.add_task("scoring", total=given)
        report = score_predictions(
            benchmark, predictions, metric, limits, args.workers,
            on_progress=lambda n: progress.update(bar, completed=n), keep_distinct=args.keep_distinct,
        )  # fmt: skip
    if args.engine:
        from finestep.data.engines import reason_counts
        from finestep.eval.execution import QuestionScore

        report.scores = [QuestionScore(q.index, q.id, q.db_id, q.difficulty, None, f"not comparable: {reasons[q.index]}")
                         if q.index in reasons else q for q in report.scores]  # fmt: skip
        report.extra.update(engine=args.engine, n_not_comparable=len(reasons),
                            not_comparable_by_reason=reason_counts(reasons))  # fmt: skip
        console.print(f"engine {args.engine}: {len(reasons)} questions not comparable "
                      f"{reason_counts(reasons)}", highlight=False, soft_wrap=True)  # fmt: skip
    print_eval_report(report, console, args.by)
    if args.out:
        atomic_write_json(args.out, report.to_json())
        console.print(f"wrote {args.out}")
    return 0


def _on_engine(args: argparse.Namespace, benchmark, predictions, metric: str, limits):
    """The benchmark on ``--engine``, its gold transpiled, and the questions that are not comparable there (with
    ``--engine-gold``: the gold as given, and the questions whose gold does not run there)."""
    from dataclasses import replace

    from finestep.eval.engines import column_names, comparable_tasks, on_engine, runnable_tasks, transpile
    from finestep.eval.official import Scorer
    from finestep.sql.engines import engine_for

    if args.engine_gold and (args.transpile_gold or args.transpile_predictions):
        raise DataError("--engine-gold: the gold is the engine's own SQL already; leave out --transpile-gold and "
                        "--transpile-predictions")  # fmt: skip
    moved = on_engine(benchmark, args.engine)
    scorer = Scorer(metric, args.keep_distinct)
    official = replace(limits, verbatim=True, text_errors=scorer.text_errors)
    if args.engine_gold:
        gold, reasons = runnable_tasks(moved.available, official)
    else:
        lite = benchmark.available
        gold, reasons = comparable_tasks(lite, [moved.tasks[t.index] for t in lite], scorer, args.transpile_gold,
                                         official)  # fmt: skip
    tasks = [replace(t, gold_sql=gold[t.index]) if t.index in gold else t for t in moved.tasks]
    moved = type(benchmark).from_tasks(benchmark.name, benchmark.source, tasks)
    engine = engine_for(args.engine).name
    out = []
    for task, pred in zip(benchmark.tasks, predictions):
        if pred is None or task.index in reasons or task.index not in gold:
            out.append(None)
            continue
        if args.transpile_predictions:
            try:
                pred = transpile(pred, engine, column_names(str(task.db_path)))
            except ValueError:
                pass  # the prediction runs as written and fails on the engine, as a model's would
        out.append(pred)
    return moved, out, reasons


def _cmd_sql(args: argparse.Namespace, console: Console) -> int:
    from finestep.agent.protocol import ObservationFormat, format_observation
    from finestep.sql.executor import SandboxLimits, SqlSandbox

    sql = sys.stdin.read() if args.query == "-" else args.query
    with SqlSandbox(SandboxLimits(timeout_s=args.timeout), cache_entries=0) as sandbox:
        result = sandbox.execute(args.db, sql)
    observation = format_observation(result, args.turns_left, ObservationFormat(max_rows=args.max_rows))
    print(observation)  # plain print: the exact text, no rich markup
    if args.verbose:
        console.print(f"[dim]{result.elapsed_s * 1000:.1f} ms, error_kind={result.error_kind}[/dim]", highlight=False)
    return 0 if result.ok else 1


def add_eval_parser(commands: argparse._SubParsersAction) -> None:
    """Register the ``eval`` sub-command: its flags, help text and handler."""
    ev = commands.add_parser(
        "eval",
        help="execution accuracy of a predictions file on Spider or BIRD",
        description="Score predicted SQL against gold SQL by executing both in the read-only sandbox.",
    )
    ev.add_argument("--benchmark", choices=_benchmarks(), required=True, help="which benchmark's format")
    ev.add_argument("--data", type=Path, help="benchmark folder (Spider: default $FINESTEP_SPIDER_DIR or ../shared/data/spider)")
    ev.add_argument("--predictions", type=Path, required=True, help="one SQL per line, BIRD's JSON dict, or JSONL {id, sql}")
    ev.add_argument("--format", choices=["lines", "bird", "jsonl"], help="predictions format (default: detected)")
    ev.add_argument("--metric", choices=["bird", "spider"],
                    help="the official scorer to reproduce: spider = test-suite-sql-eval, bird = BIRD's "
                    "evaluation_ex.py (default: the benchmark's own)")
    ev.add_argument("--keep-distinct", action="store_true",
                    help="spider metric: keep DISTINCT (test-suite-sql-eval --keep_distinct, the semantically "
                    "faithful variant); by default DISTINCT is removed from both queries, as published numbers do")
    ev.add_argument("--gold", type=Path, help="score against this gold file (SQL<TAB>db_id lines, or BIRD's JSON "
                    "list) instead of the benchmark's dev split; databases still come from --data")
    ev.add_argument("--out", type=Path, help="write the full report (per question) as JSON here")
    ev.add_argument("--workers", default="auto", type=_workers_arg,
                    help="processes executing queries: a number, or auto (default: one process, moving to every "
                    "core once the remaining work is projected to take over a second)")
    ev.add_argument("--timeout", type=_positive_float, default=30.0, help="seconds per query (default 30, as BIRD)")
    ev.add_argument("--engine", help="score on this engine: duckdb:DIR (from finestep db import) or a PostgreSQL URL "
                    "prefix (the read-only role's, e.g. postgresql://finestep_reader@/?host=DIR&port=N); questions "
                    "whose gold does not run or agree with SQLite there are reported, not scored")  # fmt: skip
    ev.add_argument("--transpile-gold", action="store_true", help="with --engine: transpile the SQLite gold queries "
                    "to the engine's dialect with sqlglot")  # fmt: skip
    ev.add_argument("--transpile-predictions", action="store_true", help="with --engine: the predictions are "
                    "SQLite too; transpile them the same way")  # fmt: skip
    ev.add_argument("--engine-gold", action="store_true", help="with --engine: the gold file's SQL is written for "
                    "the engine (BIRD's mini_dev_postgresql.json): it runs there as given, not compared with SQLite; "
                    "questions whose gold fails there are reported, not scored")  # fmt: skip
    ev.add_argument("--by", choices=["auto", "difficulty", "database"], default="auto", help="table breakdown")
    ev.set_defaults(handler=_cmd_eval)


def add_sql_parser(commands: argparse._SubParsersAction) -> None:
    """Register the ``sql`` sub-command: its flags, help text and handler."""
    sq = commands.add_parser(
        "sql",
        help="run one query in the sandbox and print the observation the agent would see",
        description="Run one read-only, time-limited query and print exactly the agent's observation.",
    )
    sq.add_argument("--db", required=True, help="database: a SQLite file, duckdb:PATH or postgresql://USER@HOST:PORT/DB")
    sq.add_argument("query", help="the SQL (or - to read it from standard input)")
    sq.add_argument("--timeout", type=_positive_float, default=5.0, help="seconds (default 5)")
    sq.add_argument("--max-rows", type=_positive_int, default=20, help="rows shown (default 20)")
    sq.add_argument("--turns-left", type=_non_negative_int, help="append the turns-left line as in a rollout")
    sq.add_argument("-v", "--verbose", action="store_true", help="also print timing and error kind")
    sq.set_defaults(handler=_cmd_sql)
