"""Feeding a causal LM ragged blocks of tokens on top of one batched KV cache, turn after turn.

Rows of a batch grow by blocks of different lengths (a prompt, then the previous turn's last token plus an
observation, then one sampled token per step). Blocks are right-padded to a common width; a 2-D attention
mask marks the padding (and the holes left by rows that stopped before the others) as absent, and explicit
``position_ids`` count real tokens only, so every row sees exactly what it would see alone. Right padding
means a padded query always has earlier real tokens to attend to (no fully masked rows, no NaNs).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import torch
from transformers.modeling_outputs import CausalLMOutputWithPast

__all__ = ["RaggedKVBatch"]

# The KV cache's keyword argument and output field: transformers 5.x renamed ``past_key_values`` to ``cache``
# (the old name still works there, with a FutureWarning on every forward call); older versions know only
# ``past_key_values``.
_CACHE = "cache" if "cache" in {f.name for f in dataclasses.fields(CausalLMOutputWithPast)} else "past_key_values"


class RaggedKVBatch:
    """Sequences sharing one batched KV cache of ``model``: cache row ``r`` belongs to sequence ``ids[r]``.

    Attributes:
        ids: the caller's sequence index of each row.
        cache: the model's KV cache, a transformers ``Cache`` (None before the first feed).
        mask: (R, L) int64, 1 where a cache slot holds a real token.
        positions: (R,) int64 real tokens per row, i.e. the rotary position of the row's next token.
    """

    def __init__(self, model: torch.nn.Module, ids: list[int], pad_id: int, device: torch.device) -> None:
        self.model, self.ids, self.pad_id, self.device = model, list(ids), int(pad_id), device
        self.cache: Any = None
        self.mask = torch.zeros((len(ids), 0), dtype=torch.long, device=device)
        self.positions = torch.zeros(len(ids), dtype=torch.long, device=device)

    def __len__(self) -> int:
        return len(self.ids)

    def select(self, rows: Sequence[int]) -> None:
        """Keep only ``rows`` (in that order): batch selection of the cache, the mask and the positions."""
        index = torch.tensor(list(rows), dtype=torch.long, device=self.device)
        if self.cache is not None:
            self.cache.batch_select_indices(index)
        self.ids = [self.ids[r] for r in rows]
        self.mask, self.positions = self.mask[index], self.positions[index]

    def _forward(self, ids: torch.Tensor, mask: torch.Tensor, positions: torch.Tensor,
                 last: torch.Tensor) -> torch.Tensor:
        """Feed (R, L) tokens after the cache; return the (R, V) logits of column ``last[r]`` of each row."""
        full_mask = torch.cat([self.mask, mask], dim=1)
        keep = torch.unique(last)  # sorted; the vocabulary projection only where some row needs it
        out = self.model(input_ids=ids, attention_mask=full_mask, position_ids=positions,
                         use_cache=True, logits_to_keep=keep, **{_CACHE: self.cache})
        self.cache, self.mask = getattr(out, _CACHE), full_mask
        column = torch.searchsorted(keep, last)
        return out.logits[torch.arange(ids.shape[0], device=ids.device), column]

    def prefill(self, blocks: Sequence[Sequence[int]]) -> torch.Tensor:
        """Append ``blocks[r]`` (at least one token each) to row r; return the (R, V) next-token logits."""
        lengths = torch.tensor([len(b) for b in blocks], dtype=torch.long, device=self.device)
        if len(blocks) != len(self.ids) or bool((lengths == 0).any()):
            raise ValueError("prefill needs one non-empty block per row")
        width = int(lengths.max())
        ids = torch.full((len(blocks), width), self.pad_id, dtype=torch.long, device=self.device)
        for r, block in enumerate(blocks):
            ids[r, : len(block)] = torch.tensor(list(block), dtype=torch.long, device=self.device)
        cols = torch.arange(width, device=self.device)
        mask = (cols[None, :] < lengths[:, None]).long()
        positions = self.positions[:, None] + torch.minimum(cols[None, :], (lengths - 1)[:, None])
        logits = self._forward(ids, mask, positions, lengths - 1)
        self.positions = self.positions + lengths
        return logits

    def step(self, tokens: torch.Tensor, running: torch.Tensor) -> torch.Tensor:
        """Append ``tokens[r]`` (R,) to the rows where ``running[r]`` (R,) bool; the others get a hole.

        Returns the (R, V) next-token logits (meaningless for rows not running).
        """
        step = torch.where(running, tokens, torch.full_like(tokens, self.pad_id))[:, None]
        zero = torch.zeros(len(self.ids), dtype=torch.long, device=self.device)
        logits = self._forward(step, running.long()[:, None], self.positions[:, None], zero)
        self.positions = self.positions + running.long()
        return logits
