"""Statistics over seeds: mean ± sample std per row (``aggregate``), "a beats b beyond one std" (``compare``) and
orderings of several methods (``ordering_check``), with their wording."""

from __future__ import annotations

from typing import Any, Iterable, Optional

import numpy as np

from cktf_hf.formatting import format_accuracy


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
    """An accuracy (fraction) in a column headed ``%``, with its std: ``"91.23 ± 0.45"``."""
    shown = format_accuracy(mean, percent_sign=False)
    return shown if std is None else f"{shown} ± {format_accuracy(std, percent_sign=False)}"


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
    return (f"{label}{check['order']} ({METRIC_NAMES[check['metric']]}, beyond one std): {verdict} — "
            + "; ".join(parts))
