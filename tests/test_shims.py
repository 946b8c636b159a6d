"""Modules moved in 0.2.0 keep their old import path until 0.3.0: importing it warns and gives the same objects."""

import importlib
import sys

import pytest

import cktf_hf.demo.datasets
import cktf_hf.demo.students

# The public names of the modules before they moved (cktf_hf 0.1.0), which scripts written against them import.
MOVED = {
    "cktf_hf.builtin_datasets": (cktf_hf.demo.datasets, [
        "FASHION_MNIST_CLASSES", "FASHION_MNIST_DIR", "FASHION_MNIST_MEAN", "FASHION_MNIST_STD", "BUILTIN_DATASETS",
        "load_fashion_mnist", "load_mnist_5k", "load_digits_dataset", "load_image_dataset", "images_to_dataset",
    ]),
    "cktf_hf.students": (cktf_hf.demo.students, ["STUDENT_SIZES", "student_config", "load_or_build_student"]),
}


def _import_afresh(name: str):
    sys.modules.pop(name, None)  # a module warns once, when it is first imported
    return importlib.import_module(name)


@pytest.mark.parametrize("old_path", sorted(MOVED))
def test_an_old_import_path_warns_naming_the_new_one_and_the_removal(old_path):
    new_module, _ = MOVED[old_path]
    with pytest.warns(FutureWarning, match=rf"{old_path} moved to {new_module.__name__}.*removed in cktf_hf 0\.3\.0"):
        _import_afresh(old_path)


@pytest.mark.parametrize("old_path", sorted(MOVED))
def test_an_old_import_path_gives_the_same_objects(old_path):
    new_module, old_names = MOVED[old_path]
    with pytest.warns(FutureWarning):
        shim = _import_afresh(old_path)
    assert set(old_names) <= set(shim.__all__)
    for name in shim.__all__:
        assert getattr(shim, name) is getattr(new_module, name), name

