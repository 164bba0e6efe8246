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
from finestep.config import ConfigError, check_range, from_dict, merge_overrides, option, to_dict
from finestep.credit import CreditConfig
from finestep.plugins import load_plugins, plugins_from_env
from finestep.rewards.config import RewardConfig

__all__ = [
    "DataConfig",
    "ModelConfig",
    "OptimConfig",
    "TinyModelConfig",
    "TrainConfig",
    "TrainerConfig",
    "load_train_config",
    "precision_warning",
    "save_train_config",
]


_DEVICE = re.compile(r"auto|cpu|cuda(:\d+)?|mps")


@dataclass(frozen=True)
class TinyModelConfig:
    """A tiny Qwen3-style model trained from scratch, with a BPE tokenizer trained on the task corpus."""

    vocab_size: int = option(2048, help="BPE vocabulary size of the tokenizer trained on the task corpus")
    hidden_size: int = option(64, help="model width")
    num_layers: int = option(2, help="transformer layers")
    num_heads: int = option(4, help="attention heads")
    num_kv_heads: int = option(2, help="key/value heads (grouped-query attention)")
    intermediate_size: int = option(128, help="MLP width")
    max_position_embeddings: int = option(4096, help="longest sequence the model accepts")
    split_digits: bool = option(True, help="one token per digit (as Qwen's tokenizers): numbers copy into SQL")

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

    enabled: bool = option(False, help="train LoRA adapters instead of every weight")
    r: int = option(16, help="LoRA rank")
    alpha: int = option(32, help="LoRA scaling alpha")
    dropout: float = option(0.0, help="LoRA dropout")
    target_modules: list[str] = field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"],
                                      metadata={"help": "the modules that get adapters"})

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

    init: Literal["tiny", "pretrained"] = option(
        "pretrained", help="tiny: build a tiny model into the run folder; pretrained: load path"
    )
    path: str | None = option(None, help="a local Hugging Face causal-LM folder (init: pretrained; an error with "
                              "init: tiny, which would not use it)")
    tiny: TinyModelConfig = field(default_factory=TinyModelConfig, metadata={"help": "the tiny model (init tiny)"})
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = option(
        "auto", help="weights dtype (auto: the checkpoint's, float32 on CPU; bfloat16 trains pure bf16 weights and "
        "AdamW states, docs/scale.md)"
    )
    lora: LoraSettings = field(default_factory=LoraSettings, metadata={"help": "LoRA adapters"})
    gradient_checkpointing: bool = option(False, help="recompute activations in the backward pass (less memory)")
    generator: Literal["hf", "vllm"] = option("hf", help="rollout backend: hf (transformers, KV cache) or vllm")


@dataclass(frozen=True)
class DataConfig:
    """Tasks: a benchmark folder, split into training and held-out databases (SQLWorld has its own split)."""

    benchmark: Literal["spider", "bird", "sqlworld"] = option("spider", help="where the tasks come from")
    path: str | None = option(None, help="benchmark folder (spider: default $FINESTEP_SPIDER_DIR or "
                              "../shared/data/spider; sqlworld: a built world)")  # fmt: skip
    eval_databases: int = option(4, help="databases held out for evaluation (the first ones in sorted order)")
    max_train_tasks: int | None = option(None, help="training tasks at most (null: all)")
    max_eval_tasks: int | None = option(32, help="evaluation tasks at most (null: all)")
    eval_split: str = option("test", help="sqlworld: the split evaluated (test: unseen databases; heldout or "
                             "valid: new questions on the training databases)")  # fmt: skip
    world_tier: Literal["default", "hard"] = option(
        "default", help="sqlworld: the world's tier (hard: 3-4 data look-ups per question, configs/sqlworld-hard.yaml); "
        "finestep bench builds its world with it, and the world at path must be of this tier"
    )  # fmt: skip
    drop_empty_gold: bool = option(True, help="spider/bird: leave out of training the tasks whose gold query "
                                   "returns no rows (an empty answer would earn full reward); those whose gold "
                                   "fails are always left out, held-out tasks never")  # fmt: skip
    engine: str | None = option(None, help="train (and evaluate) on another engine: duckdb:DIR or a PostgreSQL URL "
                                "prefix of the read-only role (postgresql://finestep_reader@HOST/?...), where "
                                "finestep db import put the benchmark; each task's db_id names its database there "
                                "(DIR/<db_id>.duckdb, database <db_id>). null: the benchmark's SQLite files. Tasks "
                                "whose gold does not run or agree with SQLite there are left out (reported)")  # fmt: skip
    transpile_gold: bool = option(True, help="with data.engine: transpile the SQLite gold queries to the engine's "
                                  "dialect with sqlglot (as finestep eval --transpile-gold)")  # fmt: skip

    def __post_init__(self) -> None:
        check_range(self, "eval_databases", 0)
        check_range(self, "max_train_tasks", 1)
        check_range(self, "max_eval_tasks", 0)
        if self.engine is not None and not self.engine.startswith(("duckdb:", "postgresql://", "postgres://")):
            raise ValueError(f"engine: expected duckdb:DIR or a PostgreSQL URL prefix (postgresql://USER@HOST/...), "
                             f"or null for the benchmark's SQLite files; got {self.engine!r}")  # fmt: skip


@dataclass(frozen=True)
class OptimConfig:
    """The policy update: PPO-clip on step-level advantages (FINESTEP.md section 3)."""

    lr: float = option(1e-5, help="AdamW learning rate")
    weight_decay: float = option(0.0, help="AdamW weight decay")
    betas: tuple[float, float] = option((0.9, 0.999), help="AdamW betas")
    warmup_steps: int = option(0, help="linear learning-rate warm-up, in optimizer steps")
    grad_clip: float = option(1.0, help="gradient norm clip")
    epochs: int = option(1, help="passes over each RL step's rollouts")
    minibatch_size: int = option(8, help="trajectories per optimizer step")
    eps_low: float = option(0.2, help="PPO clip below: ratio >= 1 - eps_low")
    eps_high: float = option(0.28, help="PPO clip above: ratio <= 1 + eps_high (clip-higher)")
    kl_coef: float = option(0.0, help="> 0 keeps a frozen reference policy and adds the k3 KL term")

    def __post_init__(self) -> None:
        check_range(self, "lr", 0, low_open=True)
        for name, low in (("weight_decay", 0), ("warmup_steps", 0), ("epochs", 1), ("minibatch_size", 1),
                          ("eps_low", 0), ("eps_high", 0), ("kl_coef", 0)):  # fmt: skip
            check_range(self, name, low)
        check_range(self, "grad_clip", 0, low_open=True)
        if len(self.betas) != 2 or not all(0 <= b < 1 for b in self.betas):
            raise ValueError(f"betas: must be two numbers in [0, 1), got {list(self.betas)!r}")


@dataclass(frozen=True)
class TrainerConfig:
    """The loop: steps, evaluation, checkpoints, logging."""

    max_steps: int = option(100, help="RL steps")
    tasks_per_step: int = option(8, help="tasks per RL step (each sampled group_size times)")
    seed: int = option(0, help="seed of sampling, data order and initialization")
    eval_every: int = option(0, help="RL steps between evaluations (0: only at the end)")
    save_every: int = option(1, help="RL steps between checkpoints")
    keep_checkpoints: int = option(2, help="newest checkpoints kept")
    device: str = option("auto", help="auto (cuda if available, else cpu), cpu or cuda")
    bf16: bool = option(True, help="bfloat16 autocast on GPU")
    tensorboard: bool = option(False, help="also log to TensorBoard (RUN_DIR/tensorboard)")
    wandb: bool = option(False, help="also log to Weights & Biases")
    wandb_project: str = option("finestep", help="the Weights & Biases project")

    def __post_init__(self) -> None:
        for name, low in (("max_steps", 0), ("tasks_per_step", 1), ("eval_every", 0), ("save_every", 0),
                          ("keep_checkpoints", 0)):  # fmt: skip
            check_range(self, name, low)
        if not _DEVICE.fullmatch(self.device):
            raise ValueError(f"device: expected auto, cpu, cuda, cuda:N or mps, got {self.device!r}")


@dataclass(frozen=True)
class TrainConfig:
    """Everything ``finestep train`` needs."""

    model: ModelConfig = field(default_factory=ModelConfig, metadata={"help": "the policy"})
    data: DataConfig = field(default_factory=DataConfig, metadata={"help": "the tasks"})
    rollout: RolloutConfig = field(default_factory=RolloutConfig, metadata={"help": "sampling and the environment"})
    rewards: RewardConfig = field(default_factory=RewardConfig, metadata={"help": "outcome, process rules, links"})
    credit: CreditConfig = field(default_factory=CreditConfig, metadata={"help": "the credit estimator"})
    optim: OptimConfig = field(default_factory=OptimConfig, metadata={"help": "the policy update"})
    trainer: TrainerConfig = field(default_factory=TrainerConfig, metadata={"help": "the loop"})
    plugins: list[str] = field(
        default_factory=list,
        metadata={"help": "modules (or .py files) imported before the config is read: their estimators, process "
                          "rules and environments can be named here (docs/extending.md)"},
    )

    def __post_init__(self) -> None:
        if self.model.init == "pretrained" and not self.model.path:
            raise ValueError("model.path: required unless model.init is tiny (a local Hugging Face model folder)")
        if self.model.init == "tiny" and self.model.path:
            raise ValueError(f"model.path: {self.model.path} would not be used: model.init is tiny, which builds a new "
                             "tiny model in the run folder; set model.init=pretrained to train that checkpoint, or "
                             "leave model.path out")  # fmt: skip


def load_train_config(
    path: str | Path | None, overrides: Sequence[str] = (), plugins: Sequence[str] = ()
) -> TrainConfig:
    """Read a YAML config (or the defaults when ``path`` is None), apply ``key=value`` overrides, validate.

    Before validating, the plugins are imported: ``FINESTEP_PLUGINS``, ``plugins`` (e.g. ``--plugin``, added to
    the config's own list) and the config's ``plugins`` key, so their rule weights and estimator names are known.
    """
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
    data = merge_overrides(data, overrides)
    listed = data.get("plugins") or []
    if not isinstance(listed, list) or not all(isinstance(p, str) for p in listed):
        raise ConfigError(f"plugins: expected a list of module names, got {listed!r}")
    listed = list(dict.fromkeys([*listed, *plugins]))
    if listed:
        data["plugins"] = listed
    load_plugins(plugins_from_env() + listed)
    return from_dict(TrainConfig, data)


def precision_warning(config: TrainConfig) -> str | None:
    """A warning when the update would be mostly rounded away: full fine-tuning of bf16 (or fp16) weights, whose
    AdamW steps of ``optim.lr`` fall below the weights' precision (bf16 keeps 8 significant bits: a weight of 0.02
    moves only by steps of ~1e-4), so most weights never change (docs/scale.md); None otherwise."""
    if config.model.dtype not in ("bfloat16", "float16") or config.model.lora.enabled or config.optim.lr >= 1e-4:
        return None
    return (f"model.dtype={config.model.dtype} with full fine-tuning keeps the weights and AdamW's moments in "
            f"{config.model.dtype}: an update of optim.lr={config.optim.lr:g} is below their precision for most "
            "weights and is rounded away (the update_applied metric shows the share that changed). For float32 master "
            "weights with bf16 compute use model.dtype=float32 trainer.bf16=true, or train LoRA adapters "
            "(model.lora.enabled=true); docs/scale.md")  # fmt: skip


def save_train_config(config: TrainConfig) -> str:
    """The config as YAML text (written beside every run and checkpoint)."""
    return yaml.safe_dump(to_dict(config), sort_keys=False)
