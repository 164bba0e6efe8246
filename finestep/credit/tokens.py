"""Step advantages -> per-token advantages and loss masks (FINESTEP.md section 3, masking).

Shapes: ``B`` sequences (rows; usually one per trajectory), ``T`` token positions, ``S`` steps, ``M``
observation spans. A span is ``[start, end)`` in the row's token positions.

Rules, whatever the switches:
- only the tokens of a step span (the tokens the model generated in that turn) can be trained;
- prompt tokens (``< prompt_lengths``) and observation tokens never are, even where a step span covers them
  (observation spans win over step spans: there is no switch to train observations);
- a closed token has advantage 0.
Switches: ``mask_truncated_steps`` closes every token of a step cut off by the token budget;
``drop_zero_groups`` closes every token of a group whose open steps (after the truncation mask) all have
advantages within ``zero_tol`` of 0, so it adds nothing to the loss nor to the token count. (The process term on internal steps only is applied
upstream, by ``CreditConfig.process_internal_only``.)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from finestep.credit.batch import StepBatch
from finestep.credit.config import CreditConfig

__all__ = ["TokenAdvantages", "batch_token_advantages", "spans_to_mask", "step_to_token_advantages"]


@dataclass(frozen=True, eq=False)
class TokenAdvantages:
    """advantages: (B, T) float32, 0 where masked; mask: (B, T) bool, True = the token gets loss."""

    advantages: np.ndarray
    mask: np.ndarray

    def to_torch(self, device: Any = None) -> tuple[Any, Any]:
        """``(advantages, mask)`` as torch tensors (float32, bool) on ``device``."""
        import torch

        return (
            torch.from_numpy(np.ascontiguousarray(self.advantages)).to(device),
            torch.from_numpy(np.ascontiguousarray(self.mask)).to(device),
        )


def _spans(name: str, seq: Any, spans: Any, seq_lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Validate (n,) rows and (n, 2) spans against the row lengths; return (rows, spans) as int64."""
    rows = np.asarray(seq, dtype=np.int64).reshape(-1)
    sp = np.asarray(spans, dtype=np.int64)
    if sp.size == 0:
        sp = sp.reshape(0, 2)
    if sp.ndim != 2 or sp.shape[1] != 2 or sp.shape[0] != rows.size:
        raise ValueError(f"{name} spans must have shape ({rows.size}, 2), got {sp.shape}")
    if rows.size:
        if rows.min() < 0 or rows.max() >= seq_lengths.size:
            raise ValueError(f"{name} rows must lie in [0, {seq_lengths.size})")
        start, end = sp[:, 0], sp[:, 1]
        bad = (start < 0) | (end < start) | (end > seq_lengths[rows])
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise ValueError(
                f"{name} span {i} = [{start[i]}, {end[i]}) is not inside row {rows[i]} "
                f"of length {seq_lengths[rows[i]]}"
            )
    return rows, sp


def _flat_positions(rows: np.ndarray, spans: np.ndarray, width: int) -> np.ndarray:
    """Flat indices ``row * width + col`` of every token of the spans, span after span. (sum of lengths,)

    Concatenated ranges without a per-span loop: ones, with a jump at each span's first token, cumulated.
    """
    lengths = spans[:, 1] - spans[:, 0]
    keep = lengths > 0
    starts = rows[keep] * width + spans[keep, 0]
    lengths = lengths[keep]
    if starts.size == 0:
        return np.zeros(0, dtype=np.int64)
    steps = np.ones(int(lengths.sum()), dtype=np.int64)
    steps[0] = starts[0]
    steps[np.cumsum(lengths[:-1])] = starts[1:] - (starts[:-1] + lengths[:-1] - 1)
    return np.cumsum(steps, out=steps)


def spans_to_mask(seq: Any, spans: Any, shape: tuple[int, int]) -> np.ndarray:
    """(B, T) bool mask, True on the tokens of the spans. seq: (n,) rows; spans: (n, 2) ``[start, end)``."""
    rows, sp = _spans("mask", seq, spans, np.full(shape[0], shape[1], dtype=np.int64))
    mask = np.zeros(shape[0] * shape[1], dtype=bool)
    mask[_flat_positions(rows, sp, shape[1])] = True
    return mask.reshape(shape)


def step_to_token_advantages(
    step_advantages: Any,
    step_seq: Any,
    step_spans: Any,
    seq_lengths: Any,
    seq_group: Any,
    *,
    step_truncated: Any = None,
    obs_seq: Any = None,
    obs_spans: Any = None,
    prompt_lengths: Any = None,
    mask_truncated_steps: bool = True,
    drop_zero_groups: bool = True,
    zero_tol: float = 1e-8,
    width: int | None = None,
) -> TokenAdvantages:
    """Spread step advantages over their tokens and build the loss mask (vectorized; see module docstring).

    Args:
        step_advantages: (S,) float, ``A_{i,t}``.
        step_seq: (S,) int, the row of each step.
        step_spans: (S, 2) int, ``[start, end)`` of each step's generated tokens; spans must not overlap.
        seq_lengths: (B,) int, tokens in each row (positions past it are padding, always closed).
        seq_group: (B,) int, the task group of each row (for ``drop_zero_groups``).
        step_truncated: (S,) bool, the step was cut off by the token budget. Default: none.
        obs_seq, obs_spans: (M,) int and (M, 2) int, observation spans; always closed.
        prompt_lengths: (B,) int, prompt tokens at the start of each row; always closed. Default: 0.
        mask_truncated_steps, drop_zero_groups, zero_tol: the switches (module docstring).
        width: T, the output width; default ``max(seq_lengths)``.

    Returns:
        TokenAdvantages with (B, T) float32 advantages and (B, T) bool mask.
    """
    lengths = np.asarray(seq_lengths, dtype=np.int64).reshape(-1)
    if lengths.size and lengths.min() < 0:
        raise ValueError("seq_lengths must be >= 0")
    n_rows = lengths.size
    T = int(lengths.max(initial=0)) if width is None else int(width)
    if lengths.size and T < lengths.max():
        raise ValueError(f"width {T} is smaller than the longest row ({lengths.max()})")
    adv = np.asarray(step_advantages, dtype=np.float64).reshape(-1)
    rows, spans = _spans("step", step_seq, step_spans, lengths)
    if adv.size != rows.size:
        raise ValueError(f"step_advantages has {adv.size} entries but there are {rows.size} step spans")
    if not np.all(np.isfinite(adv)):
        raise ValueError("step_advantages must be finite")
    groups = np.asarray(seq_group, dtype=np.int64).reshape(-1)
    if groups.size != n_rows:
        raise ValueError(f"seq_group has {groups.size} entries but seq_lengths has {n_rows}")
    _check_no_overlap(rows, spans)

    open_step = np.ones(rows.size, dtype=bool)
    if mask_truncated_steps and step_truncated is not None:
        truncated = np.asarray(step_truncated, dtype=bool).reshape(-1)
        if truncated.size != rows.size:
            raise ValueError(f"step_truncated has {truncated.size} entries but there are {rows.size} steps")
        open_step &= ~truncated
    if drop_zero_groups and rows.size:
        _, gid = np.unique(groups, return_inverse=True)
        step_gid = gid.reshape(-1)[rows]
        signal = open_step & (np.abs(adv) > zero_tol)
        alive = np.bincount(step_gid, weights=signal, minlength=int(step_gid.max()) + 1) > 0
        open_step &= alive[step_gid]

    if prompt_lengths is not None:
        prompt = np.asarray(prompt_lengths, dtype=np.int64).reshape(-1)
        if prompt.size != n_rows:
            raise ValueError(f"prompt_lengths has {prompt.size} entries but seq_lengths has {n_rows}")
        # Prompt tokens never open: clip the step spans to start after the prompt.
        start = np.maximum(spans[:, 0], prompt[rows])
        spans = np.stack([start, np.maximum(spans[:, 1], start)], axis=1)

    # Scatter the open steps only: O(step tokens), not O(B * T).
    opened = np.flatnonzero(open_step)
    flat = _flat_positions(rows[opened], spans[opened], T)
    values = np.zeros(n_rows * T, dtype=np.float32)
    mask = np.zeros(n_rows * T, dtype=bool)
    values[flat] = np.repeat(adv[opened].astype(np.float32), spans[opened, 1] - spans[opened, 0])
    mask[flat] = True
    if obs_spans is not None:
        obs_rows, obs = _spans("observation", obs_seq, obs_spans, lengths)
        closed = _flat_positions(obs_rows, obs, T)
        mask[closed] = False
        values[closed] = 0.0
    values = values.reshape(n_rows, T)
    mask = mask.reshape(n_rows, T)
    return TokenAdvantages(advantages=values, mask=mask)


def _check_no_overlap(rows: np.ndarray, spans: np.ndarray) -> None:
    """Raise ValueError if two non-empty step spans of one row overlap."""
    nonempty = spans[:, 1] > spans[:, 0]
    r, sp = rows[nonempty], spans[nonempty]
    if r.size < 2:
        return
    order = np.lexsort((sp[:, 0], r))
    r, sp = r[order], sp[order]
    clash = (r[1:] == r[:-1]) & (sp[1:, 0] < sp[:-1, 1])
    if clash.any():
        i = int(np.flatnonzero(clash)[0])
        raise ValueError(f"step spans {sp[i].tolist()} and {sp[i + 1].tolist()} overlap in row {r[i]}")


def batch_token_advantages(
    batch: StepBatch,
    step_advantages: Any,
    step_spans: Any,
    seq_lengths: Any,
    config: CreditConfig,
    *,
    step_truncated: Any = None,
    obs_seq: Any = None,
    obs_spans: Any = None,
    prompt_lengths: Any = None,
    width: int | None = None,
) -> TokenAdvantages:
    """``step_to_token_advantages`` with one row per trajectory of ``batch`` (row i = trajectory i).

    The rows and groups come from the batch (``step_seq = batch.traj``, ``seq_group = batch.group_index``), the
    switches from ``config``. step_spans: (S, 2); seq_lengths, prompt_lengths: (N,); step_truncated: (S,).
    """
    return step_to_token_advantages(
        step_advantages, batch.traj, step_spans, seq_lengths, batch.group_index,
        step_truncated=step_truncated, obs_seq=obs_seq, obs_spans=obs_spans, prompt_lengths=prompt_lengths,
        mask_truncated_steps=config.mask_truncated_steps, drop_zero_groups=config.drop_zero_groups,
        zero_tol=config.zero_tol, width=width,
    )
