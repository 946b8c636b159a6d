"""Offline top-1 / top-k accuracy built on the ``evaluate`` library, without ``evaluate.load``.

``evaluate.load("accuracy")`` fetches the metric script from the Hub, which fails offline. The metrics here subclass
:class:`evaluate.Metric` directly, so ``add_batch`` / ``compute`` work with no network access.

Example::

    from cktf_hf.metrics import make_compute_metrics
    trainer = Trainer(..., compute_metrics=make_compute_metrics(num_labels=10))
"""

from __future__ import annotations

from typing import Any, Callable

import datasets
import evaluate
import numpy as np

__all__ = ["Accuracy", "TopKAccuracy", "make_compute_metrics"]


class Accuracy(evaluate.Metric):
    """Top-1 accuracy over integer predictions and references (same result as the Hub's ``accuracy`` metric)."""

    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description="Fraction of predictions equal to the references.",
            citation="",
            inputs_description="predictions: int class ids; references: int class ids.",
            features=datasets.Features(
                {"predictions": datasets.Value("int64"), "references": datasets.Value("int64")}
            ),
        )

    def _compute(self, predictions, references, normalize: bool = True, sample_weight=None) -> dict[str, float]:
        predictions = np.asarray(predictions)
        references = np.asarray(references)
        correct = (predictions == references).astype(np.float64)
        if sample_weight is not None:
            correct = correct * np.asarray(sample_weight, dtype=np.float64)
            total = float(np.sum(sample_weight))
        else:
            total = float(correct.size)
        value = float(correct.sum())
        if normalize:
            value = value / total if total else 0.0
        return {"accuracy": value}


class TopKAccuracy(evaluate.Metric):
    """Top-``k`` accuracy: a reference counts as correct when it is among the ``k`` highest scores.

    ``predictions`` are rows of logits / scores (one float per class); ``references`` are int class ids.
    Ties are broken by ``np.argsort`` order (stable on the negated scores, so lower class ids win ties).
    """

    def __init__(self, k: int = 5, **kwargs: Any) -> None:
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        self.k = int(k)
        super().__init__(**kwargs)

    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=f"Fraction of references among the top-{self.k} scores.",
            citation="",
            inputs_description="predictions: per-class float scores (logits); references: int class ids.",
            features=datasets.Features(
                {
                    "predictions": datasets.Sequence(datasets.Value("float32")),
                    "references": datasets.Value("int64"),
                }
            ),
        )

    def _compute(self, predictions, references) -> dict[str, float]:
        return {f"top{self.k}_accuracy": top_k_accuracy(np.asarray(predictions), np.asarray(references), self.k)}


def top_k_accuracy(logits: np.ndarray, references: np.ndarray, k: int) -> float:
    """Plain-numpy top-k accuracy of ``logits`` [N, C] against ``references`` [N]."""
    logits = np.asarray(logits)
    references = np.asarray(references).reshape(-1)
    if logits.ndim != 2:
        raise ValueError(f"expected logits of shape [N, C], got {logits.shape}")
    if len(references) == 0:
        return 0.0
    k = min(k, logits.shape[1])
    topk = np.argsort(-logits, axis=1, kind="stable")[:, :k]
    return float(np.mean(np.any(topk == references[:, None], axis=1)))


def _logits_from(predictions: Any) -> np.ndarray:
    """``EvalPrediction.predictions`` is the logits array, or a tuple/list whose first element is the logits."""
    while isinstance(predictions, (tuple, list)):
        predictions = predictions[0]
    return np.asarray(predictions)


def make_compute_metrics(num_labels: int) -> Callable[[Any], dict[str, float]]:
    """Return a ``compute_metrics(eval_pred)`` for :class:`transformers.Trainer`.

    It reports ``accuracy`` and, when ``num_labels > 5``, ``top5_accuracy``.
    """
    accuracy = Accuracy()
    top5 = TopKAccuracy(k=5) if num_labels > 5 else None

    def compute_metrics(eval_pred) -> dict[str, float]:
        logits = _logits_from(eval_pred.predictions)
        labels = eval_pred.label_ids
        if isinstance(labels, (tuple, list)):
            labels = labels[0]
        labels = np.asarray(labels).reshape(-1).astype(np.int64)
        logits = logits.reshape(len(labels), -1)
        out = accuracy.compute(predictions=logits.argmax(axis=-1), references=labels)
        if top5 is not None:
            out.update(top5.compute(predictions=logits.astype(np.float32), references=labels))
        return {key: float(value) for key, value in out.items()}

    return compute_metrics
