"""Reward values and weights (FINESTEP.md section 1), all overridable from the command line or YAML."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

__all__ = ["RULE_NAMES", "OutcomeConfig", "ProcessConfig", "RewardConfig"]

RULE_NAMES = ("executes", "redundant", "grounded", "progress", "format")


@dataclass(frozen=True)
class OutcomeConfig:
    """The outcome reward R of a trajectory."""

    correct: float = 1.0  # the solution's result equals the gold result
    wrong: float = 0.0  # the solution executes but differs
    error: float = 0.0  # the solution is well-formed but raises an error (FINESTEP.md is silent: wrong)
    format_failure: float = -1.0  # no parseable solution (no solution step, broken tags, truncated)
    metric: Literal["bird", "spider"] = "bird"


@dataclass(frozen=True)
class ProcessConfig:
    """The process rules: each rule's value(s) and its weight in r_t (a weight of 0 switches a rule off)."""

    weights: dict[str, float] = field(default_factory=lambda: dict.fromkeys(RULE_NAMES, 1.0))
    executes_ok: float = 0.1
    executes_error: float = -0.2
    executes_timeout: float = -0.3
    redundant: float = -0.3  # the SQL is equivalent to an earlier step's SQL
    ungrounded: float = -0.2  # the SQL names a table or column that does not exist
    progress: float = 0.2  # the result equals the gold result for the first time
    format: float = -0.5  # no action, several actions or broken tags

    def __post_init__(self) -> None:
        unknown = sorted(set(self.weights) - set(RULE_NAMES))
        if unknown:
            raise ValueError(f"weights: unknown rule {unknown[0]!r}; rules are {list(RULE_NAMES)}")


@dataclass(frozen=True)
class LinkConfig:
    """Logical links between steps (FINESTEP.md section 2, 'Logical')."""

    link_threshold: float = 0.6  # token similarity for `repairs`
    observation_rows: int = 20  # rows of an observation whose values count as seen (what the agent is shown)

    def __post_init__(self) -> None:
        if not 0 <= self.link_threshold <= 1:
            raise ValueError(f"link_threshold: must be in [0, 1], got {self.link_threshold!r}")
        if self.observation_rows < 0:
            raise ValueError(f"observation_rows: must be >= 0, got {self.observation_rows!r}")


@dataclass(frozen=True)
class RewardConfig:
    """Everything that turns a trajectory into rewards and links."""

    outcome: OutcomeConfig = field(default_factory=OutcomeConfig)
    process: ProcessConfig = field(default_factory=ProcessConfig)
    links: LinkConfig = field(default_factory=LinkConfig)
