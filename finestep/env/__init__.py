"""Environments: ``reset(task) -> prompt``, ``step(model_text) -> EnvStep`` (one episode per object), one registry.

``sql`` (``SqlEnv``) is FineStep's: the protocol, the sandbox, the turn limit, the token budget and the
observation format. ``make_environment("sql", protocol="tags", tokenizer=tok, max_turns=4)`` builds one;
``@register_environment("name")`` adds another (selected with ``rollout.env=name``).
"""

from finestep.agent.trajectory import END_REASONS
from finestep.env.base import (
    ENVIRONMENTS,
    Environment,
    EnvStep,
    UnknownEnvironmentError,
    get_environment,
    make_environment,
    register_environment,
)
from finestep.env.sql import SqlEnv, cached_schema

__all__ = [
    "END_REASONS",
    "ENVIRONMENTS",
    "EnvStep",
    "Environment",
    "SqlEnv",
    "UnknownEnvironmentError",
    "cached_schema",
    "get_environment",
    "make_environment",
    "register_environment",
]
