"""Tasks and where they come from: the Task record and loaders of the public benchmark formats."""

from __future__ import annotations

from pathlib import Path

from finestep.data.bird import load_bird
from finestep.data.spider import load_spider
from finestep.data.task import Benchmark, DataError, Task

__all__ = ["LOADERS", "Benchmark", "DataError", "Task", "load_benchmark", "load_bird", "load_spider"]

LOADERS = {"spider": load_spider, "bird": load_bird}


def load_benchmark(name: str, data_dir: str | Path) -> Benchmark:
    """Load the dev split of benchmark ``name`` (``spider`` or ``bird``) from ``data_dir``."""
    try:
        loader = LOADERS[name]
    except KeyError:
        raise DataError(f"unknown benchmark {name!r}; expected one of {sorted(LOADERS)}") from None
    return loader(data_dir)
