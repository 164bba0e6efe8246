"""Tiny models: build, reload like any checkpoint, tokenizer tags and chat template, determinism, LoRA."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import torch

from finestep.models import (
    PROTOCOL_TAGS,
    SPECIAL_TOKENS,
    ModelNotFoundError,
    build_tiny_model,
    load_model,
    load_tokenizer,
)

CORPUS = [
    "How many players scored more than 5 goals?",
    "Which team plays in Oslo? List the names of all teams.",
    "CREATE TABLE team (id INTEGER PRIMARY KEY, name TEXT, city TEXT)",
    "CREATE TABLE player (id INTEGER PRIMARY KEY, name TEXT, team_id INTEGER REFERENCES team(id), goals INT)",
    "SELECT name FROM team WHERE city = 'Oslo'",
    "SELECT COUNT(*) FROM player WHERE goals > 5",
    "SELECT t.name, SUM(p.goals) FROM team AS t JOIN player AS p ON p.team_id = t.id GROUP BY t.name",
    "| name | city |\n|---|---|\n| Lions | Oslo |\n(1 row)",
] * 5


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_model(CORPUS, tmp_path_factory.mktemp("models") / "tiny", vocab_size=512)


def test_builds_fast_and_reloads_with_auto_classes(tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    start = time.perf_counter()
    out = build_tiny_model(CORPUS, tmp_path / "m", vocab_size=512)
    assert time.perf_counter() - start < 30
    assert out == tmp_path / "m"
    assert {"config.json", "generation_config.json", "tokenizer.json"} <= {p.name for p in out.iterdir()}
    assert [p.name for p in tmp_path.iterdir()] == ["m"]  # no temporary folder left beside it
    model = AutoModelForCausalLM.from_pretrained(str(out), local_files_only=True)
    tokenizer = AutoTokenizer.from_pretrained(str(out), local_files_only=True)
    assert model.config.model_type == "qwen3"
    assert model.config.tie_word_embeddings
    assert model.get_input_embeddings().weight.data_ptr() == model.get_output_embeddings().weight.data_ptr()
    assert model.config.vocab_size == len(tokenizer)
    assert tokenizer.eos_token == "<|im_end|>" and tokenizer.pad_token == "<|endoftext|>"
    assert tokenizer.eos_token_id in model.generation_config.eos_token_id


def test_tags_are_single_tokens_and_survive_decoding(tiny: Path) -> None:
    tokenizer = load_tokenizer(tiny)
    for tag in PROTOCOL_TAGS + SPECIAL_TOKENS:
        ids = tokenizer.encode(tag, add_special_tokens=False)
        assert len(ids) == 1, tag
        assert tokenizer.decode(ids) == tag
    text = "<think>count them</think><sql>SELECT COUNT(*) FROM player</sql><observation>| 4 |</observation>"
    text += "<solution>SELECT 4</solution>"
    ids = tokenizer.encode(text, add_special_tokens=False)
    assert tokenizer.decode(ids, skip_special_tokens=False) == text
    assert tokenizer.decode(ids, skip_special_tokens=True) == text  # tags are not special tokens
    # A tag glued to text on either side is still one token.
    ids = tokenizer.encode("x</sql>y", add_special_tokens=False)
    assert tokenizer.convert_tokens_to_ids("</sql>") in ids
    assert tokenizer.decode(tokenizer.encode("héllo 中文 ✓", add_special_tokens=False)) == "héllo 中文 ✓"


@pytest.mark.parametrize("split_digits", [True, False])
def test_numbers_read_the_same_in_a_question_and_in_sql(tmp_path: Path, split_digits: bool) -> None:
    corpus = CORPUS + [f"How many players scored more than {n} goals?\nSELECT COUNT(*) FROM player WHERE goals > {n}"
                       for n in (10, 25, 150, 500, 1950, 2048)] * 20  # fmt: skip
    tokenizer = load_tokenizer(build_tiny_model(corpus, tmp_path / "m", vocab_size=512, split_digits=split_digits))

    def pieces(text: str) -> list[str]:
        return [tokenizer.decode([i]) for i in tokenizer.encode(text, add_special_tokens=False)]

    question, sql = pieces("more than 1950 goals"), pieces("goals > 1950")
    if split_digits:
        assert question[-5:-1] == sql[-4:] == ["1", "9", "5", "0"]
    else:  # GPT-2-style pieces: the corpus's frequent numbers merge into multi-digit tokens
        assert any(len(piece.strip()) > 1 and piece.strip().isdigit() for piece in question + sql)
    assert tokenizer.decode(tokenizer.encode("SELECT 12345 FROM t", add_special_tokens=False)) == "SELECT 12345 FROM t"


def test_chat_template_is_chatml(tiny: Path) -> None:
    tokenizer = load_tokenizer(tiny)
    messages = [{"role": "system", "content": "You write SQL."}, {"role": "user", "content": "How many?"}]
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert text == ("<|im_start|>system\nYou write SQL.<|im_end|>\n<|im_start|>user\nHow many?<|im_end|>\n"
                    "<|im_start|>assistant\n")
    plain = tokenizer.apply_chat_template(messages, tokenize=False)
    assert plain == text[: -len("<|im_start|>assistant\n")]


def test_forward_shapes(tiny: Path) -> None:
    model, tokenizer = load_model(tiny), load_tokenizer(tiny)
    assert not model.training
    ids = torch.tensor([tokenizer.encode("SELECT name FROM team", add_special_tokens=False)] * 2)
    with torch.no_grad():
        out = model(input_ids=ids)
    assert out.logits.shape == (2, ids.shape[1], len(tokenizer))
    assert torch.isfinite(out.logits).all()


def test_deterministic_for_a_seed(tmp_path: Path) -> None:
    state = torch.random.get_rng_state()
    a = build_tiny_model(CORPUS, tmp_path / "a", vocab_size=512, seed=3)
    b = build_tiny_model(CORPUS, tmp_path / "b", vocab_size=512, seed=3)
    c = build_tiny_model(CORPUS, tmp_path / "c", vocab_size=512, seed=4)
    assert torch.equal(state, torch.random.get_rng_state())  # the global RNG is left alone
    assert (a / "tokenizer.json").read_bytes() == (b / "tokenizer.json").read_bytes()
    sa, sb, sc = (load_model(p).state_dict() for p in (a, b, c))
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not all(torch.equal(sa[k], sc[k]) for k in sa)


def test_rebuild_replaces_the_folder(tmp_path: Path) -> None:
    out = build_tiny_model(CORPUS, tmp_path / "m", vocab_size=512, seed=0)
    (out / "stale.txt").write_text("old")
    build_tiny_model(CORPUS, out, vocab_size=512, hidden_size=32, seed=1)
    assert not (out / "stale.txt").exists()
    assert load_model(out).config.hidden_size == 32
    assert [p.name for p in tmp_path.iterdir()] == ["m"]


def test_lora_trains_only_adapters(tiny: Path) -> None:
    model = load_model(tiny, lora={"r": 4, "alpha": 8, "dropout": 0.0})
    trainable = [name for name, p in model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in name for name in trainable)
    assert any("q_proj" in name for name in trainable) and any("down_proj" in name for name in trainable)
    ids = torch.tensor([[1, 2, 3, 4]])
    model.train()
    model(input_ids=ids, labels=ids).loss.backward()
    assert all(p.grad is None for name, p in model.named_parameters() if "lora_" not in name)
    subset = load_model(tiny, lora={"r": 2, "target_modules": ["q_proj"]})
    names = [name for name, p in subset.named_parameters() if p.requires_grad]
    assert names and all("q_proj.lora_" in name for name in names)


def test_dtype_and_gradient_checkpointing(tiny: Path) -> None:
    model = load_model(tiny, dtype="bfloat16", gradient_checkpointing=True)
    assert next(model.parameters()).dtype == torch.bfloat16
    assert any(getattr(m, "gradient_checkpointing", False) for m in model.modules())


def test_missing_folder_names_the_path(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-model"
    with pytest.raises(ModelNotFoundError, match="no-such-model"):
        load_model(missing)
    with pytest.raises(ModelNotFoundError, match="no-such-model"):
        load_tokenizer(missing)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelNotFoundError, match="empty"):
        load_model(tmp_path / "empty")
