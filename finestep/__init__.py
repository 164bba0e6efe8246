"""FineStep: step-level credit assignment for tool-integrated Text-to-SQL agents.

``finestep.credit``, ``finestep.rewards`` and ``finestep.env`` (the registries a plugin extends, docs/extending.md)
are imported on first use, so ``import finestep`` then ``@finestep.credit.register_estimator("name")`` works.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_LAZY = ("credit", "rewards", "env")


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return importlib.import_module(f"finestep.{name}")
    raise AttributeError(f"module 'finestep' has no attribute {name!r}")
