"""Reports: learning-curve plots, a markdown summary and an HTML viewer of credited trajectories."""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from finestep.agent.trajectory import Trajectory
from finestep.atomic import atomic_write_bytes, atomic_write_text
from finestep.eval.episodes import EpisodeScore

__all__ = ["markdown_table", "plot_curves", "trajectories_html"]

CURVE_KEYS = (("ex", "EX % (training samples)"), ("tool_calls", "tool calls per episode"),
              ("redundant_rate", "redundant-call rate"))  # fmt: skip


def plot_curves(curves: dict[str, Sequence[Sequence[dict[str, Any]]]], path: Path, smooth: int = 5) -> Path:
    """Plot EX, tool calls and redundant rate over RL steps: one line per name (mean over its runs, with the
    spread across runs shaded), smoothed by a moving average of ``smooth`` steps. Written atomically as PNG."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(CURVE_KEYS), figsize=(4.2 * len(CURVE_KEYS), 3.2))
    for ax, (key, label) in zip(axes, CURVE_KEYS):
        for name, runs in curves.items():
            length = min(len(run) for run in runs) if runs else 0
            if length == 0:
                continue
            values = np.array([[float(step.get(key) or 0.0) for step in run[:length]] for run in runs])
            kernel = np.ones(min(smooth, length)) / min(smooth, length)
            smoothed = np.array([np.convolve(v, kernel, mode="valid") for v in values])
            steps = np.arange(smoothed.shape[1]) + kernel.size
            mean = smoothed.mean(axis=0)
            ax.plot(steps, mean, label=name)
            if smoothed.shape[0] > 1:
                ax.fill_between(steps, smoothed.min(axis=0), smoothed.max(axis=0), alpha=0.15)
        ax.set_title(label, fontsize=10)
        ax.set_xlabel("RL step")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    plt.close(fig)
    return atomic_write_bytes(path, buffer.getvalue())


def markdown_table(rows: list[dict[str, Any]], columns: list[tuple[str, str]]) -> str:
    """A markdown table of ``rows`` with ``columns`` as (key, header); floats with 3 decimals."""

    def cell(value: Any) -> str:
        if isinstance(value, float):
            return "" if math.isnan(value) else f"{value:.3f}"
        return str(value)

    lines = ["| " + " | ".join(h for _, h in columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(row.get(k, "")) for k, _ in columns) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def _colour(advantage: float, scale: float) -> str:
    strength = min(1.0, abs(advantage) / scale) if scale > 0 else 0.0
    if advantage >= 0:
        return f"rgba(46, 160, 67, {0.12 + 0.6 * strength:.2f})"
    return f"rgba(218, 54, 51, {0.12 + 0.6 * strength:.2f})"


_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em; color: #222; }
h2 { margin-top: 2em; font-size: 1.1em; } .task { color: #555; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em 0; width: 100%; }
td, th { border: 1px solid #ddd; padding: 4px 8px; vertical-align: top; font-size: 0.88em; }
th { background: #f4f4f4; text-align: left; } pre { margin: 0; white-space: pre-wrap; font-size: 0.95em; }
.obs { color: #1f5f8b; } .num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
"""


def trajectories_html(
    trajectories: Sequence[Trajectory],
    scores: Sequence[EpisodeScore],
    advantages: np.ndarray,
    path: Path,
    title: str = "FineStep trajectories",
) -> Path:
    """An HTML page: every task's trajectories step by step, with SQL, observation, process rules and the
    step advantage in colour (green positive, red negative). ``advantages`` (S,) follows the steps in order."""
    scale = float(np.percentile(np.abs(advantages), 95)) if advantages.size else 1.0
    parts = [
        f"<!doctype html><meta charset='utf-8'><title>{html.escape(title)}</title><style>{_STYLE}</style>",
        (f"<h1>{html.escape(title)}</h1><p>Each row is one assistant step. Colour: the step's advantage "
         "(green above zero, red below). R is the trajectory's outcome reward.</p>"),
    ]  # fmt: skip
    by_task: dict[str, list[int]] = {}
    for i, traj in enumerate(trajectories):
        by_task.setdefault(traj.task.id, []).append(i)
    offsets = np.cumsum([0] + [len(t.steps) for t in trajectories])
    for task_id, members in by_task.items():
        task = trajectories[members[0]].task
        parts.append(f"<h2>{html.escape(task_id)} <span class='task'>({html.escape(task.difficulty or '')})</span>: "
                     f"{html.escape(task.question)}</h2><p class='task'>gold: <code>{html.escape(task.gold_sql)}</code></p>")
        parts.append("<table><tr><th>sample</th><th>R</th><th>t</th><th>turn and observation</th>"
                     "<th>rules fired</th><th>r</th><th>links</th><th>A</th></tr>")  # fmt: skip
        for i in members:
            traj, score = trajectories[i], scores[i]
            for t, step in enumerate(traj.steps):
                flat = int(offsets[i]) + t
                a = float(advantages[flat])
                fired = " ".join(f"{k}{v:+.1f}" for k, v in score.rule_values[t].items() if v)
                obs = f"<pre class='obs'>{html.escape(step.observation)}</pre>" if step.observation else ""
                parts.append(
                    f"<tr style='background:{_colour(a, scale)}'><td>{traj.sample if t == 0 else ''}</td>"
                    f"<td class='num'>{f'{score.outcome:+.1f}' if t == 0 else ''}</td><td>{t}</td>"
                    f"<td><pre>{html.escape(step.text)}</pre>{obs}</td><td>{html.escape(fired)}</td>"
                    f"<td class='num'>{score.process_reward[t]:+.2f}</td>"
                    f"<td>{','.join(map(str, score.links[t]))}</td><td class='num'>{a:+.3f}</td></tr>"
                )
        parts.append("</table>")
    return atomic_write_text(path, "\n".join(parts) + "\n")
