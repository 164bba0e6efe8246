"""``examples/trl_grpo.py`` as a user runs it: 2 RL steps of FineStep through TRL on a CPU, in a fresh process
(one shared sandbox for all its episodes); TRL's trainer_state.json with our diagnostics, and the saved model."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("trl")

ROOT = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "TRL_EXPERIMENTAL_SILENCE": "1", "OMP_NUM_THREADS": "1"}


@pytest.mark.slow
def test_the_example_trains_with_finestep_and_writes_its_outputs(trl_world, tmp_path: Path) -> None:
    out = tmp_path / "run"
    command = [sys.executable, str(ROOT / "examples" / "trl_grpo.py"), "--max-steps", "2", "--output-dir", str(out),
               "--world", str(trl_world.root), "--sft-epochs", "2", "--num-generations", "2", "--prompts-per-step",
               "2", "--max-completion-length", "128"]  # fmt: skip
    done = subprocess.run(command, check=False, cwd=tmp_path, env=ENV, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    state = json.loads((out / "trainer_state.json").read_text(encoding="utf-8"))
    assert state["global_step"] == 2
    logged = [entry for entry in state["log_history"] if "finestep/ex" in entry]
    assert len(logged) == 2
    for key in ("finestep/adv_outcome_abs_mean", "finestep/adv_process_abs_mean", "finestep/tool_calls",
                "finestep/redundant_rate", "reward"):  # fmt: skip
        assert key in logged[0], key
    assert (out / "model" / "config.json").is_file() and any((out / "model").glob("*.safetensors"))
    assert "step    2" in done.stdout and "done (1 process(es)" in done.stdout


@pytest.mark.slow
def test_accelerate_runs_the_example_on_two_cpu_processes(trl_world, trl_model: Path, tmp_path: Path) -> None:
    """Data parallel on 2 CPU processes (accelerate's MULTI_CPU, gloo): the batch's completions of both processes
    are credited together and each process trains its share."""
    accelerate = shutil.which("accelerate", path=str(Path(sys.executable).parent))
    assert accelerate is not None, "accelerate's launcher is installed with TRL"
    out = tmp_path / "ddp"
    shutil.copytree(trl_model, out / "model-init")  # the example's tiny model, already warm-started
    command = [accelerate, "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
               "--mixed_precision", "no", "--dynamo_backend", "no", str(ROOT / "examples" / "trl_grpo.py"),
               "--max-steps", "1", "--output-dir", str(out), "--world", str(trl_world.root), "--num-generations",
               "2", "--prompts-per-step", "2", "--max-completion-length", "128"]  # fmt: skip
    done = subprocess.run(command, check=False, cwd=tmp_path, env=ENV, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "done (2 process(es), MULTI_CPU, backend gloo)" in done.stdout
    state = json.loads((out / "trainer_state.json").read_text(encoding="utf-8"))
    assert state["global_step"] == 1 and "finestep/ex" in state["log_history"][0]
