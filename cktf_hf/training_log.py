"""A finished run read back from ``Trainer.state.log_history``: the per-evaluation training table, wall time, epochs.

The table follows transformers' own model card (``transformers.modelcard.parse_log_history``): one row per
evaluation during training with the latest training loss before it; here each loss component the distillation trainer
logs by name (``ce``, ``kd``, ``contrast_final``, ``contrast_s1_t2``, ...) gets a column too. A run evaluated only
after training has one row per training log instead (losses, no accuracy).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

__all__ = ["TRAINER_LOG_KEYS", "RunSummary", "accuracy_curve", "summarise_log_history"]

# Keys the Trainer itself writes into a training log (everything else next to "loss" is a loss component).
TRAINER_LOG_KEYS = frozenset({
    "loss", "grad_norm", "learning_rate", "epoch", "step", "total_flos", "num_input_tokens_seen",
    "train_tokens_per_second",
})


@dataclass
class RunSummary:
    """What the log history says about training: ``rows`` (``epoch``, ``step``, ``loss``, each component, and
    ``eval_loss`` / ``accuracy`` / ``top5_accuracy`` when evaluated), the ``components`` in first-logged order, the
    wall time of ``train()`` in seconds (``train_runtime``, summed over calls), the epochs and steps reached."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    components: list[str] = field(default_factory=list)
    train_runtime: Optional[float] = None
    epochs: Optional[float] = None
    steps: Optional[int] = None


def accuracy_curve(rows: list[dict[str, Any]]) -> list[tuple[float, float]]:
    """``(epoch, top-1 accuracy)`` of every row of a :class:`RunSummary` that has both."""
    return [(row["epoch"], row["accuracy"]) for row in rows
            if row.get("accuracy") is not None and row.get("epoch") is not None]


def summarise_log_history(log_history: list[dict[str, Any]]) -> RunSummary:
    """Read a ``Trainer.state.log_history`` (entries up to the last ``train_runtime`` one: evaluations after training
    are not part of the table)."""
    ends = [i for i, entry in enumerate(log_history) if "train_runtime" in entry]
    during = log_history[:ends[-1]] if ends else log_history
    summary = RunSummary()
    if ends:
        summary.train_runtime = sum(float(log_history[i]["train_runtime"]) for i in ends)
        last = log_history[ends[-1]]
        summary.epochs, summary.steps = last.get("epoch"), last.get("step")

    train_logs = [entry for entry in during if "loss" in entry]
    for entry in train_logs:
        summary.components += [k for k in entry if k not in TRAINER_LOG_KEYS and k not in summary.components]
    latest_train: dict[str, Any] = {}
    for entry in during:
        if "loss" in entry:
            latest_train = entry
        elif "eval_accuracy" in entry or "eval_loss" in entry:
            summary.rows.append(_row(entry, latest_train, summary.components))
    if not summary.rows:
        summary.rows = [_row({"epoch": e.get("epoch"), "step": e.get("step")}, e, summary.components)
                        for e in train_logs]
    return summary


def _row(evaluation: dict[str, Any], train: dict[str, Any], components: list[str]) -> dict[str, Any]:
    row: dict[str, Any] = {"epoch": evaluation.get("epoch"), "step": evaluation.get("step"), "loss": train.get("loss")}
    row.update({name: train.get(name) for name in components})
    for key in ("eval_loss", "eval_accuracy", "eval_top5_accuracy"):
        if key in evaluation:
            row[key.removeprefix("eval_") if key != "eval_loss" else key] = evaluation[key]
    return row
