"""The environment: reset/step semantics, end reasons, the token budget, text mode, and the registry (a user's
environment drives the rollout)."""

from __future__ import annotations

from pathlib import Path

import pytest

from finestep.agent.generators import ScriptedGenerator
from finestep.agent.protocol import get_protocol
from finestep.agent.rollout import RolloutConfig, rollout
from finestep.agent.trajectory import END_REASONS
from finestep.data.task import Task
from finestep.env import ENVIRONMENTS, SqlEnv, UnknownEnvironmentError, make_environment, register_environment
from finestep.models import build_tiny_model, load_tokenizer
from tests.conftest import make_db


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory: pytest.TempPathFactory):
    corpus = ["SELECT name FROM player WHERE goals = 7", "Who scored 7 goals?", "<sql></sql><solution>"] * 30
    return load_tokenizer(build_tiny_model(corpus, tmp_path_factory.mktemp("tiny") / "model", vocab_size=400))


@pytest.fixture
def task(tmp_path: Path) -> Task:
    db = make_db(tmp_path / "league.sqlite")
    return Task(id="q", index=0, question="Who scored 7 goals?", db_id="league", db_path=db,
                gold_sql="SELECT name FROM player WHERE goals = 7")  # fmt: skip


def test_text_mode_episode_ends_with_the_solution(task: Task) -> None:
    env = SqlEnv("tags", max_turns=3)
    messages = env.reset(task)
    assert [m["role"] for m in messages] == ["system", "user"] and "Who scored 7 goals?" in messages[1]["content"]
    out = env.step("<sql>SELECT name FROM player WHERE goals = 7</sql>")
    assert not out.done and out.end_reason is None and out.observation_ids == ()
    assert out.observation == "\n<observation>\n| name |\n|---|\n| Cid |\n| Dee |\n(2 rows)\nTurns left: 2\n</observation>\n"
    assert out.step.result.rows == (("Cid",), ("Dee",)) and out.step.observation == out.observation
    out = env.step("<solution>SELECT name FROM player WHERE goals = 7</solution>")
    assert (out.observation, out.done, out.end_reason) == (None, True, "solution")
    assert env.trajectory.end_reason == "solution" and len(env.trajectory.steps) == 2
    with pytest.raises(RuntimeError, match="ended"):
        env.step("<sql>SELECT 1</sql>")


@pytest.mark.parametrize(
    ("turns", "stop_reasons", "reason"),
    [
        (["no action", "<sql>SELECT 1</sql>"], ["stop", "stop"], "max_turns"),
        (["<sql>SELECT 1</sql>", "done"], ["stop", "eos"], "eos"),
        (["<solution>SELECT 1</solution>"], ["length"], "max_turns"),  # a truncated solution is no solution
    ],
)
def test_end_reasons(task: Task, turns: list[str], stop_reasons: list[str], reason: str) -> None:
    env = SqlEnv("tags", max_turns=len(turns))
    env.reset(task)
    outs = [env.step(text, stop_reason=stop) for text, stop in zip(turns, stop_reasons)]
    assert [o.done for o in outs] == [False] * (len(turns) - 1) + [True]
    assert outs[-1].end_reason == reason == env.trajectory.end_reason and reason in END_REASONS


def test_format_errors_are_answered_with_a_reminder(task: Task) -> None:
    env = SqlEnv("json", max_turns=3)
    env.reset(task)
    out = env.step('<tool_call>{"name": "drop_table"}</tool_call>')
    assert out.step.action.kind == "none" and out.step.result is None
    assert out.observation.startswith("\n<tool_response>\nFormat error: unknown tool 'drop_table'; call exactly one")
    out = env.step("<tool_call>{oops", stop_reason="length")
    assert "Format error: unclosed <tool_call> tag" in out.observation and out.step.truncated


def test_token_mode_appends_observations_and_applies_the_budget(task: Task, tokenizer) -> None:
    env = SqlEnv("tags", tokenizer=tokenizer, max_turns=5, max_total_tokens=10_000)
    env.reset(task)
    traj = env.trajectory
    assert traj.prompt_length == len(traj.token_ids) > 0
    text = "<sql>SELECT name FROM player WHERE goals = 7</sql>"
    out = env.step(text)  # tokens encoded from the text, as SFT replays a turn
    turn_ids = tokenizer(text, add_special_tokens=False).input_ids
    assert out.step.span == (traj.prompt_length, traj.prompt_length + len(turn_ids))
    assert list(out.observation_ids) == tokenizer(out.observation, add_special_tokens=False).input_ids
    assert out.step.observation_span == (out.step.span[1], len(traj.token_ids))
    assert env.tokens_left == 10_000 - traj.n_used
    # a budget the next observation would exhaust ends the episode and drops the observation
    tight = SqlEnv("tags", tokenizer=tokenizer, max_turns=5, max_total_tokens=len(turn_ids) + 3)
    tight.reset(task, prompt_ids=[1, 2, 3])
    assert tight.trajectory.token_ids == [1, 2, 3]
    out = tight.step(text)
    assert (out.done, out.end_reason, out.observation, out.step.observation) == (True, "budget", None, None)
    assert tight.trajectory.token_ids == [1, 2, 3, *turn_ids]


def test_registry(task: Task) -> None:
    assert ENVIRONMENTS["sql"] is SqlEnv
    assert isinstance(make_environment("sql", max_turns=2), SqlEnv)
    with pytest.raises(UnknownEnvironmentError, match="registered environments: .*sql"):
        make_environment("nope")
    with pytest.raises(ValueError, match="already registered"):
        register_environment("sql")(SqlEnv)


@register_environment("sql_no_limit_test")
class CountingEnv(SqlEnv):
    """A user's environment: the SQL environment that also counts its steps (registered for the test below)."""

    steps_taken = 0

    def step(self, text, token_ids=None, logprobs=None, stop_reason="stop"):
        CountingEnv.steps_taken += 1
        return super().step(text, token_ids, logprobs, stop_reason)


def test_a_registered_environment_drives_the_rollout(task: Task, tokenizer) -> None:
    script = ["<sql>SELECT count(*) FROM player</sql>", "<solution>SELECT name FROM player WHERE goals = 7</solution>"]
    generator = ScriptedGenerator(tokenizer, lambda i, t, context: script[t])
    config = RolloutConfig(group_size=2, max_turns=3, max_new_tokens=64, env="sql_no_limit_test")
    before = CountingEnv.steps_taken
    trajectories = rollout([task], generator, get_protocol("tags"), make_environment("sql").sandbox, config)
    assert CountingEnv.steps_taken - before == 4
    assert [t.end_reason for t in trajectories] == ["solution", "solution"]
    assert trajectories[0].token_ids == trajectories[1].token_ids and trajectories[1].sample == 1
