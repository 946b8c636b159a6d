"""Model cards for CKTF-distilled students: the facts of a finished run, Hub metadata, and a Jinja template.

The card is a :class:`huggingface_hub.ModelCard` rendered from the template ``model_cards/cktf_model_card.md``
(shipped as ``cktf_hf.model_cards``). Its metadata goes through :class:`huggingface_hub.ModelCardData`
(``base_model``, ``datasets``, ``tags``, ``model-index`` with the student's accuracy as
:class:`huggingface_hub.EvalResult`), so the Hub parses it like any other card. Every optional part of the card
disappears when its value is unknown (``None``). Measurements come from :mod:`cktf_hf.measure`.

Typical use (the trainer's ``create_model_card`` does this)::

    info = DistillationCardInfo.from_trainer(trainer, dataset="uoft-cs/cifar100", dataset_split="test")
    build_model_card(info).save("out/README.md")
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from importlib import metadata, resources
from typing import TYPE_CHECKING, Any, Optional, Union

from huggingface_hub import EvalResult, ModelCard, ModelCardData
from transformers.utils import logging

from .card_assets import EXAMPLE_FILE, example_image, plot_training_curves
from .measure import ModelStats, measure_model
from .training_log import accuracy_curve, summarise_log_history

if TYPE_CHECKING:
    from .trainer import ContrastiveDistillationTrainer

__all__ = [
    "DEFAULT_TAGS",
    "DistillationCardInfo",
    "build_model_card",
    "checkpoint_from_args",
    "default_template_path",
    "format_bytes",
    "format_count",
    "format_duration",
    "format_ms",
    "format_ratio",
    "framework_versions",
    "hyperparameters_from_args",
    "objective_from_args",
    "write_model_card",
]

logger = logging.get_logger(__name__)

TEMPLATE_PACKAGE, TEMPLATE_NAME = "cktf_hf.model_cards", "cktf_model_card.md"
DEFAULT_TAGS = ["knowledge-distillation", "cktf", "image-classification"]
TOP1, TOP5 = "accuracy", "top5_accuracy"
# Keyword arguments of transformers' Trainer.create_model_card that the CKTF card has no use for.
_IGNORED_TRAINER_CARD_ARGS = frozenset({"tasks", "dataset_args"})
_FRAMEWORKS = (("cktf_hf", "cktf_hf"), ("Transformers", "transformers"), ("PyTorch", "torch"),
               ("Datasets", "datasets"), ("huggingface_hub", "huggingface_hub"))


# ------------------------------------------------------------------------------------------------ formatting
def format_count(n: int) -> str:
    """``85806346`` → ``"85,806,346 (85.8M)"``; ``950`` → ``"950"``."""
    for scale, unit in ((1e9, "B"), (1e6, "M"), (1e3, "K")):
        if n >= scale:
            return f"{n:,} ({n / scale:.1f}{unit})"
    return f"{n:,}"


def format_bytes(n: int) -> str:
    """Binary units: ``343_000_000`` → ``"327.1 MiB"``."""
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def format_ms(ms: float) -> str:
    """Milliseconds: 2 decimals under 10, 1 under 100, else 0: ``0.4321`` → ``"0.43"``, ``123.4`` → ``"123"``."""
    return f"{ms:.2f}" if ms < 10 else f"{ms:.1f}" if ms < 100 else f"{ms:.0f}"


def format_ratio(numerator: float, denominator: float) -> str:
    """``teacher / student`` as ``"3.52×"`` (``"11.6×"`` from 10 up)."""
    ratio = numerator / denominator
    return f"{ratio:.2f}×" if ratio < 10 else f"{ratio:.1f}×"


def format_duration(seconds: float) -> str:
    """Wall time: ``4.45`` → ``"4.5 s"``, ``252`` → ``"4 min 12 s"``, ``3725`` → ``"1 h 02 min"``."""
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes = int(round(seconds)) // 60
    if minutes < 60:
        return f"{minutes} min {int(round(seconds)) % 60:02d} s"
    return f"{minutes // 60} h {minutes % 60:02d} min"


def _format_accuracy(value: float) -> str:
    return f"{100 * value:.2f}%" if value <= 1 else f"{value:.2f}%"


def _format_shape(shape: Any) -> str:
    if isinstance(shape, (list, tuple)):
        return "×".join(str(d) for d in shape)
    return str(shape)


def _format_value(value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, dict):
        return ", ".join(f"{k}={_format_value(v)}" for k, v in value.items())
    return str(value)


# ------------------------------------------------------------------------------------------------ card info
def framework_versions() -> dict[str, str]:
    """Installed versions of cktf_hf, transformers, torch, datasets and huggingface_hub (missing ones left out)."""
    versions = {}
    for label, dist in _FRAMEWORKS:
        try:
            versions[label] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return versions


def _looks_like_repo_id(name: str) -> bool:
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(name)
    except HFValidationError:
        return False
    return True


def _in_hub_cache(repo_id: str) -> bool:
    """Whether ``repo_id``'s ``config.json`` is in the local Hub cache (a model object so named came from the Hub)."""
    from huggingface_hub import try_to_load_from_cache

    return isinstance(try_to_load_from_cache(repo_id, "config.json"), str)


def _is_hub_name(name: str) -> bool:
    return not os.path.exists(name) and _looks_like_repo_id(name)


def _teacher_identity(args: Any, teacher: Any, fingerprint: Optional[dict[str, Any]]) -> tuple[str, bool, str]:
    """``(name, on the Hub, source)`` of the teacher, ``source`` one of ``hub``, ``local folder``, ``model object``.

    The trainer's ``teacher_fingerprint`` decides when present. Otherwise a teacher loaded from ``args.teacher`` is on
    the Hub when that is no folder; a model passed as an object only when its ``_name_or_path`` is a repo id found in
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
        on_hub = not os.path.isdir(name) and _looks_like_repo_id(name)
        return name, on_hub, "hub" if on_hub else "local folder"
    name = str(name or fingerprint.get("name") or "")  # the model's own _name_or_path keeps a Hub namespace
    if name and _is_hub_name(name) and _in_hub_cache(name):
        return name, True, "hub"
    return name or type(teacher).__name__, False, "model object"


def _dataset_names(dataset: Optional[Union[str, list[str]]], dataset_tags: Optional[Union[str, list[str]]]
                   ) -> tuple[list[str], list[str]]:
    """The datasets named for the card, and those of them that go into the ``datasets`` metadata: every name that is
    a valid Hub id and no local path (a left-out name is logged, never silently dropped)."""
    def as_list(value: Optional[Union[str, list[str]]]) -> list[str]:
        return [value] if isinstance(value, str) else list(value or [])

    names = as_list(dataset)
    hub_ids = []
    for name in names + as_list(dataset_tags):
        if not _is_hub_name(name):
            logger.warning("Dataset %r is a local path or not a Hub id: the model card names it in the text only, "
                           "not in its `datasets` metadata.", os.path.basename(os.path.normpath(name)))
        elif name not in hub_ids:
            hub_ids.append(name)
    return names, hub_ids


@dataclass
class DistillationCardInfo:
    """Everything the CKTF model card shows; every field left ``None`` (or empty) drops its part of the card.

    Metrics are fractions in [0, 1] under the keys ``accuracy`` and ``top5_accuracy`` (``eval_``/``teacher_``/
    ``test_``-prefixed keys, as ``Trainer.evaluate`` returns them, are read too). ``baselines`` maps a row label
    (e.g. ``"from scratch"``, ``"KD"``) to a top-1 accuracy or to a metrics dict. ``objective`` holds the resolved
    objective settings (see :func:`objective_from_args`), ``pairing`` the layer-pairing rows (keys ``pair``,
    ``student_layer``, ``student_shape``, ``teacher_layer``, ``teacher_shape``, ``weight``) as the trainer writes them
    to ``distillation_config.json``, ``hyperparameters`` the training settings (see :func:`hyperparameters_from_args`).
    ``teacher_on_hub`` defaults to "not an existing local folder and a valid repo id", ``dataset_on_hub`` likewise.

    The evidence: ``eval_samples`` / ``train_samples`` (images evaluated / trained on), ``epochs``, ``steps`` and
    ``train_runtime`` (seconds of ``train()``), ``training_rows`` (see :class:`~cktf_hf.training_log.RunSummary`)
    with ``loss_components`` their component columns, ``curves_image`` / ``example_image`` file names next to the card.
    ``teacher_fingerprint`` is the trainer's record of the teacher's exact weights (``commit``, ``weights_sha256``,
    ``state_dict_sha256``). ``finetuned_from`` (the student's own starting checkpoint) replaces the teacher as
    ``base_model``; ``dataset_ids`` (default: ``dataset_id`` when on the Hub) is the ``datasets`` metadata.
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
    training_rows: list[dict[str, Any]] = field(default_factory=list)
    loss_components: list[str] = field(default_factory=list)
    curves_image: Optional[str] = None
    example_image: Optional[str] = None
    example_label: Optional[str] = None
    objective: dict[str, Any] = field(default_factory=dict)
    pairing: list[dict[str, Any]] = field(default_factory=list)
    hyperparameters: dict[str, Any] = field(default_factory=dict)
    seed: Optional[int] = None
    checkpoint: Optional[str] = None
    license: Optional[str] = None
    language: Optional[Union[str, list[str]]] = None
    tags: list[str] = field(default_factory=list)
    finetuned_from: Optional[str] = None
    framework_versions: dict[str, str] = field(default_factory=framework_versions)

    def __post_init__(self) -> None:
        if self.teacher_on_hub is None:
            self.teacher_on_hub = _is_hub_name(self.teacher)
        if self.teacher_source is None:
            self.teacher_source = "hub" if self.teacher_on_hub else "local folder"
        if self.dataset_on_hub is None:
            self.dataset_on_hub = bool(self.dataset_id) and _is_hub_name(self.dataset_id)
        if self.dataset_ids is None:
            self.dataset_ids = [self.dataset_id] if self.dataset_id and self.dataset_on_hub else []
        if self.checkpoint not in (None, "best", "last"):
            raise ValueError(f"checkpoint must be 'best', 'last' or None, got {self.checkpoint!r}.")

    @property
    def teacher_display_name(self) -> str:
        """The Hub id, or the folder's own name for a local teacher (no local paths in the card)."""
        return self.teacher if self.teacher_on_hub else os.path.basename(os.path.normpath(self.teacher))

    @property
    def dataset_display_name(self) -> Optional[str]:
        """``dataset_name``, else the Hub id, else the local folder's own name."""
        if self.dataset_name and not (self.dataset_name == self.dataset_id and not self.dataset_on_hub):
            return self.dataset_name
        if not self.dataset_id:
            return None
        return self.dataset_id if self.dataset_on_hub else os.path.basename(os.path.normpath(self.dataset_id))

    @property
    def title(self) -> str:
        if self.model_name:
            return self.model_name
        if self.repo_id:
            return self.repo_id.split("/")[-1]
        return f"{self.student_architecture or 'Student'} distilled from {self.teacher_display_name}"

    @classmethod
    def from_trainer(
        cls,
        trainer: "ContrastiveDistillationTrainer",
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
    ) -> "DistillationCardInfo":
        """Everything the card says about a run of ``trainer``: the latest ``evaluate()`` / ``evaluate_teacher()``
        metrics and the training table from its log history, the data sizes, the objective, the pairing and the
        hyperparameters; parameters, size and (unless ``card_latency=False``) CPU latency at the configured batch
        sizes of both models are measured now.

        The keyword arguments are those of ``Trainer.create_model_card``: ``tags`` are added to ours, ``dataset`` /
        ``dataset_tags`` names that are Hub ids go into the ``datasets`` metadata (the first ``dataset`` is the
        evaluated one), ``finetuned_from`` defaults to the student's own Hub checkpoint if it was loaded from one;
        ``tasks`` and ``dataset_args`` are accepted and unused.
        """
        unknown = set(trainer_card_kwargs) - _IGNORED_TRAINER_CARD_ARGS
        if unknown:
            raise TypeError(f"create_model_card() got unexpected keyword arguments {sorted(unknown)}.")
        args, unwrap = trainer.args, trainer.accelerator.unwrap_model
        teacher, student = unwrap(trainer.teacher), unwrap(trainer.model)
        pixel_shape = trainer.pairing.pixel_shape
        fingerprint = getattr(trainer, "teacher_fingerprint", None)
        teacher_name, teacher_on_hub, teacher_source = _teacher_identity(args, teacher, fingerprint)
        names, hub_ids = _dataset_names(dataset, dataset_tags)
        student_origin = getattr(student.config, "_name_or_path", None) or ""
        if finetuned_from is None and _is_hub_name(student_origin) and _in_hub_cache(student_origin):
            finetuned_from = student_origin
        latency_batches = list(getattr(args, "card_latency_batch_sizes", (1, 32))) \
            if getattr(args, "card_latency", True) else []
        run = summarise_log_history(trainer.state.log_history)
        return cls(
            teacher=teacher_name,
            teacher_on_hub=teacher_on_hub,
            teacher_source=teacher_source,
            teacher_architecture=type(teacher).__name__,
            teacher_revision=(fingerprint or {}).get("commit") or (args.teacher_revision if teacher_on_hub else None),
            teacher_fingerprint=fingerprint,
            student_architecture=type(student).__name__,
            repo_id=args.hub_model_id or trainer.hub_model_id,
            model_name=model_name,
            teacher_stats=measure_model(teacher, pixel_shape, latency_batches),
            student_stats=measure_model(student, pixel_shape, latency_batches),
            teacher_metrics=latest_metrics(trainer.state.log_history, "teacher_"),
            student_metrics=latest_metrics(trainer.state.log_history, "eval_"),
            baselines=baselines,
            dataset_id=names[0] if names else None,
            dataset_split=dataset_split,
            dataset_ids=hub_ids,
            eval_samples=_length(trainer.eval_dataset),
            train_samples=_length(trainer.train_dataset),
            epochs=run.epochs,
            steps=run.steps,
            train_runtime=run.train_runtime,
            training_rows=run.rows,
            loss_components=run.components,
            objective=objective_from_args(args),
            pairing=trainer.pairing.dicts,
            hyperparameters=hyperparameters_from_args(args),
            seed=args.seed,
            checkpoint=checkpoint_from_args(args),
            license=license,
            language=language,
            tags=[tags] if isinstance(tags, str) else list(tags or []),
            finetuned_from=finetuned_from,
        )


def _length(dataset: Any) -> Optional[int]:
    """The number of examples of a sized dataset (``None`` for a dict of datasets or an iterable one)."""
    if dataset is None or isinstance(dataset, dict) or not hasattr(dataset, "__len__"):
        return None
    return len(dataset)


def write_model_card(
    trainer: "ContrastiveDistillationTrainer", output_dir: str, **card_kwargs: Any
) -> DistillationCardInfo:
    """Write the card of ``trainer``'s run into ``output_dir``: ``README.md``, ``training_curves.png`` (when the run
    was evaluated during training and matplotlib is installed) and ``example.png`` (the first evaluation image, the Hub
    widget's example). ``card_kwargs`` go to :meth:`DistillationCardInfo.from_trainer`. Returns the card's facts."""
    info = DistillationCardInfo.from_trainer(trainer, **card_kwargs)
    os.makedirs(output_dir, exist_ok=True)
    curve = accuracy_curve(info.training_rows)
    info.curves_image = plot_training_curves(curve, _metric(info.teacher_metrics, TOP1), output_dir)
    example = example_image(trainer.eval_dataset, getattr(trainer, "processing_class", None))
    if example is not None:
        image, label = example
        image.save(os.path.join(output_dir, EXAMPLE_FILE))
        info.example_image = EXAMPLE_FILE
        id2label = getattr(trainer.accelerator.unwrap_model(trainer.model).config, "id2label", None) or {}
        info.example_label = str(id2label.get(label, label)) if label is not None else None
    build_model_card(info).save(os.path.join(output_dir, "README.md"))
    return info


def latest_metrics(log_history: list[dict[str, Any]], prefix: str) -> Optional[dict[str, float]]:
    """The accuracy metrics of the latest log entry with ``<prefix>accuracy``, unprefixed."""
    for entry in reversed(log_history):
        if f"{prefix}{TOP1}" in entry:
            return {key[len(prefix):]: value for key, value in entry.items()
                    if key.startswith(prefix) and key[len(prefix):] in (TOP1, TOP5)}
    return None


def _metric(metrics: Optional[dict[str, float]], name: str) -> Optional[float]:
    if not metrics:
        return None
    for key in (name, f"eval_{name}", f"teacher_{name}", f"test_{name}"):
        if metrics.get(key) is not None:
            return float(metrics[key])
    return None


def objective_from_args(args: Any) -> dict[str, Any]:
    """The resolved objective of a :class:`~cktf_hf.ContrastiveDistillationConfig`, keyed as the card expects."""
    settings = args.objective_settings
    objective: dict[str, Any] = {
        "preset": getattr(args, "preset", None),
        "ce_weight": settings.ce_weight,
        "kd_weight": settings.kd_weight,
        "final_weight": settings.final_weight,
        "layer_weight": settings.layer_weight,
        "temperature": settings.temperature,
        "kd_temperature": settings.kd_temperature if settings.kd_weight > 0 else None,
        "negatives": args.negatives,
        "nce_k": args.nce_k if args.negatives == "memory_bank" else None,
        "negative_sampling": args.negative_sampling if args.negatives == "memory_bank" else None,
        "bank_dtype": args.bank_dtype if args.negatives == "memory_bank" else None,
        "positive": settings.positive if args.negatives == "memory_bank" else None,
        "bank_warm_start": settings.bank_warm_start if args.negatives == "memory_bank" else None,
        "bank_loss": settings.bank_loss if args.negatives == "memory_bank" else None,
        "contrastive_warmup": settings.contrastive_warmup or None,
        "spatial_contrast": settings.spatial_contrast or None,
        "stage_pooling": args.stage_pooling if args.stage_pooling != "global" else None,
        "pool_window": args.pool_window if args.stage_pooling != "global" else None,
        "nce_momentum": args.nce_momentum if args.negatives == "memory_bank" else None,
        "feat_dim": args.feat_dim,
        "projector": args.projector,
        "teacher_projector": settings.teacher_projector if settings.teacher_projector != "trained" else None,
        "classic": dict(settings.classic) or None,
        "feature_batch_norm": settings.feature_batch_norm,
        "layer_pairs": getattr(args, "layer_pairs", None),
        "token_pooling": getattr(args, "token_pooling", None),
    }
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


_OBJECTIVE_LABELS = {
    "preset": "Preset",
    "ce_weight": "γ: cross-entropy weight",
    "kd_weight": "α: KD weight",
    "final_weight": "β: contrastive weight, final pair",
    "layer_weight": "θ: contrastive weight, each intermediate pair",
    "temperature": "τ: contrastive temperature",
    "kd_temperature": "T: KD temperature",
    "negatives": "Negatives",
    "nce_k": "K: negatives per sample",
    "negative_sampling": "Memory-bank negatives (per sample or shared by the batch)",
    "bank_dtype": "Memory-bank storage",
    "positive": "Memory-bank positive (bank row or current embedding)",
    "bank_warm_start": "Memory-bank warm start",
    "bank_loss": "Memory-bank loss (CRD's NCE or MoCo's InfoNCE)",
    "contrastive_warmup": "Contrastive weights warmed up over (fraction of training)",
    "spatial_contrast": "Intermediate pairs contrasted cell by cell",
    "stage_pooling": "Stage pooling",
    "pool_window": "Pooling window",
    "nce_momentum": "Memory-bank momentum",
    "feat_dim": "Projection size (feat_dim)",
    "projector": "Projector heads",
    "teacher_projector": "Teacher-side heads",
    "classic": "Classic terms (weights)",
    "feature_batch_norm": "Batch-dimension L2 normalisation",
    "layer_pairs": "Layer pairs",
    "token_pooling": "Token pooling",
}


def _rows(values: dict[str, Any], labels: dict[str, str]) -> list[dict[str, str]]:
    ordered = [k for k in labels if k in values] + [k for k in values if k not in labels]
    return [{"name": labels.get(k, k), "value": _format_value(values[k])}
            for k in ordered if values[k] is not None and values[k] != {}]


def _result_rows(info: DistillationCardInfo) -> list[dict[str, Any]]:
    rows = []
    for label, metrics in (
        (f"Teacher ({info.teacher_display_name})", info.teacher_metrics),
        (f"Student, CKTF ({info.student_architecture})" if info.student_architecture else "Student, CKTF",
         info.student_metrics),
    ):
        top1 = _metric(metrics, TOP1)
        if top1 is not None:
            rows.append({"model": label, "top1": top1, "top5": _metric(metrics, TOP5)})
    for label, value in (info.baselines or {}).items():
        metrics = value if isinstance(value, dict) else {TOP1: value}
        top1 = _metric(metrics, TOP1)
        if top1 is not None:
            rows.append({"model": label, "top1": top1, "top5": _metric(metrics, TOP5)})
    return rows


def _compression(info: DistillationCardInfo) -> tuple[list[dict[str, Optional[str]]], Optional[str]]:
    student, teacher = info.student_stats, info.teacher_stats
    if student is None:
        return [], None

    def row(label: str, s: float, t: Optional[float], fmt, ratio_of: Optional[tuple[float, float]]) -> dict:
        return {"label": label, "student": fmt(s), "teacher": fmt(t) if teacher else None,
                "ratio": format_ratio(*ratio_of) if teacher and ratio_of else None}

    rows = [
        row("Parameters", student.parameters, teacher and teacher.parameters, format_count,
            teacher and (teacher.parameters, student.parameters)),
        row("Weights on disk", student.size_bytes, teacher and teacher.size_bytes, format_bytes,
            teacher and (teacher.size_bytes, student.size_bytes)),
    ]
    batches = sorted(set(student.latency_ms) & set(teacher.latency_ms)) if teacher else sorted(student.latency_ms)
    for b in batches:
        t_ms = teacher.latency_ms[b] if teacher else None
        rows.append(row(f"CPU latency, batch {b} (ms)", student.latency_ms[b], t_ms, format_ms,
                        teacher and (t_ms, student.latency_ms[b])))
    fewer = teacher is not None and teacher.parameters > student.parameters
    return rows, format_ratio(teacher.parameters, student.parameters) if fewer else None


# ------------------------------------------------------------------------------------------------ the card
def default_template_path() -> str:
    """The shipped ``cktf_model_card.md`` (package ``cktf_hf.model_cards``: ``model_cards/`` in the repository)."""
    path = resources.files(TEMPLATE_PACKAGE).joinpath(TEMPLATE_NAME)
    if not path.is_file():
        raise FileNotFoundError(f"The model-card template {TEMPLATE_NAME} is missing from {TEMPLATE_PACKAGE}: "
                                "reinstall cktf_hf.")
    return str(path)


def _eval_results(info: DistillationCardInfo) -> Optional[list[EvalResult]]:
    if not info.dataset_id:
        return None
    dataset_type = info.dataset_id if info.dataset_on_hub else info.dataset_display_name  # never a local path
    results = []
    for metric_type, metric_name, key in (("accuracy", "Top-1 accuracy", TOP1),
                                          ("top_5_accuracy", "Top-5 accuracy", TOP5)):
        value = _metric(info.student_metrics, key)
        if value is not None:
            results.append(EvalResult(
                task_type="image-classification", task_name="Image Classification",
                dataset_type=dataset_type, dataset_name=info.dataset_display_name,
                dataset_config=info.dataset_config, dataset_split=info.dataset_split,
                metric_type=metric_type, metric_name=metric_name, metric_value=value,
            ))
    return results or None


def _speed(info: DistillationCardInfo) -> tuple[Optional[str], list[dict[str, Any]]]:
    """The speed-up at batch size 1 (or the smallest batch timed) when the student is faster at every batch size
    timed, and the batch sizes where it is not faster (``batch``, ``student``, ``teacher`` in ms)."""
    s_stats, t_stats = info.student_stats, info.teacher_stats
    if not s_stats or not t_stats:
        return None, []
    batches = sorted(set(s_stats.latency_ms) & set(t_stats.latency_ms))
    slower = [{"batch": b, "student": format_ms(s_stats.latency_ms[b]), "teacher": format_ms(t_stats.latency_ms[b])}
              for b in batches if s_stats.latency_ms[b] >= t_stats.latency_ms[b]]
    if not batches or slower:
        return None, slower
    first = batches[0]
    return f"{format_ratio(t_stats.latency_ms[first], s_stats.latency_ms[first])} faster at batch size {first}", []


def _training_table(info: DistillationCardInfo) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the training-results table: epoch, step, training loss, each loss component, validation
    loss and accuracy (columns no row has are left out)."""
    columns = [("epoch", "Epoch", lambda v: f"{v:.2f}".rstrip("0").rstrip(".")), ("step", "Step", str),
               ("loss", "Training loss", lambda v: f"{v:.4f}")]
    columns += [(name, f"`{name}`", lambda v: f"{v:.4f}") for name in info.loss_components]
    columns += [("eval_loss", "Validation loss", lambda v: f"{v:.4f}"), (TOP1, "Top-1 accuracy", _format_accuracy),
                (TOP5, "Top-5 accuracy", _format_accuracy)]
    present = [c for c in columns if any(row.get(c[0]) is not None for row in info.training_rows)]
    rows = [[fmt(row[key]) if row.get(key) is not None else "–" for key, _, fmt in present]
            for row in info.training_rows]
    return [label for _, label, _ in present], rows


def _widget(info: DistillationCardInfo) -> Optional[list[dict[str, str]]]:
    """The Hub widget's example: the pushed ``example.png`` by its URL in the repository (needs ``repo_id``)."""
    if not info.example_image or not info.repo_id:
        return None
    entry = {"src": f"https://huggingface.co/{info.repo_id}/resolve/main/{info.example_image}"}
    if info.example_label:
        entry["example_title"] = info.example_label
    return [entry]


def _merged_tags(info: DistillationCardInfo) -> list[str]:
    tags = list(DEFAULT_TAGS)
    tags += [t for t in dict.fromkeys(info.tags) if t not in tags]
    return tags


def build_model_card(info: DistillationCardInfo, template_path: Optional[str] = None) -> ModelCard:
    """Render the CKTF model card of ``info``: Hub metadata through ``ModelCardData``, the text from the template."""
    eval_results = _eval_results(info)
    base_model = info.finetuned_from or (info.teacher if info.teacher_on_hub else None)
    card_data = ModelCardData(
        base_model=base_model,
        datasets=info.dataset_ids or None,
        language=info.language,
        metrics=["accuracy"],
        tags=_merged_tags(info),
        license=info.license,
        library_name="transformers",
        pipeline_tag="image-classification",
        model_name=info.repo_id or info.title,
        eval_results=eval_results,
        widget=_widget(info),
    )
    results = _result_rows(info)
    compression, compression_ratio = _compression(info)
    teacher_top1, student_top1 = _metric(info.teacher_metrics, TOP1), _metric(info.student_metrics, TOP1)
    s_stats, t_stats = info.student_stats, info.teacher_stats
    speedup, slower = _speed(info)
    training_header, training_rows = _training_table(info)
    fingerprint = info.teacher_fingerprint or {}
    weights = fingerprint.get("weights_sha256") or {}
    if fingerprint.get("state_dict_sha256"):
        weights = {**weights, "state dict": fingerprint["state_dict_sha256"]}
    fields = dict(
        title=info.title,
        repo_id=info.repo_id,
        teacher_name=info.teacher_display_name,
        teacher_url=f"https://huggingface.co/{info.teacher}" if info.teacher_on_hub else None,
        teacher_source=info.teacher_source,
        teacher_architecture=info.teacher_architecture,
        teacher_revision=info.teacher_revision,
        teacher_weights=weights if isinstance(weights, dict) else {"weights": str(weights)},
        student_architecture=info.student_architecture,
        finetuned_from=info.finetuned_from,
        finetuned_from_url=(f"https://huggingface.co/{info.finetuned_from}" if info.finetuned_from
                            and _looks_like_repo_id(info.finetuned_from) else None),
        dataset_id=info.dataset_id,
        dataset_label=info.dataset_display_name,
        dataset_url=f"https://huggingface.co/datasets/{info.dataset_id}" if info.dataset_id and info.dataset_on_hub
        else None,
        dataset_config=info.dataset_config,
        dataset_split=info.dataset_split,
        eval_samples=f"{info.eval_samples:,}" if info.eval_samples is not None else None,
        train_samples=f"{info.train_samples:,}" if info.train_samples is not None else None,
        epochs=f"{info.epochs:.2f}".rstrip("0").rstrip(".") if info.epochs is not None else None,
        epochs_plural=info.epochs != 1,
        steps=f"{info.steps:,}" if info.steps is not None else None,
        train_runtime=format_duration(info.train_runtime) if info.train_runtime is not None else None,
        training_header=training_header,
        training_rows=training_rows,
        curves_image=info.curves_image,
        results=[{**r, "top1": _format_accuracy(r["top1"]),
                  "top5": _format_accuracy(r["top5"]) if r["top5"] is not None else None} for r in results],
        results_top5=bool(results) and all(r["top5"] is not None for r in results),
        retention=(f"{100 * student_top1 / teacher_top1:.1f}%" if teacher_top1 and student_top1 is not None else None),
        compression=compression,
        compression_ratio=compression_ratio,
        not_smaller=bool(s_stats and t_stats and s_stats.parameters >= t_stats.parameters),
        speedup=speedup,
        slower=slower,
        latency_measured=bool(s_stats and s_stats.latency_ms),
        latency_setup=s_stats.latency_setup if s_stats else None,
        teacher_latency_setup=(t_stats.latency_setup if s_stats and t_stats
                               and t_stats.latency_setup != s_stats.latency_setup else None),
        objective_rows=_rows(info.objective, _OBJECTIVE_LABELS),
        pairing_rows=[{**row, "student_shape": _format_shape(row.get("student_shape")),
                       "teacher_shape": _format_shape(row.get("teacher_shape")),
                       "weight": _format_value(row.get("weight"))} for row in info.pairing],
        hyperparameter_rows=_rows(info.hyperparameters, {}),
        seed=info.seed,
        checkpoint=info.checkpoint,
        framework_versions=info.framework_versions,
    )
    fields = {key: value if key in _VERBATIM else markdown_escape(value) for key, value in fields.items()}
    return ModelCard.from_template(card_data, template_path=template_path or default_template_path(), **fields)


# Links and code, where a backslash would be taken literally.
_VERBATIM = {"teacher_url", "dataset_url", "finetuned_from_url", "repo_id", "curves_image"}


def markdown_escape(value: Any) -> Any:
    """``value`` safe inside a markdown table cell or line: ``|`` escaped, line breaks made spaces (strings inside
    lists and dicts too; other values unchanged)."""
    if isinstance(value, str):
        return " ".join(value.splitlines()).replace("|", "\\|")
    if isinstance(value, dict):
        return {k: markdown_escape(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(markdown_escape(v) for v in value)
    return value
