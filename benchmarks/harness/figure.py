"""The benchmarks' figure: one panel per teacher → student pair (or probe part), methods sorted by their mean, each
seed a dot, the mean a diamond with ± std whiskers, the teacher and the student from scratch as reference lines."""

from __future__ import annotations

from dataclasses import dataclass, field
import numpy as np

from cktf_hf.formatting import format_accuracy


@dataclass
class Row:
    """One method in a panel: its per-seed accuracies (fractions) and their mean and std."""

    label: str
    values: list[float]
    mean: float
    std: float


@dataclass
class Panel:
    """One pair: its rows and the reference lines (name → accuracy as a fraction, e.g. teacher, scratch)."""

    title: str
    rows: list[Row]
    references: dict[str, float] = field(default_factory=dict)


REFERENCE_STYLES = {"teacher": ("black", "--"), "scratch": ("tab:red", ":"), "random": ("tab:gray", "-.")}


def dot_panels(path: str, panels: list[Panel], title: str, xlabel: str = "test top-1 accuracy (%)") -> None:
    """Write a PNG with one horizontal panel per entry of ``panels``, side by side; the x axis of each panel spans
    every seed and reference line (nothing is cut off)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    height = max(3.0, 0.27 * max(len(p.rows) for p in panels) + 1.8)
    fig, axes = plt.subplots(1, len(panels), figsize=(max(8.0, 5.6 * len(panels)), height), squeeze=False)
    for ax, panel in zip(axes[0], panels):
        _draw(ax, panel, xlabel)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _draw(ax, panel: Panel, xlabel: str) -> None:
    rows = sorted(panel.rows, key=lambda r: r.mean)  # best at the top
    y = np.arange(len(rows))
    ax.errorbar([100 * r.mean for r in rows], y, xerr=[100 * r.std for r in rows], fmt="D", color="black",
                markersize=4, elinewidth=1.2, capsize=3)
    for i, row in enumerate(rows):
        ax.plot([100 * v for v in row.values], [i] * len(row.values), "o", color="tab:blue", markersize=3.5,
                alpha=0.6)
        ax.text(1.01, i, format_accuracy(row.mean, percent_sign=False), transform=ax.get_yaxis_transform(),
                va="center", fontsize=7)
    spans = [100 * v for r in rows for v in r.values] + [100 * v for v in panel.references.values()]
    for name, value in panel.references.items():
        color, style = REFERENCE_STYLES.get(name, ("tab:green", "--"))
        ax.axvline(100 * value, color=color, linestyle=style, linewidth=1,
                   label=f"{name} {format_accuracy(value, percent_sign=False)}")
    low, high = _limits(spans)
    ax.set_xlim(low, high)
    ax.set_yticks(y, [r.label for r in rows], fontsize=8)
    ax.set_ylim(-0.7, len(rows) - 0.3)
    ax.set_xlabel(xlabel, fontsize=8)
    ax.set_title(panel.title, fontsize=9)
    ax.grid(axis="x", alpha=0.3)
    if panel.references:
        ax.legend(fontsize=7, loc="lower right", framealpha=0.9)


def _limits(values: list[float]) -> tuple[float, float]:
    """The x range: every value inside, a margin of 4 % of the span (at least 1 point) on each side, within 0-100."""
    if not values:
        return 0.0, 100.0
    low, high = min(values), max(values)
    margin = max(1.0, 0.04 * (high - low))
    return max(0.0, low - margin), min(100.0, high + margin)


def panel_rows(rows: list[dict], runs: list[dict], keys: tuple[str, ...], label_key: str = "method",
               metric: str = "test") -> list[Row]:
    """Figure rows from aggregate rows and their runs (matched on ``keys``)."""
    result = []
    for row in rows:
        values = [run[metric] for run in runs if all(run[k] == row[k] for k in keys)]
        result.append(Row(row[label_key], values, row[f"{metric}_mean"], row[f"{metric}_std"]))
    return result
