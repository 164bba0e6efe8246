"""From scored trajectories to a padded token batch with per-token advantages and a loss mask."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from finestep.agent.trajectory import Trajectory
from finestep.credit import (
    CreditConfig,
    StepAdvantages,
    StepBatch,
    batch_token_advantages,
    compute_advantages,
)
from finestep.rewards.scoring import ScoredTrajectory, step_batch

__all__ = ["TokenBatch", "build_token_batch", "credit_rollout"]


def credit_rollout(
    trajectories: Sequence[Trajectory], scores: Sequence[ScoredTrajectory], config: CreditConfig
) -> tuple[StepBatch, StepAdvantages]:
    """Step advantages of a scored rollout with the configured estimator (trajectories of one task form a group).

    ``trajectories`` are accepted for symmetry with ``build_token_batch``; the batch comes from the scores alone.
    """
    if len(trajectories) != len(scores):
        raise ValueError(f"{len(trajectories)} trajectories but {len(scores)} scores")
    batch = step_batch(scores)
    return batch, compute_advantages(batch, config)


@dataclass
class TokenBatch:
    """A padded batch of trajectories.

    ``input_ids``, ``attention_mask`` (B, T) long; ``advantages`` (B, T) float32 and ``loss_mask`` (B, T) bool at
    each token's own position (the log-probability of token t is predicted from positions < t);
    ``rollout_logprobs`` (B, T) float32, the generator's log-probabilities (0 where not generated).
    """

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    advantages: torch.Tensor
    loss_mask: torch.Tensor
    rollout_logprobs: torch.Tensor

    @property
    def n_tokens(self) -> int:
        """Unmasked (trained) tokens."""
        return int(self.loss_mask.sum())

    def select(self, rows: torch.Tensor | np.ndarray | list[int]) -> TokenBatch:
        """The sub-batch of the given rows."""
        index = torch.as_tensor(rows, dtype=torch.long)
        return TokenBatch(*(t[index] for t in (self.input_ids, self.attention_mask, self.advantages,
                                                self.loss_mask, self.rollout_logprobs)))  # fmt: skip


def build_token_batch(
    trajectories: Sequence[Trajectory],
    batch: StepBatch,
    advantages: StepAdvantages,
    config: CreditConfig,
    pad_id: int,
) -> TokenBatch:
    """Pad the trajectories into (B, T) tensors and spread each step's advantage over its tokens.

    Observation and prompt tokens are never in the loss mask; truncated steps and all-zero groups follow the
    config's switches (FINESTEP.md section 3).
    """
    lengths = np.array([len(t.token_ids) for t in trajectories], dtype=np.int64)
    width = int(lengths.max(initial=1))
    steps = [(row, s) for row, t in enumerate(trajectories) for s in t.steps]
    observations = [(row, s.observation_span) for row, t in enumerate(trajectories) for s in t.steps
                    if s.observation_span is not None]  # fmt: skip
    if batch.n_traj != len(trajectories) or batch.n_steps != len(steps):
        raise ValueError(f"the step batch ({batch.n_traj} trajectories, {batch.n_steps} steps) does not match the "
                         f"{len(trajectories)} trajectories ({len(steps)} steps)")  # fmt: skip
    tokens = batch_token_advantages(
        batch, advantages.advantages, np.array([s.span for _, s in steps], dtype=np.int64).reshape(-1, 2), lengths,
        config, step_truncated=np.array([s.truncated for _, s in steps], dtype=bool),
        obs_seq=np.array([row for row, _ in observations], dtype=np.int64),
        obs_spans=np.array([span for _, span in observations], dtype=np.int64).reshape(-1, 2),
        prompt_lengths=np.array([t.prompt_length for t in trajectories], dtype=np.int64), width=width,
    )  # fmt: skip
    input_ids = torch.full((len(trajectories), width), pad_id, dtype=torch.long)
    attention = torch.zeros((len(trajectories), width), dtype=torch.long)
    rollout_lp = torch.zeros((len(trajectories), width), dtype=torch.float32)
    for row, traj in enumerate(trajectories):
        n = len(traj.token_ids)
        input_ids[row, :n] = torch.tensor(traj.token_ids, dtype=torch.long)
        attention[row, :n] = 1
        rollout_lp[row, :n] = torch.tensor(traj.logprobs, dtype=torch.float32)
    return TokenBatch(
        input_ids, attention, torch.from_numpy(tokens.advantages), torch.from_numpy(tokens.mask), rollout_lp
    )
