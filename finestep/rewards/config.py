"""Reward values and weights (FINESTEP.md section 1), all overridable from the command line or YAML."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from finestep.config import option
from finestep.rewards.rules import rule_names

__all__ = ["OutcomeConfig", "ProcessConfig", "RewardConfig"]


@dataclass(frozen=True)
class OutcomeConfig:
    """The outcome reward R of a trajectory."""

    correct: float = option(1.0, help="R when the solution's result equals the gold result")
    wrong: float = option(0.0, help="R when the solution executes but its result differs")
    error: float = option(0.0, help="R when the solution is well-formed but raises an error")
    format_failure: float = option(
        -1.0, help="R without a parseable solution (no solution step, broken tags, truncated)"
    )
    metric: Literal["bird", "spider"] = option("bird", help="result equivalence: bird (sets) or spider")


@dataclass(frozen=True)
class ProcessConfig:
    """The process rules: each rule's value(s) and its weight in r_t (a weight of 0 switches a rule off)."""

    weights: dict[str, float] = field(
        default_factory=lambda: dict.fromkeys(rule_names(), 1.0),
        metadata={"help": "each registered rule's weight in r_t (0 switches it off; a rule not listed weighs 1)"},
    )
    executes_ok: float = option(0.1, help="executes: a tool call that runs")
    executes_error: float = option(-0.2, help="executes: a tool call that raises an error")
    executes_timeout: float = option(-0.3, help="executes: a tool call that times out")
    redundant: float = option(-0.3, help="redundant: the SQL is equivalent to an earlier tool call's")
    ungrounded: float = option(-0.2, help="grounded: the SQL names a table or column that does not exist")
    progress: float = option(0.2, help="progress: the result equals the gold result for the first time")
    format: float = option(-0.5, help="format: no action, several actions or broken tags")
    reveals_gold: float = option(0.0, help="reveals_gold: the first tool call whose result shows a value the gold "
                                 "query needs and the question does not spell out (0: off)")  # fmt: skip
    repairs: float = option(0.0, help="repairs: a tool call that runs and is a near-edit of an earlier failed one "
                            "(0: off)")  # fmt: skip
    repair_similarity: float = option(0.6, help="repairs: token similarity to the failed query that makes a repair")
    shown_rows: int = option(10, help="reveals_gold: rows of a result the agent is shown (rollout.observation_rows)")

    def __post_init__(self) -> None:
        unknown = sorted(set(self.weights) - set(rule_names()))
        if unknown:
            raise ValueError(f"weights: unknown rule {unknown[0]!r}; rules are {list(rule_names())} (a rule of a "
                             "plugin must be registered first: FINESTEP_PLUGINS, --plugin or the plugins key)")


@dataclass(frozen=True)
class LinkConfig:
    """Logical links between steps (FINESTEP.md section 2, 'Logical')."""

    link_threshold: float = option(0.6, help="token similarity a repair needs to the failed step's SQL")
    observation_rows: int = option(20, help="rows of an observation whose values count as seen (uses links)")

    def __post_init__(self) -> None:
        if not 0 <= self.link_threshold <= 1:
            raise ValueError(f"link_threshold: must be in [0, 1], got {self.link_threshold!r}")
        if self.observation_rows < 0:
            raise ValueError(f"observation_rows: must be >= 0, got {self.observation_rows!r}")


@dataclass(frozen=True)
class RewardConfig:
    """Everything that turns a trajectory into rewards and links."""

    outcome: OutcomeConfig = field(default_factory=OutcomeConfig, metadata={"help": "the outcome reward R"})
    process: ProcessConfig = field(default_factory=ProcessConfig, metadata={"help": "the process rules r_t"})
    links: LinkConfig = field(default_factory=LinkConfig, metadata={"help": "the logical links between steps"})
