"""The truth about every step of a SQLWorld trajectory: good, bad or neutral, from what the world knows.

SQLWorld knows, for each task, whether the value the question names must be looked up (:attr:`TaskMeta.probe_required`:
the database stores it in another spelling), which column holds it and how it is stored. That is enough to
label each step of any trajectory, the scripted expert's or a model's, without asking a reward rule.

The rules, first match wins (``reason`` in brackets):

1. A step with no usable action (no action, several, broken tags, or cut off by the token budget) is **bad**
   [``format``].
2. A solution step is **good** when the trajectory is solved (its result equals the gold result) [``correct``],
   else **bad** [``wrong``]. Nothing else about it counts.
3. A tool call that was not executed (no result) is **neutral** [``not_executed``].
4. A tool call that raised an error (or timed out) is **bad** [``error``].
5. A tool call whose canonical SQL (:func:`finestep.sql.analysis.canonical_sql`) equals an earlier step's of the
   same trajectory is **bad** [``repeated``].
6. The repair of a failing query is **good** [``repair``]: the first later tool call that runs without error and
   is a near-edit of the failed step's SQL (token similarity :func:`finestep.sql.analysis.sql_similarity` >=
   ``repair_similarity``, with a different canonical form), each failed step repaired at most once. Given the
   failure, fixing it is the right move, even when the failed query was itself not needed (that step is
   already bad by rule 4).
7. The required look-up is **good** [``required_probe``]: the task's probe is required, and this is the first
   step whose result shows the stored value in the probed column (a result column named like the probe's
   column with the stored value among its first ``shown_rows`` rows: what the agent is shown). The expert's
   ``SELECT DISTINCT column FROM table`` is one; a ``SELECT *`` that shows the value is another.
   A hard-tier task (:attr:`TaskMeta.lookups`) has several facts to look up: a step is good when it is the
   first to show at least one required fact not shown before (a value: its stored form in its column; a date
   format or a unit: any value of its column, ``Lookup.witness`` is ``None``).
8. A tool call whose result equals the gold result (the agent ran an answer before submitting it) is
   **neutral** [``answer_check``]: not needed, but what the ``progress`` process rule rewards; only when
   ``matches_gold`` is given.
9. Any other tool call is **bad** [``unneeded``]: a probe on a task that needs none (tier1, or a value stored
   as the question says it), a probe of a column the question does not need, or a second look-up of a value
   already shown.

Neutral steps are left out of credit-quality statistics.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from finestep.data.sqlworld.world import TaskMeta
from finestep.data.steps import RewardStep
from finestep.sql.analysis import canonical_sql, query_references, sql_similarity

__all__ = ["LABEL_VALUES", "OracleLabel", "label_values", "oracle_labels"]

Label = Literal["good", "bad", "neutral"]
LABEL_VALUES: dict[str, int] = {"good": 1, "bad": -1, "neutral": 0}


@dataclass(frozen=True)
class OracleLabel:
    """The label of one step (``good``, ``bad`` or ``neutral``) and the rule that gave it (module docstring)."""

    label: Label
    reason: str

    @property
    def value(self) -> int:
        """+1 good, -1 bad, 0 neutral."""
        return LABEL_VALUES[self.label]


def _needs(meta: TaskMeta) -> list[tuple[str, str | None]]:
    """``(column, value)`` per required fact: a result showing ``value`` in ``column`` (any value when ``None``)
    reveals it."""
    if meta.lookups:
        return [(x.column.lower(), x.witness) for x in meta.lookups if x.required]
    column = _probe_column(meta) if meta.probe_required else None
    return [] if column is None or meta.stored_value is None else [(column, meta.stored_value)]


def _probe_column(meta: TaskMeta) -> str | None:
    if not meta.probe_sql:
        return None
    refs = query_references(meta.probe_sql)
    if refs is None or len(refs.columns) != 1:  # pragma: no cover - SQLWorld probes are one-column queries
        return None
    return next(iter(refs.columns))


def _shows_value(step: RewardStep, column: str, value: str | None, shown_rows: int) -> bool:
    """Whether the step's result shows ``value`` (any non-NULL value when ``None``) in a column named ``column``
    within its first rows."""
    result = step.result
    if result is None or not result.ok:
        return False
    where = [j for j, name in enumerate(result.columns) if name.lower() == column]
    return any(
        row[j] is not None and (value is None or str(row[j]) == value)
        for row in result.rows[:shown_rows] for j in where if j < len(row)
    )  # fmt: skip


def oracle_labels(
    steps: Sequence[RewardStep],
    meta: TaskMeta,
    solved: bool,
    matches_gold: Sequence[bool] | None = None,
    shown_rows: int = 10,
    repair_similarity: float = 0.6,
) -> list[OracleLabel]:
    """The label of every step of one trajectory of the task ``meta`` describes (rules in the module docstring).

    Args:
        steps: the trajectory's steps as the reward rules see them (``Step.reward_view()``), with the results
            of their SQL.
        meta: the task's metadata (whether its probe is required, the probe and the stored value).
        solved: the trajectory's solution returns the gold result (outcome reward > 0).
        matches_gold: optional, per step: its result equals the gold result (enables rule 8).
        shown_rows: result rows the agent is shown (the rollout's ``observation_rows``).
        repair_similarity: the token similarity a repair needs to the failed query.

    Returns:
        One :class:`OracleLabel` per step, in order. Pure: no I/O, nothing executed.
    """
    if matches_gold is not None and len(matches_gold) != len(steps):
        raise ValueError(f"matches_gold has {len(matches_gold)} entries but there are {len(steps)} steps")
    needs = _needs(meta)
    forms: list[str | None] = [canonical_sql(s.sql) if s.sql else None for s in steps]
    unrepaired: list[int] = []  # failed tool calls not yet repaired
    seen: set[int] = set()  # the needs already shown
    labels: list[OracleLabel] = []
    for t, step in enumerate(steps):
        label: OracleLabel
        if not step.format_ok or step.sql is None:
            label = OracleLabel("bad", "format")
        elif step.kind == "solution":
            label = OracleLabel("good", "correct") if solved else OracleLabel("bad", "wrong")
        elif step.result is None:
            label = OracleLabel("neutral", "not_executed")
        elif not step.result.ok:
            label = OracleLabel("bad", "error")
            unrepaired.append(t)
        elif forms[t] in forms[:t]:
            label = OracleLabel("bad", "repeated")
        else:
            repaired = [
                k for k in unrepaired
                if forms[k] != forms[t] and sql_similarity(step.sql, steps[k].sql or "") >= repair_similarity
            ]  # fmt: skip
            shows = {
                k for k, (column, value) in enumerate(needs) if _shows_value(step, column, value, shown_rows)
            }
            if repaired:
                label = OracleLabel("good", "repair")
                unrepaired = [k for k in unrepaired if k not in repaired]
            elif shows - seen:
                label = OracleLabel("good", "required_probe")
            elif matches_gold is not None and matches_gold[t]:
                label = OracleLabel("neutral", "answer_check")
            else:
                label = OracleLabel("bad", "unneeded")
            seen |= shows
        labels.append(label)
    return labels


def label_values(labels: Sequence[OracleLabel]) -> list[int]:
    """+1 / -1 / 0 per label (good / bad / neutral)."""
    return [label.value for label in labels]
