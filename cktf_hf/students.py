"""Moved to :mod:`cktf_hf.demo.students` in 0.2.0; this module re-exports it, with a ``FutureWarning``, until 0.3.0."""

import warnings

from .demo.students import (  # noqa: F401
    DEPRECATED_STUDENT_NAMES,
    STUDENT_SIZES,
    TEACHER_STUDENT,
    load_or_build_student,
    parse_teacher_student,
    resolve_student_name,
    student_config,
)

__all__ = [
    "DEPRECATED_STUDENT_NAMES", "STUDENT_SIZES", "TEACHER_STUDENT", "load_or_build_student", "parse_teacher_student",
    "resolve_student_name", "student_config",
]

warnings.warn(
    "cktf_hf.students moved to cktf_hf.demo.students: import from there; "
    "this module will be removed in cktf_hf 0.3.0.",
    FutureWarning,
    stacklevel=2,
)
