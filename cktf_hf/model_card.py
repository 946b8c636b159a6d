"""The CKTF model card: plain facts (:mod:`cktf_hf.card_facts`) rendered through a Jinja template, and written.

The card is a :class:`huggingface_hub.ModelCard` rendered from the template ``model_cards/cktf_model_card.md``
(shipped as ``cktf_hf.model_cards``). Its metadata goes through :class:`huggingface_hub.ModelCardData`
(``base_model``: the student's own starting checkpoint, ``teacher_model``, ``license``, ``datasets``, ``tags``,
``model-index`` with the student's accuracy as :class:`huggingface_hub.EvalResult`), so the Hub parses it like any
other card. Every optional part of the card disappears when its value is unknown (``None``).

Typical use (the trainer's ``create_model_card`` does this)::

    info = gather_card_facts(trainer, dataset="uoft-cs/cifar100", dataset_split="test")
    build_model_card(info).save("out/README.md")
"""

from __future__ import annotations

import os
from importlib import resources
from typing import Any, Optional

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from .card_assets import EXAMPLE_FILE, example_image, plot_training_curves
from .card_facts import (
    TOP1,
    TOP5,
    DistillationCardInfo,
    checkpoint_from_args,
    framework_versions,
    gather_card_facts,
    hyperparameters_from_args,
    latest_metrics,
    objective_from_args,
    read_metric,
)
from .formatting import (
    format_accuracy,
    format_bytes,
    format_count,
    format_duration,
    format_epochs,
    format_ms,
    format_ratio,
    format_shape,
    format_value,
)
from .locations import is_hub_id, public_name
from .measure import ModelStats
from .objectives import ObjectiveSettings
from .training_log import accuracy_curve

__all__ = [
    "DEFAULT_TAGS",
    "DistillationCardInfo",
    "build_model_card",
    "checkpoint_from_args",
    "default_template_path",
    "describe_method",
    "format_bytes",
    "format_count",
    "format_duration",
    "format_latency",
    "format_ms",
    "format_ratio",
    "framework_versions",
    "gather_card_facts",
    "hyperparameters_from_args",
    "latest_metrics",
    "markdown_escape",
    "objective_from_args",
    "write_model_card",
]

TEMPLATE_PACKAGE, TEMPLATE_NAME = "cktf_hf.model_cards", "cktf_model_card.md"
DEFAULT_TAGS = ["knowledge-distillation", "cktf", "image-classification"]
# The Hub's model tree: a student whose weights started from a checkpoint is a fine-tune of it (the Hub's relations
# are adapter, merge, quantized and finetune).
BASE_MODEL_RELATION = "finetune"

_OBJECTIVE_LABELS = {"preset": "Preset", **ObjectiveSettings.labels()}  # the spec keeps each knob's label
# Links and code, where a backslash would be taken literally.
_VERBATIM = {"teacher_url", "dataset_url", "finetuned_from_url", "repo_id", "curves_image"}


# ------------------------------------------------------------------------------------------------ the Method text
def describe_method(objective: dict[str, Any]) -> str:
    """The Method paragraph of the card, written from the resolved objective (:func:`objective_from_args`): the loss
    with the terms that act, where the contrastive negatives come from, whether the teacher side has heads, and
    whether intermediate pairs are contrasted cell by cell or pooled. A generic description without an objective."""
    if not objective:
        return ("The student minimises γ·CE(student, labels) + α·KD(student, teacher) + β·C(final) + θ·Σ_m C(pair m), "
                "where C is a contrastive loss between the paired student and teacher features: the same image is "
                "the positive, other images are the negatives.")
    weight = lambda name: float(objective.get(name, 0) or 0)  # noqa: E731
    terms = [text for name, text in (("ce_weight", "γ·CE(student, labels)"), ("kd_weight", "α·KD(student, teacher)"),
                                     ("final_weight", "β·C(final)"), ("layer_weight", "θ·Σ_m C(pair m)"))
             if weight(name) > 0]
    terms += [f"w_{name}·L_{name}" for name, w in (objective.get("classic") or {}).items() if w > 0]
    sentences = [f"The student minimises L = {' + '.join(terms) or '0'} (values below)."]
    if weight("final_weight") <= 0 and weight("layer_weight") <= 0:
        if not objective.get("classic") and weight("kd_weight") <= 0:
            sentences.append("No term reads the teacher: the student is trained on the labels alone.")
        return " ".join(sentences)
    temperature = f", τ = {format_value(objective['temperature'])}" if "temperature" in objective else ""
    if objective.get("teacher_projector") == "none":
        sentences.append("C maps the student's features through a trained head into the teacher's own feature space "
                         "and compares them with the teacher's features as they are (L2-normalised; no teacher-side "
                         "head).")
    else:
        size = f" {objective['feat_dim']}-dimensional" if "feat_dim" in objective else ""
        sentences.append(f"C projects the paired student and teacher features through trained heads, one per side "
                         f"and pair, into a shared{size} space.")
    if objective.get("negatives") == "memory_bank":
        positive = ("its current embedding on the other side" if objective.get("positive") == "current"
                    else "its row in the other side's memory bank")
        loss = "MoCo's InfoNCE" if objective.get("bank_loss") == "infonce" else "CRD's NCE"
        k = f"K = {format_value(objective['nce_k'])}" if "nce_k" in objective else "K"
        drawn = "once per batch for all its images" if objective.get("negative_sampling") == "shared" else \
            "for each image"
        sentences.append(f"The same image is the positive ({positive}); the negatives are {k} other images drawn "
                         f"{drawn} from a memory bank of past embeddings (of other classes when the dataset's labels "
                         f"are known; {loss}{temperature}).")
    else:
        sentences.append(f"The same image is the positive; the other images of the batch are the negatives "
                         f"(InfoNCE{temperature}).")
    if weight("layer_weight") > 0:
        sentences.append(
            "Intermediate pairs are contrasted cell by cell: both maps are pooled to their common grid and each cell "
            "is contrasted with the other cells of the batch." if objective.get("spatial_contrast") else
            "Intermediate pairs are contrasted as one pooled vector per image.")
    if objective.get("contrastive_warmup"):
        sentences.append(f"β and θ rise linearly from 0 over the first {100 * objective['contrastive_warmup']:g}% "
                         "of training.")
    return " ".join(sentences)


# ------------------------------------------------------------------------------------------------ card parts
def _rows(values: dict[str, Any], labels: dict[str, str]) -> list[dict[str, str]]:
    ordered = [k for k in labels if k in values] + [k for k in values if k not in labels]
    return [{"name": labels.get(k, k), "value": format_value(values[k])}
            for k in ordered if values[k] is not None and values[k] != {}]


def _result_rows(info: DistillationCardInfo) -> list[dict[str, Any]]:
    rows = []
    for label, metrics in (
        (f"Teacher ({info.teacher_display_name})", info.teacher_metrics),
        (f"Student, CKTF ({info.student_architecture})" if info.student_architecture else "Student, CKTF",
         info.student_metrics),
    ):
        top1 = read_metric(metrics, TOP1)
        if top1 is not None:
            rows.append({"model": label, "top1": top1, "top5": read_metric(metrics, TOP5)})
    for label, value in (info.baselines or {}).items():
        metrics = value if isinstance(value, dict) else {TOP1: value}
        top1 = read_metric(metrics, TOP1)
        if top1 is not None:
            rows.append({"model": label, "top1": top1, "top5": read_metric(metrics, TOP5)})
    return rows


def _latency_range(stats: ModelStats, batch: int) -> tuple[float, float]:
    """The spread of the repeated measurements at ``batch`` (a single value when the timings were not repeated)."""
    return stats.latency_range_ms.get(batch, (stats.latency_ms[batch], stats.latency_ms[batch]))


def _latency_verdict(student: ModelStats, teacher: ModelStats, batch: int) -> str:
    """``faster``, ``slower`` or ``same``: the student is faster (slower) only when its whole range of repeated
    measurements lies below (above) the teacher's; overlapping ranges are about the same."""
    s_low, s_high = _latency_range(student, batch)
    t_low, t_high = _latency_range(teacher, batch)
    return "faster" if s_high < t_low else "slower" if s_low > t_high else "same"


def format_latency(stats: ModelStats, batch: int) -> str:
    """The latency at ``batch`` in ms with the spread of its repeated measurements: ``"1.52 (1.47–1.60)"``."""
    low, high = stats.latency_range_ms.get(batch, (None, None))
    spread = f" ({format_ms(low)}–{format_ms(high)})" if low is not None and high is not None else ""
    return format_ms(stats.latency_ms[batch]) + spread


def _compression(info: DistillationCardInfo) -> tuple[list[dict[str, Optional[str]]], Optional[str]]:
    student, teacher = info.student_stats, info.teacher_stats
    if student is None:
        return [], None

    def row(label: str, s: str, t: Optional[str], ratio: Optional[str]) -> dict:
        return {"label": label, "student": s, "teacher": t, "ratio": ratio}

    rows = [
        row("Parameters", format_count(student.parameters), teacher and format_count(teacher.parameters),
            teacher and format_ratio(teacher.parameters, student.parameters)),
        row("Weights on disk", format_bytes(student.size_bytes), teacher and format_bytes(teacher.size_bytes),
            teacher and format_ratio(teacher.size_bytes, student.size_bytes)),
    ]
    batches = sorted(set(student.latency_ms) & set(teacher.latency_ms)) if teacher else sorted(student.latency_ms)
    for b in batches:
        ratio = None
        if teacher:
            within = _latency_verdict(student, teacher, b) == "same"
            ratio = format_ratio(teacher.latency_ms[b], student.latency_ms[b]) + (" (within the spread)" if within
                                                                                  else "")
        rows.append(row(f"CPU latency, batch {b} (ms)", format_latency(student, b),
                        teacher and format_latency(teacher, b), ratio))
    fewer = teacher is not None and teacher.parameters > student.parameters
    return rows, format_ratio(teacher.parameters, student.parameters) if fewer else None


def _speed(info: DistillationCardInfo) -> tuple[Optional[str], list[dict[str, Any]], list[dict[str, Any]]]:
    """The speed-up at batch size 1 (or the smallest batch timed) when the student is faster at every batch size
    timed, and the batch sizes where it is slower and where it is about as fast (``batch``, ``student``, ``teacher``
    in ms), each verdict outside the spread of the repeated measurements only."""
    s_stats, t_stats = info.student_stats, info.teacher_stats
    if not s_stats or not t_stats:
        return None, [], []
    batches = sorted(set(s_stats.latency_ms) & set(t_stats.latency_ms))
    verdicts = {b: _latency_verdict(s_stats, t_stats, b) for b in batches}
    rows = {kind: [{"batch": b, "student": format_ms(s_stats.latency_ms[b]), "teacher": format_ms(t_stats.latency_ms[b])}
                   for b in batches if verdicts[b] == kind] for kind in ("slower", "same")}
    if not batches or rows["slower"] or rows["same"]:
        return None, rows["slower"], rows["same"]
    first = batches[0]
    return (f"{format_ratio(t_stats.latency_ms[first], s_stats.latency_ms[first])} faster at batch size {first}",
            [], [])


def _quoted(names: list[str], limit: int = 8) -> str:
    """``'Bag', 'Coat' and 3 more``."""
    shown = ", ".join(f"'{name}'" for name in names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def _retention_reason(info: DistillationCardInfo, teacher_top1: Optional[float], student_top1: Optional[float]
                      ) -> Optional[str]:
    """Why the student keeps more than 100 % of the teacher's accuracy (None at 100 % or less): it scores above the
    teacher on this evaluation set, where the teacher's accuracy counts the images of classes it does not know as
    misses (when there are such classes)."""
    if not teacher_top1 or student_top1 is None or student_top1 <= teacher_top1:
        return None
    reason = "the student scores above the teacher on this evaluation set"
    unknown = info.teacher_unknown_classes
    if unknown:
        reason += (f", where the teacher's accuracy counts the images of the {len(unknown)} "
                   f"class{'es' if len(unknown) > 1 else ''} it does not know as misses")
    return reason


def _training_table(info: DistillationCardInfo) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the training-results table: epoch, step, training loss, each loss component, validation
    loss and accuracy (columns no row has are left out)."""
    loss = lambda v: f"{v:.4f}"  # noqa: E731
    columns = [("epoch", "Epoch", format_epochs), ("step", "Step", str), ("loss", "Training loss", loss)]
    columns += [(name, f"`{name}`", loss) for name in info.loss_components]
    columns += [("eval_loss", "Validation loss", loss), (TOP1, "Top-1 accuracy", format_accuracy),
                (TOP5, "Top-5 accuracy", format_accuracy)]
    present = [c for c in columns if any(row.get(c[0]) is not None for row in info.training_rows)]
    rows = [[fmt(row[key]) if row.get(key) is not None else "–" for key, _, fmt in present]
            for row in info.training_rows]
    return [label for _, label, _ in present], rows


def _eval_results(info: DistillationCardInfo) -> Optional[list[EvalResult]]:
    if not info.dataset_id:
        return None
    dataset_type = info.dataset_id if info.dataset_on_hub else info.dataset_display_name  # never a local path
    results = []
    for metric_type, metric_name, key in (("accuracy", "Top-1 accuracy", TOP1),
                                          ("top_5_accuracy", "Top-5 accuracy", TOP5)):
        value = read_metric(info.student_metrics, key)
        if value is not None:
            results.append(EvalResult(
                task_type="image-classification", task_name="Image Classification",
                dataset_type=dataset_type, dataset_name=info.dataset_display_name,
                dataset_config=info.dataset_config, dataset_split=info.dataset_split,
                metric_type=metric_type, metric_name=metric_name, metric_value=value,
            ))
    return results or None


def _widget(info: DistillationCardInfo) -> Optional[list[dict[str, str]]]:
    """The Hub widget's example: the pushed ``example.png`` by its URL in the repository (needs ``repo_id``)."""
    if not info.example_image or not info.repo_id:
        return None
    entry = {"src": f"https://huggingface.co/{info.repo_id}/resolve/main/{info.example_image}"}
    if info.example_label:
        entry["example_title"] = info.example_label
    return [entry]


def _card_data(info: DistillationCardInfo) -> ModelCardData:
    """The Hub metadata: ``base_model`` is the student's own starting checkpoint (never the teacher it was distilled
    from, unless the student started from the teacher's weights), the teacher is ``teacher_model``."""
    base_model = info.finetuned_from if info.finetuned_from and is_hub_id(info.finetuned_from) else None
    tags = list(DEFAULT_TAGS) + [t for t in dict.fromkeys(info.tags) if t not in DEFAULT_TAGS]
    return ModelCardData(
        base_model=base_model,
        base_model_relation=BASE_MODEL_RELATION if base_model else None,
        teacher_model=info.teacher if info.teacher_on_hub else None,
        datasets=info.dataset_ids or None,
        language=info.language,
        metrics=["accuracy"],
        tags=tags,
        license=info.license,
        library_name="transformers",
        pipeline_tag="image-classification",
        model_name=info.repo_id or info.title,
        eval_results=_eval_results(info),
        widget=_widget(info),
    )


# ------------------------------------------------------------------------------------------------ the card
def default_template_path() -> str:
    """The shipped ``cktf_model_card.md`` (package ``cktf_hf.model_cards``: ``model_cards/`` in the repository)."""
    path = resources.files(TEMPLATE_PACKAGE).joinpath(TEMPLATE_NAME)
    if not path.is_file():
        raise FileNotFoundError(f"The model-card template {TEMPLATE_NAME} is missing from {TEMPLATE_PACKAGE}: "
                                "reinstall cktf_hf.")
    return str(path)


def build_model_card(info: DistillationCardInfo, template_path: Optional[str] = None) -> ModelCard:
    """Render the CKTF model card of ``info``: Hub metadata through ``ModelCardData``, the text from the template."""
    results = _result_rows(info)
    compression, compression_ratio = _compression(info)
    teacher_top1, student_top1 = read_metric(info.teacher_metrics, TOP1), read_metric(info.student_metrics, TOP1)
    s_stats, t_stats = info.student_stats, info.teacher_stats
    speedup, slower, same_speed = _speed(info)
    training_header, training_rows = _training_table(info)
    fingerprint = info.teacher_fingerprint or {}
    weights = fingerprint.get("weights_sha256") or {}
    if fingerprint.get("state_dict_sha256"):
        weights = {**weights, "state dict": fingerprint["state_dict_sha256"]}
    origin = info.finetuned_from
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
        finetuned_from=public_name(origin) if origin else None,
        finetuned_from_url=f"https://huggingface.co/{origin}" if origin and is_hub_id(origin) else None,
        finetuned_from_teacher=bool(origin) and public_name(origin) == info.teacher_display_name,
        dataset_id=info.dataset_id,
        dataset_label=info.dataset_display_name,
        dataset_url=f"https://huggingface.co/datasets/{info.dataset_id}" if info.dataset_id and info.dataset_on_hub
        else None,
        dataset_config=info.dataset_config,
        dataset_split=info.dataset_split,
        eval_samples=f"{info.eval_samples:,}" if info.eval_samples is not None else None,
        train_samples=f"{info.train_samples:,}" if info.train_samples is not None else None,
        epochs=format_epochs(info.epochs) if info.epochs is not None else None,
        epochs_plural=info.epochs != 1,
        steps=f"{info.steps:,}" if info.steps is not None else None,
        train_runtime=format_duration(info.train_runtime) if info.train_runtime is not None else None,
        training_segments=info.training_segments if (info.training_segments or 1) > 1 else None,
        training_header=training_header,
        training_rows=training_rows,
        curves_image=info.curves_image,
        evaluated=info.student_metrics is not None,
        results=[{**r, "top1": format_accuracy(r["top1"]),
                  "top5": format_accuracy(r["top5"]) if r["top5"] is not None else None} for r in results],
        results_top5=bool(results) and all(r["top5"] is not None for r in results),
        retention=(f"{100 * student_top1 / teacher_top1:.1f}%" if teacher_top1 and student_top1 is not None else None),
        retention_reason=_retention_reason(info, teacher_top1, student_top1),
        teacher_unknown=(_quoted(info.teacher_unknown_classes) if info.teacher_unknown_classes and info.teacher_scorable
                         else None),
        teacher_unknown_count=len(info.teacher_unknown_classes),
        teacher_not_scored=not info.teacher_scorable,
        compression=compression,
        compression_ratio=compression_ratio,
        not_smaller=bool(s_stats and t_stats and s_stats.parameters >= t_stats.parameters),
        speedup=speedup,
        slower=slower,
        same_speed=same_speed,
        latency_measured=bool(s_stats and s_stats.latency_ms),
        latency_setup=s_stats.latency_setup if s_stats else None,
        teacher_latency_setup=(t_stats.latency_setup if s_stats and t_stats
                               and t_stats.latency_setup != s_stats.latency_setup else None),
        method=describe_method(info.objective),
        objective_rows=_rows(info.objective, _OBJECTIVE_LABELS),
        pairing_rows=[{**row, "student_shape": format_shape(row.get("student_shape")),
                       "teacher_shape": format_shape(row.get("teacher_shape")),
                       "weight": format_value(row.get("weight"))} for row in info.pairing],
        pairing_note=info.pairing_note,
        hyperparameter_rows=_rows(info.hyperparameters, {}),
        seed=info.seed,
        checkpoint=info.checkpoint,
        license=info.license,
        license_from_teacher=info.license_from_teacher,
        framework_versions=info.framework_versions,
    )
    fields = {key: value if key in _VERBATIM else markdown_escape(value) for key, value in fields.items()}
    return ModelCard.from_template(_card_data(info), template_path=template_path or default_template_path(), **fields)


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


# ------------------------------------------------------------------------------------------------ the writer
def write_model_card(trainer: Any, output_dir: str, **card_kwargs: Any) -> DistillationCardInfo:
    """Write the card of ``trainer``'s run (taken duck-typed) into ``output_dir``: ``README.md``,
    ``training_curves.png`` (when the run was evaluated during training and matplotlib is installed) and
    ``example.png`` (the first evaluation image, the Hub widget's example). ``card_kwargs`` go to
    :func:`~cktf_hf.card_facts.gather_card_facts`. Returns the card's facts."""
    info = gather_card_facts(trainer, **card_kwargs)
    os.makedirs(output_dir, exist_ok=True)
    curve = accuracy_curve(info.training_rows)
    info.curves_image = plot_training_curves(curve, read_metric(info.teacher_metrics, TOP1), output_dir)
    example = example_image(trainer.eval_dataset, getattr(trainer, "processing_class", None))
    if example is not None:
        image, label = example
        image.save(os.path.join(output_dir, EXAMPLE_FILE))
        info.example_image = EXAMPLE_FILE
        id2label = getattr(trainer.accelerator.unwrap_model(trainer.model).config, "id2label", None) or {}
        info.example_label = str(id2label.get(label, label)) if label is not None else None
    build_model_card(info).save(os.path.join(output_dir, "README.md"))
    return info
