"""Integrations with other training frameworks.

verl (docs/scale.md):
- ``verl``: the plugin verl imports (``VERL_USE_EXTERNAL_MODULES=finestep.integrations.verl``): registers the
  registry's estimators (plugins' too) with verl's ``register_adv_est`` and the ``finestep_sql`` agent loop;
- ``verl_layout``: FineStep's reward layout in verl's token tensors and the credit computed from it
  (numpy and torch only: no verl import);
- ``verl_sql``: one trajectory in FineStep's SQL environment (``finestep.env``) over verl's response tokens, with
  its response mask, rewards and per-token rewards; no verl import;
- ``verl_agent``: the ``finestep_sql`` agent loop (imports verl);
- ``verl_data``: BIRD or Spider questions as verl parquet rows (``python -m finestep.integrations.verl_data``).

TRL (docs/trl.md):
- ``trl``: ``FineStepGRPOTrainer``, TRL's ``GRPOTrainer`` with FineStep's (B, T) step-level advantages (imports TRL);
- ``trl_env``: ``SqlToolEnv``, our SQL environment behind TRL's tool-method interface, its dataset rows and
  factory, and the tool chat template for tiny models (no TRL import);
- ``trl_layout``: TRL's completions replayed as FineStep episodes, and step advantages on their tokens (no TRL);
- ``trl_sft``: trajectories as tool-calling chats for a warm start, and the example's tiny model (no TRL).
"""
