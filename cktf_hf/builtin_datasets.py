"""Moved to :mod:`cktf_hf.demo.datasets` in 0.2.0; this module re-exports it, with a ``FutureWarning``, until 0.3.0."""

import warnings

from .demo.datasets import *  # noqa: F401,F403
from .demo.datasets import __all__  # noqa: F401

warnings.warn(
    "cktf_hf.builtin_datasets moved to cktf_hf.demo.datasets: import from there; "
    "this module will be removed in cktf_hf 0.3.0.",
    FutureWarning,
    stacklevel=2,
)
