"""The process rules (FINESTEP.md section 1): independent checks on each step, summed into r_t.

Each rule is a small function registered under its name; it sees step ``t`` and the trajectory *before* it
(plus the database schema and the gold result), never the outcome R. A rule returns its raw value; the
config's weight multiplies it. The solution step gets only the ``format`` rule: its worth is carried by R.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from finestep.rewards.config import ProcessConfig
from finestep.rewards.steps import RewardStep
from finestep.sql.analysis import canonical_sql, query_references
from finestep.sql.compare import results_match
from finestep.sql.executor import ErrorKind

__all__ = ["PROCESS_RULES", "RuleContext", "is_grounded", "process_rewards", "process_rule", "total_process_reward"]

# Names SQLite provides whatever the schema: pseudo-columns and built-in tables / table-valued functions.
_PSEUDO_COLUMNS = frozenset({"rowid", "oid", "_rowid_"})
_BUILTIN_TABLE_PREFIXES = ("sqlite_", "pragma_", "json_each", "json_tree")


@dataclass(frozen=True)
class RuleContext:
    """What the rules may look at besides the step: the trajectory, the schema, the gold result.

    ``schema`` maps lower-cased table names to lower-cased column names (``None``: unknown, ``grounded``
    abstains); ``gold_rows`` is ``None`` when the gold result is unknown (``progress`` abstains).
    """

    steps: Sequence[RewardStep]
    canonical: Sequence[str | None]
    schema: dict[str, frozenset[str]] | None = None
    gold_rows: Sequence[tuple[Any, ...]] | None = None
    gold_sql: str = ""
    metric: str = "bird"


RuleFn = Callable[[int, RuleContext, ProcessConfig], float]
PROCESS_RULES: dict[str, RuleFn] = {}


def process_rule(name: str) -> Callable[[RuleFn], RuleFn]:
    """Register a process rule under ``name`` (its weight is ``config.weights[name]``)."""

    def register(fn: RuleFn) -> RuleFn:
        PROCESS_RULES[name] = fn
        return fn

    return register


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


@process_rule("executes")
def executes(t: int, ctx: RuleContext, cfg: ProcessConfig) -> float:
    result = ctx.steps[t].result
    if ctx.steps[t].kind != "sql" or result is None:
        return 0.0
    if result.ok:
        return cfg.executes_ok
    return cfg.executes_timeout if result.error_kind == ErrorKind.TIMEOUT else cfg.executes_error


@process_rule("redundant")
def redundant(t: int, ctx: RuleContext, cfg: ProcessConfig) -> float:
    if ctx.steps[t].kind != "sql" or ctx.canonical[t] is None:
        return 0.0
    earlier = {ctx.canonical[k] for k in range(t) if ctx.steps[k].kind == "sql"}
    return cfg.redundant if ctx.canonical[t] in earlier else 0.0


@process_rule("grounded")
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


@process_rule("progress")
def progress(t: int, ctx: RuleContext, cfg: ProcessConfig) -> float:
    # An empty result "matches" an empty gold result without having found anything: never a progress signal.
    if not _matches_gold(ctx.steps[t], ctx) or not ctx.steps[t].result.rows:
        return 0.0
    return 0.0 if any(_matches_gold(ctx.steps[k], ctx) for k in range(t)) else cfg.progress


@process_rule("format")
def format_rule(t: int, ctx: RuleContext, cfg: ProcessConfig) -> float:
    step = ctx.steps[t]
    return cfg.format if step.kind == "none" or step.format_error is not None else 0.0


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
) -> list[dict[str, float]]:
    """The weighted value of every registered rule on every step: ``out[t][rule]``; r_t is their sum.

    The solution step gets only ``format``. Rules with weight 0 are reported as 0.
    """
    canonical = [canonical_sql(s.sql) if s.kind == "sql" and s.sql else None for s in steps]
    ctx = RuleContext(steps, canonical, schema, gold_rows, gold_sql, metric)
    out = []
    for t, step in enumerate(steps):
        values = {}
        for name, rule in PROCESS_RULES.items():
            weight = config.weights.get(name, 1.0)
            applies = weight != 0.0 and (step.kind != "solution" or name == "format")
            values[name] = weight * rule(t, ctx, config) if applies else 0.0
        out.append(values)
    return out
