"""Classic knowledge-distillation objectives, following RepDistiller's ``distiller_zoo`` (Tian et al., ICLR 2020).

Every objective is an ``nn.Module`` with a class attribute ``inputs`` that says what its ``forward(student, teacher)``
takes:

- ``"logits"``: class logits ``[B, C]``;
- ``"final"``: pooled classifier-input features ``[B, D]`` (flattened if they carry more dimensions);
- ``"hint"``: one feature-map pair ``[B, C, H, W]``;
- ``"last_stage"``: one feature tensor of any shape ``[B, ...]``, flattened inside;
- ``"stages"``: two equally long lists of feature maps ``[B, C, H, W]``, one entry per stage pair.

Logit objectives with ``needs_labels = True`` (DKD) take the ground-truth labels ``[B]`` as a third argument. An
objective with ``warmup > 0`` (epochs) has its weight scaled by :meth:`~ClassicObjective.weight_factor`.

``from_shapes(student_shapes, teacher_shapes, **kwargs)`` builds an objective from the per-sample shapes (no batch
dimension) of exactly those tensors. Teacher inputs are detached. Learnable parts (regressors, embeddings) run under
the caller's autocast; the loss arithmetic itself runs in float32 with autocast disabled, so the result is a 0-dim
float32 tensor.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import ClassVar, Literal, TypeVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .registry import register_objective

InputKind = Literal["logits", "final", "hint", "last_stage", "stages"]
Shape = tuple[int, ...]
ObjectiveT = TypeVar("ObjectiveT", bound="ClassicObjective")


def _float32(x: Tensor) -> torch.autocast:
    """Context that disables autocast on ``x``'s device, so the loss arithmetic stays in float32."""
    return torch.autocast(device_type=x.device.type, enabled=False)


def _pool_to_common_size(a: Tensor, b: Tensor) -> tuple[Tensor, Tensor]:
    """Adaptive-average-pool ``[B, C, H, W]`` maps ``a`` and ``b`` to their common (smaller) spatial size."""
    size = (min(a.shape[2], b.shape[2]), min(a.shape[3], b.shape[3]))
    if a.shape[2:] != size:
        a = F.adaptive_avg_pool2d(a, size)
    if b.shape[2:] != size:
        b = F.adaptive_avg_pool2d(b, size)
    return a, b


class ClassicObjective(nn.Module):
    """Base class: declares the ``inputs`` kind and builds the objective from feature shapes."""

    inputs: ClassVar[InputKind]
    needs_labels: ClassVar[bool] = False  # whether it reads the ground-truth labels
    warmup: float = 0.0

    @property
    def labels_required(self) -> bool:
        """Whether a batch without labels cannot be used: by default whenever the loss reads them."""
        return self.needs_labels

    def weight_factor(self, epoch: int) -> float:
        """Multiplier of this term's weight in training epoch ``epoch`` (counted from 1): ``min(epoch / warmup, 1)``,
        or 1 without a warm-up."""
        return min(epoch / self.warmup, 1.0) if self.warmup > 0 else 1.0

    @classmethod
    def from_shapes(
        cls: type[ObjectiveT], student_shapes: Sequence[Shape], teacher_shapes: Sequence[Shape], **kwargs
    ) -> ObjectiveT:
        """Build from the per-sample shapes of the tensors ``forward`` receives; shape-free objectives ignore them."""
        return cls(**kwargs)


@register_objective("kd")
class KDLoss(ClassicObjective):
    """Hinton, Vinyals & Dean, "Distilling the Knowledge in a Neural Network", NIPS Deep Learning Workshop 2015.

    ``T² · (1/B) Σ_b KL(softmax(z_t[b] / T) ‖ softmax(z_s[b] / T))``.
    """

    inputs = "logits"

    def __init__(self, temperature: float = 4.0) -> None:
        super().__init__()
        self.temperature = temperature

    def forward(self, z_s: Tensor, z_t: Tensor) -> Tensor:
        with _float32(z_s):
            log_p_s = F.log_softmax(z_s.float() / self.temperature, dim=1)
            log_p_t = F.log_softmax(z_t.detach().float() / self.temperature, dim=1)
            kl = F.kl_div(log_p_s, log_p_t, reduction="batchmean", log_target=True)
            return kl * self.temperature**2


@register_objective("fitnets")
class FitNetsLoss(ClassicObjective):
    """Romero, Ballas, Kahou, Chassang, Gatta & Bengio, "FitNets: Hints for Thin Deep Nets", ICLR 2015.

    ``MSE(r(f_s), f_t)`` with a learned regressor ``r`` built like RepDistiller's ``ConvReg`` from the per-sample
    shapes ``(C, H, W)``:

    - ``H_s = 2·H_t``: 3×3 stride-2 conv;
    - ``2·H_s = H_t``: 4×4 stride-2 transposed conv;
    - ``H_s ≥ H_t``: conv with kernel ``(1 + H_s − H_t, 1 + W_s − W_t)``;
    - otherwise (where ``ConvReg`` gives up): the teacher map is adaptive-average-pooled to the student's
      ``H × W`` and ``r`` is a 1×1 conv.

    Then BatchNorm2d, and no ReLU: RepDistiller's CIFAR hints were post-ReLU (non-negative), while HF ViT / ConvNeXt
    hidden states are signed, which a ReLU could never match.
    """

    inputs = "hint"

    def __init__(self, student_shape: Shape, teacher_shape: Shape) -> None:
        super().__init__()
        (c_s, h_s, w_s), (c_t, h_t, w_t) = student_shape, teacher_shape
        self.target_size: tuple[int, int] | None = None
        if h_s == 2 * h_t and w_s == 2 * w_t:
            conv = nn.Conv2d(c_s, c_t, kernel_size=3, stride=2, padding=1)
        elif 2 * h_s == h_t and 2 * w_s == w_t:
            conv = nn.ConvTranspose2d(c_s, c_t, kernel_size=4, stride=2, padding=1)
        elif h_s >= h_t and w_s >= w_t:
            conv = nn.Conv2d(c_s, c_t, kernel_size=(1 + h_s - h_t, 1 + w_s - w_t))
        else:
            conv = nn.Conv2d(c_s, c_t, kernel_size=1)
            self.target_size = (h_s, w_s)
        self.regressor = nn.Sequential(conv, nn.BatchNorm2d(c_t))

    @classmethod
    def from_shapes(
        cls: type[ObjectiveT], student_shapes: Sequence[Shape], teacher_shapes: Sequence[Shape], **kwargs
    ) -> ObjectiveT:
        (student_shape,), (teacher_shape,) = student_shapes, teacher_shapes
        return cls(student_shape, teacher_shape, **kwargs)

    def forward(self, f_s: Tensor, f_t: Tensor) -> Tensor:
        prediction = self.regressor(f_s.float()).float()
        target = f_t.detach().float()
        with _float32(prediction):
            if self.target_size is not None:
                target = F.adaptive_avg_pool2d(target, self.target_size)
            return F.mse_loss(prediction, target)


@register_objective("at")
class AttentionTransferLoss(ClassicObjective):
    """Zagoruyko & Komodakis, "Paying More Attention to Attention: Improving the Performance of Convolutional Neural
    Networks via Attention Transfer", ICLR 2017.

    Per stage ``A(f) = L2normalize(flatten(mean_c |f|^p))`` and ``mean((A_s − A_t)²)``, the larger map first pooled
    to the smaller ``H × W``; stage losses are summed. (``|f|`` as in the paper; RepDistiller writes ``f^p``, the same
    for even ``p`` and for its post-ReLU features.)
    """

    inputs = "stages"

    def __init__(self, p: float = 2.0) -> None:
        super().__init__()
        self.p = p

    def attention(self, f: Tensor) -> Tensor:
        """Spatial attention map ``[B, H·W]`` of a feature map ``[B, C, H, W]``."""
        return F.normalize(f.abs().pow(self.p).mean(dim=1).flatten(1), dim=1)

    def forward(self, g_s: Sequence[Tensor], g_t: Sequence[Tensor]) -> Tensor:
        with _float32(g_s[0]):
            total = torch.zeros((), device=g_s[0].device)
            for f_s, f_t in zip(g_s, g_t, strict=True):
                f_s, f_t = _pool_to_common_size(f_s.float(), f_t.detach().float())
                total = total + (self.attention(f_s) - self.attention(f_t)).pow(2).mean()
            return total


@register_objective("sp")
class SimilarityPreservingLoss(ClassicObjective):
    """Tung & Mori, "Similarity-Preserving Knowledge Distillation", ICCV 2019.

    ``G = F·Fᵀ`` (``B × B``) on flattened features, rows L2-normalised; ``‖G_t − G_s‖²_F / B²``.
    """

    inputs = "last_stage"

    def forward(self, f_s: Tensor, f_t: Tensor) -> Tensor:
        batch_size = f_s.shape[0]
        with _float32(f_s):
            f_s, f_t = f_s.float().flatten(1), f_t.detach().float().flatten(1)
            g_s = F.normalize(f_s @ f_s.T, dim=1)
            g_t = F.normalize(f_t @ f_t.T, dim=1)
            return (g_t - g_s).pow(2).sum() / batch_size**2


@register_objective("cc")
class CorrelationCongruenceLoss(ClassicObjective):
    """Peng, Jin, Liu et al., "Correlation Congruence for Knowledge Distillation", ICCV 2019 (RepDistiller variant).

    Trainable linear embeddings ``e_s = W_s f_s + b_s`` and ``e_t = W_t f_t + b_t`` (no normalisation),
    ``δ = |e_s − e_t|`` and ``mean_b Σ_d δ[b, d] · δ[b+1, d]`` over consecutive samples.
    """

    inputs = "final"

    def __init__(self, student_dim: int, teacher_dim: int, feat_dim: int = 128) -> None:
        super().__init__()
        self.embed_s = nn.Linear(student_dim, feat_dim)
        self.embed_t = nn.Linear(teacher_dim, feat_dim)

    @classmethod
    def from_shapes(
        cls: type[ObjectiveT], student_shapes: Sequence[Shape], teacher_shapes: Sequence[Shape], **kwargs
    ) -> ObjectiveT:
        (student_shape,), (teacher_shape,) = student_shapes, teacher_shapes
        return cls(math.prod(student_shape), math.prod(teacher_shape), **kwargs)

    def forward(self, f_s: Tensor, f_t: Tensor) -> Tensor:
        e_s = self.embed_s(f_s.float().flatten(1)).float()
        e_t = self.embed_t(f_t.detach().float().flatten(1)).float()
        with _float32(e_s):
            delta = (e_s - e_t).abs()
            return (delta[:-1] * delta[1:]).sum(dim=1).mean()


@register_objective("vid")
class VIDLoss(ClassicObjective):
    """Ahn, Hu, Damianou, Lawrence & Dai, "Variational Information Distillation for Knowledge Transfer", CVPR 2019.

    Per stage: mean ``μ = r(f_s)`` from three 1×1 convs ``C_s → C_t → C_t → C_t`` (ReLU between, no bias) and a
    per-channel variance ``σ² = softplus(ρ) + eps``, ``ρ`` initialised so that ``σ² = init_pred_var``;
    loss ``mean(½ ((μ − f_t)² / σ² + log σ²))``, the larger map first pooled to the smaller ``H × W``.
    Stage losses are summed.
    """

    inputs = "stages"

    def __init__(
        self,
        student_shapes: Sequence[Shape],
        teacher_shapes: Sequence[Shape],
        init_pred_var: float = 5.0,
        eps: float = 1e-5,
    ) -> None:
        super().__init__()
        if len(student_shapes) != len(teacher_shapes):
            raise ValueError(f"VID needs one teacher shape per student shape, got {student_shapes}, {teacher_shapes}.")
        self.eps = eps
        rho = math.log(math.expm1(init_pred_var - eps))
        self.regressors = nn.ModuleList()
        self.log_scales = nn.ParameterList()
        for (c_s, *_), (c_t, *_) in zip(student_shapes, teacher_shapes):
            self.regressors.append(
                nn.Sequential(
                    nn.Conv2d(c_s, c_t, kernel_size=1, bias=False),
                    nn.ReLU(),
                    nn.Conv2d(c_t, c_t, kernel_size=1, bias=False),
                    nn.ReLU(),
                    nn.Conv2d(c_t, c_t, kernel_size=1, bias=False),
                )
            )
            self.log_scales.append(nn.Parameter(torch.full((c_t,), rho)))

    @classmethod
    def from_shapes(
        cls: type[ObjectiveT], student_shapes: Sequence[Shape], teacher_shapes: Sequence[Shape], **kwargs
    ) -> ObjectiveT:
        return cls(student_shapes, teacher_shapes, **kwargs)

    def forward(self, g_s: Sequence[Tensor], g_t: Sequence[Tensor]) -> Tensor:
        total = torch.zeros((), device=g_s[0].device)
        for f_s, f_t, regressor, log_scale in zip(g_s, g_t, self.regressors, self.log_scales, strict=True):
            f_s, f_t = _pool_to_common_size(f_s.float(), f_t.detach().float())
            mean = regressor(f_s).float()
            with _float32(mean):
                var = (F.softplus(log_scale.float()) + self.eps).view(1, -1, 1, 1)
                total = total + (0.5 * ((mean - f_t).pow(2) / var + var.log())).mean()
        return total


@register_objective("rkd")
class RKDLoss(ClassicObjective):
    """Park, Kim, Lu & Cho, "Relational Knowledge Distillation", CVPR 2019 (as RepDistiller's ``RKDLoss``).

    Distance term: smooth-L1 between the pairwise Euclidean distance matrices, each divided by its mean non-zero
    entry. Angle term: smooth-L1 between ``cos∠(x_j − x_i, x_k − x_i)`` over all triplets ``(i, j, k)``.
    Loss ``distance_weight · L_d + angle_weight · L_a``.
    """

    inputs = "final"

    def __init__(self, distance_weight: float = 25.0, angle_weight: float = 50.0) -> None:
        super().__init__()
        self.distance_weight = distance_weight
        self.angle_weight = angle_weight

    @staticmethod
    def normalized_distances(e: Tensor, eps: float = 1e-12) -> Tensor:
        """Pairwise distances ``[B, B]`` (zero diagonal) divided by their mean non-zero value."""
        squared_norms = e.pow(2).sum(dim=1)
        squared = (squared_norms[:, None] + squared_norms[None, :] - 2 * e @ e.T).clamp(min=eps)
        diagonal = torch.eye(len(e), dtype=torch.bool, device=e.device)
        distances = squared.sqrt().masked_fill(diagonal, 0.0)
        return distances / distances[distances > 0].mean()

    @staticmethod
    def angles(e: Tensor) -> Tensor:
        """Flattened cosines ``[B³]`` between the difference vectors ``e_j − e_i`` and ``e_k − e_i``."""
        differences = F.normalize(e[None, :, :] - e[:, None, :], p=2, dim=2)
        return torch.bmm(differences, differences.transpose(1, 2)).flatten()

    def forward(self, f_s: Tensor, f_t: Tensor) -> Tensor:
        with _float32(f_s):
            student, teacher = f_s.float().flatten(1), f_t.detach().float().flatten(1)
            loss_d = F.smooth_l1_loss(self.normalized_distances(student), self.normalized_distances(teacher))
            loss_a = F.smooth_l1_loss(self.angles(student), self.angles(teacher))
            return self.distance_weight * loss_d + self.angle_weight * loss_a


@register_objective("pkt")
class PKTLoss(ClassicObjective):
    """Passalis & Tefas, "Learning Deep Representations with Probabilistic Knowledge Transfer", ECCV 2018
    (as RepDistiller's ``PKT.cosine_similarity_loss``).

    Cosine similarities mapped to ``[0, 1]`` by ``(c + 1) / 2`` and row-normalised into conditional probabilities
    ``P``; loss ``mean(P_t · log((P_t + eps) / (P_s + eps)))``. Rows are divided by ``‖x‖ + eps`` as in
    RepDistiller, with the norm's gradient taken as 0 at an all-zero row (``sqrt``'s is infinite there, which made
    RepDistiller's gradient NaN on a zero row, e.g. a student whose features are all ReLU-dead).
    """

    inputs = "final"

    def __init__(self, eps: float = 1e-7) -> None:
        super().__init__()
        self.eps = eps

    def conditional_probabilities(self, x: Tensor) -> Tensor:
        """Row-normalised ``(cos + 1) / 2`` similarity matrix ``[B, B]``."""
        x = x / (torch.linalg.vector_norm(x, dim=1, keepdim=True) + self.eps)  # finite gradient at a zero row
        x = x.masked_fill(x.isnan(), 0.0)  # as RepDistiller: non-finite inputs must not poison the batch
        similarity = (x @ x.T + 1.0) / 2.0
        return similarity / similarity.sum(dim=1, keepdim=True)

    def forward(self, f_s: Tensor, f_t: Tensor) -> Tensor:
        with _float32(f_s):
            p_s = self.conditional_probabilities(f_s.float().flatten(1))
            p_t = self.conditional_probabilities(f_t.detach().float().flatten(1))
            return (p_t * ((p_t + self.eps) / (p_s + self.eps)).log()).mean()


@register_objective("nst")
class NSTLoss(ClassicObjective):
    """Huang & Wang, "Like What You Like: Knowledge Distill via Neuron Selectivity Transfer", arXiv:1707.01219, 2017.

    Per stage, the larger map is pooled to the smaller ``H × W``; each channel's spatial map is flattened and
    L2-normalised; squared MMD with the kernel ``k(a, b) = (a·b)²``:
    ``mean k(t, t) + mean k(s, s) − 2 · mean k(s, t)``. Stage losses are summed.
    """

    inputs = "stages"

    @staticmethod
    def poly_kernel(a: Tensor, b: Tensor) -> Tensor:
        """``(a_i · b_j)²`` for all channel pairs: ``[B, C_a, N] × [B, C_b, N] → [B, C_a, C_b]``."""
        return torch.bmm(a, b.transpose(1, 2)).pow(2)

    def forward(self, g_s: Sequence[Tensor], g_t: Sequence[Tensor]) -> Tensor:
        with _float32(g_s[0]):
            total = torch.zeros((), device=g_s[0].device)
            for f_s, f_t in zip(g_s, g_t, strict=True):
                f_s, f_t = _pool_to_common_size(f_s.float(), f_t.detach().float())
                s = F.normalize(f_s.flatten(2), dim=2)
                t = F.normalize(f_t.flatten(2), dim=2)
                mmd = self.poly_kernel(t, t).mean() + self.poly_kernel(s, s).mean() - 2 * self.poly_kernel(s, t).mean()
                total = total + mmd
            return total
