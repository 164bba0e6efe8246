"""The launch script and the data files as verl reads them: hydra composes the script's overrides with verl's
own trainer config and verl's config checks pass; the agent-loop YAML instantiates; verl's dataset reads the
parquet rows. (Training itself needs GPUs and is not run here.)"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

pytest.importorskip("verl")

import verl
from hydra import compose, initialize_config_dir
from hydra.utils import get_class
from omegaconf import OmegaConf

from finestep.integrations.verl_agent import FineStepSqlAgentLoop
from finestep.integrations.verl_layout import configs_from_verl

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "configs" / "verl" / "run_qwen3_4b_bird_finestep.sh"


def _overrides(**env: str) -> list[str]:
    done = subprocess.run(["bash", str(SCRIPT), "trainer.total_training_steps=5"], capture_output=True, text=True,
                          env={**os.environ, "FINESTEP_PRINT_ARGS": "1", **env}, check=True)  # fmt: skip
    return done.stdout.splitlines()


def _compose(overrides: list[str]):
    config_dir = str(Path(verl.__file__).parent / "trainer" / "config")
    with initialize_config_dir(config_dir=config_dir, version_base=None):
        return compose(config_name="ppo_trainer", overrides=overrides)


@pytest.mark.parametrize("nnodes", ["1", "4"])
def test_launch_overrides_compose_with_verls_config(nnodes):
    from verl.trainer.ppo.utils import need_critic, need_reference_policy
    from verl.utils.config import validate_config

    cfg = _compose(_overrides(NNODES=nnodes, MODEL="/models/Qwen3-4B"))
    assert cfg.algorithm.adv_estimator == "finestep" and cfg.trainer.use_v1
    assert cfg.trainer.nnodes == int(nnodes) and cfg.trainer.n_gpus_per_node == 8
    assert cfg.data.train_batch_size == 64 * int(nnodes) and cfg.trainer.total_training_steps == 5
    assert cfg.actor_rollout_ref.rollout.response_length == 6144
    assert cfg.actor_rollout_ref.rollout.multi_turn.max_assistant_turns == 5
    env_vars = cfg.ray_kwargs.ray_init.runtime_env.env_vars
    assert env_vars.VERL_USE_EXTERNAL_MODULES == "finestep.integrations.verl"
    validate_config(config=cfg, use_reference_policy=need_reference_policy(cfg), use_critic=need_critic(cfg))
    settings = configs_from_verl(cfg.algorithm)
    assert (settings.credit.gamma_p, settings.credit.gamma_o, settings.credit.lam) == (0.5, 0.9, 0.5)

    entries = OmegaConf.load(cfg.actor_rollout_ref.rollout.agent.agent_loop_config_path)
    (entry,) = [e for e in entries if e.name == cfg.actor_rollout_ref.rollout.agent.default_agent_loop]
    assert get_class(entry._target_) is FineStepSqlAgentLoop


def test_data_rows_load_in_verls_dataset(spider, tmp_path):
    from verl.utils.dataset.rl_dataset import RLHFDataset

    from finestep.integrations.verl_data import main
    from finestep.models import build_tiny_model
    from finestep.models.loading import load_tokenizer

    out = tmp_path / "spider_dev.parquet"
    assert main(["--benchmark", "spider", "--data", str(spider), "--out", str(out), "--limit", "5"]) == 0
    tokenizer = load_tokenizer(build_tiny_model(["SELECT name FROM singer"] * 10, tmp_path / "m", vocab_size=300))
    cfg = _compose(_overrides())
    data_cfg = OmegaConf.merge(cfg.data, {"max_prompt_length": 100_000, "filter_overlong_prompts": False})
    dataset = RLHFDataset(data_files=[str(out)], tokenizer=tokenizer, config=data_cfg)
    assert len(dataset) == 5
    item = dataset[0]
    assert item["agent_name"] == "finestep_sql" and item["raw_prompt"][0]["role"] == "system"
    assert "<sql>QUERY</sql>" in item["raw_prompt"][0]["content"]
    assert "Question: How many singers do we have?" in item["raw_prompt"][1]["content"]
    extra = item["extra_info"]
    assert Path(extra["db_path"]).is_file() and extra["gold_sql"] == "SELECT count(*) FROM singer"
