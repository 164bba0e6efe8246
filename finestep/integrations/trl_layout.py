"""FineStep's episodes in TRL's completion tensors, and step advantages back onto them. No TRL import.

TRL's multi-turn rollout (``GRPOTrainer._tool_call_loop``, TRL 1.16) builds each completion by concatenating token
ids, never re-tokenizing the history: ``completion = turn_1 + suffix_1 + turn_2 + suffix_2 + ...``, where a
turn is exactly the tokens the model sampled (up to and including its end-of-turn token) and a suffix is the chat
template's rendering of the tool messages that followed, sliced from a dummy conversation after the end-of-turn
token (so separators such as Qwen's ``"\\n"`` after ``<|im_end|>`` belong to the suffix). ``tool_mask`` is 1 on
turn tokens and 0 on suffix tokens. So the runs of 1s in ``tool_mask`` are the turns, one per assistant message
of the parsed completion, and the runs of 0s are observations.

``replay_episode`` turns one completion into a FineStep ``Trajectory`` by replaying its turns through the
environment (``SqlToolSettings.make_env``: the same protocol, sandbox and turn budget as the tools used): a turn
with one tool call is that action, a turn without one is a format failure (``no action``), a turn with several
is ``several actions``. Turns after the episode ended (a closing message after ``submit_solution``, or calls after
the last turn) join the last step, so every token TRL would train belongs to a step. ``completion_advantages``
spreads step advantages over the completion positions with ``finestep.credit.tokens``; suffix tokens are closed.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from finestep.agent.trajectory import END_BUDGET, END_MAX_TURNS, Trajectory
from finestep.credit import CreditConfig, StepBatch, TokenAdvantages, step_to_token_advantages
from finestep.data.task import Task
from finestep.integrations.trl_env import SqlToolSettings
from finestep.sql.executor import SqlSandbox

__all__ = ["ReplayedEpisode", "completion_advantages", "mask_runs", "replay_episode"]


def mask_runs(mask: Sequence[int]) -> list[tuple[int, int, int]]:
    """Maximal runs of equal values: ``(value, start, end)`` with ``[start, end)`` positions, in order."""
    values = np.asarray(mask, dtype=np.int64).reshape(-1)
    if values.size == 0:
        return []
    cuts = np.flatnonzero(np.diff(values)) + 1
    starts = np.concatenate([[0], cuts])
    ends = np.concatenate([cuts, [values.size]])
    return [(int(values[s]), int(s), int(e)) for s, e in zip(starts, ends)]


class ReplayedEpisode:
    """A completion replayed as a FineStep episode.

    Attributes:
        trajectory: the ``Trajectory``: ``token_ids = prompt + completion``, one step per turn that the episode
            counted (spans in those positions; a last step may extend over turns after the end).
        closed: ``[start, end)`` spans of tool-output (suffix) tokens, in completion positions.
        extra_turns: turns after the episode ended (joined to the last step).
    """

    def __init__(self, trajectory: Trajectory, closed: list[tuple[int, int]], extra_turns: int) -> None:
        self.trajectory = trajectory
        self.closed = closed
        self.extra_turns = extra_turns


def _call_text(calls: Sequence[Mapping[str, Any]]) -> str:
    """The JSON-protocol text of a turn's parsed tool calls (what ``JsonProtocol.parse_action`` reads back)."""
    parts = []
    for call in calls:
        function = call.get("function", call) if isinstance(call, Mapping) else {}
        name = function.get("name") if isinstance(function, Mapping) else None
        arguments = function.get("arguments") if isinstance(function, Mapping) else None
        parts.append("<tool_call>\n" + json.dumps({"name": name, "arguments": arguments}, ensure_ascii=False,
                                                  default=str) + "\n</tool_call>")  # fmt: skip
    return "\n".join(parts)


def replay_episode(
    task: Task,
    prompt_ids: Sequence[int],
    completion_ids: Sequence[int],
    tool_mask: Sequence[int],
    messages: Sequence[Mapping[str, Any]],
    settings: SqlToolSettings,
    eos_ids: Sequence[int],
    tokenizer: Any = None,
    sandbox: SqlSandbox | None = None,
    sample: int = 0,
) -> ReplayedEpisode:
    """One TRL completion as a FineStep episode (module docstring).

    Args:
        task: the episode's task.
        prompt_ids: (P,) the prompt's tokens; completion_ids: (C,) the completion's (no padding).
        tool_mask: (C,) 1 on sampled tokens, 0 on tool output.
        messages: the parsed completion: assistant messages (with ``tool_calls``) and tool messages, in order.
        settings: the environment's settings (protocol, turn budget, observation format).
        eos_ids: end-of-turn token ids: a turn that does not end with one was cut off (``length``).
        tokenizer: decodes each turn's text for the step records (optional).
        sandbox: runs the SQL (default: the settings' shared sandbox, whose cache holds the tools' results).
        sample: the episode's number (``Trajectory.sample``; its id in trajectory files is ``task/sample``).
    """
    if len(tool_mask) != len(completion_ids):
        raise ValueError(f"tool_mask has {len(tool_mask)} entries but the completion has {len(completion_ids)}")
    turns = [(s, e) for value, s, e in mask_runs(tool_mask) if value == 1]
    closed = [(s, e) for value, s, e in mask_runs(tool_mask) if value == 0]
    assistant = [m for m in messages if m.get("role") == "assistant"]
    if len(assistant) != len(turns):
        raise ValueError(f"task {task.id}: the completion has {len(turns)} turns of sampled tokens but "
                         f"{len(assistant)} assistant messages")  # fmt: skip
    env = settings.make_env(sandbox)
    env.reset(task, sample, prompt_ids=list(prompt_ids))
    traj = env.trajectory
    traj.token_ids.extend(int(t) for t in completion_ids)
    traj.logprobs.extend([0.0] * len(completion_ids))
    offset, eos, extra = len(prompt_ids), {int(t) for t in eos_ids}, 0
    for (start, end), message in zip(turns, assistant):
        if env.done:  # a turn after the end joins the last step
            step = traj.steps[-1]
            step.span = (step.span[0], offset + end)
            extra += 1
            continue
        calls = message.get("tool_calls") or []
        ended = int(completion_ids[end - 1]) in eos
        stop = "stop" if calls else ("eos" if ended else "length")
        played = env.step(_call_text(calls), token_ids=(), stop_reason=stop)
        step = played.step
        step.span = (offset + start, offset + end)
        if tokenizer is not None:
            step.text = tokenizer.decode(list(completion_ids[start:end]), skip_special_tokens=False)
    if not env.done:  # the loop stopped first: TRL's iteration limit, or the completion budget
        truncated = bool(turns) and int(completion_ids[turns[-1][1] - 1]) not in eos
        env.end(END_BUDGET if truncated or not turns else END_MAX_TURNS)
    # observations: the suffix spans that follow a step (for the viewer and episode records)
    for step in traj.steps:
        after = [(s, e) for s, e in closed if offset + s == step.span[1]]
        if after:
            step.observation_span = (offset + after[0][0], offset + after[0][1])
    return ReplayedEpisode(traj, closed, extra)


def completion_advantages(
    episodes: Sequence[ReplayedEpisode],
    batch: StepBatch,
    step_advantages: np.ndarray,
    config: CreditConfig,
    width: int,
    rows: range | None = None,
) -> TokenAdvantages:
    """Step advantages on TRL's completion positions: (R, width) advantages and mask for the episodes ``rows``.

    Args:
        episodes: the N episodes of ``batch``, in its trajectory order (all processes' rows).
        batch: their ``StepBatch`` (groups, steps in trajectory order).
        step_advantages: (S,) one advantage per step of ``batch``.
        config: the token switches (``mask_truncated_steps``, ``drop_zero_groups``, ``zero_tol``).
        width: C, the padded completion width.
        rows: the episodes to lay out (this process's slice); default all.

    Returns:
        ``TokenAdvantages`` (len(rows), width): a step's advantage on its turn tokens, 0 and closed on suffix
        (tool output) and padding positions.
    """
    rows = range(len(episodes)) if rows is None else rows
    adv = np.asarray(step_advantages, dtype=np.float64).reshape(-1)
    if adv.size != batch.n_steps or len(episodes) != batch.n_traj:
        raise ValueError(f"{adv.size} step advantages for a batch of {batch.n_steps} steps and {batch.n_traj} "
                         f"trajectories, but {len(episodes)} episodes")  # fmt: skip
    keep = np.isin(batch.traj, np.asarray(list(rows), dtype=np.int64))
    step_rows, spans, truncated, obs_rows, obs = [], [], [], [], []
    for local, n in enumerate(rows):
        traj = episodes[n].trajectory
        for step in traj.steps:
            step_rows.append(local)
            spans.append((step.span[0] - traj.prompt_length, step.span[1] - traj.prompt_length))
            truncated.append(step.truncated)
        for span in episodes[n].closed:
            obs_rows.append(local)
            obs.append(span)
    if len(step_rows) != int(keep.sum()):
        raise ValueError("the episodes' steps do not match the step batch")
    lengths = [len(episodes[n].trajectory.token_ids) - episodes[n].trajectory.prompt_length for n in rows]
    return step_to_token_advantages(
        adv[keep], np.array(step_rows, dtype=np.int64), np.array(spans, dtype=np.int64).reshape(-1, 2),
        np.array(lengths, dtype=np.int64), batch.group_index[[n for n in rows]] if len(rows) else np.zeros(0, int),
        step_truncated=np.array(truncated, dtype=bool), obs_seq=np.array(obs_rows, dtype=np.int64),
        obs_spans=np.array(obs, dtype=np.int64).reshape(-1, 2), mask_truncated_steps=config.mask_truncated_steps,
        drop_zero_groups=config.drop_zero_groups, zero_tol=config.zero_tol, width=width,
    )  # fmt: skip
