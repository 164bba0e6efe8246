"""`finestep credit`: rewards and step advantages of a trajectory file, as JSONL and as readable tables."""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table
from rich.text import Text

from finestep.config import apply_overrides
from finestep.credit import CreditConfig, compute_advantages
from finestep.rewards import RewardConfig, score_record, step_batch
from finestep.rewards.records import read_trajectories
from finestep.sql.executor import shared_sandbox

__all__ = ["InspectConfig", "inspect_credit", "print_credit_tables", "resolve_overrides"]


@dataclass(frozen=True)
class InspectConfig:
    """The credit estimator's config and the reward config, overridable as ``key=value``."""

    credit: CreditConfig = field(default_factory=CreditConfig)
    rewards: RewardConfig = field(default_factory=RewardConfig)


def resolve_overrides(overrides: list[str]) -> list[str]:
    """Accept bare credit keys (``beta=0``) as shorthand for ``credit.beta=0``."""
    credit_keys = {f.name for f in fields(CreditConfig)}
    return [f"credit.{item}" if item.split("=", 1)[0] in credit_keys else item for item in overrides]


def _finite(values: np.ndarray | None, index: int) -> float | None:
    if values is None:
        return None
    value = float(values[index])
    return value if math.isfinite(value) else None


def inspect_credit(
    path: str | Path, estimator: str, overrides: list[str], db_root: str | Path | None = None
) -> list[dict[str, Any]]:
    """Score every trajectory of ``path`` (``finestep.rewards``' one scoring path, anchors included) and compute
    step advantages with ``estimator``.

    Returns the input lines (as dicts, in input order) with ``outcome`` and the steps' ``process_reward`` and
    ``links`` filled in where they were missing, and ``process_rewards`` (per rule, ``None`` where the reward was
    given), ``step_returns`` (``process``, ``smoothed_process``, ``outcome``) and ``advantages`` added, one entry
    per step. Relative ``db_path`` values are resolved against ``db_root`` (default: the file's folder).
    """
    config = apply_overrides(InspectConfig(), resolve_overrides([f"estimator={estimator}", *overrides]))
    sandbox = shared_sandbox()
    records = read_trajectories(path, db_root)
    scored = [score_record(record, sandbox, config.rewards) for record in records]
    result = compute_advantages(step_batch(scored), config.credit)
    lines = []
    flat = 0
    for record, s in zip(records, scored):
        line = dict(record.raw)
        line["outcome"] = s.outcome
        line["steps"] = [
            {**step, "process_reward": s.process_reward[t], "links": s.links[t]}
            for t, step in enumerate(record.steps)
        ]
        line["process_rewards"] = s.rule_values
        line["step_returns"], line["advantages"] = [], []
        for _ in record.steps:
            line["step_returns"].append({
                "process": _finite(result.process_return, flat),
                "smoothed_process": _finite(result.smoothed_process_return, flat),
                "outcome": _finite(result.outcome_return, flat),
            })  # fmt: skip
            line["advantages"].append(_finite(result.advantages, flat))
            flat += 1
        lines.append(line)
    return lines


def _fmt(value: float | None) -> str:
    return "" if value is None else f"{value:+.3f}"


def _advantage_cell(value: float | None) -> Text:
    if value is None:
        return Text("")
    style = "green" if value > 1e-9 else "red" if value < -1e-9 else "dim"
    return Text(f"{value:+.3f}", style=style)


def print_credit_tables(lines: list[dict[str, Any]], console: Console, sql_width: int = 48) -> None:
    """One table per task: each trajectory's steps with their rules, returns and advantages."""
    tasks: dict[str, list[dict[str, Any]]] = {}
    for line in lines:
        tasks.setdefault(line["task_id"], []).append(line)
    for task_id, group in tasks.items():
        table = Table(title=f"task {task_id}: {len(group)} trajectories", title_justify="left", expand=False)
        for name, justify in (("traj", "left"), ("R", "right"), ("t", "right"), ("kind", "left"),
                              ("sql", "left"), ("rules fired", "left"), ("r", "right"), ("links", "left"),
                              ("P~", "right"), ("O", "right"), ("A", "right")):  # fmt: skip
            table.add_column(name, justify=justify, overflow="fold" if name == "sql" else "ellipsis")
        for line in group:
            for t, step in enumerate(line["steps"]):
                rules = line["process_rewards"][t]
                fired = (
                    "(given)" if rules is None
                    else " ".join(f"{name}{value:+.1f}" for name, value in rules.items() if value != 0.0)
                )  # fmt: skip
                sql = (step.get("sql") or "").replace("\n", " ")
                returns = line["step_returns"][t]
                table.add_row(
                    line["trajectory_id"] if t == 0 else "", _fmt(line["outcome"]) if t == 0 else "", str(t),
                    step["kind"], sql[:sql_width] + ("..." if len(sql) > sql_width else ""), fired,
                    _fmt(step["process_reward"]), ",".join(map(str, step["links"])),
                    _fmt(returns["smoothed_process"]), _fmt(returns["outcome"]),
                    _advantage_cell(line["advantages"][t]),
                )  # fmt: skip
            table.add_section()
        console.print(table)
