"""Multi-turn rollouts: B tasks x G samples, turn by turn, token-in/token-out, each episode an environment.

Each turn the generator continues every unfinished sequence from its own tokens (the prompt, earlier turns and
observations are never re-tokenized); the episode's environment (``finestep.env``, ``rollout.env``: ``sql`` by
default) parses the action, runs the SQL in the sandbox and appends the observation's tokens. An episode ends on
a solution, on end-of-sequence, at ``max_turns`` or when the token budget runs out (``finestep.env.sql``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from finestep.agent.generators import Generator, SamplingParams
from finestep.agent.protocol import ObservationFormat, Protocol, get_protocol
from finestep.agent.trajectory import Trajectory
from finestep.config import option
from finestep.data.task import Task
from finestep.env import Environment, cached_schema, make_environment
from finestep.sql.executor import SqlSandbox, shared_sandbox

__all__ = ["RolloutConfig", "RolloutTimes", "cached_schema", "make_env", "prompt_ids", "rollout"]


@dataclass(frozen=True)
class RolloutConfig:
    """How episodes are sampled and what the environment shows (each field's help is in its metadata)."""

    group_size: int = option(4, help="G, samples per task")
    max_turns: int = option(4, help="assistant turns at most per episode")
    max_new_tokens: int = option(128, help="tokens per turn at most")
    max_total_tokens: int = option(1024, help="generated plus observation tokens at most per episode (the budget)")
    temperature: float = option(1.0, help="sampling temperature (0: greedy)")
    top_p: float = option(1.0, help="nucleus sampling: the smallest token set with this much probability")
    protocol: str = option("tags", help="action format: tags (<sql>/<solution>) or json (tool calls)")
    schema_sample_values: int = option(3, help="sample values per column in the prompt's schema (0: none)")
    schema_max_chars: int = option(6000, help="the prompt schema's cap in characters")
    schema_style: str = option("create", help="create (CREATE TABLE text) or compact (a line per table: small models)")
    brief_instructions: bool = option(False, help="a two-line system prompt instead of the full instructions")
    observation_rows: int = option(10, help="result rows shown per observation")
    env: str = option("sql", help="the registered environment each episode runs in (finestep.env)")

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


def make_env(
    config: RolloutConfig, protocol: Protocol | str, sandbox: SqlSandbox, tokenizer: Any = None, **settings: Any
) -> Environment:
    """A new environment (``config.env``) for one episode, set up as ``config`` says; ``settings`` override."""
    defaults = {
        "protocol": protocol, "sandbox": sandbox, "tokenizer": tokenizer, "max_turns": config.max_turns,
        "max_total_tokens": config.max_total_tokens, "fmt": ObservationFormat(max_rows=config.observation_rows),
        "schema_sample_values": config.schema_sample_values, "schema_max_chars": config.schema_max_chars,
        "schema_style": config.schema_style, "brief_instructions": config.brief_instructions,
    }  # fmt: skip
    return make_environment(config.env, **{**defaults, **settings})


def prompt_ids(
    question: str, evidence: str, db_path: Any, tokenizer: Any, protocol: Protocol | str, config: RolloutConfig
) -> list[int]:
    """The prompt's token ids for a question on a database, as the environment builds them (no query runs: the
    schema text is read in this process, and the process's shared sandbox starts no worker for it)."""
    task = Task(id="", index=0, question=question, db_id="", db_path=db_path, gold_sql="", evidence=evidence)
    env = make_env(config, protocol, shared_sandbox(), tokenizer)
    return get_protocol(protocol).prompt_ids(tokenizer, env.prompt(task))


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
    envs: list[Environment] = []
    for task in tasks:
        prompt: list[int] | None = None
        for sample in range(config.group_size):
            env = make_env(config, protocol, sandbox, tokenizer)
            env.reset(task, sample, prompt)
            prompt = env.trajectory.token_ids[: env.trajectory.prompt_length]  # the G samples share it
            envs.append(env)
    trajectories = [env.trajectory for env in envs]
    params = SamplingParams(
        temperature=config.temperature, top_p=config.top_p, max_new_tokens=config.max_new_tokens,
        stop_strings=tuple(protocol.stop_strings),
    )  # fmt: skip
    active = list(range(len(envs)))
    pending: dict[int, Sequence[int]] = {i: () for i in active}  # observation tokens the generator has not seen
    with generator.start([t.token_ids for t in trajectories], params, rng) as session:
        for turn in range(config.max_turns):
            if not active:
                break
            budgets = [max(1, min(config.max_new_tokens, config.max_total_tokens - trajectories[i].n_used))
                       for i in active]  # fmt: skip
            start = time.perf_counter()
            generations = session.generate(active, [pending[i] for i in active], budgets)
            times.generate += time.perf_counter() - start
            executed = sum(getattr(envs[i], "execute_seconds", 0.0) for i in active)
            still_active = []
            for i, generation in zip(active, generations):
                out = envs[i].step(generation.text, generation.token_ids, generation.logprobs, generation.stop_reason)
                pending[i] = out.observation_ids
                if not out.done:
                    still_active.append(i)
            times.execute += sum(getattr(envs[i], "execute_seconds", 0.0) for i in active) - executed
            active = still_active
            if on_turn is not None:
                on_turn(turn, trajectories)
    return trajectories
