"""Named student sizes, built from a config derived from the teacher's (same labels, image size and patching)."""

from __future__ import annotations

import os
from typing import Optional

from transformers import AutoConfig, AutoModelForImageClassification, PretrainedConfig, PreTrainedModel, ViTConfig

# hidden size, layers, attention heads, MLP size
STUDENT_SIZES: dict[str, tuple[int, int, int, int]] = {
    "vit-nano": (48, 3, 2, 192),
    "vit-tiny": (64, 4, 2, 256),  # 0.21M parameters at 28 px, patch 4
    "vit-small": (128, 6, 4, 512),
    "vit-base": (192, 8, 4, 768),
}


def student_config(size: str, teacher_config: PretrainedConfig, image_size: Optional[int] = None) -> ViTConfig:
    """A ViT config of a named size with the teacher's labels, channels, image size and (for ViT teachers) patch size.

    For a CNN teacher the image size comes from ``image_size`` (the image processor's) and the patch size is 4 up to
    64 px, 16 above.
    """
    if size not in STUDENT_SIZES:
        raise ValueError(f"Unknown student size {size!r}; choose one of {sorted(STUDENT_SIZES)}, or a Hub id / folder.")
    hidden, layers, heads, mlp = STUDENT_SIZES[size]
    size_px = image_size or getattr(teacher_config, "image_size", None)
    if not isinstance(size_px, int):
        raise ValueError("Cannot tell the image size from the teacher's config: pass image_size.")
    patch = getattr(teacher_config, "patch_size", None)
    if not isinstance(patch, int) or size_px % patch:
        patch = 4 if size_px <= 64 else 16
    return ViTConfig(
        image_size=size_px, patch_size=patch, num_channels=getattr(teacher_config, "num_channels", 3),
        hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads, intermediate_size=mlp,
        num_labels=teacher_config.num_labels, id2label=dict(teacher_config.id2label),
        label2id=dict(teacher_config.label2id),
    )


def load_or_build_student(
    student: str, teacher_config: PretrainedConfig, image_size: Optional[int] = None
) -> PreTrainedModel:
    """A named size (``vit-tiny``, ...) built fresh, or a Hub id / folder loaded with the teacher's label space."""
    if student in STUDENT_SIZES:
        return AutoModelForImageClassification.from_config(student_config(student, teacher_config, image_size))
    labels = dict(num_labels=teacher_config.num_labels, id2label=dict(teacher_config.id2label),
                  label2id=dict(teacher_config.label2id))
    if os.path.isdir(student) or "/" in student:
        config = AutoConfig.from_pretrained(student, **labels)
        return AutoModelForImageClassification.from_pretrained(student, config=config, ignore_mismatched_sizes=True)
    raise ValueError(f"Unknown student {student!r}: a size in {sorted(STUDENT_SIZES)}, a Hub id or a folder.")
