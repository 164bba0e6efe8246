"""Training-data hygiene: tasks whose gold query returns no rows, or fails, teach the wrong thing.

A gold query with an empty result lets an empty answer (any query that finds nothing, or BIRD's empty
prediction) earn the full outcome reward, as SQL-R1 and OmniSQL users found; a gold query that fails cannot score
anything. :func:`check_gold` runs each gold query once and sorts the tasks; the trainer counts them, reports them
and, with ``data.drop_empty_gold`` (the default), leaves them out of RL. Evaluation never drops a question.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from finestep.data.task import Task
from finestep.sql.executor import SandboxLimits, execute_on

__all__ = ["GoldCheck", "check_gold"]


@dataclass
class GoldCheck:
    """Tasks sorted by what their gold query gives: ``usable`` rows, ``empty`` (no rows) or ``failing``."""

    usable: list[Task] = field(default_factory=list)
    empty: list[Task] = field(default_factory=list)
    failing: list[Task] = field(default_factory=list)

    def summary(self) -> str:
        """One line for logs, e.g. ``"972 gold queries checked: 3 return no rows (ids 7, 9, 12), 0 fail"``."""
        checked = len(self.usable) + len(self.empty) + len(self.failing)

        def ids(tasks: list[Task]) -> str:
            shown = ", ".join(t.id for t in tasks[:8]) + (", ..." if len(tasks) > 8 else "")
            return f" (ids {shown})" if tasks else ""

        return (
            f"{checked} gold queries checked: {len(self.empty)} return no rows{ids(self.empty)}, "
            f"{len(self.failing)} fail{ids(self.failing)}"
        )


def check_gold(tasks: Sequence[Task], limits: SandboxLimits | None = None) -> GoldCheck:
    """Run every task's gold query once (consecutive tasks on one database share a connection) and sort them.

    ``limits`` are the sandbox's (the defaults: what the rollout's rewards will run the gold under), so a gold
    query that times out here would also fail to score during training.
    """
    check = GoldCheck()
    start = 0
    while start < len(tasks):
        end = start
        while end < len(tasks) and tasks[end].db_path == tasks[start].db_path:
            end += 1
        run = tasks[start:end]
        for task, result in zip(run, execute_on(run[0].db_path, [t.gold_sql for t in run], limits)):
            if not result.ok or result.truncated:
                check.failing.append(task)
            elif not result.rows:
                check.empty.append(task)
            else:
                check.usable.append(task)
        start = end
    return check
