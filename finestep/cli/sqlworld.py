"""``finestep demo`` (SQLWorld end to end) and ``finestep bench`` (estimators compared over seeds), with the
plain-line progress the demo prints when the output is not a terminal."""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TextIO

from rich.console import Console

from finestep.cli.common import _non_negative_int, _positive_int, _progress

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
DEFAULT_BENCH_CONFIG = CONFIGS / "sqlworld-tiny.yaml"
HARD_BENCH_CONFIG = CONFIGS / "sqlworld-hard.yaml"


def _stage(message: str) -> str:
    """The stage a demo progress message belongs to: ``"SFT warm start (loss 0.4)"`` -> ``"SFT warm start"``,
    ``"FineStep RL step 3/25: ..."`` -> ``"FineStep RL"``."""
    return message.split(" (")[0].split(" step ")[0]


class PlainProgress:
    """Progress as plain, flushed lines, for output that is not a terminal (a pipe, a log file, CI), where a
    live progress bar would print nothing: a line when a stage starts, one each time the stage's fraction done
    passes another ``every`` (10 % by default), and a line with its duration when it ends.

    Called as ``say(message, fraction)`` (fraction in [0, 1], or None when unknown); ``close()`` ends the last
    stage.
    """

    def __init__(self, stream: TextIO, every: float = 0.1, clock: Callable[[], float] = time.perf_counter) -> None:
        self.stream, self.every, self.clock = stream, every, clock
        self.start = self.stage_start = clock()
        self.stage = ""
        self.next_fraction = every

    def _line(self, text: str) -> None:
        self.stream.write(f"[{self.clock() - self.start:5.0f} s] {text}\n")
        self.stream.flush()

    def __call__(self, message: str, fraction: float | None) -> None:
        stage = _stage(message)
        if stage != self.stage:
            self.close()
            self.stage, self.stage_start, self.next_fraction = stage, self.clock(), self.every
            self._line(message if fraction is None else f"{message} [{fraction:.0%}]")
        elif fraction is not None and fraction >= self.next_fraction - 1e-9:
            self._line(f"{message} [{fraction:.0%}]")
            self.next_fraction = (math.floor(fraction / self.every + 1e-9) + 1) * self.every

    def close(self) -> None:
        if self.stage:
            self._line(f"done {self.stage} ({self.clock() - self.stage_start:.0f} s)")
            self.stage = ""


@contextmanager
def stage_reporter(console: Console) -> Iterator[Callable[[str, float | None], None]]:
    """A ``say(message, fraction)`` for long staged work: a live bar on a terminal, ``PlainProgress`` lines when
    the output is piped or logged (where a live bar prints nothing)."""
    if not console.is_terminal:
        plain = PlainProgress(console.file)
        yield plain
        plain.close()
        return
    with _progress(console) as progress:
        bar = progress.add_task("starting", total=1.0)
        current = [""]

        def say(message: str, fraction: float | None) -> None:
            stage = _stage(message)
            if stage != current[0]:
                if current[0]:
                    progress.console.print(f"[green]done[/green] {current[0]}")
                current[0] = stage
                progress.reset(bar, total=1.0)
            progress.update(bar, description=message, completed=fraction if fraction is not None else 0.0)

        yield say


def _cmd_demo(args: argparse.Namespace, console: Console) -> int:
    from rich.table import Table

    from finestep.bench.demo import DemoConfig, run_demo, summary_rows

    demo = DemoConfig.quick() if args.quick else DemoConfig.full()
    console.print(f"SQLWorld demo{' (quick)' if args.quick else ''} into {args.out}/")
    with stage_reporter(console) as say:
        summary = run_demo(args.out, demo, say)
    table = Table(title=f"SQLWorld, {summary['held_out_tasks']} held-out questions ({summary['wall_time_s']:.0f} s)")
    for column in ("metric", "after SFT", "after FineStep RL"):
        table.add_column(column, justify="left" if column == "metric" else "right")
    for row in summary_rows(summary):
        table.add_row(row["metric"], f"{row['before']:.3f}", f"{row['after']:.3f}")
    console.print(table)
    console.print(f"report: {args.out / 'report.md'}   viewer: {args.out / 'trajectories.html'}")
    return 0


def _cmd_bench(args: argparse.Namespace, console: Console) -> int:
    from finestep.bench.compare import run_bench
    from finestep.bench.pipeline import bench_pipeline, pipeline_paths, prepare
    from finestep.train.config import load_train_config

    estimators = [name.strip() for name in args.estimators.split(",") if name.strip()]
    if args.tier is not None:  # the config's data.world_tier, and the hard tier's config unless one is given
        args.overrides = [*args.overrides, f"data.world_tier={args.tier}"]
        if args.tier == "hard" and args.config == DEFAULT_BENCH_CONFIG:
            args.config = HARD_BENCH_CONFIG
    common = list(args.overrides)
    if args.model is None:  # SQLWorld: one world and one warm start shared by every run
        expected = pipeline_paths(args.out)
        config = load_train_config(args.config, [f"data.path={expected['world']}", f"model.path={expected['sft']}",
                                                 *args.overrides])  # fmt: skip
        console.print(f"preparing the world ({config.data.world_tier} tier) and the warm start (shared by every run)")
        with stage_reporter(console) as say:
            pipeline = bench_pipeline(config.data.world_tier, args.world_seed)
            paths = prepare(args.out, pipeline, config.rollout, say)
        common = [f"data.path={paths['world']}", f"model.path={paths['sft']}", *common]
    else:
        common = [f"model.path={args.model}", *common]
    total = len(estimators) * args.seeds
    with _progress(console) as progress:
        bar = progress.add_task("bench", total=total)

        def finished(name: str, seed: int, run: dict) -> None:
            progress.advance(bar)
            final = run["final"]
            progress.console.print(
                f"{name:28s} seed {seed}: EX {final.get('ex', 0):5.1f}  tool calls {final.get('tool_calls', 0):.2f}  "
                f"redundant {final.get('redundant_rate', 0):.3f}  errors {final.get('error_rate', 0):.3f}  "
                f"{run['wall_time']:.0f} s", highlight=False)

        max_steps = load_train_config(args.config, common).trainer.max_steps
        tenth = max(1, max_steps // 10)

        def stepped(name: str, seed: int, metrics: dict) -> None:
            step = int(metrics["step"])
            progress.update(bar, description=f"{name} seed {seed} step {step}/{max_steps}")
            if not console.is_terminal and step % tenth == 0:  # piped: a line each tenth of a run (no live bar)
                progress.console.print(
                    f"{name:28s} seed {seed}: step {step}/{max_steps}  EX of samples {metrics.get('ex', 0):5.1f}  "
                    f"tool calls {metrics.get('tool_calls', 0):.2f}", highlight=False)

        secondary = None if args.secondary == "none" else args.secondary
        run_bench(args.config, args.out, estimators, args.seeds, common, finished, stepped, jobs=args.jobs,
                  secondary=secondary, world_seed=args.world_seed, secondary_tasks=args.secondary_tasks)  # fmt: skip
    console.print((args.out / "results.md").read_text(encoding="utf-8"), markup=False, highlight=False)
    console.print(f"wrote {args.out / 'results.json'}, {args.out / 'learning_curves.png'}, "
                  f"{args.out / 'diagnostics.png'}")
    return 0


def add_demo_parser(commands: argparse._SubParsersAction) -> None:
    """Register the ``demo`` sub-command: its flags, help text and handler."""
    dm = commands.add_parser(
        "demo", help="SQLWorld end to end: world, tiny model, SFT, FineStep RL, before/after report and viewer",
        description="Build SQLWorld, train a tiny model from scratch (tokenizer, SFT warm start, FineStep RL) and "
        "evaluate it before and after on held-out questions (new questions on the training databases); writes report.md (with plots) and trajectories.html.",
    )  # fmt: skip
    dm.add_argument("--out", type=Path, default=Path("runs/demo"), help="output folder (default runs/demo)")
    dm.add_argument("--quick", action="store_true", help="a smaller world and budget: about 2 minutes")
    dm.set_defaults(handler=_cmd_demo)


def add_bench_parser(commands: argparse._SubParsersAction) -> None:
    """Register the ``bench`` sub-command: its flags, help text and handler."""
    from finestep.credit import ABLATIONS, ESTIMATORS  # the finestep-<ablation> names

    bn = commands.add_parser(
        "bench", help="compare estimators from one warm start with one budget, over seeds",
        description="Run every estimator (and FineStep ablations such as finestep-no_logical) from the same "
        "warm-started model with the same budget and seeds; writes results.json, results.md and learning_curves.png.",
        epilog=f"estimators: {', '.join(ESTIMATORS)} and finestep-<ablation> with ablation "
        f"one of {', '.join(name for name in ABLATIONS if name != 'full')} (finestep-v1: FineStep version 1)",
    )  # fmt: skip
    bn.add_argument("--estimators", default="grpo,finestep", help="comma-separated names (default grpo,finestep)")
    bn.add_argument("--seeds", type=_positive_int, default=3, help="seeds per estimator (default 3)")
    bn.add_argument("--out", type=Path, default=Path("runs/bench"), help="output folder (default runs/bench)")
    bn.add_argument("--config", type=Path, default=DEFAULT_BENCH_CONFIG,
                    help="base RL config (default configs/sqlworld-tiny.yaml; configs/sqlworld-hard.yaml with --tier hard)")
    bn.add_argument("--model", type=Path, help="start every run from this checkpoint instead of SQLWorld's warm "
                    "start (e.g. with --config configs/spider-tiny.yaml model.init=pretrained)")
    bn.add_argument("--world-seed", type=_non_negative_int, default=0, help="SQLWorld's generator seed (default 0)")
    bn.add_argument("--tier", choices=["default", "hard"], help="SQLWorld's tier (sets data.world_tier; default: the "
                    "config's, default in sqlworld-tiny.yaml, hard in sqlworld-hard.yaml); hard: questions that need "
                    "3-4 look-ups, 8 turns")
    bn.add_argument("--jobs", type=_positive_int, default=1, help="runs at once, each in its own process with one thread "
                    "(default 1; e.g. 2 on 2 cores)")
    bn.add_argument("--secondary", default="none", choices=["none", "valid", "heldout", "test"],
                    help="SQLWorld: a second split every final model and the warm start are also evaluated on "
                    "(the first is data.eval_split; default none)")
    bn.add_argument("--secondary-tasks", type=_positive_int, help="questions of the secondary split evaluated "
                    "(default: data.max_eval_tasks; e.g. data.max_eval_tasks=96 for valid's curves, --secondary-tasks 384 held out)")
    bn.add_argument("overrides", nargs="*", metavar="key=value", help="overrides for every run (the budget)")
    bn.set_defaults(handler=_cmd_bench)
