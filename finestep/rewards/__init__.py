"""Rewards: the outcome reward R, the process rules r_t (one registry), the logical links between steps, and the one
scoring path from trajectories to the estimators' ``StepBatch`` (``scoring``), and the episode metrics (``episodes``:
EX, tool calls, redundant-call and error rates) that training, evaluation and the integrations report."""

from finestep.rewards.config import LinkConfig, OutcomeConfig, ProcessConfig, RewardConfig
from finestep.rewards.links import step_links
from finestep.rewards.outcome import outcome_reward
from finestep.rewards.process import is_grounded, process_rewards, process_rule
from finestep.rewards.rules import PROCESS_RULES, ProcessRule, RuleContext, register_rule, rule_names
from finestep.rewards.scoring import (
    ScoredTrajectory,
    action_key,
    score_episodes,
    score_record,
    score_steps,
    step_batch,
)
from finestep.rewards.steps import RewardStep

__all__ = [
    "PROCESS_RULES",
    "LinkConfig",
    "OutcomeConfig",
    "ProcessConfig",
    "ProcessRule",
    "RewardConfig",
    "RewardStep",
    "RuleContext",
    "ScoredTrajectory",
    "action_key",
    "is_grounded",
    "outcome_reward",
    "process_rewards",
    "process_rule",
    "register_rule",
    "rule_names",
    "score_episodes",
    "score_record",
    "score_steps",
    "step_batch",
    "step_links",
]
