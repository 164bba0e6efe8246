"""The ``finestep`` command line: one sub-command per job, each a thin layer over the library."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from finestep import __version__
from finestep.data.task import DataError

__all__ = ["build_parser", "default_spider_dir", "main"]


def default_spider_dir() -> Path:
    """Spider's folder: ``$FINESTEP_SPIDER_DIR``, else ``../shared/data/spider``."""
    return Path(os.environ.get("FINESTEP_SPIDER_DIR", "../shared/data/spider"))


def _progress(console: Console) -> Progress:
    return Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        console=console, transient=True,
    )  # fmt: skip


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
    benchmark = load_benchmark(args.benchmark, data)
    predictions = read_predictions(args.predictions, benchmark.tasks, args.format)
    metric = args.metric or args.benchmark
    limits = SandboxLimits(**{**EVAL_LIMITS.__dict__, "timeout_s": args.timeout})
    with _progress(console) as progress:
        bar = progress.add_task("scoring", total=len(benchmark.available))
        report = score_predictions(
            benchmark, predictions, metric, limits, args.workers, on_progress=lambda n: progress.update(bar, completed=n)
        )
    print_eval_report(report, console, args.by)
    if args.out:
        atomic_write_json(args.out, report.to_json())
        console.print(f"wrote {args.out}")
    return 0


def _cmd_sql(args: argparse.Namespace, console: Console) -> int:
    from finestep.agent.protocol import ObservationFormat, format_observation
    from finestep.sql.executor import SandboxLimits, execute

    sql = sys.stdin.read() if args.query == "-" else args.query
    result = execute(args.db, sql, SandboxLimits(timeout_s=args.timeout))
    observation = format_observation(result, args.turns_left, ObservationFormat(max_rows=args.max_rows))
    print(observation)  # plain print: the exact text, no rich markup
    if args.verbose:
        console.print(f"[dim]{result.elapsed_s * 1000:.1f} ms, error_kind={result.error_kind}[/dim]", highlight=False)
    return 0 if result.ok else 1


def _cmd_credit(args: argparse.Namespace, console: Console) -> int:
    import json

    from finestep.atomic import atomic_write_text
    from finestep.eval.credit_inspect import inspect_credit, print_credit_tables

    lines = inspect_credit(args.input, args.estimator, args.overrides, args.db_root)
    text = "".join(json.dumps(line, ensure_ascii=False) + "\n" for line in lines)
    show_table = args.table if args.table is not None else console.is_terminal
    if show_table:
        print_credit_tables(lines, console)
    if args.out:
        atomic_write_text(args.out, text)
        console.print(f"wrote {len(lines)} trajectories to {args.out}")
    elif not console.is_terminal:
        sys.stdout.write(text)
    return 0


def _cmd_train(args: argparse.Namespace, console: Console) -> int:
    from finestep.train.config import load_train_config
    from finestep.train.rl import RLTrainer

    run_dir = args.resume or args.run_dir
    if args.resume:
        from finestep.train.config import load_train_config as load

        config = load(args.resume / "config.yaml", args.overrides)
    else:
        config = load_train_config(args.config, args.overrides)
    with console.status("setting up (data, model, tokenizer)..."):
        trainer = RLTrainer(config, run_dir, resume=bool(args.resume))
    console.print(
        f"run {run_dir}: {len(trainer.train_tasks)} training tasks, {len(trainer.eval_tasks)} held-out; "
        f"estimator {config.credit.estimator}; starting at step {trainer.step} of {config.trainer.max_steps}"
    )
    with _progress(console) as progress:
        bar = progress.add_task("training", total=config.trainer.max_steps, completed=trainer.step)

        def show(m: dict[str, float]) -> None:
            progress.update(bar, completed=int(m["step"]))
            progress.console.print(
                f"step {int(m['step']):4d}  reward {m['reward']:+.3f}  EX {m['ex']:5.1f}  tool calls "
                f"{m['tool_calls']:.2f}  redundant {m['redundant_rate']:.2f}  kl {m.get('approx_kl', 0.0):.4f}  "
                f"clip {m.get('clip_frac', 0.0):.2f}  {m['tokens_per_s']:.0f} tok/s  {m['time_step']:.1f} s",
                highlight=False,
            )

        final = trainer.run(on_step=show)
    console.print(
        f"held-out: EX {final.get('ex', 0.0):.1f}  tool calls {final.get('tool_calls', 0.0):.2f}  "
        f"format failures {final.get('format_failure_rate', 0.0):.2f}; metrics in {run_dir / 'metrics.jsonl'}, "
        f"checkpoints in {run_dir / 'checkpoints'}"
    )
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every sub-command."""
    parser = argparse.ArgumentParser(
        prog="finestep",
        description="Train and evaluate tool-integrated Text-to-SQL agents with step-level credit assignment.",
    )
    parser.add_argument("--version", action="version", version=f"finestep {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    ev = commands.add_parser(
        "eval",
        help="execution accuracy of a predictions file on Spider or BIRD",
        description="Score predicted SQL against gold SQL by executing both in the read-only sandbox.",
    )
    ev.add_argument("--benchmark", choices=["spider", "bird"], required=True, help="which benchmark's format")
    ev.add_argument("--data", type=Path, help="benchmark folder (Spider: default $FINESTEP_SPIDER_DIR or ../shared/data/spider)")
    ev.add_argument("--predictions", type=Path, required=True, help="one SQL per line, BIRD's JSON dict, or JSONL {id, sql}")
    ev.add_argument("--format", choices=["lines", "bird", "jsonl"], help="predictions format (default: detected)")
    ev.add_argument("--metric", choices=["bird", "spider"], help="result equivalence (default: the benchmark's own)")
    ev.add_argument("--out", type=Path, help="write the full report (per question) as JSON here")
    ev.add_argument("--workers", type=int, help="processes executing queries (default: all usable cores)")
    ev.add_argument("--timeout", type=float, default=30.0, help="seconds per query (default 30, as BIRD)")
    ev.add_argument("--by", choices=["auto", "difficulty", "database"], default="auto", help="table breakdown")
    ev.set_defaults(handler=_cmd_eval)

    sq = commands.add_parser(
        "sql",
        help="run one query in the sandbox and print the observation the agent would see",
        description="Run one read-only, time-limited query and print exactly the agent's observation.",
    )
    sq.add_argument("--db", type=Path, required=True, help="SQLite database file")
    sq.add_argument("query", help="the SQL (or - to read it from standard input)")
    sq.add_argument("--timeout", type=float, default=5.0, help="seconds (default 5)")
    sq.add_argument("--max-rows", type=int, default=20, help="rows shown (default 20)")
    sq.add_argument("--turns-left", type=int, help="append the turns-left line as in a rollout")
    sq.add_argument("-v", "--verbose", action="store_true", help="also print timing and error kind")
    sq.set_defaults(handler=_cmd_sql)

    cr = commands.add_parser(
        "credit",
        help="rewards and step-level advantages of a trajectory file (JSONL)",
        description=(
            "Compute outcome and process rewards, logical links and step advantages for trajectories "
            "(one JSON object per line, see docs/trajectories.md). Given values are used as is; missing ones are "
            "computed by executing the SQL on db_path. Trajectories with the same task_id form one group."
        ),
        epilog="overrides: e.g. beta=0 lam=0.3 normalize=none rewards.process.redundant=-0.5 "
        "rewards.process.weights.grounded=0 (bare keys are credit.* fields)",
    )
    cr.add_argument("--input", type=Path, required=True, help="trajectory JSONL file")
    cr.add_argument("--estimator", default="finestep", help="finestep, grpo, grpo_shaped, rloo, gigpo or ps_grpo")
    cr.add_argument("--out", type=Path, help="write the scored trajectories as JSONL here")
    cr.add_argument("--db-root", type=Path, help="folder that relative db_path values start from (default: the input's folder)")
    cr.add_argument(
        "--table", action=argparse.BooleanOptionalAction, default=None,
        help="print a table per task (default: when the output is a terminal)",
    )  # fmt: skip
    cr.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides")
    cr.set_defaults(handler=_cmd_credit)

    tr = commands.add_parser(
        "train",
        help="RL training with step-level credit (rollouts, rewards, credit, PPO-clip)",
        description="Train a policy with RL. Metrics go to RUN_DIR/metrics.jsonl, checkpoints to RUN_DIR/checkpoints/.",
        epilog="overrides: e.g. trainer.max_steps=3 credit.estimator=grpo rollout.group_size=8 optim.lr=1e-5",
    )
    source = tr.add_mutually_exclusive_group(required=True)
    source.add_argument("--config", type=Path, help="YAML config (see configs/)")
    source.add_argument("--resume", type=Path, metavar="RUN_DIR", help="continue a run from its newest checkpoint")
    tr.add_argument("--run-dir", type=Path, default=Path("runs/train"), help="output folder (default runs/train)")
    tr.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides")
    tr.set_defaults(handler=_cmd_train)
    return parser


def _quiet_libraries() -> None:
    # Our own progress bars say what is happening; the libraries' per-file bars and hub notices are noise.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        hf_logging.set_verbosity_error()
    except ImportError:  # pragma: no cover - transformers is a dependency
        pass


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``finestep`` console script; returns the exit status."""
    args = build_parser().parse_args(argv)
    if args.command in ("train", "sft", "agent-eval", "ask"):
        _quiet_libraries()
    console = Console(stderr=args.command == "sql")
    try:
        return args.handler(args, console)
    except (DataError, ValueError, FileNotFoundError) as exc:  # ConfigError is a ValueError
        Console(stderr=True, soft_wrap=True).print(f"[red]error:[/red] {escape(str(exc))}", highlight=False)
        return 2
    except KeyboardInterrupt:
        Console(stderr=True).print("[red]interrupted[/red]")
        return 130


if __name__ == "__main__":
    sys.exit(main())
