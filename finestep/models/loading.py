"""Loading a causal LM and its tokenizer from a local folder (a tiny model or a real checkpoint such as Qwen3-4B).

Nothing is downloaded: ``local_files_only=True`` everywhere, and a missing folder is reported with its path.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

import torch

__all__ = [
    "DEFAULT_LORA_TARGETS",
    "ModelNotFoundError",
    "load_model",
    "load_tokenizer",
    "model_dtype",
    "quiet_libraries",
    "resolve_device",
]


def quiet_libraries() -> None:
    """Silence the Hugging Face libraries' per-file progress bars, hub notices and advisory warnings.

    Our own progress output says what is happening; called by the CLI and by worker processes it starts.
    """
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        hf_logging.set_verbosity_error()
    except ImportError:  # pragma: no cover - transformers is a dependency
        pass

#: The attention and MLP projections of Llama/Qwen-style decoders.
DEFAULT_LORA_TARGETS: tuple[str, ...] = (
    "q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj",
)


class ModelNotFoundError(FileNotFoundError):
    """Raised when a model or tokenizer folder does not exist or lacks its files."""


def resolve_device(name: str, key: str = "--device") -> torch.device:
    """The torch device for ``auto``, ``cpu``, ``cuda``, ``cuda:N`` or ``mps``; ``ValueError`` naming ``key``
    for another name or a device this machine does not have."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name == "mps":
        if not torch.backends.mps.is_available():
            raise ValueError(f"{key}: mps requested but this machine has no MPS device; use auto or cpu")
        return torch.device("mps")
    kind, _, index = name.partition(":")
    if kind != "cuda" or (index and not index.isdigit()):
        raise ValueError(f"{key}: expected auto, cpu, cuda, cuda:N or mps, got {name!r}")
    if not torch.cuda.is_available():
        raise ValueError(f"{key}: {name} requested but this machine has no CUDA device; use auto or cpu")
    if index and int(index) >= torch.cuda.device_count():
        raise ValueError(f"{key}: {name} requested but this machine has {torch.cuda.device_count()} CUDA device(s)")
    return torch.device(name)


def model_dtype(name: str | None, device: torch.device | str) -> torch.dtype | str | None:
    """The dtype to load weights in: ``"auto"`` (or None) is float32 on a CPU (transformers 5 would otherwise load a
    bf16 checkpoint in bf16 there) and the checkpoint's own dtype elsewhere; other names are torch dtypes."""
    if name in (None, "auto"):
        return torch.float32 if torch.device(device).type == "cpu" else "auto"
    return getattr(torch, name) if isinstance(name, str) else name


def _check_dir(path: str | Path, needed: tuple[str, ...]) -> Path:
    path = Path(path).expanduser()
    if not path.is_dir():
        raise ModelNotFoundError(f"no model folder at {path} (models load from local folders only)")
    if not any((path / name).is_file() for name in needed):
        raise ModelNotFoundError(f"{path} has none of {', '.join(needed)}: not a Hugging Face model folder")
    return path


def load_tokenizer(path: str | Path):  # -> PreTrainedTokenizerBase
    """The tokenizer saved in the local folder ``path``, with a pad token (eos when the folder defines none)."""
    from transformers import AutoTokenizer

    path = _check_dir(path, ("tokenizer.json", "tokenizer_config.json", "vocab.json"))
    tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def _check_lora_targets(model: torch.nn.Module, targets: list[str], key: str) -> None:
    names = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules()}
    missing = [t for t in targets if t not in names]
    if missing:
        linear = sorted({n.rsplit(".", 1)[-1] for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)})
        raise ValueError(f"{key}: {missing} name no module of this model; its linear layers are "
                         f"{', '.join(linear)}")  # fmt: skip


def _lora_config(lora: dict[str, Any]):  # -> peft.LoraConfig
    from peft import LoraConfig

    kwargs = dict(lora)
    if "alpha" in kwargs:
        kwargs["lora_alpha"] = kwargs.pop("alpha")
    if "dropout" in kwargs:
        kwargs["lora_dropout"] = kwargs.pop("dropout")
    kwargs.setdefault("r", 16)
    kwargs.setdefault("lora_alpha", 2 * kwargs["r"])
    kwargs["target_modules"] = list(kwargs.get("target_modules") or DEFAULT_LORA_TARGETS)
    kwargs.setdefault("task_type", "CAUSAL_LM")
    return LoraConfig(**kwargs)


def load_model(
    path: str | Path,
    *,
    dtype: str | torch.dtype | None = None,
    device: str | torch.device = "cpu",
    lora: dict[str, Any] | None = None,
    gradient_checkpointing: bool = False,
    lora_key: str = "lora.target_modules",
) -> torch.nn.Module:
    """A causal LM from the local folder ``path`` (any ``AutoModelForCausalLM`` architecture).

    Args:
        path: folder with ``config.json`` and the weights.
        dtype: ``torch.bfloat16``, ``"bfloat16"``, ``"auto"`` (the checkpoint's), ...; None keeps the
            library default.
        device: where the model is moved.
        lora: when given, the model is wrapped in a ``peft`` LoRA adapter; keys are ``LoraConfig`` fields,
            with the short names ``alpha`` and ``dropout`` accepted (defaults: r=16, alpha=2r, the attention
            and MLP projections). Only the adapter weights are then trainable.
        gradient_checkpointing: recompute activations in the backward pass (non-reentrant), for memory.
        lora_key: the config key of the LoRA target modules, named when one matches no module.

    A folder holding only a LoRA adapter (``adapter_config.json``, as LoRA runs save their checkpoints) loads its
    base model (``base_model_name_or_path``, a local folder) with the adapter merged in.

    Returns:
        The model (a ``PeftModel`` when ``lora`` is given), in eval mode.
    """
    from transformers import AutoModelForCausalLM

    path = _check_dir(path, ("config.json", "adapter_config.json"))
    kwargs: dict[str, Any] = {"local_files_only": True}
    if dtype is not None:
        kwargs["dtype"] = getattr(torch, dtype) if isinstance(dtype, str) and dtype != "auto" else dtype
    if not (path / "config.json").is_file():  # a LoRA adapter: its base model with the adapter merged in
        import json

        from peft import PeftModel

        base = json.loads((path / "adapter_config.json").read_text(encoding="utf-8")).get("base_model_name_or_path")
        model = AutoModelForCausalLM.from_pretrained(str(_check_dir(str(base), ("config.json",))), **kwargs)
        model = PeftModel.from_pretrained(model, str(path), local_files_only=True).merge_and_unload()
    else:
        model = AutoModelForCausalLM.from_pretrained(str(path), **kwargs)
    model.to(device)
    if gradient_checkpointing:
        enable = getattr(model, "activation_checkpointing_enable", None)  # the transformers 5 name
        if enable is not None:
            enable(activation_checkpointing_kwargs={"use_reentrant": False})
        else:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if lora is not None:
        from peft import get_peft_model

        config = _lora_config(lora)
        _check_lora_targets(model, sorted(config.target_modules), lora_key)
        with warnings.catch_warnings():  # peft reads a property that transformers 5 renamed
            warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
            model = get_peft_model(model, config)
    model.eval()
    return model
