"""verl tests: modules that need verl skip without it, except under FINESTEP_REQUIRE_VERL=1 (``make test-verl``),
where a missing or broken verl fails the run instead of skipping it."""

from __future__ import annotations

import os

import pytest

if os.environ.get("FINESTEP_REQUIRE_VERL") == "1":
    try:
        import verl
        import verl.trainer.ppo.core_algos  # noqa: F401
    except Exception as exc:  # pragma: no cover - only when the verl environment is broken
        raise pytest.UsageError(f"FINESTEP_REQUIRE_VERL=1 but verl cannot be imported: {exc!r}") from exc
