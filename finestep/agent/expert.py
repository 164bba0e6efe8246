"""The scripted SQLWorld expert as an agent: its planned turns, written in the protocol and played in the environment.

``finestep.data.sqlworld.expert_plan`` decides the turns (a probe when needed, and the configured imperfections);
here each turn is written as the protocol's action text (optionally after a short fixed sentence of reasoning)
and stepped through the SQL environment (``finestep.env``), exactly as a model's turn would be: the environment
parses it back, runs its SQL and ends the episode on the solution. The output is one line of the trajectory
JSONL format (``docs/trajectories.md``) without observations (SFT replays the line through the environment
again); each step also records its ``role`` and the line its ``behaviours``.
"""

from __future__ import annotations

import random
from typing import Any

from finestep.agent.trajectory import END_SOLUTION
from finestep.data.sqlworld.expert import ExpertConfig, expert_plan
from finestep.data.sqlworld.world import TaskMeta, World
from finestep.data.task import Task
from finestep.env import SqlEnv
from finestep.sql.executor import SqlSandbox, shared_sandbox

__all__ = ["expert_dataset", "expert_trajectory"]

DEFAULT_EXPERT = ExpertConfig()

_REASONS = {
    "probe": "Check values.",
    "wasted_probe": "Check values.",
    "redundant_probe": "Check values.",
    "failing_probe": "Check values.",
    "failing_query": "Try it.",
    "solution": "Answer.",
}


def expert_trajectory(
    task: Task,
    meta: TaskMeta,
    config: ExpertConfig = DEFAULT_EXPERT,
    rng: random.Random | None = None,
    trajectory_id: str = "expert-0",
    sandbox: SqlSandbox | None = None,
) -> dict[str, Any]:
    """One expert trajectory of ``task`` as a trajectory-JSONL line (see the module docstring).

    Raises RuntimeError if the environment reads a turn differently from the plan (a protocol bug).
    """
    rng = rng if rng is not None else random.Random(f"expert:{config.seed}:{task.id}")
    env = SqlEnv(config.protocol, sandbox, max_turns=config.max_steps)
    env.reset(task)
    plan, behaviours = expert_plan(task, meta, config, rng)
    steps = []
    for kind, sql, role in plan:
        action = env.protocol.render_action(kind, sql)  # type: ignore[arg-type]
        text = f"{_REASONS[role]} {action}" if config.reasoning else action
        played = env.step(text).step.action
        if (played.kind, played.sql) != (kind, sql):
            raise RuntimeError(f"task {task.id}: the environment read {played} from the expert's turn {text!r}")
        steps.append({"kind": kind, "sql": sql, "text": text, "role": role})
    if env.trajectory.end_reason != END_SOLUTION or not env.done:
        raise RuntimeError(f"task {task.id}: the expert's episode did not end with its solution")
    return {
        "task_id": task.id, "trajectory_id": trajectory_id, "db_path": str(task.db_path), "gold_sql": task.gold_sql,
        "question": task.question, "difficulty": meta.tier, "probe_required": meta.probe_required,
        "behaviours": behaviours, "steps": steps,
    }  # fmt: skip


def expert_dataset(
    world: World,
    split: str = "train",
    n_per_task: int = 2,
    config: ExpertConfig = DEFAULT_EXPERT,
    seed: int | None = None,
) -> list[dict[str, Any]]:
    """``n_per_task`` expert trajectories per task of ``split``, in task order; deterministic per seed.

    ``seed`` defaults to ``config.seed``; each trajectory has its own generator, seeded by the seed, the task
    and the sample, so a subset of tasks gets the same trajectories as in the whole set.
    """
    seed = config.seed if seed is None else seed
    sandbox = shared_sandbox()
    lines = []
    for task in world.split(split):
        for k in range(n_per_task):
            rng = random.Random(f"expert:{seed}:{task.id}:{k}")
            lines.append(expert_trajectory(task, world.meta[task.id], config, rng, f"expert-{k}", sandbox))
    return lines
