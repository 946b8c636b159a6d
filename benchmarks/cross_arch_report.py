#!/usr/bin/env python
"""Issue 25's cross-architecture table: the compression protocols' results side by side, one column per teacher →
student pair, and its targets stated with their numbers.

The compression benchmark takes one teacher per protocol, so the three pairs come from two protocols:
``cross_arch_10k`` (the ResNet teacher → ``vit-tiny`` and ``resnet-small``: CNN → ViT, CNN → CNN) and
``cross_arch_vit_teacher_10k`` (the ViT teacher → ``resnet-small``: ViT → CNN). This script trains nothing: it reads
each protocol's ``<name>.json`` from the results folder (a missing one is a pair not run yet, reported as such) and
writes ``<name>.md`` and ``<name>.json`` beside them::

    python benchmarks/cross_arch_report.py                      # cross_arch_10k_pairs.md / .json
    python benchmarks/cross_arch_report.py --protocols cross_arch_10k --name cnn_teacher_pairs

Targets (issue 25), per pair: (a) ``cktf`` beats every other single-method row (the protocol's
``targets.recipe.rivals``) by more than one std; (b) the combined rows (X+cktf-recipe) beside ``cktf``, and what
adopting one that is ahead would change in the other pairs; (c) OFA > KD > CRD on CNN → ViT (the protocol's
``targets.ordering``). Target (d) is the transfer protocol's (``transfer_cross_arch``).
"""

from __future__ import annotations

import argparse
import json
import os
from typing import Any, Optional

from harness import report, stats
from harness.paths import RESULTS_DIR, repo_relative
from harness.protocol import load_protocol

DEFAULT_PROTOCOLS = ["cross_arch_10k", "cross_arch_vit_teacher_10k"]
FAMILIES = {"CNN": ("resnet", "convnext"), "ViT": ("vit", "deit", "swin")}
ORDERING_PAIR = "CNN → ViT"  # target (c): OFA-KD's ordering on the CNN teacher → ViT student pair
VERDICTS = {True: "MET", False: "NOT MET", None: "not measured"}


def family(name: str) -> str:
    """``CNN`` or ``ViT`` for an architecture, model path or student name (``ResNetForImageClassification``,
    ``examples/teachers/fashion-mnist-vit``, ``resnet-small``); any other name is returned as it is."""
    lowered = name.lower()
    return next((fam for fam, marks in FAMILIES.items() if any(mark in lowered for mark in marks)), name)


def is_combined(method: str) -> bool:
    """A combined row (``X+cktf-recipe``): two methods' terms in one objective."""
    return "+" in method


# ------------------------------------------------------------------------------------------------ reading
def load_pairs(protocols: list[str], results_dir: str) -> list[dict[str, Any]]:
    """One entry per teacher → student pair of each protocol, with its protocol, results file (``None`` while that
    protocol has no results JSON), teacher, seeds asked, aggregate rows and grid choices (by method)."""
    pairs = []
    for name in protocols:
        protocol = load_protocol(name)
        path = os.path.join(results_dir, f"{protocol['name']}.json")
        results = _read_json(path) if os.path.isfile(path) else None
        teacher = (results or {}).get("teacher", {})
        teacher_name = teacher.get("architecture") or protocol["teacher"]
        for student in protocol["students"]:
            pair = {"name": f"{family(teacher_name)} → {family(student)}", "protocol": protocol,
                    "results": repo_relative(path) if results is not None else None, "expected_file": repo_relative(path),
                    "student": student, "teacher": teacher, "asked": len(protocol["seeds"]),
                    "rows": {r["method"]: r for r in (results or {}).get("aggregates", []) if r["student"] == student},
                    "grid": {g["method"]: g for g in (results or {}).get("grid", []) if g["student"] == student}}
            pairs.append(pair)
    names = [p["name"] for p in pairs]
    duplicated = sorted({n for n in names if names.count(n) > 1})
    if duplicated:
        raise SystemExit(f"Two protocols give the same pair {', '.join(duplicated)}: one column per pair.")
    return pairs


def _read_json(path: str) -> dict[str, Any]:
    with open(path, encoding="utf-8") as f:
        try:
            return json.load(f)
        except json.JSONDecodeError as error:
            raise SystemExit(f"{path}: not a readable results JSON ({error}).") from None


def method_order(pairs: list[dict[str, Any]]) -> list[str]:
    """The protocols' methods in their order, single-method rows first, then the combined rows."""
    methods = list(dict.fromkeys(m for p in pairs for m in p["protocol"].get("methods", [])))
    return [m for m in methods if not is_combined(m)] + [m for m in methods if is_combined(m)]


# ------------------------------------------------------------------------------------------------ the table
def cell(pair: dict[str, Any], method: str) -> str:
    """``mean ± std · lr <chosen>`` (`` · at edge`` while the choice sits at an edge of the rates tried, and
    `` (n of N seeds)`` for a short row), or ``—`` when the row has not run."""
    row = pair["rows"].get(method)
    if row is None:
        return "—"
    edge = " · at edge" if pair["grid"].get(method, {}).get("at_edge") else ""
    std = row["test_std"] if row["n"] > 1 else None
    return (f"{stats.pct(row['test_mean'], std)} · lr {row['learning_rate']:g}{edge}"
            + report.seeds_mark(row, pair["asked"]))


def table(pairs: list[dict[str, Any]], methods: list[str]) -> tuple[list[str], list[list[str]]]:
    return ["method"] + [p["name"] for p in pairs], [[m] + [cell(p, m) for p in pairs] for m in methods]


# ------------------------------------------------------------------------------------------------ targets
def _short(pair: dict[str, Any], methods: list[str]) -> list[str]:
    """Those of ``methods`` whose rows ran with fewer seeds than the protocol asks, as ``name (n of N)``."""
    rows = [pair["rows"][m] for m in methods if m in pair["rows"]]
    return [f"{r['method']} ({r['n']} of {pair['asked']})" for r in rows if r["n"] < pair["asked"]]


def _provisional(met: Optional[bool], short: list[str]) -> Optional[bool]:
    """A verdict "met" on rows with fewer seeds than asked is not one yet (a miss stays a miss, flagged)."""
    return None if met is True and short else met


def _targets_spec(pair: dict[str, Any]) -> dict[str, Any]:
    return pair["protocol"].get("targets") or {}


def target_recipe(pair: dict[str, Any]) -> dict[str, Any]:
    """(a) on one pair: ``cktf`` against each rival that ran, and the rivals it does not beat beyond one std."""
    spec = _targets_spec(pair).get("recipe")
    if not spec:
        return {"met": None, "why": "the protocol states no recipe target"}
    recipe, rivals, rows = spec["method"], spec["rivals"], pair["rows"]
    if recipe not in rows:
        return {"met": None, "why": f"{recipe} not run"}
    steps = [stats.compare(rows[recipe], rows[m]) for m in rivals if m in rows]
    not_run = [m for m in rivals if m not in rows]
    short = _short(pair, [recipe, *rivals])
    met = stats.all_steps([s["beyond_one_std"] for s in steps]) if steps else None
    if met is True and not_run:
        met = None
    return {"met": _provisional(met, short), "method": recipe, "steps": steps, "not_run": not_run, "short": short,
            "not_beaten": [s for s in steps if s["beyond_one_std"] is not True]}


def target_combined(pair: dict[str, Any], pairs: list[dict[str, Any]], methods: list[str]) -> dict[str, Any]:
    """(b) on one pair: each combined row against ``cktf`` (met: none beats it beyond one std); for each one ahead
    in means, its difference to ``cktf`` in the other pairs (what adopting it there would change)."""
    recipe = _targets_spec(pair).get("recipe", {}).get("method", "cktf")
    combined = [m for m in methods if is_combined(m)]
    if recipe not in pair["rows"]:
        return {"met": None, "why": f"{recipe} not run"}
    steps = [{"method": m, **stats.compare(pair["rows"][m], pair["rows"][recipe])}
             for m in combined if m in pair["rows"]]
    not_run = [m for m in combined if m not in pair["rows"]]
    short = _short(pair, [recipe, *combined])
    beaten = [s["beyond_one_std"] for s in steps]
    met = False if True in beaten else None if not steps or not_run or None in beaten else True
    ahead = [s for s in steps if s["means_ordered"]]
    elsewhere = {s["method"]: {other["name"]: _difference(other, s["method"], recipe)
                               for other in pairs if other is not pair} for s in ahead}
    return {"met": _provisional(met, short), "method": recipe, "steps": steps, "not_run": not_run, "short": short,
            "ahead": ahead, "elsewhere": elsewhere}


def _difference(pair: dict[str, Any], method: str, recipe: str) -> Optional[dict[str, Any]]:
    """``method`` against ``recipe`` on ``pair`` (``stats.compare``), None when either has not run there."""
    rows = pair["rows"]
    return stats.compare(rows[method], rows[recipe]) if method in rows and recipe in rows else None


def target_ordering(pair: Optional[dict[str, Any]]) -> dict[str, Any]:
    """(c) the protocol's ordering (OFA > KD > CRD) on one pair, each step beyond one std."""
    if pair is None:
        return {"met": None, "why": f"no protocol gives the {ORDERING_PAIR} pair"}
    spec = _targets_spec(pair).get("ordering")
    if not spec:
        return {"met": None, "why": "the protocol states no ordering target"}
    check = stats.ordering_check(list(pair["rows"].values()), spec["order"])
    not_run = [m for m in spec["order"] if m not in pair["rows"]]
    met = stats.all_steps([s["beyond_one_std"] for s in check["steps"]]) if check["steps"] else None
    if met is True and len(check["steps"]) < len(spec["order"]) - 1:  # a method not run
        met = None
    short = _short(pair, spec["order"])
    return {"met": _provisional(met, short), "label": spec["label"], "not_run": not_run, "short": short, **check}


def targets(pairs: list[dict[str, Any]], methods: list[str]) -> dict[str, Any]:
    """Targets (a), (b) per pair and (c) on CNN → ViT, each with an overall verdict (missed in any pair: not met;
    not measured in any: not measured)."""
    a = {p["name"]: target_recipe(p) for p in pairs}
    b = {p["name"]: target_combined(p, pairs, methods) for p in pairs}
    c = target_ordering(next((p for p in pairs if p["name"] == ORDERING_PAIR), None))
    return {
        "a": {"statement": "cktf beats every other single-method row by more than one std, per pair",
              "met": stats.all_steps([r["met"] for r in a.values()]), "per_pair": a},
        "b": {"statement": "no combined row (X+cktf-recipe) beats cktf beyond one std, per pair; where one is ahead, "
                           "its difference to cktf in the other pairs",
              "met": stats.all_steps([r["met"] for r in b.values()]), "per_pair": b},
        "c": {"statement": f"OFA > KD > CRD on {ORDERING_PAIR}, each step beyond one std", **c},
    }


def grid_edges(pairs: list[dict[str, Any]]) -> dict[str, Any]:
    """Per pair, the rows (of its protocol) whose chosen rate still sits at an edge of the rates tried after
    widening, and the rates added at the edges."""
    entries = [(p["name"], g) for p in pairs for m, g in p["grid"].items() if m in p["protocol"].get("methods", [])]
    at_edge: dict[str, list[str]] = {}
    for name, g in entries:
        if g.get("at_edge"):
            at_edge.setdefault(name, []).append(f"{g['method']} ({g['chosen']:g})")
    widened = {f"{g['method']} ({name})": g["widened"] for name, g in entries if g.get("widened")}
    added = sorted({float(lr) for rates in widened.values() for lr in rates})
    return {"rows": len(entries), "at_edge_count": sum(map(len, at_edge.values())), "at_edge": at_edge,
            "widened": widened, "rates_added": added}


# ------------------------------------------------------------------------------------------------ wording
def _step_text(step: dict[str, Any]) -> str:
    a, b = step["a"], step["b"]
    return (f"{step['pair']}: {stats.pct(a['mean'], a['std'] if a['n'] > 1 else None)} vs "
            f"{stats.pct(b['mean'], b['std'] if b['n'] > 1 else None)} ({100 * step['difference']:+.2f} pts, "
            f"{stats.step_outcome(step)})")


def _suffix(result: dict[str, Any]) -> str:
    parts = ([f"not run: {', '.join(result['not_run'])}"] if result.get("not_run") else []) + (
        [f"fewer seeds than asked: {', '.join(result['short'])}"] if result.get("short") else [])
    return f"; {'; '.join(parts)}" if parts else ""


def describe_targets(result: dict[str, Any]) -> list[str]:
    """The targets' lines for the markdown, each verdict with its numbers."""
    a, b, c = result["a"], result["b"], result["c"]
    lines = [f"**(a) {a['statement']}: {VERDICTS[a['met']]}**"]
    for name, r in a["per_pair"].items():
        if "why" in r:
            detail = r["why"]
        elif r["not_beaten"]:
            detail = "not beaten beyond one std: " + "; ".join(_step_text(s) for s in r["not_beaten"])
        else:
            closest = min(r["steps"], key=lambda s: s["difference"])
            detail = f"beats all {len(r['steps'])} rivals that ran; closest: {_step_text(closest)}"
        lines.append(f"- {name}: {VERDICTS[r['met']]} — {detail}{_suffix(r)}")
    lines += ["", f"**(b) {b['statement']}: {VERDICTS[b['met']]}**"]
    for name, r in b["per_pair"].items():
        if "why" in r:
            lines.append(f"- {name}: {VERDICTS[r['met']]} — {r['why']}")
            continue
        detail = ("ahead of cktf: " + "; ".join(_step_text(s) for s in r["ahead"]) if r["ahead"]
                  else f"none of the {len(r['steps'])} combined rows that ran is ahead of cktf")
        lines.append(f"- {name}: {VERDICTS[r['met']]} — {detail}{_suffix(r)}")
        for method, others in r["elsewhere"].items():
            there = [f"{other}: " + (_step_text(d) if d else "not measured") for other, d in others.items()]
            lines.append(f"  - {method} as the default, against cktf in the other pairs (a negative difference is what "
                         f"the default would lose): {'; '.join(there) or 'no other pair'}")
    lines += ["", f"**(c) {c['statement']}: {VERDICTS[c['met']]}**"]
    if "why" in c:
        lines.append(f"- {c['why']}")
    else:
        lines.append(f"- {stats.describe_ordering(c).split(' — ', 1)[-1]}{_suffix(c)}")
    return lines


def describe_grid(edges: dict[str, Any]) -> str:
    if not edges["rows"]:
        return "No grid choice in the results yet."
    added = ", ".join(f"{lr:g}" for lr in edges["rates_added"]) or "none"
    widened = "; ".join(f"{row}: {', '.join(rates)}" for row, rates in edges["widened"].items())
    lines = [f"{edges['at_edge_count']} of {edges['rows']} rows chose a rate still at an edge of the rates tried "
             "after widening" + (":" if edges["at_edge"] else ".")]
    lines += [f"- {pair}: {', '.join(rows)}" for pair, rows in edges["at_edge"].items()]
    return "\n".join(lines) + f"\n\nRates added at the edges: {added}" + (f" ({widened})." if widened else ".")


# ------------------------------------------------------------------------------------------------ the report
def build_report(protocols: list[str], results_dir: str, name: str) -> tuple[dict[str, Any], str]:
    """The JSON payload and the markdown of the cross-architecture report."""
    pairs = load_pairs(protocols, results_dir)
    methods = method_order(pairs)
    result = targets(pairs, methods)
    edges = grid_edges(pairs)
    rows = [{**row, "pair": p["name"]} for p in pairs for row in p["rows"].values()]
    short = report.short_rows(rows, lambda row: next(p for p in pairs if p["name"] == row["pair"])["protocol"]["seeds"],
                              keys=("method", "pair"))
    command = "python benchmarks/cross_arch_report.py" + (
        "" if protocols == DEFAULT_PROTOCOLS else f" --protocols {' '.join(protocols)}") + (
        "" if name == "cross_arch_10k_pairs" else f" --name {name}")
    sources = []
    for p in pairs:
        protocol = p["protocol"]["name"]
        source = (f"`{p['results']}` (`python benchmarks/run.py {protocol} --report_only`)" if p["results"] else
                  f"not run yet: no `{p['expected_file']}` (`python benchmarks/run.py {protocol} --resume`)")
        teacher = (f"teacher {p['teacher']['architecture']} {stats.pct(p['teacher']['test_accuracy'])} %"
                   if p["teacher"] else f"teacher {p['protocol']['teacher']}")
        sources.append(f"- **{p['name']}** ({teacher} → `{p['student']}`): {source}")
    flag = report.describe_short_rows(short)
    markdown = "\n\n".join([
        "# Cross-architecture distillation: every method on three teacher → student pairs (issue 25)",
        "Test top-1 % at the validation-selected epoch, mean ± std over the seeds that ran, with the learning rate "
        "chosen on validation (`at edge`: the choice still sits at an edge of the rates tried after widening); "
        "`—`: not run. Each pair's numbers come from its protocol's results JSON:\n\n" + "\n".join(sources)
        + (f"\n\n**{flag}**" if flag else ""),
        report.markdown_table(*table(pairs, methods)),
        "## Targets\n\n" + "\n".join(describe_targets(result))
        + "\n\n(d), the transfer probe, is the transfer protocol's: `python benchmarks/run.py transfer_cross_arch "
          "--report_only` (`benchmarks/results/transfer_cross_arch.md`).",
        "## Learning-rate grid\n\n" + describe_grid(edges),
        f"Regenerate this report (it trains nothing): `{command}`.",
    ])
    payload = {
        "benchmark": "cross_arch_pairs", "command": command,
        "protocols": [{"name": p["protocol"]["name"], "path": repo_relative(p["protocol"]["path"]),
                       "results": p["results"], "pair": p["name"], "student": p["student"],
                       "teacher": p["teacher"] or None} for p in pairs],
        "methods": methods,
        "table": {m: {p["name"]: _table_entry(p, m) for p in pairs} for m in methods},
        "targets": result, "grid_edges": edges, "fewer_seeds_than_asked": short,
    }
    return payload, markdown


def _table_entry(pair: dict[str, Any], method: str) -> Optional[dict[str, Any]]:
    row = pair["rows"].get(method)
    if row is None:
        return None
    grid = pair["grid"].get(method, {})
    return {key: row[key] for key in ("n", "seeds", "test_mean", "test_std", "val_mean", "learning_rate")
            if key in row} | {"at_edge": grid.get("at_edge"), "widened": grid.get("widened", [])}


def main(argv: Optional[list[str]] = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--protocols", nargs="+", default=DEFAULT_PROTOCOLS,
                        help="compression protocols (names or YAML paths), one column per teacher → student pair")
    parser.add_argument("--name", default="cross_arch_10k_pairs", help="file stem of the report")
    parser.add_argument("--results_dir", default=RESULTS_DIR,
                        help="folder of the protocols' results JSONs, where the report is written")
    args = parser.parse_args(argv)
    payload, markdown = build_report(args.protocols, args.results_dir, args.name)
    paths = report.write_results(args.results_dir, args.name, payload, markdown)
    print(markdown)
    print(f"\nwrote {paths['md']} and {paths['json']}")
    return payload


if __name__ == "__main__":
    main()
