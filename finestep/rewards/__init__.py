"""Rewards: the outcome reward R, the process rules r_t (one registry) and the logical links between steps."""

from finestep.rewards.config import RULE_NAMES, LinkConfig, OutcomeConfig, ProcessConfig, RewardConfig
from finestep.rewards.links import step_links
from finestep.rewards.outcome import outcome_reward
from finestep.rewards.process import PROCESS_RULES, is_grounded, process_rewards, process_rule
from finestep.rewards.steps import RewardStep

__all__ = [
    "PROCESS_RULES",
    "RULE_NAMES",
    "LinkConfig",
    "OutcomeConfig",
    "ProcessConfig",
    "RewardConfig",
    "RewardStep",
    "is_grounded",
    "outcome_reward",
    "process_rewards",
    "process_rule",
    "step_links",
]
