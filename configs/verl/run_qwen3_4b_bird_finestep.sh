#!/usr/bin/env bash
# FineStep on verl 0.9.1: Qwen3-4B, BIRD train, step-level credit (docs/scale.md).
#
# One node of 8 GPUs (defaults):
#   bash configs/verl/run_qwen3_4b_bird_finestep.sh
# Several nodes: start a Ray cluster first (docs/scale.md), then on the head node only:
#   NNODES=4 bash configs/verl/run_qwen3_4b_bird_finestep.sh
# Extra hydra overrides go at the end: ... trainer.total_training_steps=50 +algorithm.finestep.beta=0
# FINESTEP_PRINT_ARGS=1 prints the overrides, one per line, and exits (the tests check them against verl).
set -euo pipefail

MODEL=${MODEL:-/models/Qwen3-4B}                 # a local Hugging Face folder (nothing is downloaded)
DATA=${DATA:-/data/verl}                         # bird_train.parquet, bird_dev.parquet (finestep.integrations.verl_data)
NNODES=${NNODES:-1}                              # several nodes: the only line that must change
GPUS_PER_NODE=${GPUS_PER_NODE:-8}
PROMPTS_PER_NODE=${PROMPTS_PER_NODE:-64}         # prompts per step per node (x8 samples each)
RUN=${RUN:-qwen3-4b-bird-finestep}
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

# verl imports this module in every process that imports verl: the estimators and the agent loop register.
export VERL_USE_EXTERNAL_MODULES=finestep.integrations.verl

ARGS=(
  # --- FineStep: the estimator and its settings (the few lines a verl user adds) -----------------------
  algorithm.adv_estimator=finestep               # or grpo_shaped, ps_grpo; verl's grpo for the baseline
  algorithm.use_kl_in_reward=False               # a per-token KL in the rewards would mix into r_t
  +algorithm.finestep.gamma_p=0.5                # process-return discount
  +algorithm.finestep.gamma_o=0.9                # outcome-return discount
  +algorithm.finestep.lam=0.5                    # weight of the process advantage
  +algorithm.finestep.normalize=group
  actor_rollout_ref.rollout.agent.agent_loop_config_path=${HERE}/agent_loop.yaml
  actor_rollout_ref.rollout.agent.default_agent_loop=finestep_sql
  # every Ray actor imports the plugin too, even on nodes whose `ray start` did not export the variable
  +ray_kwargs.ray_init.runtime_env.env_vars.VERL_USE_EXTERNAL_MODULES=finestep.integrations.verl
  # --- data ------------------------------------------------------------------------------------------
  data.train_files=${DATA}/bird_train.parquet
  data.val_files=${DATA}/bird_dev.parquet
  data.train_batch_size=$((PROMPTS_PER_NODE * NNODES))
  data.max_prompt_length=4096                    # schema (12k characters at most), evidence, question
  data.max_response_length=6144                  # all turns and observations of one episode
  data.filter_overlong_prompts=True
  data.truncation=error
  data.return_raw_chat=True
  # --- rollout: vLLM, multi-turn ---------------------------------------------------------------------
  actor_rollout_ref.rollout.name=vllm
  actor_rollout_ref.rollout.mode=async
  actor_rollout_ref.rollout.n=8                  # group size G
  actor_rollout_ref.rollout.temperature=1.0
  actor_rollout_ref.rollout.tensor_model_parallel_size=1
  actor_rollout_ref.rollout.gpu_memory_utilization=0.6
  actor_rollout_ref.rollout.calculate_log_probs=True
  actor_rollout_ref.rollout.multi_turn.enable=True
  actor_rollout_ref.rollout.multi_turn.max_assistant_turns=5     # the turn limit (match --max-turns of the data)
  actor_rollout_ref.rollout.multi_turn.max_tool_response_length=2000  # characters of an observation table
  actor_rollout_ref.rollout.val_kwargs.n=1
  actor_rollout_ref.rollout.val_kwargs.temperature=0
  actor_rollout_ref.rollout.val_kwargs.do_sample=False
  # --- actor: FSDP, PPO-clip as FINESTEP.md section 3 ---------------------------------------------------
  actor_rollout_ref.model.path=${MODEL}
  actor_rollout_ref.model.enable_gradient_checkpointing=True
  actor_rollout_ref.model.use_remove_padding=True
  actor_rollout_ref.actor.optim.lr=1e-6
  actor_rollout_ref.actor.ppo_mini_batch_size=16
  actor_rollout_ref.actor.use_dynamic_bsz=True
  actor_rollout_ref.actor.ppo_max_token_len_per_gpu=24576
  actor_rollout_ref.actor.clip_ratio_low=0.2
  actor_rollout_ref.actor.clip_ratio_high=0.28
  actor_rollout_ref.actor.loss_agg_mode=token-mean
  actor_rollout_ref.actor.use_kl_loss=False
  actor_rollout_ref.actor.entropy_coeff=0
  actor_rollout_ref.actor.fsdp_config.param_offload=False
  actor_rollout_ref.actor.fsdp_config.optimizer_offload=False
  # --- trainer ---------------------------------------------------------------------------------------
  trainer.use_v1=True                            # per-token rewards need the V1 trainer (verl 0.9 default)
  trainer.nnodes=${NNODES}
  trainer.n_gpus_per_node=${GPUS_PER_NODE}
  trainer.total_training_steps=300
  trainer.save_freq=25
  trainer.test_freq=25
  trainer.val_before_train=True
  trainer.project_name=finestep
  trainer.experiment_name=${RUN}
  "trainer.logger=[console,tensorboard]"
)

if [[ "${FINESTEP_PRINT_ARGS:-0}" == 1 ]]; then
  printf '%s\n' "${ARGS[@]}" "$@"
  exit 0
fi
exec python3 -m verl.trainer.main_ppo "${ARGS[@]}" "$@"
