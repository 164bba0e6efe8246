"""The ``finestep`` command line: one sub-command per job, each a thin layer over the library.

Plugins (``FINESTEP_PLUGINS=mod1,mod2``, ``--plugin MOD``) are imported before the parser is built, so the
choices and help it shows (estimators, protocols, benchmarks) come from the registries, plugins' entries included.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TextIO

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from finestep import __version__
from finestep.data.task import DataError
from finestep.plugins import load_plugins, plugins_from_env

__all__ = ["build_parser", "default_spider_dir", "main"]


def default_spider_dir() -> Path:
    """Spider's folder: ``$FINESTEP_SPIDER_DIR``, else ``../shared/data/spider``."""
    return Path(os.environ.get("FINESTEP_SPIDER_DIR", "../shared/data/spider"))


def _bounded(kind: type, low: float, strict: bool = False) -> Callable[[str], float]:
    """An argparse ``type``: ``kind(text)``, finite and ``>= low`` (``> low`` when ``strict``)."""
    noun = "an integer" if kind is int else "a number"
    wanted = f"{noun} {'>' if strict else '>='} {low:g}"

    def parse(text: str) -> float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {wanted}, got {text!r}") from None
        if not math.isfinite(value) or value < low or (strict and value == low):
            raise argparse.ArgumentTypeError(f"expected {wanted}, got {text!r}")
        return value

    parse.__name__ = f"{kind.__name__} {'>' if strict else '>='} {low:g}"
    return parse


_positive_int = _bounded(int, 1)
_non_negative_int = _bounded(int, 0)
_positive_float = _bounded(float, 0, strict=True)
_non_negative_float = _bounded(float, 0)


def _check_output(path: Path | None, flag: str, folder: bool = False) -> None:
    """Refuse, before any work is done, an output path that cannot be written: a folder where a file is
    expected (or the reverse), or one below a file."""
    if path is None:
        return
    if path.exists() and path.is_dir() != folder:
        raise DataError(f"{flag} {path}: is a {'file' if folder else 'folder'}; expected a {'folder' if folder else 'file'} name")
    for ancestor in path.absolute().parents:
        if ancestor.exists():
            if not ancestor.is_dir():
                raise DataError(f"{flag} {path}: {ancestor} is a file, not a folder")
            if not os.access(ancestor, os.W_OK | os.X_OK):
                raise DataError(f"{flag} {path}: cannot write in {ancestor}")
            return


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
    given = sum(1 for t in benchmark.available if predictions[t.index] is not None)
    with _progress(console) as progress:
        bar = progress.add_task("scoring", total=given)
        report = score_predictions(
            benchmark, predictions, metric, limits, args.workers,
            on_progress=lambda n: progress.update(bar, completed=n), keep_distinct=args.keep_distinct,
        )  # fmt: skip
    print_eval_report(report, console, args.by)
    if args.out:
        atomic_write_json(args.out, report.to_json())
        console.print(f"wrote {args.out}")
    return 0


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


def _cmd_credit(args: argparse.Namespace, console: Console) -> int:
    import json

    from finestep.atomic import atomic_write_text
    from finestep.eval.credit_inspect import inspect_credit, print_credit_tables

    _check_output(args.out, "--out")
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
    _check_output(run_dir, "--resume" if args.resume else "--run-dir", folder=True)
    if args.resume:
        config = load_train_config(args.resume / "config.yaml", args.overrides, args.plugin)
    else:
        config = load_train_config(args.config, args.overrides, args.plugin)
    with console.status("setting up (data, model, tokenizer)..."):
        trainer = RLTrainer(config, run_dir, resume=bool(args.resume))
    console.print(
        f"run {run_dir}: {len(trainer.train_tasks)} training tasks, {len(trainer.eval_tasks)} held-out; "
        f"estimator {config.credit.estimator}; starting at step {trainer.step} of {config.trainer.max_steps}"
    )
    if trainer.gold_check is not None:
        dropped = ("both left out of training" if config.data.drop_empty_gold
                   else "the empty ones kept (data.drop_empty_gold=false), the failing left out")  # fmt: skip
        console.print(f"training data: {trainer.gold_check.summary()}; {dropped}", highlight=False)
    with _progress(console) as progress:
        bar = progress.add_task("training", total=config.trainer.max_steps, completed=trainer.step)

        def show(m: dict[str, float]) -> None:
            progress.update(bar, completed=int(m["step"]))
            progress.console.print(
                f"step {int(m['step']):4d}  reward {m['reward']:+.3f}  EX {m['ex']:5.1f}  tool calls "
                f"{m['tool_calls']:.2f}  redundant {m['redundant_rate']:.2f}  kl {m.get('approx_kl', 0.0):.4f}  "
                f"clip {m.get('clip_fraction', 0.0):.2f}  {m['tokens_per_s']:.0f} tok/s  {m['time_step']:.1f} s",
                highlight=False,
            )

        final = trainer.run(on_step=show)
    console.print(
        f"held-out: EX {final.get('ex', 0.0):.1f}  tool calls {final.get('tool_calls', 0.0):.2f}  "
        f"format failures {final.get('format_failure_rate', 0.0):.2f}; metrics in {run_dir / 'metrics.jsonl'}, "
        f"checkpoints in {run_dir / 'checkpoints'}"
    )
    return 0


def _load_agent(model_dir: Path, protocol_name: str, device: str) -> tuple[object, object, object]:
    from finestep.agent.generators import get_generator
    from finestep.agent.protocol import get_protocol
    from finestep.models import load_model, load_tokenizer
    from finestep.models.loading import resolve_device

    model = load_model(model_dir, device=resolve_device(device))
    tokenizer = load_tokenizer(model_dir)
    return get_generator("hf", model=model, tokenizer=tokenizer), get_protocol(protocol_name), model


def _agent_rollout_config(args: argparse.Namespace) -> object:
    from finestep.agent.rollout import RolloutConfig

    return RolloutConfig(
        group_size=1, max_turns=args.max_turns, max_new_tokens=args.max_new_tokens,
        max_total_tokens=args.max_total_tokens, temperature=args.temperature, protocol=args.protocol,
        schema_sample_values=args.schema_sample_values,
    )  # fmt: skip


def _sampling_config(args: argparse.Namespace) -> object:
    """The rollout settings of ``--samples``: the agent options, with temperature and top_p from ``--config``'s
    ``rollout`` section (RolloutConfig's defaults without one) unless ``--sample-temperature`` is given."""
    from dataclasses import replace

    from finestep.agent.rollout import RolloutConfig

    sampling = RolloutConfig()
    if args.config is not None:
        from finestep.train.config import load_train_config

        sampling = load_train_config(args.config, []).rollout
    temperature = args.sample_temperature if args.sample_temperature is not None else sampling.temperature
    if temperature <= 0:
        raise ValueError(f"--samples needs a sampling temperature above 0, got {temperature}")
    return replace(_agent_rollout_config(args), group_size=args.samples, temperature=temperature,
                   top_p=sampling.top_p)  # fmt: skip


def _cmd_agent_eval(args: argparse.Namespace, console: Console) -> int:
    from rich.table import Table

    from finestep.data import load_benchmark
    from finestep.eval.agent import run_agent_eval, run_sampled_eval
    from finestep.eval.report import print_eval_report

    data = args.data or (default_spider_dir() if args.benchmark == "spider" else None)
    if data is None:
        raise DataError("--data is required for --benchmark bird")
    benchmark = load_benchmark(args.benchmark, data)
    sampling = _sampling_config(args) if args.samples else None
    generator, protocol, _ = _load_agent(args.model, args.protocol, args.device)
    total = min(len(benchmark.available), args.limit or 10**9)
    summary = Table(title=f"{benchmark.name} EX over {total} questions")
    summary.add_column("answer")
    summary.add_column("EX %", justify="right")
    if args.greedy or not args.samples:
        with _progress(console) as progress:
            bar = progress.add_task("greedy episodes", total=total)
            report, efficiency = run_agent_eval(
                benchmark, generator, protocol, _agent_rollout_config(args), args.out, args.batch_tasks, args.limit,
                on_progress=lambda done, total: progress.update(bar, completed=done),
            )  # fmt: skip
        print_eval_report(report, console, "auto")
        console.print("efficiency: " + "  ".join(f"{k} {v:.3f}" for k, v in efficiency.items()), highlight=False)
        summary.add_row("greedy", f"{report.ex:.1f}")
    if sampling is not None:
        with _progress(console) as progress:
            bar = progress.add_task(f"{args.samples} sampled episodes per question", total=total)
            sampled = run_sampled_eval(
                benchmark, generator, protocol, sampling, args.out, args.batch_tasks, args.limit,
                on_progress=lambda done, total: progress.update(bar, completed=done),
            )  # fmt: skip
        summary.add_row(f"majority vote of {args.samples} (T={sampled.temperature:g})", f"{sampled.majority.ex:.1f}")
        for k, value in sampled.pass_at_k.items():
            summary.add_row(f"pass@{k}", f"{value:.1f}")
        console.print(summary)
        console.print("efficiency per sample: " + "  ".join(f"{k} {v:.3f}" for k, v in sampled.efficiency.items()),
                      highlight=False)  # fmt: skip
    console.print(f"wrote {args.out}/")
    return 0


def _cmd_ask(args: argparse.Namespace, console: Console) -> int:
    from finestep.eval.agent import ask

    generator, protocol, _ = _load_agent(args.model, args.protocol, args.device)
    shown = [0]

    def show(turn: int, trajectories: list) -> None:
        for step in trajectories[0].steps[shown[0] :]:
            console.rule(f"step {shown[0] + 1}")
            console.print(step.text, markup=False, highlight=False)
            if step.observation:
                console.print(step.observation, style="cyan", markup=False, highlight=False)
            shown[0] += 1

    trajectory = ask(args.question, args.db, generator, protocol, _agent_rollout_config(args), args.evidence, show)
    solution = trajectory.solution
    if solution is None:
        console.print(f"[yellow]no solution ({trajectory.end_reason})[/yellow]")
        return 1
    console.rule("answer")
    console.print(solution.action.sql, markup=False)
    if solution.result is not None:
        from finestep.agent.protocol import format_observation

        console.print(format_observation(solution.result), markup=False, highlight=False)
    return 0


def _cmd_sft(args: argparse.Namespace, console: Console) -> int:
    from finestep.agent.protocol import get_protocol
    from finestep.models import load_model, load_tokenizer
    from finestep.models.loading import resolve_device
    from finestep.sql.executor import SqlSandbox
    from finestep.train.sft import SFTConfig, build_sft_examples, load_sft_records, train_sft

    device = resolve_device(args.device)
    _check_output(args.out, "--out", folder=True)
    from finestep.agent.rollout import RolloutConfig

    config = SFTConfig(epochs=args.epochs, lr=args.lr, batch_size=args.batch_size)
    prompt = RolloutConfig(max_turns=args.max_turns, protocol=args.protocol, schema_style=args.schema_style,
                           brief_instructions=args.brief_instructions)  # fmt: skip
    tokenizer = load_tokenizer(args.model)
    model = load_model(args.model, device=device)
    records = load_sft_records(args.data, args.db_root)
    examples = build_sft_examples(records, tokenizer, get_protocol(args.protocol), prompt, SqlSandbox())
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    with _progress(console) as progress:
        bar = progress.add_task("SFT", total=None)

        def show(step: int, total: int, loss: float) -> None:
            progress.update(bar, total=total, completed=step, description=f"SFT loss {loss:.3f}")

        losses = train_sft(model, examples, config, int(pad or 0), device, on_step=show)
    tmp = args.out.with_name(f".{args.out.name}.tmp")
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    if args.out.exists():
        import shutil

        shutil.rmtree(args.out)
    os.replace(tmp, args.out)
    console.print(f"{len(examples)} trajectories, loss per epoch: {', '.join(f'{v:.3f}' for v in losses)}; "
                  f"saved {args.out}")  # fmt: skip
    return 0


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


def _cmd_demo(args: argparse.Namespace, console: Console) -> int:
    from rich.table import Table

    from finestep.bench.demo import DemoConfig, run_demo, summary_rows

    demo = DemoConfig.quick() if args.quick else DemoConfig.full()
    console.print(f"SQLWorld demo{' (quick)' if args.quick else ''} into {args.out}/")
    if console.is_terminal:
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

            summary = run_demo(args.out, demo, say)
    else:
        plain = PlainProgress(console.file)
        summary = run_demo(args.out, demo, plain)
        plain.close()
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
    from finestep.bench.pipeline import PipelineConfig, pipeline_paths, prepare
    from finestep.train.config import load_train_config

    estimators = [name.strip() for name in args.estimators.split(",") if name.strip()]
    common = list(args.overrides)
    if args.model is None:  # SQLWorld: one world and one warm start shared by every run
        expected = pipeline_paths(args.out)
        prompt = load_train_config(args.config, [f"data.path={expected['world']}", f"model.path={expected['sft']}",
                                                 *args.overrides]).rollout  # fmt: skip
        with console.status("preparing the world and the warm start (shared by every run)..."):
            paths = prepare(args.out, PipelineConfig(seed=args.world_seed), prompt, lambda m, f: None)
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

        def stepped(name: str, seed: int, metrics: dict) -> None:
            progress.update(bar, description=f"{name} seed {seed} step {int(metrics['step'])}")

        secondary = None if args.secondary == "none" else args.secondary
        run_bench(args.config, args.out, estimators, args.seeds, common, finished, stepped, jobs=args.jobs,
                  secondary=secondary, world_seed=args.world_seed)  # fmt: skip
    console.print((args.out / "results.md").read_text(encoding="utf-8"), markup=False, highlight=False)
    console.print(f"wrote {args.out / 'results.json'}, {args.out / 'learning_curves.png'}, "
                  f"{args.out / 'diagnostics.png'}")
    return 0


def _protocols() -> list[str]:
    from finestep.agent.protocol import PROTOCOLS

    return sorted(PROTOCOLS)


def _benchmarks() -> list[str]:
    from finestep.data import LOADERS

    return sorted(LOADERS)


def _estimators_help() -> str:
    from finestep.credit import ESTIMATORS, estimator_help

    return "; ".join(f"{name}: {estimator_help(name).rstrip('.')}" for name in ESTIMATORS).replace("``", "")


def _add_plugin_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--plugin", action="append", default=[], metavar="MOD",
                        help="import this module (or .py file) first: it may register estimators, process rules "
                        "or environments (repeatable; also FINESTEP_PLUGINS=mod1,mod2)")  # fmt: skip


class _HelpConfig(argparse.Action):
    """``--help-config``: print every config key with its default and help text, then exit (like ``--help``)."""

    def __init__(self, option_strings: Sequence[str], dest: str, **kwargs: object) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS,
                         help="print every config key with its default and help, and exit")  # fmt: skip

    def __call__(self, parser: argparse.ArgumentParser, *args: object, **kwargs: object) -> None:
        from finestep.config import format_config_help
        from finestep.train.config import TrainConfig

        print(format_config_help(TrainConfig))
        parser.exit()


def _plugin_arguments(argv: Sequence[str]) -> list[str]:
    """The ``--plugin`` values of a command line, read before the parser (whose choices they extend) exists."""
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--plugin", action="append", default=[])
    return list(pre.parse_known_args(list(argv))[0].plugin)


def _add_agent_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", type=Path, required=True, help="local Hugging Face model folder")
    parser.add_argument("--protocol", choices=_protocols(), default="tags", help="action format (default tags)")
    parser.add_argument("--max-turns", type=_positive_int, default=4, help="assistant turns at most (default 4)")
    parser.add_argument("--max-new-tokens", type=_positive_int, default=256, help="tokens per turn at most (default 256)")
    parser.add_argument("--max-total-tokens", type=_positive_int, default=2048, help="token budget per episode (default 2048)")
    parser.add_argument("--temperature", type=_non_negative_float, default=0.0, help="sampling temperature (default 0: greedy)")
    parser.add_argument("--schema-sample-values", type=_non_negative_int, default=3, help="sample values per column in the prompt")
    parser.add_argument("--device", default="auto", help="cpu, cuda or auto (default)")


def _workers_arg(text: str) -> str | int:
    """An argparse ``type``: ``auto`` or an integer >= 1."""
    return text if text == "auto" else int(_positive_int(text))


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
    ev.add_argument("--by", choices=["auto", "difficulty", "database"], default="auto", help="table breakdown")
    ev.set_defaults(handler=_cmd_eval)

    sq = commands.add_parser(
        "sql",
        help="run one query in the sandbox and print the observation the agent would see",
        description="Run one read-only, time-limited query and print exactly the agent's observation.",
    )
    sq.add_argument("--db", type=Path, required=True, help="SQLite database file")
    sq.add_argument("query", help="the SQL (or - to read it from standard input)")
    sq.add_argument("--timeout", type=_positive_float, default=5.0, help="seconds (default 5)")
    sq.add_argument("--max-rows", type=_positive_int, default=20, help="rows shown (default 20)")
    sq.add_argument("--turns-left", type=_non_negative_int, help="append the turns-left line as in a rollout")
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
    cr.add_argument("--estimator", default="finestep", metavar="NAME",
                    help=f"the credit estimator (default finestep), a registered name: {_estimators_help()}")
    _add_plugin_option(cr)
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
        epilog="overrides: e.g. trainer.max_steps=3 credit.estimator=grpo rollout.group_size=8 optim.lr=1e-5 "
        "(every key: finestep train --help-config)",
    )
    source = tr.add_mutually_exclusive_group(required=True)
    source.add_argument("--config", type=Path, help="YAML config (see configs/)")
    source.add_argument("--resume", type=Path, metavar="RUN_DIR", help="continue a run from its newest checkpoint")
    tr.add_argument("--run-dir", type=Path, default=Path("runs/train"), help="output folder (default runs/train)")
    tr.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides")
    tr.add_argument("--help-config", action=_HelpConfig)
    _add_plugin_option(tr)
    tr.set_defaults(handler=_cmd_train)

    ae = commands.add_parser(
        "agent-eval",
        help="run a trained agent on every task of a benchmark: trajectories, predictions, EX and efficiency",
        description="Run the agent (greedy by default) on every available task; write trajectories.jsonl, the "
        "predictions in the benchmark's own format (predictions.sql or predict_dev.json) and metrics.json.",
    )
    _add_agent_options(ae)
    ae.add_argument("--benchmark", choices=_benchmarks(), required=True)
    ae.add_argument("--data", type=Path, help="benchmark folder (Spider: default $FINESTEP_SPIDER_DIR)")
    ae.add_argument("--out", type=Path, default=Path("runs/agent-eval"), help="output folder")
    ae.add_argument("--limit", type=_positive_int, help="only the first N available tasks")
    ae.add_argument("--batch-tasks", type=_positive_int, default=16, help="tasks rolled out together (default 16)")
    ae.add_argument("--samples", type=_non_negative_int, default=0, metavar="K",
                    help="also sample K episodes per question: majority-vote EX, pass@k and efficiency per sample "
                    "(sampled_metrics.json, majority/ predictions); greedy only when --greedy is given too")
    ae.add_argument("--greedy", action="store_true", help="with --samples: run the greedy episodes as well")
    ae.add_argument("--config", type=Path, help="RL config whose rollout.temperature and rollout.top_p the samples "
                    "use (default: temperature 1.0, top_p 1.0)")
    ae.add_argument("--sample-temperature", type=_positive_float,
                    help="the samples' temperature (overrides --config)")
    ae.set_defaults(handler=_cmd_agent_eval)

    ak = commands.add_parser(
        "ask", help="answer one question on one database, showing each step as it happens",
        description="Answer one question with a trained agent and show every step: its text and observation.",
    )  # fmt: skip
    _add_agent_options(ak)
    ak.add_argument("--db", type=Path, required=True, help="SQLite database file")
    ak.add_argument("--evidence", default="", help="external knowledge to show with the question")
    ak.add_argument("question", help="the question")
    ak.set_defaults(handler=_cmd_ask)

    sf = commands.add_parser(
        "sft", help="supervised warm start on trajectories (loss on model tokens only)",
        description="Fine-tune a model on trajectories in the documented JSONL format (docs/trajectories.md).",
    )  # fmt: skip
    sf.add_argument("--model", type=Path, required=True, help="local Hugging Face model folder to start from")
    sf.add_argument("--data", type=Path, required=True, help="trajectory JSONL file")
    sf.add_argument("--out", type=Path, required=True, help="folder for the fine-tuned model (written atomically)")
    sf.add_argument("--db-root", type=Path, help="folder that relative db_path values start from")
    sf.add_argument("--epochs", type=_positive_int, default=3)
    sf.add_argument("--lr", type=_positive_float, default=1e-3)
    sf.add_argument("--batch-size", type=_positive_int, default=8)
    sf.add_argument("--max-turns", type=_positive_int, default=4, help="the turn count the prompt announces")
    sf.add_argument("--protocol", choices=_protocols(), default="tags")
    sf.add_argument("--schema-style", choices=["create", "compact"], default="create",
                    help="prompt schema as CREATE TABLE text or one line per table (use what training will use)")
    sf.add_argument("--brief-instructions", action="store_true", help="two-line system prompt (small models)")
    sf.add_argument("--device", default="auto")
    sf.set_defaults(handler=_cmd_sft)

    dm = commands.add_parser(
        "demo", help="SQLWorld end to end: world, tiny model, SFT, FineStep RL, before/after report and viewer",
        description="Build SQLWorld, train a tiny model from scratch (tokenizer, SFT warm start, FineStep RL) and "
        "evaluate it before and after on held-out questions (new questions on the training databases); writes report.md (with plots) and trajectories.html.",
    )  # fmt: skip
    dm.add_argument("--out", type=Path, default=Path("runs/demo"), help="output folder (default runs/demo)")
    dm.add_argument("--quick", action="store_true", help="a smaller world and budget: about 2 minutes")
    dm.set_defaults(handler=_cmd_demo)

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
    bn.add_argument("--config", type=Path, default=Path(__file__).resolve().parents[2] / "configs" / "sqlworld-tiny.yaml",
                    help="base RL config (default configs/sqlworld-tiny.yaml)")
    bn.add_argument("--model", type=Path, help="start every run from this checkpoint instead of SQLWorld's warm "
                    "start (e.g. with --config configs/spider-tiny.yaml model.init=pretrained)")
    bn.add_argument("--world-seed", type=_non_negative_int, default=0, help="SQLWorld's generator seed (default 0)")
    bn.add_argument("--jobs", type=_positive_int, default=1, help="runs at once, each in its own process with one thread "
                    "(default 1; e.g. 2 on 2 cores)")
    bn.add_argument("--secondary", default="none", choices=["none", "valid", "heldout", "test"],
                    help="SQLWorld: a second split every final model and the warm start are also evaluated on "
                    "(the first is data.eval_split; default none)")
    bn.add_argument("overrides", nargs="*", metavar="key=value", help="overrides for every run (the budget)")
    bn.set_defaults(handler=_cmd_bench)
    return parser


def _quiet_libraries() -> None:
    from finestep.models.loading import quiet_libraries

    quiet_libraries()


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``finestep`` console script; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        load_plugins(plugins_from_env() + _plugin_arguments(argv))
    except ValueError as exc:  # PluginError
        Console(stderr=True, soft_wrap=True).print(f"[red]error:[/red] {escape(str(exc))}", highlight=False)
        return 2
    args = build_parser().parse_args(argv)
    if args.command in ("train", "sft", "agent-eval", "ask", "demo", "bench"):
        _quiet_libraries()
    # Piped or under make, rich would assume 80 columns and fold the tables; logs read better wide.
    stream = sys.stderr if args.command == "sql" else sys.stdout
    console = Console(stderr=args.command == "sql", width=None if stream.isatty() else 150)
    try:
        return args.handler(args, console)
    except (DataError, ValueError, OSError) as exc:  # ConfigError is a ValueError; OSError names its file
        Console(stderr=True, soft_wrap=True).print(f"[red]error:[/red] {escape(str(exc))}", highlight=False)
        return 2
    except RecursionError:
        Console(stderr=True).print("[red]error:[/red] input nested too deeply to read", highlight=False)
        return 2
    except KeyboardInterrupt:
        Console(stderr=True).print("[red]interrupted[/red]")
        return 130


if __name__ == "__main__":
    sys.exit(main())
