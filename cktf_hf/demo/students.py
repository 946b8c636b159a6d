"""Students for the demo's command line: named small ViTs (``cktf-vit-*``), a shrunken copy of the teacher
(``teacher:depth=0.5``), or a Hub id / folder.

The named ViTs are built from a config derived from the teacher's (same labels, image size and patching). Their names
carry a ``cktf-`` prefix so that they cannot pass for standard checkpoints (``cktf-vit-base`` has 3.75M parameters,
ViT-B/16 86M); the former names ``vit-nano``, ``vit-tiny``, ``vit-small``, ``vit-base`` still work, with a
``FutureWarning``.
"""

from __future__ import annotations

import os
import warnings
from typing import Optional, Union

from transformers import AutoConfig, AutoModelForImageClassification, PretrainedConfig, PreTrainedModel, ViTConfig

from ..shrink import STUDENT_INITS, shrink_teacher

# hidden size, layers, attention heads, MLP size
STUDENT_SIZES: dict[str, tuple[int, int, int, int]] = {
    "cktf-vit-nano": (48, 3, 2, 192),
    "cktf-vit-tiny": (64, 4, 2, 256),  # 0.21M parameters at 28 px, patch 4
    "cktf-vit-small": (128, 6, 4, 512),
    "cktf-vit-base": (192, 8, 4, 768),
}
MAX_PATCH_TOKENS = 1024  # patches per image a named student may have (a 32 x 32 grid)
DEPRECATED_STUDENT_NAMES = {name.removeprefix("cktf-"): name for name in STUDENT_SIZES}
TEACHER_STUDENT = "teacher"


def resolve_student_name(size: str) -> str:
    """The current name of a named student size: ``vit-tiny`` → ``cktf-vit-tiny`` with a ``FutureWarning``."""
    if size in DEPRECATED_STUDENT_NAMES:
        new = DEPRECATED_STUDENT_NAMES[size]
        warnings.warn(f"The student name {size!r} is deprecated (it reads like a standard checkpoint): use {new!r}.",
                      FutureWarning, stacklevel=3)
        return new
    return size


def student_config(size: str, teacher_config: PretrainedConfig, image_size: Optional[int] = None) -> ViTConfig:
    """A ViT config of a named size with the teacher's labels, channels, image size and (for ViT teachers) patch size.

    For a CNN teacher the image size comes from ``image_size`` (the image processor's) and the patch size is 4 up to
    64 px, 16 above. ``size`` may set the patch size itself: ``"cktf-vit-tiny:patch=7"`` (fewer, larger patches make a
    faster student).
    """
    size, _, options = size.partition(":")
    size = resolve_student_name(size)
    if size not in STUDENT_SIZES:
        raise ValueError(f"Unknown student size {size!r}; choose one of {sorted(STUDENT_SIZES)}, or a Hub id / folder.")
    hidden, layers, heads, mlp = STUDENT_SIZES[size]
    size_px = image_size or getattr(teacher_config, "image_size", None)
    if not isinstance(size_px, int):
        raise ValueError("Cannot tell the image size from the teacher's config: pass image_size.")
    patch = _patch_option(options, size, size_px) if options else getattr(teacher_config, "patch_size", None)
    if not isinstance(patch, int) or size_px % patch:
        patch = 4 if size_px <= 64 else 16
    return ViTConfig(
        image_size=size_px, patch_size=patch, num_channels=getattr(teacher_config, "num_channels", 3),
        hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads, intermediate_size=mlp,
        num_labels=teacher_config.num_labels, id2label=dict(teacher_config.id2label),
        label2id=dict(teacher_config.label2id),
    )


def _patch_option(options: str, size: str, size_px: int) -> int:
    """The ``patch=N`` of a named student's options. When N does not divide the image size, the workable divisor
    nearest to N (the smaller on a tie) is used, with a warning, so that a default such as ``patch=7`` works with any
    teacher; a workable patch is at least 2 px (or N itself) and cuts the image into at most ``MAX_PATCH_TOKENS``."""
    key, sep, value = (part.strip() for part in options.partition("="))
    if key != "patch" or not sep or not (value.isascii() and value.isdigit()) or not 0 < int(value) <= size_px:
        raise ValueError(f"Cannot read {options!r} in student {size}:{options}: write {size}:patch=N with N a "
                         f"patch size in pixels, at most the image size ({size_px} px), in the digits 0-9.")
    wanted = int(value)
    workable = workable_patches(size_px)
    if wanted in workable or (size_px % wanted == 0 and (size_px // wanted) ** 2 <= MAX_PATCH_TOKENS):
        return wanted
    if not workable or size_px % wanted == 0:
        near = sorted((px for px in range(max(size_px - 16, 2), size_px + 17) if workable_patches(px)),
                      key=lambda px: (abs(px - size_px), px))
        problem = (f"{(size_px // wanted) ** 2:,} patches, more than the {MAX_PATCH_TOKENS:,} a named student allows "
                   "(attention memory grows with their square)" if size_px % wanted == 0 else
                   f"no patch size of 2 px or more divides it into at most {MAX_PATCH_TOKENS:,} patches")
        raise ValueError(
            f"{size}:patch={wanted} on the {size_px}-px image: {problem}. "
            + (f"Patch sizes that work at {size_px} px: {workable}. Pick one of those"
               if workable else f"Image sizes near it that work: {sorted(near[:6])}. Resize to one of those")
            + ", or use 'teacher:depth=0.5' (the teacher shrunk) as the student.")
    patch = min(workable, key=lambda d: (abs(d - wanted), d))
    warnings.warn(f"{size}:patch={wanted} does not divide the {size_px}-px image: using {patch}-px patches "
                  f"({(size_px // patch) ** 2:,} tokens).", UserWarning, stacklevel=3)
    return patch


def workable_patches(size_px: int) -> list[int]:
    """Patch sizes of at least 2 px that divide ``size_px`` into 2 to ``MAX_PATCH_TOKENS`` patches per image."""
    return [d for d in range(2, size_px) if size_px % d == 0 and (size_px // d) ** 2 <= MAX_PATCH_TOKENS]


def _looks_like_a_path(student: str) -> bool:
    """A local path rather than a Hub id (``namespace/name``): starts with ``.``, ``/`` or ``~``, has more than one
    separator, or sits in an existing folder."""
    return (student.startswith((".", "/", "~", os.sep)) or student.count("/") > 1 or "\\" in student
            or ("/" in student and os.path.isdir(student.partition("/")[0])))


def parse_teacher_student(spec: str) -> dict[str, Union[float, str]]:
    """``"teacher"`` → ``{}``; ``"teacher:depth=0.5,width=0.75,init=fresh"`` → ``{"depth": 0.5, "width": 0.75,
    "init": "fresh"}`` (the keyword arguments of :func:`cktf_hf.shrink_teacher`)."""
    _, _, options = spec.partition(":")
    shrink: dict[str, Union[float, str]] = {}
    for item in filter(None, (part.strip() for part in options.split(","))):
        key, sep, value = (part.strip() for part in item.partition("="))
        if key not in ("depth", "width", "init") or not sep:
            raise ValueError(f"Cannot read {item!r} in --student {spec!r}: write teacher:depth=0.5,width=1.0,"
                             "init=teacher.")
        if key in shrink:
            raise ValueError(f"{key} is given twice in --student {spec!r}: give it once.")
        if key == "init":
            if value not in STUDENT_INITS:
                raise ValueError(f"init in --student {spec!r} must be one of {STUDENT_INITS}, got {value!r}.")
            shrink[key] = value
            continue
        try:
            shrink[key] = float(value)
        except ValueError:
            raise ValueError(f"{key} in --student {spec!r} must be a number, got {value!r}.") from None
    return shrink


def builds_fresh_student(student: str) -> bool:
    """Whether ``student`` names a student built afresh (a named size, the teacher shrunk), not a saved model."""
    base = student.partition(":")[0]
    return base in STUDENT_SIZES or base in DEPRECATED_STUDENT_NAMES or base == TEACHER_STUDENT


def load_or_build_student(
    student: str, teacher_config: PretrainedConfig, image_size: Optional[int] = None,
    teacher: Optional[Union[PreTrainedModel, str]] = None, trust_remote_code: bool = False,
) -> PreTrainedModel:
    """A named size (``cktf-vit-tiny``, ``cktf-vit-tiny:patch=7``, ...) built fresh; ``teacher[:depth=..,width=..]``, the teacher shrunk by
    :func:`cktf_hf.shrink_teacher` (depth 0.5 by default); or a Hub id / folder loaded with the teacher's label space.

    For ``teacher:...`` the teacher is ``teacher`` (a model, or a Hub id / folder), else loaded from
    ``teacher_config``'s own name and commit. ``trust_remote_code`` is passed to every ``from_pretrained``.
    """
    student = resolve_student_name(student)
    if student.partition(":")[0] in STUDENT_SIZES or student.partition(":")[0] in DEPRECATED_STUDENT_NAMES:
        return AutoModelForImageClassification.from_config(student_config(student, teacher_config, image_size))
    if student == TEACHER_STUDENT or student.startswith(TEACHER_STUDENT + ":"):
        options = parse_teacher_student(student)
        if teacher is None:
            teacher = AutoModelForImageClassification.from_pretrained(
                teacher_config._name_or_path, revision=getattr(teacher_config, "_commit_hash", None),
                trust_remote_code=trust_remote_code)
        elif isinstance(teacher, str):
            teacher = AutoModelForImageClassification.from_pretrained(teacher, trust_remote_code=trust_remote_code)
        return shrink_teacher(teacher, **{"depth": 0.5, **options})
    labels = dict(num_labels=teacher_config.num_labels, id2label=dict(teacher_config.id2label),
                  label2id=dict(teacher_config.label2id))
    if not os.path.isdir(student) and _looks_like_a_path(student):
        raise FileNotFoundError(
            f"--student {student!r}: no such folder. Pass a folder holding a saved model (config.json and weights), a "
            f"Hub id (namespace/name), a size in {sorted(STUDENT_SIZES)}, or 'teacher:depth=0.5'.")
    if os.path.isdir(student) or "/" in student:
        config = AutoConfig.from_pretrained(student, trust_remote_code=trust_remote_code, **labels)
        return AutoModelForImageClassification.from_pretrained(student, config=config, ignore_mismatched_sizes=True,
                                                               trust_remote_code=trust_remote_code)
    raise ValueError(f"Unknown student {student!r}: a size in {sorted(STUDENT_SIZES)}, 'teacher:depth=0.5' (a "
                     "shrunken copy of the teacher), a Hub id or a folder.")
