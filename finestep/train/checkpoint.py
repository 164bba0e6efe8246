"""Atomic training checkpoints: model and tokenizer, optimizer, scheduler, RNG and data-order state.

A checkpoint is a folder ``checkpoints/step-000003/`` written under a temporary name (``.step-000003.*``), its
files flushed to disk (fsync), renamed into place, then recorded in ``checkpoints/latest``; a crash at any moment
leaves the previous checkpoint intact. Temporary folders a crash left behind are removed when a run starts or
resumes, and before each save.
"""

from __future__ import annotations

import os
import random
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from finestep.atomic import atomic_write_text

__all__ = [
    "capture_rng",
    "latest_checkpoint",
    "load_trainer_state",
    "remove_stale_temporaries",
    "restore_rng",
    "save_checkpoint",
]

STATE_FILE = "trainer_state.pt"


def capture_rng() -> dict[str, Any]:
    """The global RNG states (Python, NumPy's legacy global, torch CPU and CUDA)."""
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any]) -> None:
    """Restore what :func:`capture_rng` captured."""
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def remove_stale_temporaries(run_dir: Path) -> list[Path]:
    """Delete the ``checkpoints/.step-*`` folders that a crash during a save left behind; returns them.

    Only one process trains in a run folder, so no save is in progress when this runs.
    """
    root = run_dir / "checkpoints"
    stale = sorted(p for p in root.glob(".step-*") if p.is_dir()) if root.is_dir() else []
    for path in stale:
        shutil.rmtree(path, ignore_errors=True)
    return stale


def _fsync_tree(folder: Path) -> None:
    """Flush every file under ``folder``, then the folders themselves, to disk."""
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            with open(path, "rb") as handle:
                os.fsync(handle.fileno())
    for path in [*sorted(p for p in folder.rglob("*") if p.is_dir()), folder]:
        _fsync_dir(path)


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def save_checkpoint(
    run_dir: Path, step: int, model: Any, tokenizer: Any, trainer_state: dict[str, Any], config_yaml: str, keep: int
) -> Path:
    """Write checkpoint ``step`` atomically and keep the newest ``keep`` checkpoints; returns its folder."""
    root = run_dir / "checkpoints"
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step-{step:06d}"
    remove_stale_temporaries(run_dir)
    tmp = Path(tempfile.mkdtemp(prefix=f".step-{step:06d}.", dir=root))
    try:
        model.save_pretrained(tmp / "model", safe_serialization=True)
        tokenizer.save_pretrained(tmp / "model")
        torch.save(trainer_state, tmp / STATE_FILE)
        (tmp / "config.yaml").write_text(config_yaml, encoding="utf-8")
        _fsync_tree(tmp)
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        _fsync_dir(root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    atomic_write_text(root / "latest", final.name + "\n")
    for old in sorted(p for p in root.glob("step-*") if p.is_dir())[:-keep] if keep > 0 else []:
        shutil.rmtree(old, ignore_errors=True)
    return final


def latest_checkpoint(run_dir: Path) -> Path | None:
    """The newest complete checkpoint of a run, or None."""
    pointer = run_dir / "checkpoints" / "latest"
    if not pointer.is_file():
        return None
    path = run_dir / "checkpoints" / pointer.read_text(encoding="utf-8").strip()
    return path if (path / STATE_FILE).is_file() else None


def load_trainer_state(checkpoint: Path) -> dict[str, Any]:
    """The optimizer, scheduler, RNG and data state saved with a checkpoint."""
    return torch.load(checkpoint / STATE_FILE, map_location="cpu", weights_only=False)
