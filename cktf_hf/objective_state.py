"""Reading a checkpoint's distillation state (projectors, memory banks, Z) back into the objective, with errors that
say which file, what changed since the checkpoint and what to do."""

from __future__ import annotations

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import nn


def load_objective_state(objective: nn.Module, path: str, device: str) -> None:
    """``objective.load_state_dict`` of the safetensors file ``path``; a corrupted file or a state that no longer fits
    (another training-set size, ``feat_dim``, ``projector``, pairing or set of weighted terms) raises a ``ValueError``
    naming the file and each difference instead of a raw parser error or ``size mismatch``."""
    try:
        state = load_file(path, device=device)
    except SafetensorError as error:
        raise ValueError(
            f"{path} is unreadable ({error}): the checkpoint is corrupted or incomplete. Resume from an earlier "
            "checkpoint, or train without resume_from_checkpoint."
        ) from None
    problems = state_differences(state, objective.state_dict())
    if problems:
        raise ValueError(
            f"The distillation state in {path} does not fit this run: " + "; ".join(problems) + ". Resume with the "
            "training set and distillation settings of the run that wrote the checkpoint, or start a new run in "
            "another output_dir."
        )
    objective.load_state_dict(state)


def state_differences(saved: dict[str, torch.Tensor], current: dict[str, torch.Tensor]) -> list[str]:
    """What differs between a saved and the current objective state, in the config's words."""
    problems = []
    # a bank's row order (row_of) is not a term: the bank reads a saved state of either order back in its own
    missing, unexpected = ([key for key in sorted(a - b) if not key.endswith("row_of")]
                           for a, b in ((set(current), set(saved)), (set(saved), set(current))))
    if missing:
        problems.append(f"this run has terms the checkpoint lacks ({_terms(missing)}): the preset, weights, "
                        "teacher_projector or layer_pairs changed")
    if unexpected:
        problems.append(f"the checkpoint has terms this run lacks ({_terms(unexpected)}): the preset, weights, "
                        "teacher_projector or layer_pairs changed")
    for key in sorted(set(saved) & set(current)):
        if key.endswith("row_of"):
            continue  # its size is the banks' (reported with them)
        if key.endswith(("memory_student", "memory_teacher")) and saved[key].dtype != current[key].dtype:
            stored, storing = (str(t[key].dtype).removeprefix("torch.") for t in (saved, current))
            problems.append(f"the memory banks were stored in {stored}, this run stores them in {storing} (bank_dtype "
                            f"changed: pass bank_dtype={stored} to resume this run)")
        was, now = tuple(saved[key].shape), tuple(current[key].shape)
        if was == now:
            continue
        if key.endswith(("memory_student", "memory_teacher")):
            if was[0] != now[0]:
                problems.append(f"the training set had {was[0]:,} examples, now {now[0]:,} (the memory banks hold one "
                                "row per example)")
            if was[1:] != now[1:]:
                problems.append(f"the embedding size was {was[1]}, now {now[1]} (feat_dim, or the teacher's width "
                                "with teacher_projector='none')")
        else:
            problems.append(f"{key}: shape {list(was)} in the checkpoint, {list(now)} now (feat_dim, projector, "
                            "teacher_projector or the paired layers' widths changed)")
    return list(dict.fromkeys(problems))


def _terms(keys: list[str]) -> str:
    """``contrastive.final.memory_student`` → ``contrastive.final``, each once."""
    return ", ".join(dict.fromkeys(key.rsplit(".", 1)[0] for key in keys))
