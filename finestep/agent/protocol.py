"""The agent's side of the protocol: how a tool result is shown to the model.

A tool call ``<sql>Q</sql>`` is answered with ``<observation>...</observation>`` holding a small result table
(row and character caps, each cell clipped) or the error text, and the turns left. The same text is what
``finestep sql`` prints, so a user sees exactly what the agent sees.
"""

from __future__ import annotations

from dataclasses import dataclass

from finestep.sql.executor import ErrorKind, ExecutionResult

__all__ = ["ObservationFormat", "format_observation", "format_result_table"]


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


def format_observation(
    result: ExecutionResult, turns_left: int | None = None, fmt: ObservationFormat = ObservationFormat()
) -> str:
    """The ``<observation>`` block the agent reads after a tool call."""
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
    return f"<observation>\n{body}\n</observation>"
