"""Memory of training a Qwen3-architecture model with our trainer, computed from its shape (pure functions).

What our trainer holds (``finestep.train``; docs/scale.md has the table for Qwen3-4B):

- weights in ``model.dtype`` (bf16: 2 bytes per parameter); no float32 master copy;
- full training: gradients in the weights' dtype and AdamW's two moments in it too (``torch.optim.AdamW`` keeps
  ``exp_avg``/``exp_avg_sq`` like the parameter): 2 + 2 + 4 bytes per parameter in bf16;
- LoRA (peft): frozen weights without gradients; the adapters are float32 (peft casts them up over a bf16 base),
  with float32 gradients and moments: 16 bytes per adapter parameter;
- activations saved for backward, per token of a micro-batch (``activation_bytes_per_token``), counted tensor by
  tensor as HF's ``Qwen3DecoderLayer`` with SDPA attention saves them in bf16 (``layer_activation_bytes``; checked on a CPU against
  ``torch.autograd.graph.saved_tensors_hooks``: tests/test_memory.py). Gradient checkpointing keeps one hidden
  state per layer and token, and recomputes one layer at a time in backward;
- the logits: ``sequence_log_probs`` reads them in place in the model's dtype (the loss reduces them in float32 a
  chunk at a time), so backward holds them and their gradient: 2 x V x 2 bytes per token in bf16.

All sizes are bytes; ``shape`` is a mapping of ``QWEN3_SHAPES``' keys (``hidden_size``, ``intermediate_size``,
``num_hidden_layers``, ``num_attention_heads``, ``num_key_value_heads``, ``head_dim``, ``vocab_size``, and
``tie_word_embeddings``, default true).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

__all__ = [
    "GIB",
    "activation_bytes_per_token",
    "kv_cache_bytes",
    "layer_activation_bytes",
    "lora_parameter_count",
    "parameter_count",
    "training_memory",
]

GIB = float(1 << 30)
_F32 = 4
_LINEARS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def _dims(shape: Mapping[str, Any]) -> tuple[int, int, int, int, int, int, int, int]:
    h, i = int(shape["hidden_size"]), int(shape["intermediate_size"])
    nh, nkv, d = int(shape["num_attention_heads"]), int(shape["num_key_value_heads"]), int(shape["head_dim"])
    return h, i, nh, nkv, d, nh * d, nkv * d, int(shape["vocab_size"])


def _linear_sizes(shape: Mapping[str, Any]) -> dict[str, tuple[int, int]]:
    """(in_features, out_features) of each projection of a decoder layer."""
    h, i, _, _, _, q, kv, _ = _dims(shape)
    return {"q_proj": (h, q), "k_proj": (h, kv), "v_proj": (h, kv), "o_proj": (q, h),
            "gate_proj": (h, i), "up_proj": (h, i), "down_proj": (i, h)}  # fmt: skip


def parameter_count(shape: Mapping[str, Any]) -> int:
    """Parameters of the model: embedding (and an untied head), per layer the projections, two RMSNorms and the
    q/k norms of Qwen3, and the final norm."""
    h, _, _, _, d, _, _, vocab = _dims(shape)
    layers = int(shape["num_hidden_layers"])
    per_layer = sum(a * b for a, b in _linear_sizes(shape).values()) + 2 * h + 2 * d
    head = 0 if shape.get("tie_word_embeddings", True) else vocab * h
    return vocab * h + head + layers * per_layer + h


def lora_parameter_count(shape: Mapping[str, Any], rank: int, targets: Sequence[str] = _LINEARS[:4]) -> int:
    """Adapter parameters of LoRA with rank ``rank`` on the ``targets`` projections of every layer:
    ``rank * (in + out)`` each."""
    sizes = _linear_sizes(shape)
    return int(shape["num_hidden_layers"]) * sum(rank * sum(sizes[t]) for t in targets)


def layer_activation_bytes(
    shape: Mapping[str, Any], weights_bytes: int = 2, lora_rank: int | None = None,
    lora_targets: Sequence[str] = _LINEARS[:4],
) -> int:
    """Bytes one decoder layer saves for backward per token, tensor by tensor, as counted on a CPU.

    Full training (``lora_rank`` None): each RMSNorm keeps a float32 copy of its input, its rsqrt, its output and
    the projection's copy of it (a CPU bf16 matmul copies its 3-D input; on CUDA that copy is a view, so there
    this counts ``2 b h + b i`` bytes per layer too many); q/k norms the same per head; SDPA its inputs, output and
    per-head logsumexp (the rotary cos and sin are shared by all layers: ``activation_bytes_per_token``); the MLP its gate and up outputs, ``silu(gate)`` and their product, with the product's
    copy. LoRA on a frozen base keeps no input a frozen weight's gradient would need: the norms keep their float32
    input and rsqrt, each targeted projection a float32 copy of its input (peft casts it to the adapters' dtype)
    and its rank-``r`` intermediate, the MLP three ``i``-wide tensors.
    """
    h, i, nh, nkv, _, q, kv, _ = _dims(shape)
    b = int(weights_bytes)
    sdpa = b * q + 2 * b * kv + _F32 * nh + b * q  # its inputs q, k, v; logsumexp per head; output
    if not lora_rank:
        norm = _F32 * h + _F32 + 2 * b * h
        qk_norms = (_F32 * q + _F32 * nh + b * q) + (_F32 * kv + _F32 * nkv + b * kv)
        return 2 * norm + qk_norms + sdpa + 4 * b * i
    sizes = _linear_sizes(shape)
    adapters = sum(_F32 * sizes[t][0] + _F32 * lora_rank for t in lora_targets)
    qk_norms = (_F32 * q + _F32 * nh) + (_F32 * kv + _F32 * nkv)
    return 2 * (_F32 * h + _F32) + adapters + qk_norms + sdpa + 3 * b * i


def activation_bytes_per_token(
    shape: Mapping[str, Any],
    weights_bytes: int = 2,
    gradient_checkpointing: bool = False,
    lora_rank: int | None = None,
    lora_targets: Sequence[str] = _LINEARS[:4],
) -> int:
    """Bytes of activations alive at the peak of backward per token of a micro-batch, the logits included (what
    ``sequence_log_probs`` and the loss keep), the logits' gradient not (see ``training_memory``).

    Without gradient checkpointing every layer keeps ``layer_activation_bytes``; with it, each layer keeps only
    its input hidden state, and one layer's activations are alive again while it is recomputed in backward.
    """
    h, _, _, _, d, _, _, vocab = _dims(shape)
    b = int(weights_bytes)
    layers = int(shape["num_hidden_layers"])
    per_layer = layer_activation_bytes(shape, b, lora_rank, lora_targets)
    rotary = 2 * b * d  # cos and sin, computed once and shared by the layers
    body = layers * b * h + per_layer if gradient_checkpointing else layers * per_layer + rotary
    final_norm = _F32 * h + _F32 + (0 if lora_rank else 2 * b * h)
    return body + final_norm + b * vocab + 8 + 8 + _F32  # logits; input ids, labels, logsumexp per token


def kv_cache_bytes(shape: Mapping[str, Any], tokens: int, weights_bytes: int = 2) -> int:
    """The KV cache of ``tokens`` tokens (all sequences together) during rollouts: keys and values per layer."""
    _, _, _, _, _, _, kv, _ = _dims(shape)
    return 2 * int(shape["num_hidden_layers"]) * kv * int(weights_bytes) * int(tokens)


def training_memory(
    shape: Mapping[str, Any],
    tokens: int,
    *,
    weights_bytes: int = 2,
    lora_rank: int | None = None,
    lora_targets: Sequence[str] = _LINEARS[:4],
    gradient_checkpointing: bool = False,
    chunk_rows: int = 1024,
) -> dict[str, float]:
    """The memory of one training micro-batch of ``tokens`` tokens (sequences x padded length), in bytes.

    Returns:
        ``parameters`` (a count), ``weights``, ``gradients``, ``optimizer`` (AdamW's moments), ``adapters`` (LoRA
        weights, gradients and moments), ``activations`` (saved for backward, logits included), ``logits_grad`` (the
        logits' gradient and the loss's float32 chunk buffers, alive in backward) and ``total``, their sum: the peak
        of a step, before allocator overhead and the CUDA context.
    """
    b = int(weights_bytes)
    n = parameter_count(shape)
    vocab = int(shape["vocab_size"])
    out: dict[str, float] = {"parameters": float(n), "weights": float(n * b)}
    if lora_rank:
        adapters = lora_parameter_count(shape, lora_rank, lora_targets)
        out.update(gradients=0.0, optimizer=0.0, adapters=float(adapters * 4 * _F32))
    else:
        out.update(gradients=float(n * b), optimizer=float(2 * n * b), adapters=0.0)
    out["activations"] = float(tokens * activation_bytes_per_token(shape, b, gradient_checkpointing, lora_rank,
                                                                   lora_targets))  # fmt: skip
    out["logits_grad"] = float(tokens * b * vocab + 3 * min(tokens, chunk_rows) * vocab * _F32)
    out["total"] = sum(v for k, v in out.items() if k != "parameters")
    return out
