"""Logical links in near-linear time with the pairwise definition's exact output; checkpoint temp folders."""

from __future__ import annotations

import time
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from finestep.data.steps import RewardStep
from finestep.rewards.config import LinkConfig
from finestep.rewards.links import step_links
from finestep.sql.analysis import canonical_sql, query_literals, sql_similarity
from finestep.sql.executor import ErrorKind, ExecutionResult
from finestep.train.checkpoint import remove_stale_temporaries, save_checkpoint


def pairwise_links(steps: list[RewardStep], config: LinkConfig, context_text: str = "") -> list[list[int]]:
    """The definition, written pair by pair (quadratic): what :func:`step_links` must return."""
    canonical = [canonical_sql(s.sql) if s.kind in ("sql", "solution") and s.sql else None for s in steps]
    failed = [s.kind == "sql" and s.sql is not None and (s.failed or canonical[k] in canonical[:k])
              for k, s in enumerate(steps)]  # fmt: skip
    first_seen: dict[str, int] = {}
    links = []
    for t, step in enumerate(steps):
        linked: set[int] = set()
        if step.sql and step.kind in ("sql", "solution"):
            for k in range(t):
                if failed[k] and canonical[k] != canonical[t] and sql_similarity(step.sql, steps[k].sql or "") >= config.link_threshold:
                    linked.add(k)
            for value in query_literals(step.sql):
                if value in first_seen and value not in context_text:
                    linked.add(first_seen[value])
        links.append(sorted(linked))
        if step.kind == "sql" and step.result is not None and step.result.ok:
            for row in step.result.rows[: config.observation_rows]:
                for v in row:
                    if v is not None:
                        first_seen.setdefault(str(int(v)) if isinstance(v, float) and v.is_integer() else str(v), t)
    return links


QUERIES = [
    "SELECT name FROM team WHERE id = 1", "SELECT nme FROM team WHERE id = 1", "SELECT name FROM team WHERE id = 2",
    "select NAME from TEAM where ID = 1", "SELECT count(*) FROM player", "SELECT count(*) FROM players",
    "SELECT name FROM player WHERE goals > 5", "SELECT name FROM player WHERE goals > 7 ORDER BY goals", "", ";",
    "SELECT 'Oslo'", "SELECT city FROM team WHERE city = 'Oslo'",
]  # fmt: skip


@st.composite
def trajectories(draw: st.DrawFn) -> list[RewardStep]:
    steps = []
    for _ in range(draw(st.integers(0, 12))):
        kind = draw(st.sampled_from(["sql", "sql", "sql", "solution", "none"]))
        sql = draw(st.sampled_from(QUERIES)) if kind != "none" else None
        if draw(st.booleans()):
            result = ExecutionResult(error_kind=ErrorKind.SCHEMA, error="no such column")
        else:
            result = ExecutionResult(columns=("a",), rows=((draw(st.sampled_from([1, 2, "Oslo", 7.0])),),))
        steps.append(RewardStep(kind, sql, result if kind == "sql" else None, None, False))
        if kind == "solution":
            break
    return steps


@settings(max_examples=300, deadline=None)
@given(trajectories(), st.sampled_from([0.0, 0.5, 0.6, 0.9, 1.0]))
def test_links_are_exactly_the_pairwise_definition(steps: list[RewardStep], threshold: float) -> None:
    config = LinkConfig(link_threshold=threshold)
    assert step_links(steps, config, "Oslo?") == pairwise_links(steps, config, "Oslo?")


def test_links_of_a_long_session_take_near_linear_time() -> None:
    # 4,000 steps cycling through 400 distinct failed probes: 2,000 steps took 42 s with difflib on every pair.
    # Two probes share 9 of their 16 tokens: similarity 18 / 32 = 0.56, under the 0.6 threshold.
    queries = [f"SELECT a{i}, b{i} FROM t{i} JOIN u{i} ON x{i} = y{i} WHERE k{i} = {i}" for i in range(400)]
    steps = [RewardStep("sql", queries[t % 400], ExecutionResult(error_kind=ErrorKind.SCHEMA, error="x"), None, False)
             for t in range(4000)]  # fmt: skip
    start = time.perf_counter()
    links = step_links(steps, LinkConfig())
    assert time.perf_counter() - start < 10.0
    # a repeat of a query is not its repair (same canonical form); no two different probes are 60 % alike
    assert links == [[] for _ in range(4000)]
    assert step_links(steps[:150], LinkConfig(link_threshold=0.5)) == pairwise_links(steps[:150], LinkConfig(link_threshold=0.5))


class _Saved:
    def __init__(self, name: str) -> None:
        self.name = name

    def save_pretrained(self, folder: Path, **_kwargs: object) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{self.name}.txt").write_text(self.name)


def test_stale_checkpoint_temporaries_are_removed(tmp_path: Path) -> None:
    root = tmp_path / "checkpoints"
    stale = root / ".step-000003.x1y2z3"  # what a kill during a save leaves
    (stale / "model").mkdir(parents=True)
    (stale / "model" / "weights").write_bytes(b"0" * 1000)
    assert remove_stale_temporaries(tmp_path) == [stale] and not stale.exists()
    (stale / "model").mkdir(parents=True)
    final = save_checkpoint(tmp_path, 4, _Saved("model"), _Saved("tokenizer"), {"step": 4}, "a: 1\n", keep=2)
    assert sorted(p.name for p in root.iterdir()) == ["latest", "step-000004"]
    assert (final / "model" / "model.txt").read_text() == "model" and (final / "config.yaml").read_text() == "a: 1\n"
