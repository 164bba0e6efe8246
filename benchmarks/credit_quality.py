"""Credit quality of every estimator on SQLWorld: does a step known to be good get a higher advantage than a
step known to be bad? No training.

Groups of G episodes per task are sampled from (a) the scripted expert with its default imperfections and, with
``--model DIR``, (b) a warm-started model at temperature 1 through the RL trainer's rollout code. Episodes are
scored as training scores them (``score_episodes``), cut into batches of ``--batch-tasks`` tasks (an RL step's
batch), and every registered estimator and every FineStep ablation (``finestep-<name>``) is run on the same
``StepBatch``. Each step is labelled good / bad / neutral by ``finestep.data.sqlworld.oracle_labels`` (the
world's truth); ``finestep.eval.credit_quality`` gives, per estimator: ``auc_group`` (good-vs-bad pairs of a
task's group), ``auc_within`` (pairs of one trajectory; 0.5 for outcome-only estimators by construction) and
``bad_positive_share`` (bad steps pushed up: advantage > 0). Writes ``benchmarks/results/credit_quality.json``
(atomically) and prints a table.

    .venv/bin/python benchmarks/credit_quality.py [--world DIR] [--model DIR] [--tasks 128] [--group-size 8]
"""

from __future__ import annotations

import argparse
import datetime
import random
import shlex
import sys
import tempfile
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import numpy as np

from finestep.agent.expert import expert_trajectory
from finestep.agent.protocol import get_protocol
from finestep.agent.rollout import RolloutConfig
from finestep.agent.trajectory import Step, Trajectory
from finestep.atomic import atomic_write_json
from finestep.credit import ESTIMATORS, CreditConfig, compute_advantages
from finestep.credit import config as credit_config
from finestep.data.sqlworld import (
    ExpertConfig,
    World,
    build_world,
    load_world,
    oracle_labels,
)
from finestep.data.task import Task
from finestep.eval.credit_quality import bad_positive_share, pairwise_auc
from finestep.rewards import RewardConfig, score_episodes
from finestep.sql.compare import results_match
from finestep.sql.executor import SqlSandbox, shared_sandbox
from finestep.train.batch import credit_rollout
from finestep.train.config import load_train_config

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results" / "credit_quality.json"
DEFAULT_CONFIG = ROOT / "configs" / "sqlworld-tiny.yaml"
LATER_IS_BETTER = "later_is_better"  # the position-only reference: A = -(steps after this one)
BASELINES = ("grpo", "grpo_shaped", "rloo", "gigpo", "ps_grpo")
COLUMNS = ("auc_group", "auc_within", "bad_positive_share", "auc_group_tool_calls", "auc_within_tool_calls")


# Candidate settings of FineStep's rewards and credit (issue 19), measured before any RL run: each re-scores the
# same episodes with its rewards.* overrides (every estimator sees those rewards) and gives its credit.*
# overrides to the `finestep` variant only (the baselines and ablations keep their own settings).
_MEASURED_UNGATED: dict[str, tuple[str, ...]] = {
    "executes_ok=0": ("rewards.process.executes_ok=0",),
    "reveals_gold": ("rewards.process.reveals_gold=0.3",),
    "reveals_gold+executes_ok=0": ("rewards.process.reveals_gold=0.3", "rewards.process.executes_ok=0"),
    "reveals_gold+executes_ok=0+lam=1": ("rewards.process.reveals_gold=0.3", "rewards.process.executes_ok=0",
                                         "credit.lam=1.0"),
    "reveals_gold+executes_ok=0+gamma_p=0": ("rewards.process.reveals_gold=0.3", "rewards.process.executes_ok=0",
                                             "credit.gamma_p=0"),
    "reveals_gold+executes_ok=0+beta=0": ("rewards.process.reveals_gold=0.3", "rewards.process.executes_ok=0",
                                          "credit.beta=0"),
    "reveals_gold+executes_ok=0+v1": ("rewards.process.reveals_gold=0.3", "rewards.process.executes_ok=0",
                                      "credit.outcome_norm=steps", "credit.process_scale=group"),
    "equal=batch": ("credit.equal_outcome=batch",),
    "uncentred": ("credit.process_center=false",),
    "equal=batch+uncentred": ("credit.equal_outcome=batch", "credit.process_center=false"),
    "reveals_gold+executes_ok=0+equal=batch": ("rewards.process.reveals_gold=0.3", "rewards.process.executes_ok=0",
                                               "credit.equal_outcome=batch"),
    "reveals_gold+executes_ok=0+uncentred": ("rewards.process.reveals_gold=0.3", "rewards.process.executes_ok=0",
                                             "credit.process_center=false"),
    "reveals_gold+executes_ok=0+equal=batch+uncentred": (
        "rewards.process.reveals_gold=0.3", "rewards.process.executes_ok=0", "credit.equal_outcome=batch",
        "credit.process_center=false"),
    "reveals_gold+repairs+executes_ok=0+equal=batch+uncentred": (
        "rewards.process.reveals_gold=0.3", "rewards.process.repairs=0.3", "rewards.process.executes_ok=0",
        "credit.equal_outcome=batch", "credit.process_center=false"),
    "reveals_gold+repairs+executes_ok=0+equal=batch+uncentred+beta=0": (
        "rewards.process.reveals_gold=0.3", "rewards.process.repairs=0.3", "rewards.process.executes_ok=0",
        "credit.equal_outcome=batch", "credit.process_center=false", "credit.beta=0"),
    "reveals_gold+repairs+executes_ok=0+equal=batch+uncentred+lam=1": (
        "rewards.process.reveals_gold=0.3", "rewards.process.repairs=0.3", "rewards.process.executes_ok=0",
        "credit.equal_outcome=batch", "credit.process_center=false", "credit.lam=1.0"),
    "reveals_gold+repairs+executes_ok=0+equal=batch": (
        "rewards.process.reveals_gold=0.3", "rewards.process.repairs=0.3", "rewards.process.executes_ok=0",
        "credit.equal_outcome=batch"),
    "reveals_gold+repairs+executes_ok=0+equal=batch+gamma_p=0": (
        "rewards.process.reveals_gold=0.3", "rewards.process.repairs=0.3", "rewards.process.executes_ok=0",
        "credit.equal_outcome=batch", "credit.gamma_p=0"),
    "reveals_gold+repairs+executes_ok=0+equal=batch+uncentred+gamma_p=0": (
        "rewards.process.reveals_gold=0.3", "rewards.process.repairs=0.3", "rewards.process.executes_ok=0",
        "credit.equal_outcome=batch", "credit.process_center=false", "credit.gamma_p=0"),
}  # fmt: skip
# Those candidates were measured before the gate became FineStep's default (2026-12-06): they keep version 2's
# ungated process term, so the documented tables reproduce; "default" is today's default (gated).
CANDIDATES: dict[str, tuple[str, ...]] = {
    "default": (),
    "ungated": ("credit.equal_outcome_process=1",),
    **{name: (*overrides, "credit.equal_outcome_process=1") for name, overrides in _MEASURED_UNGATED.items()},
    "reveals_gold+executes_ok=0+gated": ("rewards.process.reveals_gold=0.3", "rewards.process.executes_ok=0",
                                         "credit.equal_outcome_process=0"),
    "reveals_gold+executes_ok=0+gamma_p=0+gated": ("rewards.process.reveals_gold=0.3", "rewards.process.executes_ok=0",
                                                   "credit.gamma_p=0", "credit.equal_outcome_process=0"),
}  # fmt: skip


def credit_variants() -> dict[str, CreditConfig]:
    """Every registered estimator with its defaults, then ``finestep-<name>`` for every FineStep ablation
    (read from the registries at call time, so new estimators and ablations are included)."""
    variants = {name: CreditConfig(estimator=name) for name in ESTIMATORS}
    for name in credit_config.ABLATIONS:
        variants[f"finestep-{name}"] = CreditConfig.ablation(name)
    return variants


# --- sampling ---------------------------------------------------------------------------------------------


def expert_rollout(
    world: World, tasks: Sequence[Task], group_size: int, seed: int, sandbox: SqlSandbox, expert: ExpertConfig
) -> list[Trajectory]:
    """``group_size`` scripted-expert episodes per task (task by task), their SQL executed in the sandbox.

    Episodes are :class:`Trajectory` records without tokens (rewards and credit do not read tokens); sample
    ``k`` of a task is the one ``expert_dataset(..., seed=seed)`` writes as its ``k``-th.
    """
    protocol = get_protocol(expert.protocol)
    trajectories = []
    for task in tasks:
        for k in range(group_size):
            rng = random.Random(f"expert:{seed}:{task.id}:{k}")
            line = expert_trajectory(task, world.meta[task.id], expert, rng, f"expert-{k}", sandbox)
            steps = []
            for entry in line["steps"]:
                action = protocol.parse_action(entry["text"])
                step = Step(entry["text"], action, (0, 0))
                if action.sql and action.error is None:
                    step.result = sandbox.execute(task.db_path, action.sql)
                steps.append(step)
            end = "solution" if steps and steps[-1].action.kind == "solution" else "max_turns"
            trajectories.append(Trajectory(task, k, 0, [], [], steps, end))
    return trajectories


def model_rollout(
    model_dir: Path, tasks: Sequence[Task], config: RolloutConfig, sandbox: SqlSandbox, seed: int, batch_tasks: int
) -> list[Trajectory]:
    """Episodes of a saved model, sampled as the RL trainer samples them (``rollout`` with a seeded generator),
    ``batch_tasks`` tasks at a time."""
    import torch

    from finestep.agent.generators import get_generator
    from finestep.agent.rollout import rollout
    from finestep.models import load_model, load_tokenizer

    model, tokenizer = load_model(model_dir), load_tokenizer(model_dir)
    model.eval()
    generator = get_generator("hf", model=model, tokenizer=tokenizer)
    protocol = get_protocol(config.protocol)
    rng = torch.Generator().manual_seed(seed)
    trajectories: list[Trajectory] = []
    for start in range(0, len(tasks), batch_tasks):
        trajectories += rollout(tasks[start : start + batch_tasks], generator, protocol, sandbox, config, rng)
    return trajectories


# --- credit and labels ------------------------------------------------------------------------------------


@dataclass
class SourceSteps:
    """The labelled steps of one source, flat: labels, reasons, group and trajectory keys, advantages."""

    labels: list[int] = field(default_factory=list)
    reasons: list[str] = field(default_factory=list)
    tool_call: list[bool] = field(default_factory=list)
    groups: list[np.ndarray] = field(default_factory=list)
    trajs: list[np.ndarray] = field(default_factory=list)
    advantages: dict[str, list[np.ndarray]] = field(default_factory=dict)
    n_trajectories: int = 0
    n_solved: int = 0
    n_tool_calls: int = 0

    def extend(self, other: SourceSteps, group_offset: int, traj_offset: int) -> None:
        self.labels += other.labels
        self.reasons += other.reasons
        self.tool_call += other.tool_call
        self.groups += [g + group_offset for g in other.groups]
        self.trajs += [t + traj_offset for t in other.trajs]
        for name, arrays in other.advantages.items():
            self.advantages.setdefault(name, []).extend(arrays)
        self.n_trajectories += other.n_trajectories
        self.n_solved += other.n_solved
        self.n_tool_calls += other.n_tool_calls


def credit_source(
    trajectories: Sequence[Trajectory],
    world: World,
    sandbox: SqlSandbox,
    rewards: RewardConfig,
    variants: dict[str, CreditConfig],
    batch_size: int,
    shown_rows: int,
) -> SourceSteps:
    """Score, credit (every variant on one ``StepBatch`` per ``batch_size`` trajectories) and label the steps."""
    out = SourceSteps()
    groups = trajs = 0
    for start in range(0, len(trajectories), batch_size):
        chunk = trajectories[start : start + batch_size]
        scores = score_episodes(chunk, sandbox, rewards)
        batch, _ = credit_rollout(chunk, scores, CreditConfig())
        out.groups.append(batch.step_group + groups)
        out.trajs.append(batch.traj + trajs)
        groups, trajs = groups + batch.n_groups, trajs + batch.n_traj
        for name, config in variants.items():
            out.advantages.setdefault(name, []).append(compute_advantages(batch, config).advantages)
        # A reference that knows nothing but position: the later a step, the higher its "advantage".
        out.advantages.setdefault(LATER_IS_BETTER, []).append(-batch.remaining.astype(np.float64))
        for traj, score in zip(chunk, scores):
            task = traj.task
            gold = sandbox.execute(task.db_path, task.gold_sql)
            views = [s.reward_view() for s in traj.steps]
            matches = [
                v.kind == "sql" and v.result is not None and v.result.ok
                and results_match(v.result.rows, gold.rows, task.gold_sql, rewards.outcome.metric)
                for v in views
            ]  # fmt: skip
            labels = oracle_labels(views, world.meta[task.id], score.correct, matches, shown_rows)
            out.labels += [label.value for label in labels]
            out.reasons += [f"{label.label}:{label.reason}" for label in labels]
            out.tool_call += [v.kind == "sql" for v in views]
            out.n_solved += score.correct
            out.n_tool_calls += sum(v.kind == "sql" for v in views)
        out.n_trajectories += len(chunk)
    return out


def _number(x: float) -> float | None:
    return None if np.isnan(x) else round(float(x), 4)


def quality(source: SourceSteps) -> dict[str, Any]:
    """Per variant: auc_group, auc_within, bad_positive_share and the mean advantage per label reason."""
    labels = np.array(source.labels, dtype=np.int64)
    groups = np.concatenate(source.groups) if source.groups else np.zeros(0, np.int64)
    trajs = np.concatenate(source.trajs) if source.trajs else np.zeros(0, np.int64)
    reasons = np.array(source.reasons, dtype=object)
    tool_labels = np.where(np.array(source.tool_call, dtype=bool), labels, 0)  # pairs of two tool calls only
    estimators: dict[str, Any] = {}
    references: dict[str, Any] = {}
    pairs_group = pairs_within = tool_pairs_group = tool_pairs_within = 0
    for name, arrays in source.advantages.items():
        adv = np.concatenate(arrays)
        auc_g, pairs_group = pairwise_auc(adv, labels, groups)
        auc_w, pairs_within = pairwise_auc(adv, labels, trajs)
        tool_g, tool_pairs_group = pairwise_auc(adv, tool_labels, groups)
        tool_w, tool_pairs_within = pairwise_auc(adv, tool_labels, trajs)
        row = {
            "auc_group": _number(auc_g), "auc_within": _number(auc_w),
            "bad_positive_share": _number(bad_positive_share(adv, labels)),
            "auc_group_tool_calls": _number(tool_g), "auc_within_tool_calls": _number(tool_w),
            "mean_advantage_by_reason": {r: _number(adv[reasons == r].mean()) for r in sorted(set(source.reasons))},
        }  # fmt: skip
        (references if name == LATER_IS_BETTER else estimators)[name] = row
    counts = Counter(source.reasons)
    return {
        "estimators": estimators,
        "references": references,
        "n_steps": len(source.labels),
        "n_labelled": int(np.count_nonzero(labels)),
        "n_pairs_group": pairs_group,
        "n_pairs_within": pairs_within,
        "n_pairs_group_tool_calls": tool_pairs_group,
        "n_pairs_within_tool_calls": tool_pairs_within,
        "n_trajectories": source.n_trajectories,
        "n_groups": int(np.unique(groups).size),
        "ex": _number(100.0 * source.n_solved / max(1, source.n_trajectories)),
        "tool_calls_per_trajectory": _number(source.n_tool_calls / max(1, source.n_trajectories)),
        "label_counts": {k: int(np.sum(labels == v)) for k, v in (("good", 1), ("bad", -1), ("neutral", 0))},
        "reason_counts": dict(sorted(counts.items())),
    }


# --- main -------------------------------------------------------------------------------------------------


def _table(title: str, result: dict[str, Any]) -> Any:
    from rich.table import Table

    table = Table(title=title)
    for col in ("estimator", *COLUMNS):
        table.add_column(col.replace("_tool_calls", " (tools)"), justify="left" if col == "estimator" else "right")
    for name, row in [*result["estimators"].items(), *((f"({k})", v) for k, v in result["references"].items())]:
        table.add_row(name, *("-" if row[k] is None else f"{row[k]:.3f}" for k in COLUMNS))
    return table


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; returns the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--world", type=Path, help="an existing SQLWorld folder (default: build a small one)")
    parser.add_argument("--world-dbs", type=int, default=24, help="training databases of the world built "
                        "when --world is not given")  # fmt: skip
    parser.add_argument("--model", type=Path, help="a warm-started (SFT) model folder to sample from as well")
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG,
                        help="RL config whose rollout and rewards settings are used")  # fmt: skip
    parser.add_argument("--tasks", type=int, default=128, help="training tasks (a seeded sample)")
    parser.add_argument("--group-size", type=int, default=8, help="G, episodes per task and source")
    parser.add_argument("--batch-tasks", type=int, default=4, help="tasks per StepBatch (an RL step's batch)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the task sample, the expert and sampling")
    parser.add_argument("--out", type=Path, default=RESULTS, help="JSON result file")
    parser.add_argument("--candidates", default="default",
                        help=f"comma-separated candidate settings to measure, or 'all' ({', '.join(CANDIDATES)}); "
                        "the first is the one reported at the top level")  # fmt: skip
    args = parser.parse_args(argv)
    candidates = list(CANDIDATES) if args.candidates == "all" else [c.strip() for c in args.candidates.split(",")]
    unknown = [c for c in candidates if c not in CANDIDATES]
    if not candidates or unknown:
        parser.error(f"--candidates: unknown {unknown}; choose from {list(CANDIDATES)} or 'all'")
    if min(args.tasks, args.group_size, args.batch_tasks, args.world_dbs) < 1:
        parser.error("--tasks, --group-size, --batch-tasks and --world-dbs must be >= 1")

    from rich.console import Console

    console = Console(width=max(Console().width, 132))
    overrides = [f"model.path={args.model}"] if args.model else ["model.init=tiny"]
    train_config = load_train_config(args.config, overrides)
    rollout_config = replace(train_config.rollout, group_size=args.group_size, temperature=1.0)
    with tempfile.TemporaryDirectory(prefix="credit-quality-") as tmp:
        if args.world is not None:
            world = load_world(args.world)
            world_info = {"path": str(args.world), "seed": world.seed, "built": False}
        else:
            world = build_world(Path(tmp) / "world", seed=args.seed, n_train_dbs=args.world_dbs, n_test_dbs=0)
            world_info = {"path": None, "seed": args.seed, "built": True, "n_train_dbs": args.world_dbs}
        pool = world.split("train")
        tasks = sorted(random.Random(f"credit-quality:{args.seed}").sample(pool, min(args.tasks, len(pool))),
                       key=lambda t: t.index)  # fmt: skip
        sandbox = shared_sandbox()
        variants = credit_variants()
        expert = ExpertConfig(seed=args.seed, max_steps=rollout_config.max_turns, protocol=rollout_config.protocol)
        sampled = {"expert": expert_rollout(world, tasks, args.group_size, args.seed, sandbox, expert)}
        if args.model is not None:
            console.print(f"sampling {len(tasks)} x {args.group_size} episodes from {args.model}")
            sampled["model"] = model_rollout(args.model, tasks, rollout_config, sandbox, args.seed, args.batch_tasks)
        batch_size = args.batch_tasks * args.group_size
        measured = {}
        for candidate in candidates:
            config = load_train_config(args.config, [*overrides, *CANDIDATES[candidate]])
            chosen = {**variants, "finestep": config.credit.with_overrides(estimator="finestep")}
            steps = {
                name: credit_source(trajs, world, sandbox, config.rewards, chosen, batch_size,
                                    rollout_config.observation_rows)
                for name, trajs in sampled.items()
            }  # fmt: skip
            measured[candidate] = _summarize(steps)
    by_source, top = measured[candidates[0]]
    result = {
        "benchmark": "credit_quality",
        "estimators": top["estimators"],
        **{k: v for k, v in top.items() if k != "estimators"},
        "pooled_over": list(sampled),
        "by_source": by_source,
        "candidates": {name: {"overrides": list(CANDIDATES[name]), "estimators": pooled["estimators"],
                              "by_source": {k: v["estimators"] for k, v in sources.items()}}
                       for name, (sources, pooled) in measured.items()},
        "variants": {name: {f.name: getattr(c, f.name) for f in fields(c)} for name, c in variants.items()},
        "tasks": len(tasks),
        "group_size": args.group_size,
        "batch_tasks": args.batch_tasks,
        "seed": args.seed,
        "world": world_info,
        "model": str(args.model) if args.model else None,
        "config": _shown(args.config),
        "command": shlex.join(["benchmarks/credit_quality.py", *(sys.argv[1:] if argv is None else argv)]),
        "date": datetime.date.today().isoformat(),
    }  # fmt: skip
    atomic_write_json(args.out, result)
    for name, res in by_source.items():
        console.print(_table(f"{name}: {res['n_labelled']} labelled steps of {res['n_trajectories']} episodes "
                             f"(EX {res['ex']}%)", res))  # fmt: skip
    if len(sampled) > 1:
        console.print(_table(f"pooled: {top['n_labelled']} labelled steps", top))
    if len(candidates) > 1:
        console.print(candidates_markdown(result), markup=False)
    console.print(f"wrote {args.out}")
    return 0


def _summarize(steps: dict[str, SourceSteps]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Quality per source, and pooled over the sources (the one source's when there is one)."""
    by_source = {name: quality(source) for name, source in steps.items()}
    if len(steps) == 1:
        return by_source, next(iter(by_source.values()))
    pooled = SourceSteps()
    for source in steps.values():
        pooled.extend(source, _n_keys(pooled.groups), _n_keys(pooled.trajs))
    return by_source, quality(pooled)


def candidates_markdown(result: dict[str, Any]) -> str:
    """The candidates of a result file as a markdown table: FineStep's AUCs, all steps and tool calls only, its
    bad_positive_share, the best baseline's AUCs and GRPO's bad share, per source, and whether it beats them."""
    lines = [("| candidate | source | finestep auc_group / auc_within | (tools) | bad+ | best baseline | grpo bad+ "
             "| beats all |"), "| --- | --- | --- | --- | --- | --- | --- | --- |"]  # fmt: skip
    for name, candidate in result["candidates"].items():
        for source, rows in candidate["by_source"].items():
            fs, grpo = rows["finestep"], rows["grpo"]
            best_g = max(rows[b]["auc_group"] or 0 for b in BASELINES)
            best_w = max(rows[b]["auc_within"] or 0 for b in BASELINES)
            beats = (fs["auc_group"] > best_g and fs["auc_within"] > best_w
                     and fs["bad_positive_share"] <= grpo["bad_positive_share"] + 0.05)  # fmt: skip
            lines.append(f"| {name} | {source} | {fs['auc_group']:.3f} / {fs['auc_within']:.3f} | "
                         f"{fs['auc_group_tool_calls']:.3f} / {fs['auc_within_tool_calls']:.3f} | "
                         f"{fs['bad_positive_share']:.3f} | {best_g:.3f} / {best_w:.3f} | "
                         f"{grpo['bad_positive_share']:.3f} | {'**yes**' if beats else 'no'} |")  # fmt: skip
    return "\n".join(lines)


def _shown(path: Path) -> str:
    """``path`` relative to the repository when it lies inside it."""
    try:
        return str(path.resolve().relative_to(ROOT))
    except ValueError:
        return str(path)


def _n_keys(arrays: list[np.ndarray]) -> int:
    """One more than the largest key so far (0 when none): the offset that keeps the next source's keys apart."""
    return int(max((a.max() for a in arrays if a.size), default=-1)) + 1


if __name__ == "__main__":
    sys.exit(main())
