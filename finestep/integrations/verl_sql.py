"""The SQL environment of one trajectory, driven turn by turn from outside (verl's agent loop); no verl import.

It is FineStep's own rollout step (``finestep.agent.rollout``) without the generator: each assistant turn's text
is parsed with the protocol (``tags``: ``<sql>`` / ``<solution>``), its SQL runs in ``finestep.sql``'s sandbox,
and the observation text comes back to be appended; the episode ends on a solution, on end-of-sequence or at
the turn limit, as in FineStep's rollout. The trajectory is a ``finestep.agent.trajectory.Trajectory`` whose
tokens are the response only (prompt length 0), so the rewards are ``finestep.eval.episodes.score_episodes``'s
and the per-token rewards are written in the verl layout (``verl_layout.encode_token_rewards``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from finestep.agent.protocol import ObservationFormat, Protocol, get_protocol
from finestep.agent.trajectory import Step, Trajectory
from finestep.data.task import Task
from finestep.eval.episodes import EpisodeScore, score_episodes
from finestep.integrations.verl_layout import RewardReader, encode_token_rewards
from finestep.rewards.config import RewardConfig
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


@dataclass
class SqlEpisode:
    """One trajectory: its response tokens, steps and tool results, built turn by turn.

    Attributes:
        task: the question, its database and gold query.
        protocol: ``tags`` or ``json`` (a name or a ``Protocol``).
        sandbox: executes the SQL (read-only, time-limited; results cached).
        max_turns: assistant turns at most.
        fmt: caps of the observation table (rows, cell and total characters: the tool-output truncation).
    """

    task: Task
    protocol: Protocol | str = "tags"
    sandbox: SqlSandbox = field(default_factory=SqlSandbox)
    max_turns: int = 5
    fmt: ObservationFormat = field(default_factory=ObservationFormat)
    trajectory: Trajectory = field(init=False)
    done: bool = field(init=False, default=False)

    def __post_init__(self) -> None:
        self.protocol = get_protocol(self.protocol)
        if self.max_turns < 1:
            raise ValueError(f"max_turns must be >= 1, got {self.max_turns}")
        self.trajectory = Trajectory(self.task, sample=0, prompt_length=0, token_ids=[], logprobs=[])

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
        """Record one assistant turn and act on it; the observation text to append, or None if the episode ended.

        Args:
            token_ids: the turn's generated tokens; text: their decoded text.
            logprobs: the rollout log-probabilities of the tokens (0 when not given).
            truncated: the turn hit its token limit before a stop string or end-of-sequence.
            eos: the turn ended with the end-of-sequence token.
        """
        if self.done:
            raise RuntimeError("the episode has ended")
        traj = self.trajectory
        begin = len(traj.token_ids)
        traj.token_ids.extend(int(t) for t in token_ids)
        traj.logprobs.extend([float(x) for x in logprobs] if logprobs is not None else [0.0] * len(token_ids))
        action = self.protocol.parse_action(text)
        reason = "length" if truncated else ("eos" if eos else "stop")
        step = Step(text, action, (begin, len(traj.token_ids)), stop_reason=reason)
        traj.steps.append(step)
        if action.sql and action.error is None and action.kind in ("sql", "solution"):
            step.result = self.sandbox.execute(self.task.db_path, action.sql)
        turns_left = self.max_turns - len(traj.steps)
        if action.kind == "solution" and action.error is None and not step.truncated:
            return self.end("solution")
        if eos:
            return self.end("eos")
        if turns_left == 0:
            return self.end("max_turns")
        error = action.error or ("cut off by the token limit" if step.truncated else None)
        step.observation = self.protocol.observation_text(step.result, error, turns_left, self.fmt)
        return step.observation

    def add_observation(self, token_ids: Sequence[int]) -> None:
        """Append the tokens of the last turn's observation (never trained)."""
        step = self.trajectory.steps[-1]
        begin = len(self.trajectory.token_ids)
        self.trajectory.token_ids.extend(int(t) for t in token_ids)
        self.trajectory.logprobs.extend([0.0] * len(token_ids))
        step.observation_span = (begin, len(self.trajectory.token_ids))

    def end(self, reason: str) -> None:
        """End the episode (``solution``, ``eos``, ``max_turns`` or ``budget``); an unsent observation is dropped."""
        self.done = True
        self.trajectory.end_reason = reason
        if reason == "budget" and self.trajectory.steps and self.trajectory.steps[-1].observation_span is None:
            self.trajectory.steps[-1].observation = None

    @property
    def response_mask(self) -> list[int]:
        """1 on generated tokens, 0 on observation tokens."""
        mask = [0] * len(self.trajectory.token_ids)
        for step in self.trajectory.steps:
            mask[step.span[0] : step.span[1]] = [1] * (step.span[1] - step.span[0])
        return mask

    def score(self, config: RewardConfig) -> EpisodeScore:
        """``R``, ``r_t`` and links, as FineStep's trainer scores an episode (the gold query runs in the sandbox)."""
        return score_episodes([self.trajectory], self.sandbox, config)[0]

    def token_rewards(self, score: EpisodeScore, reader: RewardReader) -> list[float]:
        """Per-token rewards of the response in the verl layout: ``r_t`` at each step's last token, ``R`` at the last."""
        steps = self.trajectory.steps
        solved = bool(steps) and steps[-1].reward_view().kind == "solution"
        return encode_token_rewards(
            self.n_tokens, [s.span[1] for s in steps], score.process_reward, score.outcome, solved, reader
        )
