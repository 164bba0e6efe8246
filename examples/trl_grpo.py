"""FineStep through TRL: step-level advantages in TRL's GRPOTrainer on multi-turn SQL, on a CPU.

With no arguments it builds a small SQLWorld world and a tiny model (a tokenizer trained on the world, a random
Qwen3-style network, a short warm start on the scripted expert's episodes in TRL's tool-calling chat format),
then trains it with FineStep through TRL and saves everything under --output-dir: TRL's trainer_state.json (its
log_history holds TRL's metrics and ours under finestep/: EX, tool calls, redundant-call rate, mean |A^O|, |A^P|)
and the trained model.

    python examples/trl_grpo.py --max-steps 20 --output-dir runs/trl-grpo
    python examples/trl_grpo.py --model /models/Qwen3-0.6B --world runs/bench/world   # any local causal LM
    accelerate launch --num_processes 8 examples/trl_grpo.py --model /models/Qwen3-4B --bird /data/bird/train \
        --use-vllm --bf16                                                               # docs/trl.md
    accelerate launch --multi_gpu --num_processes 2 examples/trl_grpo.py --max-steps 4  # 2 CPU processes (gloo)

Every run of this script uses one SQL sandbox for all its episodes (``shared_sandbox``): the environment, the
scoring and the warm start share its worker processes and its result cache.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import torch
from datasets import Dataset
from transformers import AutoModelForCausalLM, AutoTokenizer, PrinterCallback, TrainerCallback
from trl import GRPOConfig

from finestep.credit import ESTIMATORS
from finestep.data import load_bird
from finestep.data.sqlworld import build_world, load_world
from finestep.integrations.trl import FineStepGRPOTrainer, tool_tokenizer
from finestep.integrations.trl_env import SqlToolSettings, sql_environment_factory, task_rows
from finestep.integrations.trl_sft import tiny_tool_model
from finestep.train.sft import SFTConfig

SHOWN = ("reward", "finestep/ex", "finestep/tool_calls", "finestep/redundant_rate", "finestep/adv_outcome_abs_mean",
         "finestep/adv_process_abs_mean", "step_time")  # fmt: skip


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--max-steps", type=int, default=20, help="RL optimizer steps (TRL's max_steps)")
    parser.add_argument("--output-dir", default="runs/trl-grpo", help="TRL's output_dir: state, logs, model")
    parser.add_argument("--estimator", default="finestep", help=f"credit estimator: {', '.join(sorted(ESTIMATORS))}")
    parser.add_argument("--credit", nargs="*", default=[], metavar="KEY=VALUE",
                        help="more CreditConfig fields, e.g. gamma_o=1.0 lam=0.3")  # fmt: skip
    parser.add_argument("--model", default=None, help="a local Hugging Face causal LM folder (default: a tiny model)")
    parser.add_argument("--world", default=None, help="a SQLWorld folder (default: build a small one)")
    parser.add_argument("--bird", default=None, help="train on BIRD instead: a folder with train.json (or a JSON "
                        "file) and its databases")  # fmt: skip
    parser.add_argument("--num-generations", type=int, default=4, help="G, completions per prompt")
    parser.add_argument("--prompts-per-step", type=int, default=2, help="prompts per device and step")
    parser.add_argument("--gradient-accumulation-steps", type=int, default=1, help="TRL's gradient_accumulation_steps")
    parser.add_argument("--max-completion-length", type=int, default=256, help="tokens of all turns and tool output")
    parser.add_argument("--max-turns", type=int, default=3, help="assistant turns with a tool call at most")
    parser.add_argument("--learning-rate", type=float, default=1e-4, help="RL learning rate")
    parser.add_argument("--temperature", type=float, default=1.0, help="sampling temperature")
    parser.add_argument("--sft-epochs", type=int, default=40, help="warm-start epochs of the tiny model (0: none)")
    parser.add_argument("--use-vllm", action="store_true", help="generate with vLLM (TRL's use_vllm; GPU)")
    parser.add_argument("--vllm-mode", default="colocate", help="TRL's vllm_mode: colocate or server")
    parser.add_argument("--bf16", action="store_true", help="train in bfloat16 (GPU)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the world, the model and TRL")
    return parser.parse_args(argv)


def value(text: str) -> object:
    """A KEY=VALUE value: JSON where it parses (numbers, true/false), else the string."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def main_process() -> bool:
    """The first process of an ``accelerate launch`` (or the only one): it builds the world and the model."""
    return int(os.environ.get("RANK", os.environ.get("LOCAL_RANK", "0"))) == 0


def wait_for(path: Path, timeout_s: float = 1800.0) -> None:
    """Wait until the first process has written ``path`` (the other processes of a launch)."""
    deadline = time.monotonic() + timeout_s
    while not path.exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{path} did not appear within {timeout_s:.0f} s")
        time.sleep(0.5)


class PrintMetrics(TrainerCallback):
    """One line per logged step: TRL's reward and FineStep's diagnostics."""

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs and state.is_world_process_zero and "reward" in logs:
            shown = "  ".join(f"{k.removeprefix('finestep/')} {logs[k]:.3f}" for k in SHOWN if k in logs)
            print(f"step {state.global_step:4d}  {shown}", flush=True)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    if args.bird:
        if args.model is None:
            raise SystemExit("--bird needs --model (a pretrained chat model, e.g. Qwen3-4B)")
        tasks = list(load_bird(args.bird).available)
    elif args.world:
        tasks = load_world(args.world).train
    else:
        world_dir = out / "world"
        if not (world_dir / "world.json").is_file() and main_process():
            build_world(world_dir, seed=args.seed, n_train_dbs=4, n_test_dbs=0, questions_per_db=6)
        wait_for(world_dir / "world.json")
        tasks = load_world(world_dir).train
    tiny = args.model is None
    settings = SqlToolSettings(max_turns=args.max_turns, schema_style="compact" if tiny else "create",
                               brief_instructions=tiny, schema_sample_values=0 if tiny else 3)  # fmt: skip
    model_dir = args.model
    if model_dir is None:  # a tiny model, warm-started on the expert's episodes in TRL's chat format
        model_dir = out / "model-init"
        sft = SFTConfig(epochs=args.sft_epochs, lr=3e-3, batch_size=8, seed=args.seed) if args.sft_epochs else None
        if main_process():
            tiny_tool_model(model_dir, load_world(Path(args.world) if args.world else out / "world"), settings, sft,
                            seed=args.seed)  # fmt: skip
        wait_for(model_dir / "config.json")
    tokenizer = tool_tokenizer(AutoTokenizer.from_pretrained(model_dir))
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype="auto" if args.model else torch.float32)
    config = GRPOConfig(
        output_dir=str(out), max_steps=args.max_steps, seed=args.seed, learning_rate=args.learning_rate,
        num_generations=args.num_generations, per_device_train_batch_size=args.num_generations * args.prompts_per_step,
        gradient_accumulation_steps=args.gradient_accumulation_steps, max_completion_length=args.max_completion_length,
        temperature=args.temperature, use_vllm=args.use_vllm, vllm_mode=args.vllm_mode, logging_steps=1,
        save_strategy="no", report_to="none", disable_tqdm=True, bf16=args.bf16,
        use_cpu=not torch.cuda.is_available(),  # several CPU processes: accelerate's MULTI_CPU (gloo)
    )  # fmt: skip
    credit = {"estimator": args.estimator, **{k: value(v) for k, v in (kv.split("=", 1) for kv in args.credit)}}
    trainer = FineStepGRPOTrainer(
        model, config, environment_factory=sql_environment_factory(tasks, settings), credit=credit,
        train_dataset=Dataset.from_list(task_rows(tasks, settings)), processing_class=tokenizer,
        callbacks=[PrintMetrics()],
    )  # fmt: skip
    trainer.remove_callback(PrinterCallback)  # one line per step (PrintMetrics) instead of the whole dict
    trainer.train()
    trainer.save_state()  # trainer_state.json, with log_history
    trainer.save_model(str(out / "model"))
    if trainer.accelerator.is_main_process:
        tokenizer.save_pretrained(out / "model")
        state = trainer.accelerator.state
        print(f"done ({state.num_processes} process(es), {state.distributed_type.value}, backend {state.backend}): "
              f"{out / 'trainer_state.json'}  model: {out / 'model'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
