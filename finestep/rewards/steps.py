"""What the reward rules see of a step: ``RewardStep`` (defined in ``finestep.data.steps``, re-exported here)."""

from finestep.data.steps import RewardStep, StepKind

__all__ = ["RewardStep", "StepKind"]
