"""Trajectory and Step: what a rollout produces, token-exact, ready for rewards and credit.

One trajectory is one token sequence ``prompt + turn_1 + observation_1 + turn_2 + ...``. Every step (assistant
turn) knows the span of its generated tokens; observation tokens belong to no step and are never trained.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from finestep.agent.protocol import Action
from finestep.data.steps import RewardStep
from finestep.data.task import Task
from finestep.sql.executor import ExecutionResult

__all__ = ["END_BUDGET", "END_EOS", "END_MAX_TURNS", "END_REASONS", "END_SOLUTION", "Step", "Trajectory"]

# Why an episode ended (``Trajectory.end_reason``), written by the environment (``finestep.env``) and nowhere else:
END_SOLUTION = "solution"  # a well-formed, complete solution was submitted
END_MAX_TURNS = "max_turns"  # the turn limit was reached
END_BUDGET = "budget"  # the next observation would exhaust the token budget
END_EOS = "eos"  # the model ended its text (end-of-sequence) without a solution
END_REASONS = (END_SOLUTION, END_MAX_TURNS, END_BUDGET, END_EOS)


@dataclass
class Step:
    """One assistant turn.

    Attributes:
        text: the decoded tokens the model generated in this turn.
        action: the parsed action (kind ``none`` with an ``error`` when the format is broken).
        span: ``[start, end)`` positions of the turn's generated tokens in ``Trajectory.token_ids``.
        observation_span: ``[start, end)`` of the observation appended after it, if any.
        observation: the observation text, if any.
        result: the execution result of the action's SQL (tool calls, and the solution executed for scoring).
        stop_reason: the generator's reason to stop (``stop``, ``eos``, ``length``).
    """

    text: str
    action: Action
    span: tuple[int, int]
    observation_span: tuple[int, int] | None = None
    observation: str | None = None
    result: ExecutionResult | None = None
    stop_reason: str = "stop"

    @property
    def truncated(self) -> bool:
        """Cut off by a token limit: the text is incomplete."""
        return self.stop_reason == "length"

    def reward_view(self) -> RewardStep:
        """The step as the reward rules see it."""
        well_formed = self.action.error is None and not self.truncated
        kind = self.action.kind if well_formed else "none"
        error = self.action.error or ("cut off by the token budget" if self.truncated else None)
        return RewardStep(kind, self.action.sql, self.result, error, self.truncated)  # type: ignore[arg-type]


@dataclass
class Trajectory:
    """One sample for one task: its token sequence, rollout log-probs and steps.

    ``token_ids`` (T,) holds the prompt, generated turns and observations; ``logprobs`` (T,) the rollout
    policy's log-probability of each generated token (0 elsewhere); ``prompt_length`` the prompt's tokens.
    """

    task: Task
    sample: int
    prompt_length: int
    token_ids: list[int]
    logprobs: list[float]
    steps: list[Step] = field(default_factory=list)
    end_reason: str = END_MAX_TURNS

    @property
    def n_used(self) -> int:
        """Tokens of the episode after the prompt: generated turns and observations."""
        return len(self.token_ids) - self.prompt_length

    @property
    def n_generated(self) -> int:
        """Tokens the model generated (all steps)."""
        return sum(end - start for start, end in (s.span for s in self.steps))

    @property
    def solution(self) -> Step | None:
        """The final solution step, if the trajectory submitted one."""
        last = self.steps[-1] if self.steps else None
        return last if last is not None and last.action.kind == "solution" and last.action.error is None else None

    def to_json(self, tokenizer: Any | None = None) -> dict[str, Any]:
        """A line of the trajectory file format (docs/trajectories.md), with each step's full text."""
        steps = []
        for step in self.steps:
            view = step.reward_view()
            entry: dict[str, Any] = {"kind": view.kind, "text": step.text, "stop_reason": step.stop_reason}
            if step.action.sql is not None:
                entry["sql"] = step.action.sql
            if view.format_error:
                entry["format_error"] = view.format_error
            if step.truncated:
                entry["truncated"] = True
            if step.observation is not None:
                entry["observation"] = step.observation
            steps.append(entry)
        return {
            "task_id": self.task.id,
            "trajectory_id": f"{self.task.id}/{self.sample}",
            "db_path": str(self.task.db_path),
            "gold_sql": self.task.gold_sql,
            "question": self.task.question,
            "end_reason": self.end_reason,
            "n_generated_tokens": self.n_generated,
            "steps": steps,
        }
