"""Adapters from Hugging Face image-classification hidden states to maps and pooled vectors.

Three layouts occur: NCHW feature maps (ResNet, ConvNeXt, RegNet, Swin's ``reshaped_hidden_states``), token
sequences ``[B, prefix + P, D]`` (ViT with a CLS token, DeiT with CLS and distillation tokens, BEiT, ...), and
vectors ``[B, D]`` (the classifier input). Everything here is shape logic on tensors; no model code.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

TOKEN_POOLING = ("mean", "cls")
STAGE_POOLING = ("global", "fixed_window")


@dataclass(frozen=True)
class FeatureLayout:
    """How to read one hidden state: ``kind`` is "map" (NCHW), "tokens" (B, T, D) or "vector" (B, D)."""

    kind: str
    prefix_tokens: int = 0

    @classmethod
    def infer(cls, hidden_state: torch.Tensor) -> "FeatureLayout":
        """Recognise the layout of ``hidden_state``; token prefixes are what remains beyond a square patch grid."""
        if hidden_state.dim() == 4:
            return cls("map")
        if hidden_state.dim() == 2:
            return cls("vector")
        if hidden_state.dim() == 3:
            return cls("tokens", count_prefix_tokens(hidden_state.shape[1]))
        raise ValueError(f"Cannot read a hidden state of shape {tuple(hidden_state.shape)}: expected 2, 3 or 4 dims.")


def count_prefix_tokens(sequence_length: int, max_prefix: int = 8) -> int:
    """Number of non-patch tokens (CLS, distillation, registers) in front of a square patch grid.

    Picks the smallest prefix that leaves a perfect square: 65 → 1 (ViT, 8×8), 66 → 2 (DeiT), 49 → 0 (Swin).
    """
    for prefix in range(0, min(max_prefix, sequence_length - 1) + 1):
        side = math.isqrt(sequence_length - prefix)
        if side * side == sequence_length - prefix:
            return prefix
    raise ValueError(
        f"Cannot split {sequence_length} tokens into at most {max_prefix} prefix tokens and a square patch grid."
    )


def tokens_to_map(tokens: torch.Tensor, prefix_tokens: int) -> torch.Tensor:
    """``[B, prefix + h·w, D]`` → ``[B, D, h, w]`` (the prefix tokens are dropped)."""
    patches = tokens[:, prefix_tokens:]
    side = math.isqrt(patches.shape[1])
    return patches.transpose(1, 2).reshape(tokens.shape[0], tokens.shape[2], side, side)


def to_map(hidden_state: torch.Tensor, layout: FeatureLayout) -> torch.Tensor:
    """A spatial ``[B, C, H, W]`` view of a map or token hidden state."""
    if layout.kind == "map":
        return hidden_state
    if layout.kind == "tokens":
        return tokens_to_map(hidden_state, layout.prefix_tokens)
    raise ValueError("A pooled vector has no spatial map: pair it only with objectives that take vectors.")


def batch_l2_normalize(hidden_state: torch.Tensor) -> torch.Tensor:
    """CKTF's stage-feature preprocessing: every entry L2-normalised across the batch (``dim=0``)."""
    return F.normalize(hidden_state, p=2, dim=0)


def pool(
    hidden_state: torch.Tensor,
    layout: FeatureLayout,
    token_pooling: str = "mean",
    grid_size: int = 1,
    stage_pooling: str = "global",
    pool_window: int = 8,
) -> torch.Tensor:
    """Pool a hidden state to a ``[B, d]`` vector.

    Maps are average-pooled to a ``grid_size × grid_size`` grid and flattened (``d = C·g²``; g=1 is global average
    pooling). Tokens give the CLS token (``token_pooling="cls"``), the mean of the patch tokens (``"mean"``), or, with
    ``grid_size > 1``, the patch grid pooled like a map. Vectors pass through.

    ``stage_pooling="fixed_window"`` (CKTF's code): maps, and token layers' patch grids, are average-pooled with a
    ``pool_window`` window and stride (a 32×32 map with window 8 gives 4×4); a map smaller than the window on either
    side is pooled globally.
    """
    if layout.kind == "vector":
        return hidden_state
    if stage_pooling == "fixed_window":
        feature_map = to_map(hidden_state, layout)
        if min(feature_map.shape[-2:]) < pool_window:
            return feature_map.mean(dim=(2, 3))
        return F.avg_pool2d(feature_map, pool_window, pool_window).flatten(1)
    if stage_pooling != "global":
        raise ValueError(f"Unknown stage_pooling {stage_pooling!r}; choose one of {STAGE_POOLING}.")
    if layout.kind == "tokens" and grid_size == 1:
        if token_pooling == "cls":
            if layout.prefix_tokens == 0:
                raise ValueError("token_pooling='cls' needs a CLS token, but this model's tokens have no prefix.")
            return hidden_state[:, 0]
        if token_pooling == "mean":
            return hidden_state[:, layout.prefix_tokens :].mean(dim=1)
        raise ValueError(f"Unknown token_pooling {token_pooling!r}; choose one of {TOKEN_POOLING}.")
    feature_map = to_map(hidden_state, layout)
    height, width = feature_map.shape[-2:]
    if grid_size > min(height, width):
        raise ValueError(
            f"grid_size={grid_size} is larger than a paired feature map of {height}×{width} (hidden state of shape "
            f"{list(hidden_state.shape)}): pooling would only repeat values. Set grid_size to at most "
            f"{min(height, width)}, or pair earlier layers (layer_pairs)."
        )
    return F.adaptive_avg_pool2d(feature_map, grid_size).flatten(1)


@dataclass(frozen=True)
class Pooling:
    """The four pooling knobs in one object (set on :class:`~cktf_hf.objectives.ObjectiveSettings`): calling it pools
    a hidden state as :func:`pool` does with them."""

    token_pooling: str = "mean"
    grid_size: int = 1
    stage_pooling: str = "global"
    pool_window: int = 8

    def __call__(self, hidden_state: torch.Tensor, layout: FeatureLayout) -> torch.Tensor:
        return pool(hidden_state, layout, self.token_pooling, self.grid_size, self.stage_pooling, self.pool_window)
