"""One verl trajectory in FineStep's SQL environment (``finestep.env.SqlEnv``); no verl import.

``SqlEpisode`` is the environment over the response tokens only (verl holds the prompt: prompt length 0), with
what verl needs besides: the response mask, the episode's rewards (``finestep.rewards.score_episodes``, as
FineStep's trainer scores it) and the per-token rewards in the verl layout (``verl_layout.encode_token_rewards``).
The verl agent loop gives it verl's tokenizer and the response length as the token budget; without a tokenizer
(the tests) the caller appends the observation tokens itself.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from finestep.agent.protocol import ObservationFormat, Protocol
from finestep.data.task import Task
from finestep.env.sql import DEFAULT_FORMAT, SqlEnv
from finestep.integrations.verl_layout import RewardReader, encode_token_rewards
from finestep.rewards import RewardConfig, ScoredTrajectory, score_episodes
from finestep.sql.executor import SqlSandbox

__all__ = ["SqlEpisode", "task_from_extra_info"]


def task_from_extra_info(extra: Mapping[str, Any]) -> Task:
    """The task of a verl data row from its ``extra_info`` (written by ``finestep.integrations.verl_data``).

    Needs ``db_path`` and ``gold_sql``; ``question``, ``evidence``, ``task_id``, ``db_id``, ``index`` are optional.
    """
    missing = [key for key in ("db_path", "gold_sql") if not extra.get(key)]
    if missing:
        raise ValueError(f"extra_info lacks {missing}: prepare the data with finestep.integrations.verl_data")
    db_path = Path(str(extra["db_path"]))
    return Task(
        id=str(extra.get("task_id", extra.get("index", ""))),
        index=int(extra.get("index", 0) or 0),
        question=str(extra.get("question") or ""),
        db_id=str(extra.get("db_id") or db_path.stem),
        db_path=db_path,
        gold_sql=str(extra["gold_sql"]),
        evidence=str(extra.get("evidence") or ""),
    )


class SqlEpisode(SqlEnv):
    """One trajectory, built turn by turn: ``SqlEnv`` over the response tokens (module docstring).

    Args:
        task: the question, its database and gold query.
        protocol: ``tags`` or ``json`` (a name or a ``Protocol``).
        sandbox: executes the SQL (read-only, time-limited; results cached).
        max_turns: assistant turns at most.
        fmt: caps of the observation table (rows, cell and total characters: the tool-output truncation).
        tokenizer: encodes observations (appended by the episode); ``None``: the caller appends them.
        max_total_tokens: the response's tokens at most (verl's ``response_length``); ``None``: no budget.
    """

    def __init__(
        self,
        task: Task,
        protocol: Protocol | str = "tags",
        sandbox: SqlSandbox | None = None,
        max_turns: int = 5,
        fmt: ObservationFormat = DEFAULT_FORMAT,
        tokenizer: Any = None,
        max_total_tokens: int | None = None,
    ) -> None:
        super().__init__(protocol, sandbox, tokenizer, max_turns, max_total_tokens, fmt, include_prompt=False)
        self.reset(task)

    @property
    def n_tokens(self) -> int:
        """Tokens of the response so far (generated and observation tokens)."""
        return len(self.trajectory.token_ids)

    def add_turn(
        self,
        token_ids: Sequence[int],
        text: str,
        logprobs: Sequence[float] | None = None,
        truncated: bool = False,
        eos: bool = False,
    ) -> str | None:
        """``step`` with verl's flags: the observation text to append, or None if the episode ended.

        ``truncated``: the turn hit its token limit before a stop string or end-of-sequence; ``eos``: it ended
        with the end-of-sequence token.
        """
        reason = "length" if truncated else ("eos" if eos else "stop")
        return self.step(text, token_ids, logprobs, reason).observation

    def add_observation(self, token_ids: Sequence[int]) -> None:
        """Append the tokens of the last turn's observation (never trained)."""
        self.append_observation(token_ids)

    @property
    def response_mask(self) -> list[int]:
        """1 on generated tokens, 0 on observation tokens."""
        mask = [0] * len(self.trajectory.token_ids)
        for step in self.trajectory.steps:
            mask[step.span[0] : step.span[1]] = [1] * (step.span[1] - step.span[0])
        return mask

    def score(self, config: RewardConfig) -> ScoredTrajectory:
        """``R``, ``r_t`` and links, as FineStep's trainer scores an episode (the gold query runs in the sandbox)."""
        return score_episodes([self.trajectory], self.sandbox, config)[0]

    def token_rewards(self, score: ScoredTrajectory, reader: RewardReader) -> list[float]:
        """Per-token rewards of the response in the verl layout: ``r_t`` at each step's last token, ``R`` at the last."""
        steps = self.trajectory.steps
        solved = bool(steps) and steps[-1].reward_view().kind == "solution"
        return encode_token_rewards(
            self.n_tokens, [s.span[1] for s in steps], score.process_reward, score.outcome, solved, reader
        )
