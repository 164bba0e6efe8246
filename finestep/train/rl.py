"""The RL loop: sample tasks, roll out, reward, credit, token advantages, PPO-clip update; evaluate; checkpoint.

``RLTrainer(config, run_dir).run()`` trains for ``trainer.max_steps`` steps, writing ``run_dir/metrics.jsonl``
(one line per step, and evaluation lines) and ``run_dir/checkpoints/``. ``RLTrainer(..., resume=True)``
continues from the newest checkpoint exactly: step, optimizer, scheduler, RNG states and data order.
"""

from __future__ import annotations

import contextlib
import importlib.util
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from finestep.agent.generators import get_generator
from finestep.agent.protocol import get_protocol
from finestep.agent.rollout import RolloutConfig, RolloutTimes, cached_schema, rollout
from finestep.atomic import atomic_write_text
from finestep.config import to_dict
from finestep.credit import StepAdvantages, StepBatch
from finestep.data.task import Task
from finestep.models import build_tiny_model, load_model, load_tokenizer
from finestep.models.checks import check_model_folder, check_protocol_tokenizer, check_tokenizer_vocab
from finestep.models.loading import model_dtype, resolve_device
from finestep.rewards import score_episodes
from finestep.rewards.episodes import episode_metrics
from finestep.sql.executor import shared_sandbox
from finestep.train.batch import build_token_batch, credit_rollout
from finestep.train.checkpoint import (
    capture_rng,
    latest_checkpoint,
    load_trainer_state,
    remove_stale_temporaries,
    restore_rng,
    save_checkpoint,
)
from finestep.train.config import TrainConfig, save_train_config
from finestep.train.data import TaskSampler, load_task_data
from finestep.train.logging import MetricsLog
from finestep.train.update import UpdateProbe, policy_update

__all__ = ["RLTrainer", "check_policy_config", "credit_diagnostics", "model_corpus"]


def check_policy_config(config: TrainConfig) -> None:
    """Refuse, before any work, a policy the run could not use as configured (errors name the config key): a
    ``model.path`` that is not a model folder, a tokenizer that does not fit the model's vocabulary, a protocol
    that cannot use the tokenizer's chat template, a generator that is not installed."""
    cfg = config.model
    if cfg.init == "pretrained":
        path = check_model_folder(cfg.path or "", "model.path")
        tokenizer = load_tokenizer(path)
        check_tokenizer_vocab(tokenizer, path, "model.path")
        check_protocol_tokenizer(tokenizer, config.rollout.protocol, "rollout.protocol")
    if cfg.generator == "vllm" and importlib.util.find_spec("vllm") is None:
        raise ValueError("model.generator: vllm is not installed here (pip install 'finestep[vllm]' on a GPU "
                         "machine); use model.generator=hf")  # fmt: skip


def _first_missing(path: Path) -> Path | None:
    """The outermost of ``path`` and its parents that does not exist yet (what creating ``path`` would make)."""
    missing = None
    for candidate in [path.absolute(), *path.absolute().parents]:
        if candidate.exists():
            break
        missing = candidate
    return missing


def model_corpus(tasks: list[Task], sample_values: int) -> list[str]:
    """Texts a tiny model's tokenizer is trained on: questions, evidence, schemas and gold SQL."""
    texts = [f"{t.question}\n{t.evidence}\n{t.gold_sql}" for t in tasks]
    texts += [cached_schema(str(p), sample_values, 20_000) for p in sorted({t.db_path for t in tasks})]
    return texts


def credit_diagnostics(batch: StepBatch, advantages: StepAdvantages) -> dict[str, float]:
    """Why a step can (not) learn: outcome variance within groups and the size of each advantage stream.

    Returns (floats; 0 for an empty batch):
        groups_with_outcome_variance: share of the K task groups whose trajectories' outcome rewards are not all
            equal (a group of equal outcomes gives group-normalized outcome advantages of exactly 0).
        adv_outcome_abs_mean: mean over the S steps of ``|A^O|`` (``StepAdvantages.outcome_advantage``); for
            estimators that do not split their advantage, mean ``|A|``.
        adv_process_abs_mean: mean over the S steps of ``|A^P|`` (``process_advantage``, unweighted by lambda;
            0 on steps without a process term); 0 for estimators without one.
    """
    out = {"groups_with_outcome_variance": 0.0, "adv_outcome_abs_mean": 0.0, "adv_process_abs_mean": 0.0}
    if batch.n_groups:
        out["groups_with_outcome_variance"] = float(np.mean(batch.outcome_varies))
    if batch.n_steps:
        outcome = advantages.advantages if advantages.outcome_advantage is None else advantages.outcome_advantage
        out["adv_outcome_abs_mean"] = float(np.abs(outcome).mean())
        if advantages.process_advantage is not None:
            out["adv_process_abs_mean"] = float(np.abs(advantages.process_advantage).mean())
    return out


class RLTrainer:
    """One training run; see the module docstring."""

    def __init__(self, config: TrainConfig, run_dir: str | Path, resume: bool = False) -> None:
        self.config = config
        self.run_dir = Path(run_dir)
        # Everything that can be refused is checked before the first file is written.
        self.device = resolve_device(config.trainer.device, "trainer.device")
        if self.run_dir.exists() and not self.run_dir.is_dir():
            raise ValueError(f"{self.run_dir}: the run folder is a file")
        check_policy_config(config)
        torch.manual_seed(config.trainer.seed)
        np.random.seed(config.trainer.seed)
        data = load_task_data(config.data, config.rewards.outcome.metric)
        self.train_tasks, self.eval_tasks, self.gold_check = data.train, data.evaluation, data.gold_check
        self.not_on_engine = data.not_on_engine  # with data.engine: task id -> why it was left out there
        created = _first_missing(self.run_dir)
        try:
            self._set_up(resume)
        except BaseException:
            if created is not None:  # leave no half-made run folder (nor the parents made for it) behind
                shutil.rmtree(created, ignore_errors=True)
            raise

    def _set_up(self, resume: bool) -> None:
        config = self.config
        self.run_dir.mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(self.run_dir)
        checkpoint = latest_checkpoint(self.run_dir) if resume else None
        if resume and checkpoint is None:
            raise FileNotFoundError(f"{self.run_dir}: no checkpoint to resume from (checkpoints/latest)")
        self.model, self.tokenizer = self._load_policy(checkpoint)
        check_protocol_tokenizer(self.tokenizer, config.rollout.protocol, "rollout.protocol")
        self.reference = self._load_reference() if config.optim.kl_coef > 0 else None
        params = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(
            params, lr=config.optim.lr, betas=config.optim.betas, weight_decay=config.optim.weight_decay
        )
        warmup = config.optim.warmup_steps
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda n: min(1.0, (n + 1) / warmup) if warmup > 0 else 1.0
        )
        self.sampler = TaskSampler(len(self.train_tasks), config.trainer.seed)
        self.sample_rng = torch.Generator().manual_seed(config.trainer.seed)
        self.shuffle_rng = np.random.default_rng(config.trainer.seed)
        self.step = 0
        if checkpoint is not None:
            self._restore(load_trainer_state(checkpoint))
        self.sandbox = shared_sandbox()
        self.protocol = get_protocol(config.rollout.protocol)
        self.generator = self._make_generator()
        self.log = MetricsLog(self.run_dir, config.trainer, to_dict(config), resume_after=self.step)
        atomic_write_text(self.run_dir / "config.yaml", save_train_config(config))

    # --- set-up ------------------------------------------------------------------------------------------------

    def _model_source(self) -> Path:
        cfg = self.config.model
        if cfg.init == "pretrained":
            return Path(cfg.path or "")
        source = self.run_dir / "model-init"
        if not (source / "config.json").is_file():
            tiny = cfg.tiny
            build_tiny_model(
                model_corpus(self.train_tasks + self.eval_tasks, self.config.rollout.schema_sample_values), source,
                vocab_size=tiny.vocab_size, hidden_size=tiny.hidden_size, num_layers=tiny.num_layers,
                num_heads=tiny.num_heads, num_kv_heads=tiny.num_kv_heads, intermediate_size=tiny.intermediate_size,
                max_position_embeddings=tiny.max_position_embeddings, split_digits=tiny.split_digits,
                seed=self.config.trainer.seed,
            )  # fmt: skip
        return source

    def _load_policy(self, checkpoint: Path | None) -> tuple[torch.nn.Module, Any]:
        cfg = self.config.model
        lora = to_dict(cfg.lora) if cfg.lora.enabled else None
        if lora is not None:
            lora.pop("enabled")
        dtype = model_dtype(cfg.dtype, self.device)
        source = self._model_source()
        if checkpoint is not None and lora is None:
            source = checkpoint / "model"
        model = load_model(source, dtype=dtype, device=self.device, lora=lora,
                           gradient_checkpointing=cfg.gradient_checkpointing,
                           lora_key="model.lora.target_modules")  # fmt: skip
        if checkpoint is not None and lora is not None:
            from peft import set_peft_model_state_dict
            from safetensors.torch import load_file

            set_peft_model_state_dict(model, load_file(checkpoint / "model" / "adapter_model.safetensors"))
        return model, load_tokenizer(source)

    def _load_reference(self) -> torch.nn.Module:
        dtype = model_dtype(self.config.model.dtype, self.device)
        reference = load_model(self._model_source(), dtype=dtype, device=self.device)
        reference.requires_grad_(False)
        return reference.eval()

    def _make_generator(self) -> Any:
        if self.config.model.generator == "vllm":
            # vLLM serves the same weights from its own engine on the same GPU; they are synced after each update.
            generator = get_generator(
                "vllm", model_path=str(self._model_source()), dtype=self.config.model.dtype,
                enable_prefix_caching=True, gpu_memory_utilization=0.35, seed=self.config.trainer.seed,
            )  # fmt: skip
            generator.sync_weights(self.model)
            return generator
        return get_generator("hf", model=self.model, tokenizer=self.tokenizer)

    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.device.type == "cuda" and self.config.trainer.bf16:
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    # --- state -------------------------------------------------------------------------------------------------

    def _state(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "sampler": self.sampler.state_dict(),
            "sample_rng": self.sample_rng.get_state(),
            "shuffle_rng": self.shuffle_rng.bit_generator.state,
            "global_rng": capture_rng(),
        }

    def _restore(self, state: dict[str, Any]) -> None:
        self.step = int(state["step"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.sampler.load_state_dict(state["sampler"])
        self.sample_rng.set_state(state["sample_rng"])
        self.shuffle_rng.bit_generator.state = state["shuffle_rng"]
        restore_rng(state["global_rng"])

    def save(self) -> Path:
        """Write a checkpoint of the current step (atomically)."""
        return save_checkpoint(
            self.run_dir, self.step, self.model, self.tokenizer, self._state(),
            save_train_config(self.config), self.config.trainer.keep_checkpoints,
        )  # fmt: skip

    # --- the loop ----------------------------------------------------------------------------------------------

    def train_step(self) -> dict[str, float]:
        """One RL step: B tasks x G samples, rewards, credit, update. Returns the step's metrics."""
        cfg = self.config
        start = time.perf_counter()
        tasks = [self.train_tasks[i] for i in self.sampler.next(cfg.trainer.tasks_per_step)]
        times = RolloutTimes()
        trajectories = rollout(tasks, self.generator, self.protocol, self.sandbox, cfg.rollout, self.sample_rng, times)
        after_rollout = time.perf_counter()
        scores = score_episodes(trajectories, self.sandbox, cfg.rewards)
        step_batch, advantages = credit_rollout(trajectories, scores, cfg.credit)
        tokens = build_token_batch(trajectories, step_batch, advantages, cfg.credit, self._pad_id())
        after_credit = time.perf_counter()
        probe = UpdateProbe(self.model)
        update = policy_update(
            self.model, self.optimizer, self.scheduler, tokens, cfg.optim, self.shuffle_rng, self.device,
            self.reference, self._autocast(),
        )  # fmt: skip
        sync = getattr(self.generator, "sync_weights", None)
        if sync is not None:
            sync(self.model)
        end = time.perf_counter()
        self.step += 1
        generated = sum(t.n_generated for t in trajectories)
        return {
            "step": self.step,
            **episode_metrics(trajectories, scores),
            **update,
            "update_applied": probe.applied(),
            "lr": self.scheduler.get_last_lr()[0],
            "advantage_abs_mean": float(np.abs(advantages.advantages).mean()) if advantages.advantages.size else 0.0,
            **credit_diagnostics(step_batch, advantages),
            "tokens_per_s": generated / max(times.generate, 1e-9),
            "time_generate": times.generate,
            "time_execute": times.execute,
            "time_reward_credit": after_credit - after_rollout,
            "time_train": end - after_credit,
            "time_step": end - start,
        }

    def _pad_id(self) -> int:
        pad = self.tokenizer.pad_token_id
        return int(pad if pad is not None else self.tokenizer.eos_token_id or 0)

    def evaluate(self, tasks: list[Task] | None = None) -> dict[str, float]:
        """Greedy episodes on the held-out tasks: EX and the efficiency metrics."""
        tasks = self.eval_tasks if tasks is None else tasks
        if not tasks:
            return {}
        config = RolloutConfig(**{**to_dict(self.config.rollout), "group_size": 1, "temperature": 0.0})
        trajectories = rollout(tasks, self.generator, self.protocol, self.sandbox, config)
        return episode_metrics(trajectories, score_episodes(trajectories, self.sandbox, self.config.rewards))

    def run(self, on_step: Callable[[dict[str, float]], None] | None = None) -> dict[str, float]:
        """Train until ``trainer.max_steps``; returns the final evaluation metrics."""
        cfg = self.config.trainer
        try:
            while self.step < cfg.max_steps:
                metrics = self.train_step()
                self.log.write("train", metrics)
                if on_step is not None:
                    on_step(metrics)
                if cfg.eval_every and self.step % cfg.eval_every == 0 and self.step < cfg.max_steps:
                    self.log.write("eval", {"step": self.step, **self.evaluate()})
                if cfg.save_every and self.step % cfg.save_every == 0:
                    self.save()
            final = {"step": self.step, **self.evaluate()}
            self.log.write("eval", final)
            if latest_checkpoint(self.run_dir) != self.run_dir / "checkpoints" / f"step-{self.step:06d}":
                self.save()
            return final
        finally:
            self.log.close()
