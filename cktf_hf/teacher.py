"""Loading and freezing the teacher, and checking it against the student."""

from __future__ import annotations

import os
from typing import Optional, Union

import torch
from transformers import AutoModelForImageClassification, PreTrainedModel

from .config import ContrastiveDistillationConfig

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def teacher_dtype(args: ContrastiveDistillationConfig) -> torch.dtype:
    """The configured teacher dtype; ``auto`` follows the training precision (bf16 / fp16 / float32)."""
    if args.teacher_dtype != "auto":
        return _DTYPES[args.teacher_dtype]
    return torch.bfloat16 if args.bf16 else torch.float16 if args.fp16 else torch.float32


def load_teacher(
    teacher: Optional[Union[str, PreTrainedModel]], args: ContrastiveDistillationConfig
) -> PreTrainedModel:
    """The teacher as a frozen model (eval mode, no gradients), cast to the configured dtype.

    A string is a Hub id or a local folder, loaded with ``AutoModelForImageClassification.from_pretrained``
    (safetensors only; remote code only with ``trust_remote_code``).
    """
    if teacher is None:
        raise ValueError("No teacher: set ContrastiveDistillationConfig(teacher=<Hub id or folder>) or pass teacher_model.")
    if isinstance(teacher, str):
        teacher = _from_pretrained(teacher, args)
    elif not isinstance(teacher, PreTrainedModel):
        raise TypeError(f"teacher_model must be a Hub id, a folder or a PreTrainedModel, got {type(teacher).__name__}.")
    teacher = teacher.to(teacher_dtype(args))
    teacher.eval()
    teacher.requires_grad_(False)
    return teacher


def _from_pretrained(name: str, args: ContrastiveDistillationConfig) -> PreTrainedModel:
    try:
        return AutoModelForImageClassification.from_pretrained(
            name,
            revision=args.teacher_revision,
            use_safetensors=True,
            trust_remote_code=args.trust_remote_code,
        )
    except OSError as error:
        if os.path.isdir(name):
            raise OSError(f"Could not load the teacher from folder {name!r}: {error}") from error
        offline = os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes")
        hint = (
            "HF_HUB_OFFLINE is set, so only the local cache is searched: unset it to download, or pass a local folder."
            if offline
            else "Check the repo id and revision, your network and HF_TOKEN for private repos; or download the repo "
            "elsewhere (huggingface-cli download <repo> --local-dir DIR) and pass teacher=DIR, with HF_HUB_OFFLINE=1."
        )
        raise OSError(f"Could not load the teacher {name!r} from the Hugging Face Hub. {hint}\nCause: {error}") from error


def check_label_spaces(student: PreTrainedModel, teacher: PreTrainedModel, uses_teacher_labels: bool) -> None:
    """Fail when the teacher's and student's label spaces differ while the objective compares them."""
    if not uses_teacher_labels:
        return
    s_cfg, t_cfg = student.config, teacher.config
    if s_cfg.num_labels != t_cfg.num_labels:
        raise ValueError(
            f"The student has {s_cfg.num_labels} labels but the teacher has {t_cfg.num_labels}. Build the student "
            "with the teacher's label space: num_labels=teacher.config.num_labels, id2label=teacher.config.id2label, "
            "label2id=teacher.config.label2id (or use preset='transfer' for a different target task)."
        )
    s_labels = {int(k): v for k, v in s_cfg.id2label.items()}
    t_labels = {int(k): v for k, v in t_cfg.id2label.items()}
    if s_labels != t_labels:
        diff = [f"{i}: student {s_labels.get(i)!r} vs teacher {t_labels.get(i)!r}"
                for i in sorted(t_labels) if s_labels.get(i) != t_labels.get(i)][:5]
        raise ValueError(
            "The student's id2label differs from the teacher's (" + "; ".join(diff) + "). Build the student with "
            "id2label=teacher.config.id2label and label2id=teacher.config.label2id so that class i means the same "
            "on both sides."
        )
