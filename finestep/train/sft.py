"""Supervised warm start on trajectories (docs/trajectories.md): loss on the model's own tokens only.

Each trajectory is replayed through the environment (``finestep.env``, as ``RolloutConfig`` sets it up) into
``prompt + turn_1 + observation_1 + ... + turn_n``, token-exact as a rollout would build it. A step's turn text is
its ``text`` field when given, else built from its action (``<sql>Q</sql>``); the observation is the step's
``observation`` when given, else the environment's (its SQL run in the sandbox). Prompt and observation tokens
get no loss. A record that goes on after its episode ended (a solution, end-of-sequence or the turn limit) is
refused, naming its line.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from finestep.agent.protocol import Protocol, get_protocol
from finestep.agent.rollout import RolloutConfig, make_env
from finestep.data.task import Task
from finestep.rewards.records import TrajectoryRecord, read_trajectories
from finestep.sql.executor import SqlSandbox

__all__ = ["SFTConfig", "SFTExample", "build_sft_examples", "train_sft"]


@dataclass(frozen=True)
class SFTConfig:
    """Supervised fine-tuning settings."""

    epochs: int = 3
    lr: float = 1e-3
    batch_size: int = 8
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    warmup_steps: int = 10
    min_lr_ratio: float = 0.1  # the learning rate decays linearly to lr * min_lr_ratio at the last step
    seed: int = 0


@dataclass
class SFTExample:
    """One training sequence: ``input_ids`` (T,) and ``labels_mask`` (T,) true on the model's own tokens."""

    input_ids: list[int]
    labels_mask: list[bool]


def _turn_text(step: dict[str, Any], protocol: Protocol) -> str:
    if step.get("text"):
        return step["text"]
    if step["kind"] in ("sql", "solution") and step.get("sql"):
        return protocol.render_action(step["kind"], step["sql"])
    raise ValueError("a step needs 'text' or a 'sql' action to be used for SFT")


def _stop_reason(step: dict[str, Any]) -> str:
    """The generator's stop reason a recorded step had (rollout files keep it; others: ``length`` if truncated)."""
    reason = step.get("stop_reason")
    if reason in ("stop", "eos", "length"):
        return str(reason)
    return "length" if step.get("truncated") else "stop"


def build_sft_examples(
    records: list[TrajectoryRecord], tokenizer: Any, protocol: Protocol | str, prompt: RolloutConfig, sandbox: SqlSandbox
) -> list[SFTExample]:
    """Tokenize trajectories for SFT exactly as rollouts with ``prompt`` (schema style, instructions, turns)
    build them, by replaying each through the environment; errors name the line of the trajectory file."""
    protocol = get_protocol(protocol)
    examples = []
    for record in records:
        where = f"line {record.line}"
        if record.db_path is None or not record.db_path.is_file():
            raise ValueError(f"{where}: field 'db_path' must name an existing database (the prompt shows its schema)")
        task = Task(id=record.task_id, index=0, question=record.question, db_id=record.db_path.stem,
                    db_path=record.db_path, gold_sql=record.gold_sql or "",
                    evidence=str(record.raw.get("evidence") or ""))  # fmt: skip
        env = make_env(prompt, protocol, sandbox, max_total_tokens=None)  # text mode: the record's observations
        env.reset(task, prompt_ids=protocol.prompt_ids(tokenizer, env.prompt(task)))
        for t, step in enumerate(record.steps):
            if env.done:
                raise ValueError(f"{where}: steps[{t}]: the episode already ended ({env.trajectory.end_reason}) at "
                                 f"steps[{t - 1}]; the record has {len(record.steps)} steps")  # fmt: skip
            try:
                text = _turn_text(step, protocol)
            except ValueError as exc:
                raise ValueError(f"{where}: steps[{t}]: {exc}") from None
            played = env.step(text, tokenizer(text, add_special_tokens=False).input_ids, stop_reason=_stop_reason(step))
            if t < len(record.steps) - 1 and not played.done:
                given = step.get("observation")
                observation = given if given is not None else played.observation
                env.append_observation(protocol.observation_ids(tokenizer, observation))  # type: ignore[attr-defined]
        traj = env.trajectory
        mask = [False] * len(traj.token_ids)
        for played_step in traj.steps:
            mask[played_step.span[0] : played_step.span[1]] = [True] * (played_step.span[1] - played_step.span[0])
        examples.append(SFTExample(list(traj.token_ids), mask))
    return examples


def _pad(examples: list[SFTExample], pad_id: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    width = max(len(e.input_ids) for e in examples)
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    attention = torch.zeros((len(examples), width), dtype=torch.long)
    labels = torch.full((len(examples), width), -100, dtype=torch.long)
    for row, example in enumerate(examples):
        n = len(example.input_ids)
        ids[row, :n] = torch.tensor(example.input_ids)
        attention[row, :n] = 1
        keep = torch.tensor(example.labels_mask)
        labels[row, :n] = torch.where(keep, ids[row, :n], torch.full_like(ids[row, :n], -100))
    return ids, attention, labels


def train_sft(
    model: torch.nn.Module,
    examples: list[SFTExample],
    config: SFTConfig,
    pad_id: int,
    device: torch.device,
    on_step: Callable[[int, int, float], None] | None = None,
) -> list[float]:
    """AdamW over shuffled minibatches for ``config.epochs``; returns the mean loss of each epoch.

    ``on_step(step, total_steps, loss)`` is called after every optimizer step (progress bars).
    """
    if not examples:
        raise ValueError("no SFT examples")
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    optimizer = torch.optim.AdamW(
        [p for p in model.parameters() if p.requires_grad], lr=config.lr, weight_decay=config.weight_decay
    )
    per_epoch = math.ceil(len(examples) / config.batch_size)
    total, step, epoch_losses = per_epoch * config.epochs, 0, []

    def lr_factor(n: int) -> float:
        if n < config.warmup_steps:
            return (n + 1) / config.warmup_steps
        progress = (n - config.warmup_steps) / max(1, total - config.warmup_steps)
        return 1.0 - (1.0 - config.min_lr_ratio) * min(1.0, progress)

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor)
    model.train()
    for _ in range(config.epochs):
        order = rng.permutation(len(examples))
        losses = []
        for start in range(0, len(examples), config.batch_size):
            ids, attention, labels = _pad([examples[i] for i in order[start : start + config.batch_size]], pad_id)
            out = model(input_ids=ids.to(device), attention_mask=attention.to(device), labels=labels.to(device))
            optimizer.zero_grad(set_to_none=True)
            out.loss.backward()
            torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], config.grad_clip)
            optimizer.step()
            scheduler.step()
            step += 1
            losses.append(float(out.loss.detach()))
            if on_step is not None:
                on_step(step, total, losses[-1])
        epoch_losses.append(sum(losses) / len(losses))
    return epoch_losses


def load_sft_records(path: str | Path, db_root: str | Path | None = None) -> list[TrajectoryRecord]:
    """Trajectories for SFT, validated as for ``finestep credit``."""
    return read_trajectories(path, db_root)
