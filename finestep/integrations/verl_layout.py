"""FineStep's reward layout in verl's token tensors, and step credit computed from it (no verl import).

verl hands an advantage estimator three things per batch of ``B`` responses padded to ``L`` tokens:
``token_level_rewards`` (B, L) float, ``response_mask`` (B, L) (1 on tokens the model generated, 0 on tool
observations and padding) and ``index`` (B,) the prompt uid of each response (responses to one prompt form a
group). Nothing else reaches it, so the FineStep agent loop (``verl_agent``) writes everything the credit needs
into the rewards, in this layout:

- a **step** is a maximal run of 1s in ``response_mask`` (one assistant turn; observations separate turns);
- the loop writes the process reward ``r_t`` at the last token of step ``t`` and adds the outcome ``R`` at the
  last token of the trajectory (the last token of the last step): that token holds ``r_T + R``;
- reading it back, step ``t``'s value is the sum of the rewards after step ``t - 1``'s last token up to step
  ``t``'s last token, and whatever lies after the last step belongs to the last step. So rewards placed
  anywhere in a step's window count for that step, and a row's rewards sum to ``R + sum_t r_t``;
- ``r_T + R`` is split exactly with two facts of the method (FINESTEP.md section 1): a solution step gets only
  the ``format`` rule, which cannot fire on a well-formed solution, so its ``r_T`` is 0 and the token holds ``R``;
  a trajectory without a solution has ``R = outcome.format_failure``, so ``r_T = value - format_failure``.
  Which case holds is read from the value (``RewardReader``): solutions score ``R`` in
  ``{correct, wrong, error}``, all above ``format_failure + r_max`` (``r_max``, the largest process reward an
  internal step can get); a reward config where this fails is rejected, by the loop and by the estimator;
- verl stores the rewards in float32; the reader rounds what it reads to 5 decimals (``reward_decimals``), so
  rewards the config writes with at most 5 decimals come back as the exact float64 values FineStep's own trainer
  uses (otherwise ``-0.3`` stored alone and ``-0.3`` stored inside ``-1.3`` would differ by 1e-8, and a group of
  equal process returns would no longer count as zero spread).

FineStep's default process scale (``process_scale="batch"``, version 2) is one statistic over every group of the
batch: verl calls the estimator once per training step with the whole batch (``compute_advantage`` on the full
``DataProto``; see docs/scale.md), so the plugin's advantages equal ``finestep.credit``'s on that batch.

Logical links (FINESTEP.md "Logical") have no place in verl's estimator inputs: through verl, ``P~ = P``
(the ``no_logical`` ablation), whatever ``beta`` says. Token masks: truncated steps are not marked in verl's
tensors, so ``mask_truncated_steps`` has no effect; ``drop_zero_groups`` zeroes the group's advantages (verl
still counts those tokens in its loss mean).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from finestep.config import from_dict
from finestep.credit import ABLATIONS, CreditConfig, StepBatch, batch_token_advantages, compute_advantages
from finestep.rewards import PROCESS_RULES, ProcessConfig, RewardConfig

__all__ = [
    "RewardReader",
    "StepLayout",
    "VerlSettings",
    "configs_from_verl",
    "decode_layout",
    "encode_token_rewards",
    "max_process_reward",
    "step_runs",
    "token_advantages",
]


def max_process_reward(config: ProcessConfig) -> float:
    """The largest ``r_t`` the process rules can give one step: the sum of each registered rule's largest weighted
    value (``ProcessRule.possible_values``; a rule that declares none cannot be bounded: ValueError)."""
    return float(sum(
        max(0.0, *(config.weights.get(name, 1.0) * v for v in rule.possible_values(config)))
        for name, rule in PROCESS_RULES.items()
    ))  # fmt: skip


@dataclass(frozen=True)
class RewardReader:
    """How rewards are read back from verl's float32 tensors (module docstring).

    Attributes:
        no_solution: ``R`` of a trajectory without a solution (``outcome.format_failure``).
        threshold: a last-step value above it means the trajectory submitted a solution; midway between the
            largest value without a solution (``no_solution + r_max``) and the smallest solution outcome.
        decimals: read values are rounded to this many decimals (``None``: not rounded). verl stores rewards in
            float32; rounding undoes that storage error (below ``5e-6`` for ``|value| < 80``), so a reward the
            config writes with at most ``decimals`` decimals is read back as exactly the float64 the trainer
            would use, and equal rewards stay equal (a group's zero spread stays zero).
    """

    no_solution: float
    threshold: float
    decimals: int | None = 5

    @classmethod
    def from_rewards(cls, config: RewardConfig, decimals: int | None = 5) -> RewardReader:
        """The reader for a reward config; ValueError when solution outcomes and the rest could be confused."""
        out = config.outcome
        ceiling = out.format_failure + max_process_reward(config.process)
        floor = min(out.correct, out.wrong, out.error)
        if not floor > ceiling:
            raise ValueError(
                "rewards: every solution outcome (correct, wrong, error; smallest "
                f"{floor:g}) must exceed outcome.format_failure + the largest process reward ({ceiling:g}), "
                "so that the outcome can be read back from the last token in verl"
            )
        return cls(no_solution=float(out.format_failure), threshold=(floor + ceiling) / 2.0, decimals=decimals)

    def round(self, values: np.ndarray) -> np.ndarray:
        """``values`` (float64) rounded to ``decimals``."""
        values = np.asarray(values, dtype=np.float64)
        return values if self.decimals is None else np.round(values, self.decimals)

    def split(self, value: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(R, r_T, submitted_solution)`` from last-step values ``r_T + R`` (arrays of one shape)."""
        value = self.round(value)
        solved = value > self.threshold
        r_last = self.round(np.where(solved, 0.0, value - self.no_solution))
        return np.where(solved, value, self.no_solution), r_last, solved


def encode_token_rewards(
    n_tokens: int,
    step_ends: Sequence[int],
    process_rewards: Sequence[float],
    outcome: float,
    submitted_solution: bool,
    reader: RewardReader,
) -> list[float]:
    """The per-token rewards of one response in the layout: ``r_t`` at each step's last token, ``R`` added at the last.

    Args:
        n_tokens: tokens in the response (generated and observation tokens).
        step_ends: exclusive end of each step's tokens, increasing (the last token of step t is ``end - 1``).
        process_rewards: ``r_t`` per step.
        outcome: ``R``.
        submitted_solution: the last step is a well-formed solution.
        reader: how the estimator reads it back; a trajectory it would misread raises ValueError.
    """
    if len(step_ends) != len(process_rewards):
        raise ValueError(f"{len(step_ends)} step ends but {len(process_rewards)} process rewards")
    rewards = [0.0] * n_tokens
    if not step_ends:
        return rewards
    for end, reward in zip(step_ends, process_rewards):
        rewards[end - 1] += float(reward)
    if submitted_solution and process_rewards[-1] != 0.0:
        raise ValueError(f"a solution step gets only the format rule, so its reward is 0, got {process_rewards[-1]}")
    if not submitted_solution and outcome != reader.no_solution:
        raise ValueError(f"a trajectory without a solution has outcome {reader.no_solution}, got {outcome}")
    rewards[step_ends[-1] - 1] += float(outcome)
    if bool(reader.split(np.float32(rewards[step_ends[-1] - 1]))[2]) != submitted_solution:
        raise ValueError(f"last-step value {rewards[step_ends[-1] - 1]} would be misread (see RewardReader)")
    return rewards


def step_runs(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(rows, starts, ends)``, each (S,) int64: the maximal runs of nonzero entries of a (B, L) mask, row-major."""
    on = np.asarray(mask) != 0
    edges = np.diff(np.pad(on, ((0, 0), (1, 1))).astype(np.int8), axis=1)  # +1 at a run's start, -1 after its end
    rows, starts = np.nonzero(edges == 1)
    _, ends = np.nonzero(edges == -1)
    return rows.astype(np.int64), starts.astype(np.int64), ends.astype(np.int64)


@dataclass(frozen=True, eq=False)
class StepLayout:
    """The steps read from verl's tensors: ``batch`` (one trajectory per row, groups from the uids) and
    ``spans`` (S, 2) ``[start, end)`` token positions of each step in its row; ``width`` L."""

    batch: StepBatch
    spans: np.ndarray
    width: int


def decode_layout(rewards: Any, mask: Any, index: Any, reader: RewardReader) -> StepLayout:
    """Steps, ``r_t``, ``R`` and solution flags from (B, L) rewards and mask and (B,) uids (module docstring)."""
    values = np.asarray(rewards, dtype=np.float64)
    on = np.asarray(mask) != 0
    if values.ndim != 2 or values.shape != on.shape:
        raise ValueError(f"rewards {values.shape} and mask {on.shape} must be (B, L) of one shape")
    uids = np.asarray(index)
    n_rows, width = values.shape
    if uids.shape != (n_rows,):
        raise ValueError(f"index must hold one uid per row ({n_rows}), got shape {uids.shape}")
    rows, starts, ends = step_runs(on)
    last = np.ones(rows.size, dtype=bool)
    last[:-1] = rows[1:] != rows[:-1]
    first = np.ones(rows.size, dtype=bool)
    first[1:] = rows[1:] != rows[:-1]
    stepless = np.setdiff1d(np.arange(n_rows), rows)
    # One window per step, [previous step's end (or the row's start), this step's end), the last step's window
    # running to the row's end; one whole-row window per stepless row. Sums by reduceat over the flat rewards.
    step_window = rows * width + np.where(first, 0, np.roll(ends, 1))
    window_starts = np.concatenate((step_window, stepless * width))
    order = np.argsort(window_starts, kind="stable")
    sums = np.empty(window_starts.size)
    if window_starts.size:
        sums[order] = np.add.reduceat(values.reshape(-1), window_starts[order]) if width else 0.0
    sums = reader.round(sums)
    step_value, row_value = sums[: rows.size], sums[rows.size:]
    outcome = np.zeros(n_rows)
    outcome[stepless] = row_value
    process = step_value.copy()
    R, r_last, solved = reader.split(step_value[last])
    outcome[rows[last]] = R
    process[last] = r_last
    is_solution = np.zeros(rows.size, dtype=bool)
    is_solution[last] = solved
    group = np.unique(uids, return_inverse=True)[1].reshape(-1)
    batch = StepBatch(group=group, outcome=outcome, traj=rows, process_reward=process, is_solution=is_solution)
    return StepLayout(batch=batch, spans=np.stack([starts, ends], axis=1), width=width)


def _plain(node: Any) -> Any:
    """A DictConfig / dataclass / mapping as plain nested dicts (``None`` stays ``None``)."""
    if node is None:
        return None
    try:
        from omegaconf import DictConfig, OmegaConf

        if isinstance(node, DictConfig):
            return OmegaConf.to_container(node, resolve=True)
    except ImportError:  # pragma: no cover - omegaconf comes with verl
        pass
    if isinstance(node, Mapping):
        return {k: _plain(v) for k, v in node.items()}
    return node


def _get(config: Any, key: str) -> Any:
    if config is None:
        return None
    if isinstance(config, Mapping) or hasattr(config, "get"):
        try:
            return config.get(key)
        except (KeyError, AttributeError):  # a strict config without the key
            return None
    return getattr(config, key, None)


@dataclass(frozen=True)
class VerlSettings:
    """FineStep's settings in verl: the credit config, the reward config and how rewards are read back."""

    credit: CreditConfig
    rewards: RewardConfig
    reader: RewardReader


def configs_from_verl(algorithm: Any, estimator: str = "finestep") -> VerlSettings:
    """FineStep's settings from verl's ``algorithm`` config (its ``finestep`` block).

    ``algorithm.finestep`` may hold ``ablation`` (a key of ``ABLATIONS``, e.g. ``v1``), any ``CreditConfig`` field
    (e.g. ``outcome_norm``, ``process_scale``) but
    ``estimator`` (the verl estimator name decides it), ``rewards`` (``RewardConfig``: ``outcome``, ``process``)
    and ``reward_decimals`` (``RewardReader.decimals``, default 5, ``null`` for none). Everything missing takes
    FineStep's defaults. Raises ``ValueError`` (``ConfigError``) naming a bad key, and when
    ``algorithm.use_kl_in_reward`` is on: verl would subtract a per-token KL from the rewards, which breaks the
    layout (use the actor's KL loss instead).
    """
    if _get(algorithm, "use_kl_in_reward"):
        raise ValueError(
            "algorithm.use_kl_in_reward=True mixes a per-token KL into the process rewards; FineStep needs it "
            "off (use actor_rollout_ref.actor.use_kl_loss=True for a KL term)"
        )
    block = dict(_plain(_get(algorithm, "finestep")) or {})
    rewards = from_dict(RewardConfig, dict(block.pop("rewards", None) or {}), prefix="algorithm.finestep.rewards.")
    decimals = block.pop("reward_decimals", 5)
    if decimals is not None and (isinstance(decimals, bool) or not isinstance(decimals, int) or decimals < 0):
        raise ValueError(f"algorithm.finestep.reward_decimals: expected an integer >= 0 or null, got {decimals!r}")
    ablation = block.pop("ablation", "full")
    if ablation not in ABLATIONS:
        raise ValueError(f"algorithm.finestep.ablation: unknown {ablation!r}; expected one of {sorted(ABLATIONS)}")
    if "estimator" in block:
        raise ValueError("algorithm.finestep.estimator: set algorithm.adv_estimator instead")
    credit = from_dict(CreditConfig, {**ABLATIONS[ablation], **block, "estimator": estimator},
                       prefix="algorithm.finestep.")  # fmt: skip
    return VerlSettings(credit, rewards, RewardReader.from_rewards(rewards, decimals))


def token_advantages(
    token_level_rewards: torch.Tensor,
    response_mask: torch.Tensor,
    index: Any,
    credit: CreditConfig,
    reader: RewardReader,
) -> torch.Tensor:
    """(B, L) token advantages: the layout decoded, ``finestep.credit``'s estimator, its token mapping.

    Every token of step t gets ``A_t`` (float32 as ``finestep.credit.tokens`` computes it, then cast to the
    rewards' dtype); observation and padding tokens get 0. Runs on the CPU in float64 (numpy).
    """
    layout = decode_layout(
        token_level_rewards.detach().to("cpu", torch.float64).numpy(),
        response_mask.detach().cpu().numpy(),
        index,
        reader,
    )
    batch = layout.batch
    steps = compute_advantages(batch, credit)
    tokens = batch_token_advantages(
        batch, steps.advantages, layout.spans, np.full(batch.n_traj, layout.width, dtype=np.int64), credit,
        width=layout.width,
    )
    return torch.from_numpy(tokens.advantages).to(device=token_level_rewards.device, dtype=token_level_rewards.dtype)
