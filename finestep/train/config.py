"""The training configuration: one dataclass per section, YAML files and ``key=value`` overrides.

``load_train_config("configs/spider-tiny.yaml", ["trainer.max_steps=3"])`` reads, overrides and validates; an
error names the dotted key and what was expected (``rollout.group_size: expected an integer, got 'four'``).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from finestep.agent.rollout import RolloutConfig
from finestep.config import ConfigError, check_range, from_dict, merge_overrides, to_dict
from finestep.credit import CreditConfig
from finestep.rewards.config import RewardConfig

__all__ = [
    "DataConfig",
    "ModelConfig",
    "OptimConfig",
    "TinyModelConfig",
    "TrainConfig",
    "TrainerConfig",
    "load_train_config",
    "save_train_config",
]


_DEVICE = re.compile(r"auto|cpu|cuda(:\d+)?|mps")


@dataclass(frozen=True)
class TinyModelConfig:
    """A tiny Qwen3-style model trained from scratch, with a BPE tokenizer trained on the task corpus."""

    vocab_size: int = 2048
    hidden_size: int = 64
    num_layers: int = 2
    num_heads: int = 4
    num_kv_heads: int = 2
    intermediate_size: int = 128
    max_position_embeddings: int = 4096

    def __post_init__(self) -> None:
        check_range(self, "vocab_size", 256 + 16)  # a byte-level BPE starts from the 256 bytes and the specials
        for name in ("hidden_size", "num_layers", "num_heads", "num_kv_heads", "intermediate_size",
                     "max_position_embeddings"):  # fmt: skip
            check_range(self, name, 1)
        if self.hidden_size % self.num_heads:
            raise ValueError(f"hidden_size: must be a multiple of num_heads ({self.num_heads}), got {self.hidden_size}")
        if self.num_heads % self.num_kv_heads:
            raise ValueError(f"num_heads: must be a multiple of num_kv_heads ({self.num_kv_heads}), got {self.num_heads}")


@dataclass(frozen=True)
class LoraSettings:
    """Optional LoRA adapters (peft); off by default."""

    enabled: bool = False
    r: int = 16
    alpha: int = 32
    dropout: float = 0.0
    target_modules: list[str] = field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"])

    def __post_init__(self) -> None:
        check_range(self, "r", 1)
        check_range(self, "alpha", 1)
        check_range(self, "dropout", 0, 1, high_open=True)


@dataclass(frozen=True)
class ModelConfig:
    """Which policy to train.

    ``init: tiny`` builds a tiny model into the run directory (from ``tiny``); otherwise ``path`` is any local
    Hugging Face causal-LM directory (e.g. a Qwen3-4B checkpoint).
    """

    init: Literal["tiny", "pretrained"] = "pretrained"
    path: str | None = None
    tiny: TinyModelConfig = field(default_factory=TinyModelConfig)
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    lora: LoraSettings = field(default_factory=LoraSettings)
    gradient_checkpointing: bool = False
    generator: Literal["hf", "vllm"] = "hf"


@dataclass(frozen=True)
class DataConfig:
    """Tasks: a benchmark folder, split into training and held-out databases (SQLWorld has its own split)."""

    benchmark: Literal["spider", "bird", "sqlworld"] = "spider"
    path: str | None = None  # spider: $FINESTEP_SPIDER_DIR or ../shared/data/spider; sqlworld: a built world
    eval_databases: int = 4  # databases held out for evaluation (the first ones in sorted order)
    max_train_tasks: int | None = None
    max_eval_tasks: int | None = 32
    eval_split: str = "test"  # sqlworld: the split evaluated (test: unseen databases; heldout or valid: new
    # questions on the training databases)

    def __post_init__(self) -> None:
        check_range(self, "eval_databases", 0)
        check_range(self, "max_train_tasks", 1)
        check_range(self, "max_eval_tasks", 0)


@dataclass(frozen=True)
class OptimConfig:
    """The policy update: PPO-clip on step-level advantages (FINESTEP.md section 3)."""

    lr: float = 1e-5
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)
    warmup_steps: int = 0
    grad_clip: float = 1.0
    epochs: int = 1
    minibatch_size: int = 8
    eps_low: float = 0.2
    eps_high: float = 0.28
    kl_coef: float = 0.0  # > 0 keeps a frozen reference policy and adds the k3 KL term

    def __post_init__(self) -> None:
        if not self.lr > 0:
            raise ValueError(f"lr: must be > 0, got {self.lr!r}")
        for name, low in (("weight_decay", 0), ("warmup_steps", 0), ("epochs", 1), ("minibatch_size", 1),
                          ("eps_low", 0), ("eps_high", 0), ("kl_coef", 0)):  # fmt: skip
            check_range(self, name, low)
        if not self.grad_clip > 0:
            raise ValueError(f"grad_clip: must be > 0, got {self.grad_clip!r}")
        if len(self.betas) != 2 or not all(0 <= b < 1 for b in self.betas):
            raise ValueError(f"betas: must be two numbers in [0, 1), got {list(self.betas)!r}")


@dataclass(frozen=True)
class TrainerConfig:
    """The loop: steps, evaluation, checkpoints, logging."""

    max_steps: int = 100
    tasks_per_step: int = 8
    seed: int = 0
    eval_every: int = 0  # RL steps between evaluations (0: only at the end)
    save_every: int = 1
    keep_checkpoints: int = 2
    device: str = "auto"  # auto: cuda if available, else cpu
    bf16: bool = True  # autocast on GPU
    tensorboard: bool = False
    wandb: bool = False
    wandb_project: str = "finestep"

    def __post_init__(self) -> None:
        for name, low in (("max_steps", 0), ("tasks_per_step", 1), ("eval_every", 0), ("save_every", 0),
                          ("keep_checkpoints", 0)):  # fmt: skip
            check_range(self, name, low)
        if not _DEVICE.fullmatch(self.device):
            raise ValueError(f"device: expected auto, cpu, cuda, cuda:N or mps, got {self.device!r}")


@dataclass(frozen=True)
class TrainConfig:
    """Everything ``finestep train`` needs."""

    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    rewards: RewardConfig = field(default_factory=RewardConfig)
    credit: CreditConfig = field(default_factory=CreditConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)

    def __post_init__(self) -> None:
        if self.model.init == "pretrained" and not self.model.path:
            raise ValueError("model.path: required unless model.init is tiny (a local Hugging Face model folder)")


def load_train_config(path: str | Path | None, overrides: Sequence[str] = ()) -> TrainConfig:
    """Read a YAML config (or the defaults when ``path`` is None), apply ``key=value`` overrides, validate."""
    data: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except FileNotFoundError:
            raise ConfigError(f"{path}: config file not found") from None
        except IsADirectoryError:
            raise ConfigError(f"{path}: is a folder; expected a YAML config file") from None
        except UnicodeDecodeError as exc:
            raise ConfigError(f"{path}: not UTF-8 text (byte {exc.start})") from None
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: malformed YAML: {exc}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: expected a mapping of sections at the top level")
    return from_dict(TrainConfig, merge_overrides(data, overrides))


def save_train_config(config: TrainConfig) -> str:
    """The config as YAML text (written beside every run and checkpoint)."""
    return yaml.safe_dump(to_dict(config), sort_keys=False)
