"""The facts of a finished distillation run, as plain values for the model card (:mod:`cktf_hf.model_card`).

:func:`gather_card_facts` reads them from a trainer taken duck-typed (``args``, ``state``, ``model``, ``teacher``,
``pairing``, ``accelerator``, the datasets; as transformers' ``TrainingSummary.from_trainer`` does), so this module
imports nothing from :mod:`cktf_hf.trainer`. Measurements come from :mod:`cktf_hf.measure`; "Hub id or local
folder?" is answered by :mod:`cktf_hf.locations`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any, Optional, Union

from datasets.packaged_modules import _PACKAGED_DATASETS_MODULES
from huggingface_hub import hf_hub_download, try_to_load_from_cache
from huggingface_hub.repocard import metadata_load
from transformers.utils import logging

from .hub import HUB_ERRORS
from .locations import in_hub_cache, is_hub_id, looks_like_local_path, public_name
from .measure import ModelStats, measure_model
from .training_clock import earlier_segments
from .training_log import summarise_log_history

__all__ = [
    "TOP1",
    "TOP5",
    "DistillationCardInfo",
    "checkpoint_from_args",
    "framework_versions",
    "gather_card_facts",
    "hyperparameters_from_args",
    "inherited_license",
    "is_hub_dataset",
    "latest_metrics",
    "objective_from_args",
    "read_metric",
]

logger = logging.get_logger(__name__)

TOP1, TOP5 = "accuracy", "top5_accuracy"
# Keyword arguments of transformers' Trainer.create_model_card that the CKTF card has no use for.
_IGNORED_TRAINER_CARD_ARGS = frozenset({"tasks", "dataset_args"})
_FRAMEWORKS = (("cktf_hf", "cktf_hf"), ("Transformers", "transformers"), ("PyTorch", "torch"),
               ("Datasets", "datasets"), ("huggingface_hub", "huggingface_hub"))


def framework_versions() -> dict[str, str]:
    """Installed versions of cktf_hf, transformers, torch, datasets and huggingface_hub (missing ones left out)."""
    versions = {}
    for label, dist in _FRAMEWORKS:
        try:
            versions[label] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return versions


@dataclass
class DistillationCardInfo:
    """Everything the CKTF model card shows; every field left ``None`` (or empty) drops its part of the card.

    Metrics are fractions in [0, 1] under the keys ``accuracy`` and ``top5_accuracy`` (``eval_``/``teacher_``/
    ``test_``-prefixed keys, as ``Trainer.evaluate`` returns them, are read too); no ``student_metrics`` means the
    student was not evaluated, and the card says so. ``baselines`` maps a row label (e.g. ``"from scratch"``,
    ``"KD"``) to a top-1 accuracy or to a metrics dict. ``objective`` holds the resolved objective settings (see
    :func:`objective_from_args`), from which the card's Method text is written; ``pairing`` the layer-pairing rows (keys
    ``pair``, ``student_layer``, ``student_shape``, ``teacher_layer``, ``teacher_shape``, ``weight``) as the trainer
    writes them to ``distillation_config.json`` (``pairing_note``: why it holds fewer pairs than asked),
    ``hyperparameters`` the training settings (see :func:`hyperparameters_from_args`). ``teacher_on_hub`` defaults to
    "a Hub id, no local path" (:func:`cktf_hf.locations.is_hub_id`), ``dataset_on_hub`` to :func:`is_hub_dataset`.

    The evidence: ``eval_samples`` / ``train_samples`` (images evaluated / trained on), ``epochs``, ``steps`` and
    ``train_runtime`` (seconds of training, summed over ``training_segments`` when the run was resumed),
    ``training_rows`` (see :class:`~cktf_hf.training_log.RunSummary`) with ``loss_components`` their component
    columns, ``curves_image`` / ``example_image`` file names next to the card. ``teacher_fingerprint`` is the trainer's
    record of the teacher's exact weights (``commit``, ``weights_sha256``, ``state_dict_sha256``).
    ``finetuned_from`` is the student's own starting checkpoint (a Hub id, the card's ``base_model``, or a local
    folder, named in the text only); none for a student trained from scratch. ``license`` is the card's license;
    ``license_from_teacher`` says it was read from the teacher's card. ``dataset_ids`` (default: ``dataset_id`` when
    on the Hub) is the ``datasets`` metadata. ``teacher_unknown_classes`` are the dataset's classes the teacher does not
    know (its accuracy counts their images as misses); ``teacher_scorable`` False: the teacher's classes could not be
    matched with the dataset's, and the card gives no teacher accuracy (see :class:`cktf_hf.validation.LabelAlignment`).
    """

    teacher: str
    student_architecture: Optional[str] = None
    repo_id: Optional[str] = None
    model_name: Optional[str] = None
    teacher_on_hub: Optional[bool] = None
    teacher_source: Optional[str] = None
    teacher_architecture: Optional[str] = None
    teacher_revision: Optional[str] = None
    teacher_fingerprint: Optional[dict[str, Any]] = None
    teacher_stats: Optional[ModelStats] = None
    student_stats: Optional[ModelStats] = None
    teacher_metrics: Optional[dict[str, float]] = None
    teacher_scorable: bool = True
    teacher_unknown_classes: list[str] = field(default_factory=list)
    student_metrics: Optional[dict[str, float]] = None
    baselines: Optional[dict[str, Any]] = None
    dataset_id: Optional[str] = None
    dataset_name: Optional[str] = None
    dataset_config: Optional[str] = None
    dataset_split: Optional[str] = None
    dataset_on_hub: Optional[bool] = None
    dataset_ids: Optional[list[str]] = None
    eval_samples: Optional[int] = None
    train_samples: Optional[int] = None
    epochs: Optional[float] = None
    steps: Optional[int] = None
    train_runtime: Optional[float] = None
    training_segments: Optional[int] = None
    training_rows: list[dict[str, Any]] = field(default_factory=list)
    loss_components: list[str] = field(default_factory=list)
    curves_image: Optional[str] = None
    example_image: Optional[str] = None
    example_label: Optional[str] = None
    objective: dict[str, Any] = field(default_factory=dict)
    pairing: list[dict[str, Any]] = field(default_factory=list)
    pairing_note: str = ""  # why the pairing holds fewer pairs than asked (PairingPlan.note)
    hyperparameters: dict[str, Any] = field(default_factory=dict)
    seed: Optional[int] = None
    checkpoint: Optional[str] = None
    license: Optional[str] = None
    license_from_teacher: bool = False
    language: Optional[Union[str, list[str]]] = None
    tags: list[str] = field(default_factory=list)
    finetuned_from: Optional[str] = None
    framework_versions: dict[str, str] = field(default_factory=framework_versions)

    def __post_init__(self) -> None:
        if self.teacher_on_hub is None:
            self.teacher_on_hub = is_hub_id(self.teacher)
        if self.teacher_source is None:
            self.teacher_source = "hub" if self.teacher_on_hub else "local folder"
        if self.dataset_on_hub is None:
            self.dataset_on_hub = bool(self.dataset_id) and is_hub_dataset(self.dataset_id)
        if self.dataset_ids is None:
            self.dataset_ids = [self.dataset_id] if self.dataset_id and self.dataset_on_hub else []
        if self.checkpoint not in (None, "best", "last"):
            raise ValueError(f"checkpoint must be 'best', 'last' or None, got {self.checkpoint!r}.")
        if not self.teacher_scorable:
            self.teacher_metrics = None  # scored on labels it cannot predict: no accuracy of the teacher

    @classmethod
    def from_trainer(cls, trainer: Any, **card_kwargs: Any) -> "DistillationCardInfo":
        """The facts of ``trainer``'s run: see :func:`gather_card_facts`."""
        return gather_card_facts(trainer, **card_kwargs)

    @property
    def teacher_display_name(self) -> str:
        """The Hub id, or the folder's own name for a local teacher (no local paths in the card)."""
        return self.teacher if self.teacher_on_hub else os.path.basename(os.path.normpath(self.teacher))

    @property
    def dataset_display_name(self) -> Optional[str]:
        """``dataset_name``, else the Hub id, else the local folder's own name (a packaged builder's name, which
        reads local files: ``local parquet files``)."""
        if self.dataset_name and not (self.dataset_name == self.dataset_id and not self.dataset_on_hub):
            return self.dataset_name
        if not self.dataset_id:
            return None
        if self.dataset_on_hub:
            return self.dataset_id
        return f"local {self.dataset_id} files" if _is_builder(self.dataset_id) else \
            os.path.basename(os.path.normpath(self.dataset_id))

    @property
    def title(self) -> str:
        if self.model_name:
            return self.model_name
        if self.repo_id:
            return self.repo_id.split("/")[-1]
        return f"{self.student_architecture or 'Student'} distilled from {self.teacher_display_name}"


def gather_card_facts(
    trainer: Any,
    model_name: Optional[str] = None,
    dataset: Optional[Union[str, list[str]]] = None,
    dataset_split: Optional[str] = None,
    license: Optional[str] = None,
    baselines: Optional[dict[str, Any]] = None,
    *,
    language: Optional[Union[str, list[str]]] = None,
    tags: Optional[Union[str, list[str]]] = None,
    finetuned_from: Optional[str] = None,
    dataset_tags: Optional[Union[str, list[str]]] = None,
    **trainer_card_kwargs: Any,
) -> DistillationCardInfo:
    """Everything the card says about a run of ``trainer``: the latest ``evaluate()`` / ``evaluate_teacher()`` metrics
    and the training table from its log history, the wall time over resumed segments, the data sizes, the objective,
    the pairing and the hyperparameters; parameters, size and (unless ``card_latency=False``) CPU latency at the
    configured batch sizes of both models are measured now. The trainer's ``label_alignment`` says which of the
    dataset's classes the teacher does not know, or that it cannot be scored on this data at all.

    The keyword arguments are those of ``Trainer.create_model_card``: ``tags`` are added to ours, ``dataset`` /
    ``dataset_tags`` names that are Hub ids go into the ``datasets`` metadata (the first ``dataset`` is the evaluated
    one), ``license`` defaults to ``args.card_license``, else to the license of the teacher's own card;
    ``finetuned_from`` defaults to the checkpoint the student was loaded from (a Hub repo found in the Hub cache, or a
    local folder; a student shrunk from the teacher is loaded from the teacher's); ``tasks`` and ``dataset_args`` are
    accepted and unused.
    """
    unknown = set(trainer_card_kwargs) - _IGNORED_TRAINER_CARD_ARGS
    if unknown:
        raise TypeError(f"create_model_card() got unexpected keyword arguments {sorted(unknown)}.")
    args, unwrap, state = trainer.args, trainer.accelerator.unwrap_model, trainer.state
    teacher, student = unwrap(trainer.teacher), unwrap(trainer.model)
    pixel_shape = trainer.pairing.pixel_shape
    fingerprint = getattr(trainer, "teacher_fingerprint", None)
    teacher_name, teacher_on_hub, teacher_source = _teacher_identity(args, teacher, fingerprint)
    teacher_revision = (fingerprint or {}).get("commit") or (args.teacher_revision if teacher_on_hub else None)
    names, hub_ids = _dataset_names(dataset, dataset_tags)
    if finetuned_from is None:
        finetuned_from = _starting_checkpoint(student)
    license = license or getattr(args, "card_license", None)
    license_from_teacher = False
    if license is None:
        teacher_path = getattr(teacher.config, "_name_or_path", "") or ""
        license = inherited_license(teacher_name if teacher_on_hub else teacher_path, teacher_revision)
        license_from_teacher = license is not None
    latency_batches = list(getattr(args, "card_latency_batch_sizes", (1, 32))) \
        if getattr(args, "card_latency", True) else []
    run = summarise_log_history(state.log_history)
    earlier_seconds, earlier_count = earlier_segments(state)
    ran = run.train_runtime is not None
    alignment = getattr(trainer, "label_alignment", None)
    return DistillationCardInfo(
        teacher=teacher_name,
        teacher_on_hub=teacher_on_hub,
        teacher_source=teacher_source,
        teacher_architecture=type(teacher).__name__,
        teacher_revision=teacher_revision,
        teacher_fingerprint=fingerprint,
        student_architecture=type(student).__name__,
        repo_id=args.hub_model_id or trainer.hub_model_id,
        model_name=model_name,
        teacher_stats=measure_model(teacher, pixel_shape, latency_batches),
        student_stats=measure_model(student, pixel_shape, latency_batches),
        teacher_metrics=latest_metrics(state.log_history, "teacher_"),
        teacher_scorable=getattr(alignment, "teacher_scorable", True),
        teacher_unknown_classes=list(getattr(alignment, "unknown_to_teacher", None) or []),
        student_metrics=latest_metrics(state.log_history, "eval_"),
        baselines=baselines,
        dataset_id=names[0] if names else None,
        dataset_split=dataset_split,
        dataset_ids=hub_ids,
        eval_samples=_length(trainer.eval_dataset),
        train_samples=_length(trainer.train_dataset),
        epochs=run.epochs,
        steps=run.steps,
        train_runtime=run.train_runtime + earlier_seconds if ran else None,
        training_segments=earlier_count + 1 if ran else None,
        training_rows=run.rows,
        loss_components=run.components,
        objective=objective_from_args(args),
        pairing=trainer.pairing.dicts,
        pairing_note=trainer.pairing.note,
        hyperparameters=hyperparameters_from_args(args),
        seed=args.seed,
        checkpoint=checkpoint_from_args(args),
        license=license,
        license_from_teacher=license_from_teacher,
        language=language,
        tags=[tags] if isinstance(tags, str) else list(tags or []),
        finetuned_from=finetuned_from,
    )


def _teacher_identity(args: Any, teacher: Any, fingerprint: Optional[dict[str, Any]]) -> tuple[str, bool, str]:
    """``(name, on the Hub, source)`` of the teacher, ``source`` one of ``hub``, ``local folder``, ``model object``.

    The trainer's ``teacher_fingerprint`` decides when present. Otherwise a teacher loaded from ``args.teacher`` is on
    the Hub when that is a Hub id; a model passed as an object only when its ``_name_or_path`` is a repo id found in
    the local Hub cache (so a model built from a config, named after its class, never passes for a Hub model).
    """
    fingerprint = fingerprint or {}
    source = fingerprint.get("source")
    if source == "hub" and fingerprint.get("repo_id"):
        return str(fingerprint["repo_id"]), True, "hub"
    if source == "local folder":
        return str(fingerprint.get("name") or args.teacher), False, "local folder"
    name = getattr(getattr(teacher, "config", None), "_name_or_path", None) or ""
    if source is None and name and name == args.teacher:
        on_hub = is_hub_id(name)
        return name, on_hub, "hub" if on_hub else "local folder"
    name = str(name or fingerprint.get("name") or "")  # the model's own _name_or_path keeps a Hub namespace
    if name and in_hub_cache(name):
        return name, True, "hub"
    return name or type(teacher).__name__, False, "model object"


def _starting_checkpoint(student: Any) -> Optional[str]:
    """The checkpoint the student's weights were loaded from: its ``_name_or_path`` when that is a local folder or a
    Hub repo in the Hub cache; ``None`` for a student built from a config (trained from scratch)."""
    origin = getattr(student.config, "_name_or_path", None) or ""
    return origin if origin and (looks_like_local_path(origin) or in_hub_cache(origin)) else None


def inherited_license(location: str, revision: Optional[str] = None) -> Optional[str]:
    """The ``license`` declared in the model card (``README.md`` metadata) of a local model folder or a Hub repo
    (read from the Hub cache, else downloaded); ``None`` when there is no card, no license or no connection."""
    path: Any = None
    if location and looks_like_local_path(location):
        path = os.path.join(location, "README.md")
    elif location and is_hub_id(location):
        path = try_to_load_from_cache(location, "README.md", revision=revision)
        if not isinstance(path, str):
            try:
                path = hf_hub_download(location, "README.md", revision=revision)
            except HUB_ERRORS:
                return None
    if not isinstance(path, str) or not os.path.isfile(path):
        return None
    try:
        declared = (metadata_load(path) or {}).get("license")
    except (ValueError, OSError) as error:  # a malformed card: say so, and publish without a license
        logger.warning("Could not read the license of the teacher's card %s: %s", public_name(location), error)
        return None
    return str(declared) if declared else None


def is_hub_dataset(name: str) -> bool:
    """Whether the dataset ``name`` has a Hub page, so that the card's ``datasets`` metadata may hold it: a Hub id
    (:func:`cktf_hf.locations.is_hub_id`) that is not one of datasets' packaged builders (``parquet``, ``arrow``,
    ``csv``, ``json``, ``imagefolder``, ``audiofolder``, ``text``, ``webdataset``, ...), which read local files."""
    return bool(name) and not _is_builder(name) and is_hub_id(name)


def _is_builder(name: str) -> bool:
    return name.strip().lower() in _PACKAGED_DATASETS_MODULES


def _dataset_names(dataset: Optional[Union[str, list[str]]], dataset_tags: Optional[Union[str, list[str]]]
                   ) -> tuple[list[str], list[str]]:
    """The datasets named for the card, and those of them that go into the ``datasets`` metadata: every name that is
    on the Hub (:func:`is_hub_dataset`; a left-out name is logged, never silently dropped)."""
    def as_list(value: Optional[Union[str, list[str]]]) -> list[str]:
        return [value] if isinstance(value, str) else list(value or [])

    names = as_list(dataset)
    hub_ids = []
    for name in names + as_list(dataset_tags):
        if not is_hub_dataset(name):
            logger.warning("Dataset %r is local data (a folder, a packaged builder such as parquet) or not a Hub id: "
                           "the model card names it in the text only, not in its `datasets` metadata.",
                           public_name(name))
        elif name not in hub_ids:
            hub_ids.append(name)
    return names, hub_ids


def _length(dataset: Any) -> Optional[int]:
    """The number of examples of a sized dataset (``None`` for a dict of datasets or an iterable one)."""
    if dataset is None or isinstance(dataset, dict) or not hasattr(dataset, "__len__"):
        return None
    return len(dataset)


def latest_metrics(log_history: list[dict[str, Any]], prefix: str) -> Optional[dict[str, float]]:
    """The accuracy metrics of the latest log entry with ``<prefix>accuracy``, unprefixed."""
    for entry in reversed(log_history):
        if f"{prefix}{TOP1}" in entry:
            return {key[len(prefix):]: value for key, value in entry.items()
                    if key.startswith(prefix) and key[len(prefix):] in (TOP1, TOP5)}
    return None


def read_metric(metrics: Optional[dict[str, float]], name: str) -> Optional[float]:
    """``metrics[name]``, or its ``eval_``/``teacher_``/``test_``-prefixed key, as a float (``None`` when absent)."""
    if not metrics:
        return None
    for key in (name, f"eval_{name}", f"teacher_{name}", f"test_{name}"):
        if metrics.get(key) is not None:
            return float(metrics[key])
    return None


def objective_from_args(args: Any) -> dict[str, Any]:
    """The resolved objective of a :class:`~cktf_hf.ContrastiveDistillationConfig`, keyed as the card expects: the
    preset and :meth:`~cktf_hf.objectives.ObjectiveSettings.knobs_that_matter` (the spec decides which knobs act in
    this run). The one place the card reads objective settings (the Method text and its table are written from it)."""
    settings = args.objective_settings
    objective = {"preset": getattr(args, "preset", None), **settings.knobs_that_matter()}
    return {k: v for k, v in objective.items() if v is not None}


def hyperparameters_from_args(args: Any) -> dict[str, Any]:
    """Training hyperparameters of a ``TrainingArguments`` (the seed is a card field of its own)."""
    value = lambda x: getattr(x, "value", x)  # noqa: E731  (enums → their string)
    world = getattr(args, "world_size", 1) or 1
    accumulation = args.gradient_accumulation_steps
    optimizer = str(value(args.optim))
    if "adam" in optimizer:
        optimizer += f" (betas=({args.adam_beta1:g}, {args.adam_beta2:g}), epsilon={args.adam_epsilon:g})"
    if getattr(args, "optim_args", None):
        optimizer += f", optim_args: {args.optim_args}"
    hp: dict[str, Any] = {
        "learning_rate": args.learning_rate,
        "train_batch_size": args.per_device_train_batch_size,
        "eval_batch_size": args.per_device_eval_batch_size,
        "gradient_accumulation_steps": accumulation if accumulation > 1 else None,
        "total_train_batch_size": args.per_device_train_batch_size * accumulation * world,
        "optimizer": optimizer,
        "weight_decay": args.weight_decay or None,
        "lr_scheduler_type": value(args.lr_scheduler_type),
        "warmup_steps": getattr(args, "warmup_steps", 0) or None,
        "warmup_ratio": getattr(args, "warmup_ratio", 0) or None,
        "training_steps": args.max_steps if args.max_steps > 0 else None,
        "num_epochs": args.num_train_epochs if args.max_steps <= 0 else None,
        "mixed_precision": "bf16" if args.bf16 else "fp16" if args.fp16 else "fp32",
    }
    return {k: v for k, v in hp.items() if v is not None}


def checkpoint_from_args(args: Any) -> str:
    """``"best"`` when the Trainer reloads the best checkpoint at the end, else ``"last"``."""
    return "best" if getattr(args, "load_best_model_at_end", False) else "last"
