"""Benchmark protocols: one YAML file per protocol under ``benchmarks/protocols/`` (students, teachers, methods,
budget, grid, seeds, targets), checked when it is read: an unknown key is refused with the nearest known one.

A protocol gives every setting of a benchmark's run; a command-line option given explicitly overrides it (e.g.
``--jobs``; ``--set`` adds config overrides on top of the protocol's ``overrides``).
"""

from __future__ import annotations

import difflib
import os
from typing import Any

import yaml

from .paths import PROTOCOLS_DIR

COMMON = {
    "name": "file stem of the journal and reports", "benchmark": "compression or transfer",
    "description": "what the protocol measures", "mode": "full or quick (a check of the machinery)",
    "teacher": "folder (relative to the repository) or Hub id", "seeds": "list of seeds",
    "methods": "rows, each a library preset", "overrides": "config fields set on every run",
    "budget": "images and schedule", "targets": "the targets the report states",
}
KEYS = {
    "compression": {**COMMON, "students": "student rows", "grid": "learning-rate grid",
                    "teacher_cache": "folder of the teacher-output cache ('' for none)",
                    "save_students": "folder for the final students ('' not to save them)"},
    "transfer": {**COMMON, "student": "the protocol part's student", "references": "probe-only rows",
                 "compression_results": "a compression report whose saved students are probed ('' for none)",
                 "compression_methods": "its rows to probe (empty: all)"},
}
BUDGET = {
    "compression": ("train_images", "val_images", "test_images", "epochs", "batch_size", "nce_k"),
    "transfer": ("train_images", "probe_val_images", "test_images", "epochs", "probe_epochs", "batch_size",
                 "learning_rate", "probe_learning_rate", "nce_k"),
}
GRID = ("learning_rates", "widen_at_edges", "rates_chosen_in")
TARGETS = {"compression": ("min_teacher_gap", "recipe", "ordering", "combined"), "transfer": ()}
TARGET_FIELDS = {"recipe": ("method", "rivals"), "ordering": ("label", "order"),
                 "combined": ("needed", "counted", "pairs")}
REQUIRED = ("name", "benchmark", "seeds")


class ProtocolError(SystemExit):
    """A protocol file that cannot be read as one (a clear message, no traceback, when it ends the script)."""


def protocol_path(name_or_path: str) -> str:
    """A protocol's file: a path as given, or ``benchmarks/protocols/<name>.yaml``."""
    if os.path.isfile(name_or_path) or name_or_path.endswith((".yaml", ".yml")):
        return name_or_path
    return os.path.join(PROTOCOLS_DIR, f"{name_or_path}.yaml")


def load_protocol(name_or_path: str) -> dict[str, Any]:
    """The protocol in a YAML file (or ``benchmarks/protocols/<name>.yaml``), its keys checked."""
    path = protocol_path(name_or_path)
    if not os.path.isfile(path):
        known = sorted(f[:-5] for f in os.listdir(PROTOCOLS_DIR) if f.endswith(".yaml"))
        raise ProtocolError(f"No protocol file {path}; the protocols are {', '.join(known)}.")
    with open(path, encoding="utf-8") as f:
        try:
            protocol = yaml.safe_load(f)
        except yaml.YAMLError as error:
            raise ProtocolError(f"{path}: not valid YAML ({error}).") from None
    if not isinstance(protocol, dict):
        raise ProtocolError(f"{path}: a protocol is a mapping of keys (name, benchmark, seeds, ...).")
    missing = [key for key in REQUIRED if key not in protocol]
    if missing:
        raise ProtocolError(f"{path}: missing {', '.join(missing)}.")
    kind = protocol["benchmark"]
    if kind not in KEYS:
        raise ProtocolError(f"{path}: benchmark {kind!r} is none of {', '.join(KEYS)}.")
    _check_keys(path, "", protocol, KEYS[kind])
    _check_keys(path, "budget.", protocol.get("budget") or {}, BUDGET[kind])
    _check_keys(path, "grid.", protocol.get("grid") or {}, GRID)
    targets = protocol.get("targets") or {}
    _check_keys(path, "targets.", targets, TARGETS[kind])
    for key, fields in TARGET_FIELDS.items():
        _check_keys(path, f"targets.{key}.", targets.get(key) or {}, fields)
    _check_list(path, "seeds", protocol["seeds"], int, empty=False)
    for key in ("methods", "students", "references", "compression_methods"):
        if key in protocol:
            _check_list(path, key, protocol[key], str)
    _check_list(path, "grid.learning_rates", (protocol.get("grid") or {}).get("learning_rates", [1.0]), float,
                empty=False)
    chosen_in = (protocol.get("grid") or {}).get("rates_chosen_in")
    if chosen_in is not None and (not isinstance(chosen_in, str) or "learning_rates" in protocol["grid"]):
        raise ProtocolError(f"{path}: grid.rates_chosen_in names the compression protocol whose chosen rates every "
                            f"row reuses, instead of grid.learning_rates; got {chosen_in!r}"
                            + (" beside learning_rates." if isinstance(chosen_in, str) else "."))
    widen = (protocol.get("grid") or {}).get("widen_at_edges", 0)
    if isinstance(widen, bool) or not isinstance(widen, int) or widen < 0:
        raise ProtocolError(f"{path}: grid.widen_at_edges is how many times a side of the grid may be widened, a "
                            f"whole number 0 or more; got {widen!r}.")
    for key, value in (protocol.get("budget") or {}).items():
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ProtocolError(f"{path}: budget.{key} must be a number, got {value!r}.")
    return {**protocol, "path": path}


def _check_list(path: str, key: str, value: Any, kind: type, empty: bool = True) -> None:
    """``value`` a list of ``kind`` (ints count as floats); ``1e-3`` without a dot is a string to YAML."""
    kinds = (int, float) if kind is float else kind
    if not isinstance(value, list) or (not empty and not value) or not all(
            isinstance(item, kinds) and not isinstance(item, bool) for item in value):
        hint = " (YAML reads 1e-3 as text: write 1.0e-3)" if kind is float else ""
        raise ProtocolError(f"{path}: {key} must be a {'non-empty ' if not empty else ''}list of "
                            f"{kind.__name__}s{hint}, got {value!r}.")


def _check_keys(path: str, prefix: str, mapping: Any, known: Any) -> None:
    if not isinstance(mapping, dict):
        raise ProtocolError(f"{path}: {prefix.rstrip('.')} must be a mapping, got {mapping!r}.")
    for key in mapping:
        if key not in known:
            close = difflib.get_close_matches(str(key), list(known), n=1)
            hint = f"did you mean {prefix}{close[0]}? " if close else ""
            raise ProtocolError(f"{path}: unknown key {prefix}{key}; {hint}known: {', '.join(known)}.")
