"""The policy update: token log-probabilities, then PPO-clip epochs over minibatches of trajectories."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

from finestep.train.batch import TokenBatch
from finestep.train.config import OptimConfig
from finestep.train.loss import entropy_from_logits, ppo_clip_loss, token_log_probs

__all__ = ["UpdateProbe", "policy_update", "rollout_logprob_gap", "sequence_log_probs"]


def sequence_log_probs(
    model: torch.nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor, with_entropy: bool = False
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``log pi(token_t | tokens_<t)`` at every position t >= 1, (B, T) float32 (0 at t = 0), and the entropy
    of the predictive distribution at the same positions when asked.

    The (B, T, V) logits are read in place, in the model's dtype (bf16 under bf16 weights or autocast): reductions
    run in float32 a chunk of rows at a time (``token_log_probs``), so no float32 or shifted copy of the logits is
    made, and backward keeps only the logits themselves. The values are those of a float32 copy, exactly."""
    logits = model(input_ids=input_ids, attention_mask=attention_mask).logits
    # position t's logits predict token t + 1; the last position predicts nothing (a dummy label, dropped)
    labels = torch.cat([input_ids[:, 1:], torch.zeros_like(input_ids[:, :1])], dim=1)
    logprobs = token_log_probs(logits, labels)[:, :-1]
    zeros = torch.zeros_like(logprobs[:, :1])
    entropy = None
    if with_entropy:
        with torch.no_grad():
            entropy = torch.cat([zeros, entropy_from_logits(logits)[:, :-1]], dim=1)
    return torch.cat([zeros, logprobs], dim=1), entropy


def rollout_logprob_gap(rollout: torch.Tensor, old: torch.Tensor, mask: torch.Tensor) -> dict[str, float]:
    """How far the generator's log-probabilities are from the trainer's, on the trained tokens.

    Args:
        rollout: (B, T) log-probs recorded by the generator while sampling.
        old: (B, T) log-probs of the same tokens under the trainer's forward pass before the update.
        mask: (B, T) bool loss mask (or float weights: nonzero = trained).

    Returns:
        ``rollout_logprob_gap``, mean ``|rollout - old|``, and ``rollout_logprob_diff``, mean ``rollout - old``,
        over the masked-in tokens (0 without any). Near 0 for the HF generator (same weights, same numerics up
        to the KV cache); a large gap (e.g. vLLM in another precision, or stale weights) makes the "old" policy
        of PPO differ from the one that sampled the data.
    """
    keep = mask.to(old.device) != 0
    diff = (rollout.to(old.device, old.dtype) - old)[keep]
    if diff.numel() == 0:
        return {"rollout_logprob_gap": 0.0, "rollout_logprob_diff": 0.0}
    return {"rollout_logprob_gap": float(diff.abs().mean()), "rollout_logprob_diff": float(diff.mean())}


class UpdateProbe:
    """The share of a model's trainable weights that an update changed, on a strided sample of each tensor
    (``per_tensor`` elements at most): near 0 when the weights' precision rounds the update away (bf16 weights
    with AdamW at a learning rate of 1e-6: about 2% of them change), 1 when every sampled weight moved."""

    def __init__(self, model: torch.nn.Module, per_tensor: int = 4096) -> None:
        self.samples: list[tuple[torch.Tensor, int, torch.Tensor]] = []
        for p in model.parameters():
            if p.requires_grad:
                stride = max(1, p.numel() // per_tensor)
                self.samples.append((p, stride, p.detach().reshape(-1)[::stride].clone()))

    def applied(self) -> float:
        """The share of sampled weights that differ from when the probe was made."""
        changed = total = 0
        for p, stride, before in self.samples:
            changed += int((p.detach().reshape(-1)[::stride] != before).sum())
            total += before.numel()
        return changed / max(total, 1)


def _minibatches(n_rows: int, size: int, rng: np.random.Generator) -> Iterator[np.ndarray]:
    order = rng.permutation(n_rows)
    for start in range(0, n_rows, size):
        yield order[start : start + size]


@torch.no_grad()
def _log_probs_in_chunks(model: torch.nn.Module, batch: TokenBatch, size: int, device: torch.device) -> torch.Tensor:
    chunks = []
    for start in range(0, batch.input_ids.shape[0], size):
        ids = batch.input_ids[start : start + size].to(device)
        mask = batch.attention_mask[start : start + size].to(device)
        chunks.append(sequence_log_probs(model, ids, mask)[0].cpu())
    return torch.cat(chunks) if chunks else torch.zeros_like(batch.rollout_logprobs)


def policy_update(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    batch: TokenBatch,
    optim: OptimConfig,
    rng: np.random.Generator,
    device: torch.device,
    reference: torch.nn.Module | None = None,
    autocast: contextlib.AbstractContextManager | None = None,
) -> dict[str, float]:
    """PPO-clip on the batch's token advantages: ``optim.epochs`` passes over shuffled minibatches of rows.

    The old log-probabilities are the current policy's, computed once before the first step (the rollout's own
    may differ slightly, e.g. under vLLM). Rows without a trainable token are skipped. Returns the loss metrics
    (``ppo_clip_loss``'s, ``loss``, ``grad_norm``, ``entropy``) averaged over the minibatches, with
    ``optimizer_steps``, ``n_tokens`` and ``rollout_logprob_gap`` / ``rollout_logprob_diff`` (see
    ``rollout_logprob_gap``).
    """
    rows = torch.nonzero(batch.loss_mask.any(dim=1)).flatten()
    if rows.numel() == 0:
        return {"loss": 0.0, "n_tokens": 0.0, "optimizer_steps": 0.0, "approx_kl": 0.0, "clip_fraction": 0.0}
    batch = batch.select(rows)
    autocast = autocast or contextlib.nullcontext()
    was_training = model.training
    model.eval()
    with autocast:
        old = _log_probs_in_chunks(model, batch, optim.minibatch_size, device)
        ref = _log_probs_in_chunks(reference, batch, optim.minibatch_size, device) if reference is not None else None
    model.train()
    totals: dict[str, float] = {}
    steps = 0
    for _ in range(optim.epochs):
        for index in _minibatches(batch.input_ids.shape[0], optim.minibatch_size, rng):
            part = batch.select(index)
            mask = part.loss_mask.to(device)
            with autocast:
                logprobs, entropy = sequence_log_probs(
                    model, part.input_ids.to(device), part.attention_mask.to(device), with_entropy=True
                )
            loss, metrics = ppo_clip_loss(
                logprobs, old[index].to(device), part.advantages.to(device), mask,
                eps_low=optim.eps_low, eps_high=optim.eps_high,
                ref_logprobs=None if ref is None else ref[index].to(device), kl_coef=optim.kl_coef,
            )  # fmt: skip
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            grad_norm = torch.nn.utils.clip_grad_norm_(
                [p for p in model.parameters() if p.requires_grad], optim.grad_clip
            )
            optimizer.step()
            if scheduler is not None:
                scheduler.step()
            steps += 1
            metrics = {**metrics, "loss": float(loss.detach()), "grad_norm": float(grad_norm)}
            if entropy is not None and mask.any():
                metrics["entropy"] = float(entropy[mask].mean())
            for key, value in metrics.items():
                totals[key] = totals.get(key, 0.0) + float(value)
    model.train(was_training)
    out = {key: value / steps for key, value in totals.items()}
    out.update(rollout_logprob_gap(batch.rollout_logprobs, old, batch.loss_mask))
    out["optimizer_steps"] = float(steps)
    out["n_tokens"] = float(batch.n_tokens)
    return out
