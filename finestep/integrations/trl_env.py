"""FineStep's SQL environment behind TRL's tool-method interface (``GRPOTrainer(environment_factory=...)``).

TRL builds one environment object per rollout, calls ``reset(**row)`` with the dataset row, exposes every public
method except ``reset`` and ``get_reward`` as a tool (its name, type hints and docstring become the tool schema the
chat template shows), executes the model's tool calls on it, and calls ``get_reward()`` once the rollout ended.
``SqlToolEnv`` is our ``SqlEnv`` (``finestep.env.sql``) in that shape, with the JSON protocol's two tools:

- ``execute_sql(sql)``: one turn with a tool call; the query runs in the process's shared sandbox (read-only,
  time-limited, cached) and the tool answers with the observation our rollouts show (the result table or the
  error, and the turns left), without the ``<tool_response>`` wrapper, which the chat template adds;
- ``submit_solution(sql)``: the final answer; the episode ends.

The turn budget is ``SqlEnv``'s (``max_turns``): the call that spends the last turn ends the episode, and a call
after the end is answered with ``ENDED`` and changes nothing. ``get_reward()`` is the outcome R of the episode
through the one scoring path (``finestep.rewards.scoring``). Nothing here imports TRL: ``task_rows`` gives the
dataset rows (the prompt as chat messages and the task id) and ``sql_environment_factory`` the factory.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from finestep.agent.protocol import ObservationFormat
from finestep.agent.trajectory import END_SOLUTION, Trajectory
from finestep.data.task import Task
from finestep.env import SqlEnv
from finestep.models.tiny import CHAT_TEMPLATE
from finestep.rewards import RewardConfig, score_episodes
from finestep.sql.executor import SandboxLimits, SqlSandbox, shared_sandbox

__all__ = [
    "DEFAULT_SETTINGS",
    "ENDED",
    "SOLUTION_SUBMITTED",
    "TOOL_CHAT_TEMPLATE",
    "SqlToolEnv",
    "SqlToolSettings",
    "sql_environment_factory",
    "task_rows",
]

#: What a tool call answers after the episode ended (it runs nothing).
ENDED = "The episode is over: no more tool calls."
#: What ``submit_solution`` answers.
SOLUTION_SUBMITTED = "Solution submitted. The episode is over."
#: What the call that spends the last turn answers when it is not a solution.
NO_TURNS_LEFT = "No turns left. The episode is over."

#: ChatML with Qwen-style tool calls, the chat template of our tiny models (``finestep.models.tiny.CHAT_TEMPLATE``):
#: an assistant turn is ``content`` then ``<tool_call>\n{"name": N, "arguments": A}\n</tool_call>`` per call, then
#: ``<|im_end|>``; a tool message is ``<|im_start|>user\n<tool_response>\n...\n</tool_response><|im_end|>``.
TOOL_CHAT_TEMPLATE = CHAT_TEMPLATE


@dataclass(frozen=True)
class SqlToolSettings:
    """How the environment shows a task and answers tool calls (``RolloutConfig``'s prompt and budget fields).

    Attributes:
        max_turns: assistant turns with a tool call at most (the call that spends the last one ends the episode).
        observation_rows: result rows an observation shows.
        schema_sample_values, schema_max_chars, schema_style, brief_instructions: the prompt (see ``RolloutConfig``).
        sql_timeout_s: the sandbox's time limit per query.
        rewards: the reward values (outcome, process rules, links) of the one scoring path.
    """

    max_turns: int = 4
    observation_rows: int = 10
    schema_sample_values: int = 3
    schema_max_chars: int = 6000
    schema_style: str = "create"
    brief_instructions: bool = False
    sql_timeout_s: float = 5.0
    rewards: RewardConfig = field(default_factory=RewardConfig)

    def __post_init__(self) -> None:
        for name in ("max_turns", "observation_rows", "schema_max_chars"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.sql_timeout_s <= 0:
            raise ValueError(f"sql_timeout_s must be > 0, got {self.sql_timeout_s}")

    def sandbox(self) -> SqlSandbox:
        """The process's shared sandbox with this time limit (one per process and limits)."""
        return shared_sandbox(SandboxLimits(timeout_s=self.sql_timeout_s))

    def make_env(self, sandbox: SqlSandbox | None = None) -> SqlEnv:
        """A text-mode ``SqlEnv`` with the JSON protocol (tool names ``execute_sql``, ``submit_solution``)."""
        return SqlEnv(
            "json", sandbox if sandbox is not None else self.sandbox(), tokenizer=None, max_turns=self.max_turns,
            max_total_tokens=None, fmt=ObservationFormat(max_rows=self.observation_rows),
            schema_sample_values=self.schema_sample_values, schema_max_chars=self.schema_max_chars,
            schema_style=self.schema_style, brief_instructions=self.brief_instructions,
        )  # fmt: skip


#: The default settings (our rollouts' defaults).
DEFAULT_SETTINGS = SqlToolSettings()


def task_rows(tasks: Iterable[Task], settings: SqlToolSettings = DEFAULT_SETTINGS) -> list[dict[str, Any]]:
    """Dataset rows for TRL: ``{"prompt": [system, user messages], "task_id": id}`` per task, in order.

    The prompt is our environment's (``SqlEnv.prompt``: instructions, schema, evidence, question); TRL's chat
    template adds the tool schemas where it renders them. Task ids must be unique (they select the task).
    """
    env = settings.make_env()
    rows, seen = [], set()
    for task in tasks:
        if task.id in seen:
            raise ValueError(f"task id {task.id!r} appears twice; ids select the task in reset(task_id=...)")
        seen.add(task.id)
        rows.append({"prompt": env.prompt(task), "task_id": task.id})
    return rows


class SqlToolEnv:
    """One rollout's SQL environment for TRL (module docstring). Public methods other than ``reset`` and
    ``get_reward`` are the tools, so everything else is private or a property."""

    def __init__(self, tasks: Mapping[str, Task], settings: SqlToolSettings = DEFAULT_SETTINGS) -> None:
        self._tasks = tasks
        self._settings = settings
        self._sandbox = settings.sandbox()
        self._env: SqlEnv | None = None

    @property
    def settings(self) -> SqlToolSettings:
        """The environment's settings."""
        return self._settings

    @property
    def task(self) -> Task:
        """The task of the current episode."""
        return self._episode().task

    @property
    def trajectory(self) -> Trajectory:
        """The episode as the tools saw it: one step per tool call (text only, no tokens)."""
        return self._episode().trajectory

    @property
    def done(self) -> bool:
        """The episode has ended (a solution, or the last turn spent)."""
        return self._episode().done

    def _episode(self) -> SqlEnv:
        if self._env is None:
            raise RuntimeError("SqlToolEnv: reset(task_id=...) must be called before the episode is used")
        return self._env

    def reset(self, task_id: str | None = None, **_: Any) -> None:
        """Start an episode of the task ``task_id`` (a dataset column); the prompt is in the row already."""
        if task_id is None:
            raise ValueError("SqlToolEnv.reset: the dataset row has no 'task_id' column (use task_rows)")
        task = self._tasks.get(str(task_id))
        if task is None:
            raise ValueError(f"SqlToolEnv.reset: field 'task_id': unknown task {task_id!r}")
        self._env = self._settings.make_env(self._sandbox)
        self._env.reset(task)

    def execute_sql(self, sql: str) -> str:
        """Run a read-only SQL query on the database and see its first rows or its error.

        Args:
            sql: one SQLite statement.

        Returns:
            The result table (or the error message) and the number of turns left.
        """
        return self._act("sql", sql)

    def submit_solution(self, sql: str) -> str:
        """Submit a SQL query as the final answer; this ends the episode.

        Args:
            sql: the SQLite query whose result answers the question.

        Returns:
            A confirmation.
        """
        return self._act("solution", sql)

    def get_reward(self) -> float:
        """The outcome reward R of the episode (``finestep.rewards.scoring``): +1 correct, 0 wrong, -1 none."""
        env = self._episode()
        return float(score_episodes([env.trajectory], self._sandbox, self._settings.rewards)[0].outcome)

    def _act(self, kind: str, sql: Any) -> str:
        env = self._episode()
        if env.done:
            return ENDED
        text = sql if isinstance(sql, str) else str(sql)
        out = env.step(env.protocol.render_action(kind, text))  # type: ignore[arg-type]
        if out.done:
            return SOLUTION_SUBMITTED if out.end_reason == END_SOLUTION else NO_TURNS_LEFT
        step = out.step
        turns_left = env.max_turns - len(env.trajectory.steps)
        return env.protocol.observation_body(step.result, step.action.error, turns_left, env.fmt)


def sql_environment_factory(
    tasks: Iterable[Task], settings: SqlToolSettings = DEFAULT_SETTINGS
) -> Callable[[], SqlToolEnv]:
    """TRL's ``environment_factory``: a zero-argument callable that makes a ``SqlToolEnv`` over ``tasks``."""
    by_id = {task.id: task for task in tasks}

    def factory() -> SqlToolEnv:
        return SqlToolEnv(by_id, settings)

    return factory
