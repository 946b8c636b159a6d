"""Checks of the training data against the models and the config, run when the trainer is built (before any probe
or step): labels, class names and the settings that the data size bounds. Every error names the value and the fix."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Optional, Sequence

import numpy as np
import torch
from transformers import PreTrainedModel
from transformers.utils import logging

from .data import IndexedDataset
from .model_io import find_classifier
from .teacher import check_label_spaces

if TYPE_CHECKING:
    from .config import ContrastiveDistillationConfig

logger = logging.get_logger(__name__)

LABEL_COLUMNS = ("label", "labels")


def validate_training_setup(
    student: PreTrainedModel,
    teacher: PreTrainedModel,
    train_dataset: Any,
    eval_dataset: Any,
    args: "ContrastiveDistillationConfig",
) -> None:
    """Check the training (and evaluation) data against the student, the teacher and ``args``; align the teacher to
    the dataset's class order when its ``ClassLabel`` names are the teacher's in another order.

    Labels must be integers in ``[0, num_labels)`` (the student's classes when cross-entropy or KD reads them), the
    training set must not be empty, an explicitly named ``label_column`` must exist, ``nce_k`` must fit the other-class
    negatives the data offers, and in-batch negatives need two samples per batch. Class names: the same names in
    another order are remapped (the teacher's logits are permuted into the dataset's order, the student's
    ``id2label`` becomes the dataset's); different names are an error when a term reads labels against the teacher,
    unless ``args.allow_label_mismatch``.
    """
    settings = args.objective_settings
    sized = hasattr(train_dataset, "__len__")
    if sized and len(train_dataset) == 0:
        raise ValueError("train_dataset is empty (0 examples): pass the training split with its images and labels.")
    column = _label_column(train_dataset, args.label_column) if sized else None
    reads_labels = settings.ce_weight > 0 or settings.kd_weight > 0
    names = class_names(train_dataset, column)
    if align_class_names(student, teacher, names, settings.ce_weight, settings.kd_weight, args.allow_label_mismatch):
        if settings.kd_weight > 0 and student.config.num_labels != teacher.config.num_labels:
            raise ValueError(f"KD needs as many student as teacher classes: the student has "
                             f"{student.config.num_labels}, the teacher {teacher.config.num_labels}.")
    else:
        check_label_spaces(student, teacher, uses_teacher_labels=reads_labels)
    num_labels = student.config.num_labels if reads_labels else None
    labels = read_labels(train_dataset, column, num_labels, "train_dataset") if column else None
    if eval_dataset is not None and not isinstance(eval_dataset, dict):
        _check_eval_dataset(eval_dataset, names, num_labels)
    if sized:
        _check_negatives(args, settings, len(train_dataset), labels)


# ------------------------------------------------------------------------------------------------- labels
def _base(dataset: Any) -> Any:
    return dataset.dataset if isinstance(dataset, IndexedDataset) else dataset


def _label_column(dataset: Any, label_column: Optional[str]) -> Optional[str]:
    """The label column: ``label_column`` (which must exist), else "label" or "labels" when present."""
    dataset = _base(dataset)
    columns = getattr(dataset, "column_names", None)
    if columns is None:  # a plain torch Dataset: the keys of its first example
        columns = list(dataset[0]) if label_column else []
    if label_column:
        if label_column not in columns:
            raise ValueError(
                f"label_column={label_column!r} is not a column of the training data (columns: {sorted(columns)}). "
                "Name the column that holds the class ids, or leave label_column unset to use 'label' / 'labels'."
            )
        return label_column
    return next((name for name in LABEL_COLUMNS if name in columns), None)


def read_labels(dataset: Any, column: str, num_labels: Optional[int], what: str) -> Optional[np.ndarray]:
    """Every label of an Arrow-backed dataset (None for other datasets, whose first example alone is checked),
    checked: integer class ids, no missing value, in ``[0, num_labels)`` (only ``>= 0`` when ``num_labels`` is
    None). Errors name the column, the offending value and row, and the fix."""
    dataset = _base(dataset)
    if not hasattr(dataset, "with_format") or column not in getattr(dataset, "column_names", ()):
        first = dataset[0].get(column) if hasattr(dataset, "__getitem__") else None
        if first is not None:
            _check_values(np.asarray(first).reshape(-1), column, num_labels, what)
        return None
    array = dataset.with_format("arrow")[column]
    if array.null_count:
        row = int(np.flatnonzero(np.asarray(array.is_null()))[0])
        raise ValueError(f"{what} has no label at row {row} (column {column!r} is null there): every training "
                         f"example needs a class id; drop unlabelled rows, e.g. dataset.filter(lambda e: e[{column!r}] "
                         "is not None).")
    values = array.to_numpy()
    _check_values(values, column, num_labels, what)
    return values.astype(np.int64)


def _check_values(values: np.ndarray, column: str, num_labels: Optional[int], what: str) -> None:
    if values.dtype.kind in "US" or values.dtype == object:
        raise ValueError(
            f"{what}'s label column {column!r} holds {type(values[0]).__name__} values (e.g. {values[0]!r} at row 0), "
            f"not integer class ids. Encode them, e.g. dataset = dataset.class_encode_column({column!r}) (class names "
            "are then matched with the teacher's id2label)."
        )
    if values.dtype.kind == "f":
        fractional = np.flatnonzero(values != np.round(values))
        row = int(fractional[0]) if len(fractional) else 0
        example = values[row].item()
        raise ValueError(
            f"{what}'s label column {column!r} holds floats ({values.dtype}, e.g. {example!r} at row {row}); "
            "labels must be integer class ids (a float would be truncated). Cast the column, e.g. "
            f"dataset = dataset.cast_column({column!r}, datasets.Value('int64')), after fixing any fractional value."
        )
    if values.dtype.kind not in "iub":
        raise ValueError(f"{what}'s label column {column!r} has dtype {values.dtype}; labels must be integer class "
                         "ids.")
    if values.size == 0:
        return
    low, high = int(values.min()), int(values.max())
    if low < 0:
        row = int(np.argmin(values))
        raise ValueError(
            f"{what} has label {low} at row {row} (column {column!r}); labels are class ids >= 0 (-1 is how "
            f"datasets marks a missing label). Drop those rows, e.g. dataset.filter(lambda e: e[{column!r}] >= 0)."
        )
    if num_labels is not None and high >= num_labels:
        row = int(np.argmax(values))
        raise ValueError(
            f"{what} has label {high} at row {row} (column {column!r}), outside [0, {num_labels}): the student has "
            f"{num_labels} classes. Fix or drop those rows, or build the student (and teacher) with "
            f"num_labels={high + 1} or more."
        )


# --------------------------------------------------------------------------------------------- class names
def class_names(dataset: Any, column: Optional[str]) -> Optional[list[str]]:
    """The ``ClassLabel`` names of the label column of a ``datasets.Dataset`` (None when it has none)."""
    features = getattr(_base(dataset), "features", None)
    feature = features.get(column) if features is not None and column else None
    names = getattr(feature, "names", None)
    return list(names) if names else None


def _generic(names: Sequence[str]) -> bool:
    """Default names that say nothing about a class: transformers' LABEL_i."""
    return all(name == f"LABEL_{i}" for i, name in enumerate(names))


def align_class_names(
    student: PreTrainedModel,
    teacher: PreTrainedModel,
    names: Optional[list[str]],
    ce_weight: float,
    kd_weight: float,
    allow_mismatch: bool,
) -> bool:
    """Match the dataset's class ``names`` with the teacher's ``id2label``; returns True when they differ and the
    caller may skip comparing the student's label names with the teacher's.

    Same names, same order: nothing to do. Same names in another order: the teacher's classification head is
    permuted (a forward hook, so its logits, loss and predictions are in the dataset's order) and both models'
    ``id2label`` / ``label2id`` become the dataset's. Different names: fine when no term reads labels or teacher
    logits (``ce_weight = kd_weight = 0``, e.g. preset "transfer"), allowed with ``allow_mismatch`` (the student's
    names become the dataset's), else an error.
    """
    t_config = teacher.config
    teacher_names = [t_config.id2label[i] for i in range(t_config.num_labels)] if t_config.id2label else []
    if not names or not teacher_names or _generic(teacher_names):
        return False
    if names == [str(i) for i in range(len(names))] and not set(names) & set(teacher_names):
        logger.info("The dataset's classes are numbered, not named: class i is taken to be the teacher's %r.",
                    teacher_names[:3])
        return False
    if names == teacher_names:
        _name_student(student, names)
        return False
    if sorted(names) == sorted(teacher_names) and len(set(names)) == len(names):
        order = [teacher_names.index(name) for name in names]  # dataset class d is teacher class order[d]
        permute_classifier(teacher, order)
        _set_names(t_config, names)
        _name_student(student, names)
        logger.warning(
            "The dataset's classes are the teacher's in another order; the teacher's logits are permuted into the "
            "dataset's order and the student's id2label is the dataset's: %s.",
            ", ".join(f"{d}={name} (teacher {t})" for d, (name, t) in enumerate(zip(names, order)) if d != t)[:500],
        )
        return False
    if ce_weight == 0 and kd_weight == 0:
        return True
    diff = [f"{i}: dataset {n!r} vs teacher {teacher_names[i]!r}" if i < len(teacher_names) else f"{i}: {n!r}"
            for i, n in enumerate(names) if i >= len(teacher_names) or n != teacher_names[i]][:5]
    if not allow_mismatch:
        raise ValueError(
            f"The dataset's class names differ from the teacher's id2label ({'; '.join(diff)}): cross-entropy and KD "
            "would compare classes that are not the same. Relabel the dataset with the teacher's names (e.g. "
            "dataset.align_labels_with_mapping(teacher.config.label2id, 'label') when only the spelling differs), or, "
            "to train the student on these classes anyway (transfer with a new head), set allow_label_mismatch=True."
        )
    logger.warning("The dataset's class names differ from the teacher's (%s); allow_label_mismatch=True: the student's "
                   "id2label is the dataset's.", "; ".join(diff))
    if student.config.num_labels == len(names):
        _set_names(student.config, names)
    return True


def _set_names(config: Any, names: list[str]) -> None:
    config.id2label = dict(enumerate(names))
    config.label2id = {name: i for i, name in enumerate(names)}


def _name_student(student: PreTrainedModel, names: list[str]) -> None:
    """The student's classes become the dataset's when it has as many and its own names are generic or the same
    names (in any order)."""
    config = student.config
    own = [config.id2label[i] for i in range(config.num_labels)] if config.id2label else []
    if config.num_labels == len(names) and own != names and (_generic(own) or sorted(own) == sorted(names)):
        _set_names(config, names)


def permute_classifier(model: PreTrainedModel, order: Sequence[int]) -> None:
    """Make ``model``'s logits come out in another class order: output column ``d`` is old column ``order[d]``
    (a forward hook on the classification head, so the model's own loss uses the new order too)."""
    index = torch.as_tensor(list(order), dtype=torch.long)

    def hook(module: torch.nn.Module, inputs: Any, output: torch.Tensor) -> torch.Tensor:
        return output.index_select(-1, index.to(output.device))

    find_classifier(model).register_forward_hook(hook)


def _check_eval_dataset(dataset: Any, train_names: Optional[list[str]], num_labels: Optional[int]) -> None:
    if not hasattr(dataset, "__len__") or len(dataset) == 0:
        return
    column = _label_column(dataset, None)
    if column is None:
        return
    names = class_names(dataset, column)
    if train_names and names and names != train_names:
        raise ValueError(
            f"eval_dataset's class names {names[:5]}... are not in the order of train_dataset's {train_names[:5]}...: "
            "class ids would mean different classes. Align them, e.g. "
            f"eval_dataset = eval_dataset.align_labels_with_mapping(label2id, {column!r}) with "
            "label2id = {name: i for i, name in enumerate(train_names)}."
        )
    read_labels(dataset, column, num_labels, "eval_dataset")


# ---------------------------------------------------------------------------------------------- negatives
def _check_negatives(args: "ContrastiveDistillationConfig", settings: Any, size: int,
                     labels: Optional[np.ndarray]) -> None:
    """In-batch negatives need two samples per batch; memory-bank negatives need ``nce_k`` other samples."""
    contrastive = settings.final_weight > 0 or settings.layer_weight > 0
    if not contrastive:
        return
    if settings.negatives == "in_batch":
        if args.per_device_train_batch_size * args.world_size < 2:
            raise ValueError(
                "negatives='in_batch' with one sample per batch has no negatives: every contrastive term would be 0. "
                "Use per_device_train_batch_size >= 2 (the more the better), or negatives='memory_bank'."
            )
        return
    if not settings.uses_memory_bank:
        return
    if labels is not None and len(labels) == size:
        largest = int(np.bincount(labels).max())
        pool = size - largest
        where = f"{size:,} images, {largest:,} of the most frequent class"
    else:
        pool, where = size - 1, f"{size:,} images, none of the same image"
    if settings.nce_k > pool and pool < 1:
        raise ValueError(
            f"negatives='memory_bank' needs other-class negatives, but the training set offers none ({where}): use "
            "negatives='in_batch', or train on images of two classes or more."
        )
    if settings.nce_k > pool:
        raise ValueError(
            f"nce_k={settings.nce_k:,} is larger than the {pool:,} other-class negatives the training set offers "
            f"({where}): set nce_k to at most {pool:,} (CRD uses 16,384 on 50,000 images), or use "
            "negatives='in_batch'."
        )
