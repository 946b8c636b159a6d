#!/usr/bin/env python
"""Compression benchmark: a Fashion-MNIST teacher distilled into two small students by every method, model selection
on a validation split, 3 seeds.

Data: the real Fashion-MNIST (``cktf_hf.demo.load_fashion_mnist``). A class-stratified validation split of
``--val_size`` training images (default 5,000) is held out; the training subset (``--train_subset``, default all the
other 55,000) is disjoint from it; both are fixed (chosen with seed 0) and the same for every run. The full
10,000-image test split is used only for reporting. Everything is run once through the teacher's image processor
(28 px, no augmentation), so preprocessing is deterministic and the teacher's outputs are cached on disk
(``teacher_cache_dir``, under ``benchmarks/cache/teacher_outputs``) instead of recomputed at every step.

Models: the teacher (default ``examples/teachers/fashion-mnist-resnet``, a ResNet trained once and shipped in the
repository); the students ``vit-tiny`` (``cktf_hf.demo.students``, cross-family with a CNN teacher) and
``resnet-small`` (``transformers.ResNetConfig``, same family), both fresh and with the teacher's labels.

Methods (``METHODS``: a row name → ``ContrastiveDistillationConfig`` fields): scratch, kd, fitnets, at, pkt, rkd,
dkd, dist, crd-reference, cktf-reference, cktf-recipe, cktf+kd (also the "kd + CKTF" row), fitnets+cktf, pkt+cktf,
rkd+cktf, dkd+cktf (the paper's memory-bank contrast) and X+cktf-recipe for X in fitnets, kd, pkt, rkd, dkd, dist (the
recipe's contrast): each the library preset of that name.

Protocol (the same for every method): batch 128, AdamW (weight decay 0.05), 5 % linear warmup then cosine decay, the
same epochs, K = 4,096 memory-bank negatives. After every epoch the student is evaluated once on the validation split
and once on the test split (``eval_dataset={"val": ..., "test": ...}``). Model selection never reads the test split:

1. learning-rate grid (``--lr_grid``, default 1e-3, 2e-3, 4e-3) with the first seed (0): for each method and student
   the rate whose run reaches the best validation accuracy at its validation-selected epoch is chosen;
2. the chosen rate runs with the other seeds (1, 2); seed 0's run at that rate is reused. With a grid of one rate
   nothing waits on a choice, so every run of every method is queued at once (``--jobs`` workers stay busy).

A run reports the test accuracy at its validation-selected epoch (the headline figure) and after its last epoch; the
tables give mean ± std over the seeds. Targets, each stated as met / not met with its numbers: (a) cktf-recipe beats
the best other method (scratch, a classic one, DKD, DIST, CRD; not the X+CKTF rows) by more than one std, per
student; (b) cktf > crd > kd > scratch, each step beyond one std (cktf: the recipe if it ran, else the reference);
(c) X+CKTF > X beyond one std for at least 3 of the 4 X in kd, fitnets, pkt, rkd. "Beyond one std": mean − std of
the first above mean + std of the second; with one seed there is no std and no target can be met. The teacher must
beat each scratch student by at least 3 points for the comparison to mean anything; the output says whether it did.

The methods run one after the other in ``METHODS`` order (the rows the issue needs first lead): each method's grid,
then its seeds, so an interrupted benchmark has whole rows. Every finished run is appended to the run journal
(``<output>/<name>.runs.jsonl``); ``--resume`` reads it back (phase 2 takes phase 1's results from it) and runs only
what is missing. Each run's final student is saved under ``benchmarks/cache/students/<name>/`` (the runs at the
chosen rates are kept) for ``benchmarks/transfer.py``, which probes them on MNIST.

Budget. The default: 55,000 training images (430 steps of 128 per epoch), 5 epochs (2,150 steps a run: 2.7 times the
10,000 × 10 epochs before), 3 learning rates on seed 0 then 2 more seeds = 5 runs per method and student. CPU time per
step measured at this budget (N = 55,000 banked images, K = 4,096, batch 128, one thread; 2 vCPUs shared with other
jobs under a load average of 5-14, which inflated the times by 1.4-2.3× against the same steps measured on an idle
core before: vit-tiny KD 233 ms then, 527 ms now):

    ms per step (loaded machine)   scratch   kd (teacher live)   kd (teacher cache)   cktf-reference (live / cache)
    vit-tiny                           341                 527                  433             1,686 / 1,703
    resnet-small                        95                 229                  165             1,497 / 1,266

The reference memory bank multiplies each embedding by the whole bank, so its cost grows with N: cktf-reference costs
3.2× (vit-tiny) and 6.5× (resnet-small) a KD step at N = 55,000, against 2.1× and 3.0× at N = 10,000. The teacher
cache saves the teacher's forward pass (18-28 % of a KD step); for methods that read intermediate teacher features it
must store them whole (about 34 KB an image, 1.9 GB per configuration at 55,000 images) and reading them back gained
nothing on vit-tiny, so it is used only for methods that read the teacher's logits and classifier input alone (kd,
dkd, dist, pkt, rkd, crd). Estimate on 2 idle cores (idle-core step times: the earlier table for the methods whose
cost does not depend on N, the ratios above for the bank methods, ≈ 760 ms a step for every method with CKTF's five
bank pairs, ≈ 300 / 220 ms for CRD's one): all 16 rows × 2 students ≈ 13.9 s per step of every pair, × 430 steps
+ evaluations (5,000 + 10,000 images: 12 s vit-tiny, 2 s resnet-small) ≈ 6,200 core-seconds per epoch per run, × 5
runs × 5 epochs ≈ 155,000 core-seconds ≈ 21 hours with two runs at a time. The eight rows that lead (scratch, kd,
fitnets, dkd, crd-reference, cktf-reference, cktf-recipe, fitnets+cktf) take about half: ≈ 10 hours. Seven of the 16
rows carry CKTF's five bank pairs and take 78 % of the time: the memory bank's shared negatives (N-independent) will
make them several times cheaper. ``--quick`` (768 / 500 / 1,000 images, 2 epochs, seed 0, one rate) checks the
machinery in about 5 minutes on 2 idle cores (with seeds 0 and 1 it took 12 CPU-minutes, 19 minutes of wall time on
the loaded machine); it says nothing about the methods.

Usage::

    python benchmarks/accuracy.py --quick             # < 10 min: every method and student, tiny budget, 1 seed
    python benchmarks/accuracy.py                     # the full benchmark (see the budget above)
    python benchmarks/accuracy.py --resume            # finish an interrupted one from its run journal
    python benchmarks/accuracy.py --methods scratch,kd,cktf-reference --students vit-tiny --lr_grid 2e-3 --epochs 5

Writes ``<output>/<name>.json`` (every run with its per-epoch validation and test accuracies, the grid, the
aggregates, ``scratch_baselines`` that ``examples/distill_vit.py`` reads, the teacher-vs-scratch check and the
targets), ``<name>.md`` and ``<name>.png``; ``name`` is ``accuracy`` (``accuracy_quick`` with ``--quick``).
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from typing import Any, Optional

import common
from cktf_hf.demo import DEFAULT_TEACHER
from cktf_hf.measure import count_parameters


# A row name → the ContrastiveDistillationConfig fields of that method (the library preset of that name), in the order
# the rows run (the rows the issue needs first lead).
METHOD_ORDER = ["scratch", "kd", "fitnets", "dkd", "crd-reference", "cktf-reference", "cktf-recipe", "fitnets+cktf",
                "at", "pkt", "rkd", "dist", "cktf+kd", "pkt+cktf", "rkd+cktf", "dkd+cktf", "fitnets+cktf-recipe",
                "kd+cktf-recipe", "pkt+cktf-recipe", "rkd+cktf-recipe", "dkd+cktf-recipe", "dist+cktf-recipe"]
METHODS: dict[str, dict[str, Any]] = {name: {"preset": name} for name in METHOD_ORDER}
ALIASES = {"kd+cktf": "cktf+kd"}  # the paper's "KD + CKTF" is the cktf+kd preset
# Target (a): the methods the recipe must beat (not CKTF itself, not the X+CKTF rows).
OTHER_METHODS = ["scratch", "kd", "fitnets", "at", "pkt", "rkd", "dkd", "dist", "crd-reference"]
# Target (c): X → its X+CKTF rows, the recipe's contrast first (used when it ran), then the paper's (memory bank); the
# first four X count, dkd and dist are reported beside them.
COMBINED = {x: (f"{x}+cktf-recipe", "cktf+kd" if x == "kd" else f"{x}+cktf")
            for x in ("kd", "fitnets", "pkt", "rkd", "dkd", "dist")}
COUNTED_X = ["kd", "fitnets", "pkt", "rkd"]
DATASET = "fashion_mnist"
FULL = dict(seeds="0,1,2", train_subset=0, val_size=5_000, test_subset=0, epochs=5,
            lr_grid="1e-3,2e-3,4e-3")
QUICK = dict(seeds="0", train_subset=768, val_size=500, test_subset=1_000, epochs=2, lr_grid="2e-3")
MIN_GAP = 0.03
CACHE_DIR = os.path.join(common.REPO_ROOT, "benchmarks", "cache")

_WORKER: dict[str, Any] = {}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true",
                        help=f"Under 10 minutes: every method and student, but seeds {QUICK['seeds']}, "
                             f"{QUICK['train_subset']} training, {QUICK['val_size']} validation and "
                             f"{QUICK['test_subset']} test images, {QUICK['epochs']} epochs, no grid.")
    parser.add_argument("--seeds", help=f"Comma-separated seeds; the first runs the grid (full: {FULL['seeds']}; "
                                        f"quick: {QUICK['seeds']}).")
    parser.add_argument("--methods", default=",".join(METHODS),
                        help="Comma-separated rows, run in this order (default: all, the ones needed first leading).")
    parser.add_argument("--students", default=",".join(common.STUDENTS),
                        help="Comma-separated: vit-tiny, resnet-small (the default), teacher-w0.5, teacher-w0.5-fresh "
                             "(the teacher at half width, from its weights or fresh).")
    parser.add_argument("--lr_grid", help=f"Comma-separated peak learning rates tried with the first seed, chosen on "
                                          f"validation; one value = no grid (full: {FULL['lr_grid']}; quick: "
                                          f"{QUICK['lr_grid']}).")
    parser.add_argument("--val_size", type=int, help=f"Validation images held out of the training split, stratified "
                                                     f"(full: {FULL['val_size']}; quick: {QUICK['val_size']}).")
    parser.add_argument("--train_subset", type=int,
                        help="Training images, stratified, disjoint from the validation split (full: 0 = all the "
                             f"rest, 55,000; quick: {QUICK['train_subset']}).")
    parser.add_argument("--test_subset", type=int, help="Test images (full: 0 = all 10,000; quick: "
                                                        f"{QUICK['test_subset']}).")
    parser.add_argument("--epochs", type=float,
                        help=f"Epochs per run (full: {FULL['epochs']}; quick: {QUICK['epochs']}).")
    parser.add_argument("--batch_size", type=int, default=128)
    parser.add_argument("--nce_k", type=int, default=4096, help="Memory-bank negatives per sample.")
    parser.add_argument("--teacher_cache", default=os.path.join(CACHE_DIR, "teacher_outputs"),
                        help="Folder of the teacher-output cache, used by the methods that read only the teacher's "
                             "logits and classifier input ('' to run the teacher at every step).")
    parser.add_argument("--save_students", default=os.path.join(CACHE_DIR, "students"),
                        help="Folder for the final students (read by benchmarks/transfer.py; '' not to save them).")
    parser.add_argument("--teacher", default=DEFAULT_TEACHER, help="Teacher folder or Hub id.")
    parser.add_argument("--data_dir", help="Folder with the Fashion-MNIST IDX files (default: the Debian package's).")
    parser.add_argument("--output", default=common.RESULTS_DIR, help="Folder for the JSON, markdown and PNG.")
    parser.add_argument("--name", help="File stem (default: accuracy, or accuracy_quick with --quick).")
    parser.add_argument("--report_only", action="store_true",
                        help="Run nothing: write the results from the finished runs in <output>/<name>.runs.jsonl "
                             "(a method and student whose grid is incomplete is listed as not run; a row with "
                             "fewer seeds says how many).")
    common.add_run_options(parser)
    args = parser.parse_args(argv)
    preset = QUICK if args.quick else FULL
    for key, value in preset.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    args.seeds = [int(s) for s in common.parse_list(str(args.seeds))]
    args.lr_grid = [float(x) for x in common.parse_list(str(args.lr_grid))]
    common.refuse_repeats("--seeds", args.seeds, parser.error)
    common.refuse_repeats("--lr_grid", args.lr_grid, parser.error)
    args.methods = resolve_methods(common.parse_list(args.methods), parser.error)
    args.students = common.parse_list(args.students)
    common.refuse_repeats("--students", args.students, parser.error)
    args.name = args.name or ("accuracy_quick" if args.quick else "accuracy")
    common.resolve_run_options(args)
    for student in args.students:
        if student not in common.KNOWN_STUDENTS:
            parser.error(f"unknown student {student!r}; choose from {common.KNOWN_STUDENTS}")
    for option in ("seeds", "lr_grid", "methods", "students"):
        if not getattr(args, option):
            parser.error(f"--{option} needs at least one value")
    if args.report_only and not os.path.isfile(common.journal_path(args)):
        parser.error(f"--report_only reads the run journal {common.journal_path(args)}, which does not exist")
    return args


def resolve_methods(names: list[str], error: Any) -> list[str]:
    """The rows to run: aliases resolved, duplicates dropped, order kept."""
    methods = []
    for name in (ALIASES.get(n.lower(), n.lower()) for n in names):
        if name not in METHODS:
            error(f"unknown method {name!r}; choose from {', '.join([*METHODS, *ALIASES])}")
        elif name not in methods:
            methods.append(name)
    return methods


# ------------------------------------------------------------------------------------------------ one run
def _init_worker(teacher: str, data_paths: dict[str, str], threads: int) -> None:
    import torch
    from transformers import AutoModelForImageClassification

    torch.set_num_threads(threads)
    key = (teacher, tuple(sorted(data_paths.items())))
    if _WORKER.get("key") == key:  # in-process runs: set up once for all the phases
        return
    common.quiet()
    _, config, image_size = common.load_teacher_files(teacher)
    _WORKER.update(common.load_encoded(data_paths), teacher_config=config, image_size=image_size, key=key,
                   teacher=AutoModelForImageClassification.from_pretrained(teacher))


def run_config(task: dict[str, Any], output_dir: str) -> Any:
    """The ``ContrastiveDistillationConfig`` of a task: the shared schedule, the method's fields, the overrides, and
    the teacher-output cache where the objective reads the teacher."""
    fields = {"nce_k": task["nce_k"], **task["fields"], **task.get("overrides", {})}
    if task.get("teacher_cache_dir"):
        fields["teacher_cache_dir"] = task["teacher_cache_dir"]
    return common.training_config(output_dir, task["device"], task["seed"], task["epochs"], task["batch_size"],
                                  task["learning_rate"], **fields)


def teacher_reads(fields: dict[str, Any]) -> str:
    """What a method's objective reads of the teacher: ``nothing`` (scratch), ``outputs`` (its logits and classifier
    input only) or ``features`` (intermediate features too)."""
    from cktf_hf import get_objective

    settings = common.training_config(tempfile.gettempdir(), "cpu", 0, 1, 8, 1e-3, **fields).objective_settings
    if not (settings.kd_weight or settings.final_weight or settings.layer_weight or settings.classic):
        return "nothing"
    intermediate = settings.layer_weight > 0 or any(get_objective(name).inputs not in ("logits", "final")
                                                    for name in settings.classic)
    return "features" if intermediate else "outputs"


def student_folder(task: dict[str, Any]) -> Optional[str]:
    if not task.get("save_dir"):
        return None
    return os.path.join(task["save_dir"], task["student"], task["method"], f"lr{task['learning_rate']:g}-seed"
                                                                           f"{task['seed']}")


def run_one(task: dict[str, Any]) -> dict[str, Any]:
    """Train one student with one method, rate and seed; its per-epoch validation and test accuracies, the epoch
    selected on validation, the test accuracy there and after the last epoch, the wall time and the saved student."""
    student = common.build_student(task["student"], _WORKER["teacher_config"], _WORKER["image_size"], task["seed"])
    with tempfile.TemporaryDirectory(prefix="cktf_bench_") as tmp:
        trainer, val, test, seconds = common.train_student(student, _WORKER["teacher"], _WORKER["train"],
                                                           _WORKER["val"], _WORKER["test"], run_config(task, tmp))
    folder = student_folder(task)
    if folder:
        trainer.save_model(folder)  # a plain transformers classifier (no projectors or banks)
    return common.summarise_run(val, test, seconds, method=task["method"], student=task["student"],
                                seed=task["seed"], learning_rate=task["learning_rate"], phase=task["phase"],
                                saved_student=common.repo_relative(folder) if folder else None)


def prepare_cache(task: dict[str, Any]) -> dict[str, Any]:
    """Write the teacher-output cache of a task's (method, student) configuration (a worker's job; a no-op when it
    exists), by building its trainer once: the runs then only read it, so two runs never write the same one at once."""
    from cktf_hf import ContrastiveDistillationTrainer

    start = time.perf_counter()
    student = common.build_student(task["student"], _WORKER["teacher_config"], _WORKER["image_size"], 0)
    with tempfile.TemporaryDirectory(prefix="cktf_bench_cache_") as tmp:
        ContrastiveDistillationTrainer(model=student, args=run_config(task, tmp), teacher_model=_WORKER["teacher"],
                                       train_dataset=_WORKER["train"], eval_dataset=_WORKER["val"])  # built only
    return {"method": task["method"], "student": task["student"], "seconds": round(time.perf_counter() - start, 1)}


def cache_tasks(tasks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One task per (method, student) among ``tasks`` that reads the teacher through the cache."""
    distinct = {}
    for task in tasks:
        if task.get("teacher_cache_dir"):
            distinct.setdefault((task["method"], task["student"]), task)
    return list(distinct.values())


def _describe(run: dict[str, Any]) -> str:
    return (f"{run['method']:<14} {run['student']:<13} lr {run['learning_rate']:<6g} seed {run['seed']}: "
            f"val {common.pct(run['val'])} → test {common.pct(run['test'])} (epoch {run['selected_epoch']}), "
            f"last {common.pct(run['test_last'])}, {run['wall_time_s']:.0f} s")


# ------------------------------------------------------------------------------------------------ targets
def target_recipe(rows: list[dict[str, Any]], students: list[str], recipe: str = "cktf-recipe",
                  others: list[str] = OTHER_METHODS) -> dict[str, Any]:
    """(a) ``recipe`` beats the best of ``others`` (by test mean) by more than one std, on every student; while some of
    ``others`` have not run on a student it is not measured there (the comparison with those that ran is kept)."""
    per_student = {}
    for student in students:
        by = {r["method"]: r for r in rows if r["student"] == student}
        rivals = [by[m] for m in others if m in by]
        if recipe not in by or not rivals:
            per_student[student] = {"met": None, "why": f"{recipe} not run" if recipe not in by else
                                    "no other method run"}
            continue
        best = max(rivals, key=lambda r: r["test_mean"])
        step = common.compare(by[recipe], best)
        not_run = [m for m in others if m not in by]
        met = step["beyond_one_std"] if not not_run or step["beyond_one_std"] is False else None
        per_student[student] = {"met": met, "best_other": best["method"], "not_run": not_run, **step}
    return {"statement": f"{recipe} beats the best other method ({', '.join(others)}) by more than one std, per "
                         "student", "per_student": per_student, "met": _all_met(per_student.values())}


def target_ordering(rows: list[dict[str, Any]], students: list[str]) -> dict[str, Any]:
    """(b) cktf > crd > kd > scratch, each step beyond one std, per student (cktf: the recipe if it ran)."""
    per_student = {}
    for student in students:
        mine = [r for r in rows if r["student"] == student]
        cktf = "cktf-recipe" if any(r["method"] == "cktf-recipe" for r in mine) else "cktf-reference"
        order = [cktf, "crd-reference", "kd", "scratch"]
        check = common.ordering_check(mine, order)
        met = common.all_steps([s["beyond_one_std"] for s in check["steps"]])
        if met and len(check["steps"]) < len(order) - 1:  # a method missing: not measured
            met = None
        per_student[student] = {"met": met, **check}
    return {"statement": "cktf > crd > kd > scratch, each step beyond one std, per student",
            "per_student": per_student, "met": _all_met(per_student.values())}


def target_combined(rows: list[dict[str, Any]], students: list[str], needed: int = 3) -> dict[str, Any]:
    """(c) X+CKTF > X beyond one std for at least ``needed`` of the X in ``COUNTED_X``, per student (dkd and dist
    reported beside them, not counted)."""
    per_student = {}
    for student in students:
        by = {r["method"]: r for r in rows if r["student"] == student}
        combined = {x: next((name for name in names if name in by), None) for x, names in COMBINED.items()}
        pairs = {x: common.compare(by[combined[x]], by[x]) for x in COMBINED if x in by and combined[x]}
        counted = [pairs[x] for x in COUNTED_X if x in pairs]
        wins = sum(p["beyond_one_std"] is True for p in counted)
        testable = len(counted) >= needed and all(p["beyond_one_std"] is not None for p in counted)
        met = True if wins >= needed else (False if testable and wins + len(COUNTED_X) - len(counted) < needed
                                           else None)
        per_student[student] = {"met": met, "wins": wins, "measured": len(counted), "pairs": pairs}
    return {"statement": f"X+CKTF > X beyond one std for at least {needed} of the {len(COUNTED_X)} X in "
                         f"{', '.join(COUNTED_X)}, per student", "per_student": per_student,
            "met": _all_met(per_student.values())}


def _all_met(results: Any) -> Optional[bool]:
    """True when met on every student, False when missed on any, None when not measured (or one seed)."""
    values = [r["met"] for r in results]
    if any(v is False for v in values):
        return False
    return True if values and all(v is True for v in values) else None


def verdict(met: Optional[bool]) -> str:
    return {True: "MET", False: "NOT MET", None: "not measured"}[met]


def _outcomes(pairs: list[dict[str, Any]]) -> str:
    return "; ".join(f"{p['pair']}: {common.step_outcome(p)} ({100 * p['difference']:+.2f} pts)" for p in pairs)


def describe_targets(targets: dict[str, Any]) -> list[str]:
    """One line per target and student, with the numbers."""
    lines = []
    for key, target in targets.items():
        lines.append(f"({key}) {target['statement']}: **{verdict(target['met'])}**")
        for student, result in target["per_student"].items():
            if key == "a" and "best_other" in result:
                detail = (f"{result['pair']}: {common.pct(result['a']['mean'], result['a']['std'])} vs "
                          f"{common.pct(result['b']['mean'], result['b']['std'])} ({100 * result['difference']:+.2f}"
                          f" pts), {common.step_outcome(result)}"
                          + (f"; not run: {', '.join(result['not_run'])}" if result["not_run"] else ""))
            elif key == "b":
                detail = common.describe_ordering(result).split(" — ", 1)[-1]
            elif key == "c":
                pairs = result["pairs"]
                beside = [pairs[x] for x in pairs if x not in COUNTED_X]
                detail = (f"{result['wins']} of {result['measured']} measured X won: "
                          + _outcomes([pairs[x] for x in COUNTED_X if x in pairs])
                          + (f"; beside them, not counted: {_outcomes(beside)}" if beside else ""))
            else:
                detail = result.get("why", "")
            lines.append(f"  - {student}: {verdict(result['met'])} — {detail}")
    return lines


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
    train_split, val_split = common.train_validation_split(data["train"], args.val_size, args.train_subset)
    train, val = common.encode(train_split, processor), common.encode(val_split, processor)
    test_split = data["test"].select(range(args.test_subset)) if args.test_subset else data["test"]
    test = common.encode(test_split, processor)
    teacher = AutoModelForImageClassification.from_pretrained(args.teacher)
    teacher_accuracy = common.accuracy(teacher, test, args.device)
    teacher_params = count_parameters(teacher)
    student_params = {s: count_parameters(common.build_student(s, teacher_config, image_size, 0))
                      for s in args.students}

    mode = "quick" if args.quick else "full"
    save_dir = os.path.join(args.save_students, args.name) if args.save_students else None
    settings = {
        "mode": mode, "dataset": DATASET, "train_subset": len(train), "val_images": len(val),
        "test_images": len(test), "seeds": args.seeds, "grid_seed": args.seeds[0], "lr_grid": args.lr_grid,
        "methods": args.methods, "method_fields": {m: METHODS[m] for m in args.methods},
        "students": args.students, "epochs": args.epochs,
        "batch_size": args.batch_size, "optimizer": "AdamW (weight decay 0.05)",
        "schedule": "5% linear warmup, cosine decay", "nce_k": args.nce_k, "augmentation": "none",
        "selection": "epoch and learning rate on the validation split; test reported at the selected epoch and the "
                     "last one", "teacher_cache": bool(args.teacher_cache), "overrides": args.overrides,
        "report_only": args.report_only,
        "device": args.device, "jobs": args.jobs, "threads_per_run": args.threads,
    }
    note = (f"QUICK MODE: all {len(args.methods)} methods and {len(args.students)} students, but {len(args.seeds)} "
            f"seed(s), {len(train)} training / {len(val)} validation / {len(test)} test images, {args.epochs:g} "
            f"epochs, learning rates {args.lr_grid} (full mode: seeds {FULL['seeds']}, all 55,000 / "
            f"{FULL['val_size']} / 10,000 images, {FULL['epochs']} epochs, grid {FULL['lr_grid']})."
            if args.quick else "")
    print(f"Compression benchmark ({mode}): teacher {args.teacher} ({type(teacher).__name__}, {teacher_params:,} "
          f"parameters) {common.pct(teacher_accuracy)} % on {len(test)} test images")
    print(f"  {len(train)} training / {len(val)} validation images, {args.epochs:g} epochs, seeds {args.seeds}, "
          f"lr grid {args.lr_grid} on seed {args.seeds[0]}, batch {args.batch_size}, K {args.nce_k}, device "
          f"{args.device}, {args.jobs} job(s) × {args.threads} thread(s)" + (f"\n  {note}" if note else ""))
    for s, n in student_params.items():
        print(f"  student {s}: {n:,} parameters ({teacher_params / n:.1f}x fewer than the teacher)")

    base = dict(device=args.device, epochs=args.epochs, batch_size=args.batch_size, nce_k=args.nce_k,
                teacher=args.teacher, train_images=len(train), val_images=len(val), test_images=len(test),
                save_dir=save_dir, **common.task_overrides(args))
    cached = {m: bool(args.teacher_cache) and teacher_reads({**METHODS[m], **args.overrides}) == "outputs"
              for m in args.methods}

    def task(method: str, student: str, seed: int, learning_rate: float, phase: str) -> dict[str, Any]:
        return dict(method=method, fields=METHODS[method], student=student, seed=seed, learning_rate=learning_rate,
                    phase=phase, teacher_cache_dir=args.teacher_cache if cached[method] else None, **base)

    runs, grid, final, not_run = [], {}, [], []
    journal = common.journal_path(args)
    resume = args.resume
    with tempfile.TemporaryDirectory(prefix="cktf_bench_data_") as tmp:
        paths = common.save_encoded({"train": train, "val": val, "test": test}, tmp)
        initargs = (args.teacher, paths, args.threads)
        pool = (common.worker_pool(args.jobs, _init_worker, initargs) if args.jobs > 1 and not args.report_only
                else None)

        def execute(tasks: list[dict[str, Any]], resume: bool) -> list[Optional[dict[str, Any]]]:
            """The tasks' results: run (those not in the journal), or only read back with --report_only."""
            if args.report_only:
                return common.read_back(tasks, journal)
            return common.run_tasks(run_one, tasks, args.jobs, _init_worker, initargs, describe=_describe,
                                    journal=journal, resume=resume, pool=pool)

        def prepare_caches(tasks: list[dict[str, Any]]) -> None:
            for cache_task in cache_tasks([] if args.report_only else common.pending_tasks(tasks, journal, resume)):
                # One at a time: two students may share a cache (e.g. KD reads the logits alone).
                common.run_tasks(prepare_cache, [cache_task], args.jobs, _init_worker, initargs, pool=pool,
                                 describe=lambda r: f"teacher outputs of {r['method']} / {r['student']} "
                                                    f"cached ({r['seconds']:.0f} s)")

        try:
            if len(args.lr_grid) == 1 and not args.report_only:
                # One rate: no run waits on a choice, so every run of every method is queued at once (--jobs N keeps
                # N workers busy across methods); the phases below read them back from the journal.
                every = [task(m, s, seed, args.lr_grid[0], "grid" if seed == args.seeds[0] else "seeds")
                         for m in args.methods for s in args.students for seed in args.seeds]
                prepare_caches(every)
                execute(every, resume)
                resume = True
            for method in args.methods:
                # Phase 1: the learning-rate grid with the first seed; the rate chosen on validation.
                grid_tasks = [task(method, s, args.seeds[0], lr, "grid") for s in args.students for lr in args.lr_grid]
                prepare_caches(grid_tasks)
                grid_runs = execute(grid_tasks, resume)
                resume = True  # the journal now holds this invocation's runs too
                chosen = {}
                for student in args.students:
                    mine = [r for r in grid_runs if r is not None and r["student"] == student]
                    if len(mine) < len(args.lr_grid):  # only with --report_only
                        not_run.append(f"{method} / {student}")
                        continue
                    chosen[student] = common.choose_learning_rate(mine)
                    grid[f"{method}/{student}"] = {"method": method, "student": student, "chosen": chosen[student],
                                                   "val": {f"{r['learning_rate']:g}": r["val"] for r in mine}}
                    if not args.report_only:
                        _keep_chosen_students([t for t in grid_tasks if t["student"] == student], chosen[student])
                # Phase 2: the chosen rate with the other seeds (seed 0's run at that rate is reused).
                seed_tasks = [task(method, s, seed, chosen[s], "seeds") for seed in args.seeds[1:]
                              for s in args.students if s in chosen]
                seed_runs = [r for r in execute(seed_tasks, True) if r is not None]
                grid_runs = [r for r in grid_runs if r is not None and r["student"] in chosen]
                runs += grid_runs + seed_runs
                final += [r for r in grid_runs if r["learning_rate"] == chosen[r["student"]]] + seed_runs
        finally:
            if pool is not None:
                pool.shutdown()
    if args.report_only and not runs:
        raise SystemExit(f"--report_only: no run in {journal} matches these settings (students, methods, seeds, "
                         "--lr_grid, --train_subset, --epochs, --batch_size, --teacher, --save_students ...); "
                         "nothing written")

    unreported = common.rows_outside(journal, base, args.methods, args.students)
    final.sort(key=lambda r: (args.methods.index(r["method"]), args.students.index(r["student"]), r["seed"]))
    rows = common.aggregate(final)
    for row in rows:
        row["parameters"] = student_params[row["student"]]
        row["learning_rate"] = grid[f"{row['method']}/{row['student']}"]["chosen"]
    scratch = {r["student"]: r for r in rows if r["method"] == "scratch"}
    scratch_baselines = {
        f"{DATASET}/{s}": {"mean": r["test_mean"], "std": r["test_std"], "last_mean": r["test_last_mean"],
                           "last_std": r["test_last_std"], "n": r["n"],
                           "metric": "top-1 on the test split at the epoch selected on validation",
                           "train_images": len(train), "epochs": args.epochs, "learning_rate": r["learning_rate"]}
        for s, r in scratch.items()
    }
    gap_check = {
        s: {"teacher": round(teacher_accuracy, 4), "scratch_test_mean": r["test_mean"],
            "gap": round(teacher_accuracy - r["test_mean"], 4), "required": MIN_GAP,
            "passed": teacher_accuracy - r["test_mean"] >= MIN_GAP}
        for s, r in scratch.items()
    }
    targets = {"a": target_recipe(rows, args.students), "b": target_ordering(rows, args.students),
               "c": target_combined(rows, args.students)}
    payload = {
        "benchmark": "accuracy", "settings": settings, "note": note, "environment": common.environment(),
        "teacher": {"path": common.portable_path(args.teacher), "architecture": type(teacher).__name__,
                    "parameters": teacher_params, "test_accuracy": round(teacher_accuracy, 4)},
        "students": {s: {"parameters": n, "compression": round(teacher_params / n, 2)}
                     for s, n in student_params.items()},
        "runs": runs, "grid": list(grid.values()), "aggregates": rows, "scratch_baselines": scratch_baselines,
        "teacher_vs_scratch": gap_check, "targets": targets,
        "saved_students": [{"method": r["method"], "student": r["student"], "seed": r["seed"],
                            "learning_rate": r["learning_rate"], "path": r["saved_student"]}
                           for r in final if r.get("saved_student")],
        "total_wall_time_s": round(time.perf_counter() - started, 1),
        "runs_wall_time_s": round(sum(r["wall_time_s"] for r in runs), 1),
        "not_run": not_run, "rows_not_reported": unreported,
    }
    partial = (f"This report covers the rows this command named (--methods, --students); the run journal also holds "
               f"runs of {len(unreported)} other row(s) with these settings ({', '.join(unreported)}): name them "
               "too (--report_only trains nothing) to report every row." if unreported else "")
    text = [f"teacher {type(teacher).__name__} ({teacher_params:,} parameters): {common.pct(teacher_accuracy)} %"]
    for s, g in gap_check.items():
        text.append(f"teacher − scratch ({s}, test at the validation-selected epoch): {100 * g['gap']:+.2f} pts — "
                    f"{'OK' if g['passed'] else 'FAILED'} (needs ≥ {100 * MIN_GAP:.0f})")
    target_lines = describe_targets(targets)
    markdown = "\n\n".join([
        f"# Compression benchmark ({mode})",
        f"Fashion-MNIST: {len(train)} training images and a disjoint {len(val)}-image validation split (both fixed, "
        f"stratified, from the training images), {len(test)} test images; {args.epochs:g} epochs, batch "
        f"{args.batch_size}, AdamW, cosine, K {args.nce_k}; learning rate per method and student chosen from "
        f"{args.lr_grid} on validation with seed {args.seeds[0]}, then seeds {args.seeds}; device {args.device}"
        + (f"; overrides on every method: {args.overrides}" if args.overrides else "")
        + ". Epochs are selected on the validation split; the test split is only reported: top-1 % at the selected"
          " epoch (and after the last one), mean ± std over seeds."
        + (f"\n\n**{note}**" if note else ""),
        common.markdown_table(*_summary_table(rows, args.methods, args.students)),
        "## Targets\n\n" + "\n".join(f"- {line}" if not line.startswith("  ") else line for line in target_lines),
        "## Every row\n\n" + common.markdown_table(*_table(rows)),
        f"## Learning-rate grid (seed {args.seeds[0]}, validation top-1 % at the selected epoch)\n\n"
        + common.markdown_table(*_grid_table(list(grid.values()), args.lr_grid)),
        "\n".join(f"- {line}" for line in text),
        (f"Not run (no complete learning-rate grid in the journal): {', '.join(not_run)}.\n\n" if not_run else "")
        + (f"**{partial}**\n\n" if partial else "")
        + (f"Report written from the run journal (--report_only); the runs' times sum to "
           f"{payload['runs_wall_time_s'] / 3600:.1f} hours (more than the wall time where --jobs ran them side by "
           "side)." if args.report_only else
           f"Total wall time: {payload['total_wall_time_s'] / 60:.1f} min."),
    ])
    paths = common.write_results(args.output, args.name, payload, markdown)
    common.bar_chart(
        paths["png"], args.methods,
        {s: ([next((r["test_mean"] for r in rows if r["method"] == m and r["student"] == s), float("nan"))
              for m in args.methods],
             [next((r["test_std"] for r in rows if r["method"] == m and r["student"] == s), 0.0)
              for m in args.methods]) for s in args.students},
        f"Fashion-MNIST compression: test top-1 at the validation-selected epoch, mean ± std over "
        f"{len(args.seeds)} seed(s)\n({mode}: {len(train)} training images, {args.epochs:g} epochs, learning rate "
        f"chosen on validation)",
        reference={"teacher": teacher_accuracy},
    )
    print()
    print(common.text_table(*_table(rows)))
    print()
    print("\n".join(text + [line.replace("**", "") for line in target_lines]))
    for notice in (note, partial):
        if notice:
            print(notice)
    print(f"total wall time {payload['total_wall_time_s']:.0f} s; wrote {', '.join(paths.values())}")
    return payload


def _keep_chosen_students(grid_tasks: list[dict[str, Any]], chosen: float) -> None:
    """Delete the saved students of the grid runs at the rates not chosen."""
    for task in grid_tasks:
        folder = student_folder(task)
        if folder and task["learning_rate"] != chosen and os.path.isdir(folder):
            shutil.rmtree(folder)


def _summary_table(rows: list[dict[str, Any]], methods: list[str], students: list[str]
                   ) -> tuple[list[str], list[list[str]]]:
    by = {(r["method"], r["student"]): r for r in rows}
    table = [[m] + [common.pct(by[m, s]["test_mean"], by[m, s]["test_std"]) if (m, s) in by else "—"
                    for s in students] for m in methods]
    return ["method"] + [f"{s} (test top-1 %)" for s in students], table


def _table(rows: list[dict[str, Any]]) -> tuple[list[str], list[list[str]]]:
    header = ["method", "student", "params", "lr", "val top-1", "test top-1 (selected epoch)", "test top-1 (last)",
              "selected epoch", "wall time / run", "seeds"]
    table = [[r["method"], r["student"], f"{r['parameters'] / 1e6:.2f}M", f"{r['learning_rate']:g}",
              common.pct(r["val_mean"], r["val_std"]), common.pct(r["test_mean"], r["test_std"]),
              common.pct(r["test_last_mean"], r["test_last_std"]), f"{r['selected_epoch_mean']:g}",
              f"{r['wall_time_mean_s']:.0f} s", str(r["n"])]
             for r in rows]
    return header, table


def _grid_table(grid: list[dict[str, Any]], lr_grid: list[float]) -> tuple[list[str], list[list[str]]]:
    header = ["method", "student"] + [f"lr {lr:g}" for lr in lr_grid] + ["chosen"]
    table = [[g["method"], g["student"]] + [common.pct(g["val"][f"{lr:g}"]) if f"{lr:g}" in g["val"] else "—"
                                            for lr in lr_grid] + [f"{g['chosen']:g}"] for g in grid]
    return header, table


if __name__ == "__main__":
    main()
