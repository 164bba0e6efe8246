"""Warm-start data in TRL's chat format: trajectories as tool-calling conversations, tokenized for ``train_sft``.

A model warm-started by ``finestep sft`` reads our rollouts' token layout (one assistant message holding turns
and observations); under TRL each turn is an assistant message with a tool call and each observation a tool
message of the chat template. ``tool_conversation`` turns a trajectory-file line (docs/trajectories.md, e.g. the
SQLWorld expert's) into those messages, with the tool answers ``SqlToolEnv`` gives (the same observations), and after the solution an empty closing turn (under
TRL the model answers the tool's confirmation; the warm start teaches it to end there);
``tool_sft_examples`` tokenizes them with the chat template's assistant-token mask (``{% generation %}`` markers,
as ``TOOL_CHAT_TEMPLATE`` has), for ``finestep.train.sft.train_sft``; ``tiny_tool_model`` builds a tiny model on a
SQLWorld world and warm-starts it so (the TRL example's and tests' policy). No TRL import.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import torch

from finestep.agent.expert import expert_dataset
from finestep.agent.protocol import get_protocol
from finestep.data.sqlworld import ExpertConfig, World
from finestep.data.task import Task
from finestep.integrations.trl_env import DEFAULT_SETTINGS, TOOL_CHAT_TEMPLATE, SqlToolEnv, SqlToolSettings
from finestep.models import build_tiny_model, load_model, load_tokenizer
from finestep.train.rl import model_corpus
from finestep.train.sft import SFTConfig, SFTExample, train_sft

__all__ = ["TINY_SFT", "tiny_tool_model", "tool_conversation", "tool_sft_examples"]

#: The tiny model's warm start: enough epochs on a small world's expert chats to call the tools reliably.
TINY_SFT = SFTConfig(epochs=12, lr=3e-3, batch_size=8)

_TOOLS = {"sql": "execute_sql", "solution": "submit_solution"}


def tool_conversation(
    line: Mapping[str, Any], tasks: Mapping[str, Task], settings: SqlToolSettings = DEFAULT_SETTINGS
) -> list[dict[str, Any]]:
    """A trajectory line as chat messages: the prompt, then per step an assistant message (the turn's reasoning as
    content, its action as one tool call) and the tool's answer, then an empty closing assistant turn when the
    episode ended; steps without an action are refused."""
    task = tasks.get(str(line.get("task_id")))
    if task is None:
        raise ValueError(f"field 'task_id': unknown task {line.get('task_id')!r}")
    env = SqlToolEnv(tasks, settings)
    env.reset(task_id=task.id)
    messages: list[dict[str, Any]] = list(settings.make_env().prompt(task))
    for t, step in enumerate(line.get("steps") or []):
        kind, sql = step.get("kind"), step.get("sql")
        if kind not in _TOOLS or not sql:
            raise ValueError(f"task {task.id}: steps[{t}]: field 'kind' must be sql or solution with a 'sql'")
        text = str(step.get("text") or "")
        reasoning = ""
        for protocol in ("tags", "json"):
            action = get_protocol(protocol).parse_action(text)
            if action.ok and action.span is not None:
                reasoning = text[: action.span[0]].strip()
                break
        call = {"type": "function", "function": {"name": _TOOLS[kind], "arguments": {"sql": sql}}}
        messages.append({"role": "assistant", "content": reasoning, "tool_calls": [call]})
        answer = env.execute_sql(sql) if kind == "sql" else env.submit_solution(sql)
        if env.done and t < len(line["steps"]) - 1:
            raise ValueError(f"task {task.id}: steps[{t}]: the episode ended before the last step")
        messages.append({"role": "tool", "name": _TOOLS[kind], "content": answer})
    if env.done:  # TRL lets the model answer the last tool message: a closing turn that only ends the chat
        messages.append({"role": "assistant", "content": ""})
    return messages


def tool_sft_examples(
    conversations: Iterable[list[dict[str, Any]]],
    tokenizer: Any,
    chat_template: str | None = None,
    tools: list[Any] | None = None,
) -> list[SFTExample]:
    """Token ids and assistant-token masks of conversations (loss on the model's own tokens only).

    The chat template must mark assistant tokens with ``{% generation %}`` (``TOOL_CHAT_TEMPLATE`` does; for
    Qwen3 and others, TRL's ``get_training_chat_template``). ``tools``: the tool functions the template renders
    in the prompt, as TRL renders them in RL (``SqlToolEnv(...).execute_sql``, ``.submit_solution``); templates
    that ignore tools (``TOOL_CHAT_TEMPLATE``) need none.
    """
    examples = []
    for messages in conversations:
        encoded = tokenizer.apply_chat_template(
            messages, chat_template=chat_template, tools=tools, tokenize=True, return_dict=True,
            return_assistant_tokens_mask=True,
        )  # fmt: skip
        ids = list(encoded["input_ids"])
        mask = [bool(m) for m in encoded["assistant_masks"]]
        if not any(mask):
            raise ValueError("the chat template marks no assistant tokens: it needs {% generation %} markers")
        examples.append(SFTExample(ids, mask))
    return examples


def tiny_tool_model(
    out_dir: str | Path,
    world: World,
    settings: SqlToolSettings = DEFAULT_SETTINGS,
    sft: SFTConfig | None = TINY_SFT,
    *,
    samples_per_task: int = 2,
    hidden_size: int = 96,
    seed: int = 0,
) -> Path:
    """A tiny Qwen3-style model for TRL on ``world``, warm-started on its expert's episodes as tool-calling chats.

    The tokenizer is trained on the world's texts and the chats; the chat template is ``TOOL_CHAT_TEMPLATE``;
    ``sft`` (None: no warm start) trains on ``samples_per_task`` expert episodes per training task. Written to
    ``out_dir`` (an existing model there is returned as it is); returns ``out_dir``.
    """
    out = Path(out_dir)
    if (out / "config.json").is_file():
        return out
    tasks = {t.id: t for t in world.train}
    lines = expert_dataset(world, "train", samples_per_task, ExpertConfig(max_steps=settings.max_turns, protocol="json"),
                           seed)
    chats = [tool_conversation(line, tasks, settings) for line in lines]
    corpus = model_corpus(world.train, settings.schema_sample_values)
    corpus += [json.dumps(m.get("tool_calls")) + "\n" + str(m["content"]) for chat in chats for m in chat]
    tmp = out.with_name(f".{out.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    build_tiny_model(corpus, tmp, vocab_size=1024, hidden_size=hidden_size, num_layers=2, num_heads=4,
                     num_kv_heads=2, intermediate_size=2 * hidden_size, max_position_embeddings=2048,
                     seed=seed)  # fmt: skip
    tokenizer = load_tokenizer(tmp)
    tokenizer.chat_template = TOOL_CHAT_TEMPLATE
    if sft is not None:
        model = load_model(tmp)
        train_sft(model, tool_sft_examples(chats, tokenizer), sft, int(tokenizer.pad_token_id), torch.device("cpu"))
        model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    return out
