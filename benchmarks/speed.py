"""Step time and peak memory of each distillation method, and of the contrastive loss alone, with the targets.

Training step (``--scale demo``, the default): the demo's pair (the shipped Fashion-MNIST ResNet teacher → a
``cktf-vit-tiny:patch=7`` student, 28 px, as ``examples/distill_vit.py`` builds it), batch 64, the real Fashion-MNIST
training set (so the memory banks have N = 60,000 rows), for: the student alone (CE), KD on logits, the default
``cktf`` preset, CKTF with in-batch negatives, CKTF with the memory bank (per-sample negatives, the reference, and
negatives shared by the batch) at K = 4096 and K = 16384, with float32 and bfloat16 banks, CKTF (shared, K = 4096)
with the teacher-output cache, and the same at N = 600,000 (the training set repeated 10 times: a synthetic bank ten
times larger). Each configuration runs in its own process (so its peak resident memory is its own); the step time
is the median wall time between consecutive optimizer steps after warm-up, data loading included. The
configurations run ``--rounds`` times, interleaved, so that contention from other processes hits them alike; a
ratio is the median over rounds of the ratio within each round. Then every configuration is timed once more, each
in its own process but all at once, taking one optimizer step each in turn (``--alternating_steps``,
:mod:`harness.alternating`): the i-th steps of all configurations run seconds apart, so the median of their
step-by-step ratios cancels the drift from one process to the next (tens of percent on a shared 2-core machine) that
the per-round ratios keep. The targets read these ratios.

Loss alone: forward + backward of both directions of the bank NCE (``MemoryBankNCELoss``), per-sample and shared
negatives, against the reference formulation (gather the ``[B, K+1, D]`` bank rows, ``bmm``), each point in its own
process for its peak memory (CPU: peak RSS increase over one call; CUDA: peak allocated over what was allocated).

``--scale real``: the sizes users distil, with random weights built from configs (nothing downloaded) and random
224-px images: a ViT-B/16 teacher → ViT-S/16 and DeiT-Ti-sized students, a ResNet-50 teacher → a DeiT-Ti-sized
student (1,000 classes), for the student alone, KD, DIST, FitNets, the default ``cktf`` and the bank (shared,
K = 16,384, N = 50,000); ms/step, images/s, peak memory and the ratios to KD. fp32 with batch 8 on CPU (5 minutes a
round on 2 cores), bf16 autocast with batch 256 on a GPU (``benchmarks/speed_gpu.sh``). The report is written
after every scenario, so a run cut short keeps what it measured; ``--tiny`` shrinks the architectures (2 layers,
32 px) for a dry run of the command on any machine.

The targets (issues 13 and 29) are checked at the end of the table: met or not met.

    python benchmarks/speed.py                # demo scale: 20 timed steps per configuration, 3 rounds, then 60
                                              # steps of each in turn
    python benchmarks/speed.py --quick        # 8 timed steps, 1 round, fewer loss-alone points
    python benchmarks/speed.py --scale real   # the real sizes (CPU: batch 8, fp32)
    sh benchmarks/speed_gpu.sh                # the real sizes on a GPU, bf16, batch 256
    sh benchmarks/speed_gpu.sh --device cpu --tiny --output /tmp/speed   # its dry run on a CPU (tiny models)
Writes benchmarks/results/speed.json and speed.md (``--name`` changes the stem; ``--scale real``: speed_real).
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from typing import Optional

import torch
import torch.nn.functional as F

from cktf_hf.formatting import format_accuracy, format_count, format_ms, format_ratio

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
TEACHER = os.path.join(ROOT, "examples", "teachers", "fashion-mnist-resnet")

DEMO_STUDENT = "cktf-vit-tiny:patch=7"  # examples/distill_vit.py's default student
STUDENT, KD = "student alone (CE)", "KD"
DEFAULT = "CKTF default (preset cktf)"
SHARED_4096, SHARED_16384 = "CKTF bank K=4096, shared", "CKTF bank K=16384, shared"
CACHED = "CKTF bank K=4096, shared + teacher cache"
BIG_N = "CKTF bank K=4096, shared, N=600,000"
PER_SAMPLE = {"negative_sampling": "per_sample"}
SHARED = {"negative_sampling": "shared"}
CONFIGS = {
    STUDENT: {"preset": "scratch"},
    KD: {"preset": "kd"},
    DEFAULT: {"preset": "cktf"},
    "CKTF in-batch": {"preset": "cktf-reference", "negatives": "in_batch"},
    "CKTF bank K=4096, per-sample (reference)": {"preset": "cktf-reference", "nce_k": 4096, **PER_SAMPLE},
    "CKTF bank K=16384, per-sample (reference)": {"preset": "cktf-reference", "nce_k": 16384, **PER_SAMPLE},
    SHARED_4096: {"preset": "cktf-reference", "nce_k": 4096, **SHARED},
    SHARED_4096 + ", bf16 banks": {"preset": "cktf-reference", "nce_k": 4096, **SHARED, "bank_dtype": "bfloat16"},
    SHARED_4096 + ", bf16 products": {"preset": "cktf-reference", "nce_k": 4096, **SHARED,
                                      "bank_products": "bfloat16"},
    SHARED_16384: {"preset": "cktf-reference", "nce_k": 16384, **SHARED},
    CACHED: {"preset": "cktf-reference", "nce_k": 4096, **SHARED, "teacher_cache_dir": "CACHE"},
    BIG_N: {"preset": "cktf-reference", "nce_k": 4096, **SHARED, "repeat_data": 10},
    BIG_N + ", bf16 banks": {"preset": "cktf-reference", "nce_k": 4096, **SHARED, "bank_dtype": "bfloat16",
                             "repeat_data": 10},
}
LOSS_CHECK_K = 16384


REAL_BANK = "CKTF bank K=16384, shared"
REAL_CONFIGS = {
    STUDENT: {"preset": "scratch"},
    KD: {"preset": "kd"},
    "DIST": {"preset": "dist"},
    "FitNets": {"preset": "fitnets"},
    DEFAULT: {"preset": "cktf"},
    REAL_BANK: {"preset": "cktf-reference", "nce_k": 16384, **SHARED},
}
REAL_SCENARIOS = ("ViT-B/16 → ViT-S/16", "ViT-B/16 → DeiT-Ti", "ResNet-50 → DeiT-Ti")
REAL_NUM_SAMPLES = 50_000  # bank rows (the shared-negative step does not depend on N, see the demo table)


def real_configs(scenario: str, tiny: bool = False) -> tuple:
    """``(teacher, student)`` configs of a real-scale scenario: 1,000 classes, 224 px; with ``tiny``, the same
    architectures shrunk to a few layers at 32 px (the tests' path through the same code)."""
    from transformers import ResNetConfig, ViTConfig

    classes = 10 if tiny else 1000
    image, patch = (32, 16) if tiny else (224, 16)

    def vit(hidden: int, heads: int) -> ViTConfig:
        layers = 2 if tiny else 12
        hidden, heads = (hidden // 12, 2) if tiny else (hidden, heads)
        return ViTConfig(image_size=image, patch_size=patch, hidden_size=hidden, num_hidden_layers=layers,
                         num_attention_heads=heads, intermediate_size=4 * hidden, num_labels=classes)

    teacher_name, student_name = scenario.split(" → ")
    if teacher_name == "ResNet-50":
        depths, widths = ([1, 1], [32, 64]) if tiny else ([3, 4, 6, 3], [256, 512, 1024, 2048])
        teacher = ResNetConfig(layer_type="bottleneck", depths=depths, hidden_sizes=widths,
                               embedding_size=16 if tiny else 64, num_labels=classes)
    else:
        teacher = vit(768, 12)  # ViT-B/16
    return teacher, vit(384, 6) if student_name == "ViT-S/16" else vit(192, 3)  # ViT-S/16, DeiT-Ti


class SyntheticImages(torch.utils.data.Dataset):
    """``size`` examples of random ``[3, image, image]`` pixels (a pool of 64, reused) and labels; map-style, so the
    bank has ``size`` rows."""

    def __init__(self, size: int, image: int, classes: int) -> None:
        g = torch.Generator().manual_seed(0)
        self.pool = torch.randn(64, 3, image, image, generator=g)
        self.labels = torch.randint(0, classes, (size,), generator=g)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict:
        return {"pixel_values": self.pool[i % 64], "labels": int(self.labels[i])}


def _trainer(student, teacher_model, train, eval_data, config: dict, max_steps: int, batch_size: int, device: str,
             bf16: bool, cache_dir: str, callbacks: list, workers: int = 0):
    """A :class:`ContrastiveDistillationTrainer` for ``max_steps`` timed steps (no saving, logging or evaluation)."""
    from cktf_hf import ContrastiveDistillationConfig, ContrastiveDistillationTrainer

    args = ContrastiveDistillationConfig(
        output_dir=os.path.join(cache_dir, "out"), per_device_train_batch_size=batch_size,
        max_steps=max_steps, learning_rate=1e-3, logging_steps=10_000, save_strategy="no", report_to="none",
        disable_tqdm=True, use_cpu=device == "cpu", bf16=bf16, dataloader_num_workers=workers, **config,
    )
    return ContrastiveDistillationTrainer(model=student, args=args, teacher_model=teacher_model,
                                          train_dataset=train, eval_dataset=eval_data, callbacks=callbacks)


def _time_training(student, teacher_model, train, eval_data, config: dict, steps: int, warmup: int, batch_size: int,
                   device: str, bf16: bool, cache_dir: str, eval_samples: int = 0, workers: int = 0) -> dict:
    """Train ``student`` for ``warmup + steps`` steps in this process; its median step time and peak memory."""
    from transformers import TrainerCallback

    class StepTimer(TrainerCallback):
        def __init__(self) -> None:
            self.ends: list[float] = []

        def on_step_end(self, args, state, control, **kwargs):
            if device == "cuda":
                torch.cuda.synchronize()
            self.ends.append(time.perf_counter())

    timer = StepTimer()
    trainer = _trainer(student, teacher_model, train, eval_data, config, warmup + steps, batch_size, device, bf16,
                       cache_dir, [timer], workers)
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    trainer.train()
    durations = [b - a for a, b in zip(timer.ends[warmup:], timer.ends[warmup + 1:])]
    peak = (torch.cuda.max_memory_allocated() if device == "cuda"
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
    result = {"median_step_s": statistics.median(durations), "steps_timed": len(durations), "peak_memory_bytes": peak,
              "memory_kind": "CUDA max allocated" if device == "cuda" else "peak RSS of the process",
              "num_samples": len(train), "images_per_s": batch_size / statistics.median(durations)}
    if eval_samples:
        result["accuracy"] = trainer.evaluate()["eval_accuracy"]
        result["train_steps"] = warmup + steps
    return result


def _demo_parts(name: str, cache_dir: str, eval_samples: int = 0) -> tuple:
    """The student, training set, test subset and trainer options of one demo-scale configuration (:data:`CONFIGS`)."""
    from transformers import AutoConfig, AutoImageProcessor, AutoModelForImageClassification

    from cktf_hf.demo import load_fashion_mnist, student_config
    from cktf_hf.transforms import ImageClassificationTransform
    from datasets import concatenate_datasets

    processor = AutoImageProcessor.from_pretrained(TEACHER)
    data = load_fashion_mnist()
    config = {k: (cache_dir if v == "CACHE" else v) for k, v in CONFIGS[name].items()}
    train = data["train"]
    if config.get("repeat_data", 1) > 1:  # a synthetic dataset (and bank) of repeat_data × 60,000 rows
        train = concatenate_datasets([train] * config.pop("repeat_data"))
    train = train.with_transform(ImageClassificationTransform(processor))
    test = data["test"].select(range(eval_samples)).with_transform(ImageClassificationTransform(processor))
    torch.manual_seed(0)  # the same student in every configuration
    student_cfg = student_config(DEMO_STUDENT, AutoConfig.from_pretrained(TEACHER), 28)
    student = AutoModelForImageClassification.from_config(student_cfg)
    return student, train, test, {"teacher": TEACHER, **config}


def run_config(name: str, steps: int, warmup: int, batch_size: int, device: str, bf16: bool, cache_dir: str,
               eval_samples: int = 0) -> dict:
    """Train one demo-scale configuration for ``warmup + steps`` steps in this process; return its timings and memory
    (and the accuracy on the first ``eval_samples`` test images when asked)."""
    student, train, test, config = _demo_parts(name, cache_dir, eval_samples)
    return _time_training(student, None, train, test, config, steps, warmup, batch_size, device, bf16, cache_dir,
                          eval_samples)


def _demo_trainer(name: str, max_steps: int, batch_size: int, device: str, bf16: bool, cache_dir: str,
                  threads: int):
    """A trainer of one demo-scale configuration (:data:`CONFIGS`) for ``max_steps`` steps, in ``cache_dir``."""
    torch.set_num_threads(threads)
    student, train, _, config = _demo_parts(name, cache_dir)
    return _trainer(student, None, train, None, config, max_steps, batch_size, device, bf16, cache_dir, [])


def run_alternating(names: list[str], steps: int, warmup: int, batch_size: int, device: str, bf16: bool,
                    cache_dir: str) -> dict:
    """Every demo-scale configuration of ``names`` in its own process, one step each in turn
    (:mod:`harness.alternating`): each one's step times in ms after ``warmup`` steps and its peak memory."""
    from harness.alternating import time_alternating

    builders = {name: functools.partial(_demo_trainer, name, warmup + steps, batch_size, device, bf16,
                                        os.path.join(cache_dir, f"alternating-{i}"),  # never two runs in one folder
                                        torch.get_num_threads())
                for i, name in enumerate(names)}
    timed = time_alternating(builders, warmup, torch.cuda.synchronize if device == "cuda" else None)
    return {"steps_timed": steps, "step_ms": {name: [d * 1000 for d in row["step_s"]] for name, row in timed.items()},
            "peak_memory_bytes": {name: row["peak_memory_bytes"] for name, row in timed.items()}}


def run_real_config(name: str, scenario: str, steps: int, warmup: int, batch_size: int, device: str, bf16: bool,
                    cache_dir: str, tiny: bool = False) -> dict:
    """One real-scale configuration (:data:`REAL_CONFIGS`) of one scenario (:data:`REAL_SCENARIOS`) in this process."""
    from transformers import AutoModelForImageClassification

    torch.manual_seed(0)
    teacher, student = (AutoModelForImageClassification.from_config(c) for c in real_configs(scenario, tiny))
    train = SyntheticImages(512 if tiny else REAL_NUM_SAMPLES, student.config.image_size, student.config.num_labels)
    config = dict(REAL_CONFIGS[name])
    if tiny and "nce_k" in config:
        config["nce_k"] = 64
    workers = 4 if device == "cuda" else 0
    return _time_training(student, teacher, train, None, config, steps, warmup, batch_size, device, bf16, cache_dir,
                          workers=workers)


LOSS_FORMULATIONS = ("per_sample", "shared", "reference")


def loss_point(formulation: str, batch: int, k: int, num_samples: int, device: str, repeats: int) -> dict:
    """Forward + backward of both bank directions in one formulation: median time and peak extra memory.

    ``per_sample`` and ``shared`` are ``MemoryBankNCELoss`` with per-sample (``[B, K+1]``) and shared (``[K]``, with
    a class mask) negatives; ``reference`` is RepDistiller's ContrastMemory: gather ``[B, K+1, D]`` rows, ``bmm``.
    """
    from cktf_hf.objectives.contrastive import MemoryBankNCELoss, nce_loss

    torch.manual_seed(0)
    loss_fn = MemoryBankNCELoss(num_samples, 128, k, 0.1).to(device)
    v_s = F.normalize(torch.randn(batch, 128, device=device), dim=1).requires_grad_()
    v_t = F.normalize(torch.randn(batch, 128, device=device), dim=1).requires_grad_()
    index = torch.randperm(num_samples, device=device)[:batch]
    idx = torch.cat([index[:, None], torch.randint(0, num_samples, (batch, k), device=device)], 1)
    negatives = torch.randint(0, num_samples, (k,), device=device)
    labels = torch.randint(0, 10, (num_samples,), device=device)
    mask = labels[negatives][None, :] != labels[index][:, None]

    def per_sample() -> None:
        loss_fn(v_s, v_t, index, idx).backward()

    def shared() -> None:
        loss_fn(v_s, v_t, index, negatives, mask).backward()

    def reference() -> None:
        w_t = loss_fn.memory_teacher[idx.view(-1)].view(batch, k + 1, 128)
        w_s = loss_fn.memory_student[idx.view(-1)].view(batch, k + 1, 128)
        e_s = torch.exp(torch.bmm(w_t, v_s.unsqueeze(2)).squeeze(2) / 0.1)
        e_t = torch.exp(torch.bmm(w_s, v_t.unsqueeze(2)).squeeze(2) / 0.1)
        if loss_fn.z_student < 0:
            loss_fn.z_student.fill_(e_s.mean().item() * num_samples)
            loss_fn.z_teacher.fill_(e_t.mean().item() * num_samples)
        loss = nce_loss(e_s / loss_fn.z_student.float(), num_samples)
        (loss + nce_loss(e_t / loss_fn.z_teacher.float(), num_samples)).backward()

    fn = {"per_sample": per_sample, "shared": shared, "reference": reference}[formulation]
    if device == "cuda":
        torch.cuda.synchronize()
        before = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
    else:
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    fn()
    if device == "cuda":
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated() - before
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - before
    return {"formulation": formulation, "batch_size": batch, "nce_k": k, "num_samples": num_samples,
            "ms": _time_ms(fn, device, repeats), "peak_extra_memory_bytes": peak}


def _time_ms(fn, device: str, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        if device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device == "cuda":
            torch.cuda.synchronize()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def machine(device: str) -> str:
    if device == "cuda":
        return f"{torch.cuda.get_device_name()} (CUDA), torch {torch.__version__}"
    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores, {torch.get_num_threads()} " \
           f"torch threads, torch {torch.__version__}"


def _ratio(steps: dict, name: str, base: str) -> float:
    """Median over rounds of ``name``'s step time over ``base``'s in the same round."""
    return statistics.median(a["median_step_s"] / b["median_step_s"]
                             for a, b in zip(steps[name]["rounds"], steps[base]["rounds"]))


def _target_ratio(result: dict, name: str, base: str) -> Optional[float]:
    """``name``'s step time over ``base``'s for a target: step by step (one step each in turn) when that was measured
    (:func:`harness.alternating.paired_ratio`, steadier), else the per-round ratio (:func:`_ratio`); None when
    either was not measured."""
    from harness.alternating import paired_ratio

    alternating = (result.get("alternating") or {}).get("step_ms", {})
    if name in alternating and base in alternating:
        return paired_ratio(alternating, name, base)
    steps = result["steps"]
    return _ratio(steps, name, base) if name in steps and base in steps else None


def _times(steps: dict, name: str, base: str) -> str:
    """A table cell: ``name``'s step time as a multiple of ``base``'s (:func:`_ratio`); ``–`` without ``base``."""
    return f"{_ratio(steps, name, base):.2f}" if base in steps else "–"


def _mib(n_bytes: float) -> str:
    """A table cell in whole MiB (the tables' "MB")."""
    return f"{n_bytes / 2**20:.0f}"


def checks(result: dict) -> list[dict]:
    """The targets of issues 29 and 13, each with its measured value and whether it was met."""
    out = []

    def add(target: str, value: float, met: bool, shown: str) -> None:
        out.append({"target": target, "value": round(value, 4), "met": bool(met), "measured": shown})

    for name, limit, issue in ((DEFAULT, 1.25, " (issue 29)"), (SHARED_4096, 1.5, " (issue 29)"),
                               (SHARED_4096, 1.25, ""), (SHARED_16384, 1.25, "")):
        r = _target_ratio(result, name, KD)
        if r is not None:
            add(f"{name} ≤ {limit}× KD{issue}", r, r <= limit, format_ratio(r))
    r = _target_ratio(result, CACHED, STUDENT)
    if r is not None:
        add(f"{CACHED} ≤ 1.3× student alone", r, r <= 1.3, format_ratio(r))
    points = {(p["formulation"], p["batch_size"], p["nce_k"]): p for p in result["loss_alone"]}
    key = (result["batch_size"], LOSS_CHECK_K)
    if ("shared",) + key in points and ("reference",) + key in points:
        shared, reference = points[("shared",) + key], points[("reference",) + key]
        speedup = reference["ms"] / shared["ms"]
        add(f"loss alone, batch {key[0]}, K={key[1]}: shared ≥ 10× faster than the reference formulation", speedup,
            speedup >= 10, format_ratio(speedup))
        memory = shared["peak_extra_memory_bytes"] / max(reference["peak_extra_memory_bytes"], 1)
        add(f"loss alone, batch {key[0]}, K={key[1]}: shared peak memory ≤ ½ the reference's", memory, memory <= 0.5,
            f"{memory:.3f}× ({_mib(shared['peak_extra_memory_bytes'])} vs "
            f"{_mib(reference['peak_extra_memory_bytes'])} MB)")
    r = _target_ratio(result, BIG_N, SHARED_4096)
    if r is not None:
        add("step time flat from N=60,000 to N=600,000 (shared, K=4096): within 10%", r, abs(r - 1) <= 0.10,
            format_ratio(r))
    return out


def render(result: dict) -> str:
    steps = result["steps"]
    lines = [f"Machine: {result['machine']}; batch {result['batch_size']}, {result['precision']}; "
             f"{result['rounds']} interleaved round(s) of every configuration, each in its own process.", "",
             "| configuration | N | median step (ms) | × student alone | × KD | peak memory (MB) |",
             "|---|---|---|---|---|---|"]
    for name, row in steps.items():
        lines.append(f"| {name} | {format_count(row['num_samples'], 'exact')} | {row['median_step_s'] * 1000:.1f} | "
                     f"{_times(steps, name, STUDENT)} | {_times(steps, name, KD)} | {_mib(row['peak_memory_bytes'])} |")
    alternating = (result.get("alternating") or {}).get("step_ms", {})
    if alternating:
        memory = result["alternating"].get("peak_memory_bytes", {})
        lines += ["", f"Step by step: every configuration in its own process, all at once, one optimizer step each "
                      f"in turn, {result['alternating']['steps_timed']} steps each after warm-up; × KD is the median "
                      "of the ratios of steps taken in the same turn (the targets read these ratios):", "",
                  "| configuration | median step (ms) | × KD | peak memory (MB) |", "|---|---|---|---|"]
        for name, times in alternating.items():
            ratio = f"{_target_ratio(result, name, KD):.2f}" if KD in alternating else "–"
            peak = _mib(memory[name]) if name in memory else "–"
            lines.append(f"| {name} | {statistics.median(times):.1f} | {ratio} | {peak} |")
    check = result.get("cache_accuracy_check", {})
    if check:
        lines += ["", "Same short run with and without the teacher cache (test accuracy on 2,000 images):", ""]
        lines += [f"- {name}: {format_accuracy(row['accuracy'])} after {row['train_steps']} steps"
                  for name, row in check.items()]
    if result["loss_alone"]:
        lines += ["", f"Contrastive loss alone (both directions, forward + backward, N = "
                      f"{format_count(result['loss_alone'][0]['num_samples'], 'exact')}; peak memory: extra over one "
                      "call):", "",
                  "| batch | K | per-sample (ms) | shared (ms) | reference gather (ms) | shared speed-up | "
                  "per-sample / shared / reference peak (MB) |", "|---|---|---|---|---|---|---|"]
        points = {(p["formulation"], p["batch_size"], p["nce_k"]): p for p in result["loss_alone"]}
        for batch, k in dict.fromkeys((p["batch_size"], p["nce_k"]) for p in result["loss_alone"]):
            row = [points[(f, batch, k)] for f in LOSS_FORMULATIONS]
            memory = " / ".join(_mib(p["peak_extra_memory_bytes"]) for p in row)
            lines.append(f"| {batch} | {k} | {row[0]['ms']:.1f} | {row[1]['ms']:.1f} | {row[2]['ms']:.1f} | "
                         f"{format_ratio(row[2]['ms'], row[1]['ms'])} | {memory} |")
    lines += ["", "Targets (issues 29 and 13):", "", "| target | measured | met |", "|---|---|---|"]
    lines += [f"| {c['target']} | {c['measured']} | {'met' if c['met'] else 'NOT met'} |" for c in result["checks"]]
    return "\n".join(lines)


def real_checks(result: dict) -> list[dict]:
    """Issue 29's targets at the real sizes (a GPU's): the default ≤ 1.15× KD, the bank ≤ 1.25× KD, per scenario."""
    out = []
    for scenario, steps in result["scenarios"].items():
        for name, limit in ((DEFAULT, 1.15), (REAL_BANK, 1.25)):
            if name in steps and KD in steps:
                r = _ratio(steps, name, KD)
                out.append({"target": f"{scenario}: {name} ≤ {limit}× KD", "value": round(r, 4), "met": r <= limit,
                            "measured": format_ratio(r)})
    return out


def render_real(result: dict) -> str:
    sizes = ("TINY DRY RUN (2-layer models, 32-px images, 10 classes, bank N = 512, K = 64): not the real sizes"
             if result.get("tiny") else
             f"224-px random images, 1,000 classes, bank N = {format_count(REAL_NUM_SAMPLES, 'exact')}")
    lines = [f"Machine: {result['machine']}; batch {result['batch_size']}, {result['precision']}; random weights from "
             f"configs, {sizes}; {result['rounds']} interleaved round(s), each configuration in its own process.", ""]
    for scenario, steps in result["scenarios"].items():
        lines += [f"**{scenario}**", "", "| method | ms/step | images/s | × KD | × student alone | peak memory (MB) |",
                  "|---|---|---|---|---|---|"]
        for name, row in steps.items():
            lines.append(f"| {name} | {row['median_step_s'] * 1000:.0f} | "
                         f"{result['batch_size'] / row['median_step_s']:.1f} | {_times(steps, name, KD)} | "
                         f"{_times(steps, name, STUDENT)} | {_mib(row['peak_memory_bytes'])} |")
        lines.append("")
    lines += ["Targets (issue 29, for a GPU):", "", "| target | measured | met |", "|---|---|---|"]
    lines += [f"| {c['target']} | {c['measured']} | {'met' if c['met'] else 'NOT met'} |" for c in result["checks"]]
    return "\n".join(lines)


def _summarise(rows: dict) -> None:
    for row in rows.values():
        runs = row["rounds"]
        row.update(median_step_s=statistics.median(r["median_step_s"] for r in runs),
                   peak_memory_bytes=max(r["peak_memory_bytes"] for r in runs), num_samples=runs[0]["num_samples"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", choices=("demo", "real"), default="demo",
                        help="demo: the demo's models (default); real: ViT-B/16 and ResNet-50 teachers at 224 px")
    parser.add_argument("--scenarios", nargs="*", default=list(REAL_SCENARIOS), help="--scale real: subset of scenarios")
    parser.add_argument("--quick", action="store_true", help="8 timed steps, 1 round and fewer loss-alone points")
    parser.add_argument("--rounds", type=int, help="interleaved rounds of every configuration (default 3, quick 1)")
    parser.add_argument("--batch_size", type=int, help="default 64 (demo), 8 (real, CPU), 256 (real, GPU)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads per process (default 1: on a shared CPU, 2 threads under contention made "
                             "steps up to 100 times slower)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--bf16", action="store_true")
    parser.add_argument("--tiny", action="store_true",
                        help="--scale real: the scenarios' architectures shrunk to 2 layers at 32 px, a dry run of the "
                             "command (e.g. sh benchmarks/speed_gpu.sh --device cpu --tiny --output /tmp/speed)")
    parser.add_argument("--output", default=os.path.join(HERE, "results"))
    parser.add_argument("--name", help="output file stem (default speed, or speed_real with --scale real)")
    parser.add_argument("--configs", nargs="*", help="subset of configurations (default: every one of the scale)")
    parser.add_argument("--accuracy_steps", type=int, default=None,
                        help="training steps of the cache on/off accuracy check (default 300, quick 100)")
    parser.add_argument("--alternating_steps", type=int, default=None,
                        help="demo scale: also time every configuration side by side, one step each in turn, for "
                             "this many steps (default 60, quick 16; 0: not); the targets then read those ratios")
    parser.add_argument("--alternating_worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--scenario", help=argparse.SUPPRESS)
    parser.add_argument("--eval_samples", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--loss_worker", help=argparse.SUPPRESS)
    parser.add_argument("--cache_dir", default=os.path.join(HERE, "cache", "speed"), help=argparse.SUPPRESS)
    opts = parser.parse_args()
    torch.set_num_threads(opts.threads)
    real = opts.scale == "real"
    opts.batch_size = opts.batch_size or (64 if not real else 256 if opts.device == "cuda" else 8)
    opts.name = opts.name or ("speed_real" if real else "speed")
    opts.configs = opts.configs or list(REAL_CONFIGS if real else CONFIGS)
    steps, warmup = (8, 3) if opts.quick else (20, 5)
    if real:  # a CPU step at 224 px takes seconds: a few steps give a stable median there
        steps, warmup = (8, 2) if opts.device == "cuda" else (3, 1)
    rounds = opts.rounds or (1 if opts.quick or real else 3)
    repeats = 3 if opts.quick else 5
    if opts.loss_worker:  # one loss-alone point, in its own process (for its peak memory)
        formulation, batch, k = opts.loss_worker.split(",")
        print("RESULT " + json.dumps(loss_point(formulation, int(batch), int(k), 60000, opts.device, repeats)))
        return
    if opts.worker and opts.scenario:  # one real-scale configuration, in its own process
        result = run_real_config(opts.worker, opts.scenario, steps, warmup, opts.batch_size, opts.device, opts.bf16,
                                 opts.cache_dir, opts.tiny)
        print("RESULT " + json.dumps(result))
        return
    alternating_steps = opts.alternating_steps if opts.alternating_steps is not None else 16 if opts.quick else 60
    if opts.alternating_worker:  # every configuration in this process, one step each in turn
        result = run_alternating(opts.configs, alternating_steps, warmup, opts.batch_size, opts.device, opts.bf16,
                                 opts.cache_dir)
        print("RESULT " + json.dumps(result))
        return
    if opts.worker:  # one configuration, in its own process
        if opts.eval_samples:
            steps = opts.accuracy_steps - warmup
        result = run_config(opts.worker, steps, warmup, opts.batch_size, opts.device, opts.bf16, opts.cache_dir,
                            opts.eval_samples)
        print("RESULT " + json.dumps(result))
        return

    def worker(name: Optional[str], *extra: str) -> dict:
        """One configuration (``name``) or, with ``name=None``, what ``extra`` asks for, in its own process."""
        command = [sys.executable, __file__, *(["--worker", name] if name else []), "--batch_size", str(opts.batch_size), "--device",
                   opts.device, "--threads", str(opts.threads), "--cache_dir", opts.cache_dir, *extra] + \
                  (["--quick"] if opts.quick else []) + \
                  (["--bf16"] if opts.bf16 else []) + \
                  (["--tiny"] if opts.tiny else [])
        output = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
        if output.returncode:
            raise RuntimeError(f"{name or ' '.join(extra)} failed:\n{output.stderr[-3000:]}")
        return json.loads(output.stdout.rsplit("RESULT ", 1)[1])

    def loss_worker(formulation: str, batch: int, k: int) -> dict:
        command = [sys.executable, __file__, "--loss_worker", f"{formulation},{batch},{k}", "--device", opts.device,
                   "--threads", str(opts.threads)] \
            + (["--quick"] if opts.quick else [])
        output = subprocess.run(command, capture_output=True, text=True)
        if output.returncode:
            raise RuntimeError(f"loss alone {formulation} {batch} {k} failed:\n{output.stderr[-3000:]}")
        point = json.loads(output.stdout.rsplit("RESULT ", 1)[1])
        print(f"loss alone {formulation} batch {batch} K {k}: {format_ms(point['ms'])} ms", flush=True)
        return point

    if real:
        scenarios: dict[str, dict] = {scenario: {} for scenario in opts.scenarios}

        def report(rounds_done: int, final: bool) -> None:
            measured = {scenario: rows for scenario, rows in scenarios.items() if rows}
            for rows in measured.values():
                _summarise(rows)
            result = {"machine": machine(opts.device), "batch_size": opts.batch_size,
                      "precision": "bf16 autocast" if opts.bf16 else "fp32", "rounds": rounds_done,
                      "scenarios": measured, "tiny": opts.tiny}
            result["checks"] = real_checks(result)
            _write(opts, result, render_real(result), echo=final)

        for round_ in range(rounds):  # interleaved: contention hits every configuration alike
            for scenario in opts.scenarios:
                for name in opts.configs:
                    run = worker(name, "--scale", "real", "--scenario", scenario)
                    scenarios[scenario].setdefault(name, {"rounds": []})["rounds"].append(run)
                    print(f"round {round_ + 1}/{rounds} {scenario} {name}: "
                          f"{format_ms(run['median_step_s'] * 1000)} ms/step",
                          flush=True)
                report(round_ + 1, final=False)  # after every scenario: a run cut short keeps what it measured
        report(rounds, final=True)
        return
    steps_result: dict[str, dict] = {}
    for round_ in range(rounds):  # interleaved: contention hits every configuration alike
        for name in opts.configs:
            run = worker(name)
            row = steps_result.setdefault(name, {"rounds": []})
            row["rounds"].append(run)
            print(f"round {round_ + 1}/{rounds} {name}: {format_ms(run['median_step_s'] * 1000)} ms/step", flush=True)
    _summarise(steps_result)
    alternating = None
    if alternating_steps and not real:
        alternating = worker(None, "--alternating_worker", "--alternating_steps", str(alternating_steps), "--configs",
                             *opts.configs)
        print(f"alternating steps: {alternating_steps} per configuration", flush=True)
    accuracy_steps = opts.accuracy_steps or (100 if opts.quick else 300)
    cache_check = {name: worker(name, "--eval_samples", "2000", "--accuracy_steps", str(accuracy_steps))
                   for name in (SHARED_4096, CACHED)} if CACHED in opts.configs else {}
    ks = [4096, LOSS_CHECK_K] if opts.quick else [1024, 4096, LOSS_CHECK_K]
    batch_sizes = sorted({64, opts.batch_size})
    loss_rows = [loss_worker(f, b, k) for b in batch_sizes for k in ks for f in LOSS_FORMULATIONS]
    result = {"machine": machine(opts.device), "batch_size": opts.batch_size, "precision": "bf16" if opts.bf16 else "fp32",
              "rounds": rounds, "steps": steps_result, "alternating": alternating, "cache_accuracy_check": cache_check,
              "loss_alone": loss_rows}
    result["checks"] = checks(result)
    _write(opts, result, render(result))


def _write(opts: argparse.Namespace, result: dict, table: str, echo: bool = True) -> None:
    if echo:
        print(table)
    os.makedirs(opts.output, exist_ok=True)
    with open(os.path.join(opts.output, f"{opts.name}.json"), "w") as f:
        json.dump(result, f, indent=2)
    with open(os.path.join(opts.output, f"{opts.name}.md"), "w") as f:
        f.write(table + "\n")


if __name__ == "__main__":
    main()
