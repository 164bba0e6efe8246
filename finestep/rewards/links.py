"""Logical links between the steps of a trajectory (FINESTEP.md section 2, 'Logical').

Step t *repairs* step k < t when k failed (an error, an empty result, or a repeat of an earlier query) and t's
SQL is a near-edit of k's: token similarity >= ``link_threshold`` and a different canonical form (running the same
query again repairs nothing). Step t *uses* step k when t's SQL compares
against a literal value that first appeared in k's observation (among the rows the agent was shown) and not in
the question. Links are recorded on the later step, pointing back.

Comparing every step with every earlier failed step is quadratic, and difflib is slow: a file of 10,000 steps
took minutes. So the failed steps are indexed by distinct SQL text with their token counts, and a vectorized
upper bound of difflib's ratio (``2 * shared tokens / (len a + len b)``, token counts hashed into buckets,
which can only over-count shared tokens) rules most pairs out before difflib runs, once per distinct pair of
texts. The links are exactly those of the pairwise definition.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence

import numpy as np

from finestep.data.steps import RewardStep
from finestep.rewards.config import LinkConfig
from finestep.sql.analysis import canonical_sql, query_literals, sql_tokens

__all__ = ["observation_values", "step_links"]


def _as_text(value: object) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def observation_values(step: RewardStep, max_rows: int) -> set[str]:
    """The values the agent was shown in ``step``'s observation, as text."""
    if step.kind != "sql" or step.result is None or not step.result.ok:
        return set()
    return {_as_text(v) for row in step.result.rows[:max_rows] for v in row if v is not None}


_BUCKETS = 256


class _FailedIndex:
    """The distinct SQL texts of failed steps seen so far, each with its steps and its token counts per bucket.

    Attributes:
        counts: ``[capacity, _BUCKETS]`` token counts of each text, hashed into buckets.
        lengths: ``[capacity]`` token count of each text.
    """

    def __init__(self) -> None:
        self.texts: list[str] = []
        self.matchers: list[difflib.SequenceMatcher] = []  # second sequence: the text's tokens (indexed once)
        self.steps: list[list[int]] = []
        self.position: dict[str, int] = {}
        self.counts = np.zeros((16, _BUCKETS), dtype=np.int32)
        self.lengths = np.zeros(16, dtype=np.int64)

    def add(self, text: str, tokens: list[str], buckets: np.ndarray, step: int) -> None:
        i = self.position.get(text)
        if i is None:
            i = self.position[text] = len(self.texts)
            self.texts.append(text)
            self.matchers.append(difflib.SequenceMatcher(None, [], tokens, autojunk=False))
            self.steps.append([])
            if i == len(self.lengths):
                self.counts = np.concatenate([self.counts, np.zeros_like(self.counts)])
                self.lengths = np.concatenate([self.lengths, np.zeros_like(self.lengths)])
            np.add.at(self.counts[i], buckets, 1)
            self.lengths[i] = len(buckets)
        self.steps[i].append(step)

    def candidates(self, buckets: np.ndarray, threshold: float) -> np.ndarray:
        """Indices of the texts whose similarity to a text with tokens in ``buckets`` may reach ``threshold``."""
        n = len(self.texts)
        if n == 0:
            return np.zeros(0, dtype=np.int64)
        present, wanted = np.unique(buckets, return_counts=True)
        shared = np.minimum(self.counts[:n, present], wanted).sum(axis=1)
        total = self.lengths[:n] + len(buckets)
        # 2 * matches / total is difflib's ratio, and matches <= shared; two empty texts have similarity 1
        possible = (2 * shared >= threshold * total - 1e-9) | (total == 0)
        return np.flatnonzero(possible)


def _similar(words: list[str], matcher: difflib.SequenceMatcher, threshold: float) -> bool:
    """``sql_similarity(a, b) >= threshold`` for ``a``'s tokens ``words`` and a matcher holding ``b``'s tokens:
    difflib's ratio, after its two cheap upper bounds."""
    if not words and not matcher.b:
        return 1.0 >= threshold
    matcher.set_seq1(words)
    return matcher.real_quick_ratio() >= threshold and matcher.quick_ratio() >= threshold and matcher.ratio() >= threshold


def _buckets(tokens: list[str]) -> np.ndarray:
    return np.fromiter((hash(token) % _BUCKETS for token in tokens), dtype=np.int64, count=len(tokens))


def step_links(steps: Sequence[RewardStep], config: LinkConfig, context_text: str = "") -> list[list[int]]:
    """For each step, the sorted indices of earlier steps it repairs or uses.

    ``context_text`` is the question (and evidence): a literal found there did not come from an observation.
    """
    canonical = [canonical_sql(s.sql) if s.kind in ("sql", "solution") and s.sql else None for s in steps]
    seen: set[str | None] = set()
    failed = []
    for k, s in enumerate(steps):
        failed.append(s.kind == "sql" and s.sql is not None and (s.failed or canonical[k] in seen))
        seen.add(canonical[k])
    tokens: dict[str, tuple[list[str], np.ndarray]] = {}  # per distinct text: tokens and their buckets

    def tokenized(text: str) -> tuple[list[str], np.ndarray]:
        if text not in tokens:
            words = sql_tokens(text)
            tokens[text] = (words, _buckets(words))
        return tokens[text]

    similar: dict[tuple[str, int], bool] = {}
    index = _FailedIndex()
    first_seen: dict[str, int] = {}
    links: list[list[int]] = []
    for t, step in enumerate(steps):
        linked: set[int] = set()
        if step.sql and step.kind in ("sql", "solution"):
            words, buckets = tokenized(step.sql)
            for i in index.candidates(buckets, config.link_threshold):
                key = (step.sql, int(i))
                if key not in similar:
                    similar[key] = _similar(words, index.matchers[i], config.link_threshold)
                if similar[key]:
                    linked.update(k for k in index.steps[i] if canonical[k] != canonical[t])
            for value in query_literals(step.sql):
                k = first_seen.get(value)
                if k is not None and value not in context_text:
                    linked.add(k)
        links.append(sorted(linked))
        for value in observation_values(step, config.observation_rows):
            first_seen.setdefault(value, t)
        if failed[t]:
            text = step.sql or ""
            index.add(text, *tokenized(text), t)
    return links
