"""Tiny Qwen3-style models with a tokenizer trained on a corpus: CPU tests and benchmarks of the whole pipeline.

``build_tiny_model(corpus, out_dir)`` trains a byte-level BPE tokenizer on the corpus (questions, schema text,
SQL), adds the chat and protocol tags as single tokens, builds a randomly initialized ``Qwen3ForCausalLM`` and
saves both with ``save_pretrained``, so the folder loads like any checkpoint (``load_model``/``load_tokenizer``,
or ``AutoModelForCausalLM``/``AutoTokenizer``).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import torch

__all__ = ["CHATML_TEMPLATE", "CHAT_TEMPLATE", "PROTOCOL_TAGS", "SPECIAL_TOKENS", "build_tiny_model"]

#: Special tokens of the chat format (Qwen names); ``<|endoftext|>`` pads, ``<|im_end|>`` ends a turn (eos).
SPECIAL_TOKENS: tuple[str, ...] = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")
#: Protocol tags: one token each, kept by ``decode(..., skip_special_tokens=True)`` (they are not special).
PROTOCOL_TAGS: tuple[str, ...] = (
    "<sql>", "</sql>", "<solution>", "</solution>", "<observation>", "</observation>", "<think>", "</think>",
)
#: Plain ChatML, as Qwen models use it: ``<|im_start|>role\ncontent<|im_end|>\n`` per message (the template of tiny
#: models built before tool calls were rendered; prompts render the same under ``CHAT_TEMPLATE``).
CHATML_TEMPLATE = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)
#: The tiny models' chat template: ChatML with Qwen-style tool calls. System and user messages render as in plain
#: ChatML; an assistant turn is ``content`` then ``<tool_call>\n{"name": N, "arguments": A}\n</tool_call>`` per call,
#: then ``<|im_end|>``; a tool message is ``<|im_start|>user\n<tool_response>\n...\n</tool_response><|im_end|>``
#: (as Qwen3's). The tool schemas are not rendered (the system prompt's instructions name the tools). It is
#: prefix-preserving, parses with TRL's Qwen3 response template, and marks assistant tokens (``{% generation %}``)
#: for ``return_assistant_tokens_mask``.
CHAT_TEMPLATE = (
    "{%- for message in messages %}"
    "{%- if message['role'] == 'assistant' %}"
    "{{- '<|im_start|>assistant\\n' }}{%- generation %}{{- message['content'] or '' }}"
    "{%- if message.tool_calls is defined and message.tool_calls %}"
    "{%- for call in message.tool_calls %}"
    "{%- set fn = call.function if call.function is defined else call %}"
    "{%- if (message['content'] or '') or not loop.first %}{{- '\\n' }}{%- endif %}"
    "{{- '<tool_call>\\n' }}"
    "{%- if fn.arguments is string %}"
    "{{- '{\"name\": ' ~ (fn.name | tojson) ~ ', \"arguments\": ' ~ fn.arguments ~ '}' }}"
    "{%- else %}{{- {'name': fn.name, 'arguments': fn.arguments} | tojson }}{%- endif %}"
    "{{- '\\n</tool_call>' }}"
    "{%- endfor %}"
    "{%- endif %}"
    "{{- '<|im_end|>' }}{%- endgeneration %}{{- '\\n' }}"
    "{%- elif message['role'] == 'tool' %}"
    "{{- '<|im_start|>user\\n<tool_response>\\n' ~ message['content'] ~ '\\n</tool_response><|im_end|>\\n' }}"
    "{%- else %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)


def _train_tokenizer(
    corpus: Iterable[str],
    vocab_size: int,
    split_digits: bool = True,
    added_tokens: Sequence[str] = PROTOCOL_TAGS,
    chat_template: str = CHAT_TEMPLATE,
):  # -> PreTrainedTokenizerFast
    """A byte-level BPE tokenizer trained on ``corpus``, wrapped for transformers (eos, pad, chat template).

    ``added_tokens`` become single tokens after the BPE vocabulary (not special: decoding keeps them).

    ``split_digits``: every digit is a token of its own, as in Qwen's tokenizers. A number then reads the same
    in a question and in SQL, so a tiny model learns to copy it digit by digit instead of memorizing which
    multi-digit pieces follow which words (on SQLWorld this doubles the demo model's EX on new questions).
    """
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.BPE())
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    backend.pre_tokenizer = (
        pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True), byte_level])
        if split_digits else byte_level
    )  # fmt: skip
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator((text for text in corpus), trainer)
    backend.add_tokens([AddedToken(tag, single_word=False, normalized=False, special=False)
                        for tag in added_tokens])
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        chat_template=chat_template,
        model_max_length=1 << 20,
        clean_up_tokenization_spaces=False,
    )


def _replace_dir(tmp: Path, out_dir: Path) -> None:
    """Move the finished folder ``tmp`` to ``out_dir``; an existing ``out_dir`` is swapped out, then deleted."""
    old = None
    if out_dir.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.old.", dir=out_dir.parent))
        os.replace(out_dir, old / "dir")
    os.replace(tmp, out_dir)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _save_model_folder(model: Any, tokenizer: Any, out_dir: Path) -> None:
    """Save ``model`` and ``tokenizer`` into ``out_dir`` atomically: written beside it, then moved into place (an
    existing folder is replaced; nothing half-written is left on failure)."""
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".tmp", dir=out_dir.parent))
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        _replace_dir(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def build_tiny_model(
    corpus: Iterable[str],
    out_dir: str | Path,
    *,
    vocab_size: int = 2048,
    hidden_size: int = 64,
    num_layers: int = 2,
    num_heads: int = 4,
    num_kv_heads: int = 2,
    intermediate_size: int = 128,
    max_position_embeddings: int = 4096,
    seed: int = 0,
    split_digits: bool = True,
) -> Path:
    """Train a tokenizer on ``corpus``, build a random Qwen3 causal LM, save both to ``out_dir``; return it.

    Args:
        corpus: texts the BPE merges are learned from (questions, schema text, SQL); iterated once.
        out_dir: target folder; written atomically (a temporary folder beside it, then renamed), replacing
            an existing one.
        vocab_size: BPE vocabulary target; the model's vocabulary is the tokenizer's actual size (a small
            corpus gives fewer merges), special tokens and tags included.
        hidden_size, num_layers, num_heads, num_kv_heads, intermediate_size, max_position_embeddings:
            the ``Qwen3Config`` (head_dim = hidden_size // num_heads, grouped-query attention, tied embeddings).
        seed: weights are a deterministic function of the seed (the global torch RNG is left as it was).
        split_digits: one token per digit (Qwen's convention); False gives GPT-2-style number pieces.

    Returns:
        ``out_dir`` as a ``Path``, holding ``config.json``, ``generation_config.json``, the weights and the
        tokenizer files.
    """
    from transformers import GenerationConfig, Qwen3Config, Qwen3ForCausalLM

    if hidden_size % num_heads or num_heads % num_kv_heads:
        raise ValueError("hidden_size must divide by num_heads, and num_heads by num_kv_heads")
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tokenizer = _train_tokenizer(corpus, vocab_size, split_digits)
    eos_id = tokenizer.convert_tokens_to_ids("<|im_end|>")
    pad_id = tokenizer.convert_tokens_to_ids("<|endoftext|>")
    config = Qwen3Config(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=intermediate_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=num_kv_heads,
        head_dim=hidden_size // num_heads,
        max_position_embeddings=max_position_embeddings,
        tie_word_embeddings=True,
        bos_token_id=None,
        eos_token_id=eos_id,
        pad_token_id=pad_id,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Qwen3ForCausalLM(config)
    model.generation_config = GenerationConfig(eos_token_id=[eos_id, pad_id], pad_token_id=pad_id)
    _save_model_folder(model, tokenizer, out_dir)
    return out_dir
