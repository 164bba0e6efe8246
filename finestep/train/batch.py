"""From scored trajectories to a padded token batch with per-token advantages and a loss mask."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from finestep.agent.trajectory import Trajectory
from finestep.credit import CreditConfig, StepAdvantages, StepBatch, compute_advantages, history_anchors
from finestep.credit.tokens import step_to_token_advantages
from finestep.eval.episodes import EpisodeScore
from finestep.sql.analysis import canonical_sql

__all__ = ["TokenBatch", "build_token_batch", "credit_rollout"]


def _action_key(step_kind: str, sql: str | None) -> str:
    return f"{step_kind}:{canonical_sql(sql) if sql else ''}"


def credit_rollout(
    trajectories: Sequence[Trajectory], scores: Sequence[EpisodeScore], config: CreditConfig
) -> tuple[StepBatch, StepAdvantages]:
    """Step advantages of a rollout with the configured estimator (trajectories of one task form a group)."""
    views = [[s.reward_view() for s in t.steps] for t in trajectories]
    batch = StepBatch.from_lists(
        groups=[t.task.id for t in trajectories],
        outcomes=[s.outcome for s in scores],
        process_rewards=[s.process_reward for s in scores],
        is_solution=[[v.kind == "solution" for v in steps] for steps in views],
        links=[s.links for s in scores],
        anchors=history_anchors([[_action_key(v.kind, v.sql) for v in steps] for steps in views]),
    )
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
    tokens = step_to_token_advantages(
        advantages.advantages,
        np.array([row for row, _ in steps], dtype=np.int64),
        np.array([s.span for _, s in steps], dtype=np.int64).reshape(-1, 2),
        lengths,
        batch.group_index,
        step_truncated=np.array([s.truncated for _, s in steps], dtype=bool),
        obs_seq=np.array([row for row, _ in observations], dtype=np.int64),
        obs_spans=np.array([span for _, span in observations], dtype=np.int64).reshape(-1, 2),
        prompt_lengths=np.array([t.prompt_length for t in trajectories], dtype=np.int64),
        mask_truncated_steps=config.mask_truncated_steps,
        drop_zero_groups=config.drop_zero_groups,
        zero_tol=config.zero_tol,
        width=width,
    )
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
