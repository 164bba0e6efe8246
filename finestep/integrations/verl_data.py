"""BIRD or Spider questions as verl's RL data (parquet): one row per question, for the ``finestep_sql`` agent loop.

    python -m finestep.integrations.verl_data --benchmark bird --data /data/bird/train --split train.json \\
        --out /data/verl/bird_train.parquet --max-turns 5

Each row holds verl's columns: ``prompt`` (the chat: FineStep's protocol instructions, then the schema, evidence
and question, as ``finestep.agent.protocol.build_messages`` writes them), ``agent_name`` (``finestep_sql``),
``data_source``, ``ability``, ``reward_model`` (the gold SQL, for verl's bookkeeping) and ``extra_info`` with what
the loop needs: ``db_path`` (absolute: every node of a cluster must see the databases at that path), ``gold_sql``,
``question``, ``evidence``, ``task_id``, ``db_id``, ``index``. Questions whose database is missing, whose gold
query fails in the sandbox or returns no rows (an empty answer would earn full reward; ``--keep-empty-gold``
keeps them), are left out (counted on stderr).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from finestep.agent.protocol import PROTOCOLS, build_messages
from finestep.data import load_bird, load_spider
from finestep.data.task import Task
from finestep.sql.executor import shared_sandbox
from finestep.sql.schema import schema_prompt

__all__ = ["build_rows", "main"]


def build_rows(
    tasks: Sequence[Task],
    benchmark: str,
    max_turns: int = 5,
    protocol: str = "tags",
    schema_sample_values: int = 3,
    schema_max_chars: int = 12_000,
    check_gold: bool = True,
    workers: int | None = None,
    drop_empty_gold: bool = True,
) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """verl rows for the available tasks, and counts of the tasks left out (``missing_database``, ``gold_fails``,
    ``gold_empty``: with ``drop_empty_gold``, those whose gold query returns no rows)."""
    available = [t for t in tasks if t.available]
    skipped = {"missing_database": len(tasks) - len(available), "gold_fails": 0, "gold_empty": 0}
    if check_gold:
        results = shared_sandbox().execute_many([(t.db_path, t.gold_sql) for t in available], workers=workers)
        skipped["gold_fails"] = sum(not r.ok for r in results)
        if drop_empty_gold:
            skipped["gold_empty"] = sum(r.ok and not r.rows for r in results)
        available = [t for t, r in zip(available, results) if r.ok and (r.rows or not drop_empty_gold)]
    schemas: dict[Path, str] = {}
    rows = []
    for index, task in enumerate(available):
        if task.db_path not in schemas:
            schemas[task.db_path] = schema_prompt(task.db_path, schema_sample_values, schema_max_chars)
        rows.append({
            "data_source": f"finestep/{benchmark}",
            "agent_name": "finestep_sql",
            "ability": "text2sql",
            "prompt": build_messages(task.question, schemas[task.db_path], task.evidence, max_turns, protocol),
            "reward_model": {"style": "rule", "ground_truth": task.gold_sql},
            "extra_info": {
                "index": index, "task_id": task.id, "db_id": task.db_id, "db_path": str(task.db_path.resolve()),
                "gold_sql": task.gold_sql, "question": task.question, "evidence": task.evidence,
            },
        })  # fmt: skip
    return rows, skipped


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: write one parquet file of verl rows."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--benchmark", choices=("bird", "spider"), required=True)
    parser.add_argument("--data", required=True, help="the benchmark folder (questions and databases)")
    parser.add_argument("--split", default=None, help="question file inside --data (bird: train.json or "
                        "dev.json; spider: train_spider.json or dev.json)")  # fmt: skip
    parser.add_argument("--out", required=True, help="parquet file to write")
    parser.add_argument("--max-turns", type=int, default=5, help="turn limit stated in the prompt; keep it equal "
                        "to actor_rollout_ref.rollout.multi_turn.max_assistant_turns")  # fmt: skip
    parser.add_argument("--protocol", default="tags", choices=sorted(PROTOCOLS))
    parser.add_argument("--schema-sample-values", type=int, default=3)
    parser.add_argument("--schema-max-chars", type=int, default=12_000)
    parser.add_argument("--limit", type=int, default=None, help="first N questions only")
    parser.add_argument("--no-check-gold", action="store_true", help="do not run the gold queries first")
    parser.add_argument("--keep-empty-gold", action="store_true",
                        help="keep questions whose gold query returns no rows (left out by default)")
    args = parser.parse_args(argv)

    if args.benchmark == "bird":
        bench = load_bird(args.data, args.split)
    else:
        bench = load_spider(args.data, args.split or "dev.json")
    tasks = bench.tasks[: args.limit] if args.limit else bench.tasks
    rows, skipped = build_rows(tasks, args.benchmark, args.max_turns, args.protocol, args.schema_sample_values,
                               args.schema_max_chars, check_gold=not args.no_check_gold,
                               drop_empty_gold=not args.keep_empty_gold)  # fmt: skip
    import pandas as pd  # a verl dependency

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_parquet(out)
    print(f"{out}: {len(rows)} rows; left out: {skipped}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
