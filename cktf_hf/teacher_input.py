"""The teacher's own input: the student's batch re-normalised (and resized) for a teacher whose processor differs.

As timm's ``DistillationTeacher.normalize_input`` (huggingface/pytorch-image-models at
aa4b5850c1543fa488abf260f18390eda46cf85d, ``timm/task/distillation.py``): ``x_t = (x_s · std_s + mean_s − mean_t) /
std_t``, and the batch unchanged when both mean and std are equal. timm never resizes (its student and teacher share
the input size); here a teacher whose processor asks for another size gets the batch resized bilinearly (antialiased
when shrinking), which commutes with the per-channel affine re-normalisation.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Optional, Union

import torch
import torch.nn.functional as F

Stats = Union[Sequence[float], torch.Tensor]


def _channel_stats(values: Stats, name: str, like: torch.Tensor) -> torch.Tensor:
    stats = torch.as_tensor(values, dtype=like.dtype, device=like.device).reshape(-1)
    channels = like.shape[1]
    if stats.numel() == 1:
        stats = stats.expand(channels)
    if stats.numel() != channels:
        raise ValueError(f"{name} has {stats.numel()} values for pixel_values with {channels} channels.")
    return stats.view(1, -1, 1, 1)


def renormalize_for_teacher(
    pixel_values: torch.Tensor,
    student_mean: Stats,
    student_std: Stats,
    teacher_mean: Stats,
    teacher_std: Stats,
    teacher_size: Optional[Union[int, Sequence[int]]] = None,
) -> torch.Tensor:
    """The student's normalised batch ``[B, C, H, W]`` as the teacher's processor would have given it.

    Means and stds are one value per channel (or one for all). ``teacher_size`` is ``(height, width)``, one int for a
    square, or None to keep the student's size. Returns ``pixel_values`` itself when nothing differs.
    """
    if pixel_values.dim() != 4:
        raise ValueError(f"pixel_values must be [batch, channels, height, width], got {tuple(pixel_values.shape)}.")
    s_mean, s_std = _channel_stats(student_mean, "student_mean", pixel_values), _channel_stats(
        student_std, "student_std", pixel_values)
    t_mean, t_std = _channel_stats(teacher_mean, "teacher_mean", pixel_values), _channel_stats(
        teacher_std, "teacher_std", pixel_values)
    if (t_std <= 0).any() or (s_std <= 0).any():
        raise ValueError("Image stds must be > 0.")
    out = pixel_values
    if not (torch.equal(s_mean, t_mean) and torch.equal(s_std, t_std)):
        out = (out * s_std + s_mean - t_mean) / t_std
    if teacher_size is not None:
        size = (teacher_size, teacher_size) if isinstance(teacher_size, int) else tuple(teacher_size)
        if len(size) != 2 or min(size) < 1:
            raise ValueError(f"teacher_size must be an int or (height, width), got {teacher_size!r}.")
        if size != tuple(out.shape[-2:]):
            shrinking = size[0] < out.shape[-2] or size[1] < out.shape[-1]
            out = F.interpolate(out, size=size, mode="bilinear", align_corners=False, antialias=shrinking)
    return out


Size = tuple[int, int]


@dataclass(frozen=True)
class ProcessorInput:
    """What an image processor makes of an image: per-channel ``mean`` and ``std`` (0 and 1 without normalisation)
    and the output ``size`` ``(height, width)`` (None when it keeps the aspect ratio, e.g. ``shortest_edge``)."""

    mean: tuple[float, ...]
    std: tuple[float, ...]
    size: Optional[Size]

    @classmethod
    def of(cls, processor: Any, channels: int) -> "ProcessorInput":
        """Read a transformers image processor (duck-typed: ``image_mean``, ``image_std``, ``size``, ``crop_size``)."""
        normalizes = getattr(processor, "do_normalize", True) and getattr(processor, "image_mean", None) is not None

        def per_channel(values: Any) -> tuple[float, ...]:
            values = [float(v) for v in (values if isinstance(values, (list, tuple)) else [values])]
            return tuple(values * channels if len(values) == 1 else values)

        mean = per_channel(processor.image_mean) if normalizes else (0.0,) * channels
        std = per_channel(processor.image_std) if normalizes else (1.0,) * channels
        return cls(mean, std, _output_size(processor))


def _output_size(processor: Any) -> Optional[Size]:
    crop = getattr(processor, "crop_size", None) if getattr(processor, "do_center_crop", False) else None
    size = crop or (getattr(processor, "size", None) if getattr(processor, "do_resize", True) else None)
    if isinstance(size, int):
        return (size, size)
    side = (lambda key: size.get(key)) if isinstance(size, dict) else (lambda key: getattr(size, key, None))
    return (int(side("height")), int(side("width"))) if side("height") and side("width") else None  # also SizeDict


@dataclass(frozen=True)
class TeacherInput:
    """How the teacher's input is made from the student's batch: unchanged (the default), or re-normalised from the
    data's ``student`` statistics to the ``teacher``'s and resized to ``teacher_size`` (see
    :func:`renormalize_for_teacher`). ``reason`` says why it is unchanged when the two processors are not both known.
    Calling it turns a batch into the teacher's input."""

    student: Optional[ProcessorInput] = None
    teacher: Optional[ProcessorInput] = None
    teacher_size: Optional[Size] = None
    reason: str = "no image processor to compare with"

    @classmethod
    def between(cls, data_processor: Any, teacher_processor: Any, pixel_shape: Sequence[int]) -> "TeacherInput":
        """The teacher input for a batch of per-example shape ``pixel_shape`` ``(C, H, W)`` made by
        ``data_processor``, for a teacher whose own processor is ``teacher_processor`` (either may be None: then the
        batch goes to the teacher unchanged)."""
        if teacher_processor is None:
            return cls(reason="the teacher has no image processor of its own")
        if data_processor is None:
            return cls(reason="the data's image processor is unknown (pass processing_class to compare)")
        channels, height, width = pixel_shape[-3:]
        student, teacher = ProcessorInput.of(data_processor, channels), ProcessorInput.of(teacher_processor, channels)
        size = teacher.size if teacher.size not in (None, (height, width)) else None
        if (student.mean, student.std) == (teacher.mean, teacher.std) and size is None:
            return cls(reason="the teacher's processor has the data's mean, std and size")
        return cls(student, teacher, size, reason="")

    @property
    def renormalizes(self) -> bool:
        """Whether the batch is re-normalised (the two processors' mean or std differ)."""
        return self.teacher is not None and (self.student.mean, self.student.std) != (self.teacher.mean,
                                                                                       self.teacher.std)

    @property
    def changes_input(self) -> bool:
        """Whether the teacher sees anything but the student's batch."""
        return self.renormalizes or self.teacher_size is not None

    def __call__(self, pixel_values: torch.Tensor) -> torch.Tensor:
        if not self.changes_input:
            return pixel_values
        return renormalize_for_teacher(pixel_values, self.student.mean, self.student.std, self.teacher.mean,
                                       self.teacher.std, self.teacher_size)

    def fingerprint(self) -> dict[str, Any]:
        """What the teacher's outputs depend on (for the teacher-output cache); empty when the input is unchanged."""
        if not self.changes_input:
            return {}
        return {"teacher_mean": self.teacher.mean, "teacher_std": self.teacher.std, "teacher_size": self.teacher_size}

    def describe(self) -> str:
        """One line for the pairing table."""
        if not self.changes_input:
            return f"the student's pixel_values, unchanged ({self.reason})"
        changes = []
        if self.renormalizes:
            changes.append(f"re-normalised from mean {_values(self.student.mean)}, std {_values(self.student.std)} to "
                           f"the teacher's mean {_values(self.teacher.mean)}, std {_values(self.teacher.std)}")
        if self.teacher_size is not None:
            changes.append(f"resized to the teacher's {self.teacher_size[0]}×{self.teacher_size[1]}")
        return "the student's pixel_values " + " and ".join(changes)


def _values(values: Sequence[float]) -> str:
    return "(" + ", ".join(f"{v:.4g}" for v in values) + ")"
