"""The environment API: ``reset(task) -> prompt``, ``step(model_text) -> EnvStep``, and the registry of environments.

In the spirit of gym and skyrl-gym's ``BaseTextEnv``: one environment object is one episode. ``reset`` starts it
and returns the prompt (chat messages); each ``step`` takes one assistant turn's text and returns what happened:
the observation to append (``None`` when the episode ended), whether it is done, why it ended, and the step
record (``finestep.agent.trajectory.Step``). The environment keeps the episode's ``Trajectory`` (tokens, steps,
end reason) for the rewards.

Every driver goes through this API: the rollout (``finestep.agent.rollout``), the SFT replay
(``finestep.train.sft``), the verl agent loop (``finestep.integrations.verl_agent``) and the SQLWorld expert
(``finestep.agent.expert``). A new environment is one class decorated with ``@register_environment("name")`` and
selected with ``rollout.env=name``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from finestep.agent.trajectory import END_REASONS, Step, Trajectory
from finestep.data.task import Task

__all__ = [
    "ENVIRONMENTS",
    "EnvStep",
    "Environment",
    "UnknownEnvironmentError",
    "get_environment",
    "make_environment",
    "register_environment",
]


@dataclass(frozen=True)
class EnvStep:
    """What one ``Environment.step`` did.

    Attributes:
        observation: the text appended after the turn (the tool's answer), ``None`` when the episode ended.
        done: the episode has ended.
        end_reason: one of ``END_REASONS`` when done, else ``None``.
        step: the step record of the turn (its action, tool result, spans).
        observation_ids: the observation's tokens as appended to the trajectory (empty without a tokenizer).
    """

    observation: str | None
    done: bool
    end_reason: str | None
    step: Step
    observation_ids: tuple[int, ...] = ()


class Environment(ABC):
    """One episode of a multi-turn tool environment (module docstring)."""

    trajectory: Trajectory
    done: bool = False

    @abstractmethod
    def prompt(self, task: Task) -> list[dict[str, str]]:
        """The prompt of ``task`` as chat messages (what ``reset`` returns), without starting an episode."""

    @abstractmethod
    def reset(self, task: Task, sample: int = 0, prompt_ids: Sequence[int] | None = None) -> list[dict[str, str]]:
        """Start an episode of ``task``; the prompt as chat messages.

        ``sample`` numbers the episode among those of its task; ``prompt_ids`` are the prompt's tokens when the
        caller has them already (the G samples of one task share them), else the environment encodes them.
        """

    @abstractmethod
    def step(
        self,
        text: str,
        token_ids: Sequence[int] | None = None,
        logprobs: Sequence[float] | None = None,
        stop_reason: str = "stop",
    ) -> EnvStep:
        """Act on one assistant turn: ``text`` and its generated ``token_ids`` (encoded when not given) with their
        rollout ``logprobs``; ``stop_reason`` is the generator's (``stop``, ``eos`` or ``length``)."""

    def end(self, reason: str) -> None:
        """End the episode from outside (e.g. ``budget`` when no token is left for the next turn)."""
        if reason not in END_REASONS:
            raise ValueError(f"unknown end reason {reason!r}; expected one of {list(END_REASONS)}")
        self.done = True
        self.trajectory.end_reason = reason


ENVIRONMENTS: dict[str, type[Environment]] = {}


class UnknownEnvironmentError(ValueError):
    """Raised by ``get_environment`` for a name that is not registered."""


def register_environment(name: str) -> Callable[[type[Environment]], type[Environment]]:
    """Class decorator registering an ``Environment`` subclass under ``name`` (names are unique)."""

    def decorate(cls: type[Environment]) -> type[Environment]:
        if name in ENVIRONMENTS:
            raise ValueError(f"environment {name!r} is already registered")
        ENVIRONMENTS[name] = cls
        return cls

    return decorate


def get_environment(name: str) -> type[Environment]:
    """The environment class registered under ``name``."""
    try:
        return ENVIRONMENTS[name]
    except KeyError:
        raise UnknownEnvironmentError(
            f"unknown environment {name!r}; registered environments: {', '.join(sorted(ENVIRONMENTS))}"
        ) from None


def make_environment(name: str, **settings: Any) -> Environment:
    """A new environment of the class registered under ``name``, built with ``settings``."""
    return get_environment(name)(**settings)
