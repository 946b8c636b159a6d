"""Numbers, sizes and times as people read them: the model card's formatting, for any summary to reuse."""

from __future__ import annotations

from typing import Any

__all__ = [
    "format_accuracy",
    "format_bytes",
    "format_count",
    "format_duration",
    "format_epochs",
    "format_ms",
    "format_ratio",
    "format_shape",
    "format_value",
]


def format_count(n: int) -> str:
    """``85806346`` → ``"85,806,346 (85.8M)"``; ``950`` → ``"950"``."""
    for scale, unit in ((1e9, "B"), (1e6, "M"), (1e3, "K")):
        if n >= scale:
            return f"{n:,} ({n / scale:.1f}{unit})"
    return f"{n:,}"


def format_bytes(n: int) -> str:
    """Binary units: ``343_000_000`` → ``"327.1 MiB"``."""
    value = float(n)
    for unit in ("B", "KiB", "MiB"):
        if value < 1024:
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GiB"


def format_ms(ms: float) -> str:
    """Milliseconds: 2 decimals under 10, 1 under 100, else 0: ``0.4321`` → ``"0.43"``, ``123.4`` → ``"123"``."""
    return f"{ms:.2f}" if ms < 10 else f"{ms:.1f}" if ms < 100 else f"{ms:.0f}"


def format_ratio(numerator: float, denominator: float) -> str:
    """``teacher / student`` as ``"3.52×"`` (``"11.6×"`` from 10 up)."""
    ratio = numerator / denominator
    return f"{ratio:.2f}×" if ratio < 10 else f"{ratio:.1f}×"


def format_duration(seconds: float) -> str:
    """Wall time: ``4.45`` → ``"4.5 s"``, ``252`` → ``"4 min 12 s"``, ``3725`` → ``"1 h 02 min"``."""
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes = int(round(seconds)) // 60
    if minutes < 60:
        return f"{minutes} min {int(round(seconds)) % 60:02d} s"
    return f"{minutes // 60} h {minutes % 60:02d} min"


def format_accuracy(value: float) -> str:
    """A fraction (or a percentage above 1) as ``"91.23%"``."""
    return f"{100 * value:.2f}%" if value <= 1 else f"{value:.2f}%"


def format_epochs(epochs: float) -> str:
    """``2.0`` → ``"2"``, ``1.50`` → ``"1.5"``."""
    return f"{epochs:.2f}".rstrip("0").rstrip(".")


def format_shape(shape: Any) -> str:
    """``[17, 32]`` → ``"17×32"``; anything else as ``str``."""
    if isinstance(shape, (list, tuple)):
        return "×".join(str(d) for d in shape)
    return str(shape)


def format_value(value: Any) -> str:
    """A setting's value: booleans as yes/no, integers with thousands separators, floats short, dicts as k=v."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, dict):
        return ", ".join(f"{k}={format_value(v)}" for k, v in value.items())
    return str(value)
