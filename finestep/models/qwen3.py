"""Qwen3-architecture checkpoints built locally, as a user's download looks, with random weights (no download).

``QWEN3_SHAPES`` holds the published shapes of Qwen3-0.6B and Qwen3-4B (their ``config.json`` numbers) and a tiny
one for CPUs. ``build_qwen3_checkpoint(corpus, out_dir, "0.6b")`` trains a byte-level BPE tokenizer on the corpus
(with Qwen3's chat tokens and ``<tool_call>``/``<tool_response>``/``<think>`` tags as single tokens), builds a
``Qwen3ForCausalLM`` from the shape with random weights and saves both, with Qwen3's own chat template (tools
included), into a folder of ``config.json``, ``generation_config.json``, ``model.safetensors`` (bf16 by default, as
Qwen ships), ``tokenizer.json``, ``tokenizer_config.json`` and ``chat_template.jinja``. The folder loads like the real
checkpoint (``load_model``/``load_tokenizer``, ``AutoModelForCausalLM``, TRL): the GPU device check and the CPU
tests run the real-model path on it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import torch

from finestep.models.tiny import _save_model_folder, _train_tokenizer

__all__ = ["QWEN3_ADDED_TOKENS", "QWEN3_CHAT_TEMPLATE", "QWEN3_SHAPES", "build_qwen3_checkpoint", "qwen3_config"]

#: Architecture numbers of Qwen3 models (``config.json`` of Qwen/Qwen3-0.6B and Qwen/Qwen3-4B). ``vocab_size``
#: None: the tokenizer's size rounded up to a multiple of 128 (Qwen pads its embedding the same way).
QWEN3_SHAPES: dict[str, dict[str, Any]] = {
    "tiny": {"hidden_size": 64, "intermediate_size": 192, "num_hidden_layers": 2, "num_attention_heads": 4,
             "num_key_value_heads": 2, "head_dim": 16, "vocab_size": None},
    "0.6b": {"hidden_size": 1024, "intermediate_size": 3072, "num_hidden_layers": 28, "num_attention_heads": 16,
             "num_key_value_heads": 8, "head_dim": 128, "vocab_size": 151936},
    "4b": {"hidden_size": 2560, "intermediate_size": 9728, "num_hidden_layers": 36, "num_attention_heads": 32,
           "num_key_value_heads": 8, "head_dim": 128, "vocab_size": 151936},
}  # fmt: skip
_COMMON: dict[str, Any] = {
    "tie_word_embeddings": True, "rope_parameters": {"rope_type": "default", "rope_theta": 1_000_000.0},
    "rms_norm_eps": 1e-6, "max_position_embeddings": 40960, "hidden_act": "silu", "attention_bias": False,
}  # fmt: skip
#: Added (not special) tokens of Qwen3's tokenizer that the agent writes: tool calls and answers, thinking.
QWEN3_ADDED_TOKENS: tuple[str, ...] = (
    "<tool_call>", "</tool_call>", "<tool_response>", "</tool_response>", "<think>", "</think>",
)  # fmt: skip

#: Qwen3's chat template as the Qwen3 checkpoints ship it (Apache-2.0; byte-identical to TRL's ``qwen3.jinja``, so
#: TRL recognizes it): tools in the system prompt, ``<tool_call>`` JSON in assistant turns, tool answers as
#: ``<tool_response>`` user turns, ``<think>`` blocks, ``enable_thinking``.
QWEN3_CHAT_TEMPLATE = r"""{%- if tools %}
    {{- '<|im_start|>system\n' }}
    {%- if messages[0].role == 'system' %}
        {{- messages[0].content + '\n\n' }}
    {%- endif %}
    {{- "# Tools\n\nYou may call one or more functions to assist with the user query.\n\nYou are provided with function signatures within <tools></tools> XML tags:\n<tools>" }}
    {%- for tool in tools %}
        {{- "\n" }}
        {{- tool | tojson }}
    {%- endfor %}
    {{- "\n</tools>\n\nFor each function call, return a json object with function name and arguments within <tool_call></tool_call> XML tags:\n<tool_call>\n{\"name\": <function-name>, \"arguments\": <args-json-object>}\n</tool_call><|im_end|>\n" }}
{%- else %}
    {%- if messages[0].role == 'system' %}
        {{- '<|im_start|>system\n' + messages[0].content + '<|im_end|>\n' }}
    {%- endif %}
{%- endif %}
{%- set ns = namespace(multi_step_tool=true, last_query_index=messages|length - 1) %}
{%- for message in messages[::-1] %}
    {%- set index = (messages|length - 1) - loop.index0 %}
    {%- if ns.multi_step_tool and message.role == "user" and message.content is string and not(message.content.startswith('<tool_response>') and message.content.endswith('</tool_response>')) %}
        {%- set ns.multi_step_tool = false %}
        {%- set ns.last_query_index = index %}
    {%- endif %}
{%- endfor %}
{%- for message in messages %}
    {%- if message.content is string %}
        {%- set content = message.content %}
    {%- else %}
        {%- set content = '' %}
    {%- endif %}
    {%- if (message.role == "user") or (message.role == "system" and not loop.first) %}
        {{- '<|im_start|>' + message.role + '\n' + content + '<|im_end|>' + '\n' }}
    {%- elif message.role == "assistant" %}
        {%- set reasoning_content = '' %}
        {%- if message.reasoning_content is string %}
            {%- set reasoning_content = message.reasoning_content %}
        {%- else %}
            {%- if '</think>' in content %}
                {%- set reasoning_content = content.split('</think>')[0].rstrip('\n').split('<think>')[-1].lstrip('\n') %}
                {%- set content = content.split('</think>')[-1].lstrip('\n') %}
            {%- endif %}
        {%- endif %}
        {%- if loop.index0 > ns.last_query_index %}
            {%- if loop.last or (not loop.last and reasoning_content) %}
                {{- '<|im_start|>' + message.role + '\n<think>\n' + reasoning_content.strip('\n') + '\n</think>\n\n' + content.lstrip('\n') }}
            {%- else %}
                {{- '<|im_start|>' + message.role + '\n' + content }}
            {%- endif %}
        {%- else %}
            {{- '<|im_start|>' + message.role + '\n' + content }}
        {%- endif %}
        {%- if message.tool_calls %}
            {%- for tool_call in message.tool_calls %}
                {%- if (loop.first and content) or (not loop.first) %}
                    {{- '\n' }}
                {%- endif %}
                {%- if tool_call.function %}
                    {%- set tool_call = tool_call.function %}
                {%- endif %}
                {{- '<tool_call>\n{"name": "' }}
                {{- tool_call.name }}
                {{- '", "arguments": ' }}
                {%- if tool_call.arguments is string %}
                    {{- tool_call.arguments }}
                {%- else %}
                    {{- tool_call.arguments | tojson }}
                {%- endif %}
                {{- '}\n</tool_call>' }}
            {%- endfor %}
        {%- endif %}
        {{- '<|im_end|>\n' }}
    {%- elif message.role == "tool" %}
        {%- if loop.first or (messages[loop.index0 - 1].role != "tool") %}
            {{- '<|im_start|>user' }}
        {%- endif %}
        {{- '\n<tool_response>\n' }}
        {{- content }}
        {{- '\n</tool_response>' }}
        {%- if loop.last or (messages[loop.index0 + 1].role != "tool") %}
            {{- '<|im_end|>\n' }}
        {%- endif %}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\n' }}
    {%- if enable_thinking is defined and enable_thinking is false %}
        {{- '<think>\n\n</think>\n\n' }}
    {%- endif %}
{%- endif %}"""


def qwen3_config(shape: str | Mapping[str, Any], vocab_size: int, eos_id: int, bos_id: int | None = None):  # -> Qwen3Config
    """The ``Qwen3Config`` of a shape (a ``QWEN3_SHAPES`` name or a mapping of its keys); ``vocab_size`` is used when
    the shape leaves it None."""
    from transformers import Qwen3Config

    numbers = dict(QWEN3_SHAPES[shape] if isinstance(shape, str) else shape)
    if numbers.get("vocab_size") is None:
        numbers["vocab_size"] = vocab_size
    return Qwen3Config(**{**_COMMON, **numbers}, bos_token_id=bos_id, eos_token_id=eos_id, pad_token_id=None)


def build_qwen3_checkpoint(
    corpus: Iterable[str],
    out_dir: str | Path,
    shape: str | Mapping[str, Any] = "tiny",
    *,
    tokenizer_vocab: int = 1024,
    dtype: torch.dtype = torch.bfloat16,
    device: str | torch.device = "cpu",
    seed: int = 0,
) -> Path:
    """Build a Qwen3-architecture checkpoint folder with random weights; returns ``out_dir``.

    Args:
        corpus: texts the tokenizer's BPE merges are learned from (SQL, schemas, questions).
        out_dir: the folder, written atomically (a temporary folder beside it, then renamed), replacing one there.
        shape: a ``QWEN3_SHAPES`` name (``tiny``, ``0.6b``, ``4b``) or a mapping of the same keys.
        tokenizer_vocab: the BPE vocabulary target (the embedding keeps the shape's ``vocab_size`` when it has one:
            151936 rows for the published shapes, of which the tokenizer uses the first ``len(tokenizer)``).
        dtype: the weights' dtype, as saved (``config.json``'s ``dtype``).
        device: where the weights are initialized (a GPU makes the 4B shape's init take seconds).
        seed: the weights are a deterministic function of it (the global RNG is left as it was).
    """
    from transformers import GenerationConfig, Qwen3ForCausalLM

    out = Path(out_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    tokenizer = _train_tokenizer(corpus, tokenizer_vocab, True, QWEN3_ADDED_TOKENS, QWEN3_CHAT_TEMPLATE)
    eos, pad = tokenizer.convert_tokens_to_ids("<|im_end|>"), tokenizer.convert_tokens_to_ids("<|endoftext|>")
    config = qwen3_config(shape, -(-len(tokenizer) // 128) * 128, eos, pad)
    default = torch.get_default_dtype()
    device = torch.device(device)
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        torch.set_default_dtype(dtype)
        try:
            with device:
                model = Qwen3ForCausalLM(config)
        finally:
            torch.set_default_dtype(default)
    model.generation_config = GenerationConfig(eos_token_id=[eos, pad], pad_token_id=pad, bos_token_id=pad)
    _save_model_folder(model, tokenizer, out)
    return out
