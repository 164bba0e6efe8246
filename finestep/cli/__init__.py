"""The ``finestep`` command line: one sub-command per job, each a thin layer over the library.

Plugins (``FINESTEP_PLUGINS=mod1,mod2``, ``--plugin MOD``) are imported before the parser is built, so the
choices and help it shows (estimators, protocols, benchmarks) come from the registries, plugins' entries included.

Each sub-command's handler and flags live together in one module: ``evaluate`` (eval, sql), ``training``
(credit, train, sft), ``agent`` (agent-eval, ask) and ``sqlworld`` (demo, bench); ``common`` holds the argument
types and helpers they share. This module builds the parser from them and runs the chosen handler.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from rich.console import Console
from rich.markup import escape

from finestep import __version__
from finestep.cli.agent import add_agent_eval_parser, add_ask_parser
from finestep.cli.common import _plugin_arguments, default_spider_dir
from finestep.cli.db import add_db_parser
from finestep.cli.evaluate import add_eval_parser, add_sql_parser
from finestep.cli.sqlworld import PlainProgress, add_bench_parser, add_demo_parser
from finestep.cli.training import add_credit_parser, add_sft_parser, add_train_parser
from finestep.data.task import DataError
from finestep.plugins import load_plugins, plugins_from_env

__all__ = ["PlainProgress", "build_parser", "default_spider_dir", "main"]


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every sub-command."""
    parser = argparse.ArgumentParser(
        prog="finestep",
        description="Train and evaluate tool-integrated Text-to-SQL agents with step-level credit assignment.",
    )
    parser.add_argument("--version", action="version", version=f"finestep {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    add_eval_parser(commands)
    add_sql_parser(commands)
    add_db_parser(commands)
    add_credit_parser(commands)
    add_train_parser(commands)
    add_agent_eval_parser(commands)
    add_ask_parser(commands)
    add_sft_parser(commands)
    add_demo_parser(commands)
    add_bench_parser(commands)
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
