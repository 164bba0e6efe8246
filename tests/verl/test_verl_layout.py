"""The verl tensor layout and the adapter's tensor functions (numpy and torch only: these run without verl)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from finestep.config import ConfigError
from finestep.credit import CreditConfig
from finestep.integrations.verl_layout import (
    RewardReader,
    configs_from_verl,
    decode_layout,
    encode_token_rewards,
    max_process_reward,
    step_runs,
    token_advantages,
)
from finestep.rewards.config import OutcomeConfig, ProcessConfig, RewardConfig

from .layouts import DYADIC_STEP, RULE_STEP, random_trajectories, reference, to_verl

SPLIT = RewardReader.from_rewards(RewardConfig())


def test_step_runs_are_the_runs_of_model_tokens():
    mask = np.array([[1, 1, 0, 0, 1, 0, 1, 1, 1], [0, 0, 0, 0, 0, 0, 0, 0, 0], [0, 1, 1, 1, 1, 1, 1, 1, 1]])
    rows, starts, ends = step_runs(mask)
    assert rows.tolist() == [0, 0, 0, 2]
    assert starts.tolist() == [0, 4, 6, 1]
    assert ends.tolist() == [2, 5, 9, 9]


def test_default_split_threshold():
    assert max_process_reward(ProcessConfig()) == pytest.approx(0.3)  # executes_ok + progress
    assert SPLIT.no_solution == -1.0
    assert SPLIT.threshold == pytest.approx((0.0 + (-1.0 + 0.3)) / 2)


def test_split_rejects_confusable_rewards():
    with pytest.raises(ValueError, match="must exceed outcome.format_failure"):
        RewardReader.from_rewards(RewardConfig(outcome=OutcomeConfig(wrong=-1.0)))
    with pytest.raises(ValueError, match="must exceed"):  # a big positive rule weight
        RewardReader.from_rewards(RewardConfig(process=ProcessConfig(progress=2.0)))


def test_encode_places_rewards_at_turn_ends():
    values = encode_token_rewards(9, [2, 5, 9], [0.25, -0.5, 0.0], 1.0, True, SPLIT)
    assert values == [0.0, 0.25, 0.0, 0.0, -0.5, 0.0, 0.0, 0.0, 1.0]
    values = encode_token_rewards(4, [2, 4], [0.125, -0.25], -1.0, False, SPLIT)
    assert values == [0.0, 0.125, 0.0, -1.25]


def test_encode_refuses_what_would_be_misread():
    with pytest.raises(ValueError, match="solution step gets only the format rule"):
        encode_token_rewards(3, [3], [-0.5], 1.0, True, SPLIT)
    with pytest.raises(ValueError, match="without a solution has outcome -1.0"):
        encode_token_rewards(3, [3], [0.1], 0.0, False, SPLIT)


def test_decode_round_trip_and_windows():
    # row 0: two steps, solved; row 1: one step, no solution; row 2: no step (empty response)
    rewards = torch.tensor([[0, 0.25, 0, 0, 1.0, 0], [0, -1.5, 0, 0, 0, 0], [0, 0, 0, 0, 0, 0]], dtype=torch.float32)
    mask = torch.tensor([[1, 1, 0, 1, 1, 0], [1, 1, 0, 0, 0, 0], [0, 0, 0, 0, 0, 0]])
    layout = decode_layout(rewards.numpy(), mask.numpy(), np.array(["a", "a", "b"], dtype=object), SPLIT)
    batch = layout.batch
    assert batch.traj.tolist() == [0, 0, 1]
    assert batch.process_reward.tolist() == [0.25, 0.0, -0.5]
    assert batch.outcome.tolist() == [1.0, -1.0, 0.0]
    assert batch.is_solution.tolist() == [False, True, False]
    assert batch.group.tolist() == [0, 0, 1]
    assert layout.spans.tolist() == [[0, 2], [3, 5], [0, 2]]
    # a reward placed anywhere in a step's window (here on an observation token, or after the last step)
    # counts for that step: the sum of a row's rewards is R + sum r_t
    moved = torch.tensor([[0.25, 0, 0, 0, 0, 1.0]], dtype=torch.float32)
    layout = decode_layout(moved.numpy(), mask[:1].numpy(), np.array(["a"], dtype=object), SPLIT)
    assert layout.batch.process_reward.tolist() == [0.25, 0.0] and layout.batch.outcome.tolist() == [1.0]


@pytest.mark.parametrize("estimator", ["finestep", "grpo_shaped", "ps_grpo"])
@pytest.mark.parametrize("seed", range(6))
def test_adapter_equals_finestep_credit_exactly(estimator, seed):
    """Rewards representable in float32: verl's float32 tensors carry them exactly, so the advantages are equal."""
    trajs = random_trajectories(np.random.default_rng(seed), step_values=DYADIC_STEP)
    rewards, mask, uids = to_verl(trajs, SPLIT)
    credit = CreditConfig(estimator=estimator)
    got = token_advantages(rewards, mask, uids, credit, SPLIT)
    want = reference(trajs, credit, rewards.shape[1])
    assert got.dtype == torch.float32 and got.shape == rewards.shape
    assert torch.equal(got, want)
    assert torch.all(got[mask == 0] == 0)


@pytest.mark.parametrize("ablation", ["full", "no_process", "no_temporal", "no_group_norm", "no_masking", "v1"])
def test_adapter_equals_finestep_credit_on_rule_values(ablation):
    """The default rules' values (0.1, -0.2, ...) are stored in float32 by verl and read back rounded to 5
    decimals: the exact float64 values, so the advantages are equal too (without rounding they are not:
    equal rewards stored differently break a group's zero spread, see ``test_float32_storage_needs_rounding``)."""
    for estimator in ("finestep", "grpo_shaped", "ps_grpo"):
        credit = CreditConfig.ablation(ablation, estimator=estimator)
        for seed in range(30):
            trajs = random_trajectories(np.random.default_rng(100 + seed), step_values=RULE_STEP)
            rewards, mask, uids = to_verl(trajs, SPLIT)
            got = token_advantages(rewards, mask, uids, credit, SPLIT)
            assert torch.equal(got, reference(trajs, credit, rewards.shape[1])), (estimator, seed)


def test_float32_storage_needs_rounding():
    """-0.3 stored alone and -0.3 stored inside -1.3 differ by 1e-8 in float32: the reader's rounding makes them
    equal again, so this group of two equal internal steps has zero process spread, as in FineStep."""
    from .layouts import Traj

    trajs = [Traj("t", [-0.3, 0.0], 1.0, True, [2, 2], [0, 1]), Traj("t", [-0.3], -1.0, False, [3], [0])]
    rewards, mask, uids = to_verl(trajs, SPLIT)
    want = reference(trajs, CreditConfig(), rewards.shape[1])
    assert torch.equal(token_advantages(rewards, mask, uids, CreditConfig(), SPLIT), want)
    raw = RewardReader(SPLIT.no_solution, SPLIT.threshold, decimals=None)
    assert (token_advantages(rewards, mask, uids, CreditConfig(), raw) - want).abs().max() > 1e-3


def test_configs_from_verl_reads_the_finestep_block():
    settings = configs_from_verl(None)
    assert settings.credit == CreditConfig() and settings.rewards == RewardConfig() and settings.reader == SPLIT
    algorithm = {"adv_estimator": "finestep", "use_kl_in_reward": False, "finestep": {
        "ablation": "no_logical", "gamma_p": 0.25, "lam": 1, "reward_decimals": None,
        "rewards": {"outcome": {"correct": 2.0}}}}
    settings = configs_from_verl(algorithm, estimator="ps_grpo")
    credit = settings.credit
    assert (credit.estimator, credit.beta, credit.gamma_p, credit.lam) == ("ps_grpo", 0.0, 0.25, 1.0)
    assert settings.rewards.outcome.correct == 2.0 and settings.reader.decimals is None
    # FineStep version 1 through verl: the ablation, or its two fields
    for block in ({"ablation": "v1"}, {"outcome_norm": "steps", "process_scale": "group", "equal_outcome_process": 1}):
        credit = configs_from_verl({"finestep": block}).credit
        assert credit == CreditConfig.ablation("v1")
    assert configs_from_verl({"finestep": {"process_scale": "none"}}).credit.process_scale == "none"
    with pytest.raises(ValueError, match="process_scale must be one of"):
        configs_from_verl({"finestep": {"process_scale": "task"}})
    with pytest.raises(ConfigError, match="algorithm.finestep.gama_p: unknown key"):
        configs_from_verl({"finestep": {"gama_p": 0.5}})
    with pytest.raises(ValueError, match="use_kl_in_reward"):
        configs_from_verl({"use_kl_in_reward": True})
