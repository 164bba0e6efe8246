"""Checks of a model folder before any work: is it a model, does its tokenizer fit it, can the protocol use it.

Each check raises with the config key or flag that named the folder (``model.path``, ``--model``), so a mistake
is reported in the terms the user wrote it, before data is loaded or a run folder is made:

- ``check_model_folder``: the folder exists and holds a model (``config.json`` and weights, or a LoRA adapter
  over a local base model) and a tokenizer; a run folder, a file or an empty folder is named for what it is;
- ``check_tokenizer_vocab``: every token id the tokenizer can produce has a row in the model's embedding, and the
  model's own special ids (``eos_token_id``, ...) are tokens of the tokenizer;
- ``check_protocol_tokenizer``: the protocol can write its prompts and observations with this tokenizer (the
  ``json`` protocol needs a chat template that renders tool calls and tool messages).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from finestep.agent.protocol import get_protocol

__all__ = [
    "WEIGHT_FILES",
    "check_model_folder",
    "check_protocol_tokenizer",
    "check_tokenizer_vocab",
    "model_vocab_size",
]

#: Files one of which holds a Hugging Face model's weights (single file or sharded with an index).
WEIGHT_FILES: tuple[str, ...] = (
    "model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json",
)  # fmt: skip
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json")


def _read_json(path: Path, key: str) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ValueError(f"{key}: {path} cannot be read as JSON: {exc}") from None
    return data if isinstance(data, dict) else {}


def check_model_folder(path: str | Path, key: str = "model.path") -> Path:
    """``path`` as a ``Path`` if it is a loadable model folder; otherwise ``FileNotFoundError`` (missing) or
    ``ValueError`` naming ``key`` and saying what the folder is instead.

    A model folder has ``config.json``, weights (``WEIGHT_FILES`` or any ``*.safetensors``) and tokenizer files; a
    LoRA adapter folder (``adapter_config.json``, as LoRA runs save their checkpoints) counts when its base model
    (``base_model_name_or_path``) is itself a local model folder.
    """
    folder = Path(path).expanduser()
    if not folder.exists():
        raise FileNotFoundError(f"{key}: no model folder at {folder} (models load from local folders only)")
    if not folder.is_dir():
        raise ValueError(f"{key}: {folder} is a file; expected a Hugging Face model folder (config.json, weights, "
                         "tokenizer files)")  # fmt: skip
    config, adapter = folder / "config.json", folder / "adapter_config.json"
    if not config.is_file() and adapter.is_file():
        base = _read_json(adapter, key).get("base_model_name_or_path")
        if not base or not Path(str(base)).expanduser().is_dir():
            raise ValueError(f"{key}: {folder} holds a LoRA adapter whose base model ({base!r}, "
                             "base_model_name_or_path in adapter_config.json) is not a local folder")  # fmt: skip
        check_model_folder(base, f"{key} (the adapter's base model)")
    elif not config.is_file():
        if (folder / "config.yaml").is_file() and (folder / "checkpoints").is_dir():
            pointer = folder / "checkpoints" / "latest"
            newest = pointer.read_text(encoding="utf-8").strip() if pointer.is_file() else "step-NNNNNN"
            raise ValueError(f"{key}: {folder} is a finestep run folder, not a model; continue the run with "
                             f"finestep train --resume {folder}, or start from its newest checkpoint's model, "
                             f"{folder / 'checkpoints' / newest / 'model'}")  # fmt: skip
        raise ValueError(f"{key}: {folder} has no config.json: not a Hugging Face model folder")
    elif not any((folder / name).is_file() for name in WEIGHT_FILES) and not any(folder.glob("*.safetensors")):
        raise ValueError(f"{key}: {folder} has config.json but no weights ({', '.join(WEIGHT_FILES[:3])} or "
                         "shards): an incomplete download?")  # fmt: skip
    if not any((folder / name).is_file() for name in _TOKENIZER_FILES):
        raise ValueError(f"{key}: {folder} has no tokenizer files ({', '.join(_TOKENIZER_FILES)}); copy the "
                         "tokenizer of the checkpoint into it")  # fmt: skip
    return folder


def model_vocab_size(path: str | Path) -> tuple[int | None, dict[str, Any]]:
    """The embedding rows of the model in ``path`` (``vocab_size`` of ``config.json``, or of its ``text_config``)
    and the config itself; an adapter folder reads its base model's."""
    folder = Path(path)
    if not (folder / "config.json").is_file() and (folder / "adapter_config.json").is_file():
        folder = Path(str(_read_json(folder / "adapter_config.json", str(path)).get("base_model_name_or_path")))
    config = _read_json(folder / "config.json", str(path))
    vocab = config.get("vocab_size", (config.get("text_config") or {}).get("vocab_size"))
    return (int(vocab) if isinstance(vocab, int) else None), config


def _special_ids(config: dict[str, Any]) -> dict[str, int]:
    out = {}
    for name in ("eos_token_id", "pad_token_id", "bos_token_id"):
        value = config.get(name)
        for i in value if isinstance(value, list) else [value]:
            if isinstance(i, int) and not isinstance(i, bool):
                out[f"{name} {i}"] = i
    return out


def check_tokenizer_vocab(tokenizer: Any, path: str | Path, key: str = "model.path") -> None:
    """``ValueError`` naming ``key`` when the tokenizer and the model in ``path`` do not belong together: a token id
    of the tokenizer (its special tokens first) beyond the model's embedding, or a special id of the model's
    ``config.json`` that the tokenizer does not have. A model may have more rows than the tokenizer has tokens
    (Qwen pads its vocabulary to a multiple of 128)."""
    vocab, config = model_vocab_size(path)
    if vocab is None:
        return
    size = len(tokenizer)
    specials = {str(t): tokenizer.convert_tokens_to_ids(t) for t in getattr(tokenizer, "all_special_tokens", [])}
    beyond = {t: i for t, i in specials.items() if isinstance(i, int) and i >= vocab}
    if beyond or size > vocab:
        named = ", ".join(f"{t}={i}" for t, i in sorted(beyond.items(), key=lambda kv: kv[1])[:5])
        raise ValueError(
            f"{key}: the tokenizer in {path} does not match the model's vocabulary: it has {size} tokens"
            + (f" (special tokens {named})" if named else "")
            + f" but the model's embedding has {vocab} rows (vocab_size in config.json); ids from {vocab} up have "
            "no embedding. Use the tokenizer that came with this checkpoint"
        )
    missing = {name: i for name, i in _special_ids(config).items() if i >= size}
    if missing:
        raise ValueError(f"{key}: the model's {', '.join(missing)} (config.json) are not tokens of the tokenizer in "
                         f"{path} ({size} tokens): the tokenizer does not belong to this checkpoint")  # fmt: skip


def check_protocol_tokenizer(tokenizer: Any, protocol: str, key: str = "rollout.protocol") -> None:
    """``ValueError`` naming ``key`` when ``protocol`` cannot write its prompts and observations with ``tokenizer``
    (``Protocol.tokenizer_problem``, e.g. the json protocol without a tool-capable chat template)."""
    problem = get_protocol(protocol).tokenizer_problem(tokenizer)
    if problem is not None:
        raise ValueError(f"{key}: {protocol}: {problem}")
