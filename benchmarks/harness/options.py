"""The command-line options every benchmark shares (--resume, --report_only, --set, --device, --jobs, --threads) and
the parsing of list and override values."""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

import torch

from cktf_hf import ContrastiveDistillationConfig

from .pool import default_jobs


def resolve_device(device: str) -> str:
    """``auto`` → ``cuda`` when available, else ``cpu``."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit(f"--device {device}: CUDA is not available on this machine.")
    return device


def add_run_options(parser: Any) -> None:
    """The options every benchmark shares: --resume, --report_only, --set, --device, --jobs, --threads."""
    parser.add_argument("--resume", action="store_true",
                        help="Reuse the finished runs in <output>/<name>.runs.jsonl (written as each run ends) and run "
                             "only the missing ones.")
    parser.add_argument("--report_only", action="store_true",
                        help="Run nothing: write the results from the finished runs in <output>/<name>.runs.jsonl "
                             "(a row with fewer seeds than the protocol asks is flagged).")
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
