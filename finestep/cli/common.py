"""Shared pieces of the ``finestep`` command line: argument types, output checks, the progress bar, the
registry-backed choices and the ``--plugin`` option."""

from __future__ import annotations

import argparse
import math
import os
from collections.abc import Callable, Sequence
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from finestep.data.task import DataError


def default_spider_dir() -> Path:
    """Spider's folder: ``$FINESTEP_SPIDER_DIR``, else ``../shared/data/spider``."""
    return Path(os.environ.get("FINESTEP_SPIDER_DIR", "../shared/data/spider"))


def _bounded(kind: type, low: float, strict: bool = False) -> Callable[[str], float]:
    """An argparse ``type``: ``kind(text)``, finite and ``>= low`` (``> low`` when ``strict``)."""
    noun = "an integer" if kind is int else "a number"
    wanted = f"{noun} {'>' if strict else '>='} {low:g}"

    def parse(text: str) -> float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {wanted}, got {text!r}") from None
        if not math.isfinite(value) or value < low or (strict and value == low):
            raise argparse.ArgumentTypeError(f"expected {wanted}, got {text!r}")
        return value

    parse.__name__ = f"{kind.__name__} {'>' if strict else '>='} {low:g}"
    return parse


_positive_int = _bounded(int, 1)
_non_negative_int = _bounded(int, 0)
_positive_float = _bounded(float, 0, strict=True)
_non_negative_float = _bounded(float, 0)


def _check_output(path: Path | None, flag: str, folder: bool = False) -> None:
    """Refuse, before any work is done, an output path that cannot be written: a folder where a file is
    expected (or the reverse), or one below a file."""
    if path is None:
        return
    if path.exists() and path.is_dir() != folder:
        raise DataError(f"{flag} {path}: is a {'file' if folder else 'folder'}; expected a {'folder' if folder else 'file'} name")
    for ancestor in path.absolute().parents:
        if ancestor.exists():
            if not ancestor.is_dir():
                raise DataError(f"{flag} {path}: {ancestor} is a file, not a folder")
            if not os.access(ancestor, os.W_OK | os.X_OK):
                raise DataError(f"{flag} {path}: cannot write in {ancestor}")
            return


def _progress(console: Console) -> Progress:
    return Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        console=console, transient=True,
    )  # fmt: skip


def _workers_arg(text: str) -> str | int:
    """An argparse ``type``: ``auto`` or an integer >= 1."""
    return text if text == "auto" else int(_positive_int(text))


def _protocols() -> list[str]:
    from finestep.agent.protocol import PROTOCOLS

    return sorted(PROTOCOLS)


def _benchmarks() -> list[str]:
    from finestep.data import LOADERS

    return sorted(LOADERS)


def _estimators_help() -> str:
    from finestep.credit import ESTIMATORS, estimator_help

    return "; ".join(f"{name}: {estimator_help(name).rstrip('.')}" for name in ESTIMATORS).replace("``", "")


def _add_dtype_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dtype", choices=["auto", "float32", "bfloat16", "float16"], default="auto",
                        help="weights dtype (default auto: the checkpoint's; float32 on a CPU)")  # fmt: skip


def _load_policy(model_dir: Path, protocol: str, device: object, dtype: str = "auto") -> tuple[object, object]:
    """The model and tokenizer of ``--model``, checked before loading the weights: a model folder, a tokenizer that
    fits its vocabulary, a chat template the ``--protocol`` can use (errors name the flag)."""
    from finestep.models import load_model, load_tokenizer
    from finestep.models.checks import check_model_folder, check_protocol_tokenizer, check_tokenizer_vocab
    from finestep.models.loading import model_dtype

    folder = check_model_folder(model_dir, "--model")
    tokenizer = load_tokenizer(folder)
    check_tokenizer_vocab(tokenizer, folder, "--model")
    check_protocol_tokenizer(tokenizer, protocol, "--protocol")
    return load_model(folder, device=device, dtype=model_dtype(dtype, device)), tokenizer  # type: ignore[arg-type]


def _add_plugin_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--plugin", action="append", default=[], metavar="MOD",
                        help="import this module (or .py file) first: it may register estimators, process rules "
                        "or environments (repeatable; also FINESTEP_PLUGINS=mod1,mod2)")  # fmt: skip


def _plugin_arguments(argv: Sequence[str]) -> list[str]:
    """The ``--plugin`` values of a command line, read before the parser (whose choices they extend) exists."""
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--plugin", action="append", default=[])
    return list(pre.parse_known_args(list(argv))[0].plugin)
