"""The agent's side of the protocol: prompts, action parsing and how a tool result is shown to the model.

A protocol (``PROTOCOLS``, ``get_protocol``) fixes how the model writes an action and how the environment
answers. ``"tags"`` (SkyRL-SQL style): a tool call ``<sql>Q</sql>`` is answered with
``<observation>...</observation>`` holding a small result table (row and character caps, each cell clipped)
or the error text, and the turns left; ``<solution>Q</solution>`` is the final answer. ``"json"`` (Qwen
style): ``<tool_call>{"name": "execute_sql" | "submit_solution", "arguments": {"sql": Q}}</tool_call>``,
answered with ``<tool_response>...</tool_response>``. The observation table is what ``finestep sql`` prints,
so a user sees exactly what the agent sees.

Parsing rules (both protocols; ``parse_action`` never raises and runs in linear time):
- a closed ``<think>...</think>`` block is reasoning: action tags inside it are ignored (an unclosed
  ``<think>`` is plain text); stray closing tags before the action are plain text;
- the action is the first opening tag and its matching closing tag; text before it is reasoning and text
  after it is ignored, unless it holds a second complete action (``"several actions"``);
- errors (``Action.kind == "none"``, ``sql is None``): ``"no action"``, ``"several actions"``,
  ``"unclosed <sql> tag"``, ``"nested tags"`` (an opening action tag inside the action),
  ``"<sql> closed by </solution>"``, ``"empty SQL"``; json adds ``"invalid JSON in tool call"``,
  ``"tool call is not a JSON object"``, ``"missing tool name"``, ``"unknown tool '...'"``,
  ``"missing argument 'sql'"`` (JSON strings may hold raw newlines);
- the SQL is the tag content stripped of surrounding whitespace and of a surrounding Markdown code fence
  (```` ```sql ... ``` ````); tags are case-sensitive and take no attributes.
"""

from __future__ import annotations

import json
import re
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Literal

from finestep.sql.executor import ErrorKind, ExecutionResult

__all__ = [
    "PROTOCOLS",
    "SQL_TOOLS",
    "Action",
    "JsonProtocol",
    "ObservationFormat",
    "Protocol",
    "TagsProtocol",
    "UnknownProtocolError",
    "build_messages",
    "encode_observation",
    "encode_prompt",
    "format_observation",
    "format_observation_body",
    "format_result_table",
    "get_protocol",
    "register_protocol",
]


@dataclass(frozen=True)
class ObservationFormat:
    """Caps on what an observation shows.

    Attributes:
        max_rows: rows shown at most; the rest are counted.
        max_cell_chars: characters per cell at most.
        max_chars: characters of the whole table at most.
    """

    max_rows: int = 20
    max_cell_chars: int = 60
    max_chars: int = 2_000


def _cell(value: object, limit: int) -> str:
    if value is None:
        text = "NULL"
    elif isinstance(value, bytes):
        text = f"<{len(value)} bytes>"
    elif isinstance(value, float):
        text = repr(value)
    else:
        text = str(value)
    text = text.replace("\n", "\\n").replace("|", "\\|")
    return text if len(text) <= limit else text[: limit - 3] + "..."


def format_result_table(result: ExecutionResult, fmt: ObservationFormat = ObservationFormat()) -> str:
    """The rows of a successful result as a pipe table, with a note on rows not shown."""
    header = "| " + " | ".join(_cell(c, fmt.max_cell_chars) for c in result.columns) + " |"
    lines = [header, "|" + "---|" * len(result.columns)]
    size = len(header) + len(lines[1])
    shown = 0
    for row in result.rows[: fmt.max_rows]:
        line = "| " + " | ".join(_cell(v, fmt.max_cell_chars) for v in row) + " |"
        if size + len(line) + 1 > fmt.max_chars:
            break
        lines.append(line)
        size += len(line) + 1
        shown += 1
    total = f"{len(result.rows)}+" if result.truncated else str(len(result.rows))
    if not result.rows:
        lines.append("(no rows)")
    elif shown < len(result.rows) or result.truncated:
        lines.append(f"({shown} of {total} rows shown)")
    else:
        lines.append(f"({total} row{'s' if len(result.rows) != 1 else ''})")
    return "\n".join(lines)


def format_observation_body(
    result: ExecutionResult, turns_left: int | None = None, fmt: ObservationFormat = ObservationFormat()
) -> str:
    """What an observation says, without its wrapper: the result table or the error, and the turns left."""
    if result.ok:
        body = format_result_table(result, fmt)
    elif result.error_kind == ErrorKind.TIMEOUT:
        body = f"Error (timeout): {result.error}"
    else:
        message = (result.error or "").strip()
        if len(message) > fmt.max_chars:
            message = message[: fmt.max_chars - 3] + "..."
        body = f"Error ({result.error_kind}): {message}"
    if turns_left is not None:
        body += f"\nTurns left: {turns_left}"
    return body


def format_observation(
    result: ExecutionResult, turns_left: int | None = None, fmt: ObservationFormat = ObservationFormat()
) -> str:
    """The ``<observation>`` block the agent reads after a tool call."""
    return f"<observation>\n{format_observation_body(result, turns_left, fmt)}\n</observation>"


# --- actions ----------------------------------------------------------------------------------------------

ActionKind = Literal["sql", "solution", "none"]


@dataclass(frozen=True)
class Action:
    """The action of one assistant turn.

    Attributes:
        kind: ``"sql"`` (a tool call), ``"solution"`` (the final answer) or ``"none"`` (a format error).
        sql: the query, ``None`` when ``kind == "none"``.
        error: why the turn's format is broken (see the module docstring), ``None`` when it is not.
        span: ``[start, end)`` character span in the turn's text of the action (opening tag to closing tag),
            or for an error of the offending part; ``None`` when there is no action at all.
    """

    kind: ActionKind
    sql: str | None = None
    error: str | None = None
    span: tuple[int, int] | None = None

    @property
    def ok(self) -> bool:
        """True when the turn is well formed (``kind`` is ``"sql"`` or ``"solution"``)."""
        return self.error is None


@dataclass(frozen=True)
class _Tagged:
    """The first complete action found by ``_scan``: its tag name, content and span."""

    name: str
    content: str
    span: tuple[int, int]


@lru_cache(maxsize=8)
def _tag_pattern(names: tuple[str, ...]) -> re.Pattern[str]:
    # an alternation of literals: no backtracking, one linear pass with finditer
    return re.compile("<(/?)(" + "|".join(["think", *map(re.escape, names)]) + ")>")


def _scan(text: str, names: tuple[str, ...]) -> _Tagged | Action:
    """The first complete ``<name>...</name>`` outside closed think blocks, or the format error (an Action)."""
    last_think_close = text.rfind("</think>")
    in_think = False
    first: _Tagged | None = None
    open_name, open_start, open_end = "", -1, -1
    for m in _tag_pattern(names).finditer(text):
        closing, name = m.group(1) == "/", m.group(2)
        if in_think:
            in_think = not (closing and name == "think")
            continue
        if name == "think":
            # a think block opens only outside an action and only when some </think> closes it
            in_think = not closing and open_start < 0 and m.start() < last_think_close
            continue
        if not closing:
            if first is None and open_start >= 0:
                return Action("none", error="nested tags", span=(open_start, m.end()))
            open_name, open_start, open_end = name, m.start(), m.end()
        elif open_start < 0:
            continue  # a stray closing tag is plain text
        elif first is not None:
            if name == open_name:
                return Action("none", error="several actions", span=(first.span[0], m.end()))
        elif name != open_name:
            return Action("none", error=f"<{open_name}> closed by </{name}>", span=(open_start, m.end()))
        else:
            first = _Tagged(name, text[open_end : m.start()], (open_start, m.end()))
            open_start = -1
    if first is not None:
        return first
    if open_start >= 0:
        return Action("none", error=f"unclosed <{open_name}> tag", span=(open_start, len(text)))
    return Action("none", error="no action")


def _clean_sql(content: str) -> str:
    """``content`` stripped, without a surrounding Markdown code fence and its language word."""
    sql = content.strip()
    if len(sql) >= 6 and sql.startswith("```") and sql.endswith("```"):
        inner = sql[3:-3]
        first_line, newline, rest = inner.partition("\n")
        language = first_line.strip()
        sql = (rest if (newline and language.isalnum()) or not language else inner).strip()
    return sql


# --- protocols --------------------------------------------------------------------------------------------


class Protocol(ABC):
    """How the model writes actions and how the environment answers them (stateless).

    ``stop_strings``: generation stops after one of these (the end of an action).
    """

    name: str = ""
    stop_strings: tuple[str, ...] = ()

    @abstractmethod
    def parse_action(self, text: str) -> Action:
        """The action of one assistant turn's ``text``; never raises."""

    @abstractmethod
    def render_action(self, kind: Literal["sql", "solution"], sql: str) -> str:
        """The text of an action (for scripted trajectories and demonstrations); ``parse_action`` inverts it."""

    @abstractmethod
    def instructions(self, max_turns: int) -> str:
        """The system prompt: how to call the tool and answer, within ``max_turns`` turns."""

    def brief_instructions(self, max_turns: int) -> str:
        """A two-line system prompt for small models trained from scratch (long instructions cost them compute
        on every example and carry no information they can use)."""
        return (f"Answer with SQL. {self.render_action('sql', 'Q')} runs Q; "
                f"{self.render_action('solution', 'Q')} answers. {max_turns} turns.")  # fmt: skip

    @abstractmethod
    def wrap_observation(self, body: str) -> str:
        """``body`` in this protocol's observation wrapper."""

    def observation_text(
        self,
        result: ExecutionResult | None,
        error: str | None = None,
        turns_left: int | None = None,
        fmt: ObservationFormat = ObservationFormat(),
    ) -> str:
        r"""The text appended after a tool call: ``"\n" + observation + "\n"``, the body of
        ``observation_body`` in this protocol's wrapper."""
        return "\n" + self.wrap_observation(self.observation_body(result, error, turns_left, fmt)) + "\n"

    def observation_body(
        self,
        result: ExecutionResult | None,
        error: str | None = None,
        turns_left: int | None = None,
        fmt: ObservationFormat = ObservationFormat(),
    ) -> str:
        """What an observation says, without its wrapper (what a chat template's tool message holds).

        ``result`` is the executed query's result; ``None`` for a format error (``error``, the
        ``Action.error``), which is reported with a reminder of the action format.
        """
        if result is not None:
            return format_observation_body(result, turns_left, fmt)
        body = f"Format error: {error or 'no action'}; {self.format_reminder}"
        if turns_left is not None:
            body += f"\nTurns left: {turns_left}"
        return body

    @property
    def format_reminder(self) -> str:
        return "write exactly one action"

    # --- tokens: how prompts and observations become the model's tokens ---------------------------------------

    def tokenizer_problem(self, tokenizer: Any) -> str | None:
        """Why this protocol cannot work with ``tokenizer`` (e.g. a chat template it needs is missing), or None."""
        return None

    def prompt_ids(self, tokenizer: Any, messages: Sequence[Mapping[str, str]]) -> list[int]:
        """Token ids of a task's prompt (``encode_prompt``: the tokenizer's chat template, when it has one)."""
        return encode_prompt(tokenizer, messages)

    def observation_ids(self, tokenizer: Any, text: str) -> list[int]:
        """Token ids of an observation (``observation_text``'s text), appended after the turn's last token."""
        return encode_observation(tokenizer, text)


PROTOCOLS: dict[str, Protocol] = {}


class UnknownProtocolError(ValueError):
    """Raised by ``get_protocol`` for a name that is not registered."""


def register_protocol(name: str) -> Callable[[type[Protocol]], type[Protocol]]:
    """Class decorator registering an instance of a ``Protocol`` subclass under ``name`` (names are unique)."""

    def decorate(cls: type[Protocol]) -> type[Protocol]:
        if name in PROTOCOLS:
            raise ValueError(f"protocol {name!r} is already registered")
        cls.name = name
        PROTOCOLS[name] = cls()
        return cls

    return decorate


def get_protocol(name: str | Protocol) -> Protocol:
    """The protocol registered under ``name`` (a ``Protocol`` is returned as is)."""
    if isinstance(name, Protocol):
        return name
    try:
        return PROTOCOLS[name]
    except KeyError:
        raise UnknownProtocolError(
            f"unknown protocol {name!r}; registered protocols: {', '.join(sorted(PROTOCOLS))}"
        ) from None


@register_protocol("tags")
class TagsProtocol(Protocol):
    """SkyRL-SQL tags: reasoning (optionally ``<think>...</think>``), then ``<sql>Q</sql>`` or
    ``<solution>Q</solution>``; observations in ``<observation>...</observation>``."""

    stop_strings = ("</sql>", "</solution>")
    _TAGS = ("sql", "solution")

    def parse_action(self, text: str) -> Action:
        found = _scan(text, self._TAGS)
        if isinstance(found, Action):
            return found
        sql = _clean_sql(found.content)
        if not sql:
            return Action("none", error="empty SQL", span=found.span)
        return Action("sql" if found.name == "sql" else "solution", sql, None, found.span)

    def render_action(self, kind: Literal["sql", "solution"], sql: str) -> str:
        return f"<{kind}>{sql}</{kind}>"

    def wrap_observation(self, body: str) -> str:
        return f"<observation>\n{body}\n</observation>"

    @property
    def format_reminder(self) -> str:
        return "write exactly one <sql>...</sql> or <solution>...</solution>"

    def instructions(self, max_turns: int) -> str:
        return (
            "You are a data analyst who answers questions about a SQLite database by writing SQL.\n\n"
            "In each turn, first reason about what to do next (you may use <think>...</think>), then write "
            "exactly one action and stop:\n"
            "- <sql>QUERY</sql> runs QUERY on the database (read-only, one statement). Its result comes "
            "back in <observation>...</observation>: the first rows of the result table, or the error "
            "message, and the number of turns left.\n"
            "- <solution>QUERY</solution> submits QUERY as your final answer and ends the episode.\n\n"
            f"You have at most {max_turns} turns. Explore the data when needed, and always end with "
            "<solution>...</solution> before your turns run out. Never write an observation yourself."
        )


@register_protocol("json")
class JsonProtocol(Protocol):
    """Qwen-style tool calls: ``<tool_call>{"name": N, "arguments": {"sql": Q}}</tool_call>`` with
    ``N = "execute_sql"`` (a tool call) or ``"submit_solution"`` (the final answer); observations in
    ``<tool_response>...</tool_response>``. ``arguments`` may also be a JSON string holding the object."""

    stop_strings = ("</tool_call>",)
    TOOLS: Mapping[str, ActionKind] = {"execute_sql": "sql", "submit_solution": "solution"}

    def parse_action(self, text: str) -> Action:
        found = _scan(text, ("tool_call",))
        if isinstance(found, Action):
            return found
        span = found.span
        try:
            call = json.loads(found.content, strict=False)
        except (ValueError, RecursionError):
            return Action("none", error="invalid JSON in tool call", span=span)
        if not isinstance(call, dict):
            return Action("none", error="tool call is not a JSON object", span=span)
        name = call.get("name")
        if not isinstance(name, str):
            return Action("none", error="missing tool name", span=span)
        if name not in self.TOOLS:
            return Action("none", error=f"unknown tool {name[:40]!r}", span=span)
        args = call.get("arguments")
        if isinstance(args, str):
            try:
                args = json.loads(args, strict=False)
            except (ValueError, RecursionError):
                args = None
        sql = args.get("sql") if isinstance(args, dict) else None
        if not isinstance(sql, str):
            return Action("none", error="missing argument 'sql'", span=span)
        sql = _clean_sql(sql)
        if not sql:
            return Action("none", error="empty SQL", span=span)
        return Action(self.TOOLS[name], sql, None, span)

    def render_action(self, kind: Literal["sql", "solution"], sql: str) -> str:
        name = "execute_sql" if kind == "sql" else "submit_solution"
        call = json.dumps({"name": name, "arguments": {"sql": sql}}, ensure_ascii=False)
        return f"<tool_call>\n{call}\n</tool_call>"

    def wrap_observation(self, body: str) -> str:
        return f"<tool_response>\n{body}\n</tool_response>"

    def tokenizer_problem(self, tokenizer: Any) -> str | None:
        return _tool_turn_frame(tokenizer)[1]

    def prompt_ids(self, tokenizer: Any, messages: Sequence[Mapping[str, str]]) -> list[int]:
        """The prompt through the tokenizer's chat template, with the tool schemas (``SQL_TOOLS``) it renders."""
        self._frame(tokenizer)
        return encode_prompt(tokenizer, messages, tools=[dict(t) for t in SQL_TOOLS])

    def observation_ids(self, tokenizer: Any, text: str) -> list[int]:
        """The tool's answer as the chat template renders it after the assistant's tool call: for Qwen-style
        templates ``<|im_end|>\\n<|im_start|>user\\n<tool_response>\\nBODY\\n</tool_response><|im_end|>\\n``
        then the next assistant header (``text`` is ``observation_text``'s; its body is what the template wraps)."""
        before, after = self._frame(tokenizer)
        body = text.strip("\n")
        if body.startswith("<tool_response>\n") and body.endswith("\n</tool_response>"):
            body = body[len("<tool_response>\n") : -len("\n</tool_response>")]
        return encode_observation(tokenizer, before + body + after)

    def _frame(self, tokenizer: Any) -> tuple[str, str]:
        frame, problem = _tool_turn_frame(tokenizer)
        if frame is None:
            raise ValueError(problem)
        return frame

    @property
    def format_reminder(self) -> str:
        return (
            'call exactly one tool: <tool_call>{"name": "execute_sql" or "submit_solution", '
            '"arguments": {"sql": "..."}}</tool_call>'
        )

    def instructions(self, max_turns: int) -> str:
        return (
            "You are a data analyst who answers questions about a SQLite database by writing SQL.\n\n"
            "You have two tools. In each turn, first reason about what to do next (you may use "
            "<think>...</think>), then call exactly one tool and stop, writing a JSON object inside "
            "<tool_call></tool_call> tags:\n"
            '<tool_call>\n{"name": "execute_sql", "arguments": {"sql": "QUERY"}}\n</tool_call>\n'
            "runs QUERY on the database (read-only, one statement). Its result comes back in "
            "<tool_response>...</tool_response>: the first rows of the result table, or the error message, "
            "and the number of turns left.\n"
            '<tool_call>\n{"name": "submit_solution", "arguments": {"sql": "QUERY"}}\n</tool_call>\n'
            "submits QUERY as your final answer and ends the episode.\n\n"
            f"You have at most {max_turns} turns. Explore the data when needed, and always end with "
            "submit_solution before your turns run out. Never write a tool response yourself."
        )


#: The JSON protocol's tools as chat templates take them (``tools=``): OpenAI-style function schemas.
SQL_TOOLS: tuple[Mapping[str, Any], ...] = tuple(
    {"type": "function", "function": {"name": name, "description": description, "parameters": {
        "type": "object", "properties": {"sql": {"type": "string", "description": argument}}, "required": ["sql"]}}}
    for name, description, argument in (
        ("execute_sql", "Run a read-only SQL query on the database and see its first rows or its error.",
         "one SQLite statement"),
        ("submit_solution", "Submit a SQL query as the final answer; this ends the episode.",
         "the SQLite query whose result answers the question"),
    )
)  # fmt: skip

_PLACEHOLDER = "\x00finestep-tool-response\x00"
_FRAMES: dict[tuple[str, str, str], tuple[tuple[str, str] | None, str | None]] = {}


def _tool_turn_frame(tokenizer: Any) -> tuple[tuple[str, str] | None, str | None]:
    """How the tokenizer's chat template closes an assistant turn that ends with a tool call and renders the tool's
    answer: ``((before, after), None)`` such that the text after the call's ``</tool_call>`` is
    ``before + BODY + after`` (up to the next assistant turn's header); or ``(None, why)`` when it cannot.

    Found by rendering a probe conversation (a user message, an assistant tool call, a tool message whose content is
    a placeholder); cached per template."""
    from jinja2 import TemplateError

    template = getattr(tokenizer, "chat_template", None)
    if not template or not isinstance(template, str):
        return None, ("the json protocol writes tool calls and tool answers through the tokenizer's chat template, "
                      "and this tokenizer has none (no chat_template in tokenizer_config.json or chat_template.jinja); "
                      "use the tags protocol or a checkpoint with a chat template")  # fmt: skip
    key = (template, str(getattr(tokenizer, "eos_token", "")), str(getattr(tokenizer, "bos_token", "")))
    if key not in _FRAMES:
        call = {"type": "function", "function": {"name": "execute_sql", "arguments": {"sql": "SELECT 1"}}}
        head = [{"role": "user", "content": "q"}, {"role": "assistant", "content": "", "tool_calls": [call]}]
        try:
            text = tokenizer.apply_chat_template(
                head + [{"role": "tool", "name": "execute_sql", "content": _PLACEHOLDER}],
                tools=[dict(t) for t in SQL_TOOLS], tokenize=False, add_generation_prompt=True,
            )  # fmt: skip
        except (TemplateError, ValueError, TypeError, KeyError, AttributeError) as exc:
            _FRAMES[key] = None, f"the tokenizer's chat template fails on a tool call and a tool message: {exc}"
            return _FRAMES[key]
        at = text.find(_PLACEHOLDER) if isinstance(text, str) else -1
        close = text.rfind("</tool_call>", 0, max(at, 0))
        if at < 0 or close < 0 or "execute_sql" not in text[:close] or "SELECT 1" not in text[:close]:
            _FRAMES[key] = None, ("the json protocol needs a chat template that renders assistant tool calls as "
                                  "<tool_call>{...}</tool_call> and tool messages (Qwen-style, as Qwen2.5 and Qwen3 "
                                  "ship); this tokenizer's template does not; use the tags protocol")  # fmt: skip
        else:
            _FRAMES[key] = (text[close + len("</tool_call>") : at], text[at + len(_PLACEHOLDER) :]), None
    return _FRAMES[key]


# --- prompts and tokens -----------------------------------------------------------------------------------


def build_messages(
    task_question: str,
    schema: str,
    evidence: str = "",
    max_turns: int = 5,
    protocol: str | Protocol = "tags",
    brief: bool = False,
    database: str = "SQLite",
) -> list[dict[str, str]]:
    """The chat of a task's prompt: ``[system (protocol instructions), user (schema, evidence, question)]``.

    Empty or blank evidence is left out; ``brief`` uses the protocol's two-line instructions. ``database``: the
    engine the SQL runs on, as the instructions name it (``SQLite``; ``DuckDB`` or ``PostgreSQL`` for a database
    of another engine: the instructions' "a SQLite database" then names it instead).
    """
    parts = [f"Database schema:\n{schema.strip()}"]
    if evidence and evidence.strip():
        parts.append(f"External knowledge: {evidence.strip()}")
    parts.append(f"Question: {task_question.strip()}")
    chosen = get_protocol(protocol)
    system = chosen.brief_instructions(max_turns) if brief else chosen.instructions(max_turns)
    if database != "SQLite":
        system = system.replace("a SQLite database", f"a {database} database")
    return [{"role": "system", "content": system}, {"role": "user", "content": "\n\n".join(parts)}]


def _as_ids(encoded: Any) -> list[int]:
    """A plain ``list[int]`` from what a tokenizer returns (list, dict/BatchEncoding, tensor, batch of 1)."""
    if isinstance(encoded, Mapping) or hasattr(encoded, "keys"):
        encoded = encoded["input_ids"]
    if hasattr(encoded, "tolist"):
        encoded = encoded.tolist()
    if isinstance(encoded, Sequence) and encoded and not isinstance(encoded[0], int):
        if len(encoded) != 1:
            raise ValueError(f"expected one sequence of token ids, got {len(encoded)}")
        encoded = encoded[0]
    return [int(i) for i in encoded]


def encode_prompt(tokenizer: Any, messages: Sequence[Mapping[str, str]], **template_kwargs: Any) -> list[int]:
    r"""Token ids of the prompt, ending where the assistant's first turn starts.

    With a chat template: ``tokenizer.apply_chat_template(..., add_generation_prompt=True, tokenize=True)``
    (``template_kwargs`` go to it, e.g. ``enable_thinking=False``); without one, the plain text
    ``"System: ...\n\nUser: ...\n\nAssistant: "`` encoded with the tokenizer's special tokens.
    """
    if getattr(tokenizer, "chat_template", None):
        encoded = tokenizer.apply_chat_template(
            [dict(m) for m in messages], add_generation_prompt=True, tokenize=True, **template_kwargs
        )
        return _as_ids(encoded)
    text = "".join(f"{m['role'].capitalize()}: {m['content']}\n\n" for m in messages) + "Assistant: "
    return _as_ids(tokenizer(text).input_ids)


def encode_observation(tokenizer: Any, text: str) -> list[int]:
    """Token ids of an observation text, without special tokens."""
    return _as_ids(tokenizer(text, add_special_tokens=False).input_ids)
