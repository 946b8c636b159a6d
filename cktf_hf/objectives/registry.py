"""Name → objective class registry, in the style of torchdistill's loss registry."""

from __future__ import annotations

from typing import Callable, TypeVar

from torch import nn

OBJECTIVES: dict[str, type[nn.Module]] = {}

T = TypeVar("T", bound=type[nn.Module])
# A term's ``inputs`` that read no intermediate pair's map: the logits, the classifier inputs, the student's own stages.
INPUTS_WITHOUT_PAIR_MAPS = ("logits", "final", "student_stages")


def register_objective(name: str) -> Callable[[T], T]:
    """Class decorator: make an objective available under ``name`` (lower case)."""

    def decorator(cls: T) -> T:
        key = name.lower()
        if key in OBJECTIVES and OBJECTIVES[key] is not cls:
            raise ValueError(f"Objective name {key!r} is already registered to {OBJECTIVES[key].__name__}.")
        OBJECTIVES[key] = cls
        cls.registry_name = key
        return cls

    return decorator


def get_objective(name: str) -> type[nn.Module]:
    """Return the objective class registered under ``name``; unknown names list the known ones."""
    key = name.lower()
    if key not in OBJECTIVES:
        known = ", ".join(sorted(OBJECTIVES))
        raise ValueError(f"Unknown objective {name!r}. Known objectives: {known}.")
    return OBJECTIVES[key]


def list_objectives() -> list[str]:
    """Sorted names of every registered objective."""
    return sorted(OBJECTIVES)


def check_choice(name: str, value: object, choices: tuple) -> None:
    """Raise ``ValueError("<name> must be one of <choices>, got <value>.")`` unless ``value`` is one of ``choices``."""
    if value not in choices:
        raise ValueError(f"{name} must be one of {tuple(choices)}, got {value!r}.")
