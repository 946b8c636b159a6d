"""Shared helpers of the logit-loss tests: seeded random logits and a NumPy softmax for the independent re-computations."""

from __future__ import annotations

import numpy as np
import torch

B, C = 6, 5


def random_logits(seed: int, batch: int = B, classes: int = C, scale: float = 3.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Two ``[batch, classes]`` logit tensors (student, teacher) from a seeded generator."""
    g = torch.Generator().manual_seed(seed)
    return scale * torch.randn(batch, classes, generator=g), scale * torch.randn(batch, classes, generator=g)


def softmax(z: np.ndarray) -> np.ndarray:
    """Row-wise softmax in NumPy, shifted by the row maximum."""
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)
