"""``finestep credit`` (rewards and step advantages of a trajectory file), ``finestep train`` (RL) and
``finestep sft`` (supervised warm start)."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from rich.console import Console

from finestep.cli.common import (
    _add_dtype_option,
    _add_plugin_option,
    _check_output,
    _estimators_help,
    _load_policy,
    _positive_float,
    _positive_int,
    _progress,
    _protocols,
)
from finestep.data.task import DataError


def _cmd_credit(args: argparse.Namespace, console: Console) -> int:
    import json

    from finestep.atomic import atomic_write_text
    from finestep.eval.credit_inspect import inspect_credit, print_credit_tables

    _check_output(args.out, "--out")
    lines = inspect_credit(args.input, args.estimator, args.overrides, args.db_root)
    if not lines:
        raise DataError(f"{args.input}: no trajectories in the file: nothing to credit (one JSON object per line, "
                        "docs/trajectories.md)")  # fmt: skip
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
    from finestep.train.config import load_train_config, precision_warning
    from finestep.train.rl import RLTrainer

    run_dir = args.resume or args.run_dir
    _check_output(run_dir, "--resume" if args.resume else "--run-dir", folder=True)
    if args.resume:
        config = load_train_config(args.resume / "config.yaml", args.overrides, args.plugin)
    else:
        config = load_train_config(args.config, args.overrides, args.plugin)
    warning = precision_warning(config)
    if warning:
        console.print(f"[yellow]warning:[/yellow] {warning}", highlight=False)
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
    if config.data.engine:
        from finestep.data.engines import reason_counts

        left = (f"; {len(trainer.not_on_engine)} tasks left out there {reason_counts(trainer.not_on_engine)}"
                if trainer.not_on_engine else "")  # fmt: skip
        console.print(f"engine {config.data.engine}: every database found{left}", highlight=False, soft_wrap=True)
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


def _cmd_sft(args: argparse.Namespace, console: Console) -> int:
    from finestep.agent.protocol import get_protocol
    from finestep.models.loading import resolve_device
    from finestep.sql.executor import shared_sandbox
    from finestep.train.sft import SFTConfig, build_sft_examples, load_sft_records, train_sft

    device = resolve_device(args.device)
    _check_output(args.out, "--out", folder=True)
    from finestep.agent.rollout import RolloutConfig

    config = SFTConfig(epochs=args.epochs, lr=args.lr, batch_size=args.batch_size)
    prompt = RolloutConfig(max_turns=args.max_turns, protocol=args.protocol, schema_style=args.schema_style,
                           brief_instructions=args.brief_instructions)  # fmt: skip
    model, tokenizer = _load_policy(args.model, args.protocol, device, args.dtype)
    records = load_sft_records(args.data, args.db_root)
    examples = build_sft_examples(records, tokenizer, get_protocol(args.protocol), prompt, shared_sandbox())
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


def add_credit_parser(commands: argparse._SubParsersAction) -> None:
    """Register the ``credit`` sub-command: its flags, help text and handler."""
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


def add_train_parser(commands: argparse._SubParsersAction) -> None:
    """Register the ``train`` sub-command: its flags, help text and handler."""
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


def add_sft_parser(commands: argparse._SubParsersAction) -> None:
    """Register the ``sft`` sub-command: its flags, help text and handler."""
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
    _add_dtype_option(sf)
    sf.set_defaults(handler=_cmd_sft)
