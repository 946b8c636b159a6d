"""The compression benchmark's report: its targets as the protocol states them (``targets`` of the YAML), the
tables, ``<name>.json`` / ``.md`` / ``.png`` and the console summary."""

from __future__ import annotations

import argparse
from typing import Any, Optional

from cktf_hf.formatting import format_count, format_duration, format_epochs
from harness import figure, report, stats
from harness.paths import portable_path, repo_relative
from harness.report import environment


# ------------------------------------------------------------------------------------------------ targets
def target_recipe(rows: list[dict[str, Any]], students: list[str], spec: dict[str, Any]) -> dict[str, Any]:
    """(a) ``spec["method"]`` beats the best of ``spec["rivals"]`` (by test mean) by more than one std, on every
    student; while some rivals have not run on a student it is not measured there (the comparison with those that ran
    is kept)."""
    recipe, others = spec["method"], spec["rivals"]
    per_student = {}
    for student in students:
        by = {r["method"]: r for r in rows if r["student"] == student}
        rivals = [by[m] for m in others if m in by]
        if recipe not in by or not rivals:
            per_student[student] = {"met": None, "why": f"{recipe} not run" if recipe not in by else
                                    "no other method run"}
            continue
        best = max(rivals, key=lambda r: r["test_mean"])
        step = stats.compare(by[recipe], best)
        not_run = [m for m in others if m not in by]
        met = step["beyond_one_std"] if not not_run or step["beyond_one_std"] is False else None
        per_student[student] = {"met": met, "best_other": best["method"], "not_run": not_run, **step}
    return {"statement": f"{recipe} beats the best other method ({', '.join(others)}) by more than one std, per "
                         "student", "per_student": per_student, "met": _all_met(per_student.values())}


def target_ordering(rows: list[dict[str, Any]], students: list[str], spec: dict[str, Any]) -> dict[str, Any]:
    """(b) ``spec["order"][0] > [1] > ...``, each step beyond one std, per student; an entry that is a list names
    alternatives, the first that ran counts (e.g. the recipe if it ran, else the reference)."""
    order = spec["order"]
    per_student = {}
    for student in students:
        mine = [r for r in rows if r["student"] == student]
        ran = {r["method"] for r in mine}
        names = [entry if isinstance(entry, str) else next((m for m in entry if m in ran), entry[-1])
                 for entry in order]
        check = stats.ordering_check(mine, names)
        met = stats.all_steps([s["beyond_one_std"] for s in check["steps"]])
        if met and len(check["steps"]) < len(names) - 1:  # a method missing: not measured
            met = None
        per_student[student] = {"met": met, **check}
    return {"statement": f"{spec['label']}, each step beyond one std, per student",
            "per_student": per_student, "met": _all_met(per_student.values())}


def target_combined(rows: list[dict[str, Any]], students: list[str], spec: dict[str, Any]) -> dict[str, Any]:
    """(c) X+CKTF > X beyond one std for at least ``spec["needed"]`` of the X in ``spec["counted"]``, per student;
    ``spec["pairs"]`` maps each X to its combined rows (the first that ran counts); the X not counted are reported
    beside them."""
    pairs_of, counted, needed = spec["pairs"], spec["counted"], spec["needed"]
    per_student = {}
    for student in students:
        by = {r["method"]: r for r in rows if r["student"] == student}
        combined = {x: next((name for name in names if name in by), None) for x, names in pairs_of.items()}
        pairs = {x: stats.compare(by[combined[x]], by[x]) for x in pairs_of if x in by and combined[x]}
        measured = [pairs[x] for x in counted if x in pairs]
        wins = sum(p["beyond_one_std"] is True for p in measured)
        testable = len(measured) >= needed and all(p["beyond_one_std"] is not None for p in measured)
        met = True if wins >= needed else (False if testable and wins + len(counted) - len(measured) < needed
                                           else None)
        per_student[student] = {"met": met, "wins": wins, "measured": len(measured), "pairs": pairs}
    return {"statement": f"X+CKTF > X beyond one std for at least {needed} of the {len(counted)} X in "
                         f"{', '.join(counted)}, per student", "counted": counted, "per_student": per_student,
            "met": _all_met(per_student.values())}


def compute_targets(rows: list[dict[str, Any]], students: list[str], specs: dict[str, Any]) -> dict[str, Any]:
    """The targets a protocol states (``recipe`` → a, ``ordering`` → b, ``combined`` → c), those it names."""
    targets = {}
    if "recipe" in specs:
        targets["a"] = target_recipe(rows, students, specs["recipe"])
    if "ordering" in specs:
        targets["b"] = target_ordering(rows, students, specs["ordering"])
    if "combined" in specs:
        targets["c"] = target_combined(rows, students, specs["combined"])
    return targets


def _all_met(results: Any) -> Optional[bool]:
    """True when met on every student, False when missed on any, None when not measured (or one seed)."""
    values = [r["met"] for r in results]
    if any(v is False for v in values):
        return False
    return True if values and all(v is True for v in values) else None


def verdict(met: Optional[bool]) -> str:
    return {True: "MET", False: "NOT MET", None: "not measured"}[met]


def _outcomes(pairs: list[dict[str, Any]]) -> str:
    return "; ".join(f"{p['pair']}: {stats.step_outcome(p)} ({100 * p['difference']:+.2f} pts)" for p in pairs)


def describe_targets(targets: dict[str, Any]) -> list[str]:
    """One line per target and student, with the numbers."""
    lines = []
    for key, target in targets.items():
        lines.append(f"({key}) {target['statement']}: **{verdict(target['met'])}**")
        for student, result in target["per_student"].items():
            if key == "a" and "best_other" in result:
                detail = (f"{result['pair']}: {stats.pct(result['a']['mean'], result['a']['std'])} vs "
                          f"{stats.pct(result['b']['mean'], result['b']['std'])} ({100 * result['difference']:+.2f}"
                          f" pts), {stats.step_outcome(result)}"
                          + (f"; not run: {', '.join(result['not_run'])}" if result["not_run"] else ""))
            elif key == "b":
                detail = stats.describe_ordering(result).split(" — ", 1)[-1]
            elif key == "c":
                pairs, counted = result["pairs"], target["counted"]
                beside = [pairs[x] for x in pairs if x not in counted]
                detail = (f"{result['wins']} of {result['measured']} measured X won: "
                          + _outcomes([pairs[x] for x in counted if x in pairs])
                          + (f"; beside them, not counted: {_outcomes(beside)}" if beside else ""))
            else:
                detail = result.get("why", "")
            lines.append(f"  - {student}: {verdict(result['met'])} — {detail}")
    return lines


# ------------------------------------------------------------------------------------------------ the report
def write_report(args: argparse.Namespace, bench: dict[str, Any], outcome: dict[str, Any],
                 wall_time_s: float) -> dict[str, Any]:
    """Write ``<name>.json``, ``.md`` and ``.png`` and print the summary; the JSON payload."""
    sizes, teacher_accuracy = bench["sizes"], bench["teacher_accuracy"]
    rows = stats.aggregate(outcome["final"])
    for row in rows:
        row["parameters"] = bench["student_params"][row["student"]]
        row["learning_rate"] = outcome["grid"][f"{row['method']}/{row['student']}"]["chosen"]
    short = report.short_rows(rows, lambda row: args.seeds)
    specs = args.protocol.get("targets") or {}
    gap = specs.get("min_teacher_gap", 0.03)
    scratch = {r["student"]: r for r in rows if r["method"] == "scratch"}
    gap_check = {s: {"teacher": round(teacher_accuracy, 4), "scratch_test_mean": r["test_mean"],
                     "gap": round(teacher_accuracy - r["test_mean"], 4), "required": gap,
                     "passed": teacher_accuracy - r["test_mean"] >= gap} for s, r in scratch.items()}
    targets = compute_targets(rows, args.students, specs)
    mode = "quick" if args.quick else "full"
    note = (f"QUICK MODE: all {len(args.methods)} methods and {len(args.students)} students, but {len(args.seeds)} "
            f"seed(s), {sizes['train']} training / {sizes['val']} validation / {sizes['test']} test images, "
            f"{args.epochs:g} epochs, learning rates {args.lr_grid}: it checks the machinery and says nothing about "
            "the methods." if args.quick else "")
    payload = {
        "benchmark": "accuracy", "protocol": repo_relative(args.protocol["path"]), "settings": _settings(args, sizes),
        "note": note, "environment": environment(),
        "teacher": {"path": portable_path(args.teacher), "architecture": type(bench["teacher"]).__name__,
                    "parameters": bench["teacher_params"], "test_accuracy": round(teacher_accuracy, 4)},
        "students": {s: {"parameters": n, "compression": round(bench["teacher_params"] / n, 2)}
                     for s, n in bench["student_params"].items()},
        "runs": outcome["runs"], "grid": list(outcome["grid"].values()), "aggregates": rows,
        "scratch_baselines": {
            f"fashion_mnist/{s}": {"mean": r["test_mean"], "std": r["test_std"], "last_mean": r["test_last_mean"],
                                   "last_std": r["test_last_std"], "n": r["n"],
                                   "metric": "top-1 on the test split at the epoch selected on validation",
                                   "train_images": sizes["train"], "epochs": args.epochs,
                                   "learning_rate": r["learning_rate"]} for s, r in scratch.items()},
        "teacher_vs_scratch": gap_check, "targets": targets, "fewer_seeds_than_asked": short,
        "saved_students": [{"method": r["method"], "student": r["student"], "seed": r["seed"],
                            "learning_rate": r["learning_rate"], "path": r["saved_student"]}
                           for r in outcome["final"] if r.get("saved_student")],
        "total_wall_time_s": round(wall_time_s, 1),
        "runs_wall_time_s": round(sum(r["wall_time_s"] for r in outcome["runs"]), 1),
        "not_run": outcome["not_run"], "rows_not_reported": outcome["unreported"],
    }
    unreported = outcome["unreported"]
    partial = (f"This report covers the rows this command named (--methods, --students); the run journal also holds "
               f"runs of {len(unreported)} other row(s) with these settings ({', '.join(unreported)}): name them "
               "too (--report_only trains nothing) to report every row." if unreported else "")
    flag = report.describe_short_rows(short)
    text = [f"teacher {type(bench['teacher']).__name__} ({format_count(bench['teacher_params'], 'exact')} parameters): "
            f"{stats.pct(teacher_accuracy)} %"]
    text += [f"teacher − scratch ({s}, test at the validation-selected epoch): {100 * g['gap']:+.2f} pts — "
             f"{'OK' if g['passed'] else 'FAILED'} (needs ≥ {100 * gap:.0f})" for s, g in gap_check.items()]
    target_lines = describe_targets(targets)
    markdown = "\n\n".join([
        f"# Compression benchmark ({mode})",
        f"Fashion-MNIST: {sizes['train']} training images and a disjoint {sizes['val']}-image validation split (both "
        f"fixed, stratified, from the training images), {sizes['test']} test images; {args.epochs:g} epochs, batch "
        f"{args.batch_size}, AdamW, cosine, K {args.nce_k}; learning rate per method and student "
        + (f"as chosen on validation in `{args.rates_chosen_in}`" if getattr(args, "rates_chosen_in", None)
           else f"chosen from {args.lr_grid} on validation with seed {args.seeds[0]}")
        + (f" (a rate chosen at an edge of the rates tried adds twice (half) it, up to {args.widen_at_edges} times per "
           "side, for every method alike)" if getattr(args, "widen_at_edges", 0) else "")
        + f", then seeds {args.seeds}; device {args.device}"
        + (f"; overrides on every method: {args.overrides}" if args.overrides else "")
        + ". Epochs are selected on the validation split; the test split is only reported: top-1 % at the selected"
          " epoch (and after the last one), mean ± std over seeds."
        + (f"\n\n**{note}**" if note else "") + (f"\n\n**{flag}**" if flag else ""),
        report.markdown_table(*_summary_table(rows, args.methods, args.students, len(args.seeds))),
        *(["## Targets\n\n" + "\n".join(f"- {line}" if not line.startswith("  ") else line
                                        for line in target_lines)] if target_lines else []),
        "## Every row\n\n" + report.markdown_table(*_table(rows, len(args.seeds))),
        f"## Learning-rate grid (seed {args.seeds[0]}, validation top-1 % at the selected epoch)\n\n"
        + report.markdown_table(*_grid_table(list(outcome["grid"].values()), args.lr_grid)),
        "\n".join(f"- {line}" for line in text),
        (f"Not run (no complete learning-rate grid in the journal): {', '.join(outcome['not_run'])}.\n\n"
         if outcome["not_run"] else "")
        + (f"**{partial}**\n\n" if partial else "")
        + (f"Report written from the run journal (--report_only); the runs' times sum to "
           f"{format_duration(payload['runs_wall_time_s'], 'hours')} (more than the wall time where --jobs ran them "
           "side by side)." if args.report_only else
           f"Total wall time: {format_duration(payload['total_wall_time_s'], 'min')}."),
    ])
    paths = report.write_results(args.output, args.name, payload, markdown)
    panels = [figure.Panel(f"teacher → {s}", figure.panel_rows([r for r in rows if r["student"] == s],
                                                              outcome["final"], ("method", "student")),
                           {"teacher": teacher_accuracy, **({"scratch": scratch[s]["test_mean"]} if s in scratch
                                                            else {})})
              for s in args.students if any(r["student"] == s for r in rows)]
    figure.dot_panels(paths["png"], panels, f"Fashion-MNIST compression ({args.name}), {sizes['train']} training "
                      f"images, {args.epochs:g} epochs\ntest top-1 at the validation-selected epoch, learning rate "
                      + (f"the rates chosen in {args.rates_chosen_in}" if getattr(args, "rates_chosen_in", None)
                         else f"chosen on validation from {args.lr_grid}")
                      + f"\ndots: seeds {args.seeds}; diamonds: mean ± std")
    print()
    print(report.text_table(*_table(rows, len(args.seeds))))
    print()
    print("\n".join(text + [line.replace("**", "") for line in target_lines]))
    for notice in (note, flag, partial):
        if notice:
            print(notice)
    print(f"total wall time {format_duration(payload['total_wall_time_s'])}; wrote {', '.join(paths.values())}")
    return payload


def _settings(args: argparse.Namespace, sizes: dict[str, int]) -> dict[str, Any]:
    return {
        "mode": "quick" if args.quick else "full", "dataset": "fashion_mnist", "train_subset": sizes["train"],
        "val_images": sizes["val"], "test_images": sizes["test"], "seeds": args.seeds, "grid_seed": args.seeds[0],
        "lr_grid": args.lr_grid,
        **({"rates_chosen_in": args.rates_chosen_in} if getattr(args, "rates_chosen_in", None) else {}),
        **({"widen_at_edges": args.widen_at_edges} if getattr(args, "widen_at_edges", 0) else {}),
        "methods": args.methods, "method_fields": {m: {"preset": m} for m in args.methods},
        "students": args.students, "epochs": args.epochs, "batch_size": args.batch_size,
        "optimizer": "AdamW (weight decay 0.05)", "schedule": "5% linear warmup, cosine decay", "nce_k": args.nce_k,
        "augmentation": "none", "selection": "epoch and learning rate on the validation split; test reported at the "
                                             "selected epoch and the last one",
        "teacher_cache": bool(args.teacher_cache), "overrides": args.overrides, "report_only": args.report_only,
        "device": args.device, "jobs": args.jobs, "threads_per_run": args.threads,
    }


def _summary_table(rows: list[dict[str, Any]], methods: list[str], students: list[str], asked: int
                   ) -> tuple[list[str], list[list[str]]]:
    by = {(r["method"], r["student"]): r for r in rows}
    table = [[m] + [stats.pct(by[m, s]["test_mean"], by[m, s]["test_std"]) + report.seeds_mark(by[m, s], asked)
                    if (m, s) in by else "—" for s in students] for m in methods]
    return ["method"] + [f"{s} (test top-1 %)" for s in students], table


def _table(rows: list[dict[str, Any]], asked: int) -> tuple[list[str], list[list[str]]]:
    header = ["method", "student", "params", "lr", "val top-1", "test top-1 (selected epoch)", "test top-1 (last)",
              "selected epoch", "wall time / run", "seeds"]
    table = [[r["method"], r["student"], format_count(r["parameters"], "millions"), f"{r['learning_rate']:g}",
              stats.pct(r["val_mean"], r["val_std"]), stats.pct(r["test_mean"], r["test_std"]),
              stats.pct(r["test_last_mean"], r["test_last_std"]), format_epochs(r["selected_epoch_mean"]),
              format_duration(r["wall_time_mean_s"], "s"),
              str(r["n"]) if r["n"] >= asked else f"{r['n']} of {asked} (FEWER)"]
             for r in rows]
    return header, table


def _grid_table(grid: list[dict[str, Any]], lr_grid: list[float]) -> tuple[list[str], list[list[str]]]:
    """Validation accuracy per rate tried (the protocol's grid, then any rate added at an edge), the rate chosen and
    whether it still sits at an edge of the rates tried."""
    rates = sorted({float(lr) for g in grid for lr in g["val"]} | set(lr_grid))
    widened = any(g.get("widened") for g in grid) or any(g.get("at_edge") for g in grid)
    header = ["method", "student"] + [f"lr {lr:g}" for lr in rates] + ["chosen"] + (["at an edge"] if widened else [])
    table = [[g["method"], g["student"]] + [stats.pct(g["val"][f"{lr:g}"]) if f"{lr:g}" in g["val"] else "—"
                                            for lr in rates] + [f"{g['chosen']:g}"]
             + ([_edge_note(g)] if widened else []) for g in grid]
    return header, table


def _edge_note(grid_row: dict[str, Any]) -> str:
    added = f" (added {', '.join(grid_row['widened'])})" if grid_row.get("widened") else ""
    return ("yes" if grid_row.get("at_edge") else "no") + added
