"""FBT's contrast without its fusion model: Li, Wang, Yan, Ding, Gao & Xia, "Fuse Before Transfer: Knowledge Fusion
for Heterogeneous Distillation", ICCV 2025 (arXiv 2410.12342).

FBT aligns pooled ("spatial-agnostic") features with a symmetric in-batch InfoNCE of learnable temperature and keeps
OFA's loss on the logits. Its code (liguopeng0923/FBT) is not available here, so the temperature follows CLIP as
open_clip implements it (mlfoundations/open_clip at 89fb801f1e6087880e951fc8354b8a2077b79c6d):

- ``logit_scale = nn.Parameter(log(1 / 0.07))`` (``src/open_clip/model.py``);
- logits ``logit_scale.exp() · v_s · v_tᵀ``, loss ``½·[CE(S, diag) + CE(Sᵀ, diag)]`` (``src/open_clip/loss.py``,
  ``ClipLoss``);
- the scale clamped to ``[0, ln 100]`` after each optimizer step (``clamp_logit_scale``,
  ``src/open_clip_train/train.py``). Here the clamp is applied to the value the forward pass uses (gradient zero
  beyond the bounds), so no trainer hook is needed; the forward values are open_clip's.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from ..projectors import Projector
from .classic import ClassicObjective, Shape
from .contrastive import InBatchInfoNCELoss

CLIP_INIT_TEMPERATURE = 0.07
CLIP_MAX_LOGIT_SCALE = 100.0


class LearnableTemperatureInfoNCELoss(InBatchInfoNCELoss):
    """:class:`~cktf_hf.objectives.InBatchInfoNCELoss` (symmetric, in-batch, gathered across ranks) with CLIP's
    learnable temperature: ``τ = 1 / exp(clamp(logit_scale, 0, ln max_scale))``, ``logit_scale`` initialised to
    ``ln(1 / init_temperature)``. Keep ``logit_scale`` out of weight decay, as CLIP does."""

    def __init__(self, init_temperature: float = CLIP_INIT_TEMPERATURE,
                 max_scale: float = CLIP_MAX_LOGIT_SCALE) -> None:
        nn.Module.__init__(self)  # the temperature is the property below, not the parent's fixed attribute
        if not (0 < init_temperature <= 1 and 1 / init_temperature <= max_scale):
            raise ValueError(f"The clamp keeps 1 <= 1 / temperature <= max_scale: need 0 < init_temperature <= 1 and "
                             f"1 / init_temperature <= max_scale; got init_temperature={init_temperature}, "
                             f"max_scale={max_scale}.")
        self.max_log_scale = math.log(max_scale)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / init_temperature)))

    @property
    def temperature(self) -> Tensor:
        return torch.exp(-self.logit_scale.float().clamp(0.0, self.max_log_scale))


class FBTContrastLoss(ClassicObjective):
    """The pooled contrast of FBT on the final pair: both sides' classifier inputs through a linear head each to
    ``feat_dim`` and L2-normalised (:class:`~cktf_hf.projectors.Projector`, as the framework's final pair), then
    :class:`LearnableTemperatureInfoNCELoss`. Heads and temperature are training-only parameters. The
    ``fbt-contrast`` row adds OFA's loss (:class:`~cktf_hf.objectives.ofa.OFALoss` and
    :class:`~cktf_hf.objectives.ofa.OFABranchLoss`) beside it."""

    inputs = "final"

    def __init__(self, student_dim: int, teacher_dim: int, feat_dim: int = 128,
                 init_temperature: float = CLIP_INIT_TEMPERATURE) -> None:
        super().__init__()
        self.student_head = Projector(student_dim, feat_dim)
        self.teacher_head = Projector(teacher_dim, feat_dim)
        self.contrast = LearnableTemperatureInfoNCELoss(init_temperature)

    @classmethod
    def from_shapes(cls, student_shapes: Sequence[Shape], teacher_shapes: Sequence[Shape],
                    **kwargs) -> "FBTContrastLoss":
        (student_shape,), (teacher_shape,) = student_shapes, teacher_shapes
        return cls(math.prod(student_shape), math.prod(teacher_shape), **kwargs)

    def forward(self, f_s: Tensor, f_t: Tensor) -> Tensor:
        return self.contrast(self.student_head(f_s), self.teacher_head(f_t.detach()))
