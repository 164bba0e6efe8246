"""Logical links between the steps of a trajectory (FINESTEP.md section 2, 'Logical').

Step t *repairs* step k < t when k failed (an error, an empty result, or a repeat of an earlier query) and t's
SQL is a near-edit of k's: token similarity >= ``link_threshold`` and a different canonical form (running the same
query again repairs nothing). Step t *uses* step k when t's SQL compares
against a literal value that first appeared in k's observation (among the rows the agent was shown) and not in
the question. Links are recorded on the later step, pointing back.
"""

from __future__ import annotations

from collections.abc import Sequence

from finestep.data.steps import RewardStep
from finestep.rewards.config import LinkConfig
from finestep.sql.analysis import canonical_sql, query_literals, sql_similarity

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


def step_links(steps: Sequence[RewardStep], config: LinkConfig, context_text: str = "") -> list[list[int]]:
    """For each step, the sorted indices of earlier steps it repairs or uses.

    ``context_text`` is the question (and evidence): a literal found there did not come from an observation.
    """
    canonical = [canonical_sql(s.sql) if s.kind in ("sql", "solution") and s.sql else None for s in steps]
    failed = [
        s.kind == "sql" and s.sql is not None and (s.failed or canonical[k] in canonical[:k])
        for k, s in enumerate(steps)
    ]
    first_seen: dict[str, int] = {}
    links: list[list[int]] = []
    for t, step in enumerate(steps):
        linked: set[int] = set()
        if step.sql and step.kind in ("sql", "solution"):
            for k in range(t):
                if (
                    failed[k]
                    and canonical[k] != canonical[t]
                    and sql_similarity(step.sql, steps[k].sql or "") >= config.link_threshold
                ):
                    linked.add(k)
            for value in query_literals(step.sql):
                k = first_seen.get(value)
                if k is not None and value not in context_text:
                    linked.add(k)
        links.append(sorted(linked))
        for value in observation_values(step, config.observation_rows):
            first_seen.setdefault(value, t)
    return links
