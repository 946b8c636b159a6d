"""The teacher's own input: the student's batch re-normalised (and resized) for a teacher whose processor differs.

As timm's ``DistillationTeacher.normalize_input`` (huggingface/pytorch-image-models at
aa4b5850c1543fa488abf260f18390eda46cf85d, ``timm/task/distillation.py``): ``x_t = (x_s · std_s + mean_s − mean_t) /
std_t``, and the batch unchanged when both mean and std are equal. timm never resizes (its student and teacher share
the input size); here a teacher whose processor asks for another size gets the batch resized bilinearly (antialiased
when shrinking), which commutes with the per-channel affine re-normalisation.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Optional, Union

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
