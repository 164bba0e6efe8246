"""Models: tiny Qwen3-style models for CPU runs, loading of local checkpoints (optionally with LoRA), sampling.

``build_tiny_model(corpus, out_dir)`` -> folder; ``load_model(folder)`` / ``load_tokenizer(folder)`` load it or a
real checkpoint (e.g. Qwen3-4B) the same way; ``sample_next`` draws the next tokens from a batch of logits.
``models.qwen3`` builds Qwen3-architecture checkpoints with random weights from the published shapes,
``models.checks`` refuses a folder that will not work as given (naming the key), ``models.memory`` computes the
memory of training a shape.
"""

from __future__ import annotations

from finestep.models.loading import (
    DEFAULT_LORA_TARGETS,
    ModelNotFoundError,
    load_model,
    load_tokenizer,
    quiet_libraries,
)
from finestep.models.ragged import RaggedKVBatch
from finestep.models.sampling import StopChecker, sample_next
from finestep.models.tiny import CHAT_TEMPLATE, PROTOCOL_TAGS, SPECIAL_TOKENS, build_tiny_model

__all__ = [
    "CHAT_TEMPLATE",
    "DEFAULT_LORA_TARGETS",
    "PROTOCOL_TAGS",
    "SPECIAL_TOKENS",
    "ModelNotFoundError",
    "RaggedKVBatch",
    "StopChecker",
    "build_tiny_model",
    "load_model",
    "load_tokenizer",
    "quiet_libraries",
    "sample_next",
]
