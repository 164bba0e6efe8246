"""The house rule of ../shared/design/ARCHITECTURE.md: imports point down the pipeline, never up.

Every ``finestep`` module is given the rank of its layer (the longest matching prefix below); a module may import
modules of its own rank or lower, never higher. Imports inside functions count too.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "finestep"

# Lowest first. credit is pure numpy (it imports nothing of ours), so any stage may use its StepBatch.
LAYERS: list[tuple[str, ...]] = [
    ("sql", "atomic", "config", "credit", "plugins"),
    ("data",),  # tasks, SQLWorld, the step record RewardStep (data.steps)
    ("agent.protocol", "agent.trajectory", "models"),  # the records and the protocol the environment speaks
    ("env",),  # the environment: protocol + sandbox + budget + observations
    ("agent",),  # what drives the environment: rollout, generators, the scripted expert
    ("rewards",),  # scoring: trajectories -> rewards -> StepBatch; episode metrics
    ("train", "integrations"),  # they share episode metrics through rewards, never through eval
    ("eval",),  # scoring predictions, agent runs, voting, credit inspection
    ("bench",),
    ("cli", "__main__"),
]


def _rank(module: str) -> int:
    best, rank = -1, -1
    for r, prefixes in enumerate(LAYERS):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > best:
                best, rank = len(prefix), r
    if rank < 0:
        raise AssertionError(f"finestep.{module} belongs to no layer: add it to LAYERS")
    return rank


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("finestep."):
            names.add(node.module.removeprefix("finestep."))
        elif isinstance(node, ast.Import):
            names.update(a.name.removeprefix("finestep.") for a in node.names if a.name.startswith("finestep."))
    return names


def test_no_import_runs_up_the_pipeline() -> None:
    upward = []
    for path in sorted(PACKAGE.rglob("*.py")):
        module = ".".join(path.relative_to(PACKAGE).with_suffix("").parts).removesuffix(".__init__")
        if module in ("__init__", ""):
            continue  # the package root only imports its registries lazily, by name
        for target in _imports(path):
            if _rank(target) > _rank(module):
                upward.append(f"finestep.{module} -> finestep.{target}")
    assert not upward, "imports up the pipeline:\n" + "\n".join(upward)

