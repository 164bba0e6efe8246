"""Rollouts: a scripted agent drives full multi-turn episodes against a real Spider database; spans and
token accounting are exact; SFT, agent-eval and ask run end to end on a tiny model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from finestep.agent.generators import ScriptedGenerator
from finestep.agent.protocol import get_protocol
from finestep.agent.rollout import RolloutConfig, rollout
from finestep.cli import main
from finestep.data import load_spider
from finestep.models import build_tiny_model, load_tokenizer
from finestep.rewards import RewardConfig, score_episodes
from finestep.rewards.episodes import episode_metrics
from finestep.sql.executor import SqlSandbox


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    corpus = ["SELECT count(*) FROM singer", "How many singers do we have?", "SELECT name FROM singer"] * 30
    return build_tiny_model(corpus, tmp_path_factory.mktemp("tiny") / "model", vocab_size=400)


def test_scripted_agent_runs_a_multi_turn_episode_on_spider(spider: Path, tiny: Path) -> None:
    task = load_spider(spider).tasks[0]  # "How many singers do we have?" on concert_singer
    turns = {
        0: ["I should look at the table.\n<sql>SELECT count(*) FROM singr</sql>",
            "Typo. <sql>SELECT count(*) FROM singer</sql>",
            "<sql>select COUNT(*) from SINGER;</sql>",
            "<solution>SELECT count(*) FROM singer</solution>"],
        1: ["<solution>SELECT 7</solution>"],
        2: ["no action at all", "still nothing"],
    }  # fmt: skip
    generator = ScriptedGenerator(load_tokenizer(tiny), lambda i, t, context: turns[i][t])
    config = RolloutConfig(group_size=3, max_turns=4, max_new_tokens=64, max_total_tokens=2000)
    sandbox = SqlSandbox()
    # group_size 3 for one task: sequence i follows script i
    trajectories = rollout([task], generator, get_protocol("tags"), sandbox, config)
    good, wrong, silent = trajectories
    assert [s.action.kind for s in good.steps] == ["sql", "sql", "sql", "solution"]
    assert good.end_reason == "solution" and wrong.end_reason == "solution"
    assert good.steps[0].result.error_kind == "schema" and good.steps[1].result.rows == ((6,),)
    assert "Turns left: 3" in good.steps[0].observation and "no such table: singr" in good.steps[0].observation
    # token accounting: spans and observations tile the sequence after the prompt
    position = good.prompt_length
    for step in good.steps:
        assert step.span[0] == position
        position = step.span[1]
        if step.observation_span is not None:
            assert step.observation_span[0] == position
            position = step.observation_span[1]
    assert position == len(good.token_ids) == len(good.logprobs)
    assert silent.end_reason == "eos" or all(s.action.error == "no action" for s in silent.steps)
    scores = score_episodes(trajectories, sandbox, RewardConfig())
    assert [s.outcome for s in scores] == [1.0, 0.0, -1.0]
    # step 1 repairs step 0 (a near-edit of the failed query); step 2 repeats step 1
    assert scores[0].links[1] == [0] and scores[0].rule_values[2]["redundant"] == -0.3
    metrics = episode_metrics(trajectories, scores)
    assert metrics["ex"] == pytest.approx(100 / 3) and metrics["tool_calls"] == pytest.approx(1.0)
    assert metrics["redundant_rate"] == pytest.approx(1 / 3) and metrics["error_rate"] == pytest.approx(1 / 3)


def test_token_budget_ends_the_episode(spider: Path, tiny: Path) -> None:
    task = load_spider(spider).tasks[0]
    generator = ScriptedGenerator(load_tokenizer(tiny), lambda i, t, c: "<sql>SELECT name FROM singer</sql>")
    config = RolloutConfig(group_size=1, max_turns=10, max_new_tokens=64, max_total_tokens=120)
    (trajectory,) = rollout([task], generator, get_protocol("tags"), SqlSandbox(), config)
    assert trajectory.end_reason == "budget"
    assert trajectory.n_used <= 120 + 64


def test_sft_agent_eval_and_ask_end_to_end(spider: Path, tiny: Path, tmp_path: Path) -> None:
    bench = load_spider(spider)
    data = tmp_path / "sft.jsonl"
    data.write_text("".join(
        json.dumps({"task_id": t.id, "trajectory_id": t.id, "db_path": str(t.db_path), "question": t.question,
                    "steps": [{"kind": "sql", "sql": t.gold_sql}, {"kind": "solution", "sql": t.gold_sql}]}) + "\n"
        for t in bench.available[:6]
    ))  # fmt: skip
    model = tmp_path / "sft-model"
    assert main(["sft", "--model", str(tiny), "--data", str(data), "--out", str(model), "--epochs", "1"]) == 0
    assert (model / "config.json").is_file()
    out = tmp_path / "eval"
    assert main(["agent-eval", "--model", str(model), "--benchmark", "spider", "--data", str(spider), "--limit", "3",
                 "--max-new-tokens", "16", "--max-turns", "2", "--out", str(out)]) == 0  # fmt: skip
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["n_scored"] == 3 and 0.0 <= metrics["ex"] <= 100.0 and "tool_calls" in metrics["efficiency"]
    assert len((out / "predictions.sql").read_text().splitlines()) == 3
    assert len((out / "trajectories.jsonl").read_text().splitlines()) == 3
    assert main(["agent-eval", "--model", str(model), "--benchmark", "spider", "--data", str(spider), "--limit", "2",
                 "--max-new-tokens", "8", "--max-turns", "1", "--out", str(out), "--samples", "3", "--greedy",
                 "--sample-temperature", "0.8"]) == 0  # fmt: skip
    sampled = json.loads((out / "sampled_metrics.json").read_text())
    assert sampled["samples"] == 3 and set(sampled["pass_at_k"]) == {"1", "2", "3"}
    assert len((out / "majority" / "predictions.sql").read_text().splitlines()) == 2
    assert json.loads((out / "metrics.json").read_text())["n_scored"] == 2  # the greedy run, asked with --greedy
    db = spider / "database" / "concert_singer" / "concert_singer.sqlite"
    assert main(["ask", "--model", str(model), "--db", str(db), "How many singers?", "--max-new-tokens", "8",
                 "--max-turns", "1"]) in (0, 1)  # fmt: skip


def test_sampled_eval_majority_vote_and_pass_at_k(spider: Path, tiny: Path, tmp_path: Path) -> None:
    from finestep.eval.agent import run_sampled_eval

    bench = load_spider(spider)  # questions 0 and 1: "SELECT count(*) FROM singer" = 6 on concert_singer
    answers = [
        ["SELECT 7", "SELECT count(*) FROM singer", "SELECT 7", None],  # vote: 7 (wrong); 1 of 4 right
        ["SELECT count(*) FROM singer", "SELECT 7", "SELECT 6", "SELECT nope FROM x"],  # vote: 6; 2 of 4 right
    ]
    script = lambda i, t, c: f"<solution>{answers[i // 4][i % 4]}</solution>" if answers[i // 4][i % 4] else "hm"
    generator = ScriptedGenerator(load_tokenizer(tiny), script)
    config = RolloutConfig(group_size=4, max_turns=1, max_new_tokens=64, max_total_tokens=2000, temperature=0.7)
    result = run_sampled_eval(bench, generator, get_protocol("tags"), config, tmp_path, batch_tasks=2, limit=2)
    assert result.majority.ex == 50.0 and [s.correct for s in result.majority.scores] == [False, True]
    assert result.pass_at_k == pytest.approx({1: 37.5, 2: 100 * (0.5 + 5 / 6) / 2, 4: 100.0})
    assert result.sample_ex == [50.0, 50.0, 50.0, 0.0]
    assert result.efficiency["format_failure_rate"] == pytest.approx(1 / 8)
    assert (tmp_path / "majority" / "predictions.sql").read_text() == "SELECT 7\nSELECT count(*) FROM singer\n"
    saved = json.loads((tmp_path / "sampled_metrics.json").read_text())
    assert saved["majority_ex"] == 50.0 and saved["pass_at_k"]["4"] == 100.0 and saved["temperature"] == 0.7
    assert len((tmp_path / "samples.jsonl").read_text().splitlines()) == 8
