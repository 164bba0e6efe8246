"""TRL tests (finestep.integrations.trl): skipped without TRL, except under CI=true or FINESTEP_REQUIRE_TRL=1
(``make test`` installs the ``trl`` extra and sets it), where a missing or broken TRL fails the run instead.

Shared fixtures: a small SQLWorld world and a tiny model warm-started on its expert's episodes in TRL's
tool-calling chat format (``tiny_tool_model``), built once per session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REQUIRED = os.environ.get("CI", "").lower() == "true" or os.environ.get("FINESTEP_REQUIRE_TRL") == "1"

try:
    import trl  # noqa: F401
    from trl import GRPOTrainer  # noqa: F401
except Exception as exc:  # pragma: no cover - only without TRL; the modules then skip (importorskip)
    if REQUIRED:
        raise pytest.UsageError(f"TRL is required here (CI=true or FINESTEP_REQUIRE_TRL=1) but cannot be imported: "
                                f"{exc!r}; install it with pip install -e '.[trl]'") from exc  # fmt: skip

from finestep.integrations.trl_env import SqlToolSettings

#: Three turns, the compact schema and the two-line instructions: short prompts for a tiny model.
SETTINGS = SqlToolSettings(max_turns=3, schema_style="compact", brief_instructions=True)


@pytest.fixture(scope="session")
def trl_world(tmp_path_factory: pytest.TempPathFactory):  # -> World
    from finestep.data.sqlworld import build_world

    return build_world(tmp_path_factory.mktemp("trl") / "world", seed=0, n_train_dbs=2, n_test_dbs=0,
                       questions_per_db=6)  # fmt: skip


@pytest.fixture(scope="session")
def trl_model(tmp_path_factory: pytest.TempPathFactory, trl_world) -> Path:
    """A tiny model that calls the tools (warm-started on the expert's chats)."""
    from finestep.integrations.trl_sft import tiny_tool_model
    from finestep.train.sft import SFTConfig

    return tiny_tool_model(tmp_path_factory.mktemp("trl-model") / "model", trl_world, SETTINGS,
                           SFTConfig(epochs=60, lr=3e-3, batch_size=8), hidden_size=64)  # fmt: skip
