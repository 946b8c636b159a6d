"""Reports: markdown and console tables, the result files (``<name>.json``, ``<name>.md``), the environment a report
was written with, and the flag on rows that have fewer seeds than their protocol asks."""

from __future__ import annotations

import json
import os
from typing import Any, Callable

import torch


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def text_table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(c)) for c in col) for col in zip(header, *rows)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    return "\n".join([fmt.format(*header), fmt.format(*("-" * w for w in widths))]
                     + [fmt.format(*(str(c) for c in row)) for row in rows])


def write_results(output_dir: str, name: str, payload: dict[str, Any], markdown: str) -> dict[str, str]:
    """Write ``<name>.json`` and ``<name>.md``; return the paths (the PNG is drawn by the caller's figure)."""
    os.makedirs(output_dir, exist_ok=True)
    paths = {"json": os.path.join(output_dir, f"{name}.json"), "md": os.path.join(output_dir, f"{name}.md"),
             "png": os.path.join(output_dir, f"{name}.png")}
    with open(paths["json"], "w") as f:
        json.dump(payload, f, indent=2)
        f.write("\n")
    with open(paths["md"], "w") as f:
        f.write(markdown.rstrip() + "\n")
    return paths


def environment() -> dict[str, Any]:
    """The versions and hardware a report was written with."""
    import platform

    import transformers

    return {"python": platform.python_version(), "torch": torch.__version__, "transformers": transformers.__version__,
            "torch_threads": torch.get_num_threads(), "cpu_count": os.cpu_count(),
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}


def short_rows(rows: list[dict[str, Any]], asked: Callable[[dict[str, Any]], list[int]],
               keys: tuple[str, ...] = ("method", "student")) -> list[dict[str, Any]]:
    """The aggregate rows with fewer seeds than asked (``asked(row)``: the seeds its protocol asks for), each named by
    its ``keys`` with the seeds it has and those missing (for the JSON and the flag)."""
    short = []
    for row in rows:
        wanted = asked(row)
        missing = [seed for seed in wanted if seed not in row["seeds"]]
        if missing:
            short.append({"row": " / ".join(str(row[k]) for k in keys), "seeds": row["seeds"], "asked": wanted,
                          "missing": missing})
    return short


def describe_short_rows(short: list[dict[str, Any]]) -> str:
    """One sentence flagging the rows with fewer seeds than asked ('' when there are none)."""
    if not short:
        return ""
    parts = [f"{s['row']} ({len(s['seeds'])} of {len(s['asked'])}: seed(s) {', '.join(map(str, s['missing']))} "
             "missing)" for s in short]
    return (f"FEWER SEEDS THAN THE PROTOCOL ASKS in {len(short)} row(s); their mean ± std is not comparable with the "
            f"others: {'; '.join(parts)}.")


def seeds_mark(row: dict[str, Any], asked: int) -> str:
    """`` (n of N seeds)`` after a table cell whose row has fewer seeds than asked, else ''."""
    return f" ({row['n']} of {asked} seeds)" if row["n"] < asked else ""
