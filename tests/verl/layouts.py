"""Random groups of trajectories, laid out two ways: as verl's tensors and as ``finestep.credit``'s reference."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from finestep.credit import CreditConfig, StepBatch, batch_token_advantages, compute_advantages
from finestep.integrations.verl_layout import RewardReader, encode_token_rewards

# Rewards exactly representable in float32 (and their sums), so verl's float32 tensors carry them exactly.
DYADIC_STEP = (-0.5, -0.375, -0.25, -0.125, 0.0, 0.125, 0.25)
# Values the default process rules produce (sums of +0.1 / -0.2 / -0.3 / +0.2 / -0.5 ...).
RULE_STEP = (0.1, 0.3, -0.2, -0.4, -0.5, -0.3, -0.6, -0.1, 0.0)


@dataclass
class Traj:
    """One trajectory: its group uid, ``r_t``, ``R``, whether it ends with a solution, its token layout."""

    uid: str
    process: list[float]
    outcome: float
    solved: bool
    step_lengths: list[int]
    gap_lengths: list[int]  # observation tokens before each step (0 before the first)

    @property
    def spans(self) -> list[tuple[int, int]]:
        spans, pos = [], 0
        for gap, length in zip(self.gap_lengths, self.step_lengths):
            pos += gap
            spans.append((pos, pos + length))
            pos += length
        return spans

    @property
    def n_tokens(self) -> int:
        return sum(self.step_lengths) + sum(self.gap_lengths)


def random_trajectories(
    rng: np.random.Generator, n_groups: int = 6, step_values: tuple[float, ...] = DYADIC_STEP, max_steps: int = 5
) -> list[Traj]:
    """Groups of 1 to 6 trajectories with 0 to ``max_steps`` steps; solved ones end with a 0-reward solution step."""
    trajs = []
    for g in range(n_groups):
        for _ in range(int(rng.integers(1, 7))):
            n_steps = int(rng.integers(0, max_steps + 1)) if rng.random() < 0.1 else int(rng.integers(1, max_steps + 1))
            solved = n_steps > 0 and bool(rng.random() < 0.6)
            process = [float(rng.choice(step_values)) for _ in range(n_steps)]
            if solved:
                process[-1] = 0.0
            outcome = float(rng.choice([1.0, 0.0])) if solved else (-1.0 if n_steps else 0.0)
            trajs.append(Traj(
                uid=f"task-{g}", process=process, outcome=outcome, solved=solved,
                step_lengths=[int(rng.integers(1, 6)) for _ in range(n_steps)],
                gap_lengths=[0] + [int(rng.integers(1, 5)) for _ in range(max(0, n_steps - 1))],
            ))  # fmt: skip
    order = rng.permutation(len(trajs))  # verl does not promise that a group's rows are adjacent
    return [trajs[i] for i in order]


def to_verl(trajs: list[Traj], reader: RewardReader, pad: int = 3) -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
    """``(token_level_rewards (B, L) float32, response_mask (B, L) int64, uids (B,) object)``, right-padded."""
    width = max(t.n_tokens for t in trajs) + pad
    rewards = torch.zeros((len(trajs), width), dtype=torch.float32)
    mask = torch.zeros((len(trajs), width), dtype=torch.int64)
    for row, t in enumerate(trajs):
        ends = [end for _, end in t.spans]
        values = encode_token_rewards(t.n_tokens, ends, t.process, t.outcome, t.solved, reader)
        rewards[row, : t.n_tokens] = torch.tensor(values, dtype=torch.float32)
        for start, end in t.spans:
            mask[row, start:end] = 1
    return rewards, mask, np.array([t.uid for t in trajs], dtype=object)


def reference(trajs: list[Traj], credit: CreditConfig, width: int) -> torch.Tensor:
    """(B, L) float32 token advantages straight from ``finestep.credit`` (estimator, then token mapping)."""
    batch = StepBatch.from_lists(
        groups=[t.uid for t in trajs],
        outcomes=[t.outcome for t in trajs],
        process_rewards=[t.process for t in trajs],
        is_solution=[[False] * (len(t.process) - 1) + [t.solved] if t.process else [] for t in trajs],
    )
    steps = compute_advantages(batch, credit)
    spans = np.array([span for t in trajs for span in t.spans], dtype=np.int64).reshape(-1, 2)
    tokens = batch_token_advantages(batch, steps.advantages, spans, np.full(len(trajs), width), credit, width=width)
    return torch.from_numpy(tokens.advantages)
