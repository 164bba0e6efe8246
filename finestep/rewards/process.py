"""The built-in process rules (FINESTEP.md section 1): independent checks on each step, summed into r_t.

Each rule is one function registered with ``register_rule`` (``finestep.rewards.rules``: the registry and the
two forms of a rule); its values are ``ProcessConfig`` fields and its weight is ``config.weights[name]``.
``process_rewards`` runs every registered rule (user rules too) on every step.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Sequence
from typing import Any

from finestep.data.steps import RewardStep
from finestep.rewards.config import ProcessConfig
from finestep.rewards.links import observation_values
from finestep.rewards.rules import PROCESS_RULES, RuleContext, register_rule
from finestep.sql.analysis import canonical_sql, query_literals, query_references, sql_similarity
from finestep.sql.compare import results_match
from finestep.sql.executor import ErrorKind

__all__ = [
    "PROCESS_RULES",
    "RuleContext",
    "is_grounded",
    "process_rewards",
    "process_rule",
    "register_rule",
    "total_process_reward",
]

# Names SQLite provides whatever the schema: pseudo-columns and built-in tables / table-valued functions.
_PSEUDO_COLUMNS = frozenset({"rowid", "oid", "_rowid_"})
_BUILTIN_TABLE_PREFIXES = ("sqlite_", "pragma_", "json_each", "json_tree")


RuleFn = Callable[[int, RuleContext, ProcessConfig], float]


def process_rule(
    name: str, values: Callable[[ProcessConfig], Sequence[float]] | None = None
) -> Callable[[RuleFn], RuleFn]:
    """Register a valued rule ``fn(t, ctx, config) -> float`` (``register_rule`` without ``value``)."""
    return register_rule(name, values=values)


def is_grounded(sql: str, schema: dict[str, frozenset[str]]) -> bool:
    """Whether every table and unquoted column ``sql`` names exists in ``schema`` (or is defined by the query).

    Unparseable SQL counts as grounded: the ``executes`` rule already penalizes it.
    """
    refs = query_references(sql)
    if refs is None:
        return True
    builtin = {t for t in refs.tables if t.startswith(_BUILTIN_TABLE_PREFIXES)}
    if refs.tables - builtin - set(schema):
        return False
    if builtin:
        return True  # columns of built-in tables are not in the schema
    known = set().union(*schema.values()) | refs.aliases | _PSEUDO_COLUMNS
    return refs.columns <= known


@register_rule("executes", values=lambda c: (c.executes_ok, c.executes_error, c.executes_timeout))
def executes(t: int, ctx: RuleContext, cfg: ProcessConfig) -> float:
    result = ctx.steps[t].result
    if ctx.steps[t].kind != "sql" or result is None:
        return 0.0
    if result.ok:
        return cfg.executes_ok
    return cfg.executes_timeout if result.error_kind == ErrorKind.TIMEOUT else cfg.executes_error


@register_rule("redundant", values=lambda c: (c.redundant,))
def redundant(t: int, ctx: RuleContext, cfg: ProcessConfig) -> float:
    if ctx.steps[t].kind != "sql" or ctx.canonical[t] is None:
        return 0.0
    earlier = {ctx.canonical[k] for k in range(t) if ctx.steps[k].kind == "sql"}
    return cfg.redundant if ctx.canonical[t] in earlier else 0.0


@register_rule("grounded", values=lambda c: (c.ungrounded,))
def grounded(t: int, ctx: RuleContext, cfg: ProcessConfig) -> float:
    step = ctx.steps[t]
    if step.kind != "sql" or not step.sql or ctx.schema is None:
        return 0.0
    return 0.0 if is_grounded(step.sql, ctx.schema) else cfg.ungrounded


def _matches_gold(step: RewardStep, ctx: RuleContext) -> bool:
    result = step.result
    if step.kind != "sql" or result is None or not result.ok or result.truncated or ctx.gold_rows is None:
        return False
    return results_match(result.rows, ctx.gold_rows, ctx.gold_sql, ctx.metric)


@register_rule("progress", values=lambda c: (c.progress,))
def progress(t: int, ctx: RuleContext, cfg: ProcessConfig) -> float:
    # An empty result "matches" an empty gold result without having found anything: never a progress signal.
    if not _matches_gold(ctx.steps[t], ctx) or not ctx.steps[t].result.rows:
        return 0.0
    return 0.0 if any(_matches_gold(ctx.steps[k], ctx) for k in range(t)) else cfg.progress


@register_rule("format", values=lambda c: (c.format,), on_solution=True)
def format_rule(t: int, ctx: RuleContext, cfg: ProcessConfig) -> float:
    step = ctx.steps[t]
    return cfg.format if step.kind == "none" or step.format_error is not None else 0.0


@functools.lru_cache(maxsize=4096)
def _needed_literals(gold_sql: str, context_text: str) -> tuple[re.Pattern[str], ...]:
    """The gold query's string literals that the question and evidence do not spell out, as patterns a shown
    value must match: the literal itself, or for a ``LIKE`` pattern its shape (digits stand for any digit,
    ``%`` and ``_`` for any text), so that any date written like ``'2023/05/%'`` shows the format."""
    patterns = []
    for literal in sorted(query_literals(gold_sql)):
        if not literal.strip("%_") or literal in context_text or literal.replace(".", "", 1).lstrip("-").isdigit():
            continue  # numbers are thresholds the question states; a value the question names needs no look-up
        if "%" in literal or "_" in literal:
            shape = "".join(r"\d" if c.isdigit() else ".*" if c == "%" else "." if c == "_" else re.escape(c)
                            for c in literal)  # fmt: skip
            patterns.append(re.compile(shape, re.DOTALL))
        else:
            patterns.append(re.compile(re.escape(literal)))
    return tuple(patterns)


def _revealed(step: RewardStep, patterns: Sequence[re.Pattern[str]], rows: int) -> set[int]:
    shown = observation_values(step, rows)
    return {i for i, pattern in enumerate(patterns) if any(pattern.fullmatch(value) for value in shown)}


@register_rule("reveals_gold", values=lambda c: (c.reveals_gold,))
def reveals_gold(t: int, ctx: RuleContext, cfg: ProcessConfig) -> float:
    """A tool call whose result is the first to show a value the gold query needs and the question does not
    spell out (a coded value, a stored spelling, a date format): the look-up the answer depends on. Gold SQL is
    known wherever training is (Spider, BIRD, SQLWorld); off by default (``reveals_gold = 0``)."""
    if cfg.reveals_gold == 0.0 or ctx.steps[t].kind != "sql" or not ctx.gold_sql:
        return 0.0
    patterns = _needed_literals(ctx.gold_sql, ctx.context_text)
    now = _revealed(ctx.steps[t], patterns, cfg.shown_rows) if patterns else set()
    if not now:
        return 0.0
    before = set().union(*(_revealed(ctx.steps[k], patterns, cfg.shown_rows) for k in range(t)))
    return cfg.reveals_gold if now - before else 0.0


@register_rule("repairs", values=lambda c: (c.repairs,))
def repairs(t: int, ctx: RuleContext, cfg: ProcessConfig) -> float:
    """A tool call that runs and is a near-edit (token similarity >= ``repair_similarity``) of an earlier tool
    call that failed: the fix of a mistake, worth more than the query alone. Off by default (``repairs = 0``)."""
    step = ctx.steps[t]
    if cfg.repairs == 0.0 or step.kind != "sql" or not step.sql or step.result is None or not step.result.ok:
        return 0.0
    for k in range(t):
        earlier = ctx.steps[k]
        failed = earlier.kind == "sql" and earlier.result is not None and not earlier.result.ok
        if failed and earlier.sql and ctx.canonical[k] != ctx.canonical[t] and (
            sql_similarity(step.sql, earlier.sql) >= cfg.repair_similarity
        ):
            return cfg.repairs
    return 0.0


def total_process_reward(rule_values: dict[str, float]) -> float:
    """r_t: the sum of a step's weighted rule values (rounded so that -0.2 + 0.1 + -0.1 reads -0.2, not -0.19999)."""
    return round(sum(rule_values.values()), 12)


def process_rewards(
    steps: Sequence[RewardStep],
    config: ProcessConfig,
    schema: dict[str, frozenset[str]] | None = None,
    gold_rows: Sequence[tuple[Any, ...]] | None = None,
    gold_sql: str = "",
    metric: str = "bird",
    context_text: str = "",
) -> list[dict[str, float]]:
    """The weighted value of every registered rule on every step: ``out[t][rule]``; r_t is their sum.

    The solution step gets only the rules registered with ``on_solution`` (``format``). Rules with weight 0 are
    reported as 0.
    """
    canonical = [canonical_sql(s.sql) if s.kind == "sql" and s.sql else None for s in steps]
    ctx = RuleContext(steps, canonical, schema, gold_rows, gold_sql, metric, context_text)
    out = []
    for t, step in enumerate(steps):
        values = {}
        for name, rule in PROCESS_RULES.items():
            weight = config.weights.get(name, 1.0)
            applies = weight != 0.0 and (step.kind != "solution" or rule.on_solution)
            values[name] = weight * rule.raw(t, ctx, config) if applies else 0.0
        out.append(values)
    return out
