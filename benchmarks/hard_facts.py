"""Which facts a model gets right on SQLWorld's hard tier: greedy episodes on a split, then, per fact kind
(``value``, ``date``, ``unit``), the share of answers that write the fact as the database stores it.

A hard question needs three or four facts (docs/sqlworld.md); an answer is right only if all are. This splits a
low EX into its parts: did the model look the fact up, and did it copy it into the answer? Run it on a training
sample and on ``valid`` to tell memorization (train far above valid) from a fact the model cannot copy.

    .venv/bin/python benchmarks/hard_facts.py --world runs/bench-hard36/world --model runs/bench-hard36/model-sft \
        --split valid --tasks 192 --out benchmarks/results/hard_facts.json
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path
from typing import Any

from finestep.atomic import atomic_write_json
from finestep.data.sqlworld import load_world
from finestep.data.sqlworld.hard import Lookup


def fact_written(lookup: Lookup, solution: str) -> bool:
    """Whether ``solution`` (SQL) writes the fact as stored: a value or date pattern as a quoted literal, a money
    threshold as the number after ``>``."""
    if lookup.kind == "unit":
        return re.search(rf">\s*{re.escape(lookup.stored)}(?![\d.])", solution) is not None
    return f"'{lookup.stored}'" in solution


def fact_table(tasks: list[Any], meta: dict[str, Any], solutions: list[str | None], looked_up: list[set[str]]) -> dict[str, Any]:
    """Per fact kind: facts, share written as stored in the final answer, share whose column was looked up.

    ``solutions[i]`` is task i's submitted SQL (``None``: no answer); ``looked_up[i]`` the ``table.column`` names
    its tool calls read (lower case).
    """
    table: dict[str, dict[str, float]] = {}
    for task, solution, seen in zip(tasks, solutions, looked_up):
        for lookup in meta[task.id].lookups:
            row = table.setdefault(lookup.kind, {"facts": 0, "written": 0, "looked_up": 0})
            row["facts"] += 1
            row["written"] += bool(solution) and fact_written(lookup, solution or "")
            row["looked_up"] += f"{lookup.table}.{lookup.column}".lower() in seen
    return {kind: {"facts": int(r["facts"]), "written": r["written"] / r["facts"], "looked_up": r["looked_up"] / r["facts"]}
            for kind, r in sorted(table.items())}  # fmt: skip


def _columns_read(sql: str) -> set[str]:
    """``table.column`` for a look-up of the form ``SELECT [DISTINCT] col FROM tab ...`` (lower case)."""
    match = re.match(r"\s*select\s+(?:distinct\s+)?(\w+)\s+from\s+(\w+)", sql, re.IGNORECASE)
    return {f"{match.group(2)}.{match.group(1)}".lower()} if match else set()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--world", type=Path, required=True, help="a hard-tier SQLWorld folder")
    parser.add_argument("--model", type=Path, required=True, help="the model folder (e.g. the bench's model-sft)")
    parser.add_argument("--config", type=Path, default=Path("configs/sqlworld-hard.yaml"), help="rollout settings")
    parser.add_argument("--split", default="valid", help="the world's split (train: every k-th task, see --tasks)")
    parser.add_argument("--tasks", type=int, default=192, help="questions (a spread sample of the split)")
    parser.add_argument("--out", type=Path, help="JSON result file")
    args = parser.parse_args(argv)

    from finestep.bench.pipeline import evaluate_model
    from finestep.train.config import load_train_config

    world = load_world(args.world)
    if world.tier != "hard":
        parser.error(f"--world: {args.world} is a {world.tier!r} world; this measures the hard tier's facts")
    split = world.split(args.split)
    if args.tasks < 1 or not split:
        parser.error(f"--tasks must be >= 1 and split {args.split!r} non-empty ({len(split)} tasks)")
    tasks = split[:: max(1, len(split) // args.tasks)][: args.tasks]
    config = load_train_config(args.config, [f"data.path={args.world}", f"model.path={args.model}"])
    metrics, trajectories = evaluate_model(args.model, tasks, config.rollout)
    solutions = [next((s.action.sql for s in reversed(t.steps) if s.action.kind == "solution"), None) for t in trajectories]
    looked_up = [set().union(*[_columns_read(s.action.sql or "") for s in t.steps if s.action.kind == "sql"]) for t in trajectories]
    facts = fact_table(tasks, world.meta, solutions, looked_up)
    result = {"world": str(args.world), "model": str(args.model), "split": args.split, "n_tasks": len(tasks),
              "ex": metrics["ex"], "tool_calls": metrics["tool_calls"], "facts": facts,
              "command": "benchmarks/hard_facts.py " + " ".join(argv if argv is not None else __import__("sys").argv[1:])}  # fmt: skip
    print(f"{args.split}: {len(tasks)} questions, EX {metrics['ex']:.1f}, tool calls {metrics['tool_calls']:.2f}")
    print("| fact | facts | looked up | written as stored |\n| --- | --- | --- | --- |")
    for kind, row in facts.items():
        print(f"| {kind} | {row['facts']} | {row['looked_up']:.3f} | {row['written']:.3f} |")
    if args.out:
        atomic_write_json(args.out, result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
