"""Training metrics: JSON lines in the run folder, and TensorBoard or Weights & Biases when asked and installed."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from finestep.atomic import atomic_write_text
from finestep.train.config import TrainerConfig

__all__ = ["MetricsLog"]


def _clean(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


class MetricsLog:
    """Appends ``{"kind": "train"|"eval", **metrics}`` lines to ``run_dir/metrics.jsonl``.

    On resume, lines of steps after the checkpoint (and a torn last line) are dropped first, so a resumed run's
    file reads as if it had never stopped.
    """

    def __init__(self, run_dir: Path, config: TrainerConfig, run_config: dict[str, Any], resume_after: int) -> None:
        self.path = run_dir / "metrics.jsonl"
        self._trim(resume_after)
        self._file = self.path.open("a", encoding="utf-8")
        self._writers: list[Any] = []
        if config.tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self._writers.append(("tensorboard", SummaryWriter(str(run_dir / "tensorboard"))))
            except ImportError:
                print("tensorboard is not installed: pip install tensorboard (metrics.jsonl is still written)")
        if config.wandb:
            try:
                import wandb

                self._writers.append(("wandb", wandb.init(project=config.wandb_project, config=run_config,
                                                          dir=str(run_dir), resume="allow")))  # fmt: skip
            except ImportError:
                print("wandb is not installed: pip install wandb (metrics.jsonl is still written)")

    def _trim(self, resume_after: int) -> None:
        if not self.path.exists():
            return
        kept = []
        for line in self.path.read_text(encoding="utf-8").splitlines():
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line torn by a crash
            if entry.get("step", 0) <= resume_after:
                kept.append(line)
        atomic_write_text(self.path, "".join(line + "\n" for line in kept))

    def write(self, kind: str, metrics: dict[str, Any]) -> None:
        """Record one line and flush it to disk."""
        entry = {"kind": kind, **{k: _clean(v) for k, v in metrics.items()}}
        self._file.write(json.dumps(entry) + "\n")
        self._file.flush()
        step = int(metrics.get("step", 0))
        for name, writer in self._writers:
            numbers = {f"{kind}/{k}": v for k, v in metrics.items() if isinstance(v, (int, float)) and k != "step"}
            if name == "tensorboard":
                for key, value in numbers.items():
                    writer.add_scalar(key, value, step)
            else:
                writer.log(numbers, step=step)

    def close(self) -> None:
        self._file.close()
        for name, writer in self._writers:
            writer.close() if name == "tensorboard" else writer.finish()
