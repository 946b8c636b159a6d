#!/usr/bin/env python
"""Compression benchmark: a Fashion-MNIST teacher distilled into two small students by nine methods, 3 seeds each.

Data: the real Fashion-MNIST (``cktf_hf.demo.load_fashion_mnist``), a fixed class-stratified training
subset (``--train_subset``, chosen with seed 0, the same for every run) and the full 10,000-image test split, both
run once through the teacher's image processor (28 px). No augmentation.

Models: the teacher (default ``examples/teachers/fashion-mnist-resnet``, a ResNet trained once and shipped in the
repository); the students ``vit-tiny`` (``cktf_hf.demo.students``, cross-family with a CNN teacher) and ``resnet-small``
(``transformers.ResNetConfig``, same family), both fresh and with the teacher's labels.

Methods: ``scratch`` (CE only), ``kd``, ``fitnets``, ``at``, ``pkt``, ``rkd``, ``crd``, ``cktf``, ``cktf+kd``, each
``ContrastiveDistillationConfig(preset=<method>)`` with the library's weights. Every run has the same budget: epochs,
batch 128, AdamW (weight decay 0.05), 5 % linear warmup then cosine decay, learning rate 2e-3 for both students, and
for the memory-bank methods K = 4,096 negatives (the reference's 16,384 was set for CIFAR-100's 50,000 images; 4,096
keeps K/N near the reference's 0.33 on 10,000 images and halves CKTF's step time). The test accuracy is recorded
after every epoch (``eval_strategy="epoch"``): the report gives the mean ± std over seeds of the best and of the last
epoch, and the wall time per run. The teacher must beat each student trained from scratch by at least 3 points for the
comparison to mean anything; the output says whether it did.

Budget. Step times measured with the shipped teacher (ResNet, 1.24M parameters) on the development machine: 2 vCPUs
shared with other jobs, one thread per run, CPU time per step of 128 images (wall time equals it on an idle core),
N = 10,000 banked images, K = 4,096; vit-tiny as in cktf_hf.demo.students (0.21M parameters, MLP ratio 4):

    ms per step      scratch   kd  fitnets   at  pkt  rkd  crd  cktf  cktf+kd   sum of 9
    vit-tiny             186  233      248  246  240  297  299   499      455   2,703 ms
    resnet-small          66  120      121  112  106  158  188   360      382   1,613 ms
    test evaluation, 10,000 images: vit-tiny 7.9 s, resnet-small 1.2 s → 9 × 9.1 s = 82 s per epoch of all methods

    full mode: 10,000 training images = 79 steps per epoch, 10 epochs, 3 seeds, 9 methods × 2 students = 54 runs
      one epoch of all 18 (method, student) pairs: 79 × (2.703 + 1.613) s + 82 s = 423 s
      × 10 epochs × 3 seeds = 12,690 core-seconds, + set-up ≈ 3 s × 54 runs → ≈ 12,850 core-seconds
      two single-threaded runs at a time (--jobs 2, the default on 2 cores): ≈ 6,430 s ≈ 107 min
      + benchmarks/transfer.py ≈ 1,760 core-seconds ≈ 15 min: about 2 hours for both on 2 cores
    quick mode (--quick): 2,000 training images = 16 steps per epoch, 3 epochs, 1 seed, all 9 methods × 2 students
      3 × (16 × 4.316 s + 82 s) = 453 core-seconds + set-up ≈ 55 s + data ≈ 20 s ≈ 530 core-seconds:
      ≈ 4.5 min with 2 free cores, ≈ 9 min with one

(One thread per run and two runs at a time rather than one run with two threads: under contention from other
processes a vit-tiny step with two threads took 1.8 s instead of 0.15 s with one.)

Usage::

    python benchmarks/accuracy.py --quick            # < 10 min: every method and student, 1 seed, fewer images/epochs
    python benchmarks/accuracy.py                    # the full benchmark (≈ 107 min on 2 CPU cores)
    python benchmarks/accuracy.py --methods scratch,kd,cktf --students vit-tiny --seeds 0,1,2 --epochs 5

Writes ``<output>/<name>.json`` (every run and the aggregates, ``scratch_baselines`` that ``examples/distill_vit.py``
reads, the teacher-vs-scratch check and whether CKTF > CRD > KD > scratch held beyond one std), ``<name>.md`` and
``<name>.png``; ``name`` is ``accuracy`` (``accuracy_quick`` with ``--quick``).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from typing import Any

import common
from cktf_hf.demo import DEFAULT_TEACHER
from cktf_hf.measure import count_parameters

METHODS = ["scratch", "kd", "fitnets", "at", "pkt", "rkd", "crd", "cktf", "cktf+kd"]
ORDER = ["cktf", "crd", "kd", "scratch"]
DATASET = "fashion_mnist"
FULL = dict(seeds="0,1,2", train_subset=10_000, epochs=10)
QUICK = dict(seeds="0", train_subset=2_000, epochs=3)
MIN_GAP = 0.03

_WORKER: dict[str, Any] = {}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true",
                        help=f"Under 10 minutes: every method and student, but seeds {QUICK['seeds']}, "
                             f"{QUICK['train_subset']} training images and {QUICK['epochs']} epochs.")
    parser.add_argument("--seeds", help=f"Comma-separated seeds (full: {FULL['seeds']}; quick: {QUICK['seeds']}).")
    parser.add_argument("--methods", default=",".join(METHODS), help="Comma-separated presets (default: all nine).")
    parser.add_argument("--students", default=",".join(common.STUDENTS),
                        help="Comma-separated: vit-tiny, resnet-small.")
    parser.add_argument("--train_subset", type=int, help=f"Training images (full: {FULL['train_subset']}; quick: "
                                                         f"{QUICK['train_subset']}; 0 = all 60,000).")
    parser.add_argument("--test_subset", type=int, default=0, help="Test images (default 0 = the full 10,000).")
    parser.add_argument("--epochs", type=float,
                        help=f"Epochs per run (full: {FULL['epochs']}; quick: {QUICK['epochs']}).")
    parser.add_argument("--batch_size", type=int, default=128)
    parser.add_argument("--learning_rate", type=float, default=2e-3, help="Peak learning rate (both students).")
    parser.add_argument("--nce_k", type=int, default=4096, help="Memory-bank negatives per sample.")
    parser.add_argument("--teacher", default=DEFAULT_TEACHER, help="Teacher folder or Hub id.")
    parser.add_argument("--data_dir", help="Folder with the Fashion-MNIST IDX files (default: the Debian package's).")
    parser.add_argument("--output", default=common.RESULTS_DIR, help="Folder for the JSON, markdown and PNG.")
    parser.add_argument("--name", help="File stem (default: accuracy, or accuracy_quick with --quick).")
    common.add_run_options(parser)
    args = parser.parse_args(argv)
    preset = QUICK if args.quick else FULL
    for key, value in preset.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    args.seeds = [int(s) for s in common.parse_list(str(args.seeds))]
    args.methods = [m.lower() for m in common.parse_list(args.methods)]
    args.students = common.parse_list(args.students)
    args.name = args.name or ("accuracy_quick" if args.quick else "accuracy")
    common.resolve_run_options(args)
    for student in args.students:
        if student not in common.STUDENTS:
            parser.error(f"unknown student {student!r}; choose from {common.STUDENTS}")
    return args


# ------------------------------------------------------------------------------------------------ one run
def _init_worker(teacher: str, data_paths: dict[str, str], threads: int) -> None:
    import torch
    from transformers import AutoModelForImageClassification

    torch.set_num_threads(threads)
    common.quiet()
    processor, config, image_size = common.load_teacher_files(teacher)
    _WORKER.update(common.load_encoded(data_paths), teacher_config=config, image_size=image_size,
                   teacher=AutoModelForImageClassification.from_pretrained(teacher))


def run_one(task: dict[str, Any]) -> dict[str, Any]:
    """Train one student with one method and seed; its per-epoch test accuracies, best, last and wall time."""
    student = common.build_student(task["student"], _WORKER["teacher_config"], _WORKER["image_size"], task["seed"])
    with tempfile.TemporaryDirectory(prefix="cktf_bench_") as tmp:
        args = common.training_config(tmp, task["device"], task["seed"], task["epochs"], task["batch_size"],
                                      task["learning_rate"], preset=task["method"], nce_k=task["nce_k"],
                                      **task.get("overrides", {}))
        _, accuracies, seconds = common.train_student(student, _WORKER["teacher"], _WORKER["train"], _WORKER["test"],
                                                      args)
    return common.summarise_run(accuracies, seconds, method=task["method"], student=task["student"], seed=task["seed"])


def _describe(run: dict[str, Any]) -> str:
    return (f"{run['method']:<8} {run['student']:<13} seed {run['seed']}: best {common.pct(run['best'])} "
            f"(epoch {run['best_epoch']}), last {common.pct(run['last'])}, {run['wall_time_s']:.0f} s")


# ------------------------------------------------------------------------------------------------ the benchmark
def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    common.quiet()
    import torch
    from transformers import AutoModelForImageClassification

    from cktf_hf.demo import load_fashion_mnist

    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    processor, teacher_config, image_size = common.load_teacher_files(args.teacher)
    data = load_fashion_mnist(args.data_dir)
    train = common.encode(common.fixed_subset(data["train"], args.train_subset), processor)
    test_split = data["test"].select(range(args.test_subset)) if args.test_subset else data["test"]
    test = common.encode(test_split, processor)
    teacher = AutoModelForImageClassification.from_pretrained(args.teacher)
    teacher_accuracy = common.accuracy(teacher, test, args.device)
    teacher_params = count_parameters(teacher)
    student_params = {s: count_parameters(common.build_student(s, teacher_config, image_size, 0))
                      for s in args.students}

    mode = "quick" if args.quick else "full"
    settings = {
        "mode": mode, "dataset": DATASET, "train_subset": len(train), "test_images": len(test),
        "seeds": args.seeds, "methods": args.methods, "students": args.students, "epochs": args.epochs,
        "batch_size": args.batch_size, "learning_rate": args.learning_rate, "optimizer": "AdamW (weight decay 0.05)",
        "schedule": "5% linear warmup, cosine decay", "nce_k": args.nce_k, "augmentation": "none",
        "overrides": args.overrides, "device": args.device, "jobs": args.jobs, "threads_per_run": args.threads,
    }
    note = (f"QUICK MODE: all {len(args.methods)} methods and {len(args.students)} students, but {len(args.seeds)} "
            f"seed(s), {len(train)} training images and {args.epochs:g} epochs (full mode: "
            f"{len(FULL['seeds'].split(','))} seeds, {FULL['train_subset']} images, {FULL['epochs']} epochs); "
            "std needs ≥ 2 seeds."
            if args.quick else "")
    print(f"Compression benchmark ({mode}): teacher {args.teacher} ({type(teacher).__name__}, {teacher_params:,} "
          f"parameters) {common.pct(teacher_accuracy)} % on {len(test)} test images")
    print(f"  {len(train)} training images, {args.epochs:g} epochs, seeds {args.seeds}, batch {args.batch_size}, "
          f"lr {args.learning_rate:g}, K {args.nce_k}, device {args.device}, {args.jobs} job(s) × {args.threads} "
          f"thread(s)" + (f"\n  {note}" if note else ""))
    for s, n in student_params.items():
        print(f"  student {s}: {n:,} parameters ({teacher_params / n:.1f}x fewer than the teacher)")

    tasks = [dict(method=m, student=s, seed=seed, device=args.device, epochs=args.epochs, batch_size=args.batch_size,
                  learning_rate=args.learning_rate, nce_k=args.nce_k, teacher=args.teacher,
                  train_images=len(train), test_images=len(test), **common.task_overrides(args))
             for seed in args.seeds for s in args.students for m in args.methods]
    with tempfile.TemporaryDirectory(prefix="cktf_bench_data_") as tmp:
        paths = common.save_encoded({"train": train, "test": test}, tmp)
        runs = common.run_tasks(run_one, tasks, args.jobs, _init_worker, (args.teacher, paths, args.threads),
                                describe=_describe,
                                journal=common.journal_path(args), resume=args.resume)

    rows = common.aggregate(runs)
    for row in rows:
        row["parameters"] = student_params[row["student"]]
    scratch = {r["student"]: r for r in rows if r["method"] == "scratch"}
    scratch_baselines = {
        f"{DATASET}/{s}": {"mean": r["last_mean"], "std": r["last_std"], "best_mean": r["best_mean"],
                           "best_std": r["best_std"], "n": r["n"], "metric": "top-1 after the last epoch",
                           "train_images": len(train), "epochs": args.epochs}
        for s, r in scratch.items()
    }
    gap_check = {
        s: {"teacher": round(teacher_accuracy, 4), "scratch_best_mean": r["best_mean"],
            "gap": round(teacher_accuracy - r["best_mean"], 4), "required": MIN_GAP,
            "passed": teacher_accuracy - r["best_mean"] >= MIN_GAP}
        for s, r in scratch.items()
    }
    orderings = {s: common.ordering_check([r for r in rows if r["student"] == s], ORDER) for s in args.students}
    payload = {
        "benchmark": "accuracy", "settings": settings, "note": note, "environment": common.environment(),
        "teacher": {"path": args.teacher, "architecture": type(teacher).__name__, "parameters": teacher_params,
                    "test_accuracy": round(teacher_accuracy, 4)},
        "students": {s: {"parameters": n, "compression": round(teacher_params / n, 2)}
                     for s, n in student_params.items()},
        "runs": runs, "aggregates": rows, "scratch_baselines": scratch_baselines, "teacher_vs_scratch": gap_check,
        "ordering": orderings, "total_wall_time_s": round(time.perf_counter() - started, 1),
    }
    header, table = _table(rows)
    text = [f"teacher {type(teacher).__name__} ({teacher_params:,} parameters): {common.pct(teacher_accuracy)} %"]
    for s, g in gap_check.items():
        text.append(f"teacher − scratch ({s}, best epoch): {100 * g['gap']:+.2f} pts — "
                    f"{'OK' if g['passed'] else 'FAILED'} (needs ≥ {100 * MIN_GAP:.0f})")
    text += [common.describe_ordering(c, f"{s}: ") for s, c in orderings.items()]
    markdown = "\n\n".join([
        f"# Compression benchmark ({mode})",
        f"Fashion-MNIST: {len(train)} training images (fixed, stratified), {len(test)} test images; "
        f"{args.epochs:g} epochs, batch {args.batch_size}, AdamW lr {args.learning_rate:g}, cosine, K {args.nce_k}; "
        f"seeds {args.seeds}; device {args.device}"
        + (f"; overrides on every preset: {args.overrides}" if args.overrides else "")
        + ". Top-1 % on the test split, mean ± std over seeds."
        + (f"\n\n**{note}**" if note else ""),
        common.markdown_table(header, table),
        "\n".join(f"- {line}" for line in text),
        f"Total wall time: {payload['total_wall_time_s'] / 60:.1f} min.",
    ])
    paths = common.write_results(args.output, args.name, payload, markdown)
    common.bar_chart(
        paths["png"], args.methods,
        {s: ([next((r["best_mean"] for r in rows if r["method"] == m and r["student"] == s), float("nan"))
              for m in args.methods],
             [next((r["best_std"] for r in rows if r["method"] == m and r["student"] == s), 0.0)
              for m in args.methods]) for s in args.students},
        f"Fashion-MNIST compression: best-epoch top-1, mean ± std over {len(args.seeds)} seed(s)\n"
        f"({mode}: {len(train)} training images, {len(test)} test images, {args.epochs:g} epochs)",
        reference={"teacher": teacher_accuracy},
    )
    print()
    print(common.text_table(header, table))
    print()
    print("\n".join(text))
    if note:
        print(note)
    print(f"total wall time {payload['total_wall_time_s']:.0f} s; wrote {', '.join(paths.values())}")
    return payload


def _table(rows: list[dict[str, Any]]) -> tuple[list[str], list[list[str]]]:
    header = ["method", "student", "params", "best top-1", "last top-1", "best epoch", "wall time / run", "seeds"]
    table = [[r["method"], r["student"], f"{r['parameters'] / 1e6:.2f}M", common.pct(r["best_mean"], r["best_std"]),
              common.pct(r["last_mean"], r["last_std"]), f"{r['best_epoch_mean']:g}", f"{r['wall_time_mean_s']:.0f} s",
              str(r["n"])]
             for r in rows]
    return header, table


if __name__ == "__main__":
    main()
