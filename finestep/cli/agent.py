"""``finestep agent-eval`` (a trained agent on every task of a benchmark) and ``finestep ask`` (one question)."""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.console import Console

from finestep.cli.common import (
    _add_dtype_option,
    _benchmarks,
    _load_policy,
    _non_negative_float,
    _non_negative_int,
    _positive_float,
    _positive_int,
    _progress,
    _protocols,
    default_spider_dir,
)
from finestep.data.task import DataError


def _load_agent(model_dir: Path, protocol_name: str, device: str, dtype: str = "auto") -> tuple[object, object, object]:
    from finestep.agent.generators import get_generator
    from finestep.agent.protocol import get_protocol
    from finestep.models.loading import resolve_device

    model, tokenizer = _load_policy(model_dir, protocol_name, resolve_device(device), dtype)
    return get_generator("hf", model=model, tokenizer=tokenizer), get_protocol(protocol_name), model


def _agent_rollout_config(args: argparse.Namespace) -> object:
    from finestep.agent.rollout import RolloutConfig

    return RolloutConfig(
        group_size=1, max_turns=args.max_turns, max_new_tokens=args.max_new_tokens,
        max_total_tokens=args.max_total_tokens, temperature=args.temperature, protocol=args.protocol,
        schema_sample_values=args.schema_sample_values, schema_style=args.schema_style,
        brief_instructions=args.brief_instructions,
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
    generator, protocol, _ = _load_agent(args.model, args.protocol, args.device, args.dtype)
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

    generator, protocol, _ = _load_agent(args.model, args.protocol, args.device, args.dtype)
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


def _add_agent_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", type=Path, required=True, help="local Hugging Face model folder")
    parser.add_argument("--protocol", choices=_protocols(), default="tags", help="action format (default tags)")
    parser.add_argument("--max-turns", type=_positive_int, default=4, help="assistant turns at most (default 4)")
    parser.add_argument("--max-new-tokens", type=_positive_int, default=256, help="tokens per turn at most (default 256)")
    parser.add_argument("--max-total-tokens", type=_positive_int, default=2048, help="token budget per episode (default 2048)")
    parser.add_argument("--temperature", type=_non_negative_float, default=0.0, help="sampling temperature (default 0: greedy)")
    parser.add_argument("--schema-sample-values", type=_non_negative_int, default=3, help="sample values per column in the prompt")
    parser.add_argument("--schema-style", choices=["create", "compact"], default="create",
                        help="prompt schema as CREATE TABLE text or one line per table (what training used)")
    parser.add_argument("--brief-instructions", action="store_true",
                        help="the two-line system prompt (what small models are trained with: rollout.brief_instructions)")
    parser.add_argument("--device", default="auto", help="cpu, cuda or auto (default)")
    _add_dtype_option(parser)


def add_agent_eval_parser(commands: argparse._SubParsersAction) -> None:
    """Register the ``agent-eval`` sub-command: its flags, help text and handler."""
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


def add_ask_parser(commands: argparse._SubParsersAction) -> None:
    """Register the ``ask`` sub-command: its flags, help text and handler."""
    ak = commands.add_parser(
        "ask", help="answer one question on one database, showing each step as it happens",
        description="Answer one question with a trained agent and show every step: its text and observation.",
    )  # fmt: skip
    _add_agent_options(ak)
    ak.add_argument("--db", type=Path, required=True, help="SQLite database file")
    ak.add_argument("--evidence", default="", help="external knowledge to show with the question")
    ak.add_argument("question", help="the question")
    ak.set_defaults(handler=_cmd_ask)
