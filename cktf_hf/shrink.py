"""A student from its teacher: a shallower (and/or narrower) copy of the teacher's own architecture.

``shrink_teacher(teacher, depth=0.5)`` keeps evenly spaced layers of the teacher (every other one at 0.5, the first
always kept, as DistilBERT did) and copies their weights, with the embeddings, the final norm and the classifier, so
the student starts where the teacher is. A narrower student (``width < 1``) takes evenly spaced entries of each
teacher weight along every dimension ("weight selection", Xu et al., *Initializing Models with Larger Ones*, ICLR 2024);
``init="fresh"`` gives the config's own random initialisation instead. Supported: ViT and DeiT
(``num_hidden_layers``), ResNet and ConvNeXt (each stage's ``depths``).
"""

from __future__ import annotations

import copy
import re

import torch
from torch import nn
from transformers import PreTrainedModel
from transformers.utils import logging

__all__ = ["SHRINKABLE_MODEL_TYPES", "STUDENT_INITS", "kept_layers", "select_weights", "shrink_teacher"]

SHRINKABLE_MODEL_TYPES = ("vit", "deit", "resnet", "convnext")
STUDENT_INITS = ("teacher", "fresh")
logger = logging.get_logger(__name__)
_CNN_WIDTH_MULTIPLE = 8  # narrowed CNN channels stay multiples of 8 (ResNet bottlenecks divide them by 4)


def kept_layers(n: int, depth: float) -> list[int]:
    """Indices of the layers kept out of ``n``: ``max(1, round(n * depth))`` evenly spaced ones, the first included
    (``kept_layers(12, 0.5) == [0, 2, 4, 6, 8, 10]``)."""
    k = min(n, max(1, round(n * depth)))
    return [i * n // k for i in range(k)]


def shrink_teacher(teacher: PreTrainedModel, depth: float = 0.5, width: float = 1.0,
                   init: str = "teacher") -> PreTrainedModel:
    """A student of the teacher's class and label space with a fraction ``depth`` of its layers (per stage for
    ResNet / ConvNeXt, at least one each) and a fraction ``width`` of its hidden sizes (rounded to a multiple of the
    attention heads for ViT / DeiT, of 8 for ResNet / ConvNeXt).

    With ``init="teacher"`` (the default) the student starts from the teacher's weights: the kept layers (see
    :func:`kept_layers`) take the weights of the teacher's layers they stand for, everything else (patch / stem
    embeddings, downsampling, final norm, classifier) by name; at ``width < 1`` each weight is cut down to the
    student's shape by :func:`select_weights`. ``init="fresh"`` keeps the config's own random initialisation. The
    student is returned in training mode, in float32, with gradients on, whatever the teacher's dtype and mode.

    Raises ``ValueError`` for an architecture other than ViT, DeiT, ResNet or ConvNeXt, for ``depth`` / ``width``
    outside (0, 1], for an ``init`` not in :data:`STUDENT_INITS`, or when ``depth < 1`` removes no layer and
    ``width = 1`` (the student would be the teacher: every stage has too few layers to thin out); when ``width < 1``
    still narrows it, such a ``depth`` is only warned about.
    """
    model_type = getattr(teacher.config, "model_type", None)
    if model_type not in SHRINKABLE_MODEL_TYPES:
        raise ValueError(
            f"shrink_teacher supports ViT, DeiT, ResNet and ConvNeXt teachers (model_type {SHRINKABLE_MODEL_TYPES}); "
            f"got model_type {model_type!r} ({type(teacher).__name__}). Pick a student of another architecture "
            "(a Hub id or a folder) instead."
        )
    for name, value in (("depth", depth), ("width", width)):
        if not 0 < value <= 1:
            raise ValueError(f"{name} must be in (0, 1], got {value}.")
    if init not in STUDENT_INITS:
        raise ValueError(f"init must be one of {STUDENT_INITS}, got {init!r}.")
    config = copy.deepcopy(teacher.config)
    if model_type in ("vit", "deit"):
        kept = [kept_layers(config.num_hidden_layers, depth)]
        lists = _layer_lists(teacher, model_type, config.num_hidden_layers)
        config.num_hidden_layers = len(kept[0])
        if width < 1:
            heads = config.num_attention_heads
            config.hidden_size = max(heads, round(config.hidden_size * width / heads) * heads)
            config.intermediate_size = max(1, round(config.intermediate_size * width))
    else:
        kept = [kept_layers(d, depth) for d in config.depths]
        lists = _layer_lists(teacher, model_type, len(config.depths))
        config.depths = [len(k) for k in kept]
        if width < 1:
            config.hidden_sizes = [_narrow(h, width) for h in config.hidden_sizes]
            if model_type == "resnet":
                config.embedding_size = _narrow(config.embedding_size, width)
    if depth < 1:
        _check_depth_removes_layers(teacher, model_type, kept, depth, width)
    if init == "fresh":
        config._name_or_path = ""  # nothing of the teacher's weights: not "fine-tuned from" it
    student = type(teacher)(config).float().train()
    if init == "teacher":
        student.load_state_dict(_teacher_weights(teacher, student, dict(zip(lists, kept))), strict=True)
    return student


def _check_depth_removes_layers(teacher: PreTrainedModel, model_type: str, kept: list[list[int]], depth: float,
                                width: float) -> None:
    """Refuse (``width = 1``) or warn (``width < 1``) when ``depth`` keeps every layer of every stage."""
    after = [len(k) for k in kept]
    if model_type in ("vit", "deit"):
        before = [teacher.config.num_hidden_layers]
        where = f"its encoder has {before[0]} layer(s) and keeps {after[0]} (at least one is kept)"
    else:
        before = list(teacher.config.depths)
        where = (f"its stages {', '.join(str(i) for i in range(len(before)))} have {before} layers and keep {after} "
                 "(each stage keeps at least one)")
    if after != before:
        return
    problem = f"depth={depth:g} removes no layer of this {type(teacher).__name__}: {where}."
    if width < 1:
        logger.warning("%s Only width=%g shrinks the student.", problem, width)
        return
    raise ValueError(f"{problem} The student would be the teacher. Shrink it with width < 1 (e.g. width=0.5), or "
                     "pick a smaller student of another architecture.")


def select_weights(weight: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """``weight`` cut down to ``shape`` by keeping evenly spaced indices along every dimension (the first and the
    last included), the same indices for every tensor of a given size, so that channels stay aligned across layers.
    """
    if weight.dim() != len(shape) or any(s > w for s, w in zip(shape, weight.shape)):
        raise ValueError(f"Cannot select a {tuple(shape)} weight out of a {tuple(weight.shape)} one.")
    for dim, (size, full) in enumerate(zip(shape, weight.shape)):
        if size < full:
            index = torch.linspace(0, full - 1, size).round().long()
            weight = weight.index_select(dim, index)
    return weight


def _narrow(size: int, width: float) -> int:
    return max(_CNN_WIDTH_MULTIPLE, round(size * width / _CNN_WIDTH_MULTIPLE) * _CNN_WIDTH_MULTIPLE)


def _layer_lists(teacher: nn.Module, model_type: str, count: int) -> list[str]:
    """Qualified names of the teacher's layer lists: the encoder's for ViT / DeiT, each stage's for the CNNs."""
    if model_type in ("vit", "deit"):
        names = [name for name, m in teacher.named_modules() if isinstance(m, nn.ModuleList) and len(m) == count
                 and re.search(r"(^|\.)(layer|layers)$", name)]
    else:
        names = [name for name, _ in teacher.named_modules() if re.search(r"(^|\.)stages\.\d+\.layers$", name)]
    if len(names) != (1 if model_type in ("vit", "deit") else count):
        raise ValueError(f"Cannot find the layer lists of this {type(teacher).__name__} (found {names}): its module "
                         "layout is not the one shrink_teacher knows for this transformers version.")
    return names


def _teacher_weights(teacher: nn.Module, student: nn.Module, kept: dict[str, list[int]]) -> dict:
    """The student's state dict filled from the teacher's: kept layers renumbered, everything else by name, each
    weight cut down to the student's shape."""
    source, target = teacher.state_dict(), student.state_dict()
    patterns = [(re.compile(rf"^{re.escape(name)}\.(\d+)\.(.*)$"), name, indices) for name, indices in kept.items()]
    weights = {}
    for key in target:
        teacher_key = key
        for pattern, name, indices in patterns:
            match = pattern.match(key)
            if match:
                teacher_key = f"{name}.{indices[int(match.group(1))]}.{match.group(2)}"
                break
        weights[key] = select_weights(source[teacher_key], target[key].shape)
    return weights
