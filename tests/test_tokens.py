"""Tests of finestep.credit.tokens: step advantages -> per-token advantages and loss masks."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from finestep.credit import (
    CreditConfig,
    StepBatch,
    TokenAdvantages,
    batch_token_advantages,
    compute_advantages,
    spans_to_mask,
    step_to_token_advantages,
)

SETTINGS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def test_hand_built_layout():
    # Row 0 (group 0), length 12: prompt [0, 3), step 0 [3, 6), observation [6, 8), step 1 [8, 11), pad [12, ...)
    # Row 1 (group 0), length 7:  prompt [0, 2), step 2 [2, 4), observation [4, 5), step 3 [5, 7) truncated.
    out = step_to_token_advantages(
        step_advantages=[0.5, -1.0, 2.0, 3.0],
        step_seq=[0, 0, 1, 1],
        step_spans=[[3, 6], [8, 11], [2, 4], [5, 7]],
        seq_lengths=[12, 7],
        seq_group=[0, 0],
        step_truncated=[False, False, False, True],
        obs_seq=[0, 1], obs_spans=[[6, 8], [4, 5]],
        prompt_lengths=[3, 2],
    )
    assert out.advantages.shape == (2, 12) and out.advantages.dtype == np.float32 and out.mask.dtype == bool
    expected_mask = np.zeros((2, 12), dtype=bool)
    expected_mask[0, 3:6] = expected_mask[0, 8:11] = True
    expected_mask[1, 2:4] = True  # the truncated step 3 [5, 7) stays closed
    np.testing.assert_array_equal(out.mask, expected_mask)
    expected_adv = np.zeros((2, 12), dtype=np.float32)
    expected_adv[0, 3:6], expected_adv[0, 8:11], expected_adv[1, 2:4] = 0.5, -1.0, 2.0
    np.testing.assert_array_equal(out.advantages, expected_adv)
    # Switch off: the truncated step opens.
    off = step_to_token_advantages([0.5, -1.0, 2.0, 3.0], [0, 0, 1, 1], [[3, 6], [8, 11], [2, 4], [5, 7]],
                                   [12, 7], [0, 0], step_truncated=[False, False, False, True],
                                   mask_truncated_steps=False)
    assert off.mask[1, 5:7].all() and np.all(off.advantages[1, 5:7] == 3.0)


def test_observation_and_prompt_always_win():
    # A (buggy) step span covering the prompt and an observation: those tokens stay closed anyway.
    out = step_to_token_advantages([1.0], [0], [[0, 10]], [10], [0], obs_seq=[0], obs_spans=[[4, 6]],
                                   prompt_lengths=[2], drop_zero_groups=False, mask_truncated_steps=False)
    assert out.mask[0].tolist() == [False, False, True, True, False, False, True, True, True, True]
    assert np.all(out.advantages[~out.mask] == 0.0)


def test_drop_zero_groups():
    # Group 7 (rows 0, 1): all advantages zero -> closed. Group 3 (row 2): one zero step, one non-zero -> open.
    args = ([0.0, 1e-12, 0.0, 0.4], [0, 1, 2, 2], [[0, 2], [0, 2], [0, 2], [2, 4]], [2, 2, 4], [7, 7, 3])
    out = step_to_token_advantages(*args)
    assert not out.mask[:2].any()
    assert out.mask[2].all()  # zero-advantage tokens of a live group still count
    kept = step_to_token_advantages(*args, drop_zero_groups=False)
    assert kept.mask[0, :2].all() and kept.mask[1, :2].all()
    # Group 3's only non-zero step is truncated and masked: what is left carries no signal, so it is dropped.
    cut = step_to_token_advantages(*args, step_truncated=[False, False, False, True])
    assert not cut.mask.any()
    assert step_to_token_advantages(*args, step_truncated=[False, False, False, True],
                                    mask_truncated_steps=False).mask[2].all()


def test_width_padding_and_empty():
    out = step_to_token_advantages([1.0], [0], [[1, 2]], [3, 0], [0, 1], width=5)
    assert out.mask.shape == (2, 5) and out.mask.sum() == 1
    empty = step_to_token_advantages([], [], np.zeros((0, 2), dtype=int), [4], [0])
    assert empty.mask.shape == (1, 4) and not empty.mask.any()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"step_spans": [[0, 5]]}, r"step span 0 = \[0, 5\) is not inside row 0 of length 4"),
        ({"step_spans": [[3, 2]]}, r"is not inside row 0"),
        ({"step_spans": [[0, 1, 2]]}, r"must have shape \(1, 2\)"),
        ({"step_seq": [1]}, r"step rows must lie in \[0, 1\)"),
        ({"step_advantages": [1.0, 2.0]}, "step_advantages has 2 entries but there are 1 step spans"),
        ({"step_advantages": [float("nan")]}, "must be finite"),
        ({"seq_group": [0, 1]}, "seq_group has 2 entries"),
        ({"width": 3}, "width 3 is smaller than the longest row"),
    ],
)
def test_validation(kwargs, message):
    args = {"step_advantages": [1.0], "step_seq": [0], "step_spans": [[0, 2]], "seq_lengths": [4],
            "seq_group": [0], **kwargs}
    with pytest.raises(ValueError, match=message):
        step_to_token_advantages(**args)


def test_overlapping_step_spans_rejected():
    with pytest.raises(ValueError, match=r"step spans \[1, 4\] and \[3, 5\] overlap in row 0"):
        step_to_token_advantages([1.0, 2.0], [0, 0], [[1, 4], [3, 5]], [6], [0])


def test_batch_helper_and_torch():
    batch = StepBatch.from_lists(["q", "q"], [1.0, 0.0], [[0.1, 0.0], [-0.2]], [[False, True], [False]])
    config = CreditConfig()
    adv = compute_advantages(batch, config).advantages
    out = batch_token_advantages(batch, adv, [[2, 4], [5, 6], [2, 3]], [6, 3], config, prompt_lengths=[2, 2])
    assert isinstance(out, TokenAdvantages)
    np.testing.assert_allclose(out.advantages[0, 2:4], adv[0], rtol=1e-6)
    np.testing.assert_allclose(out.advantages[1, 2], adv[2], rtol=1e-6)
    torch = pytest.importorskip("torch")
    values, mask = out.to_torch()
    assert values.dtype == torch.float32 and mask.dtype == torch.bool and tuple(values.shape) == (2, 6)
    assert mask.sum().item() == out.mask.sum()


def test_spans_to_mask():
    mask = spans_to_mask([0, 1, 1], [[1, 3], [0, 1], [2, 2]], (2, 4))
    assert mask.tolist() == [[False, True, True, False], [True, False, False, False]]


@st.composite
def layouts(draw):
    """Rows laid out as prompt, (step, observation)*, padding; plus stray observation spans over steps."""
    n_rows = draw(st.integers(1, 5))
    step_seq, step_spans, obs_seq, obs_spans, lengths, prompts, groups = [], [], [], [], [], [], []
    for row in range(n_rows):
        pos = prompt = draw(st.integers(0, 4))
        for _ in range(draw(st.integers(0, 4))):
            n_step = draw(st.integers(0, 4))
            step_seq.append(row)
            step_spans.append([pos, pos + n_step])
            pos += n_step
            n_obs = draw(st.integers(0, 3))
            if n_obs:
                obs_seq.append(row)
                obs_spans.append([pos, pos + n_obs])
                pos += n_obs
        if pos and draw(st.booleans()):  # a stray observation span anywhere in the row
            a = draw(st.integers(0, pos - 1))
            obs_seq.append(row)
            obs_spans.append([a, draw(st.integers(a, pos))])
        lengths.append(pos)
        prompts.append(prompt)
        groups.append(draw(st.integers(0, 2)))
    n_steps = len(step_seq)
    adv = draw(st.lists(st.sampled_from([0.0, 0.0, 1.5, -0.5, 2.0]), min_size=n_steps, max_size=n_steps))
    truncated = draw(st.lists(st.booleans(), min_size=n_steps, max_size=n_steps))
    return {"step_advantages": adv, "step_seq": step_seq, "step_spans": np.array(step_spans).reshape(-1, 2),
            "seq_lengths": lengths, "seq_group": groups, "step_truncated": truncated, "obs_seq": obs_seq,
            "obs_spans": np.array(obs_spans).reshape(-1, 2), "prompt_lengths": prompts}


@SETTINGS
@given(layout=layouts(), mask_truncated=st.booleans(), drop_zero=st.booleans())
def test_mask_properties(layout, mask_truncated, drop_zero):
    out = step_to_token_advantages(**layout, mask_truncated_steps=mask_truncated, drop_zero_groups=drop_zero)
    B, T = out.mask.shape
    prompt = np.arange(T)[None, :] < np.array(layout["prompt_lengths"])[:, None]
    padding = np.arange(T)[None, :] >= np.array(layout["seq_lengths"])[:, None]
    obs = spans_to_mask(layout["obs_seq"], layout["obs_spans"], (B, T))
    # never an observation, prompt or padding token
    assert not (out.mask & (obs | prompt | padding)).any()
    assert np.all(out.advantages[~out.mask] == 0.0)
    # every open token carries its step's advantage; a step is open exactly where the switches allow it
    adv = np.array(layout["step_advantages"])
    groups = np.array(layout["seq_group"])
    not_cut = [not (mask_truncated and cut) for cut in layout["step_truncated"]]
    live = {groups[row] for row, a, ok in zip(layout["step_seq"], adv, not_cut) if ok and abs(a) > 1e-8}
    expected = np.zeros((B, T), dtype=bool)
    for s, (row, (a, b)) in enumerate(zip(layout["step_seq"], layout["step_spans"])):
        open_step = not_cut[s] and (not drop_zero or groups[row] in live)
        if open_step:
            expected[row, a:b] = True
            keep = out.mask[row, a:b]
            assert np.all(out.advantages[row, a:b][keep] == np.float32(adv[s]))
    np.testing.assert_array_equal(out.mask, expected & ~obs & ~prompt)
