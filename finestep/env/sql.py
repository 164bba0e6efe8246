"""``sql``: the SQL environment of FineStep (the one place a turn of the protocol is carried out).

One turn: the protocol parses the action of the model's text (``<sql>Q</sql>`` / ``<solution>Q</solution>``, or
JSON tool calls); a well-formed action's SQL runs in the sandbox (read-only, time-limited, cached); the episode
ends on a well-formed, complete solution (``solution``), on end-of-sequence (``eos``) or at the turn limit
(``max_turns``); otherwise the observation (the result table or the error, and the turns left) is formatted and,
with a tokenizer, encoded and appended to the trajectory, unless it would exhaust the token budget (``budget``:
the observation is dropped). Without a tokenizer the environment works on text only: the caller appends the
observation's tokens (``append_observation``) and applies its own budget (``end("budget")``).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from functools import lru_cache
from typing import Any

from finestep.agent.protocol import ObservationFormat, Protocol, build_messages, get_protocol
from finestep.agent.trajectory import END_BUDGET, END_EOS, END_MAX_TURNS, END_SOLUTION, Step, Trajectory
from finestep.data.task import Task
from finestep.env.base import Environment, EnvStep, register_environment
from finestep.sql.engines import engine_for
from finestep.sql.executor import ExecutionResult, SqlSandbox, shared_sandbox
from finestep.sql.schema import schema_prompt

__all__ = ["DEFAULT_FORMAT", "SqlEnv", "cached_schema"]

DEFAULT_FORMAT = ObservationFormat()


@lru_cache(maxsize=512)
def cached_schema(db_path: str, sample_values: int, max_chars: int, style: str = "create") -> str:
    """The prompt schema of a database, computed once per process."""
    return schema_prompt(db_path, sample_values=sample_values, max_chars=max_chars, style=style)


@register_environment("sql")
class SqlEnv(Environment):
    """Multi-turn SQL over one task's database (module docstring).

    Args:
        protocol: ``tags`` or ``json`` (a name or a ``Protocol``).
        sandbox: executes the SQL; default: the process's :func:`shared_sandbox` (episodes share its workers and cache).
        tokenizer: encodes prompts, turns given as text, and observations; ``None``: text only.
        max_turns: assistant turns at most.
        max_total_tokens: generated plus observation tokens at most (the budget; ``None``: none).
        fmt: caps of the observation table (rows, cell and total characters).
        schema_sample_values, schema_max_chars, schema_style, brief_instructions: the prompt (``RolloutConfig``).
        include_prompt: the trajectory starts with the prompt's tokens (verl keeps its own prompt: False).
    """

    def __init__(
        self,
        protocol: Protocol | str = "tags",
        sandbox: SqlSandbox | None = None,
        tokenizer: Any = None,
        max_turns: int = 4,
        max_total_tokens: int | None = None,
        fmt: ObservationFormat = DEFAULT_FORMAT,
        schema_sample_values: int = 3,
        schema_max_chars: int = 6000,
        schema_style: str = "create",
        brief_instructions: bool = False,
        include_prompt: bool = True,
    ) -> None:
        if max_turns < 1:
            raise ValueError(f"max_turns must be >= 1, got {max_turns}")
        self.protocol = get_protocol(protocol)
        self.sandbox = sandbox if sandbox is not None else shared_sandbox()
        self.tokenizer = tokenizer
        self.max_turns = max_turns
        self.max_total_tokens = max_total_tokens
        self.fmt = fmt
        self.schema = (schema_sample_values, schema_max_chars, schema_style)
        self.brief_instructions = brief_instructions
        self.include_prompt = include_prompt
        self.execute_seconds = 0.0  # time spent executing SQL (the rollout reports it)
        self.done = False

    # --- episode --------------------------------------------------------------------------------------------

    def prompt(self, task: Task) -> list[dict[str, str]]:
        """The chat of a task's prompt: protocol instructions (naming the task database's engine), then the schema,
        evidence and question (the schema's text is the same on every engine for an imported database)."""
        schema = cached_schema(str(task.db_path), *self.schema)
        return build_messages(task.question, schema, task.evidence, self.max_turns, self.protocol,
                              self.brief_instructions, engine_for(task.db_path).title)  # fmt: skip

    def reset(self, task: Task, sample: int = 0, prompt_ids: Sequence[int] | None = None) -> list[dict[str, str]]:
        messages = self.prompt(task)
        ids: list[int] = []
        if self.include_prompt:
            if prompt_ids is None and self.tokenizer is not None:
                prompt_ids = self.protocol.prompt_ids(self.tokenizer, messages)
            ids = [int(t) for t in prompt_ids or ()]
        self.task, self.done = task, False
        self.trajectory = Trajectory(task, sample, len(ids), ids, [0.0] * len(ids))
        return messages

    @property
    def tokens_left(self) -> int | None:
        """Tokens of the budget not yet used by turns and observations (``None`` without a budget)."""
        return None if self.max_total_tokens is None else self.max_total_tokens - self.trajectory.n_used

    def step(
        self,
        text: str,
        token_ids: Sequence[int] | None = None,
        logprobs: Sequence[float] | None = None,
        stop_reason: str = "stop",
    ) -> EnvStep:
        if self.done:
            raise RuntimeError("the episode has ended; reset the environment first")
        traj = self.trajectory
        if token_ids is None:
            token_ids = self.tokenizer(text, add_special_tokens=False).input_ids if self.tokenizer is not None else []
        begin = len(traj.token_ids)
        traj.token_ids.extend(int(t) for t in token_ids)
        traj.logprobs.extend([float(x) for x in logprobs] if logprobs is not None else [0.0] * len(token_ids))
        action = self.protocol.parse_action(text)
        step = Step(text, action, (begin, len(traj.token_ids)), stop_reason=stop_reason)
        traj.steps.append(step)
        if action.sql and action.error is None and action.kind in ("sql", "solution"):
            start = time.perf_counter()
            step.result = self.sandbox.execute(self.task.db_path, action.sql)
            self.execute_seconds += time.perf_counter() - start
        turns_left = self.max_turns - len(traj.steps)
        if action.kind == "solution" and action.error is None and not step.truncated:
            return self._ended(step, END_SOLUTION)
        if stop_reason == "eos":
            return self._ended(step, END_EOS)
        if turns_left == 0:
            return self._ended(step, END_MAX_TURNS)
        error = action.error or ("cut off by the token limit" if step.truncated else None)
        step.observation = self.observation(step.result, error, turns_left)
        if self.tokenizer is None:
            return EnvStep(step.observation, False, None, step)
        observation_ids = self.protocol.observation_ids(self.tokenizer, step.observation)
        if self.max_total_tokens is not None and traj.n_used + len(observation_ids) >= self.max_total_tokens:
            return self._ended(step, END_BUDGET)
        self.append_observation(observation_ids)
        return EnvStep(step.observation, False, None, step, tuple(observation_ids))

    def observation(
        self, result: ExecutionResult | None, error: str | None = None, turns_left: int | None = None
    ) -> str:
        """The observation text of a tool call's ``result`` (or of the format ``error`` when it has none), in this
        environment's protocol and table format (what ``step`` appends)."""
        return self.protocol.observation_text(result, error, turns_left, self.fmt)

    def _ended(self, step: Step, reason: str) -> EnvStep:
        self.end(reason)
        return EnvStep(None, True, reason, step)

    def append_observation(self, token_ids: Sequence[int]) -> None:
        """Append the tokens of the last turn's observation (never trained)."""
        step = self.trajectory.steps[-1]
        begin = len(self.trajectory.token_ids)
        self.trajectory.token_ids.extend(int(t) for t in token_ids)
        self.trajectory.logprobs.extend([0.0] * len(token_ids))
        step.observation_span = (begin, len(self.trajectory.token_ids))

    def end(self, reason: str) -> None:
        """End the episode; under ``budget`` an observation not yet appended is dropped."""
        super().end(reason)
        steps = self.trajectory.steps
        if reason == END_BUDGET and steps and steps[-1].observation_span is None:
            steps[-1].observation = None
