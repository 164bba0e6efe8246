"""Reports: learning-curve and training-diagnostics plots, a markdown summary and an HTML viewer of credited
trajectories."""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from finestep.agent.trajectory import Trajectory
from finestep.atomic import atomic_write_bytes, atomic_write_text
from finestep.rewards import ScoredTrajectory

__all__ = ["DIAGNOSTIC_KEYS", "markdown_table", "plot_curves", "plot_diagnostics", "trajectories_html"]

CURVE_KEYS = (("ex", "EX % (training samples)"), ("tool_calls", "tool calls per episode"),
              ("redundant_rate", "redundant-call rate"))  # fmt: skip

# Why a run learns or not (metrics.jsonl keys of RLTrainer.train_step; docs/sqlworld.md explains them).
DIAGNOSTIC_KEYS = (
    ("groups_with_outcome_variance", "groups with outcome variance"),
    ("n_tokens", "tokens trained"),
    ("adv_outcome_abs_mean", "mean |A^O| (outcome advantage)"),
    ("adv_process_abs_mean", "mean |A^P| (process advantage)"),
    ("approx_kl", "approx KL(old || new)"),
    ("clip_fraction", "clip fraction"),
    ("entropy", "entropy (nats)"),
    ("rollout_logprob_gap", "|rollout - trainer| log-prob"),
)


def plot_curves(curves: dict[str, Sequence[Sequence[dict[str, Any]]]], path: Path, smooth: int = 5) -> Path:
    """Plot EX, tool calls and redundant rate over RL steps: one line per name (mean over its runs, with the
    spread across runs shaded), smoothed by a moving average of ``smooth`` steps. Written atomically as PNG."""
    return _plot(curves, CURVE_KEYS, path, smooth, columns=len(CURVE_KEYS))


def plot_diagnostics(curves: dict[str, Sequence[Sequence[dict[str, Any]]]], path: Path, smooth: int = 1) -> Path:
    """Plot the training diagnostics of ``DIAGNOSTIC_KEYS`` over RL steps, one panel each, one line per name
    (as ``plot_curves``; unsmoothed by default). Steps without a value leave a gap. Written atomically as PNG."""
    return _plot(curves, DIAGNOSTIC_KEYS, path, smooth, columns=4)


def _value(step: dict[str, Any], key: str) -> float:
    value = step.get(key)
    return float(value) if isinstance(value, (int, float)) else math.nan


def _plot(
    curves: dict[str, Sequence[Sequence[dict[str, Any]]]],
    keys: Sequence[tuple[str, str]],
    path: Path,
    smooth: int,
    columns: int,
) -> Path:
    import io
    import warnings

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = -(-len(keys) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(4.2 * columns, 3.2 * rows), squeeze=False)
    for ax, (key, label) in zip(axes.flat, keys):
        for colour, (name, runs) in enumerate(curves.items()):
            length = min(len(run) for run in runs) if runs else 0
            if length == 0:
                continue
            values = np.array([[_value(step, key) for step in run[:length]] for run in runs])
            kernel = np.ones(min(max(smooth, 1), length)) / min(max(smooth, 1), length)
            smoothed = np.array([np.convolve(v, kernel, mode="valid") for v in values])
            steps = np.arange(smoothed.shape[1]) + kernel.size
            with warnings.catch_warnings():  # a step where every run lacks the value: NaN, drawn as a gap
                warnings.simplefilter("ignore", RuntimeWarning)
                mean = np.nanmean(smoothed, axis=0)
                low, high = np.nanmin(smoothed, axis=0), np.nanmax(smoothed, axis=0)
            ax.plot(steps, mean, label=name, color=f"C{colour}")
            if smoothed.shape[0] > 1:
                ax.fill_between(steps, low, high, alpha=0.15, color=f"C{colour}")
        ax.set_title(label, fontsize=10)
        ax.set_xlabel("RL step")
        ax.grid(alpha=0.3)
    for ax in axes.flat[len(keys):]:
        ax.set_visible(False)
    if curves:
        axes.flat[0].legend(fontsize=8)
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
    scores: Sequence[ScoredTrajectory],
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
