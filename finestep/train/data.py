"""Training and held-out tasks, and a resumable, seeded order of training tasks."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from finestep.data import load_benchmark
from finestep.data.engines import reason_counts, tasks_on_engine
from finestep.data.hygiene import GoldCheck, check_gold
from finestep.data.task import DataError, Task
from finestep.sql.compare import results_match
from finestep.sql.engine import SandboxLimits
from finestep.train.config import DataConfig

__all__ = ["TaskData", "TaskSampler", "load_task_data", "load_task_split"]


@dataclass
class TaskData:
    """Training and held-out tasks, and what the gold check found (``None`` for SQLWorld, whose gold queries
    are verified when the world is built); with ``data.engine``, why each task left out there was (by task id)."""

    train: list[Task]
    evaluation: list[Task]
    gold_check: GoldCheck | None = None
    not_on_engine: dict[str, str] = field(default_factory=dict)


def _data_path(config: DataConfig) -> Path:
    if config.path:
        return Path(os.path.expandvars(config.path))
    if config.benchmark == "spider":
        return Path(os.environ.get("FINESTEP_SPIDER_DIR", "../shared/data/spider"))
    raise DataError("data.path: required for benchmark bird (the folder with dev.json and dev_databases/)")


def load_task_split(config: DataConfig, metric: str = "bird") -> tuple[list[Task], list[Task]]:
    """``(train, evaluation)`` of :func:`load_task_data`."""
    data = load_task_data(config, metric)
    return data.train, data.evaluation


def _on_engine(data: TaskData, config: DataConfig, metric: str) -> TaskData:
    """``data`` with every task on ``data.engine`` (:mod:`finestep.data.engines`): each database must be there
    (else :class:`DataError` naming the key and the db_id); tasks whose gold does not run or agree with SQLite
    there (by the reward's ``metric``) are left out of training and evaluation, and reported."""
    prefix = os.path.expandvars(str(config.engine))

    def match(engine_rows: Sequence[tuple[Any, ...]], sqlite_rows: Sequence[tuple[Any, ...]], gold_sql: str) -> bool:
        return results_match(engine_rows, sqlite_rows, gold_sql, metric)

    tasks = data.train + data.evaluation
    moved, reasons = tasks_on_engine(tasks, prefix, match, config.transpile_gold, SandboxLimits(), key="data.engine")
    by_id = {t.id: t for t in moved}
    train = [by_id[t.id] for t in data.train if t.id in by_id]
    evaluation = [by_id[t.id] for t in data.evaluation if t.id in by_id]
    if not train:
        raise DataError(f"data.engine: no training task's gold query runs and agrees with SQLite on {prefix} "
                        f"({reason_counts(reasons)}); try data.transpile_gold=true")  # fmt: skip
    return TaskData(train, evaluation, data.gold_check, reasons)


def _checked_training_tasks(candidates: list[Task], config: DataConfig) -> tuple[list[Task], GoldCheck]:
    """The training tasks (at most ``max_train_tasks``) without those whose gold query fails (they could not be
    scored) and, with ``drop_empty_gold``, those whose gold result is empty; gold queries are checked in order,
    only as far as needed."""
    wanted = config.max_train_tasks if config.max_train_tasks is not None else len(candidates)
    check = GoldCheck()
    kept: list[Task] = []
    position = 0
    while len(kept) < wanted and position < len(candidates):
        batch = candidates[position : position + max(1, wanted - len(kept))]
        position += len(batch)
        found = check_gold(batch)
        check.usable += found.usable
        check.empty += found.empty
        check.failing += found.failing
        keep = {t.index for t in found.usable + ([] if config.drop_empty_gold else found.empty)}
        kept += [t for t in batch if t.index in keep]
    return kept[:wanted], check


def load_task_data(config: DataConfig, metric: str = "bird") -> TaskData:
    """Available tasks split by database: the first ``eval_databases`` databases (sorted) are held out.

    Spider and BIRD training tasks have their gold query checked (:mod:`finestep.data.hygiene`): those whose gold
    query fails are left out of training, and with ``data.drop_empty_gold`` those whose gold result is empty.
    Held-out tasks are never dropped. A SQLWorld world (``benchmark: sqlworld``, ``path``: its folder) keeps its own splits;
    ``eval_split`` names the evaluated one (``test``: unseen databases; ``valid`` or ``heldout``: new questions
    on training databases).

    With ``data.engine`` the tasks are then moved to that engine (:func:`_on_engine`; ``metric``: the reward's,
    which decides whether the engine's gold result agrees with SQLite's).
    """
    data = _load_sqlite_tasks(config)
    return _on_engine(data, config, metric) if config.engine else data


def _load_sqlite_tasks(config: DataConfig) -> TaskData:
    """The tasks on the benchmark's own SQLite files (:func:`load_task_data` without ``data.engine``)."""
    if config.benchmark == "sqlworld":
        from finestep.data.sqlworld import SPLITS, load_world

        if not config.path:
            raise DataError("data.path: required for benchmark sqlworld (a folder made by build_world)")
        if config.eval_split not in SPLITS or config.eval_split == "train":
            raise DataError(f"data.eval_split: expected one of valid, heldout, test; got {config.eval_split!r}")
        world = load_world(Path(os.path.expandvars(config.path)))
        if world.tier != config.world_tier:
            raise DataError(f"data.world_tier: {config.world_tier!r}, but the world at {config.path} is of tier "
                            f"{world.tier!r} (build it with that tier, or set data.world_tier={world.tier})")
        evaluation = world.split(config.eval_split)
        if not evaluation:
            raise DataError(f"data.eval_split: the world at {config.path} has no {config.eval_split!r} questions "
                            "(build it with valid_per_db / heldout_per_db)")
        return TaskData(world.train[: config.max_train_tasks], evaluation[: config.max_eval_tasks])
    benchmark = load_benchmark(config.benchmark, _data_path(config))
    tasks = benchmark.available
    databases = sorted({t.db_id for t in tasks})
    if config.eval_databases >= len(databases):
        raise DataError(
            f"data.eval_databases: {config.eval_databases} held-out databases leave none of the "
            f"{len(databases)} for training"
        )
    held_out = set(databases[: config.eval_databases])
    train, check = _checked_training_tasks([t for t in tasks if t.db_id not in held_out], config)
    evaluation = [t for t in tasks if t.db_id in held_out][: config.max_eval_tasks]
    if not train:
        raise DataError("data: no training tasks (check data.path, data.max_train_tasks and data.drop_empty_gold)")
    return TaskData(train, evaluation, check)


class TaskSampler:
    """Indices of training tasks, epoch after epoch, each epoch a fresh seeded permutation; resumable."""

    def __init__(self, n_tasks: int, seed: int) -> None:
        self.n_tasks, self.seed = n_tasks, seed
        self.epoch, self.cursor = 0, 0

    def _order(self) -> np.ndarray:
        return np.random.default_rng([self.seed, self.epoch]).permutation(self.n_tasks)

    def next(self, count: int) -> list[int]:
        """The next ``count`` task indices (crossing into the next epoch when one runs out)."""
        out: list[int] = []
        while len(out) < count:
            order = self._order()
            take = min(count - len(out), self.n_tasks - self.cursor)
            out.extend(int(i) for i in order[self.cursor : self.cursor + take])
            self.cursor += take
            if self.cursor == self.n_tasks:
                self.epoch, self.cursor = self.epoch + 1, 0
        return out

    def state_dict(self) -> dict[str, Any]:
        return {"n_tasks": self.n_tasks, "seed": self.seed, "epoch": self.epoch, "cursor": self.cursor}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state["n_tasks"] != self.n_tasks:
            raise ValueError(f"checkpoint was made with {state['n_tasks']} training tasks, the data has {self.n_tasks}")
        self.epoch, self.cursor = int(state["epoch"]), int(state["cursor"])
