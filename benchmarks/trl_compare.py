"""FineStep against GRPO through TRL, from one warm start with one budget, next to the same estimators in our trainer.

    python benchmarks/trl_compare.py --world runs/bench-nd/world --model runs/bench-nd/model-sft \
        --out runs/trl-compare [--steps 120] [--estimators finestep,grpo] [--ours]

The warm start (the bench's SFT checkpoint) reads our rollouts' token layout; TRL's tool loop uses the chat
template's (an assistant message per turn, a tool message per observation), so the TRL runs start from the warm
start adapted to it: ``--adapt-epochs`` of SFT on the world's expert episodes written as tool-calling chats
(``finestep.integrations.trl_sft``; 0 when the model already speaks it). Each TRL run mirrors
``configs/sqlworld-tiny.yaml``: 4 prompts x 8 completions per generation, two minibatches of 16 (two optimizer
steps per generation, PPO clip 0.2/0.28), lr 3e-5 after 3 warm-up steps, 4 turns, 320 completion tokens (TRL
has no per-turn cap; ours is 48), no KL. Evaluation: one greedy episode per question of ``--eval-split``
through TRL's own generation and tool loop (EX, tool calls, redundant-call rate, over all questions). ``--ours`` also runs our trainer (``finestep bench``'s RL run)
for each estimator from the unadapted warm start. Writes ``OUT/results.json`` and prints a Markdown table, with
the wall time per RL step (one generation and its update) of each run.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import torch
from datasets import Dataset
from transformers import AutoModelForCausalLM, AutoTokenizer, PrinterCallback, TrainerCallback
from trl import GRPOConfig

from finestep.atomic import atomic_write_json
from finestep.data.sqlworld import load_world
from finestep.integrations.trl import FineStepGRPOTrainer, tool_tokenizer
from finestep.integrations.trl_env import (
    TOOL_CHAT_TEMPLATE,
    SqlToolSettings,
    sql_environment_factory,
    task_rows,
)
from finestep.integrations.trl_sft import tool_conversation, tool_sft_examples
from finestep.rewards import score_episodes
from finestep.rewards.episodes import episode_metrics
from finestep.train.sft import SFTConfig, train_sft

ROOT = Path(__file__).resolve().parents[1]
SETTINGS = SqlToolSettings(max_turns=4, observation_rows=10, schema_sample_values=0, schema_max_chars=2000,
                           schema_style="compact", brief_instructions=True)  # configs/sqlworld-tiny.yaml's rollout
SHOWN = ("ex", "tool_calls", "redundant_rate", "error_rate", "format_failure_rate", "turns")


def adapt(model_dir: Path, world: Any, out: Path, epochs: int, seed: int) -> Path:
    """The warm start, fine-tuned on the expert's episodes as TRL tool-calling chats (``epochs`` 0: a copy)."""
    from finestep.agent.expert import expert_dataset
    from finestep.data.sqlworld import ExpertConfig

    if (out / "config.json").is_file():
        return out
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    if tokenizer.chat_template != TOOL_CHAT_TEMPLATE:
        tokenizer = tool_tokenizer(tokenizer)
    if epochs:
        tasks = {t.id: t for t in world.train}
        lines = expert_dataset(world, "train", 2, ExpertConfig(max_steps=SETTINGS.max_turns, protocol="json"), seed)
        chats = [tool_conversation(line, tasks, SETTINGS) for line in lines]
        train_sft(model, tool_sft_examples(chats, tokenizer), SFTConfig(epochs=epochs, lr=1e-3, batch_size=16,
                                                                       seed=seed), int(tokenizer.pad_token_id),
                  torch.device("cpu"))  # fmt: skip
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def trl_args(out: Path, steps: int, seed: int, lr: float = 3e-5, **extra: Any) -> GRPOConfig:
    return GRPOConfig(
        output_dir=str(out), max_steps=2 * steps, seed=seed, learning_rate=lr, warmup_steps=3,
        lr_scheduler_type="constant_with_warmup", max_grad_norm=1.0, num_generations=8, generation_batch_size=32,
        per_device_train_batch_size=16, gradient_accumulation_steps=1, epsilon=0.2, epsilon_high=0.28, beta=0.0,
        loss_type="dapo", temperature=1.0, max_completion_length=320, logging_steps=1, save_strategy="no",
        report_to="none", disable_tqdm=True, bf16=False, **extra,
    )  # fmt: skip


def evaluate(model_dir: Path, world: Any, split: str, n: int, out: Path) -> dict[str, float]:
    """Greedy episodes through TRL's generation and tool loop, one per question: our episode metrics over all."""
    tasks = world.split(split)[:n]
    rows = task_rows(tasks, SETTINGS)
    args = trl_args(out, 1, 0, num_generations_eval=1, per_device_eval_batch_size=16,
                    generation_kwargs={"do_sample": False})  # fmt: skip
    trainer = FineStepGRPOTrainer(
        AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32), args,
        environment_factory=sql_environment_factory(tasks, SETTINGS), credit="grpo",
        train_dataset=Dataset.from_list(rows), processing_class=tool_tokenizer(AutoTokenizer.from_pretrained(model_dir)),
    )  # fmt: skip
    trainer.model.eval()
    episodes = []
    with torch.no_grad():
        for start in range(0, len(rows), 16):
            trainer._generate_and_score_completions([dict(row) for row in rows[start : start + 16]])
            episodes += trainer.last_episodes
    trajectories = [e.trajectory for e in episodes]
    metrics = episode_metrics(trajectories, score_episodes(trajectories, SETTINGS.sandbox(), SETTINGS.rewards))
    return {k: float(metrics[k]) for k in SHOWN}


class StepProgress(TrainerCallback):
    """One line per optimizer step (reward, seconds so far) so a long run shows where it is."""

    def __init__(self) -> None:
        self.begin = time.perf_counter()

    def on_log(self, args, state, control, logs=None, **kwargs):  # type: ignore[no-untyped-def]
        if logs and "reward" in logs:
            print(f"step {state.global_step}/{state.max_steps}  reward {logs['reward']:.3f}  "
                  f"{time.perf_counter() - self.begin:.0f} s", flush=True)  # fmt: skip


def run_trl(estimator: str, start: Path, world: Any, out: Path, steps: int, seed: int, lr: float) -> dict[str, Any]:
    run = out / f"trl-{estimator}"
    trainer = FineStepGRPOTrainer(
        AutoModelForCausalLM.from_pretrained(start, dtype=torch.float32), trl_args(run, steps, seed, lr),
        environment_factory=sql_environment_factory(world.train, SETTINGS), credit=estimator,
        train_dataset=Dataset.from_list(task_rows(world.train, SETTINGS)),
        processing_class=tool_tokenizer(AutoTokenizer.from_pretrained(start)),
    )  # fmt: skip
    trainer.remove_callback(PrinterCallback)
    trainer.add_callback(StepProgress())
    begin = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - begin
    trainer.save_state()
    trainer.save_model(str(run / "model"))
    trainer.processing_class.save_pretrained(run / "model")
    return {"trainer": "trl", "estimator": estimator, "seconds_per_step": seconds / steps, "run": str(run)}


def run_ours(estimator: str, start: Path, world_dir: Path, out: Path, steps: int, seed: int) -> dict[str, Any]:
    from finestep.bench.pipeline import rl_config, run_rl

    config = rl_config(ROOT / "configs" / "sqlworld-tiny.yaml", world_dir, start,
                       [f"credit.estimator={estimator}", f"trainer.max_steps={steps}", f"trainer.seed={seed}"])  # fmt: skip
    result = run_rl(config, out / f"ours-{estimator}")
    final = result["final"]
    return {"trainer": "ours", "estimator": estimator, "eval": {k: float(final.get(k, 0.0)) for k in SHOWN},
            "seconds_per_step": sum(m["time_step"] for m in result["curve"]) / max(1, len(result["curve"]))}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--world", type=Path, required=True, help="the bench's world folder")
    parser.add_argument("--model", type=Path, required=True, help="the warm start (the bench's model-sft)")
    parser.add_argument("--out", type=Path, default=Path("runs/trl-compare"), help="results folder")
    parser.add_argument("--estimators", default="finestep,grpo", help="comma-separated registered estimators")
    parser.add_argument("--steps", type=int, default=120, help="RL steps (generations) per run")
    parser.add_argument("--adapt-epochs", type=int, default=4, help="SFT epochs adapting the warm start to TRL "
                        "(check the adapted warm start's row: a high format_failure_rate needs more)")  # fmt: skip
    parser.add_argument("--eval-split", default="heldout", help="the world's split evaluated")
    parser.add_argument("--max-eval-tasks", type=int, default=384, help="questions evaluated")
    parser.add_argument("--seed", type=int, default=0, help="seed of every run")
    parser.add_argument("--learning-rate", type=float, default=3e-5, help="TRL runs' learning rate (ours: 3e-5)")
    parser.add_argument("--ours", action="store_true", help="also run our trainer with the same estimators")
    args = parser.parse_args(argv)
    world = load_world(args.world)
    args.out.mkdir(parents=True, exist_ok=True)
    start = adapt(args.model, world, args.out / "model-trl-start", args.adapt_epochs, args.seed)
    rows: list[dict[str, Any]] = [{"trainer": "trl", "estimator": "warm start (adapted)",
                                   "eval": evaluate(start, world, args.eval_split, args.max_eval_tasks,
                                                    args.out / "eval-start")}]  # fmt: skip
    for estimator in [e.strip() for e in args.estimators.split(",") if e.strip()]:
        row = run_trl(estimator, start, world, args.out, args.steps, args.seed, args.learning_rate)
        row["eval"] = evaluate(Path(row["run"]) / "model", world, args.eval_split, args.max_eval_tasks,
                               args.out / f"eval-{estimator}")  # fmt: skip
        rows.append(row)
        if args.ours:
            rows.append(run_ours(estimator, args.model, args.world, args.out, args.steps, args.seed))
        atomic_write_json(args.out / "results.json", {"args": {k: str(v) for k, v in vars(args).items()}, "rows": rows})
    print("| trainer | estimator | " + " | ".join(SHOWN) + " | s / RL step |")
    print("|" + " --- |" * (len(SHOWN) + 3))
    for row in rows:
        cells = " | ".join(f"{row['eval'][k]:.3f}" for k in SHOWN)
        print(f"| {row['trainer']} | {row['estimator']} | {cells} | {row.get('seconds_per_step', float('nan')):.2f} |")
    print(f"results: {args.out / 'results.json'}  ({json.dumps({'rows': len(rows)})})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
