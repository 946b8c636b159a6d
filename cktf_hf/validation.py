"""Checks of the training data against the models and the config, run when the trainer is built (before any probe
or step): labels, class names (matched, and both models aligned to the dataset's classes), the settings that the data
size bounds, and the teacher's accuracy on a sample of the evaluation data. Every error names the value and the fix."""

from __future__ import annotations

import difflib
import itertools
import math
import re
from dataclasses import dataclass, field
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
) -> LabelAlignment:
    """Check the training (and evaluation) data against the student, the teacher and ``args``; align the teacher and
    the student to the dataset's classes (see :func:`align_label_spaces`) and return how.

    Labels must be integers in ``[0, num_labels)`` (the student's classes when cross-entropy or KD reads them), the
    training set must not be empty, an explicitly named ``label_column`` must exist, ``nce_k`` must fit the other-class
    negatives the data offers, and in-batch negatives need two samples per batch.
    """
    settings = args.objective_settings
    sized = hasattr(train_dataset, "__len__")
    if sized and len(train_dataset) == 0:
        raise ValueError("train_dataset is empty (0 examples): pass the training split with its images and labels.")
    column = _label_column(train_dataset, args.label_column) if sized else None
    reads_labels = settings.ce_weight > 0 or settings.kd_weight > 0
    names = class_names(train_dataset, column)
    alignment = align_label_spaces(student, teacher, names, reads_labels, settings.kd_weight,
                                   args.allow_label_mismatch, args.label_map)
    if alignment.teacher_ids is None:  # no names to match: the models' own label spaces must agree
        check_label_spaces(student, teacher, uses_teacher_labels=reads_labels)
    elif settings.kd_weight > 0 and student.config.num_labels != teacher.config.num_labels:
        raise ValueError(f"KD needs as many student as teacher classes: the student has "
                         f"{student.config.num_labels}, the teacher {teacher.config.num_labels}.")
    num_labels = student.config.num_labels if reads_labels else None
    labels = read_labels(train_dataset, column, num_labels, "train_dataset") if column else None
    if eval_dataset is not None and not isinstance(eval_dataset, dict):
        _check_eval_dataset(eval_dataset, names, num_labels)
    if sized:
        _check_negatives(args, settings, len(train_dataset), labels)
    return alignment


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


@dataclass
class LabelAlignment:
    """How the dataset's classes were matched with the teacher's, as validation left the models.

    ``teacher_ids[d]`` is the teacher's class for dataset class ``d`` (None: a class the teacher does not know);
    ``respelled`` and ``mapped`` are the dataset names matched ignoring case, spacing and punctuation, or by
    ``label_map``; ``teacher_scorable`` says whether the teacher's predictions can be scored against the dataset's
    labels; ``summary`` is what was done, in words (logged, and for a startup summary).
    """

    dataset_names: Optional[list[str]] = None
    teacher_ids: Optional[list[Optional[int]]] = None
    respelled: dict[str, str] = field(default_factory=dict)
    mapped: dict[str, str] = field(default_factory=dict)
    teacher_scorable: bool = True
    summary: str = ""

    @property
    def unknown_to_teacher(self) -> list[str]:
        """The dataset's classes that the teacher does not know."""
        ids = self.teacher_ids or []
        return [name for name, t in zip(self.dataset_names or [], ids) if t is None]


def _names(config: Any) -> list[str]:
    return [config.id2label[i] for i in range(config.num_labels)] if config.id2label else []


def _generic(names: Sequence[str]) -> bool:
    """Names that say nothing about a class: transformers' default ``LABEL_i`` or plain numbers ``"0"``, ``"1"``..."""
    return all(name == f"LABEL_{i}" for i, name in enumerate(names)) or names == [str(i) for i in range(len(names))]


def _spelling(name: str) -> str:
    """A class name without case, spaces and punctuation: ``"T-shirt_top"`` and ``"T-shirt/top"`` are the same."""
    return re.sub(r"[\W_]+", "", name.casefold())


def _quoted(names: Sequence[str], limit: int = 8) -> str:
    shown = ", ".join(repr(n) for n in list(names)[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "") if names else "none"


def match_class_names(names: Sequence[str], targets: Sequence[str], label_map: Optional[dict[str, str]] = None
                      ) -> tuple[list[Optional[int]], dict[str, str], dict[str, str]]:
    """Each of ``names`` matched to an index of ``targets``: by ``label_map`` (name → target name), by the same name,
    then by the same spelling (:func:`_spelling`, when it is unambiguous on both sides); each target used once.
    Returns ``(ids, respelled, mapped)``: ``ids[d]`` the target of ``names[d]`` or None."""
    label_map = label_map or {}
    index = {name: i for i, name in enumerate(targets)}
    ids: list[Optional[int]] = [None] * len(names)
    free = set(range(len(targets)))
    mapped, respelled = {}, {}

    def take(d: int, t: Optional[int]) -> bool:
        if t is None or t not in free:
            return False
        ids[d] = t
        free.discard(t)
        return True

    for d, name in enumerate(names):
        if name in label_map and take(d, index.get(label_map[name])):
            mapped[name] = label_map[name]
    for d, name in enumerate(names):
        if ids[d] is None and name not in label_map:
            take(d, index.get(name))
    left = [d for d in range(len(names)) if ids[d] is None and names[d] not in label_map]
    by_spelling: dict[str, list[int]] = {}
    for t in sorted(free):
        by_spelling.setdefault(_spelling(targets[t]), []).append(t)
    spellings = [_spelling(names[d]) for d in left]
    for d, spelling in zip(left, spellings):
        candidates = by_spelling.get(spelling, [])
        if len(candidates) == 1 and spellings.count(spelling) == 1 and take(d, candidates[0]):
            respelled[names[d]] = targets[candidates[0]]
    return ids, respelled, mapped


def align_label_spaces(
    student: PreTrainedModel,
    teacher: PreTrainedModel,
    names: Optional[list[str]],
    reads_labels: bool,
    kd_weight: float,
    allow_mismatch: bool,
    label_map: Optional[dict[str, str]] = None,
) -> LabelAlignment:
    """Match the dataset's class ``names`` with the teacher's ``id2label`` and make both models use the dataset's
    classes. ``reads_labels``: a term compares labels or logits with the teacher (cross-entropy, KD).

    Names are matched by ``label_map``, then as they are, then ignoring case, spacing and punctuation. When every
    dataset class is one of the teacher's (the same names in another order, or a subset), the teacher's logits are
    selected into the dataset's order (a forward hook, so its loss and predictions follow) and the student takes the
    dataset's classes and names: its head keeps the rows of the classes it already has by name (a student built with
    the teacher's classes keeps them), others start at zero. Other differences are an error when ``reads_labels``,
    unless ``allow_mismatch``: then the names that match are aligned as above and the classes the teacher does not
    know get the lowest logit (it never predicts them). Numbered names (``LABEL_i``, ``"0"``...) are taken class
    for class only when both sides have them.
    """
    teacher_names = _names(teacher.config)
    if not names or not teacher_names:
        return LabelAlignment(names, teacher_scorable=reads_labels)
    _check_label_map(label_map, names, teacher_names)
    ids, respelled, mapped = match_class_names(names, teacher_names, label_map)
    unknown = [name for name, t in zip(names, ids) if t is None]
    if unknown and _generic(names) and _generic(teacher_names) and not label_map:
        summary = (f"classes: the dataset's and the teacher's classes are numbered ({names[0]!r}..., "
                   f"{teacher_names[0]!r}...): class i is taken to be the teacher's class i.")
        logger.info(summary)
        return LabelAlignment(names, teacher_scorable=reads_labels, summary=summary)
    alignment = LabelAlignment(names, ids, respelled, mapped)
    missing = [teacher_names[t] for t in range(len(teacher_names)) if t not in ids]
    if unknown and not reads_labels:
        alignment.teacher_scorable = len(unknown) < len(names)
        if alignment.teacher_scorable:
            _select_teacher_classes(teacher, names, ids)
        alignment.summary = (
            f"classes: {len(names) - len(unknown)} of the dataset's {len(names)} classes are the teacher's (not: "
            f"{_quoted(unknown)}); no term compares labels with the teacher (ce_weight = kd_weight = 0): "
            + ("its logits are mapped onto the dataset's classes, for its evaluation only" if alignment.teacher_scorable
               else "it cannot be scored on this data") + "; the student's head is left as it is.")
        logger.info(alignment.summary)
        return alignment
    if unknown and not allow_mismatch:
        raise ValueError(_mismatch_message(names, teacher_names, unknown, missing))
    if unknown and kd_weight > 0 and len(unknown) == len(names):
        raise ValueError(f"KD needs the teacher's predictions on the dataset's classes, but none of them is the "
                         f"teacher's ({_mismatch_message(names, teacher_names, unknown, missing, advice=False)}). "
                         "Set kd_weight=0, or map the classes with label_map.")
    alignment.teacher_scorable = len(unknown) < len(names)
    if alignment.teacher_scorable:
        _select_teacher_classes(teacher, names, ids)
    student_done = _fit_student(student, names, teacher_names, label_map)
    alignment.summary = _alignment_summary(alignment, len(teacher_names), missing, student_done)
    (logger.warning if unknown or respelled or mapped or ids != list(range(len(teacher_names))) else logger.info)(
        alignment.summary)
    return alignment


def _select_teacher_classes(teacher: PreTrainedModel, names: list[str], ids: list[Optional[int]]) -> None:
    """The teacher's logits and names in the dataset's classes (nothing to do when they are its own)."""
    if ids != list(range(teacher.config.num_labels)):
        select_classes(teacher, ids)
        teacher.config.cktf_dataset_classes = dict(zip(names, ids))  # the mapping keys the teacher cache too
    _set_names(teacher.config, names)


def _check_label_map(label_map: Optional[dict[str, str]], names: list[str], teacher_names: list[str]) -> None:
    """Every ``label_map`` entry names a dataset class and a teacher class, each teacher class at most once."""
    label_map = label_map or {}
    for key, value in label_map.items():
        for name, known, what in ((key, names, "dataset"), (value, teacher_names, "teacher")):
            if name not in known:
                close = difflib.get_close_matches(name, known, n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                raise ValueError(f"label_map entry {key!r}={value!r}: {name!r} is not a {what} class{hint}; the "
                                 f"{what}'s classes are {_quoted(known, 20)}.")
    targets = list(label_map.values())
    twice = sorted({t for t in targets if targets.count(t) > 1})
    if twice:
        raise ValueError(f"label_map maps several dataset classes onto the teacher's {_quoted(twice)}; each teacher "
                         "class can stand for one dataset class.")


def _mismatch_message(names: list[str], teacher_names: list[str], unknown: list[str], missing: list[str],
                      advice: bool = True) -> str:
    sets = (f"the dataset's classes {_quoted(unknown)} are not among the teacher's, and the teacher's "
            f"{_quoted(missing)} are not among the dataset's")
    if not advice:
        return sets
    pairs = _suggested_label_map(unknown, missing)
    positional = len(names) == len(teacher_names) <= 50 and _generic(teacher_names) and not any(
        "," in name or "=" in name for name in names)
    if positional:  # a teacher without class names: only the user knows whether class i is the dataset's class i
        pairs = ",".join(f"{name}={t}" for name, t in zip(names, teacher_names))
        suggestion = (f"label_map={pairs!r} (--label_map {pairs!r}) if the dataset's class i is the teacher's class i "
                      "(the teacher's classes have no names)")
    elif pairs:
        suggestion = f"label_map={pairs!r} (--label_map {pairs!r}) if these are the same classes spelled differently"
    else:
        suggestion = "label_map='dataset name=teacher name,...' (--label_map) for classes spelled differently"
    return (f"The dataset's class names differ from the teacher's id2label ({sets}; names that differ only in case, "
            "spacing and punctuation are matched already): cross-entropy and KD would compare classes that are not the "
            f"same. Map them with {suggestion}; or, to train the student on the dataset's classes anyway "
            "(transfer with a new head; the names that match stay aligned with the teacher), set "
            "allow_label_mismatch=True (--allow_label_mismatch).")


def _suggested_label_map(unknown: list[str], missing: list[str]) -> Optional[str]:
    """``"a=b,..."`` pairing every unknown dataset name with a distinct close teacher name, else None."""
    pairs, free = [], list(missing)
    for name in unknown:
        close = difflib.get_close_matches(name, free, n=1, cutoff=0.6)
        if not close or "," in name + close[0] or "=" in name + close[0]:
            return None
        pairs.append(f"{name}={close[0]}")
        free.remove(close[0])
    return ",".join(pairs)


def _fit_student(student: PreTrainedModel, names: list[str], teacher_names: list[str],
                 label_map: Optional[dict[str, str]]) -> str:
    """Give the student the dataset's classes and names: rows of its head kept by name (its own names, or the
    teacher's when it has them), new rows at zero; a head of generic names as many as the dataset's is renamed. Returns
    what was done, in words ("" when nothing was)."""
    config = student.config
    own = _names(config)
    if own == names:
        return ""
    if own and (own == teacher_names or not _generic(own)):
        rows = match_class_names(names, own, label_map if own == teacher_names else None)[0]
    elif len(own) == len(names):
        rows = list(range(len(names)))
    else:
        return ""
    if rows == list(range(len(own))):
        _set_names(config, names)
        return "the student's id2label is the dataset's"
    if all(row is None for row in rows) and len(own) == len(names):
        _set_names(config, names)
        return "the student's id2label is the dataset's (its head learns the new classes)"
    select_head_rows(student, rows)
    _set_names(config, names)
    kept = sum(row is not None for row in rows)
    return (f"the student's head keeps its rows for {kept} of the dataset's {len(names)} classes"
            f"{' (the others start at zero)' if kept < len(names) else ''} and its id2label is the dataset's")


def _alignment_summary(alignment: LabelAlignment, teacher_count: int, missing: list[str], student_done: str) -> str:
    names, ids = alignment.dataset_names or [], alignment.teacher_ids or []
    unknown = alignment.unknown_to_teacher
    parts = [f"classes: {len(names) - len(unknown)} of the dataset's {len(names)} classes are the teacher's"]
    if alignment.respelled:
        parts.append("matched ignoring case, spacing and punctuation: "
                     + ", ".join(f"{d!r} = {t!r}" for d, t in alignment.respelled.items()))
    if alignment.mapped:
        parts.append("by label_map: " + ", ".join(f"{d!r} = {t!r}" for d, t in alignment.mapped.items()))
    if unknown:
        parts.append(f"allow_label_mismatch: {_quoted(unknown)} unknown to the teacher get its lowest logit (never "
                     "predicted, no KD mass)")
    if missing and teacher_count > len(names) - len(unknown):
        parts.append(f"the teacher's logits are restricted to the dataset's classes (left out: {_quoted(missing)})")
    elif ids != list(range(teacher_count)):
        parts.append("the teacher's logits are put in the dataset's order")
    if student_done:
        parts.append(student_done)
    return "; ".join(parts) + "."


def _set_names(config: Any, names: list[str]) -> None:
    config.id2label = dict(enumerate(names))
    config.label2id = {name: i for i, name in enumerate(names)}


def select_classes(model: PreTrainedModel, ids: Sequence[Optional[int]]) -> None:
    """Make ``model``'s logits come out in another class space: output column ``d`` is old column ``ids[d]``, and a
    class it does not know (``None``) gets a logit 100 below the row's lowest (a forward hook on the classification
    head, so the model's own loss uses the new classes too)."""
    index = torch.as_tensor([t if t is not None else 0 for t in ids], dtype=torch.long)
    unknown = torch.as_tensor([t is None for t in ids])

    def hook(module: torch.nn.Module, inputs: Any, output: torch.Tensor) -> torch.Tensor:
        selected = output.index_select(-1, index.to(output.device))
        if not unknown.any():
            return selected
        lowest = output.amin(dim=-1, keepdim=True) - 100.0
        return torch.where(unknown.to(output.device), lowest, selected)

    find_classifier(model).register_forward_hook(hook)


def select_head_rows(model: PreTrainedModel, rows: Sequence[Optional[int]]) -> None:
    """Replace the last linear layer of ``model``'s classification head by one with a row per entry of ``rows``:
    the old row ``rows[d]``, or zeros where it is None."""
    head = find_classifier(model)
    linear = head if isinstance(head, torch.nn.Linear) else next(
        (m for m in reversed(list(head.modules())) if isinstance(m, torch.nn.Linear)), None)
    if linear is None:
        raise ValueError(f"{type(model).__name__}'s classification head has no linear layer to give the dataset's "
                         "classes; build the student with num_labels and id2label of the dataset.")
    with torch.no_grad():
        weight = torch.zeros(len(rows), linear.in_features, dtype=linear.weight.dtype, device=linear.weight.device)
        bias = torch.zeros(len(rows), dtype=weight.dtype, device=weight.device) if linear.bias is not None else None
        for d, row in enumerate(rows):
            if row is not None:
                weight[d] = linear.weight[row]
                if bias is not None:
                    bias[d] = linear.bias[row]
    linear.weight = torch.nn.Parameter(weight)
    if bias is not None:
        linear.bias = torch.nn.Parameter(bias)
    linear.out_features = len(rows)


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
        if size < 2:
            raise ValueError(
                f"negatives='in_batch' on a training set of {size} image has no negatives: every contrastive term "
                "would be 0 at every step. Train on two images or more (the more the better), or use a preset "
                "without contrastive terms (e.g. preset='kd')."
            )
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
    if pool == 0:
        raise ValueError(
            f"negatives='memory_bank' needs negatives of another class, and the training set offers none ({where}). "
            "Use negatives='in_batch', train on images of two classes or more, or use a preset without contrastive "
            "terms (e.g. preset='kd')."
        )
    if settings.nce_k > pool:
        raise ValueError(
            f"nce_k={settings.nce_k:,} is larger than the {pool:,} other-class negatives the training set offers "
            f"({where}): set nce_k to at most {pool:,} (CRD uses 16,384 on 50,000 images), or use "
            "negatives='in_batch'."
        )


# ------------------------------------------------------------------------------------------- teacher check
TEACHER_CHECK_SAMPLES = 256


class TeacherCheckFailed(ValueError):
    """The teacher scores near chance on the evaluation data before training."""


def check_teacher_accuracy(teacher: PreTrainedModel, eval_dataset: Any, collator: Any,
                           args: "ContrastiveDistillationConfig", alignment: LabelAlignment) -> Optional[float]:
    """The teacher's accuracy on up to :data:`TEACHER_CHECK_SAMPLES` evaluation images (evenly spaced, so that a
    dataset sorted by class gives every class), or None when not checked (``args.teacher_check`` off, no evaluation
    data, or a teacher whose classes are not the dataset's). Images of classes the teacher does not know are left out.

    Raises :class:`TeacherCheckFailed` when the accuracy is no better than always guessing the sample's most frequent
    class (within three standard errors), naming the likely causes and how to go on anyway.
    """
    if not args.teacher_check or eval_dataset is None or not alignment.teacher_scorable:
        return None
    dataset = next(iter(eval_dataset.values()), None) if isinstance(eval_dataset, dict) else eval_dataset
    examples = _spread_sample(dataset, TEACHER_CHECK_SAMPLES) if dataset is not None else []
    known = {d for d, t in enumerate(alignment.teacher_ids or []) if t is not None} if alignment.teacher_ids else None
    param = next(teacher.parameters())
    hits, labels = [], []
    with torch.no_grad():
        for start in range(0, len(examples), args.per_device_eval_batch_size):
            batch = collator(examples[start:start + args.per_device_eval_batch_size])
            if "labels" not in batch:
                return None
            logits = teacher(pixel_values=batch["pixel_values"].to(param.device, param.dtype)).logits
            target = batch["labels"].to(logits.device)
            keep = torch.ones_like(target, dtype=torch.bool) if known is None else torch.as_tensor(
                [int(label) in known for label in target], device=target.device)
            hits.append((logits.argmax(-1) == target)[keep].cpu())
            labels.append(target[keep].cpu())
    if not labels or not sum(len(batch) for batch in labels):
        return None
    hits_all, labels_all = torch.cat(hits).float(), torch.cat(labels)
    count, accuracy = len(labels_all), hits_all.mean().item()
    chance = torch.bincount(labels_all).max().item() / count
    logger.info("Teacher check: %.1f%% accuracy on %d evaluation images (always guessing the most frequent class: "
                "%.1f%%).", 100 * accuracy, count, 100 * chance)
    threshold = min(chance + 3 * math.sqrt(chance * (1 - chance) / count), (1 + chance) / 2)
    if accuracy <= threshold:
        raise TeacherCheckFailed(
            f"The teacher scores {accuracy:.1%} on {count} evaluation images, no better than always guessing the most "
            f"frequent class ({chance:.1%}): distilling it would teach the student nothing. Likely causes: the "
            "dataset's classes are not the teacher's (compare its id2label with the dataset's class names; label_map "
            "maps names), the images are preprocessed otherwise than the teacher was trained with (size, mean/std, "
            "channels: use the teacher's own image processor), or its weights are damaged (download or copy them "
            "again). To train anyway (e.g. with an untrained teacher in a test), set teacher_check=False "
            "(--teacher_check false)."
        )
    return accuracy


def _spread_sample(dataset: Any, count: int) -> list[Any]:
    """Up to ``count`` evenly spaced examples of a map-style dataset (the first ones of an iterable one)."""
    if hasattr(dataset, "__len__") and hasattr(dataset, "__getitem__"):
        size = len(dataset)
        return [dataset[int(i)] for i in np.unique(np.linspace(0, size - 1, min(size, count)).round())] if size else []
    return list(itertools.islice(iter(dataset), count))
