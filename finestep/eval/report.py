"""Showing evaluation results: rich tables for the terminal."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from finestep.data.bird import BIRD_LEVELS
from finestep.data.spider import SPIDER_LEVELS
from finestep.eval.execution import EvalReport

__all__ = ["print_eval_report"]

_LEVEL_ORDER = {level: i for i, level in enumerate(SPIDER_LEVELS + BIRD_LEVELS)}


def print_eval_report(report: EvalReport, console: Console, by: str = "auto") -> None:
    """Print EX overall and per difficulty (``by='difficulty'``) or per database (``by='database'``)."""
    if by == "auto":
        by = "difficulty" if any(s.difficulty for s in report.scored) else "database"
    key = "difficulty" if by == "difficulty" else "db_id"
    groups = report.breakdown(key)
    names = sorted(groups, key=lambda n: (_LEVEL_ORDER.get(n, len(_LEVEL_ORDER)), n))
    table = Table(title=f"{report.benchmark} EX ({report.metric} metric)")
    table.add_column(by)
    table.add_column("questions", justify="right")
    table.add_column("EX %", justify="right")
    for name in names:
        table.add_row(name, str(groups[name]["n"]), f"{groups[name]['ex']:.1f}")
    table.add_section()
    table.add_row("[bold]all[/bold]", f"[bold]{len(report.scored)}[/bold]", f"[bold]{report.ex:.1f}[/bold]")
    console.print(table)
    if report.variant:
        console.print(f"scored as {report.variant}", highlight=False)
    missing = len(report.missing)
    if missing:
        console.print(
            f"[yellow]{missing} question{'s' if missing != 1 else ''} without a prediction: not scored (EX is over "
            f"the {len(report.scored)} questions given)[/yellow]"
        )
    unavailable = len(report.scores) - len(report.scored) - missing
    if unavailable:
        console.print(
            f"{unavailable} question{'s' if unavailable != 1 else ''} unavailable "
            f"(database file missing: {', '.join(report.unavailable_databases)})"
        )
    errors = sum(1 for s in report.scored if s.error and s.error.startswith("gold"))
    if errors:
        console.print(f"[yellow]{errors} gold queries failed to run; those questions count as wrong[/yellow]")
    console.print(f"scored in {report.elapsed_s:.2f} s on {report.workers} worker(s)")
