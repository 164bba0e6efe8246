"""``finestep_sql``: a verl agent loop for the SQL protocol that writes FineStep's per-turn rewards.

Registered with verl's ``@register("finestep_sql")`` (and listed in ``configs/verl/agent_loop.yaml``). Per data
row it builds the prompt from ``raw_prompt`` with verl's tokenizer path, then turn by turn: generates on verl's
LLM server (vLLM or SGLang) until ``</sql>`` / ``</solution>``, end-of-sequence or the turn's token limit; runs
the turn through FineStep's SQL environment (``SqlEpisode``: ``finestep.env.SqlEnv`` with verl's tokenizer and
the response length as the token budget), which runs the SQL in the sandbox and appends the observation's
tokens with mask 0.
At the end it scores the episode with FineStep's rewards and returns the response with per-token rewards in
the layout of ``verl_layout`` (``r_t`` at the last token of turn t, ``R`` added at the last token).

verl settings read here: ``rollout.multi_turn.max_assistant_turns`` (turn limit, default 5),
``rollout.response_length`` (tokens of all turns and observations), ``rollout.multi_turn.max_tool_response_length``
(characters of an observation table), ``rollout.name`` (stop-string flag of vLLM or SGLang),
``algorithm.finestep.rewards`` (reward values, shared with the estimators). Constructor keywords (from the
agent-loop YAML): ``protocol``, ``max_tokens_per_turn``, ``observation_rows``, ``sql_timeout_s``.
The rewards reach verl as ``rm_scores`` through ``AgentLoopOutput.as_dict``, which verl's V1 trainer
(``trainer.use_v1=True``, the default in verl 0.9) stores per token; the legacy trainer keeps one scalar per
response, so the loop refuses to run under it.
"""

from __future__ import annotations

import asyncio
import logging
from functools import partial
from typing import Any
from uuid import uuid4

import torch
from pydantic import Field
from verl.experimental.agent_loop.agent_loop import AgentLoopBase, AgentLoopOutput, register
from verl.utils.profiler import simple_timer

from finestep.agent.protocol import ObservationFormat, get_protocol
from finestep.agent.trajectory import END_BUDGET
from finestep.integrations.verl_layout import configs_from_verl
from finestep.integrations.verl_sql import SqlEpisode, task_from_extra_info
from finestep.rewards.episodes import episode_metrics
from finestep.sql.executor import SandboxLimits, shared_sandbox

__all__ = ["FineStepAgentLoopOutput", "FineStepSqlAgentLoop", "stop_params"]

logger = logging.getLogger(__name__)


class FineStepAgentLoopOutput(AgentLoopOutput):
    """An ``AgentLoopOutput`` whose ``rm_scores`` are per-token rewards (``token_rewards``), not one scalar."""

    token_rewards: list[float] = Field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        """verl's dictionary, with ``rm_scores`` (response_length,) float32 set from ``token_rewards``."""
        output = super().as_dict()
        output.pop("token_rewards", None)
        output["rm_scores"] = torch.tensor(self.token_rewards, dtype=torch.float32)
        return output


def stop_params(rollout_name: str, stop: tuple[str, ...]) -> dict[str, Any]:
    """Sampling parameters that stop after an action and keep the stop string in the output."""
    if rollout_name == "sglang":
        return {"stop": list(stop), "no_stop_trim": True}
    return {"stop": list(stop), "include_stop_str_in_output": True}  # vLLM


@register("finestep_sql")
class FineStepSqlAgentLoop(AgentLoopBase):
    """Multi-turn SQL agent: ``<sql>`` tool calls run in the sandbox, ``<solution>`` ends the episode."""

    def __init__(
        self,
        *args: Any,
        protocol: str = "tags",
        max_tokens_per_turn: int = 1024,
        observation_rows: int = 10,
        sql_timeout_s: float = 5.0,
        tools: Any = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        if not self.config.trainer.get("use_v1", True):
            raise ValueError("finestep_sql needs trainer.use_v1=True: the legacy trainer keeps one reward per response")
        multi_turn = self.rollout_config.multi_turn
        self.protocol = get_protocol(protocol)
        self.max_turns = int(multi_turn.get("max_assistant_turns") or 5)
        self.response_length = int(self.rollout_config.response_length)
        self.max_tokens_per_turn = int(max_tokens_per_turn)
        self.fmt = ObservationFormat(
            max_rows=int(observation_rows), max_chars=int(multi_turn.get("max_tool_response_length") or 2000)
        )
        settings = configs_from_verl(self.config.algorithm)
        self.rewards, self.reader = settings.rewards, settings.reader
        self.sandbox = shared_sandbox(SandboxLimits(timeout_s=sql_timeout_s))  # one per process and limit
        self.stop = stop_params(str(self.rollout_config.get("name", "vllm")), self.protocol.stop_strings)


    async def run(self, sampling_params: dict[str, Any], **kwargs: Any) -> AgentLoopOutput:
        """One episode for one data row (``raw_prompt``, ``extra_info`` with the task); see the module docstring."""
        episode = SqlEpisode(
            task_from_extra_info(kwargs.get("extra_info") or {}), self.protocol, self.sandbox, self.max_turns, self.fmt,
            tokenizer=self.tokenizer, max_total_tokens=self.response_length,
        )  # fmt: skip
        prompt_ids = await self.ct_build_initial_tokens(list(kwargs["raw_prompt"]))
        metrics: dict[str, Any] = {}
        request_id = uuid4().hex
        eos_ids = {self.tokenizer.eos_token_id} - {None}
        while not episode.done:
            budget = min(self.max_tokens_per_turn, episode.tokens_left or 0)
            if budget < 1:
                episode.end(END_BUDGET)
                break
            with simple_timer("generate_sequences", metrics):
                output = await self.server_manager.generate(
                    request_id=request_id,
                    prompt_ids=prompt_ids + episode.trajectory.token_ids,
                    sampling_params={**sampling_params, **self.stop, "max_tokens": budget},
                )
            if metrics.get("num_preempted") is None:
                metrics["num_preempted"] = output.num_preempted if output.num_preempted is not None else -1
            tokens = list(output.token_ids)[:budget]
            text = self.tokenizer.decode(tokens, skip_special_tokens=False)
            eos = bool(tokens) and tokens[-1] in eos_ids
            stopped = eos or text.rstrip().endswith(self.protocol.stop_strings)
            turn = partial(
                episode.add_turn, tokens, text, output.log_probs[: len(tokens)] if output.log_probs else None,
                truncated=len(tokens) >= budget and not stopped, eos=eos,
            )  # fmt: skip
            with simple_timer("tool_calls", metrics):  # SQL runs off the event loop: other episodes go on
                await asyncio.get_running_loop().run_in_executor(None, turn)  # the episode appends the observation
        output = partial(self._output, episode, prompt_ids, metrics, bool(sampling_params.get("logprobs")))
        return await asyncio.get_running_loop().run_in_executor(None, output)  # scoring runs the gold query

    def _output(
        self, episode: SqlEpisode, prompt_ids: list[int], metrics: dict[str, Any], logprobs: bool
    ) -> FineStepAgentLoopOutput:
        score = episode.score(self.rewards)
        rewards = episode.token_rewards(score, self.reader)
        traj = episode.trajectory
        summary = episode_metrics([traj], [score])
        info = {"score": float(score.outcome + sum(score.process_reward)), "acc": float(score.correct),
                "outcome": float(score.outcome), "process_reward": float(sum(score.process_reward)),
                "tool_calls": summary["tool_calls"], "redundant_rate": summary["redundant_rate"],
                "error_rate": summary["error_rate"]}  # fmt: skip
        return FineStepAgentLoopOutput(
            prompt_ids=prompt_ids,
            response_ids=list(traj.token_ids),
            response_mask=episode.response_mask,
            response_logprobs=list(traj.logprobs) if logprobs else None,
            reward_score=info["score"],
            token_rewards=rewards,
            num_turns=1 + len(traj.steps) + sum(s.observation_span is not None for s in traj.steps),
            metrics=metrics,
            extra_fields={
                "turn_scores": list(score.process_reward), "tool_rewards": [], "reward_extra_info": info,
                "end_reason": traj.end_reason,
            },
        )
