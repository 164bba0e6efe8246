"""The plan of the scripted SQLWorld expert: which actions it takes, with configurable, realistic imperfections.

Clean behaviour: a tier1 task is answered at once (the gold query as the solution); a tier2 or tier3 task
probes the stored values first (``SELECT DISTINCT c FROM t``), then answers. Imperfections, each drawn
independently per trajectory:

- ``skip_probe`` (``p_skip_probe``, tiers 2 and 3): no probe; the answer uses the question's surface value,
  which is wrong exactly where the task's probe is required;
- ``wasted_probe`` (``p_wasted_probe``): a first probe of a column the question does not need;
- ``redundant_probe`` (``p_redundant_probe``): the last probe issued again, verbatim;
- ``fail_repair`` (``p_fail_repair``): a query with a misspelled column (the probe's, or the answer tried as
  a tool call), then the right one.

A hard-tier task (:attr:`TaskMeta.lookups`) is planned the same way with one look-up per fact (in the order of
``lookups``): ``skip_probe`` leaves out one look-up (the answer then uses that fact as the question says it),
``fail_repair`` misspells the column of one look-up (or the answer), and the clean plan is 4 or 5 turns.

A trajectory has at most ``max_steps`` turns: an imperfection that would exceed it is left out. This module
plans the ``(kind, sql, role)`` turns only; ``finestep.agent.expert`` writes them in the protocol and plays them
in the environment (``finestep.env``), one line of the trajectory JSONL format per trajectory.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from finestep.atomic import atomic_write_text
from finestep.data.sqlworld.questions import misspell
from finestep.data.sqlworld.world import TaskMeta
from finestep.data.task import Task
from finestep.sql.compare import results_match
from finestep.sql.executor import execute_on

__all__ = ["ExpertConfig", "clean_expert", "expert_plan", "solution_correct", "write_jsonl"]


@dataclass(frozen=True)
class ExpertConfig:
    """How imperfect the scripted expert is.

    Attributes:
        p_redundant_probe: chance of issuing the last probe a second time.
        p_fail_repair: chance of a failing query (misspelled column) followed by its repair.
        p_skip_probe: chance of answering a tier2/tier3 task without probing (with the surface value).
        p_wasted_probe: chance of a probe the question does not need.
        seed: the default seed of :func:`expert_dataset`.
        max_steps: the most turns in a trajectory (the rollout's ``max_turns``).
        reasoning: prefix each action with a short fixed sentence (``"Check values."``).
        protocol: the action protocol the step texts are written in.
    """

    p_redundant_probe: float = 0.2
    p_fail_repair: float = 0.15
    p_skip_probe: float = 0.15
    p_wasted_probe: float = 0.3
    seed: int = 0
    max_steps: int = 4
    reasoning: bool = False
    protocol: str = "tags"

    def __post_init__(self) -> None:
        for name in ("p_redundant_probe", "p_fail_repair", "p_skip_probe", "p_wasted_probe"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"ExpertConfig.{name} must be in [0, 1], got {value!r}")
        if self.max_steps < 2:
            raise ValueError(f"ExpertConfig.max_steps must be at least 2, got {self.max_steps!r}")


clean_expert = ExpertConfig(0.0, 0.0, 0.0, 0.0)
"""The expert without imperfections: its answers are all correct."""


def expert_plan(
    task: Task, meta: TaskMeta, config: ExpertConfig, rng: random.Random
) -> tuple[list[tuple[str, str, str]], list[str]]:
    """The ``(kind, sql, role)`` turns of one trajectory and the imperfections applied (module docstring).

    ``kind`` is ``sql`` or ``solution``; ``role`` one of ``probe``, ``wasted_probe``, ``redundant_probe``,
    ``failing_probe``, ``failing_query``, ``solution``. Five draws from ``rng`` per call, whatever the config
    (seven for a hard-tier task). Raises ValueError if even the clean plan has more than ``max_steps`` turns.
    """
    draws = [rng.random() for _ in range(5)]  # always five draws, so one behaviour never shifts another's
    if meta.lookups:
        return _hard_plan(task, meta, config, draws + [rng.random(), rng.random()])
    has_probe = meta.probe_sql is not None
    skip = has_probe and draws[0] < config.p_skip_probe
    answer = meta.skip_probe_sql if skip else task.gold_sql
    plan: list[tuple[str, str, str]] = []
    behaviours = ["skip_probe"] if skip else []
    if has_probe and not skip:
        plan.append(("sql", str(meta.probe_sql), "probe"))

    def room() -> bool:
        return len(plan) + 2 <= config.max_steps  # the new turn and the solution

    if draws[1] < config.p_wasted_probe and room():
        plan.insert(0, ("sql", meta.distractor_probe_sql, "wasted_probe"))
        behaviours.append("wasted_probe")
    if draws[2] < config.p_redundant_probe and plan and room():
        plan.append(("sql", plan[-1][1], "redundant_probe"))
        behaviours.append("redundant_probe")
    if draws[3] < config.p_fail_repair and room():
        if has_probe and not skip and meta.failing_probe_sql and draws[4] < 0.5:
            at = next(i for i, step in enumerate(plan) if step[2] == "probe")
            plan.insert(at, ("sql", meta.failing_probe_sql, "failing_probe"))
        else:
            plan.append(("sql", misspell(answer, *meta.misspelling), "failing_query"))
        behaviours.append("fail_repair")
    plan.append(("solution", answer, "solution"))
    return plan, behaviours


def _hard_plan(
    task: Task, meta: TaskMeta, config: ExpertConfig, draws: list[float]
) -> tuple[list[tuple[str, str, str]], list[str]]:
    """:func:`expert_plan` for a task with several look-ups (``draws``: seven numbers in [0, 1))."""
    lookups = meta.lookups
    if len(lookups) + 1 > config.max_steps:
        raise ValueError(
            f"task {task.id} needs {len(lookups) + 1} turns ({len(lookups)} look-ups and the answer) but "
            f"ExpertConfig.max_steps is {config.max_steps}; use max_steps >= 5 for the hard tier"
        )
    skipped = int(draws[5] * len(lookups)) if draws[0] < config.p_skip_probe else None
    answer = task.gold_sql if skipped is None else lookups[skipped].skip_sql
    plan = [("sql", x.probe_sql, "probe") for k, x in enumerate(lookups) if k != skipped]
    behaviours = [] if skipped is None else ["skip_probe"]

    def room() -> bool:
        return len(plan) + 2 <= config.max_steps  # the new turn and the solution

    if draws[1] < config.p_wasted_probe and room():
        plan.insert(int(draws[6] * (len(plan) + 1)), ("sql", meta.distractor_probe_sql, "wasted_probe"))
        behaviours.append("wasted_probe")
    if draws[2] < config.p_redundant_probe and plan and room():
        plan.append(("sql", plan[-1][1], "redundant_probe"))
        behaviours.append("redundant_probe")
    if draws[3] < config.p_fail_repair and room():
        probes = [i for i, step in enumerate(plan) if step[2] == "probe"]
        if probes and draws[4] < 0.5:
            at = probes[int(draws[6] * len(probes))]
            failing = next(x.failing_probe_sql for x in lookups if x.probe_sql == plan[at][1])
            plan.insert(at, ("sql", failing, "failing_probe"))
        else:
            plan.append(("sql", misspell(answer, *meta.misspelling), "failing_query"))
        behaviours.append("fail_repair")
    plan.append(("solution", answer, "solution"))
    return plan, behaviours


def solution_correct(line: dict[str, Any], metric: str = "bird") -> bool:
    """Whether a trajectory's final solution returns the gold result (a missing or failing one does not)."""
    steps = line.get("steps") or []
    if not steps or steps[-1].get("kind") != "solution":
        return False
    pred, gold = execute_on(line["db_path"], [steps[-1]["sql"], line["gold_sql"]])
    if not gold.ok:
        raise ValueError(f"{line.get('task_id')}: the gold query fails: {gold.error}")
    return results_match(pred.rows if pred.ok else None, gold.rows, line["gold_sql"], metric)


def write_jsonl(path: Path | str, lines: list[dict[str, Any]]) -> Path:
    """Write ``lines`` as JSON Lines, atomically."""
    return atomic_write_text(path, "".join(json.dumps(line, ensure_ascii=False) + "\n" for line in lines))
