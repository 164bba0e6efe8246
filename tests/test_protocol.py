"""The agent protocols: action parsing (exact, malformed, adversarial), observations, prompts and encoding."""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from transformers import PreTrainedTokenizerFast

from finestep.agent.protocol import (
    PROTOCOLS,
    Action,
    JsonProtocol,
    Protocol,
    TagsProtocol,
    UnknownProtocolError,
    build_messages,
    encode_observation,
    encode_prompt,
    format_observation,
    get_protocol,
)
from finestep.sql.executor import ExecutionResult

SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
TAGS = get_protocol("tags")
JSON = get_protocol("json")


def call(name: str, sql: object) -> str:
    return "<tool_call>" + json.dumps({"name": name, "arguments": {"sql": sql}}) + "</tool_call>"


# --- registry ---------------------------------------------------------------------------------------------


def test_registry() -> None:
    assert set(PROTOCOLS) >= {"tags", "json"}
    assert isinstance(TAGS, TagsProtocol) and TAGS.name == "tags"
    assert isinstance(JSON, JsonProtocol) and JSON.name == "json"
    assert get_protocol(TAGS) is TAGS
    assert TAGS.stop_strings == ("</sql>", "</solution>")
    assert JSON.stop_strings == ("</tool_call>",)
    with pytest.raises(UnknownProtocolError, match="json, tags"):
        get_protocol("xml")


# --- tags: exact parses -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Let me look. <sql>SELECT 1</sql>", Action("sql", "SELECT 1", None, (13, 32))),
        ("<solution>\n  SELECT a FROM t\n</solution>", Action("solution", "SELECT a FROM t", None, (0, 40))),
        # trailing text is ignored (a stop string may end inside a token)
        ("<sql>SELECT 1</sql>\n\nok", Action("sql", "SELECT 1", None, (0, 19))),
        # tags inside a closed think block are reasoning
        ("<think>I use <sql> or <solution></think><solution>SELECT 2</solution>", Action("solution", "SELECT 2", None, (40, 69))),
        # an unclosed think is plain text
        ("<think>hmm <sql>SELECT 3</sql>", Action("sql", "SELECT 3", None, (11, 30))),
        # a stray closing tag before the action is plain text
        ("</sql> then <sql>SELECT 4</sql>", Action("sql", "SELECT 4", None, (12, 31))),
        # a Markdown code fence around the SQL is dropped
        ("<sql>```sql\nSELECT 5\n```</sql>", Action("sql", "SELECT 5", None, (0, 30))),
        ("<sql>```\nSELECT 6\n```</sql>", Action("sql", "SELECT 6", None, (0, 27))),
        # an unclosed opening tag after a complete action is trailing text
        ("<sql>SELECT 7</sql> and later <sql>SELECT", Action("sql", "SELECT 7", None, (0, 19))),
        # SQL keeps its inner text, comparison operators included
        ("<sql>SELECT * FROM t WHERE a < 3 AND b <> 'x'</sql>", Action("sql", "SELECT * FROM t WHERE a < 3 AND b <> 'x'", None, (0, 51))),
    ],
)  # fmt: skip
def test_tags_parses_well_formed_actions(text: str, expected: Action) -> None:
    assert TAGS.parse_action(text) == expected


@pytest.mark.parametrize(
    ("text", "error", "span"),
    [
        ("I am not sure.", "no action", None),
        ("", "no action", None),
        ("<think><sql>SELECT 1</sql></think>", "no action", None),
        ("<sql>SELECT 1", "unclosed <sql> tag", (0, 13)),
        ("ok <solution>SELECT 1", "unclosed <solution> tag", (3, 21)),
        ("<sql>SELECT <sql>1</sql>", "nested tags", (0, 17)),
        ("<solution><sql>SELECT 1</sql></solution>", "nested tags", (0, 15)),
        ("<sql>SELECT 1</sql><sql>SELECT 2</sql>", "several actions", (0, 38)),
        ("<sql>SELECT 1</sql> then <solution>SELECT 2</solution>", "several actions", (0, 54)),
        ("<sql>   \n</sql>", "empty SQL", (0, 15)),
        ("<sql>``````</sql>", "empty SQL", (0, 17)),
        ("<sql>SELECT 1</solution>", "<sql> closed by </solution>", (0, 24)),
    ],
)  # fmt: skip
def test_tags_malformed_turns_are_format_errors(text: str, error: str, span: tuple[int, int] | None) -> None:
    assert TAGS.parse_action(text) == Action("none", None, error, span)


# --- json: exact parses -----------------------------------------------------------------------------------


def test_json_parses_tool_calls_and_solutions() -> None:
    text = (
        'Let me check.\n<tool_call>\n{"name": "execute_sql", "arguments": {"sql": "SELECT 1"}}\n</tool_call>'
    )
    assert JSON.parse_action(text) == Action("sql", "SELECT 1", None, (14, len(text)))
    assert JSON.parse_action(call("submit_solution", " SELECT 2 ")) == Action(
        "solution", "SELECT 2", None, (0, len(call("submit_solution", " SELECT 2 ")))
    )
    # arguments as a JSON string, and a raw newline inside a JSON string, are accepted
    text = '<tool_call>{"name": "execute_sql", "arguments": "{\\"sql\\": \\"SELECT 3\\"}"}</tool_call>'
    assert JSON.parse_action(text).sql == "SELECT 3"
    text = '<tool_call>{"name": "execute_sql", "arguments": {"sql": "SELECT a\nFROM t"}}</tool_call>'
    assert JSON.parse_action(text).sql == "SELECT a\nFROM t"
    assert JSON.parse_action(
        "<think><tool_call>x</tool_call></think>" + call("execute_sql", "SELECT 4")
    ).sql == ("SELECT 4")


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("no call here", "no action"),
        ("<tool_call>{bad json</tool_call>", "invalid JSON in tool call"),
        ("<tool_call></tool_call>", "invalid JSON in tool call"),
        ("<tool_call>" + "[" * 50_000 + "</tool_call>", "invalid JSON in tool call"),
        ("<tool_call>[1, 2]</tool_call>", "tool call is not a JSON object"),
        ('<tool_call>{"arguments": {"sql": "SELECT 1"}}</tool_call>', "missing tool name"),
        ('<tool_call>{"name": 3, "arguments": {"sql": "SELECT 1"}}</tool_call>', "missing tool name"),
        ('<tool_call>{"name": "drop_db", "arguments": {"sql": "SELECT 1"}}</tool_call>', "unknown tool 'drop_db'"),
        ('<tool_call>{"name": "execute_sql"}</tool_call>', "missing argument 'sql'"),
        ('<tool_call>{"name": "execute_sql", "arguments": {"query": "SELECT 1"}}</tool_call>', "missing argument 'sql'"),
        ('<tool_call>{"name": "execute_sql", "arguments": "{nope"}</tool_call>', "missing argument 'sql'"),
        ('<tool_call>{"name": "execute_sql", "arguments": {"sql": 5}}</tool_call>', "missing argument 'sql'"),
        ('<tool_call>{"name": "execute_sql", "arguments": {"sql": "  "}}</tool_call>', "empty SQL"),
        ('<tool_call>{"name": "execute_sql"', "unclosed <tool_call> tag"),
        ("<tool_call><tool_call>{}</tool_call>", "nested tags"),
        (call("execute_sql", "SELECT 1") + call("execute_sql", "SELECT 2"), "several actions"),
    ],
)  # fmt: skip
def test_json_malformed_calls_are_format_errors(text: str, error: str) -> None:
    action = JSON.parse_action(text)
    assert (action.kind, action.sql, action.error) == ("none", None, error)


# --- properties -------------------------------------------------------------------------------------------

FRAGMENTS = st.sampled_from(
    ["<sql>", "</sql>", "<solution>", "</solution>", "<think>", "</think>", "<tool_call>", "</tool_call>",
     "SELECT 1", " ", "\n", "<", ">", "/", "{", "}", '"name"', '"execute_sql"', '"arguments"', '"sql"', ":", ",",
     "```", "\x00", "\ufffd"]
)  # fmt: skip
JUNK = st.one_of(
    st.text(max_size=400),
    st.binary(max_size=400).map(lambda b: b.decode("utf-8", errors="replace")),
    st.lists(FRAGMENTS, max_size=40).map("".join),
)


def check_action(action: Action, text: str) -> None:
    """The invariants of any parse."""
    if action.kind == "none":
        assert action.sql is None and action.error
    else:
        assert action.error is None and action.sql and action.sql == action.sql.strip()
        assert action.span is not None
    if action.span is not None:
        start, end = action.span
        assert 0 <= start < end <= len(text) and text[start] == "<"


@pytest.mark.parametrize("protocol", sorted(PROTOCOLS))
@SETTINGS
@given(text=JUNK)
def test_parse_action_never_raises(protocol: str, text: str) -> None:
    check_action(get_protocol(protocol).parse_action(text), text)


@pytest.mark.parametrize("protocol", sorted(PROTOCOLS))
@SETTINGS
@given(
    kind=st.sampled_from(["sql", "solution"]),
    sql=st.text(alphabet=st.characters(blacklist_characters="<`", blacklist_categories=("Cs",)), min_size=1),
    before=st.text(alphabet=st.characters(blacklist_characters="<", blacklist_categories=("Cs",))),
    after=st.text(alphabet=st.characters(blacklist_characters="<", blacklist_categories=("Cs",))),
)
def test_rendered_actions_parse_back(protocol: str, kind: str, sql: str, before: str, after: str) -> None:
    proto = get_protocol(protocol)
    rendered = proto.render_action(kind, sql)  # type: ignore[arg-type]
    action = proto.parse_action(before + rendered + after)
    if sql.strip():
        assert action == Action(kind, sql.strip(), None, (len(before), len(before) + len(rendered)))  # type: ignore[arg-type]
    else:
        assert action.error == "empty SQL"


@pytest.mark.parametrize("protocol", sorted(PROTOCOLS))
@pytest.mark.parametrize(
    "text",
    [
        "a" * 100_000,
        "<sql>" * 20_000,
        "</sql>" * 20_000,
        "<think>" * 20_000 + "</think>",
        "<think>" + "<sql>x</sql>" * 10_000,
        "<sql>" + "x" * 100_000,
        "<tool_call>" + "{" * 100_000,
        "<tool_call>" + '{"a": ' * 20_000 + "</tool_call>",
        "<" * 100_000,
        bytes(range(256)).decode("latin-1") * 400,
    ],
)
def test_parse_action_handles_huge_turns(protocol: str, text: str) -> None:
    check_action(get_protocol(protocol).parse_action(text), text)


# --- observations -----------------------------------------------------------------------------------------


def test_observation_text_wraps_results_and_format_errors() -> None:
    result = ExecutionResult(columns=("n",), rows=((1,),))
    assert TAGS.observation_text(result, None, 2) == "\n" + format_observation(result, 2) + "\n"
    assert TAGS.observation_text(None, "several actions", 3) == (
        "\n<observation>\nFormat error: several actions; write exactly one <sql>...</sql> or "
        "<solution>...</solution>\nTurns left: 3\n</observation>\n"
    )
    text = JSON.observation_text(result, None, 1)
    assert text == "\n<tool_response>\n| n |\n|---|\n| 1 |\n(1 row)\nTurns left: 1\n</tool_response>\n"
    text = JSON.observation_text(None, "invalid JSON in tool call", 0)
    assert text.startswith(
        "\n<tool_response>\nFormat error: invalid JSON in tool call; call exactly one tool"
    )
    assert text.endswith("Turns left: 0\n</tool_response>\n")


# --- prompts and encoding ---------------------------------------------------------------------------------


@pytest.mark.parametrize("protocol", sorted(PROTOCOLS))
def test_build_messages(protocol: str) -> None:
    messages = build_messages(
        "How many players?", "CREATE TABLE players (id INT)", "team means club", 4, protocol
    )
    assert [m["role"] for m in messages] == ["system", "user"]
    system, user = messages[0]["content"], messages[1]["content"]
    assert "4 turns" in system
    assert ("<sql>" in system and "<solution>" in system) if protocol == "tags" else "execute_sql" in system
    assert "CREATE TABLE players (id INT)" in user and "team means club" in user
    assert user.endswith("Question: How many players?")
    no_evidence = build_messages("Q?", "S", "  ", 4, protocol)[1]["content"]
    assert "knowledge" not in no_evidence and no_evidence == "Database schema:\nS\n\nQuestion: Q?"


CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


@pytest.fixture()
def tokenizer() -> PreTrainedTokenizerFast:
    from tokenizers import Tokenizer, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.WordLevel(unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    corpus = [
        "how many players are there",
        "select count from players",
        "database schema question system user assistant",
    ]
    trainer = trainers.WordLevelTrainer(special_tokens=["[UNK]", "<s>", "<|im_start|>", "<|im_end|>"])
    tok.train_from_iterator(corpus, trainer)
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", bos_token="<s>")


def test_encode_prompt_without_chat_template(tokenizer: PreTrainedTokenizerFast) -> None:
    messages = [{"role": "system", "content": "how many"}, {"role": "user", "content": "select players"}]
    ids = encode_prompt(tokenizer, messages)
    assert ids == tokenizer("System: how many\n\nUser: select players\n\nAssistant: ").input_ids
    assert type(ids) is list and all(type(i) is int for i in ids) and ids[0] == 1  # BOS from the tokenizer


def test_encode_prompt_with_chat_template(tokenizer: PreTrainedTokenizerFast) -> None:
    tokenizer.chat_template = CHATML
    messages = build_messages("how many players", "select count", "", 3, "tags")
    ids = encode_prompt(tokenizer, messages)
    text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    assert text.endswith("<|im_start|>assistant\n")
    assert ids == tokenizer(text, add_special_tokens=False).input_ids
    assert type(ids) is list and all(type(i) is int for i in ids)
    assert ids[-2:] == [
        tokenizer.convert_tokens_to_ids("<|im_start|>"),
        tokenizer.convert_tokens_to_ids("assistant"),
    ]


def test_encode_observation_adds_no_special_tokens(tokenizer: PreTrainedTokenizerFast) -> None:
    ids = encode_observation(tokenizer, "how many players")
    assert ids == tokenizer("how many players").input_ids[1:]
    assert type(ids) is list and 1 not in ids


class _Custom(Protocol):
    """A protocol is a small subclass: the base class supplies observation_text."""

    def parse_action(self, text: str) -> Action:
        return (
            Action("solution", text.strip(), None, (0, len(text)))
            if text.strip()
            else Action("none", error="no action")
        )

    def render_action(self, kind: str, sql: str) -> str:  # type: ignore[override]
        return sql

    def instructions(self, max_turns: int) -> str:
        return f"answer in {max_turns}"

    def wrap_observation(self, body: str) -> str:
        return f"[{body}]"


def test_a_custom_protocol_plugs_in() -> None:
    proto = _Custom()
    assert build_messages("q", "s", "", 2, proto)[0]["content"] == "answer in 2"
    assert (
        proto.observation_text(None, "no action", 1)
        == "\n[Format error: no action; write exactly one action\nTurns left: 1]\n"
    )
