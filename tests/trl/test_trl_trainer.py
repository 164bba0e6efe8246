"""FineStepGRPOTrainer against stock GRPOTrainer on the same completions, and its token advantages against
``finestep credit``; tool output gets no gradient; the tokens trained are the tokens sampled.

Both trainers sample from the same warm-started tiny model with the same seed, through TRL's own generation
and tool loop, so their completions are the same token for token (checked)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("trl")

import torch
from datasets import Dataset
from transformers import AutoModelForCausalLM, AutoTokenizer
from trl import GRPOConfig, GRPOTrainer

from finestep.credit import ESTIMATORS, StepAdvantages, get_estimator, register_estimator
from finestep.eval.credit_inspect import inspect_credit
from finestep.integrations.trl import FineStepGRPOTrainer, credit_config, tool_tokenizer
from finestep.integrations.trl_env import sql_environment_factory, task_rows
from finestep.integrations.trl_layout import mask_runs
from tests.trl.conftest import SETTINGS

G = 4  # completions per prompt
PROMPTS = 3  # prompts per batch: 12 completions


def make_trainer(cls: type, model_dir: Path, world, out: Path, **kwargs) -> GRPOTrainer:
    tokenizer = tool_tokenizer(AutoTokenizer.from_pretrained(model_dir))
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    args = GRPOConfig(
        output_dir=str(out), num_generations=G, per_device_train_batch_size=G * PROMPTS, max_completion_length=160,
        temperature=1.0, max_steps=1, seed=0, report_to="none", logging_steps=1, disable_tqdm=True, bf16=False,
    )  # fmt: skip
    trainer = cls(
        model=model, args=args, environment_factory=sql_environment_factory(world.train, SETTINGS),
        train_dataset=Dataset.from_list(task_rows(world.train, SETTINGS)), processing_class=tokenizer, **kwargs,
    )  # fmt: skip
    trainer.model.train()
    trainer.current_gradient_accumulation_steps = 1
    return trainer


def inputs(world) -> list[dict]:
    """The generation batch TRL's sampler makes: each prompt G times in a row (distinct tasks)."""
    return [dict(row) for row in task_rows(world.train, SETTINGS)[:PROMPTS] for _ in range(G)]


def generate(trainer: GRPOTrainer, batch_inputs: list[dict], seed: int = 0) -> dict:
    torch.manual_seed(seed)
    return trainer._generate_and_score_completions([dict(x) for x in batch_inputs])


def loss_and_grads(trainer: GRPOTrainer, batch: dict) -> tuple[float, dict[str, torch.Tensor]]:
    trainer.model.zero_grad(set_to_none=True)
    loss = trainer.compute_loss(trainer.model, batch)
    loss.backward()
    return float(loss), {n: p.grad.detach().clone() for n, p in trainer.model.named_parameters() if p.grad is not None}


@pytest.fixture(scope="module")
def batches(trl_model: Path, trl_world, tmp_path_factory: pytest.TempPathFactory) -> dict:
    out = tmp_path_factory.mktemp("trl-trainers")
    stock = make_trainer(GRPOTrainer, trl_model, trl_world, out / "stock")
    grpo = make_trainer(FineStepGRPOTrainer, trl_model, trl_world, out / "grpo", credit="grpo")
    finestep = make_trainer(FineStepGRPOTrainer, trl_model, trl_world, out / "finestep", credit="finestep")
    original = finestep._generate

    def keep(prompts):  # the rollout as TRL's _generate returns it, for re-crediting with other estimators
        out = original(prompts)
        finestep.kept_rollout = out[:4]
        return out

    finestep._generate = keep
    batch_inputs = inputs(trl_world)
    return {name: (trainer, generate(trainer, batch_inputs))
            for name, trainer in (("stock", stock), ("grpo", grpo), ("finestep", finestep))}  # fmt: skip


def test_every_registered_estimator_runs_in_the_trainer_plugins_too(batches) -> None:
    if "trl_test_halved_grpo" not in ESTIMATORS:  # a plugin: one decorated function

        @register_estimator("trl_test_halved_grpo")
        def halved(batch, config):
            return StepAdvantages(advantages=0.5 * get_estimator("grpo")(batch, config).advantages)

    trainer, batch = batches["finestep"]
    width = batch["completion_ids"].size(1)
    results = {}
    for name in sorted(ESTIMATORS):
        trainer.credit = credit_config(name)
        advantages, metrics = trainer.step_advantages(trainer.kept_rollout, width, G)
        assert advantages.shape == batch["completion_ids"].shape and torch.isfinite(advantages).all(), name
        assert "finestep/ex" not in metrics and metrics["tool_calls"] >= 0
        results[name] = advantages
    trainer.credit = credit_config("finestep")
    assert torch.allclose(results["trl_test_halved_grpo"], 0.5 * results["grpo"])
    assert torch.allclose(results["finestep"], batch["advantages"])  # the same rollout, credited again
    # step-level credit differs from GRPO's (ungated here: this small rollout's mixed group may hold no internal
    # steps, and the gated default gives a group of equal outcomes what GRPO gives it: nothing)
    trainer.credit = credit_config({"estimator": "finestep", "equal_outcome_process": 1.0})
    ungated, _ = trainer.step_advantages(trainer.kept_rollout, width, G)
    trainer.credit = credit_config("finestep")
    assert not torch.allclose(ungated, results["grpo"])


def test_the_batch_exercises_multi_turn_tool_calls(batches) -> None:
    trainer, batch = batches["finestep"]
    tool_mask = batch["tool_mask"] * batch["completion_mask"]
    multi_turn = [sum(v == 1 for v, _, _ in mask_runs(row[: int(n)].tolist())) >= 2
                  for row, n in zip(tool_mask, batch["completion_mask"].sum(1))]  # fmt: skip
    assert sum(multi_turn) >= 2, "the warm-started model should call a tool and go on in some episodes"
    assert any(s.result is not None for e in trainer.last_episodes for s in e.trajectory.steps)


def test_grpo_estimator_reproduces_stock_grpo_loss_and_gradients(batches) -> None:
    (stock, a), (ours, b) = batches["stock"], batches["grpo"]
    for key in ("prompt_ids", "completion_ids", "completion_mask", "tool_mask"):
        assert torch.equal(a[key], b[key]), f"{key} differs: the two trainers did not sample the same completions"
    assert int(a["num_items_in_batch"]) == int(b["num_items_in_batch"])  # tokens are counted the same way
    assert a["advantages"].dim() == 1 and b["advantages"].dim() == 2  # stock: per completion; ours: per token
    mask = (b["completion_mask"] * b["tool_mask"]).bool()
    stock_tokens = a["advantages"][:, None].expand_as(mask)
    assert torch.allclose(b["advantages"][mask], stock_tokens[mask], atol=1e-6, rtol=0)
    assert float(a["advantages"].abs().max()) > 0, "no group with different outcomes: the check would be vacuous"
    loss_a, grads_a = loss_and_grads(stock, a)
    loss_b, grads_b = loss_and_grads(ours, b)
    assert loss_a == pytest.approx(loss_b, abs=1e-6)
    assert grads_a.keys() == grads_b.keys() and grads_a
    for name in grads_a:
        assert torch.allclose(grads_a[name], grads_b[name], atol=1e-6, rtol=0), name
    assert max(float(g.abs().max()) for g in grads_a.values()) > 0


def test_finestep_token_advantages_are_finestep_credit_step_advantages(batches, tmp_path: Path) -> None:
    trainer, batch = batches["finestep"]
    episodes = trainer.last_episodes
    path = tmp_path / "episodes.jsonl"
    path.write_text("".join(json.dumps(e.trajectory.to_json()) + "\n" for e in episodes), encoding="utf-8")
    lines = inspect_credit(path, "finestep", ["credit.eps=0.0001", "credit.mask_truncated_steps=false"])
    advantages, mask = batch["advantages"].numpy(), (batch["completion_mask"] * batch["tool_mask"]).numpy()
    checked = 0
    for row, (episode, line) in enumerate(zip(episodes, lines)):
        traj = episode.trajectory
        for step, expected in zip(traj.steps, line["advantages"]):
            start, end = step.span[0] - traj.prompt_length, step.span[1] - traj.prompt_length
            sampled = mask[row, start:end] == 1  # the step's own tokens (tool output inside a joined step is not)
            np.testing.assert_allclose(advantages[row, start:end][sampled], expected, atol=1e-6, rtol=0)
            checked += int(sampled.sum())
        assert np.all(advantages[row][mask[row] == 0] == 0)  # tool output and padding: 0
    assert checked == int(mask.sum())  # every trained token belongs to a step
    assert np.abs(advantages).max() > 0


def test_tool_output_tokens_get_no_gradient(batches) -> None:
    """The gradient reaching the hidden state that predicts a tool-output token is exactly 0."""
    trainer, batch = batches["finestep"]
    captured = {}
    norm = trainer.model.model.norm

    def keep(module, args, output):
        output.retain_grad()
        captured["hidden"] = output

    handle = norm.register_forward_hook(keep)
    try:
        trainer.model.zero_grad(set_to_none=True)
        trainer.compute_loss(trainer.model, batch).backward()
    finally:
        handle.remove()
    grad = captured["hidden"].grad.abs().sum(-1)  # (B, P + C)
    width = batch["prompt_ids"].size(1)
    tool = (batch["tool_mask"] == 0) & (batch["completion_mask"] == 1)  # (B, C)
    predicting = grad[:, width - 1 : -1]  # position p predicts token p + 1
    assert tool.any() and float(predicting[tool].max()) == 0.0
    assert float(predicting[~tool & (batch["completion_mask"] == 1)].max()) > 0


def test_trained_tokens_are_the_sampled_tokens(trl_model: Path, trl_world, tmp_path: Path) -> None:
    """Record every generation call of TRL's loop: the completion the loss sees is, turn by turn, the sampled
    tokens (mask 1; the last turn may be cut at max_completion_length) generated from exactly the tokens before
    them, and the template's tool suffix (mask 0), with the separator after <|im_end|> in the suffix."""
    trainer = make_trainer(FineStepGRPOTrainer, trl_model, trl_world, tmp_path / "t", credit="finestep")
    calls = []
    original = trainer._generate_single_turn

    def recording(prompt_ids, *args, **kwargs):
        completion_ids, logprobs = original(prompt_ids, *args, **kwargs)
        calls.append(([list(p) for p in prompt_ids], [list(c) for c in completion_ids]))
        return completion_ids, logprobs

    trainer._generate_single_turn = recording
    batch = generate(trainer, inputs(trl_world))
    eos = set(trainer.eos_token_ids)
    prompts = [row[row_mask.bool()].tolist() for row, row_mask in zip(batch["prompt_ids"], batch["prompt_mask"])]
    sampled = {}  # full sequence -> the sampled continuation, for every call
    for call_prompts, call_completions in calls:
        for p, c in zip(call_prompts, call_completions):
            sampled.setdefault(tuple(p), []).append(c)
    separators = 0
    for row, prompt in enumerate(prompts):
        n = int(batch["completion_mask"][row].sum())
        completion = batch["completion_ids"][row, :n].tolist()
        mask = batch["tool_mask"][row, :n].tolist()
        sequence = list(prompt)
        for value, start, end in mask_runs(mask):
            if value == 1:  # a turn: exactly what the model sampled from everything before it
                turn, candidates = completion[start:end], sampled[tuple(sequence)]
                if end == n == trainer.max_completion_length and turn not in candidates:
                    # TRL cut the last turn at max_completion_length: a prefix of what was sampled is trained
                    assert any(c[: len(turn)] == turn for c in candidates), f"row {row}: the cut turn at {start}"
                else:
                    assert turn in candidates, f"row {row}: the turn at {start}"
                if completion[end - 1] in eos and end < n:
                    separators += 1  # the token after the sampled <|im_end|> is tool output, never trained
            sequence += completion[start:end]
    assert separators > 0
