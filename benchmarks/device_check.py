"""The device check: the real-model path (Qwen3 shapes, bf16, LoRA, gradient checkpointing) on whatever device
torch sees, through our trainer and through TRL, in one command (``scripts/gpu_check.sh``), under 10 minutes.

For each shape (``tiny``; on a GPU also ``0.6b``, Qwen3-0.6B's config, and ``4b-lora``, Qwen3-4B's with LoRA) it
builds a Qwen3-architecture checkpoint with random weights (``finestep.models.qwen3``: nothing is downloaded; the
tokenizer is trained on a small SQLWorld world), then runs

- our trainer (``RLTrainer``, ``model.init=pretrained``): RL steps on the world (rollouts with the HF generator,
  SQL in the sandbox, rewards, credit, PPO update) and SFT steps (``train_sft``) on the scripted expert's episodes;
- TRL (``FineStepGRPOTrainer``, ``finestep.integrations.trl``): GRPO steps with FineStep's advantages;

recording per step the tokens per second, the wall time split (generate / execute / credit / train), the peak
device memory, the rollout/trainer log-prob gap (a known source of silent drift in bf16) and the share of sampled
weights the step changed (bf16 weights round away updates below their precision). A memory probe compares one
micro-batch's measured memory with ``finestep.models.memory``'s prediction (on a GPU the peak allocated; on a CPU
the bytes saved for backward, and the exact weights, gradients and AdamW moments). A shape that would not fit the
device's memory, or the time left of ``--budget-s``, is skipped with its reason; a run that fails is recorded with
its error and makes the exit status 1.

    scripts/gpu_check.sh                                  # cuda when torch sees one (all shapes), else cpu (tiny)
    scripts/gpu_check.sh --shapes tiny,0.6b --out /tmp/device_check.json --table /tmp/device_check.md

Results go to ``benchmarks/results/device_check.json`` under the device type (``cpu`` or ``cuda``, so a GPU run
keeps the CPU result; atomically), and a table to docs/benchmarks.md between the device's markers (or ``--table``).
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import platform
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "device_check.json"
DOCS = ROOT / "docs" / "benchmarks.md"
GIB = float(1 << 30)


@dataclass(frozen=True)
class Run:
    """One measured configuration: a shape, a precision, LoRA and checkpointing, through one trainer."""

    shape: str
    trainer: str  # "finestep" or "trl"
    dtype: str = "bfloat16"
    lora: bool = False
    gradient_checkpointing: bool = False
    rl_steps: int = 2
    sft_steps: int = 2
    tasks: int = 2  # tasks per RL step (TRL: prompts per step)
    group: int = 2  # samples per task
    new_tokens: int = 24  # per turn
    completion_tokens: int = 48  # TRL: the whole completion (turns and tool answers)
    minibatch: int = 4
    probe_tokens: int = 128  # the memory probe's micro-batch: minibatch x probe_tokens
    minutes: float = 0.5  # the time this run is expected to take, for the budget

    @property
    def name(self) -> str:
        parts = [self.shape, self.trainer, self.dtype, "lora" if self.lora else "full"]
        return " ".join(parts + (["gc"] if self.gradient_checkpointing else []))


def plan(shapes: list[str], cuda: bool) -> list[Run]:
    """The runs of the shapes, most telling first (the time budget cuts from the end): on every device fp32, bf16,
    LoRA and checkpointing through our trainer and bf16 LoRA through TRL on the tiny shape; on a GPU then bf16
    full training of 0.6B, LoRA on 4B, the same through TRL, and LoRA on 0.6B."""
    unknown = sorted(set(shapes) - {"tiny", "0.6b", "4b-lora"})
    if unknown:
        raise SystemExit(f"--shapes: unknown shape(s) {unknown}; expected tiny, 0.6b, 4b-lora")
    runs: list[tuple[int, Run]] = []
    if "tiny" in shapes:
        size = {"tasks": 4, "group": 4, "new_tokens": 48, "completion_tokens": 192, "sft_steps": 3} if cuda else {}
        runs += [(0, Run("tiny", "finestep", "float32", rl_steps=3 if cuda else 2, **size)),
                 (0, Run("tiny", "finestep", "bfloat16", rl_steps=1, **size)),
                 (0, Run("tiny", "finestep", "bfloat16", lora=True, gradient_checkpointing=True, **size)),
                 (0, Run("tiny", "trl", "bfloat16", lora=True, gradient_checkpointing=True, rl_steps=1, **size))]
    big = {"tasks": 4, "group": 4, "new_tokens": 96, "completion_tokens": 384}
    if "0.6b" in shapes:
        size = {**big, "probe_tokens": 1024, "minutes": 1.5}
        runs += [(1, Run("0.6b", "finestep", gradient_checkpointing=True, **size)),
                 (3, Run("0.6b", "trl", gradient_checkpointing=True, **size)),
                 (5, Run("0.6b", "finestep", lora=True, **size))]
    if "4b-lora" in shapes:
        size = {**big, "probe_tokens": 2048, "minutes": 2.5}
        runs += [(2, Run("4b", "finestep", lora=True, gradient_checkpointing=True, **size)),
                 (4, Run("4b", "trl", lora=True, gradient_checkpointing=True, **size))]
    return [run for _, run in sorted(runs, key=lambda pair: pair[0])]  # stable: the tiny runs keep their order


# --- measurements ------------------------------------------------------------------------------------------


def device_info(device: Any) -> dict[str, Any]:
    import peft
    import torch
    import transformers

    info: dict[str, Any] = {"type": device.type, "torch": torch.__version__, "transformers": transformers.__version__,
                            "peft": peft.__version__, "python": platform.python_version()}  # fmt: skip
    try:
        import trl

        info["trl"] = trl.__version__
    except ImportError:  # pragma: no cover - TRL is an extra
        info["trl"] = None
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info.update(name=torch.cuda.get_device_name(device), memory_gib=round(props.total_memory / GIB, 1),
                    cuda=torch.version.cuda, bf16_supported=torch.cuda.is_bf16_supported())  # fmt: skip
    else:
        import os

        info.update(name=f"CPU ({platform.processor() or platform.machine()}, {os.cpu_count()} cores)",
                    torch_threads=torch.get_num_threads())  # fmt: skip
    try:
        info["commit"] = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                                        text=True, check=True).stdout.strip()  # fmt: skip
    except (OSError, subprocess.CalledProcessError):
        info["commit"] = None
    return info


class Memory:
    """Peak memory of the device: CUDA's peak allocated since the last ``reset``; on a CPU the process's peak RSS
    (a high-water mark that never goes down)."""

    def __init__(self, device: Any) -> None:
        import torch

        self.torch, self.cuda = torch, device.type == "cuda"

    def reset(self) -> None:
        if self.cuda:
            self.torch.cuda.synchronize()
            self.torch.cuda.reset_peak_memory_stats()

    def peak_gib(self) -> float:
        if self.cuda:
            self.torch.cuda.synchronize()
            return self.torch.cuda.max_memory_allocated() / GIB
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / GIB


def memory_probe(model: Any, optimizer: Any, run: Run, shape: dict, memory: Memory, device: Any,
                 autocast: Any) -> dict[str, Any]:  # fmt: skip
    """One forward and backward of a (minibatch, probe_tokens) micro-batch of the policy, against the prediction."""
    import torch

    from finestep.models.memory import activation_bytes_per_token, layer_activation_bytes, training_memory
    from finestep.train.update import sequence_log_probs

    tokens = run.minibatch * run.probe_tokens
    lora_rank = 16 if run.lora else None
    b = 2 if run.dtype == "bfloat16" else 4
    predicted = training_memory(shape, tokens, weights_bytes=b, lora_rank=lora_rank,
                                gradient_checkpointing=run.gradient_checkpointing)  # fmt: skip
    ids = torch.randint(0, int(shape["vocab_size"]), (run.minibatch, run.probe_tokens), device=device)
    params = [p for p in model.parameters() if p.requires_grad]
    out: dict[str, Any] = {"tokens": tokens, "predicted_gib": {k: round(v / GIB, 3) for k, v in predicted.items()
                                                               if k != "parameters"}}  # fmt: skip
    model.train()
    optimizer.zero_grad(set_to_none=True)
    if device.type == "cuda":
        memory.reset()
        with autocast:
            sequence_log_probs(model, ids, torch.ones_like(ids))[0].float().mean().backward()
        out.update(kind="cuda peak allocated", measured_gib=round(memory.peak_gib(), 3))
        out["ratio"] = round(out["measured_gib"] / out["predicted_gib"]["total"], 3)
    else:  # saved-tensor bytes (activations) and the exact static bytes
        seen: dict[int, int] = {}
        weights = {p.untyped_storage().data_ptr() for p in model.parameters()}

        def pack(t: Any) -> Any:
            if t.untyped_storage().data_ptr() not in weights:
                seen[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), autocast:
            logprobs = sequence_log_probs(model, ids, torch.ones_like(ids))[0]
        logprobs.float().mean().backward()
        per_token = activation_bytes_per_token(shape, b, run.gradient_checkpointing, lora_rank)
        if run.gradient_checkpointing:  # the recomputed layer lives inside backward, unseen by saved-tensor hooks
            per_token -= layer_activation_bytes(shape, b, lora_rank)
        elif lora_rank:  # layer 0's input norm: nothing before it needs a gradient under LoRA
            per_token -= 4 * int(shape["hidden_size"]) + 4
        static = sum(p.nbytes for p in model.parameters()) + sum(p.grad.nbytes for p in params if p.grad is not None)
        static += sum(t.nbytes for s in optimizer.state.values() for k, t in s.items() if k != "step")
        predicted_static = predicted["weights"] + predicted["gradients"] + predicted["optimizer"] + predicted["adapters"]
        out.update(kind="cpu: bytes saved for backward; weights + gradients + AdamW moments",
                   measured_saved_mib=round(sum(seen.values()) / 2**20, 3),
                   predicted_saved_mib=round(tokens * per_token / 2**20, 3),
                   static_mib=round(static / 2**20, 3), predicted_static_mib=round(predicted_static / 2**20, 3))  # fmt: skip
    optimizer.zero_grad(set_to_none=True)
    return out


# --- the two trainers ----------------------------------------------------------------------------------------


def _our_config(run: Run, model_dir: Path, world: Path, device: Any) -> Any:
    from finestep.train.config import load_train_config

    overrides = [
        "model.init=pretrained", f"model.path={model_dir}", f"model.dtype={run.dtype}",
        f"model.lora.enabled={str(run.lora).lower()}", f"model.gradient_checkpointing={str(run.gradient_checkpointing).lower()}",
        f"data.path={world}", "data.eval_split=test", "data.max_eval_tasks=1", "rollout.max_turns=3",
        f"rollout.group_size={run.group}", f"rollout.max_new_tokens={run.new_tokens}",
        f"rollout.max_total_tokens={4 * run.new_tokens}", f"trainer.tasks_per_step={run.tasks}",
        f"trainer.max_steps={run.rl_steps}", "trainer.save_every=0", f"trainer.device={device.type}",
        f"optim.minibatch_size={run.minibatch}", "optim.lr=1e-6",  # configs/bird-qwen3-4b.yaml's learning rate
        # a random model never closes its tags and fails every task: train on all its turns anyway (zero advantages,
        # so zero gradients, but the step's real work: forward, backward, optimizer)
        "credit.mask_truncated_steps=false", "credit.drop_zero_groups=false",
    ]  # fmt: skip
    return load_train_config(ROOT / "configs" / "sqlworld-tiny.yaml", overrides)


def run_finestep(run: Run, model_dir: Path, world_dir: Path, shape: dict, work: Path, device: Any,
                 memory: Memory) -> dict[str, Any]:  # fmt: skip
    from finestep.agent.expert import expert_dataset
    from finestep.agent.protocol import get_protocol
    from finestep.data.sqlworld import ExpertConfig, load_world
    from finestep.rewards.records import read_trajectories
    from finestep.sql.executor import shared_sandbox
    from finestep.train.rl import RLTrainer
    from finestep.train.sft import SFTConfig, build_sft_examples, train_sft
    from finestep.train.update import UpdateProbe

    config = _our_config(run, model_dir, world_dir, device)
    start = time.perf_counter()
    trainer = RLTrainer(config, work / "run")
    out: dict[str, Any] = {"setup_s": round(time.perf_counter() - start, 2), "rl_steps": [], "sft_steps": []}
    for _ in range(run.rl_steps):
        memory.reset()
        m = trainer.train_step()
        out["rl_steps"].append({
            "step": int(m["step"]), "tokens_per_s": round(m["tokens_per_s"], 1),
            "generated_tokens": round(m["tokens_per_s"] * m["time_generate"]),
            "time_generate": round(m["time_generate"], 3), "time_execute": round(m["time_execute"], 3),
            "time_credit": round(m["time_reward_credit"], 3), "time_train": round(m["time_train"], 3),
            "time_step": round(m["time_step"], 3), "peak_memory_gib": round(memory.peak_gib(), 3),
            "rollout_logprob_gap": m.get("rollout_logprob_gap", 0.0), "update_applied": round(m["update_applied"], 4),
            "grad_norm": m.get("grad_norm", 0.0), "train_tokens": m.get("n_tokens", 0.0),
        })  # fmt: skip
    out["memory"] = memory_probe(trainer.model, trainer.optimizer, run, shape, memory, device, trainer._autocast())
    trainer.optimizer.state.clear()  # SFT has its own optimizer
    world = load_world(world_dir)
    path = work / "expert.jsonl"
    lines = expert_dataset(world, "train", 1, ExpertConfig(max_steps=3, protocol="tags"))
    path.write_text("".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8")
    examples = build_sft_examples(read_trajectories(path), trainer.tokenizer, get_protocol("tags"), config.rollout,
                                  shared_sandbox())[: run.sft_steps * run.minibatch]  # fmt: skip
    tokens = sum(len(e.input_ids) for e in examples)
    marks = [time.perf_counter()]
    probes = [UpdateProbe(trainer.model)]
    memory.reset()

    def step(n: int, total: int, loss: float) -> None:
        marks.append(time.perf_counter())
        out["sft_steps"].append({"step": n, "time_s": round(marks[-1] - marks[-2], 3), "loss": round(loss, 4),
                                 "peak_memory_gib": round(memory.peak_gib(), 3),
                                 "update_applied": round(probes[-1].applied(), 4)})  # fmt: skip
        probes.append(UpdateProbe(trainer.model))
        memory.reset()
        marks.append(time.perf_counter())  # the probe's own time is not the step's

    # the RL config's learning rate: does an AdamW step of 1e-6 change these weights at all?
    with trainer._autocast():
        train_sft(trainer.model, examples, SFTConfig(epochs=1, lr=1e-6, batch_size=run.minibatch, warmup_steps=0),
                  trainer._pad_id(), trainer.device, on_step=step)  # fmt: skip
    out["sft_tokens_per_s"] = round(tokens / max(sum(x["time_s"] for x in out["sft_steps"]), 1e-9), 1)
    trainer.log.close()
    return out


def _gap_by_incremental_decoding(model: Any, episodes: list, device: Any, limit: int = 96) -> float:
    """Mean |log p(full forward) - log p(token-by-token with the KV cache)| over the first completion tokens of
    ``episodes``: the rollout/trainer gap of TRL's transformers generation, which keeps no sampling log-probs."""
    import torch

    from finestep.models.ragged import RaggedKVBatch
    from finestep.train.update import sequence_log_probs

    gaps = []
    model.eval()
    with torch.no_grad():
        for episode in episodes:
            traj = episode.trajectory
            ids = [int(t) for t in traj.token_ids[: traj.prompt_length + limit]]
            if len(ids) <= traj.prompt_length:
                continue
            full = sequence_log_probs(model, torch.tensor([ids], device=device), torch.ones(1, len(ids),
                                      dtype=torch.long, device=device))[0][0, traj.prompt_length:]  # fmt: skip
            batch = RaggedKVBatch(model, [0], 0, device)
            logits = batch.prefill([ids[: traj.prompt_length]])
            steps = []
            for token in ids[traj.prompt_length:]:
                steps.append(torch.log_softmax(logits.float(), dim=-1)[0, token])
                logits = batch.step(torch.tensor([token], device=device), torch.tensor([True], device=device))
            gaps.append((full.float() - torch.stack(steps)).abs().mean().item())
    model.train()
    return float(sum(gaps) / len(gaps)) if gaps else 0.0


def run_trl(run: Run, model_dir: Path, world_dir: Path, shape: dict, work: Path, device: Any,
            memory: Memory) -> dict[str, Any]:  # fmt: skip
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, PrinterCallback, TrainerCallback
    from trl import GRPOConfig

    from finestep.data.sqlworld import load_world
    from finestep.integrations.trl import FineStepGRPOTrainer, tool_tokenizer
    from finestep.integrations.trl_env import SqlToolSettings, sql_environment_factory, task_rows
    from finestep.train.update import UpdateProbe

    class Timed(FineStepGRPOTrainer):
        """FineStep's TRL trainer with a stopwatch on generation and on the whole scoring of a batch."""

        clock: ClassVar[dict[str, float]] = {}

        @contextlib.contextmanager
        def _timing(self, key: str) -> Iterator[None]:
            begin = time.perf_counter()
            try:
                yield
            finally:
                self.clock[key] = self.clock.get(key, 0.0) + time.perf_counter() - begin

        def _generate(self, prompts: list) -> tuple:
            with self._timing("generate"):
                return super()._generate(prompts)

        def _generate_and_score_completions(self, inputs: list) -> dict:
            with self._timing("score"):
                return super()._generate_and_score_completions(inputs)

    steps: list[dict[str, Any]] = []

    class PerStep(TrainerCallback):
        def on_step_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            trainer.clock.clear()
            self.probe, self.start = UpdateProbe(trainer.model), time.perf_counter()
            memory.reset()

        def on_log(self, args: Any, state: Any, control: Any, logs: dict | None = None, **kwargs: Any) -> None:
            if steps and logs and "grad_norm" in logs:
                steps[-1]["grad_norm"] = float(logs["grad_norm"])

        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            wall = time.perf_counter() - self.start
            episodes = trainer.last_episodes
            generated = sum(e.trajectory.n_generated for e in episodes)
            executed = sum(getattr(getattr(env, "_env", None), "execute_seconds", 0.0) for env in trainer.environments or [])
            credit = float(trainer._metrics["train"].get("finestep/time_credit", [0.0])[-1])
            generate = trainer.clock.get("generate", 0.0)
            steps.append({
                "step": state.global_step, "tokens_per_s": round(generated / max(generate, 1e-9), 1),
                "generated_tokens": generated, "time_generate": round(generate - executed, 3),
                "time_execute": round(executed, 3), "time_credit": round(credit, 3),
                "time_train": round(wall - trainer.clock.get("score", 0.0), 3), "time_step": round(wall, 3),
                "peak_memory_gib": round(memory.peak_gib(), 3), "update_applied": round(self.probe.applied(), 4),
                "rollout_logprob_gap": _gap_by_incremental_decoding(trainer.model, episodes[:2], device),
            })  # fmt: skip

    tasks = load_world(world_dir).train
    settings = SqlToolSettings(max_turns=3, schema_style="compact", brief_instructions=True, schema_sample_values=0)
    tokenizer = tool_tokenizer(AutoTokenizer.from_pretrained(model_dir))
    dtype = torch.bfloat16 if run.dtype == "bfloat16" else torch.float32
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype)
    peft_config = None
    if run.lora:
        from peft import LoraConfig

        peft_config = LoraConfig(r=16, lora_alpha=32, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"],
                                 task_type="CAUSAL_LM")  # fmt: skip
    args = GRPOConfig(
        output_dir=str(work / "trl"), max_steps=run.rl_steps, learning_rate=1e-6, seed=0,
        num_generations=run.group, per_device_train_batch_size=run.group * run.tasks,
        max_completion_length=run.completion_tokens, temperature=1.0, logging_steps=1, save_strategy="no",
        report_to="none", disable_tqdm=True, bf16=run.dtype == "bfloat16", use_cpu=device.type == "cpu",
        gradient_checkpointing=run.gradient_checkpointing,
    )  # fmt: skip
    start = time.perf_counter()
    trainer = Timed(model, args, environment_factory=sql_environment_factory(tasks, settings), credit="finestep",
                    train_dataset=Dataset.from_list(task_rows(tasks, settings)), processing_class=tokenizer,
                    peft_config=peft_config, callbacks=[PerStep()])  # fmt: skip
    out: dict[str, Any] = {"setup_s": round(time.perf_counter() - start, 2)}
    trainer.remove_callback(PrinterCallback)  # one summary line per run instead of TRL's dict per step
    trainer.train()
    out["rl_steps"] = steps
    autocast = (torch.autocast(device.type, dtype=torch.bfloat16) if run.dtype == "bfloat16"
                else torch.autocast(device.type, enabled=False))  # fmt: skip
    out["memory"] = memory_probe(trainer.model, trainer.optimizer, run, shape, memory, device, autocast)
    return out


# --- the check -----------------------------------------------------------------------------------------------


@dataclass
class Check:
    device: Any
    work: Path
    budget_s: float
    start: float = field(default_factory=time.perf_counter)
    results: dict[str, list[dict[str, Any]]] = field(default_factory=lambda: {"finestep": [], "trl": []})
    failed: int = 0

    def left_s(self) -> float:
        return self.budget_s - (time.perf_counter() - self.start)


def _fits(run: Run, shape: dict, device: Any) -> str | None:
    """Why the run would not fit the device's free memory (its prediction and rollouts' KV cache), or None."""
    if device.type != "cuda":
        return None
    import torch

    from finestep.models.memory import kv_cache_bytes, training_memory

    b = 2 if run.dtype == "bfloat16" else 4
    need = training_memory(shape, run.minibatch * run.probe_tokens, weights_bytes=b, lora_rank=16 if run.lora else None,
                           gradient_checkpointing=run.gradient_checkpointing)["total"]  # fmt: skip
    need += kv_cache_bytes(shape, run.tasks * run.group * (max(4 * run.new_tokens, run.completion_tokens) + 1024), b)
    free, _ = torch.cuda.mem_get_info()
    if need > 0.9 * free:
        return f"needs about {need / GIB:.1f} GiB (finestep.models.memory), {free / GIB:.1f} GiB free"
    return None


def _checkpoint(shape_name: str, world: Any, work: Path, device: Any) -> tuple[Path, dict[str, Any]]:
    import torch

    from finestep.models.qwen3 import QWEN3_SHAPES, build_qwen3_checkpoint
    from finestep.train.rl import model_corpus

    folder = work / f"qwen3-{shape_name}"
    if not (folder / "config.json").is_file():
        corpus = model_corpus(world.train + world.test, 0)
        build_qwen3_checkpoint(corpus, folder, shape_name, tokenizer_vocab=2048, dtype=torch.bfloat16,
                               device=device if device.type == "cuda" else "cpu")  # fmt: skip
    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    return folder, {**QWEN3_SHAPES[shape_name], "vocab_size": config["vocab_size"]}


def execute(check: Check, runs: list[Run]) -> None:
    import torch

    from finestep.data.sqlworld import build_world
    from finestep.models.memory import parameter_count

    world = build_world(check.work / "world", seed=0, n_train_dbs=2, n_test_dbs=1, questions_per_db=4)
    memory = Memory(check.device)
    for run in runs:
        record: dict[str, Any] = {"name": run.name, "shape": run.shape, "dtype": run.dtype, "lora": run.lora,
                                  "gradient_checkpointing": run.gradient_checkpointing}  # fmt: skip
        check.results[run.trainer].append(record)
        if check.left_s() < 60 * run.minutes:
            record.update(status="skipped", reason=f"time budget: {check.left_s():.0f} s left of {check.budget_s:.0f}")
            print(f"{run.name}: skipped ({record['reason']})", flush=True)
            continue
        begin = time.perf_counter()
        try:
            model_dir, shape = _checkpoint(run.shape, world, check.work, check.device)
            record["parameters"] = parameter_count(shape)
            reason = _fits(run, shape, check.device)
            if reason is not None:
                record.update(status="skipped", reason=reason)
                print(f"{run.name}: skipped ({reason})", flush=True)
                continue
            work = Path(tempfile.mkdtemp(prefix="run-", dir=check.work))
            measure = run_finestep if run.trainer == "finestep" else run_trl
            record.update(measure(run, model_dir, check.work / "world", shape, work, check.device, memory))
            record["status"] = "ok"
        except Exception as exc:  # noqa: BLE001 - a failed run is recorded, the check goes on, the exit status says so
            check.failed += 1
            record.update(status="failed", reason=f"{type(exc).__name__}: {exc}"[:2000],
                          traceback=traceback.format_exc()[-4000:])  # fmt: skip
            print(f"{run.name}: FAILED {record['reason']}", flush=True)
        finally:
            record["wall_s"] = round(time.perf_counter() - begin, 1)
            gc.collect()
            if check.device.type == "cuda":
                torch.cuda.empty_cache()
        if record.get("status") == "ok":
            print(summary_line(record), flush=True)


def summary_line(record: dict[str, Any]) -> str:
    steps = record.get("rl_steps") or []
    last = steps[-1] if steps else {}
    return (f"{record['name']}: {last.get('tokens_per_s', 0):.0f} gen tok/s, step {last.get('time_step', 0):.2f} s "
            f"(generate {last.get('time_generate', 0):.2f}, execute {last.get('time_execute', 0):.2f}, credit "
            f"{last.get('time_credit', 0):.2f}, train {last.get('time_train', 0):.2f}), peak "
            f"{last.get('peak_memory_gib', 0):.2f} GiB, log-prob gap {last.get('rollout_logprob_gap', 0):.2e}, "
            f"grad norm {last.get('grad_norm', 0):.2g}"
            + (f", SFT update applied {record['sft_steps'][-1]['update_applied']:.2f}" if record.get("sft_steps") else ""))


def table(result: dict[str, Any]) -> str:
    """The Markdown table of a device's result (last RL step of each run; the memory probe)."""
    device = result["device"]
    lines = [(f"Device: **{device['name']}** ({device['type']}), torch {device['torch']}, transformers "
              f"{device['transformers']}, peft {device['peft']}, trl {device.get('trl')}; commit {device.get('commit')}, "
              f"{result['created']}; {result['wall_s']:.0f} s in all."), "",
             ("| run | status | gen tok/s | RL step s | generate | execute | credit | train | peak GiB | log-prob gap "
              "| grad norm | SFT tok/s | SFT update applied | memory probe |"),
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"]  # fmt: skip
    for trainer in ("finestep", "trl"):
        for r in result[trainer]:
            if r.get("status") != "ok":
                lines.append(f"| {r['name']} | {r.get('status')}: {r.get('reason', '')[:120]} |" + " |" * 12)
                continue
            s = r["rl_steps"][-1]
            mem = r.get("memory", {})
            probe = (f"peak {mem['measured_gib']:.2f} / {mem['predicted_gib']['total']:.2f} GiB predicted"
                     if "measured_gib" in mem else
                     f"saved {mem.get('measured_saved_mib', 0):.2f} / {mem.get('predicted_saved_mib', 0):.2f} MiB predicted")
            sft = r.get("sft_steps") or [{}]
            lines.append(
                f"| {r['name']} | ok | {s['tokens_per_s']:.0f} | {s['time_step']:.2f} | {s['time_generate']:.2f} | "
                f"{s['time_execute']:.2f} | {s['time_credit']:.2f} | {s['time_train']:.2f} | "
                f"{s['peak_memory_gib']:.2f} | {s['rollout_logprob_gap']:.1e} | {s.get('grad_norm', float('nan')):.2g} | "
                f"{r.get('sft_tokens_per_s', float('nan')):.0f} | {sft[-1].get('update_applied', float('nan')):.2f} | "
                f"{probe} |")  # fmt: skip
            lines[-1] = re.sub(r"(?<=\| )nan(?= \|)", "-", lines[-1])
    return "\n".join(lines) + "\n"


def write_table(path: Path, device_type: str, text: str) -> None:
    """Put ``text`` between the device's markers in ``path`` (appended with them when absent), atomically."""
    from finestep.atomic import atomic_write_text

    begin, end = f"<!-- device-check:{device_type} -->", f"<!-- /device-check:{device_type} -->"
    old = path.read_text(encoding="utf-8") if path.is_file() else ""
    block = f"{begin}\n{text}{end}"
    if begin in old and end in old:
        new = old[: old.index(begin)] + block + old[old.index(end) + len(end) :]
    else:
        new = old + ("\n" if old and not old.endswith("\n") else "") + block + "\n"
    atomic_write_text(path, new)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shapes", help="comma-separated: tiny, 0.6b, 4b-lora (default: all on cuda, tiny on cpu)")
    parser.add_argument("--device", default="auto", help="auto (cuda if torch sees one, else cpu), cpu or cuda")
    parser.add_argument("--budget-s", type=float, default=540.0, help="seconds for the whole check (default 540)")
    parser.add_argument("--out", type=Path, default=RESULTS, help="JSON results (the device type's entry is replaced)")
    parser.add_argument("--table", type=Path, default=DOCS, help="Markdown file whose device table is replaced")
    parser.add_argument("--work", type=Path, help="working folder (default: a temporary one, removed at the end)")
    args = parser.parse_args(argv)

    import torch

    from finestep.atomic import atomic_write_json
    from finestep.models.loading import quiet_libraries, resolve_device

    quiet_libraries()
    device = resolve_device(args.device)
    shapes = (args.shapes or ("tiny,0.6b,4b-lora" if device.type == "cuda" else "tiny")).split(",")
    runs = plan([s.strip() for s in shapes if s.strip()], device.type == "cuda")
    work = args.work or Path(tempfile.mkdtemp(prefix="finestep-device-check-"))
    work.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    check = Check(device, work, args.budget_s)
    print(f"device check on {device.type}: {len(runs)} runs, budget {args.budget_s:.0f} s, work {work}", flush=True)
    try:
        execute(check, runs)
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    result = {"device": device_info(device), "created": time.strftime("%Y-%m-%d %H:%M:%S"),
              "budget_s": args.budget_s, "wall_s": round(time.perf_counter() - check.start, 1),
              "shapes": shapes, **check.results}  # fmt: skip
    stored: dict[str, Any] = {}
    if args.out.is_file():
        try:
            stored = json.loads(args.out.read_text(encoding="utf-8"))
        except json.JSONDecodeError:
            stored = {}
    stored = {**stored, "benchmark": "device_check", device.type: result}
    atomic_write_json(args.out, stored)
    write_table(args.table, device.type, table(result))
    print(table(result))
    print(f"wrote {args.out} and {args.table}; {check.failed} run(s) failed", flush=True)
    return 1 if check.failed else 0


if __name__ == "__main__":
    sys.exit(main())
