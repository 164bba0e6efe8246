"""The SQLWorld pipeline shared by ``finestep demo`` and ``finestep bench``.

world -> expert trajectories -> tokenizer + tiny model -> SFT warm start -> RL (any estimator) -> evaluation.
Every stage writes into one folder and is skipped when its output is already there, so a bench of many RL runs
shares one world and one SFT checkpoint.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from finestep.agent.expert import expert_dataset
from finestep.agent.generators import get_generator
from finestep.agent.protocol import ObservationFormat, get_protocol
from finestep.agent.rollout import RolloutConfig, cached_schema, rollout
from finestep.agent.trajectory import Trajectory
from finestep.atomic import atomic_write_json
from finestep.config import to_dict
from finestep.data.sqlworld import WORLD_TIERS, ExpertConfig, World, build_world, load_world, write_jsonl
from finestep.data.task import Task
from finestep.env import SqlEnv
from finestep.models import build_tiny_model, load_model, load_tokenizer
from finestep.rewards import RewardConfig, score_episodes
from finestep.rewards.episodes import episode_metrics
from finestep.sql.executor import execute, shared_sandbox
from finestep.train.config import TinyModelConfig, TrainConfig, load_train_config
from finestep.train.rl import RLTrainer
from finestep.train.sft import SFTConfig, build_sft_examples, load_sft_records, train_sft

__all__ = ["PipelineConfig", "evaluate_model", "pipeline_paths", "prepare", "prepare_data", "rl_config", "run_rl"]

Progress = Callable[[str, float | None], None]  # (message, fraction done or None)


@dataclass(frozen=True)
class PipelineConfig:
    """World size, expert imperfection, model size and SFT budget (the RL budget is in the RL config).

    The bench's defaults: 96 training databases with 12 training questions each, plus 2 validation and 4
    held-out questions each (new questions on the training databases), and 16 unseen test databases.
    ``tier`` is the world's tier (``default`` or ``hard``: ``build_world(tier=...)``); with ``hard`` the expert's
    turn limit is the rollout's ``max_turns`` (its questions need 4-5 turns and the imperfections more).
    """

    seed: int = 0
    tier: str = "default"
    n_train_dbs: int = 96  # many schemas: with few, a tiny model memorizes table names instead of copying them
    n_test_dbs: int = 16
    questions_per_db: int = 12
    valid_per_db: int = 2
    heldout_per_db: int = 4
    expert: ExpertConfig = field(default_factory=ExpertConfig)
    expert_samples_per_task: int = 2
    tiny: TinyModelConfig = field(default_factory=lambda: TinyModelConfig(
        vocab_size=1024, hidden_size=192, num_layers=4, num_heads=4, num_kv_heads=2, intermediate_size=512,
        max_position_embeddings=2048,
        split_digits=False,  # chosen on valid: 31.8% EX without, 28.1% with (docs/benchmarks.md)
    ))  # fmt: skip
    sft: SFTConfig = field(default_factory=lambda: SFTConfig(epochs=4, lr=3e-3, batch_size=16))
    # a second SFT stage from the first one's weights (fresh optimizer and schedule), or None
    sft_continue: SFTConfig | None = field(default_factory=lambda: SFTConfig(epochs=4, lr=1e-3, batch_size=16, seed=1))
    eval_tasks: int = 96

    def __post_init__(self) -> None:
        if self.tier not in WORLD_TIERS:
            raise ValueError(f"PipelineConfig.tier: unknown tier {self.tier!r}; expected one of {', '.join(WORLD_TIERS)}")


def bench_pipeline(tier: str, seed: int = 0) -> PipelineConfig:
    """The bench's pipeline for a world tier: :class:`PipelineConfig`'s defaults, and for ``hard`` 36 training
    questions per database with one expert trajectory each and 3 + 3 SFT epochs.

    Why the hard tier differs: with the default tier's 12 questions x 2 trajectories the hard warm start fits its
    training questions (41.7% EX on them, greedy) and fails new ones (8.3% on ``valid``): it memorizes instead of
    learning to copy looked-up values, months and units (per fact on ``valid``: values 41%, dates 25%, money 16%
    right). Three times the distinct questions at about the same SFT cost (docs/benchmarks.md).
    """
    if tier == "hard":
        return PipelineConfig(
            seed=seed, tier=tier, questions_per_db=36, expert_samples_per_task=1,
            sft=SFTConfig(epochs=3, lr=3e-3, batch_size=16),
            sft_continue=SFTConfig(epochs=3, lr=1e-3, batch_size=16, seed=1),
        )  # fmt: skip
    return PipelineConfig(seed=seed, tier=tier)


def _corpus(tasks: list[Task], expert_lines: list[dict[str, Any]], prompt: RolloutConfig) -> list[str]:
    """Everything the agent will read or write: instructions, schemas, questions, SQL, turns and observations."""
    protocol = get_protocol(prompt.protocol)
    env = SqlEnv(protocol, fmt=ObservationFormat())  # observations as the environment writes them
    texts = [protocol.brief_instructions(prompt.max_turns), protocol.instructions(prompt.max_turns)]
    texts += [cached_schema(str(p), prompt.schema_sample_values, prompt.schema_max_chars, prompt.schema_style)
              for p in sorted({t.db_path for t in tasks})]  # fmt: skip
    texts += [f"{t.question}\n{t.gold_sql}" for t in tasks]
    for line in expert_lines:
        for step in line["steps"]:
            texts.append(step.get("text", ""))
            if step.get("sql"):
                texts.append(env.observation(execute(line["db_path"], step["sql"]), None, 2))
    return texts


def pipeline_paths(out: Path) -> dict[str, Path]:
    """Where :func:`prepare` puts the world, the expert data, the initial and the warm-started model."""
    return {"world": out / "world", "expert": out / "expert.jsonl", "init": out / "model-init", "sft": out / "model-sft"}


def prepare_data(
    out: Path, config: PipelineConfig, prompt: RolloutConfig, progress: Progress | None = None
) -> tuple[World, list[dict[str, Any]]]:
    """Build (or reuse) the world (of ``config.tier``) and the expert's training trajectories under ``out``: the
    first stages of :func:`prepare`, the ones that need no model. A world of another tier there is an error."""
    say = progress or (lambda message, fraction: None)
    paths = pipeline_paths(out)
    if not (paths["world"] / "world.json").is_file():
        say("building the world", None)
        build_world(paths["world"], seed=config.seed, n_train_dbs=config.n_train_dbs, n_test_dbs=config.n_test_dbs,
                    questions_per_db=config.questions_per_db, valid_per_db=config.valid_per_db,
                    heldout_per_db=config.heldout_per_db, tier=config.tier)  # fmt: skip
    world = load_world(paths["world"])
    if world.tier != config.tier:
        raise ValueError(f"{paths['world']}: a world of tier {world.tier!r} is there, but tier {config.tier!r} was "
                         "asked for (use another --out, or the same tier)")  # fmt: skip
    if not paths["expert"].is_file():
        say("writing expert trajectories", None)
        expert = config.expert if config.tier == "default" else replace(config.expert, max_steps=prompt.max_turns)
        lines = expert_dataset(world, "train", config.expert_samples_per_task, expert, config.seed)
        write_jsonl(paths["expert"], lines)
    return world, [json.loads(line) for line in paths["expert"].read_text(encoding="utf-8").splitlines()]


def prepare(out: Path, config: PipelineConfig, prompt: RolloutConfig, progress: Progress | None = None) -> dict[str, Path]:
    """Build (or reuse) the world, the expert data, the tiny model and its SFT warm start under ``out``.

    ``prompt`` is the RL run's rollout config: the warm start sees exactly the prompts RL will use.
    """
    say = progress or (lambda message, fraction: None)
    paths = pipeline_paths(out)
    world, expert_lines = prepare_data(out, config, prompt, progress)
    if not (paths["init"] / "config.json").is_file():
        say("training the tokenizer and building the tiny model", None)
        tiny = config.tiny
        build_tiny_model(
            _corpus(world.train + world.test, expert_lines, prompt), paths["init"],
            vocab_size=tiny.vocab_size, hidden_size=tiny.hidden_size, num_layers=tiny.num_layers,
            num_heads=tiny.num_heads, num_kv_heads=tiny.num_kv_heads, intermediate_size=tiny.intermediate_size,
            max_position_embeddings=tiny.max_position_embeddings, split_digits=tiny.split_digits, seed=config.seed,
        )  # fmt: skip
    if not (paths["sft"] / "config.json").is_file():
        tokenizer = load_tokenizer(paths["init"])
        model = load_model(paths["init"])
        examples = build_sft_examples(load_sft_records(paths["expert"]), tokenizer, get_protocol(prompt.protocol),
                                      prompt, shared_sandbox())  # fmt: skip
        stages = [config.sft] + ([config.sft_continue] if config.sft_continue is not None else [])
        for n, stage in enumerate(stages, 1):
            train_sft(model, examples, stage, int(tokenizer.pad_token_id), torch.device("cpu"),
                      on_step=lambda step, total, loss, n=n: say(
                          f"SFT warm start, stage {n}/{len(stages)} (loss {loss:.3f})", step / total))
        tmp = paths["sft"].with_name(".model-sft.tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        tmp.rename(paths["sft"])
    return paths


def rl_config(base: Path | str, world: Path, model: Path, overrides: list[str]) -> TrainConfig:
    """The RL config of ``base`` (YAML) pointed at a world and a warm-started model, with overrides."""
    return load_train_config(base, [f"data.path={world}", f"model.path={model}", *overrides])


def evaluate_model(model_dir: Path, tasks: list[Task], rollout_config: RolloutConfig) -> tuple[dict[str, float], list[Trajectory]]:
    """Greedy episodes of a saved model on ``tasks``: EX and efficiency metrics, and the trajectories."""
    model, tokenizer = load_model(model_dir), load_tokenizer(model_dir)
    generator = get_generator("hf", model=model, tokenizer=tokenizer)
    config = RolloutConfig(**{**to_dict(rollout_config), "group_size": 1, "temperature": 0.0})
    sandbox = shared_sandbox()
    trajectories = rollout(tasks, generator, get_protocol(config.protocol), sandbox, config)
    return episode_metrics(trajectories, score_episodes(trajectories, sandbox, RewardConfig())), trajectories


def run_rl(config: TrainConfig, run_dir: Path, on_step: Callable[[dict[str, float]], None] | None = None) -> dict[str, Any]:
    """One RL run from the warm start; returns the final held-out metrics and the per-step curves."""
    trainer = RLTrainer(config, run_dir)
    curve: list[dict[str, float]] = []

    def record(metrics: dict[str, float]) -> None:
        curve.append(metrics)
        if on_step is not None:
            on_step(metrics)

    final = trainer.run(on_step=record)
    result = {"final": final, "curve": curve, "config": to_dict(config)}
    atomic_write_json(run_dir / "result.json", result)
    return result
