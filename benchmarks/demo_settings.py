"""Choose the demo's settings on the `valid` split: one warm start (the demo pipeline with overrides), then RL arms.

Builds (or reuses) the demo's world, tiny model and SFT warm start under ``--out`` with the pipeline fields of
``--pipeline`` changed, evaluates it greedily on the first 96 `valid` questions and on 96 training questions, then
runs each RL arm (a name and its config overrides) from it and evaluates the result on the same `valid` questions.
Held-out questions are never touched. Shows the preparation's stages (a bar, or lines when piped), writes
``OUT/settings.json`` (atomically, after every arm) and prints a line per result.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/demo_settings.py --out runs/demo-settings \\
        --pipeline '{"tiny": {"split_digits": true}}' \\
        --arms '{"fs_t05": ["trainer.max_steps=40", "rollout.temperature=0.5"]}'

``--pipeline`` keys are ``PipelineConfig`` fields; ``tiny``, ``sft`` and ``sft_continue`` take dicts of their own
fields (``sft_continue: null`` for one SFT stage). The RL base is the demo's: ``configs/sqlworld-tiny.yaml``.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path
from typing import Any


def pipeline_with(overrides: dict[str, Any]):  # -> PipelineConfig
    """The demo's pipeline with ``overrides`` (nested dicts for ``tiny``, ``sft`` and ``sft_continue``)."""
    from finestep.bench.demo import _DEMO_PIPELINE
    from finestep.train.sft import SFTConfig

    fields = dict(overrides)
    if "tiny" in fields:
        fields["tiny"] = replace(_DEMO_PIPELINE.tiny, **fields["tiny"])
    if "sft" in fields:
        fields["sft"] = replace(_DEMO_PIPELINE.sft, **fields["sft"])
    if "sft_continue" in fields:
        fields["sft_continue"] = SFTConfig(**fields["sft_continue"]) if fields["sft_continue"] else None
    return replace(_DEMO_PIPELINE, **fields)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="folder for the world, models and RL runs")
    parser.add_argument("--pipeline", default="{}", help="JSON: PipelineConfig fields to change")
    parser.add_argument("--arms", default="{}", help='JSON: {"name": ["key=value", ...]} RL runs from the warm start')
    parser.add_argument("--n-valid", type=int, default=96, help="valid questions evaluated (default 96)")
    args = parser.parse_args()

    from rich.console import Console

    from finestep.atomic import atomic_write_json
    from finestep.bench.demo import CONFIG
    from finestep.bench.pipeline import evaluate_model, pipeline_paths, prepare, rl_config, run_rl
    from finestep.cli.sqlworld import stage_reporter
    from finestep.data.sqlworld import load_world

    spec, arms = json.loads(args.pipeline), json.loads(args.arms)
    start = time.perf_counter()
    expected = pipeline_paths(args.out)
    on_valid = [f"data.max_eval_tasks={args.n_valid}", "data.eval_split=valid"]
    base = rl_config(CONFIG, expected["world"], expected["sft"], on_valid)
    with stage_reporter(Console(stderr=True)) as say:  # a live bar, or plain lines when piped
        paths = prepare(args.out, pipeline_with(spec), base.rollout, say)
    world = load_world(paths["world"])
    valid = world.split("valid")[: args.n_valid]
    if not valid:
        raise SystemExit("the world has no valid questions: set valid_per_db >= 1 in --pipeline")
    result: dict[str, Any] = {"pipeline": spec, "n_valid": len(valid), "prepare_s": time.perf_counter() - start}
    result["warm_start"] = evaluate_model(paths["sft"], valid, base.rollout)[0]
    result["warm_start_train"] = evaluate_model(paths["sft"], world.split("train")[:96], base.rollout)[0]
    print("warm start", json.dumps({"valid_ex": result["warm_start"]["ex"],
                                    "train_ex": result["warm_start_train"]["ex"]}), flush=True)  # fmt: skip
    atomic_write_json(args.out / "settings.json", result)
    result["arms"] = {}
    for name, overrides in arms.items():
        config = rl_config(CONFIG, paths["world"], paths["sft"], on_valid + list(overrides))
        began = time.perf_counter()
        final = run_rl(config, args.out / f"rl-{name}")["final"]
        result["arms"][name] = {"overrides": overrides, **final, "wall_s": time.perf_counter() - began}
        print(name, json.dumps({"valid_ex": final["ex"], "tool_calls": final["tool_calls"]}), flush=True)
        atomic_write_json(args.out / "settings.json", result)


if __name__ == "__main__":
    main()
