"""Generation backends: KV-cache reuse equals re-encoding, stops, budgets, seeded sampling, scripted, vLLM."""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import pytest
import torch

from finestep.agent.generators import (
    GENERATORS,
    HFGenerator,
    SamplingParams,
    ScriptedGenerator,
    UnknownGeneratorError,
    get_generator,
)
from finestep.models import StopChecker, build_tiny_model, load_model, load_tokenizer, sample_next

CORPUS = [
    "How many players scored more than 5 goals?",
    "CREATE TABLE team (id INTEGER PRIMARY KEY, name TEXT, city TEXT)",
    "CREATE TABLE player (id INTEGER PRIMARY KEY, name TEXT, team_id INTEGER, goals INT)",
    "SELECT name FROM team WHERE city = 'Oslo'",
    "SELECT COUNT(*) FROM player WHERE goals > 5",
    "| name | city |\n|---|---|\n| Lions | Oslo |\n(1 row)",
] * 5
QUESTIONS = ["How many players?", "List the teams in Oslo with more than five goals.", "Count"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[torch.nn.Module, object]:
    """The tiny model with larger random weights, so greedy outputs vary with the context."""
    path = build_tiny_model(CORPUS, tmp_path_factory.mktemp("gen") / "tiny", vocab_size=400)
    model, tokenizer = load_model(path), load_tokenizer(path)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2:
                p.normal_(0.0, 0.3, generator=g)
    return model, tokenizer


def prompts(tokenizer) -> list[list[int]]:
    return [tokenizer.apply_chat_template([{"role": "user", "content": q}], add_generation_prompt=True,
                                          tokenize=False) for q in QUESTIONS]


def encode_prompts(tokenizer) -> list[list[int]]:
    return [tokenizer.encode(t, add_special_tokens=False) for t in prompts(tokenizer)]


def observation(tokenizer, rows: int) -> list[int]:
    table = "| n |\n|---|\n" + "".join(f"| {k} |\n" for k in range(rows))
    return tokenizer.encode(f"\n<observation>\n{table}</observation>\n", add_special_tokens=False)


def reference_greedy(model, context: list[int], n: int) -> tuple[list[int], list[float]]:
    """Greedy decoding of one sequence with a full forward pass per token (no cache, no padding)."""
    context, tokens, logps = list(context), [], []
    with torch.no_grad():
        for _ in range(n):
            logits = model(input_ids=torch.tensor([context])).logits[0, -1]
            t = int(logits.argmax())
            tokens.append(t)
            logps.append(float(torch.log_softmax(logits, -1)[t]))
            context.append(t)
    return tokens, logps


def three_turns(generator, tokenizer):
    """Batch of 3; sequence 1 leaves after turn 0; observation blocks of different lengths; ragged budgets."""
    obs = {0: observation(tokenizer, 1), 1: observation(tokenizer, 4), 2: observation(tokenizer, 9)}
    params = SamplingParams(temperature=0.0, max_new_tokens=10, stop_strings=())
    turns = []
    with generator.start(encode_prompts(tokenizer), params) as session:
        active, new, budgets = [0, 1, 2], [[], [], []], [10, 6, 8]
        for turn in range(3):
            turns.append(dict(zip(active, session.generate(active, new, budgets))))
            active = [0, 2]
            new = [obs[(i + turn) % 3] for i in active]
            budgets = [10 - 3 * turn, 4 + turn]
        contexts = session.contexts
    return turns, contexts


def test_kv_reuse_equals_reencoding_and_single_sequence_reference(tiny) -> None:
    model, tokenizer = tiny
    reused, ctx_a = three_turns(HFGenerator(model, tokenizer, reuse_cache=True), tokenizer)
    encoded, ctx_b = three_turns(HFGenerator(model, tokenizer, reuse_cache=False), tokenizer)
    chunked, _ = three_turns(HFGenerator(model, tokenizer, reuse_cache=True, batch_size=2), tokenizer)
    assert ctx_a == ctx_b
    assert [sorted(t) for t in reused] == [[0, 1, 2], [0, 2], [0, 2]]
    distinct = set()
    for a, b, c in zip(reused, encoded, chunked):
        for i in a:
            assert a[i].token_ids == b[i].token_ids == c[i].token_ids
            assert max(abs(x - y) for x, y in zip(a[i].logprobs, b[i].logprobs)) < 1e-4
            assert max(abs(x - y) for x, y in zip(a[i].logprobs, c[i].logprobs)) < 1e-4
            distinct.update(a[i].token_ids)
    assert len(distinct) > 10  # the outputs are not one repeated token
    # Each turn equals one sequence decoded alone from its full context.
    obs = {0: observation(tokenizer, 1), 1: observation(tokenizer, 4), 2: observation(tokenizer, 9)}
    context = list(encode_prompts(tokenizer)[2])
    for turn, gens in enumerate(reused):
        if turn:
            context += obs[(2 + turn - 1) % 3]
        tokens, logps = reference_greedy(model, context, len(gens[2].token_ids))
        assert tokens == gens[2].token_ids
        assert max(abs(x - y) for x, y in zip(logps, gens[2].logprobs)) < 1e-4
        context += tokens
    assert context == ctx_a[2]


def test_generation_raises_no_library_warning(tiny) -> None:
    # e.g. transformers 5's FutureWarning for the renamed ``past_key_values`` keyword, once per forward call
    model, tokenizer = tiny
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        three_turns(HFGenerator(model, tokenizer, reuse_cache=True), tokenizer)
    assert [str(w.message) for w in caught] == []


def test_sequence_can_come_back_after_leaving(tiny) -> None:
    model, tokenizer = tiny
    params = SamplingParams(temperature=0.0, max_new_tokens=5, stop_strings=())
    runs = []
    for reuse in (True, False):
        with HFGenerator(model, tokenizer, reuse_cache=reuse).start(encode_prompts(tokenizer), params) as s:
            s.generate([0, 1, 2], [[], [], []])
            s.generate([2], [observation(tokenizer, 2)])
            runs.append([g.token_ids for g in s.generate([1, 2, 0], [[5], observation(tokenizer, 1), []])])
    assert runs[0] == runs[1]


def test_random_schedules_agree_with_reencoding(tiny) -> None:
    """Random active sets, appended blocks (empty included) and budgets (zero included), several batch sizes."""
    import random

    model, tokenizer = tiny
    params = SamplingParams(temperature=0.0, max_new_tokens=6, stop_strings=())
    for seed in range(3):
        rng = random.Random(seed)
        schedule = []
        for _ in range(4):
            active = sorted(rng.sample(range(3), rng.randint(1, 3)), key=lambda _: rng.random())
            blocks = [[rng.randrange(3, len(tokenizer)) for _ in range(rng.choice([0, 1, 5, 13]))] for _ in active]
            schedule.append((active, blocks, [rng.choice([0, 2, 6]) for _ in active]))
        outputs = []
        for reuse, batch_size in ((False, None), (True, None), (True, 2), (True, 1)):
            generator = HFGenerator(model, tokenizer, reuse_cache=reuse, batch_size=batch_size)
            with generator.start(encode_prompts(tokenizer), params) as session:
                outputs.append([[g.token_ids for g in session.generate(*step)] for step in schedule])
        assert all(out == outputs[0] for out in outputs[1:]), seed


def test_stop_string_and_eos_end_the_turn(tiny) -> None:
    model, tokenizer = tiny
    prompt = encode_prompts(tokenizer)[:1]
    free, _ = reference_greedy(model, prompt[0], 20)
    # A stop string made of a printable token from the middle of the free-running output.
    k = next(k for k in range(4, 20) if (s := tokenizer.decode([free[k]])).isprintable() and s.strip())
    stop = tokenizer.decode([free[k]]).strip()
    end = next(j for j in range(20) if stop in tokenizer.decode(free[: j + 1]))
    params = SamplingParams(temperature=0.0, max_new_tokens=20, stop_strings=(stop,))
    with HFGenerator(model, tokenizer).start(prompt, params) as session:
        (gen,) = session.generate([0], [[]])
    assert gen.stop_reason == "stop" and gen.token_ids == free[: end + 1] and stop in gen.text
    assert gen.text == tokenizer.decode(gen.token_ids, skip_special_tokens=False)

    generator = HFGenerator(model, tokenizer)
    generator.eos_ids = frozenset({free[3]})
    params = SamplingParams(temperature=0.0, max_new_tokens=20, stop_strings=())
    with generator.start(prompt, params) as session:
        (gen,) = session.generate([0], [[]])
        assert gen.stop_reason == "eos" and gen.token_ids == free[: free.index(free[3]) + 1]
        (after,) = session.generate([0], [observation(tokenizer, 1)], [3])
    context = prompt[0] + gen.token_ids + observation(tokenizer, 1)
    assert after.token_ids == reference_greedy(model, context, len(after.token_ids))[0]


def test_max_new_tokens_is_respected(tiny) -> None:
    model, tokenizer = tiny
    params = SamplingParams(temperature=1.0, max_new_tokens=7, stop_strings=(), seed=0)
    with HFGenerator(model, tokenizer).start(encode_prompts(tokenizer), params) as session:
        gens = session.generate([0, 1, 2], [[], [], []], [3, 0, 50])
        assert [len(g.token_ids) for g in gens] == [3, 0, 7]
        assert [g.stop_reason for g in gens] == ["length"] * 3
        gens = session.generate([1, 2], [[], []])  # the sequence that sampled nothing comes back
        assert [len(g.token_ids) for g in gens] == [7, 7]


def test_sampling_is_reproducible_with_a_seeded_generator(tiny) -> None:
    model, tokenizer = tiny
    params = SamplingParams(temperature=1.0, top_p=0.9, max_new_tokens=12, stop_strings=())

    def sample(seed: int | None, generator: torch.Generator | None = None, p: SamplingParams = params):
        with HFGenerator(model, tokenizer).start(encode_prompts(tokenizer), p, generator) as session:
            first = session.generate([0, 1, 2], [[], [], []])
            second = session.generate([0, 2], [observation(tokenizer, 2), observation(tokenizer, 5)])
        return [(g.token_ids, g.logprobs) for g in first + second]

    a = sample(None, torch.Generator().manual_seed(7))
    assert a == sample(None, torch.Generator().manual_seed(7))
    assert a != sample(None, torch.Generator().manual_seed(8))
    seeded = SamplingParams(temperature=1.0, top_p=0.9, max_new_tokens=12, stop_strings=(), seed=7)
    assert sample(None, p=seeded) == sample(None, p=seeded)
    for tokens, logps in a:
        assert all(torch.isfinite(torch.tensor(logps))) and all(lp <= 0.0 for lp in logps)
    # A vanishing nucleus is greedy decoding.
    nucleus = SamplingParams(temperature=1.0, top_p=1e-9, max_new_tokens=12, stop_strings=())
    greedy = SamplingParams(temperature=0.0, max_new_tokens=12, stop_strings=())
    assert sample(None, torch.Generator().manual_seed(1), nucleus) == sample(None, None, greedy)


def test_logprobs_are_untempered_and_training_mode_is_restored(tiny) -> None:
    model, tokenizer = tiny
    model.train()
    params = SamplingParams(temperature=0.5, max_new_tokens=6, stop_strings=())
    try:
        with HFGenerator(model, tokenizer).start(encode_prompts(tokenizer)[:1], params,
                                                 torch.Generator().manual_seed(0)) as session:
            (gen,) = session.generate([0], [[]])
        assert model.training
    finally:
        model.eval()
    context = encode_prompts(tokenizer)[0]
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([context + gen.token_ids])).logits[0]
    expected = torch.log_softmax(logits[len(context) - 1: -1], -1)
    expected = expected.gather(-1, torch.tensor(gen.token_ids)[:, None]).squeeze(-1)
    assert torch.allclose(torch.tensor(gen.logprobs), expected, atol=1e-4)


def test_sample_next_and_stop_checker(tiny) -> None:
    _, tokenizer = tiny
    logits = torch.tensor([[0.0, 3.0, 1.0], [2.0, 0.0, 0.0]])
    tokens, logps = sample_next(logits, temperature=0.0)
    assert tokens.tolist() == [1, 0]
    assert torch.allclose(logps, torch.log_softmax(logits, -1)[[0, 1], [1, 0]])
    draws = torch.stack([sample_next(logits, 1.0, 0.5, torch.Generator().manual_seed(s))[0] for s in range(50)])
    assert (draws == torch.tensor([1, 0])).all()  # the nucleus holds only the top token
    checker = StopChecker(tokenizer, ("</sql>",), eos_ids=[tokenizer.eos_token_id])
    ids = tokenizer.encode("SELECT 1 FROM team</sql>", add_special_tokens=False)
    assert [checker(ids[: j + 1]) for j in range(len(ids))] == [None] * (len(ids) - 1) + ["stop"]
    assert checker(ids[:2] + [tokenizer.eos_token_id]) == "eos"


def test_scripted_generator(tiny) -> None:
    _, tokenizer = tiny
    calls = []

    def script(i: int, turn: int, context: str) -> str:
        calls.append((i, turn, context))
        if turn == 0:
            return f"<sql>SELECT {i}</sql>"
        return "<solution>SELECT 1</solution>" if i == 0 else "I give up"

    generator = get_generator("scripted", tokenizer=tokenizer, script=script)
    assert isinstance(generator, ScriptedGenerator)
    prompt_ids = [tokenizer.encode(q, add_special_tokens=False) for q in ("Q0:", "Q1:")]
    with generator.start(prompt_ids, SamplingParams()) as session:
        first = session.generate([0, 1], [[], []])
        assert [g.text for g in first] == ["<sql>SELECT 0</sql>", "<sql>SELECT 1</sql>"]
        assert [g.stop_reason for g in first] == ["stop", "stop"]
        assert all(g.logprobs == [0.0] * len(g.token_ids) for g in first)
        obs = tokenizer.encode("<observation>1</observation>", add_special_tokens=False)
        second = session.generate([0, 1], [obs, obs], [100, 4])
    assert second[0].stop_reason == "stop" and second[0].text == "<solution>SELECT 1</solution>"
    assert second[1].stop_reason == "length" and len(second[1].token_ids) == 4
    assert calls[2] == (0, 1, "Q0:<sql>SELECT 0</sql><observation>1</observation>")


def test_registry_and_argument_checks(tiny) -> None:
    model, tokenizer = tiny
    assert {"hf", "scripted", "vllm"} <= set(GENERATORS)
    with pytest.raises(UnknownGeneratorError, match="registered generators"):
        get_generator("nope")
    generator = get_generator("hf", model=model, tokenizer=tokenizer, reuse_cache=False)
    assert isinstance(generator, HFGenerator) and not generator.reuse_cache
    with generator.start(encode_prompts(tokenizer), SamplingParams(max_new_tokens=2)) as session:
        with pytest.raises(ValueError):
            session.generate([0, 1], [[]])
        with pytest.raises(ValueError):
            session.generate([0, 0], [[], []])
        with pytest.raises(ValueError):
            session.generate([3], [[]])
    with pytest.raises(ValueError):
        generator.start([[]], SamplingParams())
    for bad in ({"temperature": -1.0}, {"top_p": 0.0}, {"max_new_tokens": -1}):
        with pytest.raises(ValueError):
            SamplingParams(**bad)


def test_vllm_missing_gives_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "vllm", None)  # makes `import vllm` raise ImportError
    with pytest.raises(ImportError, match=r"pip install 'finestep\[vllm\]'"):
        get_generator("vllm", model_path=str(Path("/nonexistent")))
