"""A gold file of one's own: the questions to score are the gold file's, the databases the benchmark folder's.

Two formats, detected from the content:

- ``SQL<TAB>db_id`` per line (Spider's ``dev_gold.sql``, also BIRD's ``dev_gold.sql``); blank lines are skipped
  (test-suite-sql-eval reads them as session breaks of SParC/CoSQL);
- BIRD's JSON list of questions (``dev.json`` layout: ``question``, ``SQL``, ``db_id``, optional ``evidence``,
  ``difficulty``, ``question_id``).

Question ``i`` of the gold file is answered by prediction ``i`` (or by the JSONL prediction with id ``i``).
"""

from __future__ import annotations

from pathlib import Path

from finestep.data.bird import find_databases, load_bird
from finestep.data.task import Benchmark, DataError, Task, read_text

__all__ = ["database_path", "load_gold"]


def database_path(benchmark: str, data_dir: Path, db_id: str) -> Path:
    """Where ``benchmark`` keeps database ``db_id`` under ``data_dir``."""
    root = data_dir / "database" if benchmark == "spider" else find_databases(data_dir)
    return root / db_id / f"{db_id}.sqlite"


def _load_gold_lines(path: Path, text: str, benchmark: str, data_dir: Path) -> Benchmark:
    tasks = []
    for line_no, line in enumerate(text.replace("\r\n", "\n").split("\n"), start=1):
        if not line.strip():
            continue
        fields = line.strip().split("\t")
        if len(fields) != 2 or not fields[0].strip() or not fields[1].strip():
            raise DataError(
                f"{path}:{line_no}: expected 'SQL<TAB>db_id', got {len(fields)} tab-separated field(s)"
            )
        sql, db_id = fields[0].strip(), fields[1].strip()
        index = len(tasks)
        tasks.append(Task(id=str(index), index=index, question="", db_id=db_id,
                          db_path=database_path(benchmark, data_dir, db_id), gold_sql=sql))  # fmt: skip
    if not tasks:
        raise DataError(f"{path}: no gold queries")
    return Benchmark.from_tasks(benchmark, path, tasks)


def load_gold(path: str | Path, benchmark: str, data_dir: str | Path) -> Benchmark:
    """The questions of gold file ``path`` (format detected) on the databases of ``benchmark`` in ``data_dir``."""
    path, data_dir = Path(path), Path(data_dir)
    text = read_text(path, "gold file")
    if text.lstrip().startswith("["):
        databases = data_dir / "database" if benchmark == "spider" else find_databases(data_dir)
        return Benchmark.from_tasks(benchmark, path, load_bird(path.parent, path.name, databases).tasks)
    return _load_gold_lines(path, text, benchmark, data_dir)
