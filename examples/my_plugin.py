"""A FineStep plugin: one credit estimator and one process rule, each one decorated function.

    FINESTEP_PLUGINS=examples/my_plugin.py finestep credit --input examples/trajectories.jsonl \
        --db-root ../shared/data/spider/database --estimator grpo_clipped rewards.process.weights.select_star=2
"""

import numpy as np

import finestep.credit
import finestep.rewards


@finestep.credit.register_estimator("grpo_clipped")
def grpo_clipped(batch, config):
    """GRPO with every advantage clipped to [-1, 1]."""
    grpo = finestep.credit.get_estimator("grpo")(batch, config)
    return finestep.credit.StepAdvantages(advantages=np.clip(grpo.advantages, -1.0, 1.0))


@finestep.rewards.register_rule("select_star", value=-0.1)
def select_star(t, ctx):
    """A tool call that reads every column (SELECT *): the agent should name what it needs."""
    step = ctx.steps[t]
    return step.kind == "sql" and "select *" in " ".join((step.sql or "").lower().split())
