"""The objective rides on the student: attaching it, reaching it, and keeping it out of everything saved.

The trainer adds its :class:`~cktf_hf.objectives.CKTFObjective` (projectors, memory banks) to the student as the
submodule ``cktf_objective``, so that DDP and the optimizer see its parameters like the student's own. Nothing that
leaves the training run (``save_pretrained``, the Hub, parameter counts) includes it.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterator, Optional

from torch import nn

OBJECTIVE_ATTRIBUTE = "cktf_objective"
_PREFIX = OBJECTIVE_ATTRIBUTE + "."


def is_objective_key(key: str) -> bool:
    """Whether a state-dict key or parameter name belongs to the attached objective."""
    return key.startswith(_PREFIX)


def attach_objective(student: nn.Module, objective: nn.Module) -> None:
    """Add ``objective`` to ``student`` as ``cktf_objective``, left out of ``save_pretrained``."""
    student.add_module(OBJECTIVE_ATTRIBUTE, objective)
    own_ignored = [k for k in (getattr(student, "_keys_to_ignore_on_save", None) or []) if not is_objective_key(k)]
    student._keys_to_ignore_on_save = own_ignored + [k for k in student.state_dict() if is_objective_key(k)]


def objective_of(model: nn.Module) -> Optional[nn.Module]:
    """The objective attached to ``model`` (or to the model a DDP wrapper holds), or None."""
    model = getattr(model, "module", model)
    return model._modules.get(OBJECTIVE_ATTRIBUTE)


def detach_objective(model: nn.Module) -> Optional[nn.Module]:
    """Remove the attached objective from ``model`` for good and return it (None when there is none)."""
    objective = model._modules.pop(OBJECTIVE_ATTRIBUTE, None)
    if objective is not None and getattr(model, "_keys_to_ignore_on_save", None):
        model._keys_to_ignore_on_save = [k for k in model._keys_to_ignore_on_save if not is_objective_key(k)] or None
    return objective


@contextmanager
def without_objective(model: nn.Module) -> Iterator[nn.Module]:
    """``model`` with its objective taken off for the duration, put back in place afterwards."""
    objective = model._modules.pop(OBJECTIVE_ATTRIBUTE, None)
    try:
        yield model
    finally:
        if objective is not None:
            model._modules[OBJECTIVE_ATTRIBUTE] = objective


def without_objective_keys(state_dict: dict[str, Any]) -> dict[str, Any]:
    """``state_dict`` without the objective's entries."""
    return {k: v for k, v in state_dict.items() if not is_objective_key(k)}
