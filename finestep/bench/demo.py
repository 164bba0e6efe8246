"""``finestep demo``: SQLWorld end to end on a CPU, with a report and a trajectory viewer.

Build the world, train a tokenizer and a tiny model, warm-start it on expert trajectories, train it with FineStep
RL, evaluate before and after on held-out questions (new questions on the training databases), then write
``report.md`` (with plots) and ``trajectories.html`` under the output folder.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from finestep.agent.generators import get_generator
from finestep.agent.protocol import get_protocol
from finestep.agent.rollout import rollout
from finestep.atomic import atomic_write_json, atomic_write_text
from finestep.bench.pipeline import PipelineConfig, evaluate_model, pipeline_paths, prepare, rl_config, run_rl
from finestep.bench.report import markdown_table, plot_curves, trajectories_html
from finestep.config import to_dict
from finestep.data.sqlworld import load_world
from finestep.models import load_model, load_tokenizer
from finestep.rewards import score_episodes
from finestep.sql.executor import shared_sandbox
from finestep.train.batch import credit_rollout
from finestep.train.config import TinyModelConfig, TrainConfig
from finestep.train.sft import SFTConfig

__all__ = ["DemoConfig", "run_demo"]

CONFIG = Path(__file__).resolve().parents[2] / "configs" / "sqlworld-tiny.yaml"


# The demo's world and model: smaller than the bench's, to fit in minutes on 2 cores. 2 held-out questions per
# database (192) for the before/after numbers; 1 validation question per database (96) for choosing settings.
_DEMO_PIPELINE = PipelineConfig(
    valid_per_db=1, heldout_per_db=2, expert_samples_per_task=1,
    tiny=TinyModelConfig(vocab_size=1024, hidden_size=128, num_layers=4, num_heads=4, num_kv_heads=2,
                         intermediate_size=256, max_position_embeddings=2048),
    sft=SFTConfig(epochs=8, lr=3e-3, batch_size=16), sft_continue=None,
)  # fmt: skip


@dataclass(frozen=True)
class DemoConfig:
    """The demo's budget: the full version and ``--quick``."""

    pipeline: PipelineConfig
    rl_steps: int
    eval_tasks: int
    viewer_tasks: int = 6
    # RL samples at 0.5: at 1.0 the demo model's episodes succeed 2-6% of the time (greedy: 29% on training
    # questions), so most groups carry no outcome signal; at 0.5, 12-15% (docs/benchmarks.md, demo section)
    temperature: float = 0.5

    @classmethod
    def full(cls) -> DemoConfig:
        return cls(_DEMO_PIPELINE, rl_steps=40, eval_tasks=192)

    @classmethod
    def quick(cls) -> DemoConfig:
        base = _DEMO_PIPELINE
        pipeline = replace(base, n_train_dbs=24, n_test_dbs=4, questions_per_db=10, heldout_per_db=2,
                           sft=replace(base.sft, epochs=4))  # fmt: skip
        return cls(pipeline, rl_steps=8, eval_tasks=32, viewer_tasks=4)


def _viewer(model_dir: Path, tasks: list, config: TrainConfig, path: Path) -> None:
    """G sampled episodes per task from the trained policy, credited with FineStep, as HTML."""
    model, tokenizer = load_model(model_dir), load_tokenizer(model_dir)
    sandbox = shared_sandbox()
    trajectories = rollout(tasks, get_generator("hf", model=model, tokenizer=tokenizer),
                           get_protocol(config.rollout.protocol), sandbox, config.rollout,
                           torch.Generator().manual_seed(0))  # fmt: skip
    scores = score_episodes(trajectories, sandbox, config.rewards)
    _, advantages = credit_rollout(trajectories, scores, config.credit)
    trajectories_html(trajectories, scores, advantages.advantages, path,
                      title="SQLWorld: FineStep credit on the trained policy's episodes")  # fmt: skip


def run_demo(out: Path, demo: DemoConfig, say: Callable[[str, float | None], None]) -> dict[str, Any]:
    """Run the demo into ``out``; returns the summary (also written to ``out/summary.json``)."""
    start = time.perf_counter()
    expected = pipeline_paths(out)
    config = rl_config(CONFIG, expected["world"], expected["sft"],
                       [f"trainer.max_steps={demo.rl_steps}", f"data.max_eval_tasks={demo.eval_tasks}",
                        "data.eval_split=heldout", f"rollout.temperature={demo.temperature}"])  # fmt: skip
    paths = prepare(out, demo.pipeline, config.rollout, say)
    world = load_world(paths["world"])
    tasks = world.heldout[: demo.eval_tasks]
    say("evaluating the warm-started model on held-out questions", None)
    before, _ = evaluate_model(paths["sft"], tasks, config.rollout)
    run_dir = out / "rl"
    result = run_rl(config, run_dir, on_step=lambda m: say(
        f"FineStep RL step {int(m['step'])}/{demo.rl_steps}: reward {m['reward']:+.2f}, "
        f"tool calls {m['tool_calls']:.2f}, redundant {m['redundant_rate']:.2f}", m["step"] / demo.rl_steps))
    final_model = run_dir / "checkpoints" / f"step-{demo.rl_steps:06d}" / "model"
    after = result["final"]
    say("writing the report and the trajectory viewer", None)
    plot_curves({"finestep": [result["curve"]]}, out / "training_curves.png")
    _viewer(final_model, tasks[: demo.viewer_tasks], config, out / "trajectories.html")
    summary = {
        "held_out_tasks": len(tasks),
        "before": before,
        "after": {k: v for k, v in after.items() if k != "step"},
        "rl_steps": demo.rl_steps,
        "wall_time_s": time.perf_counter() - start,
        "paths": {k: str(v) for k, v in paths.items()} | {"final_model": str(final_model)},
        "config": to_dict(config),
    }
    atomic_write_json(out / "summary.json", summary)
    atomic_write_text(out / "report.md", _report(summary, out))
    return summary


ROWS = (("ex", "EX % (held out)"), ("tool_calls", "tool calls per task"), ("redundant_rate", "redundant-call rate"),
        ("error_rate", "error-step rate"), ("format_failure_rate", "format failures"), ("turns", "turns per task"),
        ("generated_tokens", "generated tokens per task"))  # fmt: skip


def summary_rows(summary: dict[str, Any]) -> list[dict[str, Any]]:
    """Before/after rows for the terminal table and the report."""
    return [{"metric": label, "before": summary["before"].get(key, float("nan")),
             "after": summary["after"].get(key, float("nan"))} for key, label in ROWS]  # fmt: skip


def _report(summary: dict[str, Any], out: Path) -> str:
    config = summary["config"]
    return (
        "# SQLWorld demo: FineStep RL on a tiny model\n\n"
        f"A tiny Qwen3-style model trained from scratch: tokenizer and weights built from the world, warm-started on "
        f"scripted expert trajectories (with redundant probes, failed queries and skipped probes), then trained with "
        f"FineStep RL for {summary['rl_steps']} steps ({config['trainer']['tasks_per_step']} tasks x "
        f"{config['rollout']['group_size']} samples per step at temperature {config['rollout']['temperature']}). "
        f"Evaluated greedily on {summary['held_out_tasks']} held-out questions: new questions on the training databases, never trained on (neither by SFT nor by RL). "
        f"Wall time: {summary['wall_time_s']:.0f} s.\n\n"
        + markdown_table(summary_rows(summary), [("metric", "metric"), ("before", "after SFT"), ("after", "after RL")])
        + "\n## Training curves\n\n![training curves](training_curves.png)\n\n"
        "EX, tool calls and redundant-call rate of the sampled training episodes, per RL step (moving average).\n\n"
        "## Trajectories\n\n[trajectories.html](trajectories.html): sampled episodes of the trained policy on "
        "held-out questions, each step with its SQL, observation, process rules and FineStep advantage in colour.\n\n"
        "## Reproduce\n\n```bash\nfinestep demo --out " + str(out) + "\n```\n"
    )
