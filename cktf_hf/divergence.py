"""Finite checks: training stops at the first non-finite loss, and a non-finite student is never saved or published."""

from __future__ import annotations

from typing import Mapping, Optional

import torch
from torch import nn

ADVICE = ("Lower learning_rate, set max_grad_norm (gradient clipping), check the data for NaN/inf values, then resume "
          "from the last checkpoint (train(resume_from_checkpoint=True)).")


class TrainingDiverged(RuntimeError):
    """The loss or the student's weights became NaN or infinite."""


def check_loss(loss: torch.Tensor, components: Mapping[str, torch.Tensor], pixel_values: torch.Tensor,
               student: nn.Module, teacher: Optional[nn.Module], step: int) -> None:
    """Raise :class:`TrainingDiverged` when ``loss`` is not finite, saying which terms, inputs or weights are.

    One ``isfinite`` check per step (the Trainer's ``logging_nan_inf_filter`` already reads the loss each step, and
    would otherwise log the average of earlier losses in place of NaN); the diagnosis runs only on failure.
    """
    if torch.isfinite(loss.detach()).all():
        return
    causes = []
    terms = [name for name, value in components.items() if not torch.isfinite(torch.as_tensor(value)).all()]
    if terms:
        causes.append(f"non-finite loss terms: {', '.join(terms)}")
    if not torch.isfinite(pixel_values).all():
        causes.append("the batch's pixel_values hold NaN/inf values")
    for side, model in (("student", student), ("teacher", teacher)):
        names = nonfinite_parameters(model) if model is not None else []
        if names:
            causes.append(f"non-finite {side} weights, first {names[0]} ({len(names)} tensors)")
    raise TrainingDiverged(
        f"Training diverged at step {step}: the loss is {loss.detach().float().mean().item()}"
        f"{' (' + '; '.join(causes) + ')' if causes else ''}. Nothing of this step was saved. {ADVICE}"
    )


def check_weights(model: nn.Module, action: str) -> None:
    """Raise :class:`TrainingDiverged` before ``action`` (saving, a model card) if any weight is NaN or infinite."""
    names = nonfinite_parameters(model)
    if names:
        raise TrainingDiverged(
            f"Refusing {action}: the student has non-finite weights ({len(names)} tensors, first {names[0]}), so "
            f"training diverged. {ADVICE}"
        )


def nonfinite_parameters(model: nn.Module) -> list[str]:
    """Names of the floating-point parameters and buffers of ``model`` holding NaN or inf (one device sync)."""
    tensors = [(name, t) for name, t in [*model.named_parameters(), *model.named_buffers()] if t.is_floating_point()]
    if not tensors:
        return []
    finite = torch.stack([torch.isfinite(t.detach()).all().to(tensors[0][1].device) for _, t in tensors]).tolist()
    return [name for (name, _), ok in zip(tensors, finite) if not ok]
