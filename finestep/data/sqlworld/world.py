"""Building a SQLWorld (databases and ``world.json``) from a seed, and loading it back as tasks.

Layout of a world folder::

    databases/<db_id>.sqlite   one small database per db_id (w0000, w0001, ...)
    world.json                 the databases (split, domain, encoding style) and the tasks with their metadata

Train and test tasks live on disjoint databases. The same seed and sizes give byte-identical files.
"""

from __future__ import annotations

import os
import random
import shutil
import sqlite3
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from finestep.atomic import atomic_write_json
from finestep.data.sqlworld.domains import DOMAINS, STYLES
from finestep.data.sqlworld.generate import DbInstance, instantiate, write_database
from finestep.data.sqlworld.hard import (
    AGGREGATES,
    HARD_TIER,
    HardDb,
    HardQuestion,
    Lookup,
    hard_domain,
    hard_question,
    harden,
)
from finestep.data.sqlworld.questions import TEMPLATES, Question, realize
from finestep.data.task import Benchmark, DataError, Task, read_json

__all__ = [
    "FORMAT_VERSION",
    "SPLITS",
    "TIERS",
    "WORLD_TIERS",
    "TaskMeta",
    "World",
    "build_world",
    "load_world",
]

FORMAT_VERSION = 1
TIERS = ("tier1", "tier2", "tier3")
WORLD_TIERS = ("default", HARD_TIER)
"""What a world's questions are like: ``default`` (tiers 1-3, 0 or 1 look-up each) or ``hard`` (three or four
look-ups each, see :mod:`finestep.data.sqlworld.hard`)."""
SPLITS = ("train", "valid", "heldout", "test")
"""``train``: training questions; ``valid`` and ``heldout``: new questions on the training databases (never
trained on: ``valid`` to choose settings, ``heldout`` to report once); ``test``: questions on unseen databases."""
_MAX_DRAWS = 500


@dataclass(frozen=True)
class TaskMeta:
    """What the scripted expert (and an analysis) knows about a task beyond the :class:`Task` record.

    Attributes:
        task_id: the task.
        tier: ``tier1`` (no probe needed), ``tier2`` (value probe), ``tier3`` (join + probe), ``hard`` (several
            look-ups: ``lookups``).
        template: the question template's name.
        domain: the database's domain; ``style``: how it stores categorical values.
        probe_sql: the query showing the stored values the question filters on (``None`` for tier1).
        surface_value: the value as the question says it; ``stored_value``: as the database stores it.
        probe_required: the two differ, so an answer written without probing is wrong.
        skip_probe_sql: the answer written with the surface value (the gold SQL when no probe is required).
        failing_sql: the gold SQL with one column misspelled (``misspelling``: ``(right, wrong)``); it errors.
        failing_probe_sql: the probe with its column misspelled (``None`` for tier1); it errors.
        distractor_probe_sql: a probe of a column the question does not need (a wasted tool call).
        lookups: hard tier only: every fact the question needs from the data (tables as the joins reach them, the date last); the
            single-probe fields above then describe the first one, ``probe_required`` says whether any is
            required and ``skip_probe_sql`` is the answer written without any look-up.
    """

    task_id: str
    tier: str
    template: str
    domain: str
    style: str
    probe_sql: str | None
    surface_value: str | None
    stored_value: str | None
    probe_required: bool
    skip_probe_sql: str
    failing_sql: str
    misspelling: tuple[str, str]
    failing_probe_sql: str | None
    distractor_probe_sql: str
    lookups: tuple[Lookup, ...] = ()

    @classmethod
    def from_dict(cls, entry: dict[str, Any]) -> TaskMeta:
        """The inverse of :meth:`to_dict`."""
        lookups = tuple(Lookup.from_dict(x) for x in entry.get("lookups", ()))
        return cls(**{**entry, "misspelling": tuple(entry["misspelling"]), "lookups": lookups})

    def to_dict(self) -> dict[str, Any]:
        """:func:`dataclasses.asdict`, without ``lookups`` when there are none (so default worlds' files are
        what they were before the hard tier)."""
        entry = asdict(self)
        if not self.lookups:
            del entry["lookups"]
        return entry


@dataclass
class World:
    """A loaded world: train and test tasks (disjoint databases) and per-task metadata.

    Attributes:
        root: the world folder.
        seed: the seed it was built from.
        train, test: the tasks of each split, in file order (``Task.index`` is the position in the split).
        valid, heldout: new questions on the training databases (empty in worlds built without them).
        meta: task id -> :class:`TaskMeta`.
        databases: db_id -> ``{"split", "domain", "style", "path"}``.
        tier: one of :data:`WORLD_TIERS`.
    """

    root: Path
    seed: int
    train: list[Task]
    test: list[Task]
    meta: dict[str, TaskMeta] = field(default_factory=dict)
    databases: dict[str, dict[str, str]] = field(default_factory=dict)
    valid: list[Task] = field(default_factory=list)
    heldout: list[Task] = field(default_factory=list)
    tier: str = "default"

    def split(self, name: str) -> list[Task]:
        """The tasks of split ``name``, one of ``SPLITS``."""
        if name not in SPLITS:
            raise ValueError(f"unknown split {name!r}; expected one of {', '.join(SPLITS)}")
        return getattr(self, name)

    def benchmark(self, name: str) -> Benchmark:
        """The tasks of split ``name`` as a :class:`Benchmark`."""
        return Benchmark.from_tasks(f"sqlworld-{name}", self.root / "world.json", self.split(name))


def _plan(seed: int, n_train_dbs: int, n_test_dbs: int) -> list[tuple[str, str, str, str]]:
    """``(db_id, split, domain, style)`` per database: domains and styles cycle, in a seeded order per split."""
    rng = random.Random(f"sqlworld:{seed}:plan")
    plan = []
    for split, count, start in (("train", n_train_dbs, 0), ("test", n_test_dbs, n_train_dbs)):
        domains = rng.sample([d.name for d in DOMAINS], len(DOMAINS))
        styles = rng.sample(STYLES, len(STYLES))
        for k in range(count):
            plan.append((f"w{start + k:04d}", split, domains[k % len(domains)], styles[k % len(styles)]))
    return plan


def _questions(db: DbInstance, conn: sqlite3.Connection, n: int, rng: random.Random) -> list[Question]:
    """``n`` verified questions with distinct texts, tiers cycling tier1, tier2, tier3."""
    questions: list[Question] = []
    seen: set[str] = set()
    for j in range(n):
        tier = TIERS[j % len(TIERS)]
        for _ in range(_MAX_DRAWS):
            draft = rng.choice(TEMPLATES[tier])(db, rng)
            if draft is None or draft.question in seen:
                continue
            question = realize(db, draft, conn, rng)
            if question is not None:
                break
        else:
            raise RuntimeError(f"{db.db_id}: no valid {tier} question in {_MAX_DRAWS} draws")
        seen.add(question.question)
        questions.append(question)
    return questions


def _hard_questions(hard: HardDb, conn: sqlite3.Connection, n: int, rng: random.Random) -> list[HardQuestion]:
    """``n`` verified hard questions with distinct texts, the aggregates cycling count, avg, list (a database
    that cannot ask one kind asks a count instead)."""
    questions: list[HardQuestion] = []
    seen: set[str] = set()
    for j in range(n):
        aggregates = [AGGREGATES[j % len(AGGREGATES)], "count"]
        for draw in range(_MAX_DRAWS):
            question = hard_question(hard, conn, rng, aggregates[draw * 2 >= _MAX_DRAWS])
            if question is not None and question.question not in seen:
                break
        else:
            raise RuntimeError(f"{hard.db.db_id}: no valid hard question in {_MAX_DRAWS} draws")
        seen.add(question.question)
        questions.append(question)
    return questions


def _hard_task_entry(task_id: str, db_id: str, split: str, db: DbInstance, q: HardQuestion) -> dict[str, Any]:
    first = q.lookups[0]
    meta = TaskMeta(
        task_id, HARD_TIER, q.template, db.domain, db.style, first.probe_sql, first.surface, first.stored,
        any(x.required for x in q.lookups), q.skip_sql, q.failing_sql, q.misspelling, first.failing_probe_sql,
        q.distractor_probe_sql, q.lookups,
    )  # fmt: skip
    return {
        "id": task_id, "db_id": db_id, "split": split, "question": q.question, "gold_sql": q.gold_sql,
        "difficulty": HARD_TIER, "evidence": "", "meta": meta.to_dict(),
    }  # fmt: skip


def _task_entry(task_id: str, db_id: str, split: str, db: DbInstance, q: Question) -> dict[str, Any]:
    probe = q.probe
    meta = TaskMeta(
        task_id, q.tier, q.template, db.domain, db.style, probe.sql if probe else None,
        probe.surface if probe else None, probe.stored if probe else None, bool(probe and probe.required),
        q.skip_probe_sql, q.failing_sql, q.misspelling, q.failing_probe_sql, q.distractor_probe_sql,
    )  # fmt: skip
    return {
        "id": task_id, "db_id": db_id, "split": split, "question": q.question, "gold_sql": q.gold_sql,
        "difficulty": q.tier, "evidence": "", "meta": meta.to_dict(),
    }  # fmt: skip


def _replace_dir(tmp: Path, out_dir: Path) -> None:
    """Move the finished folder ``tmp`` to ``out_dir``, replacing a previous one."""
    old = None
    if out_dir.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".old", dir=out_dir.parent))
        os.replace(out_dir, old / out_dir.name)
    os.replace(tmp, out_dir)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _extra_splits(k: int, valid_per_db: int, heldout_per_db: int) -> list[str]:
    """Splits of the extra questions of the ``k``-th training database: ``valid`` and ``heldout`` rotated by ``k``,
    so that each split gets every tier (the tiers cycle over a database's questions)."""
    names = ["valid"] * valid_per_db + ["heldout"] * heldout_per_db
    if not names:
        return []
    shift = k % len(names)
    return names[shift:] + names[:shift]


def build_world(
    out_dir: Path | str,
    seed: int = 0,
    n_train_dbs: int = 24,
    n_test_dbs: int = 8,
    questions_per_db: int = 12,
    valid_per_db: int = 0,
    heldout_per_db: int = 0,
    tier: str = "default",
) -> World:
    """Generate a world into ``out_dir`` (replacing one that is there) and load it.

    The folder is built beside ``out_dir`` and renamed into place, so a reader never sees a half-built world.
    Each database has ``questions_per_db`` tasks, the tiers in turn; each training database has
    ``valid_per_db + heldout_per_db`` more (distinct texts), in the ``valid`` and ``heldout`` splits. The first
    ``questions_per_db`` questions of a database do not depend on the extra counts.

    ``tier`` (one of :data:`WORLD_TIERS`): ``default`` gives tiers 1-3 (exactly the worlds built before the
    option existed); ``hard`` gives hardened databases and long-horizon questions only (three or four look-ups
    each, :mod:`finestep.data.sqlworld.hard`), recorded in ``world.json`` as ``params.tier``.
    """
    if tier not in WORLD_TIERS:
        raise ValueError(f"build_world: unknown tier {tier!r}; expected one of {', '.join(WORLD_TIERS)}")
    if n_train_dbs < 1 or n_test_dbs < 0 or questions_per_db < 1 or valid_per_db < 0 or heldout_per_db < 0:
        raise ValueError(
            "build_world needs n_train_dbs >= 1, n_test_dbs >= 0, questions_per_db >= 1 and "
            "valid_per_db, heldout_per_db >= 0"
        )
    out_dir = Path(out_dir).absolute()
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".tmp", dir=out_dir.parent))
    try:
        os.chmod(tmp, 0o777 & ~_umask())
        (tmp / "databases").mkdir()
        domains = {d.name: d for d in DOMAINS}
        databases, tasks = [], []
        for k, (db_id, split, domain, style) in enumerate(_plan(seed, n_train_dbs, n_test_dbs)):
            rng = random.Random(f"sqlworld:{seed}:{db_id}")
            hard = None
            if tier == HARD_TIER:
                hard = harden(instantiate(db_id, hard_domain(domains[domain]), "plain", rng), rng)
                db, style = hard.db, hard.db.style
            else:
                db = instantiate(db_id, domains[domain], style, rng)
            path = write_database(tmp / "databases" / f"{db_id}.sqlite", db)
            task_splits = [split] * questions_per_db
            if split == "train":
                task_splits += _extra_splits(k, valid_per_db, heldout_per_db)
            conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
            try:
                if hard is not None:
                    hard_qs = _hard_questions(hard, conn, len(task_splits), rng)
                    tasks += [_hard_task_entry(f"{db_id}-q{j:02d}", db_id, s, db, q)
                              for j, (s, q) in enumerate(zip(task_splits, hard_qs))]  # fmt: skip
                else:
                    questions = _questions(db, conn, len(task_splits), rng)
                    tasks += [_task_entry(f"{db_id}-q{j:02d}", db_id, s, db, q)
                              for j, (s, q) in enumerate(zip(task_splits, questions))]  # fmt: skip
            finally:
                conn.close()
            rel = f"databases/{db_id}.sqlite"
            databases.append({"db_id": db_id, "split": split, "domain": domain, "style": style, "path": rel})
        params = {"n_train_dbs": n_train_dbs, "n_test_dbs": n_test_dbs, "questions_per_db": questions_per_db,
                  "valid_per_db": valid_per_db, "heldout_per_db": heldout_per_db}  # fmt: skip
        if tier != "default":
            params["tier"] = tier  # default worlds' files stay as they were
        doc = {"format": "sqlworld", "version": FORMAT_VERSION, "seed": seed, "params": params,
               "databases": databases, "tasks": tasks}  # fmt: skip
        atomic_write_json(tmp / "world.json", doc)
        _replace_dir(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return load_world(out_dir)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def load_world(out_dir: Path | str) -> World:
    """The world in ``out_dir`` (made by :func:`build_world`); database paths are made absolute."""
    root = Path(out_dir).absolute()
    path = root / "world.json"
    doc = read_json(path)
    if not isinstance(doc, dict) or doc.get("format") != "sqlworld":
        raise DataError(f"{path}: not a SQLWorld file")
    if doc.get("version") != FORMAT_VERSION:
        raise DataError(f"{path}: format version {doc.get('version')!r}, expected {FORMAT_VERSION}")
    databases = {d["db_id"]: d for d in doc["databases"]}
    splits: dict[str, list[Task]] = {name: [] for name in SPLITS}
    meta = {}
    for position, entry in enumerate(doc["tasks"]):
        split = entry.get("split")
        if split not in splits or entry.get("db_id") not in databases:
            raise DataError(
                f"{path}: task {position}: bad split {split!r} or unknown db_id {entry.get('db_id')!r}"
            )
        tasks = splits[split]
        db_path = (root / databases[entry["db_id"]]["path"]).resolve()
        tasks.append(Task(entry["id"], len(tasks), entry["question"], entry["db_id"], db_path, entry["gold_sql"],
                          entry.get("evidence", ""), entry["difficulty"]))  # fmt: skip
        meta[entry["id"]] = TaskMeta.from_dict(entry["meta"])
    tier = doc.get("params", {}).get("tier", "default")
    return World(
        root,
        int(doc["seed"]),
        splits["train"],
        splits["test"],
        meta,
        databases,
        splits["valid"],
        splits["heldout"],
        tier,
    )
