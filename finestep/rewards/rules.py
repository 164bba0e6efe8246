"""The registry of process rules: one decorated function per rule, the one place a rule is defined.

Two forms (``register_rule``):

- a **predicate** with its value, the form for user rules::

      @finestep.rewards.register_rule("long_sql", value=-0.1)
      def long_sql(t: int, ctx: RuleContext) -> bool:
          return ctx.steps[t].kind == "sql" and len(ctx.steps[t].sql or "") > 200

  fires (gives ``value``) on step ``t`` when it returns True;
- a **valued** rule ``fn(t, ctx, config) -> float`` whose values are fields of ``ProcessConfig`` (the built-in
  rules: ``executes`` gives ``executes_ok``, ``executes_error`` or ``executes_timeout``), with ``values(config)``
  listing every value it can give (the verl layout bounds ``r_t`` with them).

Either way the rule's weight is ``rewards.process.weights.NAME`` (default 1; 0 switches it off), its weighted
value is reported under its name (``finestep credit``'s ``process_rewards[NAME]``), and ``r_t`` sums them. A
rule sees step ``t`` and the trajectory before it (plus the schema and the gold result), never the outcome R.
Only rules registered with ``on_solution=True`` (``format``) apply to the solution step: its worth is R's.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from finestep.data.steps import RewardStep

__all__ = ["PROCESS_RULES", "ProcessRule", "RuleContext", "register_rule", "rule_names"]


@dataclass(frozen=True)
class RuleContext:
    """What the rules may look at besides the step: the trajectory, the schema, the gold result.

    ``steps[t]`` has ``kind`` (``sql``, ``solution`` or ``none``), ``sql``, ``result`` (its execution),
    ``format_error`` and ``truncated``; ``canonical[t]`` is the canonical form of a tool call's SQL (``None`` for
    other steps). ``schema`` maps lower-cased table names to lower-cased column names (``None``: unknown,
    ``grounded`` abstains); ``gold_rows`` is ``None`` when the gold result is unknown (``progress`` abstains).
    ``context_text`` is the question and evidence the agent was given (a value written there needs no look-up).
    """

    steps: Sequence[RewardStep]
    canonical: Sequence[str | None]
    schema: dict[str, frozenset[str]] | None = None
    gold_rows: Sequence[tuple[Any, ...]] | None = None
    gold_sql: str = ""
    metric: str = "bird"
    context_text: str = ""


@dataclass(frozen=True)
class ProcessRule:
    """A registered rule (module docstring): ``value`` for a predicate, ``values`` for a valued rule."""

    name: str
    fn: Callable[..., Any]
    value: float | None = None
    values: Callable[[Any], Sequence[float]] | None = None
    on_solution: bool = False

    def raw(self, t: int, ctx: RuleContext, config: Any) -> float:
        """The rule's unweighted value on step ``t`` (0 when it does not fire)."""
        if self.value is not None:
            return self.value if self.fn(t, ctx) else 0.0
        return float(self.fn(t, ctx, config))

    def possible_values(self, config: Any) -> tuple[float, ...]:
        """Every nonzero value the rule can give under ``config`` (a ``ProcessConfig``); ValueError if unknown."""
        if self.value is not None:
            return (float(self.value),)
        if self.values is None:
            raise ValueError(f"process rule {self.name!r} declares no values (register it with values=...)")
        return tuple(float(v) for v in self.values(config))


PROCESS_RULES: dict[str, ProcessRule] = {}


def register_rule(
    name: str,
    value: float | None = None,
    *,
    values: Callable[[Any], Sequence[float]] | None = None,
    on_solution: bool = False,
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator registering a process rule under ``name`` (names are unique; module docstring).

    ``value``: the function is a predicate ``fn(t, ctx) -> bool`` and the rule gives ``value`` when it fires.
    Without ``value`` it returns its value, ``fn(t, ctx, config) -> float``, and ``values(config)`` lists them.
    """
    if value is not None and values is not None:
        raise ValueError(f"process rule {name!r}: give value (a predicate) or values (a valued rule), not both")

    def decorate(fn: Callable[..., Any]) -> Callable[..., Any]:
        if name in PROCESS_RULES:
            raise ValueError(f"process rule {name!r} is already registered")
        PROCESS_RULES[name] = ProcessRule(name, fn, None if value is None else float(value), values, on_solution)
        return fn

    return decorate


def rule_names() -> tuple[str, ...]:
    """The registered rules' names, in registration order (built-in rules first)."""
    return tuple(PROCESS_RULES)
