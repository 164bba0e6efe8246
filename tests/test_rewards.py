"""Process rules, outcome reward and logical links, on hand-made and real Spider databases."""

from __future__ import annotations

from pathlib import Path

import pytest

from finestep.config import ConfigError, apply_overrides
from finestep.data import load_spider
from finestep.rewards import (
    LinkConfig,
    OutcomeConfig,
    ProcessConfig,
    RewardConfig,
    RewardStep,
    is_grounded,
    outcome_reward,
    process_rewards,
    step_links,
)
from finestep.sql.analysis import canonical_sql, query_literals, sql_similarity
from finestep.sql.executor import SandboxLimits, execute
from finestep.sql.schema import schema_columns

GOLD = "SELECT name FROM player WHERE goals = 7"


def run(db: Path, *actions: tuple[str, str]) -> list[RewardStep]:
    return [RewardStep(kind, sql, execute(db, sql) if sql else None) for kind, sql in actions]  # type: ignore[arg-type]


def rewards(db: Path, steps: list[RewardStep], config: ProcessConfig | None = None) -> list[dict[str, float]]:
    gold = execute(db, GOLD)
    return process_rewards(steps, config or ProcessConfig(), schema_columns(db), gold.rows, GOLD)


def test_canonical_form_ignores_case_quoting_whitespace_and_semicolon() -> None:
    assert canonical_sql("select A from t") == canonical_sql("SELECT a FROM T;")
    assert canonical_sql('SELECT "A"  FROM [t]') == canonical_sql("select a from t")
    assert canonical_sql("SELECT a FROM t WHERE x = 'Rome'") != canonical_sql("SELECT a FROM t WHERE x = 'rome'")
    assert canonical_sql("SELECT a FROM t WHERE x = 1") != canonical_sql("SELECT a FROM t WHERE x = 2")
    assert canonical_sql("selec a frm t") == canonical_sql("SELEC A FRM T;")  # unparseable: text fallback


def test_similarity_bounds() -> None:
    assert sql_similarity("SELECT a FROM t", "select A from T;") == 1.0
    # tokens: select nme from player | select name from player -> 3 of 4 match: 2*3/8
    assert sql_similarity("SELECT nme FROM player", "SELECT name FROM player") == pytest.approx(0.75)
    assert sql_similarity("SELECT a FROM t", "WITH x AS (SELECT 1) SELECT count(*) FROM x JOIN y") < 0.6


def test_every_rule_on_a_hand_written_trajectory(db: Path) -> None:
    steps = run(
        db,
        ("sql", "SELECT name, goals FROM player"),  # executes
        ("sql", "SELECT nme FROM player"),  # error + ungrounded
        ("sql", "select NAME, goals from PLAYER;"),  # repeat of step 0
        ("sql", "SELECT name FROM player WHERE goals = 7"),  # first gold match
        ("sql", "SELECT name FROM player WHERE goals BETWEEN 6 AND 8"),  # gold again: no second progress
        ("none", ""),  # no action
        ("solution", "SELECT nme FROM player"),  # the solution gets only `format`
    )
    table = rewards(db, steps)
    off = {"reveals_gold": 0.0, "repairs": 0.0}  # off by default (values 0)
    assert table[0] == {"executes": 0.1, "redundant": 0.0, "grounded": 0.0, "progress": 0.0, "format": 0.0, **off}
    assert table[1] == {"executes": -0.2, "redundant": 0.0, "grounded": -0.2, "progress": 0.0, "format": 0.0, **off}
    assert table[2] == {"executes": 0.1, "redundant": -0.3, "grounded": 0.0, "progress": 0.0, "format": 0.0, **off}
    assert table[3] == {"executes": 0.1, "redundant": 0.0, "grounded": 0.0, "progress": 0.2, "format": 0.0, **off}
    assert table[4]["progress"] == 0.0
    assert table[5] == {"executes": 0.0, "redundant": 0.0, "grounded": 0.0, "progress": 0.0, "format": -0.5, **off}
    assert table[6] == dict.fromkeys(table[6], 0.0)


def test_reveals_gold_credits_the_first_look_up_of_a_value_the_question_does_not_spell(db: Path) -> None:
    gold = "SELECT name FROM player WHERE team_id IN (SELECT id FROM team WHERE city = 'Rome')"
    steps = run(
        db,
        ("sql", "SELECT name FROM team"),  # shows team names, not the city
        ("sql", "SELECT city FROM team"),  # the first to show 'Rome'
        ("sql", "SELECT DISTINCT city FROM team"),  # shows it again: nothing new
        ("sql", "SELECT nme FROM team"),  # fails
        ("sql", "SELECT name, city FROM team"),  # runs, a near-edit of the failed query: a repair
        ("solution", gold),
    )
    config = ProcessConfig(reveals_gold=0.3, repairs=0.2)

    def table(question: str) -> list[dict[str, float]]:
        return process_rewards(steps, config, schema_columns(db), execute(db, gold).rows, gold, context_text=question)

    shown = table("Which players play for the team of the Italian capital?")
    assert [row["reveals_gold"] for row in shown] == [0.0, 0.3, 0.0, 0.0, 0.0, 0.0]
    assert [row["repairs"] for row in shown] == [0.0, 0.0, 0.0, 0.0, 0.2, 0.0]
    # a value the question writes out needs no look-up
    assert all(row["reveals_gold"] == 0.0 for row in table("Which players play for the team of Rome?"))
    # a LIKE pattern is revealed by any value of its shape ('R_m%': R, one character, m, anything)
    like = "SELECT count(*) FROM team WHERE city LIKE 'R_m%'"
    values = process_rewards(steps, config, None, execute(db, like).rows, like, context_text="?")
    assert [row["reveals_gold"] for row in values] == [0.0, 0.3, 0.0, 0.0, 0.0, 0.0]


def test_timeout_and_weights(db: Path) -> None:
    runaway = "WITH RECURSIVE r(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM r) SELECT count(*) FROM r"
    steps = [RewardStep("sql", runaway, execute(db, runaway, SandboxLimits(timeout_s=0.2)))]
    assert rewards(db, steps)[0]["executes"] == -0.3
    half = apply_overrides(ProcessConfig(), ["weights.executes=0.5", "weights.grounded=0"])
    table = rewards(db, run(db, ("sql", "SELECT nme FROM player")), half)[0]
    assert table["executes"] == pytest.approx(0.5 * -0.2) and table["grounded"] == 0.0


def test_outcome_reward_cases(db: Path) -> None:
    gold = execute(db, GOLD).rows
    cfg = OutcomeConfig()
    assert outcome_reward(run(db, ("solution", "SELECT name FROM player WHERE goals > 5 AND goals < 8")), gold, GOLD, cfg) == 1.0
    assert outcome_reward(run(db, ("solution", "SELECT name FROM player")), gold, GOLD, cfg) == 0.0
    assert outcome_reward(run(db, ("sql", "SELECT 1")), gold, GOLD, cfg) == -1.0  # never submitted
    truncated = [RewardStep("solution", GOLD, execute(db, GOLD), truncated=True)]
    assert outcome_reward(truncated, gold, GOLD, cfg) == -1.0
    # an erroring solution never matches, even an empty gold result
    empty_gold = "SELECT name FROM player WHERE goals > 100"
    assert outcome_reward(run(db, ("solution", "SELECT nope FROM player")), (), empty_gold, cfg) == cfg.error
    assert outcome_reward(run(db, ("solution", "SELECT name FROM player WHERE 0")), (), empty_gold, cfg) == 1.0


def test_links_repairs_and_uses(db: Path) -> None:
    steps = run(
        db,
        ("sql", "SELECT nme FROM player"),  # 0: fails
        ("sql", "SELECT DISTINCT city FROM team"),  # 1: shows 'Oslo', 'Rome', ...
        ("sql", "SELECT name FROM player"),  # 2: near-edit of 0 -> repairs 0
        ("sql", "SELECT id FROM team WHERE city = 'Rome'"),  # 3: 'Rome' first seen in 1 -> uses 1
        ("solution", "SELECT name FROM player WHERE team_id IN (SELECT id FROM team WHERE city = 'Oslo')"),
    )
    # 'Oslo' is in the question, so the solution's literal did not come from an observation
    assert step_links(steps, LinkConfig(), "Who plays for the team from Oslo?") == [[], [], [0], [1], []]
    assert step_links(steps, LinkConfig(link_threshold=0.9), "") == [[], [], [], [1], [1]]


def test_literals() -> None:
    assert query_literals("SELECT * FROM t WHERE a = 'x' AND b > 42 AND c = \"Joe\" LIMIT 10") == {"x", "42", "Joe"}


def test_reward_config_errors_name_the_key() -> None:
    with pytest.raises(ConfigError, match=r"process\.weights: unknown rule 'speed'"):
        apply_overrides(RewardConfig(), ["process.weights.speed=1"])
    with pytest.raises(ConfigError, match=r"process\.redundant: expected a number, got 'lots'"):
        apply_overrides(RewardConfig(), ["process.redundant=lots"])
    with pytest.raises(ConfigError, match=r"links\.threshold: unknown key"):
        apply_overrides(RewardConfig(), ["links.threshold=0.5"])


def test_spider_gold_queries_execute_and_are_grounded(spider: Path) -> None:
    bench = load_spider(spider)
    for task in bench.available:
        step = RewardStep("sql", task.gold_sql, execute(task.db_path, task.gold_sql))
        table = process_rewards([step], ProcessConfig(), schema_columns(task.db_path))[0]
        assert table["executes"] == 0.1 and table["grounded"] == 0.0, task.gold_sql


def test_spider_missing_column_and_repeat(spider: Path) -> None:
    db = spider / "database" / "concert_singer" / "concert_singer.sqlite"
    assert not is_grounded("SELECT nationality FROM singer", schema_columns(db))
    assert not is_grounded("SELECT name FROM singers", schema_columns(db))
    steps = [RewardStep("sql", q, execute(db, q)) for q in ("SELECT count(*) FROM singer", "select COUNT(*) from Singer;")]
    table = process_rewards(steps, ProcessConfig(), schema_columns(db))
    assert [t["redundant"] for t in table] == [0.0, -0.3]
    missing = RewardStep("sql", "SELECT nationality FROM singer", execute(db, "SELECT nationality FROM singer"))
    assert process_rewards([missing], ProcessConfig(), schema_columns(db))[0] == {
        "executes": -0.2, "redundant": 0.0, "grounded": -0.2, "progress": 0.0, "format": 0.0, "reveals_gold": 0.0,
        "repairs": 0.0,
    }  # fmt: skip


def test_running_a_failed_query_again_is_not_a_repair(db: Path) -> None:
    steps = run(db, ("sql", "SELECT nme FROM player"), ("sql", "select NME from player;"), ("sql", "SELECT name FROM player"))
    # step 1 repeats step 0 (same canonical form); step 2 edits it and repairs both the failure and the repeat
    assert step_links(steps, LinkConfig()) == [[], [], [0, 1]]


def test_a_registered_rule_reaches_config_weights_scores_and_verl_bounds(db: Path) -> None:
    from finestep.integrations.verl_layout import max_process_reward
    from finestep.rewards import (
        PROCESS_RULES,
        ProcessConfig,
        RewardStep,
        process_rewards,
        register_rule,
        rule_names,
    )

    base_bound = max_process_reward(ProcessConfig())
    assert base_bound == pytest.approx(0.1 + 0.2)  # executes_ok + progress: the positive values

    @register_rule("counts_rows", value=0.05)
    def counts_rows(t, ctx):
        return ctx.steps[t].kind == "sql" and "count(" in (ctx.steps[t].sql or "").lower()

    try:
        assert rule_names()[-1] == "counts_rows" and ProcessConfig().weights["counts_rows"] == 1.0
        config = ProcessConfig(weights={"counts_rows": 2.0})  # known now: no "unknown rule"
        steps = [RewardStep("sql", "SELECT count(*) FROM player", execute(db, "SELECT count(*) FROM player")),
                 RewardStep("solution", "SELECT count(*) FROM player")]  # fmt: skip
        values = process_rewards(steps, config)
        assert values[0]["counts_rows"] == pytest.approx(0.1) and values[0]["executes"] == 0.1
        assert values[1]["counts_rows"] == 0.0  # a solution step gets only the format rule
        assert max_process_reward(config) == pytest.approx(base_bound + 0.1)
        with pytest.raises(ValueError, match="already registered"):
            register_rule("counts_rows", value=1.0)(counts_rows)
    finally:
        PROCESS_RULES.pop("counts_rows")
    with pytest.raises(ValueError, match="unknown rule 'counts_rows'.*plugin must be registered first"):
        ProcessConfig(weights={"counts_rows": 2.0})
