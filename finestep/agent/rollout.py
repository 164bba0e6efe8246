"""Multi-turn rollouts: B tasks x G samples, turn by turn, token-in/token-out, SQL through the sandbox.

Each turn the generator continues every unfinished sequence from its own tokens (the prompt, earlier turns and
observations are never re-tokenized); the environment parses the action, runs the SQL in the sandbox (with its
result cache) and appends the observation's tokens. An episode ends on a solution, on end-of-sequence, at
``max_turns`` or when the token budget runs out.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import torch

from finestep.agent.generators import Generator, SamplingParams
from finestep.agent.protocol import (
    ObservationFormat,
    Protocol,
    build_messages,
    encode_observation,
    encode_prompt,
)
from finestep.agent.trajectory import Step, Trajectory
from finestep.data.task import Task
from finestep.sql.executor import SqlSandbox
from finestep.sql.schema import schema_prompt

__all__ = ["RolloutConfig", "RolloutTimes", "cached_schema", "prompt_ids", "rollout"]


@dataclass(frozen=True)
class RolloutConfig:
    """How episodes are sampled.

    Attributes:
        group_size: G, samples per task.
        max_turns: assistant turns at most per episode.
        max_new_tokens: tokens per turn at most.
        max_total_tokens: generated plus observation tokens at most per episode (the token budget).
        temperature, top_p: sampling (temperature 0 = greedy).
        protocol: ``tags`` (``<sql>``/``<solution>``) or ``json`` (tool calls).
        schema_sample_values: sample values per column in the prompt's schema (0: none).
        schema_max_chars: the schema text's cap.
        schema_style: ``create`` (CREATE TABLE text) or ``compact`` (one line per table).
        brief_instructions: a two-line system prompt instead of the full instructions.
        observation_rows: result rows shown per observation.
    """

    group_size: int = 4
    max_turns: int = 4
    max_new_tokens: int = 128
    max_total_tokens: int = 1024
    temperature: float = 1.0
    top_p: float = 1.0
    protocol: str = "tags"
    schema_sample_values: int = 3
    schema_max_chars: int = 6000
    schema_style: str = "create"  # or "compact": one line per table (small models)
    brief_instructions: bool = False  # a two-line system prompt (small models)
    observation_rows: int = 10

    def __post_init__(self) -> None:
        for name in ("group_size", "max_turns", "max_new_tokens", "max_total_tokens", "schema_max_chars"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("temperature", "schema_sample_values", "observation_rows"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")


@dataclass
class RolloutTimes:
    """Seconds spent generating and executing SQL (the rest of a rollout is bookkeeping)."""

    generate: float = 0.0
    execute: float = 0.0
    extra: dict[str, float] = field(default_factory=dict)


@lru_cache(maxsize=512)
def cached_schema(db_path: str, sample_values: int, max_chars: int, style: str = "create") -> str:
    """The prompt schema of a database, computed once per process."""
    return schema_prompt(db_path, sample_values=sample_values, max_chars=max_chars, style=style)


def prompt_ids(
    question: str, evidence: str, db_path: Any, tokenizer: Any, protocol: Protocol, config: RolloutConfig
) -> list[int]:
    """The prompt's token ids for a question on a database, as every rollout (and SFT) builds it."""
    schema = cached_schema(str(db_path), config.schema_sample_values, config.schema_max_chars, config.schema_style)
    messages = build_messages(question, schema, evidence, config.max_turns, protocol, config.brief_instructions)
    return encode_prompt(tokenizer, messages)


def rollout(
    tasks: Sequence[Task],
    generator: Generator,
    protocol: Protocol,
    sandbox: SqlSandbox,
    config: RolloutConfig,
    rng: torch.Generator | None = None,
    times: RolloutTimes | None = None,
    on_turn: Callable[[int, list[Trajectory]], None] | None = None,
) -> list[Trajectory]:
    """Sample ``config.group_size`` episodes per task; trajectories come back task by task, sample by sample.

    ``rng`` makes sampling reproducible; ``times`` accumulates generate/execute seconds; ``on_turn(turn, trajs)``
    is called after each turn (live displays, ``finestep ask``).
    """
    times = times if times is not None else RolloutTimes()
    tokenizer = generator.tokenizer
    fmt = ObservationFormat(max_rows=config.observation_rows)
    trajectories: list[Trajectory] = []
    for task in tasks:
        prompt = prompt_ids(task.question, task.evidence, task.db_path, tokenizer, protocol, config)
        for sample in range(config.group_size):
            trajectories.append(Trajectory(task, sample, len(prompt), list(prompt), [0.0] * len(prompt)))
    params = SamplingParams(
        temperature=config.temperature, top_p=config.top_p, max_new_tokens=config.max_new_tokens,
        stop_strings=tuple(protocol.stop_strings),
    )  # fmt: skip
    active = list(range(len(trajectories)))
    pending: dict[int, list[int]] = {i: [] for i in active}
    with generator.start([t.token_ids for t in trajectories], params, rng) as session:
        for turn in range(config.max_turns):
            if not active:
                break
            budgets = [
                max(1, min(config.max_new_tokens, config.max_total_tokens - trajectories[i].n_used - len(pending[i])))
                for i in active
            ]
            start = time.perf_counter()
            generations = session.generate(active, [pending[i] for i in active], budgets)
            times.generate += time.perf_counter() - start
            still_active = []
            for i, generation in zip(active, generations):
                traj = trajectories[i]
                traj.token_ids.extend(pending[i])
                traj.logprobs.extend([0.0] * len(pending[i]))
                begin = len(traj.token_ids)
                traj.token_ids.extend(generation.token_ids)
                traj.logprobs.extend(generation.logprobs)
                action = protocol.parse_action(generation.text)
                step = Step(generation.text, action, (begin, len(traj.token_ids)), stop_reason=generation.stop_reason)
                traj.steps.append(step)
                pending[i] = []
                start = time.perf_counter()
                if action.sql and action.error is None and action.kind in ("sql", "solution"):
                    step.result = sandbox.execute(traj.task.db_path, action.sql)
                times.execute += time.perf_counter() - start
                turns_left = config.max_turns - turn - 1
                if action.kind == "solution" and action.error is None and not step.truncated:
                    traj.end_reason = "solution"
                elif generation.stop_reason == "eos":
                    traj.end_reason = "eos"
                elif turns_left == 0:
                    traj.end_reason = "max_turns"
                else:
                    error = action.error or ("cut off by the token limit" if step.truncated else None)
                    step.observation = protocol.observation_text(step.result, error, turns_left, fmt)
                    observation_ids = encode_observation(tokenizer, step.observation)
                    if traj.n_used + len(pending[i]) + len(observation_ids) >= config.max_total_tokens:
                        traj.end_reason = "budget"
                        step.observation = None
                    else:
                        pending[i] = observation_ids
                        step.observation_span = (len(traj.token_ids), len(traj.token_ids) + len(observation_ids))
                        still_active.append(i)
            active = still_active
            if on_turn is not None:
                on_turn(turn, trajectories)
    return trajectories
