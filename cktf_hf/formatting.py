"""Numbers, sizes and times as people read them: the model card's formatting, for any summary to reuse."""

from __future__ import annotations

from typing import Any, Literal, Optional

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


def format_count(n: int, style: Literal["both", "exact", "millions"] = "both") -> str:
    """``85806346`` → ``"85,806,346 (85.8M)"``; ``950`` → ``"950"``. ``style="exact"`` keeps the first part
    (``"85,806,346"``), ``style="millions"`` writes millions with two decimals (``214_000`` → ``"0.21M"``)."""
    if style == "exact":
        return f"{n:,}"
    if style == "millions":
        return f"{n / 1e6:.2f}M"
    if style != "both":
        raise ValueError(f"style must be 'both', 'exact' or 'millions', got {style!r}.")
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


def format_ratio(numerator: float, denominator: float = 1.0) -> str:
    """``teacher / student`` as ``"3.52×"`` (``"11.6×"`` from 10 up); a ratio already worked out is
    ``format_ratio(ratio)``."""
    ratio = numerator / denominator
    return f"{ratio:.2f}×" if ratio < 10 else f"{ratio:.1f}×"


_DURATION_UNITS = {"s": (1, "{:.0f} s"), "min": (60, "{:.1f} min"), "hours": (3600, "{:.1f} hours")}


def format_duration(seconds: float, unit: Optional[Literal["s", "min", "hours"]] = None) -> str:
    """Wall time: ``4.45`` → ``"4.5 s"``, ``252`` → ``"4 min 12 s"``, ``3725`` → ``"1 h 02 min"``; in one ``unit``
    (a table column, a total): ``"s"`` → ``"252 s"``, ``"min"`` → ``"4.2 min"``, ``"hours"`` → ``"1.0 hours"``."""
    if unit is not None:
        if unit not in _DURATION_UNITS:
            raise ValueError(f"unit must be one of {sorted(_DURATION_UNITS)} or None, got {unit!r}.")
        scale, pattern = _DURATION_UNITS[unit]
        return pattern.format(seconds / scale)
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes = int(round(seconds)) // 60
    if minutes < 60:
        return f"{minutes} min {int(round(seconds)) % 60:02d} s"
    return f"{minutes // 60} h {minutes % 60:02d} min"


def format_accuracy(value: float, percent_sign: bool = True) -> str:
    """A fraction (or a percentage above 1) as ``"91.23%"``; ``percent_sign=False`` for a column headed ``%``
    (``"91.23"``)."""
    percent = f"{100 * value:.2f}" if value <= 1 else f"{value:.2f}"
    return percent + "%" if percent_sign else percent


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
