#!/usr/bin/env python
"""Compression benchmark: a Fashion-MNIST teacher distilled into small students by every method of a protocol, model
selection on a validation split, several seeds.

The protocol (``--protocol``, a YAML file under ``benchmarks/protocols/``; default ``protocol_10k``, ``--quick`` is
``quick``) names the teacher, students, methods (each a library preset), budget, learning-rate grid, seeds and
targets; an option given on the command line overrides it. ``benchmarks/README.md`` lists the protocols, their
results and their commands.

Data: the real Fashion-MNIST. A class-stratified validation split (``val_images``) is held out of the training
images; the training subset (``train_images``, 0 = all the rest) is disjoint from it; both are fixed (seed 0). The
test split is used only for reporting. Everything is run once through the teacher's image processor, so the teacher's
outputs can be cached on disk (``teacher_cache``) for the methods that read only its logits and classifier input.

Model selection never reads the test split: (1) every method × student runs each rate of the grid with the first
seed, and the rate whose run reaches the best validation accuracy at its validation-selected epoch is chosen; (2) the
chosen rate runs with the other seeds. A run reports the test accuracy at its validation-selected epoch and after its
last epoch; the tables give mean ± std over the seeds, and a row with fewer seeds than the protocol asks is flagged.
Every finished run is appended to the run journal (``<output>/<name>.runs.jsonl``); ``--resume`` runs only what is
missing and ``--report_only`` trains nothing.

Usage::

    python benchmarks/run.py benchmarks/protocols/protocol_10k.yaml --report_only   # the report from the journal
    python benchmarks/accuracy.py --quick                                           # the machinery in minutes
    python benchmarks/accuracy.py --protocol protocol_55k --resume                  # finish an interrupted one
"""

from __future__ import annotations

import argparse
import difflib
import functools
import json
import os
import shutil
import tempfile
import time
from typing import Any, Callable, Optional

import numpy as np
import torch

import compression_report
from harness import data, journal, options, pool, stats, train
from harness import protocol as protocols
from harness.paths import CACHE_DIR, RESULTS_DIR, absolute, repo_relative

from cktf_hf import PRESETS, get_preset
from cktf_hf.cache import model_digest
from cktf_hf.demo import DEFAULT_TEACHER
from cktf_hf.formatting import format_duration
from cktf_hf.measure import count_parameters

ALIASES = {"kd+cktf": "cktf+kd"}  # the paper's "KD + CKTF" is the cktf+kd preset
DATASET = "fashion_mnist"
NUMBER = (int, float)
# What a journal's result must hold for a report (a line without it is refused, naming it).
RUN_FIELDS = {"method": str, "student": str, "seed": int, "learning_rate": NUMBER, "val": NUMBER, "test": NUMBER,
              "test_last": NUMBER, "selected_epoch": int, "wall_time_s": NUMBER}
# Options a protocol fills in when the command line leaves them out: option → (protocol section, key).
FROM_PROTOCOL = {"students": (None, "students"), "methods": (None, "methods"), "seeds": (None, "seeds"),
                 "lr_grid": ("grid", "learning_rates"), "train_subset": ("budget", "train_images"),
                 "val_size": ("budget", "val_images"), "test_subset": ("budget", "test_images"),
                 "epochs": ("budget", "epochs"), "batch_size": ("budget", "batch_size"),
                 "nce_k": ("budget", "nce_k"), "teacher": (None, "teacher"), "name": (None, "name"),
                 "teacher_cache": (None, "teacher_cache"), "save_students": (None, "save_students"),
                 "widen_at_edges": ("grid", "widen_at_edges"), "rates_chosen_in": ("grid", "rates_chosen_in")}

_WORKER: dict[str, Any] = {}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--protocol", help="Protocol file or name under benchmarks/protocols/ (default: "
                                           "protocol_10k; --quick: quick).")
    parser.add_argument("--quick", action="store_true", help="The quick protocol: the machinery in minutes.")
    parser.add_argument("--seeds", help="Comma-separated seeds; the first runs the grid.")
    parser.add_argument("--methods", help="Comma-separated rows (library presets), run in this order.")
    parser.add_argument("--students", help=f"Comma-separated, from {', '.join(data.KNOWN_STUDENTS)}.")
    parser.add_argument("--lr_grid", help="Comma-separated peak learning rates tried with the first seed, chosen on "
                                          "validation; one value = no grid.")
    parser.add_argument("--widen_at_edges", type=int,
                        help="When the rate chosen is the grid's largest (smallest), also try twice (half) it, up to "
                             "this many times per side, until the choice is interior (default 0: the grid as given).")
    parser.add_argument("--rates_chosen_in",
                        help="Instead of a grid: each method and student trains at the rate chosen on validation in "
                             "this compression protocol's report (benchmarks/results/<name>.json), e.g. a long budget "
                             "at the rates its 10k protocol chose; every choice must be interior to its grid.")
    parser.add_argument("--val_size", type=int, help="Validation images held out of the training split.")
    parser.add_argument("--train_subset", type=int, help="Training images, disjoint from validation (0 = all).")
    parser.add_argument("--test_subset", type=int, help="Test images (0 = all 10,000).")
    parser.add_argument("--epochs", type=float, help="Epochs per run.")
    parser.add_argument("--batch_size", type=int)
    parser.add_argument("--nce_k", type=int, help="Memory-bank negatives per sample.")
    parser.add_argument("--teacher_cache", help="Folder of the teacher-output cache ('' to run the teacher live).")
    parser.add_argument("--save_students", help="Folder for the final students, read by benchmarks/transfer.py "
                                                "('' not to save them).")
    parser.add_argument("--teacher", help="Teacher folder or Hub id.")
    parser.add_argument("--data_dir", help="Folder with the Fashion-MNIST IDX files (default: the Debian package's).")
    parser.add_argument("--output", default=RESULTS_DIR, help="Folder for the JSON, markdown and PNG.")
    parser.add_argument("--name", help="File stem (default: the protocol's name).")
    options.add_run_options(parser)
    args = parser.parse_args(argv)
    args.protocol = protocols.load_protocol(args.protocol or ("quick" if args.quick else "protocol_10k"))
    if args.protocol["benchmark"] != "compression":
        parser.error(f"{args.protocol['path']} is a {args.protocol['benchmark']} protocol; run it with "
                     "benchmarks/run.py")
    _fill_from_protocol(args, parser.error)
    options.resolve_run_options(args)
    args.overrides = {**(args.protocol.get("overrides") or {}), **args.overrides}
    if args.report_only and not os.path.isfile(options.journal_path(args)):
        parser.error(f"--report_only reads the run journal {options.journal_path(args)}, which does not exist")
    return args


def _fill_from_protocol(args: argparse.Namespace, error: Any) -> None:
    """Every option left out taken from the protocol; lists parsed and checked."""
    for option, (section, key) in FROM_PROTOCOL.items():
        if getattr(args, option) is None:
            value = (args.protocol.get(section) or {}).get(key) if section else args.protocol.get(key)
            setattr(args, option, ",".join(map(str, value)) if isinstance(value, list) else value)
    args.teacher = args.teacher or DEFAULT_TEACHER
    if args.teacher_cache is None:
        args.teacher_cache = os.path.join(CACHE_DIR, "teacher_outputs")
    if args.save_students is None:
        args.save_students = os.path.join(CACHE_DIR, "students")
    args.teacher, args.teacher_cache, args.save_students = (
        absolute(p) if p else p for p in (args.teacher, args.teacher_cache, args.save_students))
    args.seeds = [int(s) for s in options.parse_list(str(args.seeds or ""))]
    args.lr_grid = [float(x) for x in options.parse_list(str(args.lr_grid or ""))]
    args.methods = resolve_methods(options.parse_list(args.methods or ""), error)
    args.students = options.parse_list(args.students or "")
    if args.rates_chosen_in and args.lr_grid:
        error("--lr_grid and --rates_chosen_in exclude each other: a grid, or the rates another protocol chose")
    for option in ("seeds", "lr_grid", "methods", "students"):
        options.refuse_repeats(f"--{option}", getattr(args, option), error)
        if not getattr(args, option) and not (option == "lr_grid" and args.rates_chosen_in):
            error(f"--{option} needs at least one value")
    for student in args.students:
        if student not in data.KNOWN_STUDENTS:
            error(f"unknown student {student!r}; choose from {data.KNOWN_STUDENTS}")
    args.train_subset, args.test_subset = args.train_subset or 0, args.test_subset or 0
    args.widen_at_edges = int(args.widen_at_edges or 0)
    if args.widen_at_edges < 0:
        error("--widen_at_edges must be 0 or more")
    args.quick = args.protocol.get("mode") == "quick"
    args.chosen_rates = (rates_chosen_in(args.rates_chosen_in, args.methods, args.students) if args.rates_chosen_in
                         else None)


def resolve_methods(names: list[str], error: Any) -> list[str]:
    """The rows to run (each a library preset): aliases resolved, duplicates dropped, order kept."""
    methods = []
    for name in (ALIASES.get(n.lower(), n.lower()) for n in names):
        if name not in PRESETS:
            close = difflib.get_close_matches(name, list(PRESETS), n=1)
            error(f"unknown method {name!r}" + (f"; did you mean {close[0]!r}?" if close else "")
                  + f" Choose from the presets {', '.join(PRESETS)} (or {', '.join(ALIASES)}).")
        elif name not in methods:
            methods.append(name)
    return methods


# ------------------------------------------------------------------------------------------------ one run
def _init_worker(teacher: str, data_paths: dict[str, str], threads: int) -> None:
    from transformers import AutoModelForImageClassification

    torch.set_num_threads(threads)
    key = (teacher, tuple(sorted(data_paths.items())))
    if _WORKER.get("key") == key:  # in-process runs: set up once for all the phases
        return
    data.quiet()
    _, config, image_size = data.load_teacher_files(teacher)
    _WORKER.update(data.load_encoded(data_paths), teacher_config=config, image_size=image_size, key=key,
                   teacher=AutoModelForImageClassification.from_pretrained(teacher))


def run_config(task: dict[str, Any], output_dir: str) -> Any:
    """The ``ContrastiveDistillationConfig`` of a task: the shared schedule, the method's fields, the overrides, and
    the teacher-output cache where the objective reads the teacher."""
    fields = {"nce_k": task["nce_k"], **task["fields"], **task.get("overrides", {})}
    if task.get("teacher_cache_dir"):
        fields["teacher_cache_dir"] = task["teacher_cache_dir"]
    return train.training_config(output_dir, task["device"], task["seed"], task["epochs"], task["batch_size"],
                                 task["learning_rate"], **fields)


def teacher_reads(fields: dict[str, Any], planned_pairs: Optional[Callable[[Any], list]] = None) -> str:
    """What a method's objective reads of the teacher: ``nothing`` (scratch), ``outputs`` (its logits and classifier
    input only) or ``features`` (intermediate features too). ``planned_pairs(settings)``: the layer pairs the pairing
    plan holds for the student and teacher at hand (without it, any pair ``layer_pairs`` may give counts)."""
    from cktf_hf import get_objective

    settings = train.training_config(tempfile.gettempdir(), "cpu", 0, 1, 8, 1e-3, **fields).objective_settings
    if not (settings.kd_weight or settings.final_weight or settings.layer_weight or settings.classic):
        return "nothing"
    paired = (settings.pairs_intermediate_layers if planned_pairs is None
              else any(not pair.is_final for pair in planned_pairs(settings)))
    # OFA's branches read the student's stages alone, but count here as they always did (the journals' cache keys)
    branches = any(get_objective(name).inputs == "student_stages" for name in settings.classic)
    intermediate = (settings.layer_weight > 0 and paired) or settings.classic_reads_pair_maps or branches
    return "features" if intermediate else "outputs"


def pairs_planner(bench: dict[str, Any], student: str) -> Callable[[Any], list]:
    """``settings`` → the layer pairs the pairing plan holds for ``student`` and the bench's teacher (one probe)."""
    from cktf_hf.pairing import plan_pairs

    @functools.lru_cache(maxsize=None)  # one probe per pairing and pooling, not one per method
    def plan(layer_pairs: str, pooling: Any) -> list:
        model = data.build_student(student, bench["teacher"].config, bench["image_size"], 0)
        return plan_pairs(model, bench["teacher"], bench["probe"], layer_pairs, pooling).pairs

    return lambda settings: plan(settings.planned_layer_pairs, settings.pooling)


def student_folder(task: dict[str, Any]) -> Optional[str]:
    if not task.get("save_dir"):
        return None
    return os.path.join(task["save_dir"], task["student"], task["method"], f"lr{task['learning_rate']:g}-seed"
                                                                           f"{task['seed']}")


def run_one(task: dict[str, Any]) -> dict[str, Any]:
    """Train one student with one method, rate and seed; its per-epoch validation and test accuracies, the epoch
    selected on validation, the test accuracy there and after the last epoch, the wall time and the saved student."""
    student = data.build_student(task["student"], _WORKER["teacher_config"], _WORKER["image_size"], task["seed"])
    with tempfile.TemporaryDirectory(prefix="cktf_bench_") as tmp:
        trainer, val, test, seconds = train.train_student(student, _WORKER["teacher"], _WORKER["train"],
                                                          _WORKER["val"], _WORKER["test"], run_config(task, tmp))
    folder = student_folder(task)
    if folder:
        trainer.save_model(folder)  # a plain transformers classifier (no projectors or banks)
    return train.summarise_run(val, test, seconds, method=task["method"], student=task["student"],
                               seed=task["seed"], learning_rate=task["learning_rate"], phase=task["phase"],
                               saved_student=repo_relative(folder) if folder else None)


def prepare_cache(task: dict[str, Any]) -> dict[str, Any]:
    """Write the teacher-output cache of a task's (method, student) configuration (a no-op when it exists) by building
    its trainer once: the runs then only read it, so two runs never write the same one at once."""
    from cktf_hf import ContrastiveDistillationTrainer

    start = time.perf_counter()
    student = data.build_student(task["student"], _WORKER["teacher_config"], _WORKER["image_size"], 0)
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
            f"val {stats.pct(run['val'])} → test {stats.pct(run['test'])} (epoch {run['selected_epoch']}), "
            f"last {stats.pct(run['test_last'])}, {format_duration(run['wall_time_s'])}")


def widened_rate(rates: list[float], chosen: float, widenings: dict[str, int], cap: int) -> Optional[float]:
    """The rate to try next when ``chosen`` sits at an edge of ``rates``: twice the largest or half the smallest, at
    most ``cap`` times per side (counted in ``widenings``); None when the choice is interior or the cap is reached."""
    if len(rates) < 2:
        return None
    for side, edge, factor in (("up", max(rates), 2.0), ("down", min(rates), 0.5)):
        if chosen == edge and widenings[side] < cap:
            widenings[side] += 1
            return edge * factor
    return None


def rates_chosen_in(name: str, methods: list[str], students: list[str]) -> dict[tuple[str, str], float]:
    """``(method, student)`` → the learning rate chosen on validation in compression protocol ``name``'s report
    (``--rates_chosen_in``). Refused, naming the fix, when the report is missing, lacks a row, or a choice still sits at
    an edge of its grid (a rate not known to be the best is not carried over)."""
    path = os.path.join(RESULTS_DIR, f"{name}.json")
    if not os.path.isfile(path):
        raise SystemExit(f"--rates_chosen_in {name}: {path} does not exist; write it first with `python "
                         f"benchmarks/run.py {name}` (--report_only, once its journal holds every row).")
    try:
        with open(path, encoding="utf-8") as f:
            chosen = {(g["method"], g["student"]): g for g in json.load(f)["grid"]}
    except (ValueError, KeyError, TypeError) as error:
        raise SystemExit(f"--rates_chosen_in {name}: {path} is not a compression report with a learning-rate grid "
                         f"({type(error).__name__}: {error}); write it again with `python benchmarks/run.py {name} "
                         "--report_only`.") from None
    missing = [f"{m} / {s}" for m in methods for s in students if (m, s) not in chosen]
    at_edge = [f"{m} / {s}" for m in methods for s in students if chosen.get((m, s), {}).get("at_edge")]
    if missing or at_edge:
        raise SystemExit(f"--rates_chosen_in {name}: {path} has no chosen rate for {', '.join(missing) or 'none'}, "
                         f"and chose at an edge of the grid for {', '.join(at_edge) or 'none'}; finish or widen that "
                         "protocol's grid first.")
    return {key: float(row["chosen"]) for key, row in chosen.items()}


def first_rates(args: argparse.Namespace, method: str) -> dict[str, list[float]]:
    """The rates each student of ``method`` tries first: the grid, or the one rate ``--rates_chosen_in`` gives."""
    if args.chosen_rates is None:
        return {s: list(args.lr_grid) for s in args.students}
    return {s: [args.chosen_rates[(method, s)]] for s in args.students}


def run_grid(method: str, args: argparse.Namespace, grid_task: Any, execute: Any, resume: bool,
             grid: dict[str, Any], not_run: list[str]) -> tuple[list[dict[str, Any]], dict[str, float]]:
    """Phase 1 of one method: every student runs the grid with the first seed, widened at its edges
    (``--widen_at_edges``, every method alike), and its rate is chosen on validation (with ``--rates_chosen_in``, the
    one rate chosen before). Returns the grid runs and the chosen rate per student; ``grid`` records each student's
    rates, choice and whether it still sits at an edge."""
    first = first_rates(args, method)
    rates = {s: list(first[s]) for s in args.students}
    widenings = {s: {"up": 0, "down": 0} for s in args.students}
    runs: dict[str, list[dict[str, Any]]] = {s: [] for s in args.students}
    pending = {s: list(first[s]) for s in args.students}
    while pending:
        tasks = [grid_task(s, lr) for s, lrs in pending.items() for lr in lrs]
        for result, task in zip(execute(tasks, resume), tasks):
            if result is not None:
                runs[task["student"]].append(result)
        resume = True
        complete = [s for s in pending if len(runs[s]) == len(rates[s])]
        not_run.extend(f"{method} / {s}" for s in pending if s not in complete)  # only with --report_only
        pending = {}
        for student in complete:
            step = widened_rate(rates[student], train.choose_learning_rate(runs[student]), widenings[student],
                                args.widen_at_edges)
            if step is not None:
                rates[student].append(step)
                pending[student] = [step]
    chosen = {}
    for student in args.students:
        if len(runs[student]) < len(rates[student]):
            continue
        chosen[student] = choice = train.choose_learning_rate(runs[student])
        grid[f"{method}/{student}"] = {
            "method": method, "student": student, "chosen": choice,
            "val": {f"{r['learning_rate']:g}": r["val"] for r in runs[student]},
            "widened": [f"{lr:g}" for lr in rates[student][len(first[student]):]],
            "at_edge": len(rates[student]) > 1 and choice in (min(rates[student]), max(rates[student]))}
        if not args.report_only:
            _keep_chosen_students([grid_task(student, lr) for lr in rates[student]], choice)
    return [r for s in args.students if s in chosen for r in runs[s]], chosen


def _keep_chosen_students(grid_tasks: list[dict[str, Any]], chosen: float) -> None:
    """Delete the saved students of the grid runs at the rates not chosen."""
    for task in grid_tasks:
        folder = student_folder(task)
        if folder and task["learning_rate"] != chosen and os.path.isdir(folder):
            shutil.rmtree(folder)


# ------------------------------------------------------------------------------------------------ the benchmark
def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    data.quiet()
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    bench = prepare(args)
    outcome = run_protocol(args, bench)
    return compression_report.write_report(args, bench, outcome, time.perf_counter() - started)


def prepare(args: argparse.Namespace) -> dict[str, Any]:
    """The splits (encoded through the teacher's processor, except with --report_only, which trains nothing), the
    teacher, its test accuracy and the parameter counts."""
    from transformers import AutoModelForImageClassification

    from cktf_hf.demo import load_fashion_mnist

    processor, teacher_config, image_size = data.load_teacher_files(args.teacher)
    splits = load_fashion_mnist(args.data_dir)
    train_split, val_split = data.train_validation_split(splits["train"], args.val_size, args.train_subset)
    test_split = splits["test"].select(range(args.test_subset)) if args.test_subset else splits["test"]
    test = data.encode(test_split, processor)
    teacher = AutoModelForImageClassification.from_pretrained(args.teacher)
    encoded = {"test": test} if args.report_only else {
        "train": data.encode(train_split, processor), "val": data.encode(val_split, processor), "test": test}
    return {"encoded": encoded, "sizes": {"train": len(train_split), "val": len(val_split), "test": len(test)},
            "teacher": teacher, "image_size": image_size,
            "probe": torch.as_tensor(np.asarray(test.select(range(2))["pixel_values"], dtype=np.float32)), "teacher_weights": model_digest(teacher),
            "teacher_accuracy": data.accuracy(teacher, test, args.device),
            "teacher_params": count_parameters(teacher),
            "student_params": {s: count_parameters(data.build_student(s, teacher_config, image_size, 0))
                               for s in args.students}}


def task_settings(args: argparse.Namespace, bench: dict[str, Any]) -> dict[str, Any]:
    """The fields every task of this invocation shares (they key the journal)."""
    sizes = bench["sizes"]
    save_dir = os.path.join(args.save_students, args.name) if args.save_students else None
    return dict(device=args.device, epochs=args.epochs, batch_size=args.batch_size, nce_k=args.nce_k,
                teacher=args.teacher, **{journal.WEIGHTS_FIELD: bench["teacher_weights"]}, train_images=sizes["train"],
                val_images=sizes["val"], test_images=sizes["test"], save_dir=save_dir, **options.task_overrides(args))


def run_protocol(args: argparse.Namespace, bench: dict[str, Any]) -> dict[str, Any]:
    """Phase 1 (the grid with the first seed, the rate chosen on validation) and phase 2 (the other seeds) for every
    method, or only their results read back from the journal (--report_only)."""
    base = task_settings(args, bench)
    cached = {(m, s): bool(args.teacher_cache) and teacher_reads({"preset": m, **args.overrides},
                                                                  pairs_planner(bench, s)) == "outputs"
              for m in args.methods for s in args.students}

    def task(method: str, student: str, seed: int, learning_rate: float, phase: str) -> dict[str, Any]:
        return dict(method=method, fields={"preset": method}, student=student, seed=seed, learning_rate=learning_rate,
                    phase=phase, teacher_cache_dir=args.teacher_cache if cached[method, student] else None,
                    **{journal.OBJECTIVE_FIELD: get_preset(method).changed_knobs()}, **base)

    runs, grid, final, not_run = [], {}, [], []
    path, resume = options.journal_path(args), args.resume
    with tempfile.TemporaryDirectory(prefix="cktf_bench_data_") as tmp:
        paths = {} if args.report_only else data.save_encoded(bench["encoded"], tmp)
        initargs = (args.teacher, paths, args.threads)
        workers = (pool.worker_pool(args.jobs, _init_worker, initargs) if args.jobs > 1 and not args.report_only
                   else None)

        def execute(tasks: list[dict[str, Any]], resume: bool) -> list[Optional[dict[str, Any]]]:
            if args.report_only:
                return journal.read_back(tasks, path, RUN_FIELDS)
            for cache_task in cache_tasks(journal.pending_tasks(tasks, path, resume, RUN_FIELDS)):
                # One at a time: two students may share a cache (e.g. KD reads the logits alone).
                pool.run_tasks(prepare_cache, [cache_task], args.jobs, _init_worker, initargs, pool=workers,
                               describe=lambda r: f"teacher outputs of {r['method']} / {r['student']} cached "
                                                  f"({format_duration(r['seconds'])})")
            return pool.run_tasks(run_one, tasks, args.jobs, _init_worker, initargs, describe=_describe,
                                  journal=path, resume=resume, pool=workers, result_fields=RUN_FIELDS)

        try:
            single = {m: first_rates(args, m) for m in args.methods}
            if all(len(r) == 1 for rates in single.values() for r in rates.values()) and not args.report_only:
                # One rate: no run waits on a choice, so every run of every method is queued at once (--jobs N keeps
                # N workers busy across methods); the phases below read them back from the journal.
                execute([task(m, s, seed, single[m][s][0], "grid" if seed == args.seeds[0] else "seeds")
                         for m in args.methods for s in args.students for seed in args.seeds], resume)
                resume = True
            for method in args.methods:
                grid_runs, chosen = run_grid(method, args, lambda s, lr: task(method, s, args.seeds[0], lr, "grid"),
                                             execute, resume, grid, not_run)
                resume = True  # the journal now holds this invocation's runs too
                seed_tasks = [task(method, s, seed, chosen[s], "seeds") for seed in args.seeds[1:]
                              for s in args.students if s in chosen]
                seed_runs = [r for r in execute(seed_tasks, True) if r is not None]
                runs += grid_runs + seed_runs
                final += [r for r in grid_runs if r["learning_rate"] == chosen[r["student"]]] + seed_runs
        finally:
            if workers is not None:
                workers.shutdown()
    if args.report_only and not runs:
        raise SystemExit(f"--report_only: no run in {path} matches these settings (students, methods, seeds, "
                         "--lr_grid, --train_subset, --epochs, --batch_size, --teacher, --save_students ...); "
                         "nothing written")
    final.sort(key=lambda r: (args.methods.index(r["method"]), args.students.index(r["student"]), r["seed"]))
    return {"runs": runs, "grid": grid, "final": final, "not_run": not_run,
            "unreported": journal.rows_outside(path, base, args.methods, args.students)}


if __name__ == "__main__":
    main()
