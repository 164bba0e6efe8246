"""``scripts/gpu_check.sh`` on a CPU (issue 22): the device check that is ready to run unchanged on the first GPU
runs here on the tiny shape, through our trainer and through TRL, and writes its JSON and its table.

Needs TRL (the check covers finestep.integrations.trl): skipped without it, except under CI=true or
FINESTEP_REQUIRE_TRL=1 (``make test``), where it runs."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
REQUIRED = os.environ.get("CI", "").lower() == "true" or os.environ.get("FINESTEP_REQUIRE_TRL") == "1"

try:
    import trl  # noqa: F401
except ImportError:  # pragma: no cover - only without TRL
    if not REQUIRED:
        pytest.skip("TRL is not installed (the device check runs TRL too)", allow_module_level=True)


@pytest.fixture(scope="module")
def check(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, str, str]:
    out = tmp_path_factory.mktemp("device-check")
    env = {**os.environ, "PYTHON": sys.executable, "CUDA_VISIBLE_DEVICES": ""}  # the CPU path, as in CI
    done = subprocess.run(
        [str(ROOT / "scripts" / "gpu_check.sh"), "--out", str(out / "device_check.json"), "--table",
         str(out / "benchmarks.md"), "--budget-s", "240"],
        cwd=out, env=env, capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    return json.loads((out / "device_check.json").read_text()), (out / "benchmarks.md").read_text(), done.stdout


def test_the_json_names_the_device_and_holds_both_trainers(check: tuple[dict, str, str]) -> None:
    result = check[0]["cpu"]
    assert result["device"]["type"] == "cpu" and result["device"]["name"].startswith("CPU")
    assert result["shapes"] == ["tiny"] and 0 < result["wall_s"] < 240
    assert [r["name"] for r in result["finestep"]] == [
        "tiny finestep float32 full", "tiny finestep bfloat16 full", "tiny finestep bfloat16 lora gc"]
    assert [r["name"] for r in result["trl"]] == ["tiny trl bfloat16 lora gc"]
    assert all(r["status"] == "ok" for r in result["finestep"] + result["trl"])


def test_every_rl_step_is_measured(check: tuple[dict, str, str]) -> None:
    result = check[0]["cpu"]
    for run in result["finestep"] + result["trl"]:
        assert run["rl_steps"], run["name"]
        for step in run["rl_steps"]:
            assert step["time_step"] > 0 and step["time_generate"] > 0 and step["time_train"] > 0, step
            assert step["time_execute"] >= 0 and step["time_credit"] >= 0 and step["tokens_per_s"] > 0
            assert step["peak_memory_gib"] > 0 and math.isfinite(step["rollout_logprob_gap"])
    fp32, bf16, _ = result["finestep"]
    assert max(s["rollout_logprob_gap"] for s in fp32["rl_steps"]) < 1e-4  # same weights, same numerics
    assert 0 < max(s["rollout_logprob_gap"] for s in bf16["rl_steps"]) < 0.1  # bf16 with a KV cache: a real gap


def test_sft_steps_and_the_memory_probe_match_the_prediction(check: tuple[dict, str, str]) -> None:
    for run in check[0]["cpu"]["finestep"]:
        assert run["sft_steps"] and all(s["time_s"] > 0 and math.isfinite(s["loss"]) for s in run["sft_steps"])
        assert run["sft_tokens_per_s"] > 0
        applied = run["sft_steps"][-1]["update_applied"]
        if run["name"] == "tiny finestep bfloat16 full":  # bf16 weights round a 1e-6 AdamW step away, mostly
            assert applied < 0.1
        else:  # fp32 weights, or fp32 LoRA adapters over a bf16 base: the step shows
            assert applied > 0.4
        memory = run["memory"]
        assert memory["measured_saved_mib"] == pytest.approx(memory["predicted_saved_mib"], rel=0.05)
        assert memory["static_mib"] == pytest.approx(memory["predicted_static_mib"], abs=0.01)


def test_the_table_names_the_device(check: tuple[dict, str, str]) -> None:
    _, table, stdout = check
    assert "<!-- device-check:cpu -->" in table and "<!-- /device-check:cpu -->" in table
    assert "Device: **CPU" in table and "| tiny trl bfloat16 lora gc | ok |" in table
    assert "0 run(s) failed" in stdout
