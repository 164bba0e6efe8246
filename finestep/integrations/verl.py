"""FineStep inside verl: the module verl imports through its external-module mechanism.

    export VERL_USE_EXTERNAL_MODULES=finestep.integrations.verl   # read by ``import verl`` in every process

Importing it imports the plugins of ``FINESTEP_PLUGINS`` (``finestep.plugins``), then registers, with verl's
``register_adv_est``, every estimator of ``finestep.credit``'s registry that verl does not define itself and that
needs no GiGPO anchors (which verl's tensors cannot carry): ``finestep``, ``grpo_shaped``, ``ps_grpo`` and those of
the plugins (``algorithm.adv_estimator=finestep``), and the ``finestep_sql`` agent loop (``verl_agent``).
Each estimator reads FineStep's tensors layout (``verl_layout``): steps are the runs of model tokens in
``response_mask``, ``r_t`` sits at the last token of each turn and ``R`` at the last token of the trajectory;
the arithmetic is ``finestep.credit``'s (``compute_advantages`` and ``batch_token_advantages``). Settings come
from ``algorithm.finestep`` (``configs_from_verl``). Written against verl 0.9.1.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from verl.trainer.ppo.core_algos import get_adv_estimator_fn, register_adv_est

from finestep.credit import ANCHOR_ESTIMATORS, ESTIMATORS
from finestep.integrations import verl_agent
from finestep.integrations.verl_layout import configs_from_verl, token_advantages
from finestep.plugins import load_plugins, plugins_from_env

__all__ = ["ESTIMATOR_NAMES", "make_estimator"]

_ = verl_agent.FineStepSqlAgentLoop  # registered with verl's agent-loop registry on import


def _verl_defines(name: str) -> bool:
    try:
        get_adv_estimator_fn(name)
    except ValueError:
        return False
    return True


load_plugins(plugins_from_env())
#: FineStep's names in verl's estimator registry (verl's own ``grpo`` and ``rloo`` stay verl's).
ESTIMATOR_NAMES = tuple(name for name in ESTIMATORS if name not in ANCHOR_ESTIMATORS and not _verl_defines(name))


def make_estimator(name: str) -> Callable[..., tuple[torch.Tensor, torch.Tensor]]:
    """verl's estimator signature around ``finestep.credit``'s estimator ``name``."""

    def estimator(
        token_level_rewards: torch.Tensor,
        response_mask: torch.Tensor,
        index: Any = None,
        config: Any = None,
        **_: Any,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(advantages, returns), both (bs, response_length): each step's advantage on its tokens, 0 elsewhere.

        Args:
            token_level_rewards: (bs, response_length), FineStep's layout (``r_t`` at turn ends, ``R`` at the end).
            response_mask: (bs, response_length), 1 on model tokens; each run of 1s is one step.
            index: (bs,) uids; responses with equal uids form a group.
            config: verl's ``algorithm`` config; FineStep's settings in its ``finestep`` block.
        """
        if index is None:
            raise ValueError(f"estimator {name!r} needs the group uids (verl's non_tensor_batch['uid'])")
        settings = configs_from_verl(config, estimator=name)
        with torch.no_grad():
            advantages = token_advantages(token_level_rewards, response_mask, index, settings.credit, settings.reader)
        return advantages, advantages

    estimator.__name__ = f"compute_{name}_advantage"
    estimator.__qualname__ = estimator.__name__
    return estimator


for _name in ESTIMATOR_NAMES:
    register_adv_est(_name)(make_estimator(_name))
