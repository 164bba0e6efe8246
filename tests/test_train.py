"""The RL trainer on CPU with a tiny model: an update moves log-probs the right way, runs resume exactly,
configs fail clearly."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from finestep.cli import main
from finestep.config import ConfigError
from finestep.credit import CreditConfig, StepAdvantages, StepBatch, compute_advantages
from finestep.models import build_tiny_model, load_model
from finestep.train.batch import TokenBatch
from finestep.train.config import OptimConfig, load_train_config
from finestep.train.rl import credit_diagnostics
from finestep.train.update import policy_update, rollout_logprob_gap, sequence_log_probs

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "spider-tiny.yaml"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    corpus = ["SELECT name FROM singer WHERE age > 30", "How many singers are there?"] * 20
    return build_tiny_model(corpus, tmp_path_factory.mktemp("tiny") / "model", vocab_size=300)


def test_one_update_raises_positive_and_lowers_negative_tokens(tiny: Path) -> None:
    torch.manual_seed(0)
    model = load_model(tiny)
    ids = torch.randint(5, 200, (2, 12))
    mask = torch.zeros(2, 12, dtype=torch.bool)
    mask[:, 4:] = True  # the first tokens play the prompt
    advantages = torch.zeros(2, 12)
    advantages[0, 4:] = 1.0  # row 0: good tokens
    advantages[1, 4:] = -1.0  # row 1: bad tokens
    batch = TokenBatch(ids, torch.ones_like(ids), advantages, mask, torch.zeros(2, 12))
    with torch.no_grad():
        before, _ = sequence_log_probs(model, ids, torch.ones_like(ids))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    optim = OptimConfig(minibatch_size=2, epochs=1, grad_clip=100.0)
    policy_update(model, optimizer, None, batch, optim, np.random.default_rng(0), torch.device("cpu"))
    with torch.no_grad():
        after, _ = sequence_log_probs(model, ids, torch.ones_like(ids))
    assert after[0, 4:].sum() > before[0, 4:].sum()
    assert after[1, 4:].sum() < before[1, 4:].sum()


def test_masked_tokens_get_no_gradient(tiny: Path) -> None:
    model = load_model(tiny)
    ids = torch.randint(5, 200, (1, 10))
    logprobs, _ = sequence_log_probs(model, ids, torch.ones_like(ids))
    logprobs.retain_grad()
    mask = torch.zeros(1, 10, dtype=torch.bool)
    mask[0, 6:] = True
    from finestep.train.loss import ppo_clip_loss

    loss, _ = ppo_clip_loss(logprobs, logprobs.detach(), torch.ones(1, 10), mask)
    loss.backward()
    assert torch.all(logprobs.grad[0, :6] == 0) and torch.all(logprobs.grad[0, 6:] != 0)


DIAGNOSTICS = ("approx_kl", "clip_fraction", "entropy", "n_tokens", "rollout_logprob_gap", "rollout_logprob_diff")


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_log_probs_read_the_logits_in_place_with_the_values_of_a_float32_copy(tiny: Path, dtype: torch.dtype) -> None:
    """sequence_log_probs makes no (B, T, V) float32 or shifted copy of the logits (docs/scale.md: 4 instead of
    12 bytes per logit in bf16), and gives bit for bit the log-probs, entropies and gradients of the float32 copy."""
    from finestep.train.loss import entropy_from_logits, token_log_probs

    def with_copies(model, ids, mask):
        logits = model(input_ids=ids, attention_mask=mask).logits
        zeros = torch.zeros(ids.shape[0], 1)
        with torch.no_grad():
            entropy = torch.cat([zeros, entropy_from_logits(logits[:, :-1].float())], dim=1)
        return torch.cat([zeros, token_log_probs(logits[:, :-1].float(), ids[:, 1:])], dim=1), entropy

    model = load_model(tiny, dtype=dtype).train()
    ids = torch.randint(5, 200, (3, 11))
    mask = torch.ones_like(ids)
    mask[1, 8:] = 0
    results = []
    for compute in (with_copies, sequence_log_probs):
        model.zero_grad(set_to_none=True)
        logprobs, entropy = compute(model, ids, mask) if compute is with_copies else compute(model, ids, mask, True)
        (logprobs * torch.linspace(-1.0, 1.0, 11)).sum().backward()
        results.append((logprobs.detach(), entropy, [p.grad.clone() for p in model.parameters()]))
    (a, ea, ga), (b, eb, gb) = results
    assert torch.equal(a, b) and torch.equal(ea, eb) and all(torch.equal(x, y) for x, y in zip(ga, gb))


def test_update_reports_its_diagnostics(tiny: Path) -> None:
    torch.manual_seed(0)
    model = load_model(tiny)
    ids = torch.randint(5, 200, (2, 12))
    mask = torch.zeros(2, 12, dtype=torch.bool)
    mask[:, 4:] = True
    mask[1, 10:] = False  # 8 + 6 = 14 trained tokens
    advantages = torch.where(mask, torch.tensor([[1.0], [-1.0]]), torch.zeros(()))
    with torch.no_grad():
        current, _ = sequence_log_probs(model, ids, torch.ones_like(ids))
    # the generator's log-probs: 0.1 above the trainer's on row 0, 0.3 below on row 1, garbage off the mask
    rollout = current + torch.tensor([[0.1], [-0.3]])
    rollout[~mask] = 7.0
    batch = TokenBatch(ids, torch.ones_like(ids), advantages, mask, rollout)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    optim = OptimConfig(minibatch_size=1, epochs=2, grad_clip=100.0)
    out = policy_update(model, optimizer, None, batch, optim, np.random.default_rng(0), torch.device("cpu"))
    assert set(DIAGNOSTICS) <= set(out)
    assert out["n_tokens"] == 14.0 and out["optimizer_steps"] == 4.0
    assert out["rollout_logprob_gap"] == pytest.approx((8 * 0.1 + 6 * 0.3) / 14, abs=1e-5)
    assert out["rollout_logprob_diff"] == pytest.approx((8 * 0.1 - 6 * 0.3) / 14, abs=1e-5)
    # the first minibatch sees the old policy (KL 0); later ones a moved policy
    assert out["approx_kl"] > 0.0 and 0.0 <= out["clip_fraction"] <= 1.0 and out["entropy"] > 0.0
    assert all(type(v) is float for v in out.values())


def test_rollout_logprob_gap_by_hand() -> None:
    old = torch.tensor([[-1.0, -2.0, -3.0], [-0.5, -0.5, -0.5]])
    rollout = torch.tensor([[-1.5, -1.0, 9.0], [-0.5, -0.25, float("nan")]])
    mask = torch.tensor([[True, True, False], [True, True, False]])
    # differences on the mask: -0.5, +1.0, 0.0, +0.25
    assert rollout_logprob_gap(rollout, old, mask) == pytest.approx(
        {"rollout_logprob_gap": 1.75 / 4, "rollout_logprob_diff": 0.75 / 4}
    )
    nothing = torch.zeros_like(mask)
    assert rollout_logprob_gap(rollout, old, nothing) == {"rollout_logprob_gap": 0.0, "rollout_logprob_diff": 0.0}


def _diagnostics_batch() -> StepBatch:
    # task a: outcomes 1, 0 (varies); task b: 1, 1; task c: 0, 0, 0 (a zero-step trajectory included)
    return StepBatch.from_lists(
        groups=["a", "a", "b", "b", "c", "c", "c"],
        outcomes=[1.0, 0.0, 1.0, 1.0, 0.0, 0.0, 0.0],
        process_rewards=[[0.5, 0.0], [-0.5, 0.0], [0.0], [0.2, 0.0], [0.0], [-0.1, 0.0], []],
        is_solution=[[False, True], [False, True], [True], [False, True], [True], [False, True], []],
    )


def test_credit_diagnostics_by_hand() -> None:
    batch = _diagnostics_batch()
    # steps: 2 + 2 + 1 + 2 + 1 + 2 = 10
    split = StepAdvantages(
        advantages=np.zeros(10),
        outcome_advantage=np.array([1.0, 1.0, -1.0, -1.0, 0, 0, 0, 0, 0, 0]),
        process_advantage=np.array([0.5, 0.0, -0.5, 0.0, 0, 2.0, 0, 0, 0, 0]),
    )
    out = credit_diagnostics(batch, split)
    assert out == pytest.approx(
        {"groups_with_outcome_variance": 1 / 3, "adv_outcome_abs_mean": 0.4, "adv_process_abs_mean": 0.3}
    )
    whole = StepAdvantages(advantages=np.array([2.0, -2.0, 1.0, 0, 0, 0, 0, 0, 0, 1.0]))  # e.g. grpo
    assert credit_diagnostics(batch, whole) == pytest.approx(
        {"groups_with_outcome_variance": 1 / 3, "adv_outcome_abs_mean": 0.6, "adv_process_abs_mean": 0.0}
    )


@pytest.mark.parametrize("estimator", ["finestep", "grpo"])
def test_credit_diagnostics_of_real_estimators(estimator: str) -> None:
    batch = _diagnostics_batch()
    advantages = compute_advantages(batch, CreditConfig(estimator=estimator))
    out = credit_diagnostics(batch, advantages)
    assert out["groups_with_outcome_variance"] == pytest.approx(1 / 3)
    if estimator == "finestep":
        assert out["adv_outcome_abs_mean"] == pytest.approx(np.abs(advantages.outcome_advantage).mean())
        assert out["adv_process_abs_mean"] == pytest.approx(np.abs(advantages.process_advantage).mean())
        assert out["adv_process_abs_mean"] > 0
    else:
        assert out["adv_outcome_abs_mean"] == pytest.approx(np.abs(advantages.advantages).mean())
        assert out["adv_outcome_abs_mean"] > 0
        assert out["adv_process_abs_mean"] == 0.0


@pytest.mark.parametrize(("text", "value"), [("3e-5", 3e-5), ("1E-4", 1e-4), ("2.5e+3", 2500.0), (".5e1", 5.0)])
def test_exponent_floats_as_people_write_them(text: str, value: float) -> None:
    assert load_train_config(CONFIG, [f"optim.lr={text}"]).optim.lr == value  # PyYAML alone reads '3e-5' as text


def test_malformed_config_names_the_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(ConfigError, match=r"optim\.lr: expected a number, got '3e-5x'"):
        load_train_config(CONFIG, ["optim.lr=3e-5x"])
    with pytest.raises(ConfigError, match=r"rollout\.group_size: expected an integer, got 'four'"):
        load_train_config(CONFIG, ["rollout.group_size=four"])
    with pytest.raises(ConfigError, match=r"optim\.learning_rate: unknown key"):
        load_train_config(CONFIG, ["optim.learning_rate=1e-4"])
    with pytest.raises(ConfigError, match=r"credit\.gamma_p: gamma_p must lie in \[0, 1\]"):
        load_train_config(CONFIG, ["credit.gamma_p=3"])
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: {init: pretrained}\n")
    assert main(["train", "--config", str(bad), "--run-dir", str(tmp_path / "run")]) == 2
    assert "model.path: required" in capsys.readouterr().err


def _train_lines(run_dir: Path) -> list[dict]:
    lines = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [line for line in lines if line["kind"] == "train"]


@pytest.mark.slow
def test_killed_and_resumed_run_matches_an_uninterrupted_one(spider: Path, tmp_path: Path) -> None:
    common = ["trainer.tasks_per_step=1", "rollout.group_size=2", "data.max_eval_tasks=2"]
    straight, interrupted = tmp_path / "straight", tmp_path / "interrupted"
    assert main(["train", "--config", str(CONFIG), "--run-dir", str(straight), *common, "trainer.max_steps=3"]) == 0
    assert main(["train", "--config", str(CONFIG), "--run-dir", str(interrupted), *common, "trainer.max_steps=2"]) == 0
    assert main(["train", "--resume", str(interrupted), "trainer.max_steps=3"]) == 0
    a, b = _train_lines(straight), _train_lines(interrupted)
    assert [m["step"] for m in b] == [1, 2, 3]
    volatile = {k for k in a[2] if k.startswith("time") or k == "tokens_per_s"}
    assert {k: v for k, v in a[2].items() if k not in volatile} == {k: v for k, v in b[2].items() if k not in volatile}
    checkpoints = sorted(p.name for p in (interrupted / "checkpoints").glob("step-*"))
    assert checkpoints == ["step-000002", "step-000003"]  # keep_checkpoints = 2
    assert (interrupted / "checkpoints" / "latest").read_text().strip() == "step-000003"
    assert (interrupted / "checkpoints" / "step-000003" / "model" / "config.json").is_file()


def test_every_config_key_has_help_and_help_config_prints_it(capsys: pytest.CaptureFixture[str]) -> None:
    from finestep.config import config_help
    from finestep.train.config import TrainConfig

    rows = config_help(TrainConfig)
    keys = [key for key, _, _ in rows]
    assert len(keys) == len(set(keys)) > 80 and "credit.gamma_p" in keys and "rewards.process.weights" in keys
    assert [key for key, _, text in rows if not text] == []  # every key documents itself
    defaults = {key: default for key, default, _ in rows}
    assert defaults["rollout.group_size"] == 4 and defaults["optim.betas"] == (0.9, 0.999)
    assert defaults["rewards.process.weights"] == dict.fromkeys(
        ["executes", "redundant", "grounded", "progress", "format", "reveals_gold", "repairs"], 1.0)
    with pytest.raises(SystemExit) as exit_info:  # like --help: no --config needed
        main(["train", "--help-config"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    lines = {line.split()[0]: line for line in out.splitlines() if line and not line.startswith(" ")}
    assert lines["rollout.group_size"].split()[1:3] == ["4", "G,"]
    assert lines["credit.gamma_p"].split()[1] == "0.5" and "process-return discount" in lines["credit.gamma_p"]
    assert set(keys) <= set(lines)
