"""Plugins: an estimator and a process rule in a user's own module, loaded through FINESTEP_PLUGINS (or --plugin,
or the config key), used by `finestep credit` and by a training step. Each command runs in its own process, as a
user runs it, so this test's registries stay as they are."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from finestep.credit import CreditConfig, StepBatch, compute_advantages
from finestep.plugins import PluginError, load_plugins, plugins_from_env
from tests.conftest import make_db

ROOT = Path(__file__).resolve().parents[1]
PLUGIN = ROOT / "examples" / "my_plugin.py"


def finestep(*argv: str, plugins: str | None = None, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "FINESTEP_PLUGINS"}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    env["OMP_NUM_THREADS"] = "1"
    if plugins is not None:
        env["FINESTEP_PLUGINS"] = plugins
    code = "import sys; from finestep.cli import main; sys.exit(main(sys.argv[1:]))"
    return subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, env=env, cwd=cwd,
                          timeout=600, check=False)  # fmt: skip


def test_the_worked_example_in_the_docs_is_the_example_file() -> None:
    docs = (ROOT / "docs" / "extending.md").read_text(encoding="utf-8")
    block = re.search(r"```python\n(.*?)```", docs, re.DOTALL).group(1)
    assert block == PLUGIN.read_text(encoding="utf-8")


def test_credit_with_a_plugin_estimator_and_rule(tmp_path: Path) -> None:
    db = make_db(tmp_path / "league.sqlite")
    common = {"task_id": "q", "db_path": db.name, "gold_sql": "SELECT name FROM player WHERE goals = 7",
              "question": "Who scored 7?"}  # fmt: skip
    lines = [
        {**common, "trajectory_id": "star", "steps": [
            {"kind": "sql", "sql": "SELECT  *  FROM player"},
            {"kind": "solution", "sql": "SELECT name FROM player WHERE goals = 7"}]},
        {**common, "trajectory_id": "named", "steps": [
            {"kind": "sql", "sql": "SELECT name, goals FROM player"},
            {"kind": "solution", "sql": "SELECT name FROM player"}]},
        {**common, "trajectory_id": "direct", "steps": [{"kind": "solution", "sql": "SELECT 1"}]},
    ]  # fmt: skip
    path = tmp_path / "t.jsonl"
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    out = tmp_path / "out.jsonl"
    done = finestep("credit", "--input", str(path), "--estimator", "grpo_clipped", "--out", str(out),
                    "--no-table", "rewards.process.weights.select_star=2", plugins=str(PLUGIN))  # fmt: skip
    assert done.returncode == 0, done.stderr
    star, named, direct = (json.loads(line) for line in out.read_text().splitlines())
    # the rule fires on the SELECT * tool call only: -0.1 x weight 2, beside the built-in rules
    assert star["process_rewards"][0] == {"executes": 0.1, "redundant": 0.0, "grounded": 0.0, "progress": 0.0,
                                          "format": 0.0, "reveals_gold": 0.0, "repairs": 0.0,
                                          "select_star": pytest.approx(-0.2)}  # fmt: skip
    assert star["steps"][0]["process_reward"] == pytest.approx(-0.1)  # r_t = 0.1 - 0.2
    assert named["process_rewards"][0]["select_star"] == 0.0 and "select_star" in star["process_rewards"][1]
    # the estimator: GRPO on R = [1, 0, 0], clipped to [-1, 1]: 2/3 / (std 0.5774 + eps) = 1.1547 -> 1
    grpo = compute_advantages(StepBatch.from_lists(["q"] * 3, [1.0, 0.0, 0.0], [[0, 0], [0, 0], [0]],
                                                   [[False, True], [False, True], [True]]),
                              CreditConfig(estimator="grpo")).advantages  # fmt: skip
    assert grpo[0] > 1.0
    assert star["advantages"] + named["advantages"] + direct["advantages"] == pytest.approx(np.clip(grpo, -1, 1))
    # the same through --plugin; without the plugin the names are unknown, and the error says so
    again = finestep("credit", "--input", str(path), "--estimator", "grpo_clipped", "--plugin", str(PLUGIN),
                     "--no-table", "--out", str(tmp_path / "again.jsonl"))  # fmt: skip
    assert again.returncode == 0, again.stderr
    first = json.loads((tmp_path / "again.jsonl").read_text().splitlines()[0])
    assert first["process_rewards"][0]["select_star"] == pytest.approx(-0.1)  # the default weight, 1
    missing = finestep("credit", "--input", str(path), "--estimator", "grpo_clipped", "--no-table")
    assert missing.returncode == 2 and "unknown credit estimator 'grpo_clipped'" in missing.stderr
    unknown_rule = finestep("credit", "--input", str(path), "--no-table", "rewards.process.weights.select_star=2")
    assert unknown_rule.returncode == 2 and "unknown rule 'select_star'" in unknown_rule.stderr
    broken = finestep("credit", "--input", str(path), plugins="no_such_plugin_module")
    assert broken.returncode == 2 and "plugin 'no_such_plugin_module': cannot import it" in broken.stderr


@pytest.mark.slow
def test_a_training_step_with_the_plugin_estimator_and_rule(spider: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    done = finestep(
        "train", "--config", str(ROOT / "configs" / "spider-tiny.yaml"), "--run-dir", str(run),
        "trainer.max_steps=1", "trainer.tasks_per_step=1", "rollout.group_size=2", "data.max_eval_tasks=1",
        "credit.estimator=grpo_clipped", "rewards.process.weights.select_star=0.5", plugins=str(PLUGIN),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    saved = (run / "config.yaml").read_text()
    assert "estimator: grpo_clipped" in saved and "select_star: 0.5" in saved
    steps = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in steps if m["kind"] == "train"] == [1]
    assert all(abs(m.get("advantage_abs_mean", 0.0)) <= 1.0 for m in steps)  # clipped advantages


def test_plugin_names_and_errors(tmp_path: Path) -> None:
    assert plugins_from_env({"FINESTEP_PLUGINS": " a, b.c ,,"}) == ["a", "b.c"]
    assert plugins_from_env({}) == []
    with pytest.raises(PluginError, match="file not found"):
        load_plugins([str(tmp_path / "missing.py")])
    bad = tmp_path / "bad_plugin.py"
    bad.write_text("raise RuntimeError('boom')\n")
    with pytest.raises(PluginError, match=r"bad_plugin.py' failed while importing: RuntimeError: boom"):
        load_plugins([str(bad)])
    with pytest.raises(PluginError, match="cannot import it"):
        load_plugins(["no_such_plugin_module_xyz"])
