"""The policy loss (FINESTEP.md section 3): token-level PPO clipped surrogate with an optional k3 KL penalty.

Pure torch functions, no I/O. Shapes: ``B`` sequences, ``T`` token positions, ``V`` vocabulary size. A
position's logits predict its label, so callers shift: ``token_log_probs(logits[:, :-1], ids[:, 1:])``.

Masks are bool (True = the token gets loss) or float weights (0 = no loss). Masked positions get exactly
zero gradient and cannot turn the loss into NaN, whatever their values (``-inf`` or NaN log-probs included):
every per-token quantity is selected with ``torch.where`` before it is exponentiated or summed.
"""

from __future__ import annotations

import torch

__all__ = ["entropy_from_logits", "masked_mean", "ppo_clip_loss", "token_log_probs"]

_MAX_LOG_RATIO = 20.0  # log-ratios are clamped to [-20, 20] before exp: a finite loss for any old policy


def _dtype(logits: torch.Tensor) -> torch.dtype:
    return torch.promote_types(logits.dtype, torch.float32)


class _TokenLogProb(torch.autograd.Function):
    """(N, V) logits, (N,) ids -> (N,) log-probs; saves only the inputs and (N,) logsumexps, and recomputes
    each chunk's softmax in backward, so no (N, V) float32 copy outlives a chunk."""

    @staticmethod
    def forward(
        ctx: torch.autograd.function.FunctionCtx, logits: torch.Tensor, ids: torch.Tensor, chunk: int
    ):
        lse = torch.cat([torch.logsumexp(z.to(_dtype(logits)), dim=-1) for z in logits.split(chunk)])
        ctx.save_for_backward(logits, ids, lse)
        ctx.chunk = chunk
        return logits.gather(-1, ids[:, None]).squeeze(-1).to(lse.dtype) - lse

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx, grad: torch.Tensor):
        logits, ids, lse = ctx.saved_tensors
        grad = grad.to(lse.dtype)
        out = torch.empty_like(logits)
        for start in range(0, logits.shape[0], ctx.chunk):
            rows = slice(start, start + ctx.chunk)
            g = torch.exp(logits[rows].to(lse.dtype) - lse[rows, None]) * -grad[rows, None]
            g.scatter_add_(-1, ids[rows, None], grad[rows, None])
            out[rows] = g.to(logits.dtype)
        return out, None, None


def token_log_probs(logits: torch.Tensor, labels: torch.Tensor, chunk_rows: int = 1024) -> torch.Tensor:
    """Log-probability of each label under the logits.

    Args:
        logits: (B, T, V), any float dtype; reduced in float32 (at least), ``chunk_rows`` rows of V at a time.
            No (B, T, V) log-softmax is built or saved for backward: the backward pass recomputes the softmax
            chunk by chunk from the logits and the (B, T) logsumexps.
        labels: (B, T) integer token ids. Negative ids (an ignore index such as -100) read id 0: mask them.

    Returns:
        (B, T) ``logits[b, t, labels[b, t]] - logsumexp(logits[b, t])`` in float32 (float64 for float64
        logits), differentiable with respect to ``logits``.
    """
    if logits.shape[:-1] != labels.shape:
        raise ValueError(f"logits {tuple(logits.shape)} and labels {tuple(labels.shape)} do not match")
    if labels.numel() == 0:
        return logits.new_zeros(labels.shape, dtype=_dtype(logits)) + 0 * logits.sum()
    flat = logits.reshape(-1, logits.shape[-1])
    ids = labels.reshape(-1).clamp_min(0).long()
    return _TokenLogProb.apply(flat, ids, max(1, int(chunk_rows))).reshape(labels.shape)


def entropy_from_logits(logits: torch.Tensor, chunk_rows: int = 1024) -> torch.Tensor:
    """(B, T, V) logits -> (B, T) entropy ``logsumexp(z) - sum(softmax(z) * z)`` of each position's
    distribution, in float32 (at least), ``chunk_rows`` rows at a time (meant for metrics, under no_grad:
    with grad, autograd keeps each chunk's softmax)."""
    dtype = _dtype(logits)
    out = []
    for rows in logits.reshape(-1, logits.shape[-1]).split(max(1, int(chunk_rows))):
        z = rows.to(dtype)
        out.append(torch.logsumexp(z, dim=-1) - (torch.softmax(z, dim=-1) * z).sum(-1))
    return torch.cat(out).reshape(logits.shape[:-1])


def masked_mean(
    values: torch.Tensor, mask: torch.Tensor, normalizer: float | torch.Tensor | None = None
) -> torch.Tensor:
    """Weighted mean ``sum(mask * values) / sum(mask)`` over masked-in positions (any shape, same for both).

    Values at positions where ``mask == 0`` are never read (NaN there is fine). ``normalizer`` replaces
    ``sum(mask)`` (e.g. the token count of the whole batch when summing over micro-batches). A zero
    denominator gives 0 (still connected to ``values``' graph).
    """
    keep = mask != 0
    weights = mask.to(values.dtype) if mask.dtype != torch.bool else keep.to(values.dtype)
    total = torch.where(keep, values * weights, torch.zeros_like(values)).sum()
    denom = weights.sum() if normalizer is None else torch.as_tensor(normalizer, dtype=values.dtype)
    denom = denom.to(values.device)
    return total / torch.where(denom != 0, denom, torch.ones_like(denom))


def ppo_clip_loss(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    eps_low: float = 0.2,
    eps_high: float = 0.28,
    ref_logprobs: torch.Tensor | None = None,
    kl_coef: float = 0.0,
    normalizer: float | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Token-level PPO clipped surrogate, mean over the unmasked tokens of the batch, plus optional k3 KL.

    Per token, with ``rho = exp(logprobs - old_logprobs)``:
    ``pg = -min(rho * A, clip(rho, 1 - eps_low, 1 + eps_high) * A)``; ``loss = mean_masked(pg)
    + kl_coef * mean_masked(k3)`` with ``k3 = exp(ref - logp) - (ref - logp) - 1 >= 0`` (an unbiased
    estimate of KL(pi_theta || pi_ref) on samples of pi_theta; computed only when ``ref_logprobs`` is given).

    Args:
        logprobs: (B, T) log-probs of the sampled tokens under the current policy (with grad).
        old_logprobs: (B, T) the same under the policy that sampled them (no grad needed).
        advantages: (B, T) per-token advantages.
        mask: (B, T) bool or float weights; tokens with ``mask == 0`` get no loss and exactly zero gradient.
        eps_low, eps_high: the asymmetric clip range ``[1 - eps_low, 1 + eps_high]``.
        ref_logprobs: (B, T) log-probs under the reference policy, or None.
        kl_coef: weight of the KL term.
        normalizer: the denominator of the means instead of ``sum(mask)`` (see ``masked_mean``).

    Returns:
        ``(loss, metrics)``: ``loss`` a scalar tensor (exactly 0, with a grad_fn, when no token is unmasked);
        ``metrics`` python floats: ``pg_loss``; ``clip_fraction``, the share of unmasked tokens whose ratio
        was clipped, i.e. the clipped term binds (``rho > 1 + eps_high`` with ``A > 0`` or ``rho < 1 - eps_low``
        with ``A < 0``: zero gradient); ``approx_kl``, the k3 estimate of KL(pi_old || pi_theta): mean of
        ``(rho - 1) - log(rho)``; ``ratio_mean``; ``kl_ref`` (with ``ref_logprobs``); ``n_tokens``.
    """
    shape = logprobs.shape
    for name, x in (("old_logprobs", old_logprobs), ("advantages", advantages), ("mask", mask)):
        if x.shape != shape:
            raise ValueError(f"{name} has shape {tuple(x.shape)}, expected {tuple(shape)} like logprobs")
    if ref_logprobs is not None and ref_logprobs.shape != shape:
        raise ValueError(f"ref_logprobs has shape {tuple(ref_logprobs.shape)}, expected {tuple(shape)}")
    if eps_low < 0 or eps_high < 0:
        raise ValueError("eps_low and eps_high must be >= 0")
    if kl_coef and ref_logprobs is None:
        raise ValueError("kl_coef is set but no ref_logprobs were given")
    keep = mask != 0
    zero = torch.zeros_like(logprobs)
    adv = torch.where(keep, advantages.to(logprobs.dtype), zero)
    log_ratio = torch.where(keep, logprobs - old_logprobs.to(logprobs.dtype), zero)
    log_ratio = log_ratio.clamp(-_MAX_LOG_RATIO, _MAX_LOG_RATIO)
    ratio = torch.exp(log_ratio)
    unclipped = -ratio * adv
    clipped = -torch.clamp(ratio, 1.0 - eps_low, 1.0 + eps_high) * adv
    pg = torch.maximum(unclipped, clipped)
    pg_loss = masked_mean(pg, mask, normalizer)
    loss = pg_loss
    metrics: dict[str, float] = {}
    if ref_logprobs is not None:
        ref_log_ratio = torch.where(keep, ref_logprobs.to(logprobs.dtype) - logprobs, zero)
        ref_log_ratio = ref_log_ratio.clamp(-_MAX_LOG_RATIO, _MAX_LOG_RATIO)
        kl = masked_mean(torch.exp(ref_log_ratio) - ref_log_ratio - 1.0, mask, normalizer)
        if kl_coef:
            loss = loss + kl_coef * kl
        metrics["kl_ref"] = float(kl.detach())
    with torch.no_grad():
        metrics.update(
            pg_loss=float(pg_loss),
            clip_fraction=float(masked_mean((clipped > unclipped).to(pg.dtype), keep)),
            approx_kl=float(masked_mean((ratio - 1.0) - log_ratio, keep)),
            ratio_mean=float(masked_mean(ratio, keep)) if bool(keep.any()) else 1.0,
            n_tokens=float(keep.sum()),
        )
    return loss, metrics
