"""The plugin inside verl: registry resolution after loading, and parity of verl's own dispatch with finestep.credit.

The trajectories are laid out as verl's trainer holds them; the advantages verl computes through the plugin
must equal ``finestep.credit``'s exactly (see ``test_verl_layout`` for why float32 storage keeps them exact).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("verl")

import torch
from omegaconf import OmegaConf
from verl import DataProto
from verl.trainer.ppo.core_algos import get_adv_estimator_fn

import finestep.integrations.verl as plugin
from finestep.credit import CreditConfig
from finestep.integrations.verl_agent import FineStepAgentLoopOutput
from finestep.integrations.verl_layout import RewardReader, encode_token_rewards
from finestep.rewards.config import RewardConfig

from .layouts import RULE_STEP, random_trajectories, reference, to_verl

READER = RewardReader.from_rewards(RewardConfig())
ROOT = Path(__file__).resolve().parents[2]
NAMES = list(plugin.ESTIMATOR_NAMES)


def _algorithm(estimator: str, **finestep: object) -> object:
    """verl's ``algorithm`` block as the trainer passes it (a DictConfig), with FineStep's settings."""
    return OmegaConf.create({"adv_estimator": estimator, "gamma": 1.0, "lam": 1.0, "use_kl_in_reward": False,
                             "norm_adv_by_std_in_grpo": True, "finestep": dict(finestep)})  # fmt: skip


def _run(code: str, **env: str) -> dict:
    environ = {k: v for k, v in os.environ.items() if k != "VERL_USE_EXTERNAL_MODULES"}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                          env={**environ, **env}, timeout=300, check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


PROBE = """
import json
import verl
from verl.trainer.ppo.core_algos import get_adv_estimator_fn
from verl.experimental.agent_loop.agent_loop import _agent_loop_registry
found = {}
for name in ("finestep", "grpo_shaped", "ps_grpo"):
    try:
        found[name] = get_adv_estimator_fn(name).__module__
    except ValueError:
        found[name] = None
print(json.dumps({"estimators": found, "agent_loops": sorted(_agent_loop_registry)}))
"""


def test_verl_resolves_the_names_once_the_plugin_is_loaded():
    before = _run(PROBE)
    assert before["estimators"] == dict.fromkeys(NAMES) and "finestep_sql" not in before["agent_loops"]
    after = _run(PROBE, VERL_USE_EXTERNAL_MODULES="finestep.integrations.verl")
    assert after["estimators"] == dict.fromkeys(NAMES, "finestep.integrations.verl")
    assert "finestep_sql" in after["agent_loops"]


@pytest.mark.parametrize("name", NAMES)
def test_registered_estimator_equals_finestep_credit(name):
    fn = get_adv_estimator_fn(name)
    for seed in range(10):
        trajs = random_trajectories(np.random.default_rng(seed), step_values=RULE_STEP)
        rewards, mask, uids = to_verl(trajs, READER)
        advantages, returns = fn(token_level_rewards=rewards, response_mask=mask, index=uids,
                                 config=_algorithm(name))  # fmt: skip
        want = reference(trajs, CreditConfig(estimator=name), rewards.shape[1])
        assert torch.equal(advantages, want) and torch.equal(returns, want)


def test_verl_dispatch_with_settings_and_ablation():
    """verl's own ``compute_advantage`` (what the trainers call) with ``algorithm.finestep`` settings."""
    from verl.trainer.ppo.ray_trainer import compute_advantage

    trajs = random_trajectories(np.random.default_rng(7), n_groups=8, step_values=RULE_STEP)
    rewards, mask, uids = to_verl(trajs, READER)
    data = DataProto.from_dict(tensors={"token_level_rewards": rewards, "response_mask": mask},
                               non_tensors={"uid": uids})  # fmt: skip
    algorithm = _algorithm("finestep", ablation="no_temporal", lam=0.25, beta=0.0)
    out = compute_advantage(data, adv_estimator="finestep", config=algorithm)
    credit = CreditConfig.ablation("no_temporal", lam=0.25, beta=0.0)
    assert torch.equal(out.batch["advantages"], reference(trajs, credit, rewards.shape[1]))


def test_v1_trainer_path_from_agent_loop_outputs():
    """The V1 trainer's path: ``AgentLoopOutput.as_dict`` per response (what ``agent_loop_tq`` stores), the
    jagged batch padded back (``to_padded_tensor``), then ``compute_advantage_for_multi_trajectories``."""
    from verl.trainer.ppo.v1.utils import compute_advantage_for_multi_trajectories
    from verl.utils.tensordict_utils import list_of_dict_to_tensordict

    trajs = [t for t in random_trajectories(np.random.default_rng(3), step_values=RULE_STEP) if t.process]
    fields, keys = [], []
    for i, t in enumerate(trajs):
        ends = [end for _, end in t.spans]
        mask = [0] * t.n_tokens
        for start, end in t.spans:
            mask[start:end] = [1] * (end - start)
        output = FineStepAgentLoopOutput(
            prompt_ids=[1, 2, 3], response_ids=list(range(10, 10 + t.n_tokens)), response_mask=mask,
            reward_score=t.outcome + sum(t.process), metrics={},
            token_rewards=encode_token_rewards(t.n_tokens, ends, t.process, t.outcome, t.solved, READER),
        )  # fmt: skip
        field = output.as_dict()
        assert "token_rewards" not in field and field["rm_scores"].shape == field["responses"].shape
        fields.append({"uid": t.uid, "response_mask": field["response_mask"], "rm_scores": field["rm_scores"]})
        keys.append(f"{t.uid}_{i}_0")
    stored = list_of_dict_to_tensordict(fields)
    padded = stored.select("response_mask", "rm_scores").to_padded_tensor()
    data = DataProto(batch=padded)
    data.batch["token_level_rewards"] = data.batch["rm_scores"]
    data.non_tensor_batch["uid"] = np.array([t.uid for t in trajs], dtype=object)
    out = compute_advantage_for_multi_trajectories(data, batch_keys=keys, adv_estimator="finestep",
                                                   config=_algorithm("finestep"))  # fmt: skip
    want = reference(trajs, CreditConfig(), padded["rm_scores"].shape[1])
    assert torch.equal(out.batch["advantages"], want)


def test_missing_uids_and_kl_in_reward_are_refused():
    rewards, mask, uids = to_verl(random_trajectories(np.random.default_rng(0)), READER)
    fn = get_adv_estimator_fn("finestep")
    with pytest.raises(ValueError, match="group uids"):
        fn(token_level_rewards=rewards, response_mask=mask, config=_algorithm("finestep"))
    bad = OmegaConf.merge(_algorithm("finestep"), {"use_kl_in_reward": True})
    with pytest.raises(ValueError, match="use_kl_in_reward"):
        fn(token_level_rewards=rewards, response_mask=mask, index=uids, config=bad)
