"""Loading and freezing the teacher, and checking it against the student."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any, Optional, Union

import torch
from huggingface_hub import try_to_load_from_cache
from safetensors import SafetensorError
from transformers import AutoModelForImageClassification, PreTrainedModel
from transformers.utils import SAFE_WEIGHTS_INDEX_NAME, SAFE_WEIGHTS_NAME

from .config import ContrastiveDistillationConfig, read_json
from .locations import check_teacher_location, looks_like_local_path

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
    check_teacher_location(name)
    try:
        return AutoModelForImageClassification.from_pretrained(
            name,
            revision=args.teacher_revision,
            use_safetensors=True,
            trust_remote_code=args.trust_remote_code,
        )
    except SafetensorError as error:
        files = _weight_files(lambda file: os.path.join(name, file)) if os.path.isdir(name) else {}
        where = ", ".join(files.values()) or f"the weights of {name!r}"
        refetch = (f"re-save or re-copy the folder {name!r}" if os.path.isdir(name) else
                   f"download it again (hf download {name} --force-download)")
        raise OSError(f"The teacher's weights could not be read from {where}: {error}. The file is corrupted or "
                      f"truncated: {refetch}.") from None
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


def teacher_fingerprint(
    source: Optional[Union[str, PreTrainedModel]], teacher: PreTrainedModel, revision: Optional[str] = None
) -> dict[str, Any]:
    """What the student is distilled from, so that a corrupted or swapped teacher is visible.

    - from a local folder: ``{"source": "local folder", "name": <folder name>, "weights_sha256": {file: sha256}}``;
    - from the Hub: ``{"source": "hub", "repo_id", "commit": <resolved commit sha>, "weights_sha256": {...}}``, the
      files hashed as they lie in the local Hub cache (the sha256 the Hub lists for each LFS file);
    - a model object: ``{"source": "model object", "name", "dtype", "state_dict_sha256"}``, a sha256 of its
      tensors' bytes in name order, as passed (after the cast to the teacher dtype).
    """
    if isinstance(source, str) and looks_like_local_path(source):  # the one Hub-or-folder rule (locations.py)
        files = _weight_files(lambda name: os.path.join(source, name))
        return {"source": "local folder", "name": os.path.basename(os.path.normpath(source)),
                "weights_sha256": {name: _sha256_file(path) for name, path in files.items()}}
    if isinstance(source, str):
        def cached(name: str) -> Optional[str]:
            path = try_to_load_from_cache(source, name, revision=revision)
            return path if isinstance(path, str) else None

        files, config = _weight_files(cached), cached("config.json")
        commit = Path(config).parent.name if config else None  # .../snapshots/<commit>/config.json
        return {"source": "hub", "repo_id": source, "commit": commit,
                "weights_sha256": {name: _sha256_file(path) for name, path in files.items()}}
    digest = hashlib.sha256()
    for name, tensor in sorted(teacher.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    name = getattr(teacher.config, "_name_or_path", "") or type(teacher).__name__
    dtype = str(next(teacher.parameters()).dtype).replace("torch.", "")
    return {"source": "model object", "name": os.path.basename(os.path.normpath(name)), "dtype": dtype,
            "state_dict_sha256": digest.hexdigest()}


def _weight_files(locate: Any) -> dict[str, str]:
    """``{file name: path}`` of the safetensors weights (one file, or the shards of an index); ``locate(name)``
    gives a file's path, or None when it is absent."""
    single = locate(SAFE_WEIGHTS_NAME)
    if single and os.path.isfile(single):
        return {SAFE_WEIGHTS_NAME: single}
    index = locate(SAFE_WEIGHTS_INDEX_NAME)
    if not index or not os.path.isfile(index):
        return {}
    shards = sorted(set(read_json(index, "a safetensors index (weight_map)").get("weight_map", {}).values()))
    return {name: path for name in shards if (path := locate(name))}


def _sha256_file(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


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
