"""OFA-KD: Hao, Guo, Han, Tang, Hu, Wang & Xu, "One-for-All: Bridge the Gap Between Heterogeneous Architectures in
Knowledge Distillation", NeurIPS 2023.

Followed from the authors' code, Hao840/OFAKD at f7bb896cac9879040800bde08a8cc2057a904c52:

- ``distillers/ofa.py``: ``ofa_loss`` (the ε-loss, :class:`OFALoss`) and ``OFA.__init__`` (which branch each student
  stage gets, :func:`ofa_stage_branch`) and ``OFA.forward`` (the loss on every branch and on the output,
  :class:`OFABranchLoss` and :class:`OFALoss`);
- ``distillers/utils.py``: ``SepConv``, ``PatchMerging``, ``init_weights``;
- ``train.py``: the defaults ``--ofa-eps 1``, ``--ofa-stage 1 2 3 4``, ``--ofa-temperature 1``, and weights
  ``--gt-loss-weight 1`` (cross-entropy), ``--kd-loss-weight 1`` (the ε-loss on the output) and
  ``--ofa-loss-weight 1`` (the sum over the stage branches), all in :data:`OFA_WEIGHTS`. README.md trains the
  ImageNet CNN student with ``--ofa-eps 1.5`` and the CIFAR-100 one with ``--ofa-eps 1.0``.

A branch is a training-only module that maps one student stage's hidden state to class logits; OFA drops it after
training. Branches here read Hugging Face hidden states as they are: ``[B, C, H, W]`` maps for CNN stages and
``[B, prefix + P, D]`` token sequences (CLS first) for ViT stages.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .classic import ClassicObjective, _float32
from .registry import register_objective

# OFAKD train.py: --gt-loss-weight, --kd-loss-weight (ε-loss on the output logits), --ofa-loss-weight (Σ branches).
OFA_WEIGHTS = {"ce": 1.0, "output": 1.0, "branches": 1.0}
# distillers/ofa.py: ViT branches merge patches down to a 7×7 grid ("finally there are 49 patches") and use 4 heads.
FINAL_PATCH_GRID = 7
BRANCH_HEADS = 4


def _check_eps_temperature(eps: float, temperature: float) -> None:
    if not (math.isfinite(eps) and eps > 0) or not (math.isfinite(temperature) and temperature > 0):
        raise ValueError(f"OFA needs eps > 0 and temperature > 0; got eps={eps}, temperature={temperature}.")


@register_objective("ofa")
class OFALoss(ClassicObjective):
    """OFA's ε-loss on class logits: ``mean_b −Σ_c [(p_t + y)^ε − y]_c · log p_s,c``.

    As ``ofa_loss`` in ``distillers/ofa.py``: ``p = softmax(z / T)`` on both sides (no ``T²`` factor), ``y`` the
    one-hot label (``target_mask``), summed over classes and averaged over the batch. With ε = 1 it is the
    cross-entropy against the teacher's soft labels; ε > 1 shrinks the non-target terms and, through the ``+ y``,
    keeps the target class's weight ``(1 + p_t)^ε − 1`` large when the teacher is unsure. ``log p_s`` is computed
    as ``log_softmax`` (the authors take ``torch.log`` of the softmax: equal wherever that is finite).
    Defaults ε = 1 and T = 1 (``--ofa-eps 1``, ``--ofa-temperature 1``). At ε = 1 the labels cancel
    (``(p_t + y) − y = p_t``), so the loss also runs on unlabelled images (``labels`` None); other ε need them.
    """

    inputs = "logits"
    needs_labels = True

    def __init__(self, eps: float = 1.0, temperature: float = 1.0) -> None:
        super().__init__()
        _check_eps_temperature(eps, temperature)
        self.eps, self.temperature = eps, temperature

    @property
    def labels_required(self) -> bool:
        """Only ε ≠ 1 cannot do without the labels."""
        return self.eps != 1.0

    def forward(self, z_s: Tensor, z_t: Tensor, labels: Optional[Tensor] = None) -> Tensor:
        if z_s.dim() != 2 or z_s.shape != z_t.shape:
            raise ValueError(
                f"OFA's loss compares class logits of equal shape [batch, classes]; got student {tuple(z_s.shape)} "
                f"and teacher {tuple(z_t.shape)}. The student needs the teacher's label space (num_labels)."
            )
        if labels is None and self.labels_required:
            raise ValueError(f"OFA's loss with eps={self.eps} needs the labels (only at eps=1 do they cancel).")
        if labels is not None and labels.shape != z_s.shape[:1]:
            raise ValueError(
                f"OFA's loss needs one label per sample, shape ({z_s.shape[0]},); got {tuple(labels.shape)}.")
        with _float32(z_s):
            log_p_s = F.log_softmax(z_s.float() / self.temperature, dim=1)
            p_t = F.softmax(z_t.detach().float() / self.temperature, dim=1)
            if labels is None:  # eps = 1: the labels cancel
                return (-p_t * log_p_s).sum(dim=-1).mean()
            target_mask = F.one_hot(labels.long(), z_s.shape[1]).float()
            weights = (p_t + target_mask) ** self.eps - target_mask
            return (-weights * log_p_s).sum(dim=-1).mean()


class SepConv(nn.Sequential):
    """OFA's ``SepConv`` (``distillers/utils.py``): depthwise 3×3 stride 2 → pointwise → BN → ReLU → depthwise 3×3 →
    pointwise to ``out_channels`` → BN → ReLU; halves the spatial size."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        c = in_channels
        super().__init__(
            nn.Conv2d(c, c, kernel_size=3, stride=2, padding=1, groups=c, bias=False),
            nn.Conv2d(c, c, kernel_size=1, bias=False),
            nn.BatchNorm2d(c),
            nn.ReLU(),
            nn.Conv2d(c, c, kernel_size=3, stride=1, padding=1, groups=c, bias=False),
            nn.Conv2d(c, out_channels, kernel_size=1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(),
        )


class PatchMerging(nn.Module):
    """OFA's ``PatchMerging`` (Swin's, ``distillers/utils.py``): each 2×2 patch group concatenated (order x0, x1, x2,
    x3 as there) → LayerNorm(4·dim) → Linear(4·dim, out_dim, bias=False) → activation. ``[B, g², dim]`` →
    ``[B, (g/2)², out_dim]``."""

    def __init__(self, grid: int, dim: int, out_dim: int, act: bool) -> None:
        super().__init__()
        self.grid = grid
        self.norm = nn.LayerNorm(4 * dim)
        self.reduction = nn.Linear(4 * dim, out_dim, bias=False)
        self.act = nn.GELU() if act else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        b, _, c = x.shape
        x = x.reshape(b, self.grid, self.grid, c)
        x = torch.cat([x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]], dim=-1)
        return self.act(self.reduction(self.norm(x.reshape(b, -1, 4 * c))))


class TransformerBlock(nn.Module):
    """timm 0.6.5's ``vision_transformer.Block`` with the arguments OFA gives it (``Block(dim, num_heads=4)``):
    pre-norm multi-head self-attention without qkv bias, then a GELU MLP of ratio 4, both residual."""

    def __init__(self, dim: int, num_heads: int = BRANCH_HEADS) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"A ViT branch block splits its width {dim} over {num_heads} heads: they must divide it.")
        self.num_heads = num_heads
        self.norm1 = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.proj = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))

    def forward(self, x: Tensor) -> Tensor:
        b, n, d = x.shape
        q, k, v = self.qkv(self.norm1(x)).view(b, n, 3, self.num_heads, d // self.num_heads).permute(2, 0, 3, 1, 4)
        attended = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, n, d)
        x = x + self.proj(attended)
        return x + self.mlp(self.norm2(x))


def init_branch_weights(branch: nn.Module) -> None:
    """OFA's ``init_weights``: convs Kaiming-normal (fan_out, ReLU), BatchNorm 1 / 0, linears truncated normal
    (std 0.02, bias 0); LayerNorms keep PyTorch's 1 / 0."""
    for m in branch.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


class CNNStageBranch(nn.Sequential):
    """OFA's branch for a CNN student stage: ``[B, C, H, W]`` → logits ``[B, num_classes]``.

    ``num_downsamples`` SepConv blocks (OFA: ``4 − stage``), channels doubling from ``in_channels`` and the last one
    giving ``hidden_dim``; at the last stage (``num_downsamples = 0``) a 1×1 conv to ``hidden_dim`` instead. Then
    global average pooling and ``Linear(hidden_dim, num_classes)``. OFA sets ``hidden_dim`` to
    ``max(student feature dim, teacher feature dim)`` (the classifier inputs' widths).
    """

    def __init__(self, in_channels: int, hidden_dim: int, num_classes: int, num_downsamples: int) -> None:
        if num_downsamples < 0:
            raise ValueError(f"num_downsamples must be >= 0, got {num_downsamples}.")
        if num_downsamples == 0:
            blocks: list[nn.Module] = [nn.Conv2d(in_channels, hidden_dim, kernel_size=1)]
        else:
            blocks, channels = [], in_channels
            for i in range(num_downsamples):
                blocks.append(SepConv(channels, hidden_dim if i == num_downsamples - 1 else 2 * channels))
                channels *= 2
        super().__init__(*blocks, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(hidden_dim, num_classes))
        init_branch_weights(self)


class ViTStageBranch(nn.Module):
    """OFA's branch for a ViT student stage: tokens ``[B, prefix + g², D]`` → logits ``[B, num_classes]``.

    The ``prefix_tokens`` (CLS, …) are set aside and the ``g × g`` patch grid is merged by ``max(⌊log2(g / 7)⌋, 0)``
    :class:`PatchMerging` steps (the first to ``hidden_dim`` with GELU, later ones ``hidden_dim → hidden_dim`` with
    GELU except the last, as in ``OFA.__init__``), the prefix put back in front; then ``num_blocks`` transformer
    blocks of width ``hidden_dim`` (OFA: ``max(4 − stage, 1)``), then the CLS token (the first prefix token; OFA's
    ``TokenFilter`` takes the prefix, which it supports for one token) or, without prefix tokens, the mean token
    (``GAP1d``), then ``Linear(hidden_dim, num_classes)``. OFA sets ``hidden_dim`` to the student's feature dim.
    """

    def __init__(self, embed_dim: int, hidden_dim: int, num_classes: int, grid_size: int, prefix_tokens: int,
                 num_blocks: int) -> None:
        super().__init__()
        if num_blocks < 1 or prefix_tokens < 0 or grid_size < 1:
            raise ValueError(f"A ViT branch needs num_blocks >= 1, prefix_tokens >= 0 and grid_size >= 1; got "
                             f"{num_blocks}, {prefix_tokens}, {grid_size}.")
        merges = max(int(math.log2(grid_size / FINAL_PATCH_GRID)), 0)
        if merges == 0 and embed_dim != hidden_dim:
            raise ValueError(f"A {grid_size}×{grid_size} patch grid is not merged, so the tokens' width {embed_dim} "
                             f"must equal the branch width {hidden_dim}.")
        if merges > 0 and prefix_tokens > 0 and embed_dim != hidden_dim:
            raise ValueError(f"Prefix tokens of width {embed_dim} rejoin merged patches of width {hidden_dim}: "
                             "they must be equal.")
        mergers = []
        for i in range(merges):
            grid = grid_size // 2**i
            if grid % 2:
                raise ValueError(f"Patch merging halves the grid {merges} time(s) from {grid_size}: the grid "
                                 f"{grid}×{grid} is odd.")
            mergers.append(PatchMerging(grid, embed_dim if i == 0 else hidden_dim, hidden_dim,
                                        act=i == 0 or i != merges - 1))
        self.prefix_tokens, self.num_patches = prefix_tokens, grid_size**2
        self.merge = nn.Sequential(*mergers)
        self.blocks = nn.Sequential(*[TransformerBlock(hidden_dim) for _ in range(num_blocks)])
        self.head = nn.Linear(hidden_dim, num_classes)
        init_branch_weights(self)

    def forward(self, tokens: Tensor) -> Tensor:
        if tokens.dim() != 3 or tokens.shape[1] != self.prefix_tokens + self.num_patches:
            raise ValueError(f"This ViT branch reads [batch, {self.prefix_tokens} + {self.num_patches}, dim] tokens; "
                             f"got {tuple(tokens.shape)}.")
        x = self.merge(tokens[:, self.prefix_tokens :])
        if self.prefix_tokens:
            x = torch.cat([tokens[:, : self.prefix_tokens], x], dim=1)
        x = self.blocks(x)
        return self.head(x[:, 0] if self.prefix_tokens else x.mean(dim=1))


def ofa_stage_branch(stage_shape: Sequence[int], stage: int, num_stages: int, student_dim: int, teacher_dim: int,
                     num_classes: int, prefix_tokens: int = 0) -> nn.Module:
    """The branch ``OFA.__init__`` builds for student stage ``stage`` (1-based) of ``num_stages`` (OFA: 4), from the
    stage's per-sample shape: ``(C, H, W)`` gives a :class:`CNNStageBranch` with ``num_stages − stage`` downsamplings
    and width ``max(student_dim, teacher_dim)``; ``(prefix + g², D)`` a :class:`ViTStageBranch` with
    ``max(num_stages − stage, 1)`` blocks and width ``student_dim``. ``student_dim`` / ``teacher_dim`` are the
    widths of the classifier inputs (OFA's ``stage_info(-1)``)."""
    if not 1 <= stage <= num_stages:
        raise ValueError(f"stage must be in 1..{num_stages}, got {stage}.")
    if len(stage_shape) == 3:
        return CNNStageBranch(stage_shape[0], max(student_dim, teacher_dim), num_classes, num_stages - stage)
    if len(stage_shape) == 2:
        tokens, embed_dim = stage_shape
        grid = math.isqrt(tokens - prefix_tokens)
        if grid * grid != tokens - prefix_tokens:
            raise ValueError(f"{tokens} tokens minus {prefix_tokens} prefix token(s) is not a square patch grid.")
        return ViTStageBranch(embed_dim, student_dim, num_classes, grid, prefix_tokens, max(num_stages - stage, 1))
    raise ValueError(f"A stage hidden state is (C, H, W) or (tokens, dim) per sample; got {tuple(stage_shape)}.")


@register_objective("ofa-branches")
class OFABranchLoss(nn.Module):
    """``Σ_k L_ε(branch_k(h_k), z_t)`` over the student's stages: OFA's ``loss_ofa`` before its weight
    (``--ofa-loss-weight``, :data:`OFA_WEIGHTS`). Branch ``k`` is :func:`ofa_stage_branch` for stage ``k`` of ``K``
    (the stage hidden states given, in order; OFA uses the four stages of its students). The branches are
    training-only parameters; ε and T are shared with the output term (OFA broadcasts one ``--ofa-eps``)."""

    inputs = "student_stages"  # the student's stage hidden states as they are, the teacher's logits, the labels
    needs_labels = True
    warmup = 0.0

    def __init__(self, stage_shapes: Sequence[Sequence[int]], student_dim: int, teacher_dim: int, num_classes: int,
                 prefix_tokens: int = 0, eps: float = 1.0, temperature: float = 1.0) -> None:
        super().__init__()
        if not stage_shapes:
            raise ValueError("OFA's branches need at least one student stage.")
        self.branches = nn.ModuleList(
            ofa_stage_branch(shape, k, len(stage_shapes), student_dim, teacher_dim, num_classes, prefix_tokens)
            for k, shape in enumerate(stage_shapes, start=1)
        )
        self.loss = OFALoss(eps, temperature)

    @property
    def labels_required(self) -> bool:
        return self.loss.labels_required

    def forward(self, stage_features: Sequence[Tensor], z_t: Tensor, labels: Optional[Tensor] = None) -> Tensor:
        if len(stage_features) != len(self.branches):
            raise ValueError(f"Expected {len(self.branches)} stage hidden states, got {len(stage_features)}.")
        return torch.stack([self.loss(branch(h), z_t, labels)
                            for branch, h in zip(self.branches, stage_features)]).sum()
