"""Sandbox workers start once per process, from a clean interpreter (issue 18).

Before: the expert built a sandbox per episode and each worker came from a forkserver that re-imported the
caller's script (torch and transformers included): ``credit_quality.py --tasks 8`` started 65 workers in 120 s.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from finestep.agent.rollout import RolloutConfig, prompt_ids
from finestep.sql import workers
from finestep.sql.engine import SandboxLimits
from finestep.sql.executor import SqlSandbox, shared_sandbox, worker_starts
from finestep.sql.workers import MAX_START_FAILURES, WorkerPool, WorkerStartError

ROOT = Path(__file__).resolve().parents[1]

# A training script as users write them: heavy imports at the top. Each time the file is imported it appends a
# line to $MARK, so a worker that re-imported the caller's __main__ would show up as a second line.
SCRIPT = textwrap.dedent(
    """
    import os
    with open(os.environ["MARK"], "a") as mark:
        mark.write(__name__ + "\\n")
    import json, sys
    import torch, transformers  # noqa: F401
    from pathlib import Path
    from finestep.agent.expert import expert_dataset
    from finestep.agent.generators import ScriptedGenerator
    from finestep.agent.protocol import get_protocol
    from finestep.agent.rollout import RolloutConfig, rollout
    from finestep.data.sqlworld import build_world
    from finestep.models import build_tiny_model, load_tokenizer
    from finestep.rewards import RewardConfig, score_episodes
    from finestep.sql.executor import shared_sandbox, worker_starts

    if __name__ == "__main__":
        out = Path(sys.argv[1])
        world = build_world(out / "world", seed=0, n_train_dbs=3, n_test_dbs=0)
        expert = expert_dataset(world, "train", n_per_task=1)
        after_expert = worker_starts()
        tasks = world.split("train")[:8]
        model = build_tiny_model([t.question for t in tasks] + [t.gold_sql for t in tasks], out / "tiny", vocab_size=300)
        golds = {i: t.gold_sql for i, t in enumerate(t for t in tasks for _ in range(2))}
        script = lambda i, turn, _: "<sql>SELECT 1</sql>" if turn == 0 else f"<solution>{golds[i]}</solution>"
        config = RolloutConfig(group_size=2, max_turns=3, max_new_tokens=400, max_total_tokens=4000)
        generator = ScriptedGenerator(load_tokenizer(model), script)
        trajectories = rollout(tasks, generator, get_protocol("tags"), shared_sandbox(), config)
        scores = score_episodes(trajectories, shared_sandbox(), RewardConfig())
        print(json.dumps({"episodes": len(expert) + len(trajectories), "after_expert": after_expert,
                          "starts": worker_starts(), "solved": sum(s.outcome == 1.0 for s in scores)}))
    """
)


@pytest.mark.slow
def test_a_script_that_imports_torch_starts_one_worker_for_all_its_episodes(tmp_path: Path) -> None:
    script = tmp_path / "train_script.py"
    script.write_text(SCRIPT)
    mark = tmp_path / "imports.txt"
    env = {**os.environ, "MARK": str(mark), "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, str(script), str(tmp_path)], capture_output=True, text=True, env=env,
                          timeout=300, check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["episodes"] > 40 and report["solved"] == 16
    assert report["after_expert"] == 1  # the expert's episodes share one worker (was one per episode)
    assert report["starts"] == 1  # the rollout and its scoring share the same one
    assert mark.read_text().splitlines() == ["__main__"]  # the worker never re-imported the script


def test_a_prompt_is_encoded_without_starting_a_worker(db: Path) -> None:
    class Characters:  # a tokenizer with a chat template, one id per character
        chat_template = "characters"

        def apply_chat_template(self, messages: list[dict[str, str]], **_: object) -> list[int]:
            return [ord(c) for m in messages for c in m["content"]]

    before = worker_starts()
    ids = prompt_ids("How many?", "", db, Characters(), "tags", RolloutConfig())
    assert len(ids) > 20 and worker_starts() == before


def test_the_shared_sandbox_is_one_per_limits_and_starts_one_worker(db: Path) -> None:
    limits = SandboxLimits(timeout_s=4.5)  # a setting no other test uses: this test owns its workers
    sandbox = shared_sandbox(limits)
    assert shared_sandbox(SandboxLimits(timeout_s=4.5)) is sandbox and shared_sandbox() is not sandbox
    assert sandbox.pool is not None and sandbox.pool.started == 0  # created, nothing started
    before = worker_starts()
    for i in range(30):
        assert shared_sandbox(limits).execute(db, f"SELECT count(*) + {i} FROM numbers").rows == ((200 + i,),)
    assert sandbox.pool.started == 1 and worker_starts() == before + 1


def test_the_first_answer_comes_within_a_second(db: Path) -> None:
    with SqlSandbox(cache_entries=0) as sandbox:
        start = time.perf_counter()
        assert sandbox.execute(db, "SELECT 1").rows == ((1,),)
        assert time.perf_counter() - start < 1.0  # ~0.1 s: an interpreter and the engine, nothing else


def test_a_worker_that_cannot_start_is_a_clear_error_not_an_endless_retry(
    db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(workers, "_WORKER_CODE", "import sys; sys.stderr.write('no such module: sqlite3x'); sys.exit(3)")
    pool = WorkerPool(SandboxLimits())
    with pytest.raises(WorkerStartError) as caught:
        pool.run([(str(db), ["SELECT 1"])])
    message = str(caught.value)
    assert f"{MAX_START_FAILURES} sandbox workers in a row failed to start" in message
    assert "exited with code 3" in message and "no such module: sqlite3x" in message
    assert pool.started == MAX_START_FAILURES
    monkeypatch.undo()  # a good worker again: the same pool recovers
    assert pool.run([(str(db), ["SELECT 2"])])[0][0].rows == ((2,),)
    pool.close()


def test_a_worker_that_hangs_at_start_is_a_clear_error(db: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(workers, "_WORKER_CODE", "import time; time.sleep(60)")
    monkeypatch.setattr(workers, "STARTUP_TIMEOUT_S", 0.3)
    pool = WorkerPool(SandboxLimits())
    start = time.perf_counter()
    with pytest.raises(WorkerStartError, match=r"not ready after 0.3 s"):
        pool.run([(str(db), ["SELECT 1"])])
    assert time.perf_counter() - start < MAX_START_FAILURES * 0.3 + 2.0
    assert pool.started == MAX_START_FAILURES and pool.idle_pids() == []
