"""Plugins: a user's modules that register estimators, process rules or environments, imported before a command.

A plugin is any importable module (or a ``.py`` file) whose import registers things with FineStep's decorators::

    @finestep.credit.register_estimator("my_estimator")    # fn(batch, config) -> StepAdvantages
    @finestep.rewards.register_rule("long_sql", value=-0.1)  # fn(t, ctx) -> bool
    @finestep.env.register_environment("my_env")             # an Environment subclass

Three ways to load plugins, all equivalent (docs/extending.md): the environment variable
``FINESTEP_PLUGINS=mod1,mod2`` (read by every ``finestep`` command, by ``load_train_config`` and by the verl
plugin), ``finestep credit --plugin MOD`` (or ``finestep train --plugin MOD``), and the train config key
``plugins: [MOD]``. A name is a module name (found on ``sys.path``, then in the current folder) or the path of a
``.py`` file. Importing a plugin twice runs it once.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from types import ModuleType

__all__ = ["ENV_VAR", "PluginError", "load_plugins", "plugins_from_env"]

ENV_VAR = "FINESTEP_PLUGINS"


class PluginError(ValueError):
    """A plugin cannot be found or fails while it is imported; the message names the plugin."""


def plugins_from_env(environ: Mapping[str, str] = os.environ) -> list[str]:
    """The plugin names of ``FINESTEP_PLUGINS`` (comma-separated; blanks ignored)."""
    return [name.strip() for name in environ.get(ENV_VAR, "").split(",") if name.strip()]


def _import_file(path: Path) -> ModuleType:
    name = f"finestep_plugin_{path.stem}"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise PluginError(f"plugin {str(path)!r}: not a Python file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module


def _import_name(name: str) -> ModuleType:
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name != name.split(".")[0] or str(Path.cwd()) in sys.path:
            raise
    sys.path.append(str(Path.cwd()))  # `finestep` runs as a console script: the current folder is not on the path
    return importlib.import_module(name)


def load_plugins(names: Iterable[str]) -> list[ModuleType]:
    """Import each plugin (module name or ``.py`` path), in order; PluginError names the one that fails."""
    modules = []
    for name in (n.strip() for n in names):
        if not name:
            continue
        try:
            if name.endswith(".py") or os.sep in name or "/" in name:
                path = Path(name)
                if not path.is_file():
                    raise PluginError(f"plugin {name!r}: file not found")
                modules.append(_import_file(path.resolve()))
            else:
                modules.append(_import_name(name))
        except PluginError:
            raise
        except ModuleNotFoundError as exc:
            raise PluginError(f"plugin {name!r}: cannot import it ({exc}); set PYTHONPATH or give a .py path") from exc
        except Exception as exc:
            raise PluginError(f"plugin {name!r} failed while importing: {type(exc).__name__}: {exc}") from exc
    return modules
