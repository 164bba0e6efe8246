"""The ``finestep_sql`` verl agent loop, run for real against a scripted LLM server and a Spider database.

No GPU and no model: verl's ``server_manager`` is replaced by a server that answers each turn with scripted
text (tokenized by a tiny tokenizer), so the loop's prompt building, stop parameters, SQL execution,
observation tokens, token budget and per-token rewards are exercised exactly as in training.
"""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

pytest.importorskip("verl")

import torch
from omegaconf import OmegaConf
from verl.experimental.agent_loop.agent_loop import DictConfigWrap
from verl.workers.rollout.replica import TokenOutput

import finestep.integrations.verl  # noqa: F401  (registers the loop)
from finestep.data import load_spider
from finestep.integrations.verl_agent import FineStepSqlAgentLoop
from finestep.integrations.verl_data import build_rows
from finestep.integrations.verl_layout import RewardReader, decode_layout
from finestep.models import build_tiny_model
from finestep.models.loading import load_tokenizer
from finestep.rewards.config import RewardConfig

READER = RewardReader.from_rewards(RewardConfig())


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    corpus = ["SELECT count(*) FROM singer WHERE age > 30", "How many singers do we have?",
              "CREATE TABLE singer (Singer_ID int, Name text, Country text)", "| count(*) |\n|---|\n| 6 |"] * 20
    return load_tokenizer(build_tiny_model(corpus, tmp_path_factory.mktemp("tiny") / "m", vocab_size=300))


@pytest.fixture(scope="module")
def row(spider):
    tasks = load_spider(spider).tasks[:1]  # concert_singer: How many singers do we have?
    rows, skipped = build_rows(tasks, "spider", max_turns=4)
    assert skipped == {"missing_database": 0, "gold_fails": 0, "gold_empty": 0}
    return rows[0]


class ScriptedServer:
    """verl's LLM server client, answering each turn with the next scripted text."""

    def __init__(self, tokenizer, turns: list[str], eos_last: bool = False) -> None:
        self.tokenizer, self.turns, self.eos_last, self.calls = tokenizer, list(turns), eos_last, []

    async def generate(self, request_id, *, prompt_ids, sampling_params, **kwargs) -> TokenOutput:
        self.calls.append({"request_id": request_id, "prompt_ids": list(prompt_ids), "params": dict(sampling_params)})
        ids = self.tokenizer(self.turns.pop(0), add_special_tokens=False).input_ids
        if self.eos_last and not self.turns:
            ids.append(self.tokenizer.eos_token_id)
        ids = ids[: sampling_params["max_tokens"]]
        return TokenOutput(token_ids=ids, log_probs=[-0.5] * len(ids), stop_reason="completed")


def _config(response_length: int = 512, max_turns: int = 4, **finestep) -> object:
    return OmegaConf.create({
        "trainer": {"use_v1": True},
        "algorithm": {"adv_estimator": "finestep", "use_kl_in_reward": False, "finestep": finestep},
        "data": {"apply_chat_template_kwargs": {}},
        "actor_rollout_ref": {"rollout": {
            "name": "vllm", "prompt_length": 2048, "response_length": response_length,
            "multi_turn": {"max_assistant_turns": max_turns, "max_tool_response_length": 2000}}},
    })  # fmt: skip


def _run(tokenizer, row, server, config, **loop_kwargs):
    async def go():
        loop = FineStepSqlAgentLoop(
            trainer_config=DictConfigWrap(config), server_manager=server, tokenizer=tokenizer, processor=None,
            dataset_cls=object, data_config=DictConfigWrap(config.data), **loop_kwargs,
        )  # fmt: skip
        return await loop.run({"temperature": 1.0, "logprobs": True}, raw_prompt=row["prompt"],
                              extra_info=row["extra_info"])  # fmt: skip

    return asyncio.run(go())


def test_loop_runs_sql_and_writes_per_turn_rewards(tokenizer, row):
    turns = ["Count them.<sql>SELECT count(*) FROM singer</sql>", "<sql>SELECT count(*) FROM singers</sql>",
             "<solution>SELECT count(*) FROM singer</solution>"]  # fmt: skip
    server = ScriptedServer(tokenizer, turns)
    out = _run(tokenizer, row, server, _config(), max_tokens_per_turn=64)

    # the prompt is the chat template of the row's messages; each turn continues the same token sequence
    prompt = tokenizer.apply_chat_template(row["prompt"], add_generation_prompt=True, tokenize=True)
    prompt = prompt["input_ids"] if hasattr(prompt, "keys") else prompt
    assert out.prompt_ids == list(prompt)
    assert [c["prompt_ids"] for c in server.calls] == [
        out.prompt_ids + out.response_ids[:n] for n in (0, *[s for s in _run_starts(out.response_mask)[1:]])
    ]
    params = server.calls[0]["params"]
    assert params["stop"] == ["</sql>", "</solution>"] and params["include_stop_str_in_output"] is True
    assert params["max_tokens"] == 64 and len({c["request_id"] for c in server.calls}) == 1

    # observations: the sandbox's answers, tokenized with mask 0
    text = tokenizer.decode(out.response_ids, skip_special_tokens=False)
    assert "| count(*) |\n|---|\n| 6 |\n(1 row)\nTurns left: 3" in text
    assert "Error (schema): no such table: singers" in text
    assert out.extra_fields["turn_scores"] == [0.3, -0.4, 0.0] and out.extra_fields["end_reason"] == "solution"
    assert out.reward_score == pytest.approx(1.0 + 0.3 - 0.4)
    assert len(out.response_logprobs) == len(out.response_ids)

    # rm_scores as verl's V1 trainer stores them, read back by the estimator's decoder
    rm = out.as_dict()["rm_scores"]
    assert rm.shape == (len(out.response_ids),)
    layout = decode_layout(rm[None].numpy(), np.array([out.response_mask]), np.array(["u"], dtype=object), READER)
    assert layout.batch.process_reward.tolist() == [0.3, -0.4, 0.0]
    assert layout.batch.outcome.tolist() == [1.0] and layout.batch.is_solution.tolist() == [False, False, True]
    assert torch.count_nonzero(rm) == 3


def _run_starts(mask: list[int]) -> list[int]:
    return [i for i, m in enumerate(mask) if m and (i == 0 or not mask[i - 1])]


def test_loop_ends_on_turn_limit_and_budget(tokenizer, row):
    probe = "<sql>SELECT count(*) FROM singer WHERE age > 30</sql>"
    out = _run(tokenizer, row, ScriptedServer(tokenizer, [probe] * 2), _config(max_turns=2))
    assert out.extra_fields["end_reason"] == "max_turns"
    assert out.extra_fields["reward_extra_info"]["outcome"] == -1.0
    # the second probe repeats the first: +0.1 ok - 0.3 redundant, and R = -1 at the last token
    assert out.token_rewards[-1] == pytest.approx(-1.2) and out.extra_fields["turn_scores"][1] == pytest.approx(-0.2)

    # a response budget too small for the first observation: the episode ends after one turn
    n = len(tokenizer(probe, add_special_tokens=False).input_ids)
    out = _run(tokenizer, row, ScriptedServer(tokenizer, [probe] * 3), _config(response_length=n + 5))
    assert out.extra_fields["end_reason"] == "budget" and out.response_mask == [1] * n


def test_loop_refuses_the_legacy_trainer(tokenizer, row):
    config = _config()
    config.trainer.use_v1 = False
    with pytest.raises(ValueError, match="use_v1"):
        _run(tokenizer, row, ScriptedServer(tokenizer, []), config)
