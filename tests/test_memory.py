"""The memory formulas of ``finestep.models.memory`` (docs/scale.md's table) against what torch holds on a CPU:
parameters of the published Qwen3 shapes, gradients and AdamW moments after a real step, and the activations a
forward pass saves for backward (``saved_tensors_hooks``), with and without LoRA and gradient checkpointing."""

from __future__ import annotations

import pytest
import torch
from transformers import Qwen3ForCausalLM

from finestep.models.loading import _lora_config
from finestep.models.memory import (
    activation_bytes_per_token,
    kv_cache_bytes,
    layer_activation_bytes,
    lora_parameter_count,
    parameter_count,
    training_memory,
)
from finestep.models.qwen3 import QWEN3_SHAPES, qwen3_config
from finestep.train.update import sequence_log_probs

#: A shape none of the formulas was written from: 3 layers, grouped-query attention 8/2, an untied-size vocabulary.
SHAPE = {"hidden_size": 128, "intermediate_size": 320, "num_hidden_layers": 3, "num_attention_heads": 8,
         "num_key_value_heads": 2, "head_dim": 32, "vocab_size": 1000}  # fmt: skip


def _model(shape: dict, dtype: torch.dtype = torch.bfloat16, lora: int | None = None, gc: bool = False):
    torch.manual_seed(0)
    model = Qwen3ForCausalLM(qwen3_config(shape, 0, 1, 0)).to(dtype)
    if gc:
        model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    if lora:
        from peft import get_peft_model

        model = get_peft_model(model, _lora_config({"r": lora, "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj"]}))
    return model.train()


@pytest.mark.parametrize(("name", "published"), [("0.6b", 0.6e9), ("4b", 4.0e9)])
def test_parameter_counts_of_the_published_shapes(name: str, published: float) -> None:
    with torch.device("meta"):
        model = Qwen3ForCausalLM(qwen3_config(name, 0, 1, 0))
    count = sum(p.numel() for p in model.parameters())
    assert parameter_count(QWEN3_SHAPES[name]) == count
    assert abs(count - published) / published < 0.03  # Qwen3-0.6B: 596M; Qwen3-4B: 4.02B (tied embeddings)


def test_gradients_and_adamw_moments_are_what_the_formula_says() -> None:
    for lora in (None, 4):
        model = _model(SHAPE, lora=lora)
        params = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(params, lr=1e-3)
        ids = torch.randint(0, 1000, (2, 16))
        sequence_log_probs(model, ids, torch.ones_like(ids))[0].sum().backward()
        optimizer.step()
        grads = sum(p.grad.nbytes for p in params)
        moments = sum(t.nbytes for state in optimizer.state.values() for k, t in state.items() if k != "step")
        weights = sum(p.nbytes for n, p in model.named_parameters() if "lora_" not in n)
        expected = training_memory(SHAPE, 32, lora_rank=lora)
        assert weights == expected["weights"]
        if lora:
            assert sum(p.numel() for p in params) == lora_parameter_count(SHAPE, lora)
            assert all(p.dtype == torch.float32 for p in params)  # peft's adapters over a bf16 base
            assert grads + moments + sum(p.nbytes for p in params) == expected["adapters"]
        else:
            assert (grads, moments) == (expected["gradients"], expected["optimizer"])


def _saved_bytes_per_token(model: torch.nn.Module, batch: int, length: int) -> float:
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        if t.untyped_storage().data_ptr() not in params:
            seen[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    ids = torch.randint(0, 1000, (batch, length))
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        sequence_log_probs(model, ids, torch.ones_like(ids))
    return sum(seen.values()) / (batch * length)


@pytest.mark.parametrize("gc", [False, True])
@pytest.mark.parametrize("lora", [None, 8])
def test_activations_saved_for_backward_match_the_count(gc: bool, lora: int | None) -> None:
    measured = _saved_bytes_per_token(_model(SHAPE, lora=lora, gc=gc), 1, 40)
    predicted = activation_bytes_per_token(SHAPE, 2, gc, lora)
    if gc:  # the recomputed layer is alive only inside backward, where saved-tensor hooks do not see it
        predicted -= layer_activation_bytes(SHAPE, 2, lora)
    if lora and not gc:  # layer 0's input norm: nothing before it needs a gradient
        predicted -= 4 * SHAPE["hidden_size"] + 4
    assert measured == pytest.approx(predicted, rel=0.005)


def test_the_4b_table_numbers() -> None:
    """The headline numbers of docs/scale.md, so the table and the code cannot drift apart."""
    shape = QWEN3_SHAPES["4b"]
    full = training_memory(shape, 4 * 4096, gradient_checkpointing=True)
    assert round(full["weights"] / 2**30, 1) == 7.5 and full["optimizer"] == 2 * full["weights"]
    lora = training_memory(shape, 4 * 4096, lora_rank=16, gradient_checkpointing=True)
    assert lora["gradients"] == 0 and lora["adapters"] == 16 * lora_parameter_count(shape, 16)
    assert kv_cache_bytes(shape, 1) == 2 * 36 * 8 * 128 * 2  # 144 KiB per token in bf16
