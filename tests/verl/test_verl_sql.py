"""The SQL step of the verl agent loop against a shared Spider database (no model: scripted assistant turns).

Runs without verl (the environment is ``finestep.integrations.verl_sql``); skipped when the Spider data is
absent, except under CI=true (the ``spider`` fixture).
"""

from __future__ import annotations

import numpy as np
import pytest

from finestep.credit import CreditConfig
from finestep.integrations.verl_layout import RewardReader, decode_layout
from finestep.integrations.verl_sql import SqlEpisode, task_from_extra_info
from finestep.rewards.config import RewardConfig

REWARDS = RewardConfig()
READER = RewardReader.from_rewards(REWARDS)


@pytest.fixture
def concert(spider):
    extra = {"db_path": str(spider / "database" / "concert_singer" / "concert_singer.sqlite"),
             "gold_sql": "SELECT count(*) FROM singer", "question": "How many singers do we have?",
             "task_id": "dev-0", "index": 0}  # fmt: skip
    return task_from_extra_info(extra)


def _turn(episode: SqlEpisode, text: str, n_tokens: int = 4, **flags: bool) -> str | None:
    return episode.add_turn(list(range(n_tokens)), text, **flags)


def test_sql_step_observation_and_process_rewards(concert):
    episode = SqlEpisode(concert, "tags", max_turns=5)
    obs = _turn(episode, "I count the singers.\n<sql>SELECT count(*) FROM singer</sql>")
    assert obs == "\n<observation>\n| count(*) |\n|---|\n| 6 |\n(1 row)\nTurns left: 4\n</observation>\n"
    episode.add_observation([7] * 3)
    obs = _turn(episode, "<sql>SELECT count(*) FROM singers</sql>", n_tokens=5)
    assert obs.startswith("\n<observation>\nError (schema): no such table: singers")
    episode.add_observation([7] * 2)
    assert _turn(episode, "<solution>SELECT count(*) FROM singer</solution>", n_tokens=3) is None
    assert episode.done and episode.trajectory.end_reason == "solution"

    score = episode.score(REWARDS)
    assert score.outcome == 1.0
    # executes +0.1 and progress +0.2 (first match of the gold result); executes -0.2 and grounded -0.2
    # (no table singers); the solution step gets only the format rule
    assert score.process_reward == [0.3, -0.4, 0.0]
    assert episode.response_mask == [1] * 4 + [0] * 3 + [1] * 5 + [0] * 2 + [1] * 3
    rewards = episode.token_rewards(score, READER)
    assert rewards[3] == 0.3 and rewards[11] == -0.4 and rewards[16] == 1.0
    assert sum(1 for r in rewards if r) == 3

    # what the estimator reads back from these (float32) tensors is what the episode scored
    layout = decode_layout(np.array([rewards], dtype=np.float32), np.array([episode.response_mask]),
                           np.array(["dev-0"], dtype=object), READER)  # fmt: skip
    assert layout.batch.process_reward.tolist() == [0.3, -0.4, 0.0]
    assert layout.batch.outcome.tolist() == [1.0] and layout.batch.is_solution.tolist() == [False, False, True]
    assert layout.spans.tolist() == [[0, 4], [7, 12], [14, 17]]


def test_episode_without_solution_ends_at_the_turn_limit(concert):
    episode = SqlEpisode(concert, "tags", max_turns=2)
    obs = _turn(episode, "<sql>SELECT name FROM singer WHERE age > 100</sql>")
    assert "(no rows)" in obs and "Turns left: 1" in obs
    episode.add_observation([7])
    assert _turn(episode, "<sql>SELECT name FROM singer WHERE age > 100</sql>") is None
    assert episode.trajectory.end_reason == "max_turns"
    score = episode.score(REWARDS)
    assert score.outcome == -1.0 and score.process_reward == [0.1, pytest.approx(-0.2)]  # +0.1 ok, -0.3 repeat
    rewards = episode.token_rewards(score, READER)
    assert rewards[-1] == pytest.approx(-1.2)
    layout = decode_layout(np.array([rewards], dtype=np.float32), np.array([episode.response_mask]),
                           np.array(["t"], dtype=object), READER)  # fmt: skip
    assert layout.batch.process_reward.tolist() == [0.1, -0.2] and layout.batch.outcome.tolist() == [-1.0]
    assert not layout.batch.is_solution.any()


def test_format_errors_and_truncated_turns(concert):
    episode = SqlEpisode(concert, "tags", max_turns=3)
    obs = _turn(episode, "<sql>SELECT count(*) FROM sing", truncated=True)
    assert "Format error: unclosed <sql> tag" in obs
    episode.add_observation([7])
    obs = _turn(episode, "I think the answer is 6.")
    assert "Format error: no action" in obs
    episode.add_observation([7])
    assert _turn(episode, "done", eos=True) is None and episode.trajectory.end_reason == "eos"
    score = episode.score(REWARDS)
    assert score.outcome == -1.0 and score.process_reward == [-0.5, -0.5, -0.5]
    assert episode.trajectory.steps[0].truncated


def test_budget_end_drops_the_unsent_observation(concert):
    episode = SqlEpisode(concert, "tags", max_turns=3)
    assert _turn(episode, "<sql>SELECT 1</sql>") is not None
    episode.end("budget")
    assert episode.trajectory.steps[-1].observation is None and episode.response_mask == [1, 1, 1, 1]


def test_extra_info_is_checked():
    with pytest.raises(ValueError, match=r"extra_info lacks \['gold_sql'\]"):
        task_from_extra_info({"db_path": "x.sqlite"})


def test_credit_of_a_scored_group(concert):
    """Two scripted episodes of one task go through the layout and FineStep's estimator: the correct one wins."""
    import torch

    from finestep.integrations.verl_layout import token_advantages

    good, bad = SqlEpisode(concert, max_turns=3), SqlEpisode(concert, max_turns=2)
    _turn(good, "<sql>SELECT count(*) FROM singer</sql>")
    good.add_observation([7, 7])
    _turn(good, "<solution>SELECT count(*) FROM singer</solution>")
    _turn(bad, "<sql>SELECT count(*) FROM singers</sql>")
    bad.add_observation([7])
    _turn(bad, "<solution>SELECT name FROM singer</solution>")
    width = max(good.n_tokens, bad.n_tokens)
    rewards = torch.zeros((2, width))
    mask = torch.zeros((2, width), dtype=torch.int64)
    for row, ep in enumerate((good, bad)):
        rewards[row, : ep.n_tokens] = torch.tensor(ep.token_rewards(ep.score(REWARDS), READER))
        mask[row, : ep.n_tokens] = torch.tensor(ep.response_mask)
    adv = token_advantages(rewards, mask, np.array(["dev-0", "dev-0"], dtype=object), CreditConfig(), READER)
    assert adv[0][mask[0] == 1].min() > 0 > adv[1][mask[1] == 1].max()
