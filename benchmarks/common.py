"""Helpers shared by ``benchmarks/accuracy.py`` and ``benchmarks/transfer.py``.

Images are run through the teacher's image processor once and kept as float tensors (``encode``), so every run of a
benchmark reads the same ``pixel_values`` and no run pays for PNG decoding and resizing again. ``train_student``
trains one student with one method, evaluating on a validation split and on the test split after every epoch;
``summarise_run`` selects the epoch on validation only (``select_epoch``) and reports the test accuracy at that epoch
and at the last one. ``aggregate``, ``compare``, ``ordering_check``, ``markdown_table``, ``bar_chart`` and
``write_results`` turn the runs into ``<name>.json``, ``<name>.md`` and ``<name>.png``.
"""

from __future__ import annotations

import json
import math
import os
import time
from typing import Any, Iterable, Optional

import datasets
import numpy as np
import torch
from transformers import (
    AutoConfig,
    AutoImageProcessor,
    AutoModelForImageClassification,
    PretrainedConfig,
    ResNetConfig,
)
from transformers.trainer_callback import PrinterCallback
from transformers.utils import logging as hf_logging

from cktf_hf import ContrastiveDistillationConfig, ContrastiveDistillationTrainer
from cktf_hf.demo import DEPRECATED_STUDENT_NAMES, load_or_build_student, student_config
from cktf_hf.transforms import ImageClassificationTransform

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS_DIR = os.path.join(REPO_ROOT, "benchmarks", "results")
TEACHER_COMMAND = (
    "python examples/train_teacher.py --dataset fashion_mnist --architecture resnet --embedding_size 64 "
    "--hidden_sizes 64 128 256 --depths 1 1 1 --augment --augment_padding 1 --label_smoothing_factor 0.1 "
    "--num_train_epochs 16 --per_device_train_batch_size 128 --learning_rate 2e-3 --weight_decay 0.05 "
    "--lr_scheduler_type cosine --warmup_steps 0.05 --eval_strategy epoch --save_strategy no --seed 0 "
    "--output_dir examples/teachers/fashion-mnist-resnet"
)
# A small same-family student for a ResNet teacher (≈0.2M parameters at 28 px, 3 stages of one basic block).
RESNET_SMALL = dict(embedding_size=24, hidden_sizes=[32, 64, 96], depths=[1, 1, 1], layer_type="basic")
# The teacher at half width (about a quarter of its parameters), started from its weights by weight selection or fresh:
# the pair measures whether teacher initialisation helps (issue 15).
SHRUNK_TEACHERS = {"teacher-w0.5": "teacher:depth=1,width=0.5",
                   "teacher-w0.5-fresh": "teacher:depth=1,width=0.5,init=fresh"}
# The compression benchmark's default pair. The row label "vit-tiny" keys every committed run journal; the model is the
# library's `cktf-vit-tiny` (build_student maps the label, so a benchmark run does not warn about the old name).
STUDENTS = ("vit-tiny", "resnet-small")
KNOWN_STUDENTS = (*STUDENTS, *SHRUNK_TEACHERS)


# ------------------------------------------------------------------------------------------------ set-up
def resolve_device(device: str) -> str:
    """``auto`` → ``cuda`` when available, else ``cpu``."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit(f"--device {device}: CUDA is not available on this machine.")
    return device


def quiet() -> None:
    """Errors only from transformers, datasets and cktf_hf (whose notices, e.g. uniform negatives on unlabelled data,
    are expected here)."""
    import logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    datasets.disable_progress_bars()
    logging.getLogger("cktf_hf").setLevel(logging.ERROR)


def load_teacher_files(path: str) -> tuple[Any, PretrainedConfig, int]:
    """The teacher's image processor, config and input size; a clear exit when the folder is missing."""
    if not os.path.isfile(os.path.join(path, "config.json")):
        raise SystemExit(
            f"No teacher at {path!r} (config.json missing). Pass --teacher <folder or Hub id>, or train the shipped "
            f"one once (about 20-30 min on 2 CPU cores):\n  {TEACHER_COMMAND}"
        )
    processor = AutoImageProcessor.from_pretrained(path)
    size = getattr(processor, "size", None) or {}
    image_size = int(size.get("height") or size.get("shortest_edge") or 224)
    return processor, AutoConfig.from_pretrained(path), image_size


def fixed_subset(dataset: datasets.Dataset, size: Optional[int], seed: int = 0) -> datasets.Dataset:
    """A class-stratified subset of ``size`` examples, the same for every run (``seed`` fixes it, not the run's)."""
    if not size or size >= len(dataset):
        return dataset
    return dataset.train_test_split(train_size=size, stratify_by_column="label", seed=seed)["train"]


def train_validation_split(dataset: datasets.Dataset, val_size: int, train_size: Optional[int] = None,
                           seed: int = 0) -> tuple[datasets.Dataset, datasets.Dataset]:
    """A class-stratified validation split of ``val_size`` examples and, disjoint from it, a class-stratified training
    subset of ``train_size`` (``None`` or 0: all the rest); the same for every run (``seed`` fixes both).

    Model selection (epoch, learning rate) reads the validation split only; the test split is never looked at.
    """
    if not 0 < val_size < len(dataset):
        raise ValueError(f"val_size must be in 1..{len(dataset) - 1} (the dataset has {len(dataset)} examples), "
                         f"got {val_size}.")
    parts = dataset.train_test_split(test_size=val_size, stratify_by_column="label", seed=seed)
    if train_size and train_size > len(parts["train"]):
        raise ValueError(f"train_size {train_size} is more than the {len(parts['train'])} examples left beside the "
                         f"{val_size}-example validation split; lower it, or pass 0 for all of them.")
    return fixed_subset(parts["train"], train_size, seed), parts["test"]


def encode(dataset: datasets.Dataset, processor: Any, keep_labels: bool = True,
           batch_size: int = 2000) -> datasets.Dataset:
    """``image``/``label`` rows → ``pixel_values`` (float32 [3, H, W], the processor's output) and ``labels``.

    Without ``keep_labels`` the dataset has no label column at all: memory-bank negatives are then drawn uniformly
    and nothing can read a label (unlabelled target data in the transfer protocol).
    """
    transform = ImageClassificationTransform(processor)
    pixels, labels = [], []
    for start in range(0, len(dataset), batch_size):
        batch = dataset[start:start + batch_size]
        out = transform(batch)
        pixels.append(torch.stack(out["pixel_values"]).numpy())
        labels.extend(out["labels"])
    pixels = np.concatenate(pixels).astype(np.float32)
    columns: dict[str, Any] = {"pixel_values": pixels}
    features = {"pixel_values": datasets.Array3D(shape=pixels.shape[1:], dtype="float32")}
    if keep_labels:
        columns["labels"] = np.asarray(labels, dtype=np.int64)
        features["labels"] = datasets.Value("int64")
    return datasets.Dataset.from_dict(columns, features=datasets.Features(features)).with_format("torch")


def build_student(name: str, teacher_config: PretrainedConfig, image_size: int, seed: int) -> torch.nn.Module:
    """A student with the teacher's labels: ``vit-tiny`` (the library's ``cktf-vit-tiny``; the other named ViT sizes
    likewise) or ``resnet-small``, fresh, or a half-width teacher (:data:`SHRUNK_TEACHERS`)."""
    torch.manual_seed(seed)
    if name in SHRUNK_TEACHERS:
        return load_or_build_student(SHRUNK_TEACHERS[name], teacher_config, image_size)
    if name == "resnet-small":
        config = ResNetConfig(**RESNET_SMALL, num_channels=getattr(teacher_config, "num_channels", 3),
                              num_labels=teacher_config.num_labels, id2label=dict(teacher_config.id2label),
                              label2id=dict(teacher_config.label2id))
    else:
        config = student_config(DEPRECATED_STUDENT_NAMES.get(name, name), teacher_config, image_size=image_size)
    return AutoModelForImageClassification.from_config(config)


@torch.no_grad()
def accuracy(model: torch.nn.Module, dataset: datasets.Dataset, device: str, batch_size: int = 1000) -> float:
    """Top-1 accuracy of ``model`` on an encoded dataset."""
    model.eval().to(device)
    correct = 0
    for start in range(0, len(dataset), batch_size):
        batch = dataset[start:start + batch_size]
        logits = model(pixel_values=batch["pixel_values"].to(device)).logits
        correct += int((logits.argmax(-1).cpu() == batch["labels"]).sum())
    return correct / len(dataset)


# ------------------------------------------------------------------------------------------------ training
EVAL_SPLITS = ("val", "test")


def training_config(output_dir: str, device: str, seed: int, epochs: float, batch_size: int, learning_rate: float,
                    **overrides: Any) -> ContrastiveDistillationConfig:
    """The one optimiser and schedule of every run: AdamW, linear warmup (5 %), cosine decay, weight decay 0.05,
    evaluation at the end of every epoch (on the validation and the test split, see ``train_student``), nothing
    saved."""
    settings = dict(
        output_dir=output_dir,
        seed=seed,
        data_seed=seed,
        num_train_epochs=epochs,
        per_device_train_batch_size=batch_size,
        per_device_eval_batch_size=1000,
        learning_rate=learning_rate,
        weight_decay=0.05,
        warmup_steps=0.05,
        lr_scheduler_type="cosine",
        optim="adamw_torch",
        eval_strategy="epoch",
        save_strategy="no",
        logging_strategy="epoch",
        report_to="none",
        disable_tqdm=True,
        dataloader_num_workers=0,
        use_cpu=device == "cpu",
    )
    return ContrastiveDistillationConfig(**{**settings, **overrides})


def epoch_accuracies(log_history: list[dict[str, Any]], split: str) -> list[float]:
    """The accuracy on eval split ``split`` (a key of the Trainer's ``eval_dataset`` dict) after each epoch, in
    order."""
    key = f"eval_{split}_accuracy"
    return [entry[key] for entry in log_history if key in entry]


def select_epoch(val_accuracies: list[float]) -> int:
    """The epoch (counted from 1) with the best validation accuracy; the earliest one on a tie."""
    if not val_accuracies:
        raise ValueError("No validation accuracy to select an epoch on.")
    return int(np.argmax(val_accuracies)) + 1


def summarise_run(val: list[float], test: list[float], wall_time_s: float, **fields: Any) -> dict[str, Any]:
    """One run: the per-epoch validation and test accuracies, the epoch selected on validation (``selected_epoch``),
    the validation and test accuracy at that epoch (``val``, ``test``), the test accuracy after the last epoch
    (``test_last``) and the wall time. The test accuracies play no part in the selection."""
    if len(val) != len(test):
        raise ValueError(f"{len(val)} validation accuracies but {len(test)} test accuracies: one of each per epoch.")
    epoch = select_epoch(val)
    return {**fields, "epoch_val_accuracies": [round(a, 4) for a in val],
            "epoch_test_accuracies": [round(a, 4) for a in test], "selected_epoch": epoch,
            "val": round(val[epoch - 1], 4), "test": round(test[epoch - 1], 4), "test_last": round(test[-1], 4),
            "wall_time_s": round(wall_time_s, 1)}


def train_student(student: torch.nn.Module, teacher: Any, train: datasets.Dataset, val: datasets.Dataset,
                  test: datasets.Dataset, args: ContrastiveDistillationConfig
                  ) -> tuple[ContrastiveDistillationTrainer, list[float], list[float], float]:
    """Train ``student`` against ``teacher`` (a folder or a model) with ``args``, evaluating on ``val`` and ``test``
    after every epoch (one pass over each); the trainer, the per-epoch validation and test accuracies and the wall
    time (training plus the evaluations)."""
    start = time.perf_counter()
    trainer = ContrastiveDistillationTrainer(model=student, args=args, teacher_model=teacher, train_dataset=train,
                                             eval_dataset={"val": val, "test": test})
    trainer.remove_callback(PrinterCallback)  # one progress line per run instead of every log dict
    trainer.train()
    history = trainer.state.log_history
    return (trainer, epoch_accuracies(history, "val"), epoch_accuracies(history, "test"),
            time.perf_counter() - start)


def choose_learning_rate(runs: list[dict[str, Any]]) -> float:
    """The ``learning_rate`` of the run with the best validation accuracy at its selected epoch (``val``); the first
    such run in ``runs`` (grid order) on a tie. Test accuracies play no part."""
    if not runs:
        raise ValueError("No grid run to choose a learning rate from.")
    best = max(range(len(runs)), key=lambda i: (runs[i]["val"], -i))
    return runs[best]["learning_rate"]


# ------------------------------------------------------------------------------------------------ reporting
def mean_std(values: Iterable[float]) -> tuple[float, float]:
    values = list(values)
    return float(np.mean(values)), float(np.std(values, ddof=1)) if len(values) > 1 else 0.0


def aggregate(runs: list[dict[str, Any]], keys: tuple[str, ...] = ("method", "student")) -> list[dict[str, Any]]:
    """Per combination of ``keys``, in first-seen order: mean and sample std over the runs (seeds) of the test
    accuracy at the validation-selected epoch (``test_mean``, ``test_std``), of the validation accuracy there
    (``val_*``) and of the last epoch's test accuracy (``test_last_*``)."""
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for run in runs:
        groups.setdefault(tuple(run[k] for k in keys), []).append(run)
    rows = []
    for key, members in groups.items():
        row = {**dict(zip(keys, key)), "n": len(members), "seeds": [r["seed"] for r in members]}
        for metric in ("test", "val", "test_last"):
            mean, std = mean_std(r[metric] for r in members)
            row.update({f"{metric}_mean": round(mean, 4), f"{metric}_std": round(std, 4)})
        row.update(selected_epoch_mean=round(float(np.mean([r["selected_epoch"] for r in members])), 1),
                   wall_time_mean_s=round(float(np.mean([r["wall_time_s"] for r in members])), 1))
        rows.append(row)
    return rows


METRIC_NAMES = {"test": "test top-1 at the validation-selected epoch", "test_last": "test top-1 after the last epoch",
                "val": "validation top-1 at the selected epoch"}


def pct(mean: float, std: Optional[float] = None) -> str:
    return f"{100 * mean:.2f}" if std is None else f"{100 * mean:.2f} ± {100 * std:.2f}"


def compare(a: dict[str, Any], b: dict[str, Any], metric: str = "test") -> dict[str, Any]:
    """Whether aggregate row ``a`` beats ``b`` on ``metric`` beyond one std (``a``'s mean − std above ``b``'s
    mean + std); ``beyond_one_std`` is None when either has a single seed (no std) and the means are ordered, False
    when they are not."""
    ma, sa, mb, sb = a[f"{metric}_mean"], a[f"{metric}_std"], b[f"{metric}_mean"], b[f"{metric}_std"]
    has_std = a["n"] > 1 and b["n"] > 1
    beyond = (ma - sa > mb + sb) if has_std else (None if ma > mb else False)
    return {"pair": f"{a['method']} > {b['method']}", "means_ordered": ma > mb,
            "beyond_one_std": beyond, "difference": round(ma - mb, 4),
            "a": {"mean": ma, "std": sa, "n": a["n"]}, "b": {"mean": mb, "std": sb, "n": b["n"]}}


def ordering_check(rows: list[dict[str, Any]], order: list[str], metric: str = "test") -> dict[str, Any]:
    """Whether ``order[0] > order[1] > ...`` held beyond one std (see ``compare``) on ``metric`` (default: test
    accuracy at the validation-selected epoch), over the methods of ``order`` that were run.

    With a single seed there is no std, so nothing holds "beyond one std" (only the order of the means is reported).
    """
    by_method = {r["method"]: r for r in rows}
    order = [m for m in order if m in by_method]  # the methods that were run
    steps = [compare(by_method[a], by_method[b], metric) for a, b in zip(order, order[1:])]
    held = bool(steps) and all(s["beyond_one_std"] is True for s in steps)
    return {"order": " > ".join(order), "metric": metric, "held_beyond_one_std": held, "steps": steps}


def all_steps(outcomes: list[Optional[bool]]) -> Optional[bool]:
    """False when any outcome is False, None when any is None (one seed) and none is False, else True."""
    return False if False in outcomes else None if None in outcomes else True


def step_outcome(step: dict[str, Any]) -> str:
    """``yes`` / ``means ordered, within one std`` / ``no`` (and the single-seed case) for a ``compare`` result."""
    if step["beyond_one_std"] is None:  # one seed: no std
        return "means ordered (1 seed, no std)" if step["means_ordered"] else "no"
    return "yes" if step["beyond_one_std"] else "means ordered, within one std" if step["means_ordered"] else "no"


def describe_ordering(check: dict[str, Any], label: str = "") -> str:
    if not check["steps"]:
        return f"{label}ordering not measured (fewer than two of its methods were run)"
    parts = [f"{s['pair']}: {step_outcome(s)} ({100 * s['difference']:+.2f} pts)" for s in check["steps"]]
    verdict = {True: "HELD", False: "did NOT hold", None: "not testable with 1 seed (no std)"}[
        all_steps([s["beyond_one_std"] for s in check["steps"]])]
    return f"{label}{check['order']} ({METRIC_NAMES[check['metric']]}, beyond one std): {verdict} — " + "; ".join(parts)


def repo_relative(path: str) -> str:
    """``path`` relative to the repository root when it lies inside it (results stay valid in another clone), else
    absolute."""
    path = os.path.abspath(path)
    inside = os.path.commonpath([path, REPO_ROOT]) == REPO_ROOT
    return os.path.relpath(path, REPO_ROOT) if inside else path


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def text_table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(c)) for c in col) for col in zip(header, *rows)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    return "\n".join([fmt.format(*header), fmt.format(*("-" * w for w in widths))]
                     + [fmt.format(*(str(c) for c in row)) for row in rows])


def bar_chart(path: str, groups: list[str], series: dict[str, tuple[list[float], list[float]]], title: str,
              reference: Optional[dict[str, float]] = None, ylabel: str = "top-1 accuracy (%)") -> None:
    """Grouped bars (one group per entry of ``groups``, one bar per series) with ±std error bars, in percent;
    ``reference`` draws labelled horizontal lines (e.g. the teacher)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(min(12.0, max(6.0, 0.45 * len(groups) * max(1, len(series)) + 3)), 4.2))
    width = 0.8 / max(1, len(series))
    x = np.arange(len(groups))
    low = []
    for i, (name, (means, stds)) in enumerate(series.items()):
        means_p = [100 * m if m is not None and not math.isnan(m) else np.nan for m in means]
        stds_p = [100 * s if s is not None and not math.isnan(s) else 0.0 for s in stds]
        ax.bar(x + (i - (len(series) - 1) / 2) * width, means_p, width, yerr=stds_p, capsize=3, label=name)
        low += [m - s for m, s in zip(means_p, stds_p) if not np.isnan(m)]
    for j, (name, value) in enumerate((reference or {}).items()):
        ax.axhline(100 * value, color=f"C{len(series) + j}", linestyle="--", linewidth=1,
                   label=f"{name} {100 * value:.2f}")
    tops = [100 * v for v in (reference or {}).values()] + [m + 0 for m in low]
    if low:
        ax.set_ylim(max(0.0, min(low) - 5), min(100.0, max(tops + [min(low)]) + 3))
    ax.set_xticks(x, groups, rotation=20)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8, loc="best", framealpha=0.9)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_results(output_dir: str, name: str, payload: dict[str, Any], markdown: str) -> dict[str, str]:
    """Write ``<name>.json`` and ``<name>.md``; return the paths (the PNG is written by the caller's ``bar_chart``)."""
    os.makedirs(output_dir, exist_ok=True)
    paths = {"json": os.path.join(output_dir, f"{name}.json"), "md": os.path.join(output_dir, f"{name}.md"),
             "png": os.path.join(output_dir, f"{name}.png")}
    with open(paths["json"], "w") as f:
        json.dump(payload, f, indent=2)
        f.write("\n")
    with open(paths["md"], "w") as f:
        f.write(markdown.rstrip() + "\n")
    return paths


def add_run_options(parser: Any) -> None:
    """The options every accuracy benchmark shares: --resume, --set, --device, --jobs, --threads."""
    parser.add_argument("--resume", action="store_true",
                        help="Reuse the finished runs in <output>/<name>.runs.jsonl (written as each run ends) and run "
                             "only the missing ones.")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="FIELD=VALUE",
                        help="Override a ContrastiveDistillationConfig field in every run, on top of its method "
                             "(repeatable), e.g. --set negatives=in_batch --set final_weight=0.2.")
    parser.add_argument("--device", default="auto", help="auto (cuda if available), cpu or cuda.")
    parser.add_argument("--jobs", type=int, help="Runs in parallel (default: 2 on a CPU with 2+ cores, 1 on a GPU).")
    parser.add_argument("--threads", type=int, help="Torch threads per run (default: cores / jobs).")


def resolve_run_options(args: Any) -> None:
    """Fill in what ``add_run_options`` left to defaults: overrides parsed, device, jobs and threads resolved."""
    args.overrides = parse_overrides(args.overrides)
    args.device = resolve_device(args.device)
    args.jobs = args.jobs or default_jobs(args.device)
    args.threads = args.threads or max(1, (os.cpu_count() or 1) // args.jobs)


def task_overrides(args: Any) -> dict[str, Any]:
    """``{"overrides": ...}`` for a task, or nothing when there are none (so journals from before still match)."""
    return {"overrides": args.overrides} if args.overrides else {}


def journal_path(args: Any) -> str:
    return os.path.join(args.output, f"{args.name}.runs.jsonl")


def parse_overrides(pairs: list[str]) -> dict[str, Any]:
    """``["negatives=in_batch", "final_weight=0.2"]`` → a dict of ``ContrastiveDistillationConfig`` fields (values
    read as JSON when they parse, else kept as strings); an unknown field fails at once, naming the known ones."""
    import dataclasses

    known = {f.name for f in dataclasses.fields(ContrastiveDistillationConfig)}
    overrides: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or key not in known:
            raise SystemExit(f"--set {pair!r}: expected FIELD=VALUE with FIELD a ContrastiveDistillationConfig field, "
                             "e.g. --set negatives=in_batch --set final_weight=0.2.")
        try:
            overrides[key] = json.loads(value)
        except json.JSONDecodeError:
            overrides[key] = value
    return overrides


def parse_list(value: str) -> list[str]:
    return [item.strip() for item in value.split(",") if item.strip()]


def refuse_repeats(option: str, values: list[Any], error: Any) -> None:
    """``error(...)`` when ``values`` names an entry twice: a repeated seed, rate or student would run again and count
    twice in the mean ± std."""
    repeated = sorted({value for value in values if values.count(value) > 1})
    if repeated:
        shown = ", ".join(f"{v:g}" if isinstance(v, float) else str(v) for v in repeated)
        error(f"{option} lists {shown} more than once; give each value once")


def environment() -> dict[str, Any]:
    import platform

    import transformers

    return {"python": platform.python_version(), "torch": torch.__version__, "transformers": transformers.__version__,
            "torch_threads": torch.get_num_threads(), "cpu_count": os.cpu_count(),
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}


# ------------------------------------------------------------------------------------------------ parallel runs
def default_jobs(device: str) -> int:
    """One run per CPU core (each single-threaded) on CPU, up to 2; one at a time on a GPU."""
    return 1 if device != "cpu" else max(1, min(2, os.cpu_count() or 1))


def worker_pool(jobs: int, initializer: Any, initargs: tuple) -> Any:
    """``jobs`` spawned worker processes, each set up once by ``initializer(*initargs)``, for successive
    ``run_tasks(..., pool=...)`` calls (use it as a context manager)."""
    from concurrent.futures import ProcessPoolExecutor
    import multiprocessing

    return ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn"), initializer=initializer,
                               initargs=initargs)


def run_tasks(fn: Any, tasks: list[dict[str, Any]], jobs: int, initializer: Any, initargs: tuple,
              describe: Any = lambda result: "", journal: Optional[str] = None, resume: bool = False,
              pool: Any = None) -> list[Any]:
    """``[fn(task) for task in tasks]``, in ``jobs`` spawned worker processes (each set up by
    ``initializer(*initargs)``; ``pool``: those of a ``worker_pool`` instead, kept for later calls) or in this
    process when ``jobs`` is 1; a progress line per finished task.

    With ``journal`` (a ``.jsonl`` path) every finished task is appended to it as ``{"task": ..., "result": ...}`` at
    once, so an interrupted benchmark loses no finished run; ``resume`` reuses the journal's results for identical
    tasks and runs only the others (without ``resume`` the journal is started afresh; a non-empty one is first renamed
    to ``<journal>.<time>.bak``).
    """
    from concurrent.futures import ProcessPoolExecutor, as_completed
    import multiprocessing

    results: list[Any] = [None] * len(tasks)
    done_before = _read_journal(journal) if journal and resume else {}
    for i, task in enumerate(tasks):
        results[i] = done_before.get(_task_key(task))
    pending = [i for i, result in enumerate(results) if result is None]
    if journal:
        os.makedirs(os.path.dirname(os.path.abspath(journal)), exist_ok=True)
        if not resume:
            if os.path.isfile(journal) and os.path.getsize(journal):  # a finished run is never thrown away
                kept = f"{journal}.{time.strftime('%Y%m%d-%H%M%S')}.bak"
                os.replace(journal, kept)
                print(f"  without --resume the journal starts afresh; the previous one is kept as {kept}", flush=True)
            open(journal, "w").close()
        elif os.path.isfile(journal) and os.path.getsize(journal):
            with open(journal, "rb+") as f:  # end a line cut short by a crash before appending
                f.seek(-1, os.SEEK_END)
                if f.read(1) != b"\n":
                    f.write(b"\n")
        if len(pending) < len(tasks):
            print(f"  resuming: {len(tasks) - len(pending)} of {len(tasks)} runs read back from {journal}", flush=True)
    started = time.perf_counter()
    done = len(tasks) - len(pending)

    def finish(i: int, result: Any) -> None:
        nonlocal done
        results[i], done = result, done + 1
        if journal:
            with open(journal, "a") as f:
                f.write(json.dumps({"task": portable_task(tasks[i]), "result": result}) + "\n")
        print(f"  [{done}/{len(tasks)}, {time.perf_counter() - started:6.0f} s] {describe(result)}", flush=True)

    if jobs <= 1:
        if pending:
            initializer(*initargs)
        for i in pending:
            finish(i, fn(tasks[i]))
        return results
    if not pending:
        return results
    own_pool = pool is None
    if own_pool:
        pool = ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn"), initializer=initializer,
                                   initargs=initargs)
    try:
        futures = {pool.submit(fn, tasks[i]): i for i in pending}
        for future in as_completed(futures):
            finish(futures[future], future.result())
    finally:
        if own_pool:
            pool.shutdown()
    return results


def pending_tasks(tasks: list[dict[str, Any]], journal: Optional[str], resume: bool) -> list[dict[str, Any]]:
    """The tasks that ``run_tasks(..., journal=journal, resume=resume)`` would run (not read back from the journal)."""
    done = _read_journal(journal) if journal and resume else {}
    return [task for task in tasks if _task_key(task) not in done]


def read_back(tasks: list[dict[str, Any]], journal: str) -> list[Optional[dict[str, Any]]]:
    """Each task's result from the run journal, None where it has not run."""
    done = _read_journal(journal)
    return [done.get(_task_key(task)) for task in tasks]


def rows_outside(journal: str, settings: dict[str, Any], methods: list[str], students: list[str]) -> list[str]:
    """``"method / student"`` of the runs in ``journal`` made with ``settings`` (the fields every task of one
    invocation shares) whose method or student is not among ``methods`` × ``students``: rows a report of those alone
    leaves out."""
    wanted = _numbers_by_value(portable_task(settings))
    rows = set()
    for key in _read_journal(journal):
        task = json.loads(key)
        if (all(task.get(field) == value for field, value in wanted.items()) and task.keys() >= wanted.keys()
                and (task.get("method") not in methods or task.get("student") not in students)):
            rows.add(f"{task.get('method')} / {task.get('student')}")
    return sorted(rows)


JOURNAL_PATH_FIELDS = ("teacher", "teacher_cache_dir", "save_dir", "path")


def portable_path(value: str) -> str:
    """An absolute path inside the repository made relative to it; anything else (a Hub id, a path outside) as is."""
    return repo_relative(value) if os.path.isabs(value) else value


def portable_task(task: dict[str, Any]) -> dict[str, Any]:
    """``task`` with its absolute paths inside the repository made relative to it, so that a journal written in one
    clone matches the same tasks in another."""
    return {key: portable_path(value) if key in JOURNAL_PATH_FIELDS and isinstance(value, str) else value
            for key, value in task.items()}


def _task_key(task: dict[str, Any]) -> str:
    """The identity of a task in a journal: its portable paths, and numbers by value (``--epochs 5`` parses to 5.0,
    the preset's default is 5: the same run)."""
    return json.dumps(_numbers_by_value(portable_task(task)), sort_keys=True)


def _numbers_by_value(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _numbers_by_value(item) for key, item in value.items()}
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def _read_journal(path: str) -> dict[str, Any]:
    """The results already in a run journal, by task; a line cut short by a crash is ignored."""
    if not os.path.isfile(path):
        return {}
    finished = {}
    with open(path) as f:
        for number, line in enumerate(f, 1):
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:
                continue
            if not (isinstance(entry, dict) and isinstance(entry.get("task"), dict) and "result" in entry):
                raise SystemExit(f"{path}, line {number}: not a run journal entry ({{\"task\": {{...}}, "
                                 "\"result\": ...}); is this file a run journal?")
            finished[_task_key(entry["task"])] = entry["result"]
    return finished


def save_encoded(splits: dict[str, datasets.Dataset], folder: str) -> dict[str, str]:
    """Save encoded splits so that worker processes memory-map them instead of encoding again."""
    paths = {}
    for name, dataset in splits.items():
        paths[name] = os.path.join(folder, name)
        dataset.with_format(None).save_to_disk(paths[name])
    return paths


def load_encoded(paths: dict[str, str]) -> dict[str, datasets.Dataset]:
    return {name: datasets.load_from_disk(path).with_format("torch") for name, path in paths.items()}
