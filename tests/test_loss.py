"""The PPO-clip token loss, the KL term and the log-prob helpers (finestep.train.loss)."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from finestep.train.loss import entropy_from_logits, masked_mean, ppo_clip_loss, token_log_probs

SETTINGS = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def leaf(values: list[list[float]]) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float64, requires_grad=True)


# --- token_log_probs / entropy ----------------------------------------------------------------------------


@pytest.mark.parametrize("chunk_rows", [1, 2, 5, 1024])
def test_token_log_probs_matches_log_softmax_gather(chunk_rows: int) -> None:
    torch.manual_seed(0)
    logits = torch.randn(3, 4, 7, dtype=torch.float64, requires_grad=True)
    labels = torch.randint(0, 7, (3, 4))
    expected = torch.log_softmax(logits, -1).gather(-1, labels[..., None]).squeeze(-1)
    got = token_log_probs(logits, labels, chunk_rows=chunk_rows)
    assert got.shape == (3, 4) and got.dtype == torch.float64
    torch.testing.assert_close(got, expected)
    weights = torch.randn(3, 4, dtype=torch.float64)
    (grad,) = torch.autograd.grad((got * weights).sum(), logits)
    (expected_grad,) = torch.autograd.grad((expected * weights).sum(), logits)
    torch.testing.assert_close(grad, expected_grad)
    assert torch.autograd.gradcheck(lambda x: token_log_probs(x, labels, chunk_rows=chunk_rows), (logits,))


def test_token_log_probs_half_precision_and_edge_cases() -> None:
    torch.manual_seed(1)
    logits = (torch.randn(2, 3, 11) * 5).bfloat16().requires_grad_()
    labels = torch.randint(0, 11, (2, 3))
    got = token_log_probs(logits, labels)
    assert got.dtype == torch.float32  # reduced in float32, not bfloat16
    expected = torch.log_softmax(logits.float(), -1).gather(-1, labels[..., None]).squeeze(-1)
    torch.testing.assert_close(got, expected)
    got.sum().backward()
    assert logits.grad is not None and logits.grad.dtype == torch.bfloat16
    # a non-contiguous slice (the usual shift), and an ignore index (-100 reads id 0: callers mask it)
    full = torch.randn(2, 5, 6)
    ids = torch.randint(0, 6, (2, 5))
    ids[0, 2] = -100
    shifted = token_log_probs(full[:, :-1], ids[:, 1:])
    ref = torch.log_softmax(full[:, :-1], -1).gather(-1, ids[:, 1:].clamp_min(0)[..., None]).squeeze(-1)
    torch.testing.assert_close(shifted, ref)
    assert token_log_probs(torch.zeros(0, 4, 6), torch.zeros(0, 4, dtype=torch.long)).shape == (0, 4)
    with pytest.raises(ValueError, match="do not match"):
        token_log_probs(torch.zeros(2, 3, 4), torch.zeros(2, 4, dtype=torch.long))


def test_entropy_from_logits() -> None:
    torch.manual_seed(2)
    logits = torch.randn(2, 3, 5, dtype=torch.float64)
    p = torch.softmax(logits, -1)
    torch.testing.assert_close(entropy_from_logits(logits, chunk_rows=2), -(p * p.log()).sum(-1))
    uniform = entropy_from_logits(torch.zeros(1, 2, 8))
    torch.testing.assert_close(uniform, torch.full((1, 2), math.log(8)))


# --- ppo_clip_loss: values --------------------------------------------------------------------------------


def test_hand_computed_loss_and_metrics() -> None:
    # old log-probs 0, so rho = exp(logprobs); eps_low = 0.2, eps_high = 0.28: clip range [0.8, 1.28]
    # token 0: rho = 1.5, A = +1   -> -min(1.5, 1.28) = -1.28   (clipped: no gradient)
    # token 1: rho = 0.5, A = -2   -> -min(-1.0, -1.6) = 1.6     (clipped: no gradient)
    # token 2: rho = 1.1, A = 0.5  -> -min(0.55, 0.55) = -0.55   (inside the range: d/dlogp = -rho*A/3)
    # token 3: masked (rho = 3, A = 10): ignored
    # loss = (-1.28 + 1.6 - 0.55) / 3 = -0.23 / 3
    logprobs = leaf([[math.log(1.5), math.log(0.5), math.log(1.1), math.log(3.0)]])
    old = torch.zeros(1, 4, dtype=torch.float64)
    adv = torch.tensor([[1.0, -2.0, 0.5, 10.0]], dtype=torch.float64)
    mask = torch.tensor([[True, True, True, False]])
    loss, metrics = ppo_clip_loss(logprobs, old, adv, mask)
    assert loss.item() == pytest.approx(-0.23 / 3)
    loss.backward()
    torch.testing.assert_close(
        logprobs.grad, torch.tensor([[0.0, 0.0, -1.1 * 0.5 / 3, 0.0]], dtype=torch.float64)
    )
    assert metrics["pg_loss"] == pytest.approx(-0.23 / 3)
    assert metrics["clip_fraction"] == pytest.approx(2 / 3)
    assert metrics["n_tokens"] == 3.0
    # approx_kl = mean of (rho - 1) - log(rho) over the 3 tokens
    expected_kl = sum((r - 1) - math.log(r) for r in (1.5, 0.5, 1.1)) / 3
    assert metrics["approx_kl"] == pytest.approx(expected_kl)
    assert metrics["ratio_mean"] == pytest.approx((1.5 + 0.5 + 1.1) / 3)
    assert all(type(v) is float for v in metrics.values())
    assert "kl_ref" not in metrics


@pytest.mark.parametrize(
    ("rho", "advantage", "clipped"),
    [
        (1.5, 1.0, True),  # A > 0 above 1 + eps_high: no incentive to push further
        (0.5, 1.0, False),  # A > 0 below 1 - eps_low: the unclipped term binds, gradient flows
        (0.5, -1.0, True),  # A < 0 below 1 - eps_low: no incentive to push further
        (1.5, -1.0, False),  # A < 0 above 1 + eps_high: the unclipped term binds, gradient flows
        (1.0, 1.0, False),
        (1.0, -1.0, False),
    ],
)
def test_clipping_zeroes_the_gradient_outside_the_range(rho: float, advantage: float, clipped: bool) -> None:
    logprobs = leaf([[math.log(rho)]])
    loss, metrics = ppo_clip_loss(
        logprobs, torch.zeros(1, 1, dtype=torch.float64), torch.tensor([[advantage]]), torch.ones(1, 1)
    )
    loss.backward()
    assert metrics["clip_fraction"] == (1.0 if clipped else 0.0)
    if clipped:
        assert logprobs.grad.item() == 0.0
        assert loss.item() == pytest.approx(
            -min(rho, 1.28) * advantage if advantage > 0 else -max(rho, 0.8) * advantage
        )
    else:
        assert logprobs.grad.item() == pytest.approx(-rho * advantage)  # d(-rho*A)/dlogp
        assert loss.item() == pytest.approx(-rho * advantage)


# --- masking ----------------------------------------------------------------------------------------------


def test_masked_tokens_get_exactly_zero_gradient_whatever_their_values() -> None:
    torch.manual_seed(3)
    logprobs = torch.randn(2, 5, dtype=torch.float64)
    mask = torch.tensor([[1, 1, 0, 1, 0], [0, 1, 1, 0, 0]], dtype=torch.bool)
    logprobs[~mask] = torch.tensor(
        [float("nan"), -float("inf"), float("inf"), 80.0, -80.0], dtype=torch.float64
    )
    logprobs.requires_grad_()
    old = torch.randn(2, 5, dtype=torch.float64)
    old[0, 2] = float("nan")
    adv = torch.randn(2, 5, dtype=torch.float64)
    adv[1, 0] = float("inf")
    ref = torch.randn(2, 5, dtype=torch.float64)
    ref[1, 4] = -float("inf")
    loss, metrics = ppo_clip_loss(logprobs, old, adv, mask, ref_logprobs=ref, kl_coef=0.1)
    loss.backward()
    assert torch.isfinite(loss) and all(math.isfinite(v) for v in metrics.values())
    assert torch.all(logprobs.grad[~mask] == 0)
    # equal to the loss and gradients with the masked tokens removed
    kept = logprobs.detach()[mask][None].requires_grad_()
    loss2, metrics2 = ppo_clip_loss(
        kept,
        old[mask][None],
        adv[mask][None],
        torch.ones_like(kept),
        ref_logprobs=ref[mask][None],
        kl_coef=0.1,
    )
    loss2.backward()
    torch.testing.assert_close(loss, loss2)
    torch.testing.assert_close(logprobs.grad[mask], kept.grad[0])
    assert metrics == pytest.approx(metrics2)


def test_masked_tokens_do_not_reach_model_parameters() -> None:
    torch.manual_seed(4)
    features = torch.randn(2, 6, 4)
    labels = torch.randint(0, 5, (2, 6))
    mask = torch.rand(2, 6) > 0.4
    mask[0, 0] = True
    adv = torch.randn(2, 6)

    torch.manual_seed(5)
    head = torch.nn.Linear(4, 5)
    old = token_log_probs(head(features), labels).detach() + 0.3
    lp_full = token_log_probs(head(features), labels)
    g_full = torch.autograd.grad(ppo_clip_loss(lp_full, old, adv, mask)[0], list(head.parameters()))
    lp_kept = token_log_probs(head(features[mask][None]), labels[mask][None])
    g_kept = torch.autograd.grad(
        ppo_clip_loss(lp_kept, old[mask][None], adv[mask][None], torch.ones_like(lp_kept))[0],
        list(head.parameters()),
    )
    for a, b in zip(g_full, g_kept):
        torch.testing.assert_close(a, b)
    assert all(g.abs().sum() > 0 for g in g_full)


def test_all_masked_batch_gives_zero_loss_with_a_graph() -> None:
    logprobs = torch.full((2, 3), float("nan"), dtype=torch.float64, requires_grad=True)
    loss, metrics = ppo_clip_loss(
        logprobs, torch.zeros(2, 3), torch.ones(2, 3), torch.zeros(2, 3, dtype=torch.bool),
        ref_logprobs=torch.zeros(2, 3), kl_coef=0.5,
    )  # fmt: skip
    assert loss.item() == 0.0 and loss.grad_fn is not None
    loss.backward()
    assert torch.equal(logprobs.grad, torch.zeros(2, 3, dtype=torch.float64))
    assert metrics["n_tokens"] == 0.0 and metrics["clip_fraction"] == 0.0 and metrics["approx_kl"] == 0.0
    assert metrics["kl_ref"] == 0.0 and metrics["pg_loss"] == 0.0
    empty = torch.zeros(0, 4, requires_grad=True)
    loss, _ = ppo_clip_loss(empty, empty.detach(), empty.detach(), empty.detach())
    assert loss.item() == 0.0 and loss.grad_fn is not None


def test_float_mask_weights_and_global_normalizer() -> None:
    torch.manual_seed(7)
    lp, old, adv = torch.randn(3, 4), torch.randn(3, 4), torch.randn(3, 4)
    mask = torch.rand(3, 4) > 0.3
    loss_bool, _ = ppo_clip_loss(lp, old, adv, mask)
    loss_float, _ = ppo_clip_loss(lp, old, adv, mask.float())
    torch.testing.assert_close(loss_bool, loss_float)
    # micro-batches normalized by the batch's token count sum to the batch mean
    n = float(mask.sum())
    parts = [
        ppo_clip_loss(lp[i : i + 1], old[i : i + 1], adv[i : i + 1], mask[i : i + 1], normalizer=n)[0]
        for i in range(3)
    ]
    torch.testing.assert_close(sum(parts), loss_bool)
    # float weights weigh tokens
    weights = torch.tensor([[2.0, 0.0]])
    values = torch.tensor([[3.0, float("nan")]])
    assert masked_mean(values, weights).item() == 3.0


# --- KL to the reference ----------------------------------------------------------------------------------


@SETTINGS
@given(
    values=st.lists(
        st.tuples(st.floats(-15, 0), st.floats(-15, 0), st.floats(-5, 5)), min_size=1, max_size=12
    )
)
def test_k3_kl_is_nonnegative_and_zero_at_equality(values: list[tuple[float, float, float]]) -> None:
    lp = torch.tensor([[v[0] for v in values]], dtype=torch.float64)
    ref = torch.tensor([[v[1] for v in values]], dtype=torch.float64)
    adv = torch.tensor([[v[2] for v in values]], dtype=torch.float64)
    mask = torch.ones_like(lp, dtype=torch.bool)
    loss, metrics = ppo_clip_loss(lp, lp, adv, mask, ref_logprobs=ref, kl_coef=0.25)
    assert metrics["kl_ref"] >= 0.0
    assert metrics["approx_kl"] == 0.0 and metrics["clip_fraction"] == 0.0  # old == new
    assert loss.item() == pytest.approx(metrics["pg_loss"] + 0.25 * metrics["kl_ref"], abs=1e-9)
    expected = sum(math.exp(r - p) - (r - p) - 1 for p, r, _ in values) / len(values)
    assert metrics["kl_ref"] == pytest.approx(expected, rel=1e-9, abs=1e-12)
    _, same = ppo_clip_loss(lp, lp, adv, mask, ref_logprobs=lp)
    assert same["kl_ref"] == 0.0


def test_kl_gradient_pulls_towards_the_reference() -> None:
    lp = leaf([[-1.0, -3.0]])
    ref = torch.tensor([[-2.0, -2.0]], dtype=torch.float64)
    loss, _ = ppo_clip_loss(
        lp, lp.detach(), torch.zeros(1, 2), torch.ones(1, 2), ref_logprobs=ref, kl_coef=1.0
    )
    loss.backward()
    # d k3 / d logp = 1 - exp(ref - logp): positive where logp > ref (push down), negative where below
    torch.testing.assert_close(
        lp.grad, torch.tensor([[1 - math.exp(-1.0), 1 - math.exp(1.0)]], dtype=torch.float64) / 2
    )


def test_bad_arguments_raise() -> None:
    x = torch.zeros(2, 3)
    with pytest.raises(ValueError, match="advantages"):
        ppo_clip_loss(x, x, torch.zeros(2, 4), x)
    with pytest.raises(ValueError, match="ref_logprobs"):
        ppo_clip_loss(x, x, x, x, ref_logprobs=torch.zeros(3))
    with pytest.raises(ValueError, match="kl_coef"):
        ppo_clip_loss(x, x, x, x, kl_coef=0.1)


# --- learning ---------------------------------------------------------------------------------------------


class TinyLM(torch.nn.Module):
    """Embedding + linear: the next token's logits from the current token only."""

    def __init__(self, vocab: int = 8, dim: int = 16) -> None:
        super().__init__()
        self.embed = torch.nn.Embedding(vocab, dim)
        self.head = torch.nn.Linear(dim, vocab)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.head(self.embed(ids))


def test_one_sgd_step_moves_log_probs_with_the_sign_of_the_advantage() -> None:
    torch.manual_seed(8)
    model = TinyLM()
    ids = torch.tensor([[0, 1, 2, 3, 4, 5], [6, 7, 1, 4, 2, 0]])
    inputs, labels = ids[:, :-1], ids[:, 1:]
    adv = torch.tensor([[1.0, 1.0, -1.0, -1.0, 0.0], [0.0, 0.0, 0.0, 0.0, 0.0]])
    mask = torch.tensor([[True, True, True, True, False], [False, False, False, False, False]])
    before = token_log_probs(model(inputs), labels)
    loss, metrics = ppo_clip_loss(before, before.detach(), adv, mask)
    assert metrics["clip_fraction"] == 0.0 and metrics["approx_kl"] == 0.0
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    opt.zero_grad()
    loss.backward()
    opt.step()
    with torch.no_grad():
        after = token_log_probs(model(inputs), labels)
    delta = (after - before.detach())[0]
    assert delta[0] > 0 and delta[1] > 0  # positive advantage: more likely
    assert delta[2] < 0 and delta[3] < 0  # negative advantage: less likely
