"""Measuring a model: parameters, weight-file size and CPU forward latency (the distillation objective left out)."""

from __future__ import annotations

import copy
import glob
import os
import platform
import tempfile
import statistics
from dataclasses import dataclass, field
from typing import Any, Optional, Sequence

import torch
from torch import nn

from .attachment import OBJECTIVE_ATTRIBUTE, without_objective

__all__ = ["LatencyTimings", "ModelStats", "count_parameters", "measure_latency", "measure_model", "model_size_bytes",
           "saved_size_bytes", "time_forward_passes"]


@dataclass
class ModelStats:
    """Size and CPU speed of one model: trainable + frozen parameters, weight-file bytes, latency per batch size (empty,
    with ``latency_setup`` ``None``, when latency was not measured) and, per batch size, the lowest and highest of the
    repeated measurements (``latency_range_ms``; empty when not repeated: the latencies are then taken as exact)."""

    parameters: int
    size_bytes: int
    latency_ms: dict[int, float]
    latency_setup: Optional[str]
    latency_range_ms: dict[int, tuple[float, float]] = field(default_factory=dict)


@dataclass
class LatencyTimings:
    """What :func:`time_forward_passes` measured: the median latency per batch size in milliseconds, the range
    (lowest, highest) of the repeated measurements behind it, and a readable description of the set-up."""

    median_ms: dict[int, float]
    range_ms: dict[int, tuple[float, float]]
    setup: str


def count_parameters(model: nn.Module, exclude_prefixes: Sequence[str] = (OBJECTIVE_ATTRIBUTE + ".",)) -> int:
    """Number of parameters of ``model`` (shared ones once), leaving out those under ``exclude_prefixes``."""
    return sum(p.numel() for name, p in model.named_parameters() if not name.startswith(tuple(exclude_prefixes)))


def saved_size_bytes(folder: str | os.PathLike) -> int:
    """Total size of the weight files in a saved model folder: ``*.safetensors`` (or ``*.bin`` when there are none)."""
    files = glob.glob(os.path.join(folder, "*.safetensors")) or glob.glob(os.path.join(folder, "*.bin"))
    if not files:
        raise FileNotFoundError(f"No *.safetensors or *.bin weight file in {folder}.")
    return sum(os.path.getsize(f) for f in files)


def model_size_bytes(model: nn.Module) -> int:
    """On-disk size of ``model.save_pretrained`` (safetensors, current dtype) without the ``cktf_objective`` part."""
    from transformers.utils import logging as hf_logging

    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        with tempfile.TemporaryDirectory(prefix="cktf_size_") as folder, without_objective(model):
            model.save_pretrained(folder)
            return saved_size_bytes(folder)
    finally:
        if bars:
            hf_logging.enable_progress_bar()


def _cpu_name() -> Optional[str]:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return " ".join(line.split(":", 1)[1].split())
    except OSError:
        pass
    return platform.processor() or None


def measure_latency(
    model: nn.Module, pixel_shape: tuple[int, int, int], batch_sizes: Sequence[int] = (1, 32), **timing_kwargs: Any
) -> tuple[dict[int, float], str]:
    """CPU forward latency in milliseconds per batch size and a readable description of the set-up: what
    :func:`time_forward_passes` measures (same keyword arguments: ``min_run_time``, ``num_threads``, ``repeats``),
    without the spread of the repeats."""
    timings = time_forward_passes(model, pixel_shape, batch_sizes, **timing_kwargs)
    return timings.median_ms, timings.setup


def time_forward_passes(
    model: nn.Module,
    pixel_shape: tuple[int, int, int],
    batch_sizes: Sequence[int] = (1, 32),
    min_run_time: float = 0.2,
    num_threads: Optional[int] = None,
    repeats: int = 3,
) -> LatencyTimings:
    """CPU forward latency per batch size, timed ``repeats`` times with ``torch.utils.benchmark``.

    Random ``pixel_values`` of shape ``[batch, *pixel_shape]`` go through ``model(pixel_values=...)`` in eval mode
    under ``torch.inference_mode()``: one warm-up pass, then ``repeats`` times ``Timer.blocked_autorange``, which times
    blocks of passes until ``min_run_time / repeats`` seconds have run (at least one block) and keeps the median time
    per pass. The latency is the median of the repeats, their lowest and highest its range. Each batch size thus costs
    about ``min_run_time`` seconds, or a few passes for a model slower than that. A model on another device or in
    another dtype is measured as a float32 CPU copy, so the numbers are always CPU numbers. The model's training flags
    are left as they were. ``num_threads`` sets torch's intra-op threads for the measurement (default: the current
    setting).
    """
    from torch.utils import benchmark

    if min_run_time <= 0:
        raise ValueError(f"min_run_time must be positive, got {min_run_time}.")
    if repeats < 1:
        raise ValueError(f"repeats must be a positive integer, got {repeats}.")
    if any(int(b) < 1 for b in batch_sizes):
        raise ValueError(f"Latency batch sizes must be positive integers, got {list(batch_sizes)}.")
    on_cpu_fp32 = all(p.device.type == "cpu" and p.dtype == torch.float32 for p in model.parameters())
    if on_cpu_fp32:
        target = model
    else:
        with without_objective(model):
            target = copy.deepcopy(model).cpu().float()
    modes = [(m, m.training) for m in model.modules()]
    generator = torch.Generator().manual_seed(0)
    threads = num_threads or torch.get_num_threads()
    latencies: dict[int, float] = {}
    ranges: dict[int, tuple[float, float]] = {}

    def forward(pixel_values: torch.Tensor) -> None:
        with torch.inference_mode():
            target(pixel_values=pixel_values)

    previous_threads = torch.get_num_threads()
    target.eval()
    try:
        with without_objective(target):
            for batch in batch_sizes:
                pixel_values = torch.randn((int(batch), *pixel_shape), generator=generator)
                timer = benchmark.Timer(stmt="forward(pixel_values)", num_threads=threads,
                                        globals={"forward": forward, "pixel_values": pixel_values})
                timer.timeit(1)  # warm-up (lazy initialisation, allocator)
                medians = [timer.blocked_autorange(min_run_time=min_run_time / repeats).median * 1000.0
                           for _ in range(repeats)]
                latencies[int(batch)] = statistics.median(medians)
                ranges[int(batch)] = (min(medians), max(medians))
    finally:
        for module, training in modes:
            module.training = training
        torch.set_num_threads(previous_threads)
    cpu = _cpu_name()
    setup = (
        f"CPU{f' ({cpu})' if cpu else ''}, {threads} thread{'s' if threads != 1 else ''}, torch {torch.__version__}, "
        f"float32, median per pass of torch.utils.benchmark's blocked_autorange (at least {min_run_time:g} s per "
        f"batch size, after a warm-up pass; the median of {repeats} repeats, their range in brackets), input "
        f"{'×'.join(str(d) for d in pixel_shape)}"
    )
    return LatencyTimings(latencies, ranges, setup)


def measure_model(
    model: nn.Module, pixel_shape: tuple[int, int, int], batch_sizes: Sequence[int] = (1, 32), **latency_kwargs: Any
) -> ModelStats:
    """Parameters, on-disk size and CPU latency of ``model`` (the ``cktf_objective`` part left out); no
    ``batch_sizes`` (empty) measures no latency (``latency_ms`` empty, ``latency_setup`` ``None``)."""
    if not batch_sizes:
        return ModelStats(count_parameters(model), model_size_bytes(model), {}, None)
    timings = time_forward_passes(model, pixel_shape, batch_sizes, **latency_kwargs)
    return ModelStats(count_parameters(model), model_size_bytes(model), timings.median_ms, timings.setup,
                      timings.range_ms)
