"""SQLWorld: a bundled synthetic Text-to-SQL benchmark where probing the data is sometimes needed, sometimes not.

Small databases over six domains store categorical values in one of four styles (as the question says them,
lower case, upper case or codes), so whether a ``SELECT DISTINCT`` probe is needed can only be known by
looking. Questions come in three tiers (filter/count, value probe, join + probe); ``build_world(..., tier="hard")``
builds a long-horizon world instead (hardened databases, three or four look-ups per question:
``finestep.data.sqlworld.hard``). A scripted expert writes
trajectories with configurable imperfections (redundant probes, failed queries and their repair, skipped
probes, wasted probes) for a warm start (planned by ``expert_plan``, played in the environment by
``finestep.agent.expert``); ``oracle_labels`` says which steps of any trajectory were good or bad.

    world = build_world(Path("runs/world"), seed=0)
    lines = expert_dataset(world, "train", n_per_task=2, config=ExpertConfig())  # finestep.agent.expert
    write_jsonl(Path("runs/expert.jsonl"), lines)
"""

from __future__ import annotations

from finestep.data.sqlworld.domains import CATEGORIES, DOMAINS, STYLES
from finestep.data.sqlworld.expert import (
    ExpertConfig,
    clean_expert,
    expert_plan,
    solution_correct,
    write_jsonl,
)
from finestep.data.sqlworld.hard import HARD_TIER, Lookup
from finestep.data.sqlworld.oracle import LABEL_VALUES, OracleLabel, label_values, oracle_labels
from finestep.data.sqlworld.world import SPLITS, TIERS, WORLD_TIERS, TaskMeta, World, build_world, load_world

__all__ = [
    "CATEGORIES",
    "DOMAINS",
    "HARD_TIER",
    "LABEL_VALUES",
    "SPLITS",
    "STYLES",
    "TIERS",
    "WORLD_TIERS",
    "ExpertConfig",
    "Lookup",
    "OracleLabel",
    "TaskMeta",
    "World",
    "build_world",
    "clean_expert",
    "expert_plan",
    "label_values",
    "load_world",
    "oracle_labels",
    "solution_correct",
    "write_jsonl",
]
