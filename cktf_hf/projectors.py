"""Projector heads: one per layer pair and side, mapping a pooled feature to an L2-normalised embedding."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

PROJECTOR_KINDS = ("linear", "mlp")
TEACHER_PROJECTORS = ("trained", "none")


class Projector(nn.Module):
    """``g(x) = normalize(W·x + b)`` ("linear", CRD's ``Embed``) or ``normalize(W2·relu(W1·x))`` ("mlp")."""

    def __init__(self, in_dim: int, feat_dim: int = 128, kind: str = "linear") -> None:
        super().__init__()
        if kind == "linear":
            self.net: nn.Module = nn.Linear(in_dim, feat_dim)
        elif kind == "mlp":
            self.net = nn.Sequential(nn.Linear(in_dim, in_dim), nn.ReLU(inplace=True), nn.Linear(in_dim, feat_dim))
        else:
            raise ValueError(f"Unknown projector kind {kind!r}; choose one of {PROJECTOR_KINDS}.")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, d]`` (or ``[B, ...]``, flattened) → ``[B, D]``; ``[B, L, d]`` cells → ``[B, L, D]``, one head for all."""
        return F.normalize(self.net(x if x.dim() == 3 else x.flatten(1)), p=2, dim=-1)


class Normalize(nn.Module):
    """``teacher_projector="none"``: the teacher's features as they are, L2-normalised (no trained head)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(x if x.dim() == 3 else x.flatten(1), p=2, dim=-1)
