"""Finite checks: training stops at the first non-finite loss or gradient (before the optimizer applies it), and a
non-finite student is never saved or published."""

from __future__ import annotations

import math
from typing import Any, Callable, Iterable, Mapping, Optional

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


class GradientGuard:
    """Stops training at the first step whose total gradient norm is not finite, before the optimizer applies it,
    naming the loss terms whose gradient is not finite.

    Per step it keeps a reference to the batch (:meth:`remember`) and runs one ``isfinite`` on the gradient norm the
    Trainer computes anyway (:meth:`check`); only on failure is the batch run again to test each term's gradient.
    """

    def __init__(self) -> None:
        self._inputs: Optional[dict[str, Any]] = None

    def remember(self, inputs: Mapping[str, Any]) -> None:
        """Keep this step's batch (a shallow copy: no tensor is copied)."""
        self._inputs = dict(inputs)

    def check(self, grad_norm: Any, trainer: Any) -> Any:
        """Return ``grad_norm`` when it is finite (or None); else raise :class:`TrainingDiverged` naming the terms
        of ``trainer.objective`` whose gradient on the remembered batch is not finite."""
        if grad_norm is None or math.isfinite(grad_norm.item() if isinstance(grad_norm, torch.Tensor) else grad_norm):
            return grad_norm
        step = trainer.state.global_step + 1
        terms = []
        if self._inputs is not None:
            terms = nonfinite_gradient_terms(
                [(term.name, term.module) for term in trainer.objective.terms],
                lambda: trainer.compute_loss(trainer.model, dict(self._inputs)), trainer.model.parameters())
        culprit = (f"non-finite gradient from: {', '.join(terms)}" if terms else
                   "no single term's gradient is non-finite when the last batch is run again")
        raise TrainingDiverged(
            f"Training diverged at step {step}: the gradient norm is {float(torch.as_tensor(grad_norm))} while the "
            f"loss is finite ({culprit}). The optimizer did not apply this step. {ADVICE}"
        )


def nonfinite_gradient_terms(terms: Iterable[tuple[str, nn.Module]], run: Callable[[], Any],
                             parameters: Iterable[torch.Tensor]) -> list[str]:
    """The names of ``terms`` (name, loss module) whose output's gradient with respect to ``parameters`` holds NaN
    or inf, found by running ``run()`` (one forward of the loss) with each module's output captured."""
    captured: dict[str, torch.Tensor] = {}
    handles = [module.register_forward_hook(lambda m, args, output, name=name: captured.setdefault(name, output))
               for name, module in terms]
    try:
        with torch.enable_grad():
            run()
    except TrainingDiverged:
        pass  # the loss itself is no longer finite: the captured terms still tell which gradient is not
    finally:
        for handle in handles:
            handle.remove()
    trainable = [p for p in parameters if p.requires_grad]
    failing = []
    for name, value in captured.items():
        if not isinstance(value, torch.Tensor) or not value.requires_grad:
            continue
        grads = torch.autograd.grad(value.float().sum(), trainable, retain_graph=True, allow_unused=True)
        if any(g is not None and not torch.isfinite(g).all() for g in grads):
            failing.append(name)
    return failing


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
