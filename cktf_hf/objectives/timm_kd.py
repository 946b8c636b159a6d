"""timm's feature distillation task (``train.py --kd-model-name NAME --kd-distill-type feature``, timm ≥ 1.0.23).

Followed from huggingface/pytorch-image-models at aa4b5850c1543fa488abf260f18390eda46cf85d (timm 1.0.28; the same
loss code at tag v1.0.23, b6432177e3b2ba0693e627e00bfd999b13f3602c),
``timm/task/distillation.py``. timm's ``logit`` task needs no module of its own: ``LogitDistillationTask.forward``
computes ``kl_div(log_softmax(z_s / T), log_softmax(z_t / T), reduction="batchmean", log_target=True) · T²``,
which is :class:`~cktf_hf.objectives.classic.KDLoss` term for term, with ``--kd-temperature 4`` (train.py's
default) and weights task 1, distill 1 (both unset: "Mode 3: equal weights"). Both tasks feed the teacher the
student's batch re-normalised to the teacher's mean/std (``DistillationTeacher.normalize_input``):
:func:`cktf_hf.teacher_input.renormalize_for_teacher`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch.nn.functional as F
from torch import Tensor, nn

from .classic import ClassicObjective, Shape, _float32


class TimmFeatureLoss(ClassicObjective):
    """``MSE(P(f_s), f_t)`` on the pooled pre-logits (the classifier inputs), as ``FeatureDistillationTask``.

    ``P`` is ``nn.Linear(student_dim, teacher_dim)`` with PyTorch's default initialisation when the widths differ
    and the identity when they are equal (``FeatureDistillationTrainableModule``); ``F.mse_loss`` averages over
    batch and features. timm's weights: task 1, distill 1. The projector is a training-only parameter (timm saves it
    as task state, never in the model).
    """

    inputs = "final"

    def __init__(self, student_dim: int, teacher_dim: int) -> None:
        super().__init__()
        self.projection = nn.Linear(student_dim, teacher_dim) if student_dim != teacher_dim else nn.Identity()

    @classmethod
    def from_shapes(cls, student_shapes: Sequence[Shape], teacher_shapes: Sequence[Shape]) -> "TimmFeatureLoss":
        (student_shape,), (teacher_shape,) = student_shapes, teacher_shapes
        return cls(math.prod(student_shape), math.prod(teacher_shape))

    def forward(self, f_s: Tensor, f_t: Tensor) -> Tensor:
        projected = self.projection(f_s.flatten(1))
        f_t = f_t.detach().flatten(1)
        if projected.shape != f_t.shape:
            raise ValueError(f"timm-feature compares pooled features: the student's {tuple(f_s.shape)} projected to "
                             f"{tuple(projected.shape)} against the teacher's {tuple(f_t.shape)}.")
        with _float32(f_s):
            return F.mse_loss(projected.float(), f_t.float())

