"""Drawing the next token of a batch from its logits (temperature, top-p) and deciding when a turn stops."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch

__all__ = ["StopChecker", "sample_next"]


def sample_next(
    logits: torch.Tensor,
    temperature: float = 1.0,
    top_p: float = 1.0,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Sample one token per row and return it with its untempered log-probability.

    Args:
        logits: (B, V) next-token logits (any float dtype; computed in float32).
        temperature: 0 takes the argmax (greedy); otherwise the logits are divided by it before sampling.
        top_p: nucleus sampling: the smallest set of most likely tokens whose mass reaches ``top_p`` is kept.
        generator: random source of the draw (the global one when None); a generator on another device than
            the logits is honoured by drawing there.

    Returns:
        tokens: (B,) int64 sampled ids, on the logits' device.
        logprobs: (B,) float32 ``log_softmax(logits)[token]``: the log-probability under the model at
            temperature 1, whatever temperature and top-p the draw used.
    """
    logits = logits.float()
    logp = torch.log_softmax(logits, dim=-1)
    if temperature <= 0:
        tokens = logits.argmax(dim=-1)
    else:
        probs = torch.softmax(logits / temperature, dim=-1)
        if top_p < 1.0:
            sorted_probs, order = probs.sort(dim=-1, descending=True)
            mass_before = sorted_probs.cumsum(dim=-1) - sorted_probs
            sorted_probs = sorted_probs.masked_fill(mass_before >= top_p, 0.0)
            probs = torch.zeros_like(probs).scatter_(-1, order, sorted_probs)
        if generator is not None and generator.device != probs.device:
            tokens = torch.multinomial(probs.to(generator.device), 1, generator=generator).to(probs.device)
        else:
            tokens = torch.multinomial(probs, 1, generator=generator)
        tokens = tokens.squeeze(-1)
    return tokens, logp.gather(-1, tokens.unsqueeze(-1)).squeeze(-1)


class StopChecker:
    """Decides after each sampled token whether a turn is over: eos, or a stop string just completed.

    Stop strings are searched in the decoded text of the last few tokens of the turn only (enough tokens to
    hold the longest stop string), so a check costs the same at any turn length; a stop string that was
    already complete one token earlier would have stopped the turn then, so any match is a new one.
    """

    def __init__(self, tokenizer, stop_strings: Sequence[str], eos_ids: Iterable[int]) -> None:
        self.tokenizer = tokenizer
        self.stop_strings = tuple(s for s in stop_strings if s)
        self.eos_ids = frozenset(int(i) for i in eos_ids)
        self.window = max((len(s) for s in self.stop_strings), default=0) + 1

    def __call__(self, turn_tokens: Sequence[int]) -> str | None:
        """``"eos"``, ``"stop"`` or None for the tokens of a turn so far (the last one just sampled)."""
        if not turn_tokens:
            return None
        if turn_tokens[-1] in self.eos_ids:
            return "eos"
        if self.stop_strings:
            tail = self.tokenizer.decode(list(turn_tokens[-self.window:]), skip_special_tokens=False)
            if any(s in tail for s in self.stop_strings):
                return "stop"
        return None
