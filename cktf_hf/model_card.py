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

from .measure import ModelStats, measure_model

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
    "format_ms",
    "format_ratio",
    "framework_versions",
    "hyperparameters_from_args",
    "objective_from_args",
]

TEMPLATE_PACKAGE, TEMPLATE_NAME = "cktf_hf.model_cards", "cktf_model_card.md"
DEFAULT_TAGS = ["knowledge-distillation", "cktf", "image-classification"]
TOP1, TOP5 = "accuracy", "top5_accuracy"
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


@dataclass
class DistillationCardInfo:
    """Everything the CKTF model card shows; every field left ``None`` (or empty) drops its part of the card.

    Metrics are fractions in [0, 1] under the keys ``accuracy`` and ``top5_accuracy`` (``eval_``/``teacher_``/
    ``test_``-prefixed keys, as ``Trainer.evaluate`` returns them, are read too). ``baselines`` maps a row label
    (e.g. ``"from scratch"``, ``"KD"``) to a top-1 accuracy or to a metrics dict. ``objective`` holds the resolved
    objective settings (see :func:`objective_from_args`), ``pairing`` the layer-pairing rows (keys ``pair``,
    ``student_layer``, ``student_shape``, ``teacher_layer``, ``teacher_shape``, ``weight``) as the trainer writes them
    to ``distillation_config.json``, ``hyperparameters`` the training settings (see :func:`hyperparameters_from_args`).
    ``teacher_on_hub`` defaults to "not an existing local folder and a valid repo id".
    """

    teacher: str
    student_architecture: Optional[str] = None
    repo_id: Optional[str] = None
    model_name: Optional[str] = None
    teacher_on_hub: Optional[bool] = None
    teacher_architecture: Optional[str] = None
    teacher_stats: Optional[ModelStats] = None
    student_stats: Optional[ModelStats] = None
    teacher_metrics: Optional[dict[str, float]] = None
    student_metrics: Optional[dict[str, float]] = None
    baselines: Optional[dict[str, Any]] = None
    dataset_id: Optional[str] = None
    dataset_name: Optional[str] = None
    dataset_config: Optional[str] = None
    dataset_split: Optional[str] = None
    dataset_on_hub: bool = True
    objective: dict[str, Any] = field(default_factory=dict)
    pairing: list[dict[str, Any]] = field(default_factory=list)
    hyperparameters: dict[str, Any] = field(default_factory=dict)
    seed: Optional[int] = None
    checkpoint: Optional[str] = None
    license: Optional[str] = None
    framework_versions: dict[str, str] = field(default_factory=framework_versions)

    def __post_init__(self) -> None:
        if self.teacher_on_hub is None:
            self.teacher_on_hub = not os.path.isdir(self.teacher) and _looks_like_repo_id(self.teacher)
        if self.checkpoint not in (None, "best", "last"):
            raise ValueError(f"checkpoint must be 'best', 'last' or None, got {self.checkpoint!r}.")

    @property
    def teacher_display_name(self) -> str:
        """The Hub id, or the folder's own name for a local teacher (no local paths in the card)."""
        return self.teacher if self.teacher_on_hub else os.path.basename(os.path.normpath(self.teacher))

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
    ) -> "DistillationCardInfo":
        """Everything the card says about a run of ``trainer``: the latest ``evaluate()`` / ``evaluate_teacher()``
        metrics from its log history, the objective, the pairing and the hyperparameters; parameters, size and CPU
        latency of both models are measured now."""
        args, unwrap = trainer.args, trainer.accelerator.unwrap_model
        teacher, student = unwrap(trainer.teacher), unwrap(trainer.model)
        pixel_shape = trainer.pairing.pixel_shape
        dataset_id = dataset[0] if isinstance(dataset, (list, tuple)) else dataset
        return cls(
            teacher=args.teacher or getattr(teacher.config, "_name_or_path", None) or type(teacher).__name__,
            teacher_architecture=type(teacher).__name__,
            student_architecture=type(student).__name__,
            repo_id=args.hub_model_id or trainer.hub_model_id,
            model_name=model_name,
            teacher_stats=measure_model(teacher, pixel_shape),
            student_stats=measure_model(student, pixel_shape),
            teacher_metrics=latest_metrics(trainer.state.log_history, "teacher_"),
            student_metrics=latest_metrics(trainer.state.log_history, "eval_"),
            baselines=baselines,
            dataset_id=dataset_id,
            dataset_on_hub=bool(dataset_id) and not os.path.isdir(dataset_id) and "/" in dataset_id,
            dataset_name=dataset_id,
            dataset_split=dataset_split,
            objective=objective_from_args(args),
            pairing=trainer.pairing.dicts,
            hyperparameters=hyperparameters_from_args(args),
            seed=args.seed,
            checkpoint=checkpoint_from_args(args),
            license=license,
        )


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
        "nce_momentum": args.nce_momentum if args.negatives == "memory_bank" else None,
        "feat_dim": args.feat_dim,
        "projector": args.projector,
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
    "nce_momentum": "Memory-bank momentum",
    "feat_dim": "Projection size (feat_dim)",
    "projector": "Projector heads",
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
    results = []
    for metric_type, metric_name, key in (("accuracy", "Top-1 accuracy", TOP1),
                                          ("top_5_accuracy", "Top-5 accuracy", TOP5)):
        value = _metric(info.student_metrics, key)
        if value is not None:
            results.append(EvalResult(
                task_type="image-classification", task_name="Image Classification",
                dataset_type=info.dataset_id, dataset_name=info.dataset_name or info.dataset_id,
                dataset_config=info.dataset_config, dataset_split=info.dataset_split,
                metric_type=metric_type, metric_name=metric_name, metric_value=value,
            ))
    return results or None


def build_model_card(info: DistillationCardInfo, template_path: Optional[str] = None) -> ModelCard:
    """Render the CKTF model card of ``info``: Hub metadata through ``ModelCardData``, the text from the template."""
    eval_results = _eval_results(info)
    card_data = ModelCardData(
        base_model=info.teacher if info.teacher_on_hub else None,
        datasets=[info.dataset_id] if info.dataset_id and info.dataset_on_hub else None,
        metrics=["accuracy"],
        tags=list(DEFAULT_TAGS),
        license=info.license,
        library_name="transformers",
        pipeline_tag="image-classification",
        model_name=info.repo_id or info.title,
        eval_results=eval_results,
    )
    results = _result_rows(info)
    compression, compression_ratio = _compression(info)
    teacher_top1, student_top1 = _metric(info.teacher_metrics, TOP1), _metric(info.student_metrics, TOP1)
    s_stats, t_stats = info.student_stats, info.teacher_stats
    speedup = None
    if s_stats and t_stats and 1 in s_stats.latency_ms and 1 in t_stats.latency_ms \
            and t_stats.latency_ms[1] > s_stats.latency_ms[1]:
        speedup = format_ratio(t_stats.latency_ms[1], s_stats.latency_ms[1])
    fields = dict(
        title=info.title,
        repo_id=info.repo_id,
        teacher_name=info.teacher_display_name,
        teacher_url=f"https://huggingface.co/{info.teacher}" if info.teacher_on_hub else None,
        teacher_architecture=info.teacher_architecture,
        student_architecture=info.student_architecture,
        dataset_id=info.dataset_id,
        dataset_label=info.dataset_name or info.dataset_id,
        dataset_url=f"https://huggingface.co/datasets/{info.dataset_id}" if info.dataset_id and info.dataset_on_hub
        else None,
        dataset_config=info.dataset_config,
        dataset_split=info.dataset_split,
        results=[{**r, "top1": _format_accuracy(r["top1"]),
                  "top5": _format_accuracy(r["top5"]) if r["top5"] is not None else None} for r in results],
        results_top5=bool(results) and all(r["top5"] is not None for r in results),
        retention=(f"{100 * student_top1 / teacher_top1:.1f}%" if teacher_top1 and student_top1 is not None else None),
        compression=compression,
        compression_ratio=compression_ratio,
        speedup=speedup,
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


_VERBATIM = {"teacher_url", "dataset_url", "repo_id"}  # links and code, where a backslash would be taken literally


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
