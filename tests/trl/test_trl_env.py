"""The SQL environment behind TRL's tool interface, the tool chat template, and the replay of TRL completions as
FineStep episodes (no generation: token sequences are built the way TRL's tool loop builds them)."""

from __future__ import annotations

import inspect

import pytest

pytest.importorskip("trl")

from trl.chat_template_utils import is_chat_template_prefix_preserving, parse_response, supports_tool_calling

from finestep.agent.trajectory import END_EOS, END_SOLUTION
from finestep.integrations.trl import credit_config, tool_tokenizer
from finestep.integrations.trl_env import (
    ENDED,
    SOLUTION_SUBMITTED,
    SqlToolEnv,
    sql_environment_factory,
    task_rows,
)
from finestep.integrations.trl_layout import mask_runs, replay_episode
from finestep.models import load_tokenizer
from finestep.rewards import score_episodes
from tests.trl.conftest import SETTINGS


def test_trl_sees_exactly_the_two_tools() -> None:
    # TRL exposes the public functions of the environment's class other than reset and get_reward
    names = [n for n, _ in inspect.getmembers(SqlToolEnv, predicate=inspect.isfunction)
             if n not in ("reset", "get_reward") and not n.startswith("_")]  # fmt: skip
    assert names == ["execute_sql", "submit_solution"]


def test_tools_answer_as_our_environment_and_the_episode_scores_through_the_one_path(trl_world) -> None:
    task = trl_world.train[0]
    env = sql_environment_factory(trl_world.train, SETTINGS)()
    with pytest.raises(ValueError, match="task_id"):
        env.reset(task_id="no-such-task")
    env.reset(task_id=task.id)
    answer = env.execute_sql("SELECT count(*) FROM nonexistent_table")
    assert answer.startswith("Error (") and answer.endswith("Turns left: 2")
    first = env.trajectory.steps[0]
    # the same observation our SqlEnv shows, less the <tool_response> wrapper the chat template adds
    assert env.trajectory.steps[0].result is not None and not first.result.ok
    assert env.submit_solution(task.gold_sql) == SOLUTION_SUBMITTED
    assert env.done and env.trajectory.end_reason == END_SOLUTION
    assert env.execute_sql("SELECT 1") == ENDED and len(env.trajectory.steps) == 2
    assert env.get_reward() == 1.0 == score_episodes([env.trajectory], SETTINGS.sandbox(), SETTINGS.rewards)[0].outcome


def test_the_turn_budget_is_the_environments(trl_world) -> None:
    env = SqlToolEnv({t.id: t for t in trl_world.train}, SETTINGS)
    env.reset(task_id=trl_world.train[1].id)
    answers = [env.execute_sql("SELECT 1") for _ in range(SETTINGS.max_turns)]
    assert answers[-1].startswith("No turns left") and env.done
    assert env.get_reward() == -1.0  # no solution


def test_rows_carry_our_prompt_and_the_task_id(trl_world) -> None:
    rows = task_rows(trl_world.train, SETTINGS)
    assert [r["task_id"] for r in rows] == [t.id for t in trl_world.train]
    assert rows[0]["prompt"] == SETTINGS.make_env().prompt(trl_world.train[0])
    with pytest.raises(ValueError, match="twice"):
        task_rows(trl_world.train[:1] * 2, SETTINGS)


def test_credit_settings_come_in_one_argument_or_config_section(trl_world, trl_model, tmp_path) -> None:
    from datasets import Dataset

    from finestep.integrations.trl import FineStepGRPOConfig, FineStepGRPOTrainer

    args = FineStepGRPOConfig(output_dir=str(tmp_path), num_generations=2, per_device_train_batch_size=2,
                              max_steps=1, report_to="none", bf16=False, credit={"estimator": "gigpo", "omega": 0.5})  # fmt: skip
    kwargs = {"environment_factory": sql_environment_factory(trl_world.train, SETTINGS),
              "train_dataset": Dataset.from_list(task_rows(trl_world.train, SETTINGS)),
              "processing_class": load_tokenizer(trl_model)}  # fmt: skip
    trainer = FineStepGRPOTrainer(str(trl_model), args, **kwargs)
    assert (trainer.credit.estimator, trainer.credit.omega, trainer.credit.eps) == ("gigpo", 0.5, 1e-4)
    with pytest.raises(ValueError, match="twice"):
        FineStepGRPOTrainer(str(trl_model), args, credit="grpo", **kwargs)
    with pytest.raises(ValueError, match="reward_funcs"):
        FineStepGRPOTrainer(str(trl_model), args, reward_funcs=[lambda **_: [0.0]], **kwargs)


def test_credit_settings_are_checked() -> None:
    assert credit_config("grpo").estimator == "grpo"
    assert credit_config(None).eps == 1e-4 and not credit_config(None).mask_truncated_steps
    assert credit_config({"estimator": "finestep", "gamma_o": 1.0}).gamma_o == 1.0
    with pytest.raises(ValueError, match="gamma_x"):
        credit_config({"gamma_x": 1.0})
    with pytest.raises(ValueError, match="registered estimators"):
        credit_config("no_such_estimator")


def test_the_tool_template_is_what_trl_needs(trl_model) -> None:
    tokenizer = tool_tokenizer(load_tokenizer(trl_model))
    assert supports_tool_calling(tokenizer) and is_chat_template_prefix_preserving(tokenizer)
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": "Q"}], add_generation_prompt=True,
                                           tokenize=True, return_dict=True)["input_ids"]  # fmt: skip
    turn = 'Check.\n<tool_call>\n{"name": "execute_sql", "arguments": {"sql": "SELECT 1"}}\n</tool_call><|im_end|>'
    parsed = parse_response(tokenizer, tokenizer(turn, add_special_tokens=False)["input_ids"], prefix=prompt)
    assert parsed["tool_calls"] == [{"type": "function", "function": {"name": "execute_sql",
                                                                      "arguments": {"sql": "SELECT 1"}}}]


def test_replay_makes_one_step_per_turn_and_closes_tool_output(trl_world, trl_model) -> None:
    """A completion laid out as TRL's loop lays it out: turn, tool suffix, turn, suffix, closing turn."""
    tokenizer = tool_tokenizer(load_tokenizer(trl_model))
    task = trl_world.train[0]
    env = SqlToolEnv({task.id: task}, SETTINGS)
    env.reset(task_id=task.id)
    eos = tokenizer.convert_tokens_to_ids("<|im_end|>")

    def turn(name: str, sql: str) -> tuple[list[int], dict]:
        call = {"type": "function", "function": {"name": name, "arguments": {"sql": sql}}}
        text = f'<tool_call>\n{{"name": "{name}", "arguments": {{"sql": "{sql}"}}}}\n</tool_call>'
        return tokenizer(text, add_special_tokens=False)["input_ids"] + [eos], {"role": "assistant",
                                                                               "content": "", "tool_calls": [call]}

    def suffix(text: str) -> list[int]:
        return tokenizer("\n<|im_start|>user\n<tool_response>\n" + text + "\n</tool_response><|im_end|>\n"
                         "<|im_start|>assistant\n", add_special_tokens=False)["input_ids"]  # fmt: skip

    ids, mask, messages = [], [], []
    for name, sql in (("execute_sql", "SELECT 1"), ("submit_solution", task.gold_sql)):
        tokens, message = turn(name, sql)
        answer = env.execute_sql(sql) if name == "execute_sql" else env.submit_solution(sql)
        ids += tokens + suffix(answer)
        mask += [1] * len(tokens) + [0] * len(suffix(answer))
        messages += [message, {"role": "tool", "name": name, "content": answer}]
    ids, mask = ids + [eos], mask + [1]  # the closing turn after the confirmation
    messages.append({"role": "assistant", "content": ""})
    replayed = replay_episode(task, [7, 8, 9], ids, mask, messages, SETTINGS, [eos], tokenizer)
    traj = replayed.trajectory
    assert [s.action.kind for s in traj.steps] == ["sql", "solution"] and traj.end_reason == END_SOLUTION
    assert replayed.extra_turns == 1 and traj.steps[-1].span[1] == 3 + len(ids)  # the closing turn joins the last
    runs = mask_runs(mask)
    assert traj.steps[0].span == (3 + runs[0][1], 3 + runs[0][2])
    assert replayed.closed == [(s, e) for v, s, e in runs if v == 0]
    assert score_episodes([traj], SETTINGS.sandbox(), SETTINGS.rewards)[0].outcome == env.get_reward() == 1.0
    # a turn without a tool call ends the episode as our environment does (end-of-sequence, no action)
    plain = replay_episode(task, [7], [5, 6, eos], [1, 1, 1], [{"role": "assistant", "content": "hi"}], SETTINGS,
                           [eos])  # fmt: skip
    assert plain.trajectory.end_reason == END_EOS and plain.trajectory.steps[0].action.error == "no action"
    with pytest.raises(ValueError, match="assistant messages"):
        replay_episode(task, [7], [5, eos], [1, 1], [], SETTINGS, [eos])

