"""Step time and peak memory of each distillation method, and of the contrastive loss alone, with the targets.

Training step: the demo pair (the shipped Fashion-MNIST ResNet teacher → a vit-tiny student, 28 px), batch 64,
the real Fashion-MNIST training set (so the memory banks have N = 60,000 rows), for: the student alone (CE), KD on
logits, CKTF with in-batch negatives, CKTF with the memory bank (per-sample negatives, the reference, and negatives
shared by the batch) at K = 4096 and K = 16384, CKTF (shared, K = 4096) with the teacher-output cache, and the
same at N = 600,000 (the training set repeated 10 times: a synthetic bank ten times larger), in float32 and with
bfloat16 banks. Each configuration runs in its own process (so its peak resident memory is its own); the step time
is the median wall time between consecutive optimizer steps after warm-up, data loading included. The
configurations run ``--rounds`` times, interleaved, so that contention from other processes hits them alike; a
ratio is the median over rounds of the ratio within each round.

Loss alone: forward + backward of both directions of the bank NCE (``MemoryBankNCELoss``), per-sample and shared
negatives, against the reference formulation (gather the ``[B, K+1, D]`` bank rows, ``bmm``), each point in its own
process for its peak memory (CPU: peak RSS increase over one call; CUDA: peak allocated over what was allocated).

The targets (issue 13) are checked at the end of the table: met or not met.

    python benchmarks/speed.py            # full: 20 timed steps per configuration, 3 rounds
    python benchmarks/speed.py --quick    # 8 timed steps, 1 round, fewer loss-alone points
    sh benchmarks/speed_gpu.sh            # the same table on a GPU, bf16, batch 256
Writes benchmarks/results/speed.json and speed.md (``--name`` changes the stem).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time

import torch
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
TEACHER = os.path.join(ROOT, "examples", "teachers", "fashion-mnist-resnet")

STUDENT, KD = "student alone (CE)", "KD"
SHARED_4096, SHARED_16384 = "CKTF bank K=4096, shared", "CKTF bank K=16384, shared"
CACHED = "CKTF bank K=4096, shared + teacher cache"
BIG_N = "CKTF bank K=4096, shared, N=600,000"
PER_SAMPLE = {"negative_sampling": "per_sample"}
SHARED = {"negative_sampling": "shared"}
CONFIGS = {
    STUDENT: {"preset": "scratch"},
    KD: {"preset": "kd"},
    "CKTF in-batch": {"preset": "cktf-reference", "negatives": "in_batch"},
    "CKTF bank K=4096, per-sample (reference)": {"preset": "cktf-reference", "nce_k": 4096, **PER_SAMPLE},
    "CKTF bank K=16384, per-sample (reference)": {"preset": "cktf-reference", "nce_k": 16384, **PER_SAMPLE},
    SHARED_4096: {"preset": "cktf-reference", "nce_k": 4096, **SHARED},
    SHARED_16384: {"preset": "cktf-reference", "nce_k": 16384, **SHARED},
    CACHED: {"preset": "cktf-reference", "nce_k": 4096, **SHARED, "teacher_cache_dir": "CACHE"},
    BIG_N: {"preset": "cktf-reference", "nce_k": 4096, **SHARED, "repeat_data": 10},
    BIG_N + ", bf16 banks": {"preset": "cktf-reference", "nce_k": 4096, **SHARED, "bank_dtype": "bfloat16", "repeat_data": 10},
}
LOSS_CHECK_K = 16384


def run_config(name: str, steps: int, warmup: int, batch_size: int, device: str, bf16: bool, cache_dir: str,
               eval_samples: int = 0) -> dict:
    """Train one configuration for ``warmup + steps`` steps in this process; return its timings and memory (and the
    accuracy on the first ``eval_samples`` test images when asked)."""
    from transformers import AutoConfig, AutoImageProcessor, AutoModelForImageClassification, TrainerCallback

    from cktf_hf import ContrastiveDistillationConfig, ContrastiveDistillationTrainer
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
    student_cfg = student_config("cktf-vit-tiny", AutoConfig.from_pretrained(TEACHER), 28)
    student = AutoModelForImageClassification.from_config(student_cfg)

    class StepTimer(TrainerCallback):
        def __init__(self) -> None:
            self.ends: list[float] = []

        def on_step_end(self, args, state, control, **kwargs):
            if device == "cuda":
                torch.cuda.synchronize()
            self.ends.append(time.perf_counter())

    timer = StepTimer()
    args = ContrastiveDistillationConfig(
        output_dir=os.path.join(cache_dir, "out"), teacher=TEACHER, per_device_train_batch_size=batch_size,
        max_steps=warmup + steps, learning_rate=1e-3, logging_steps=10_000, save_strategy="no", report_to="none",
        disable_tqdm=True, use_cpu=device == "cpu", bf16=bf16, dataloader_num_workers=0, **config,
    )
    trainer = ContrastiveDistillationTrainer(model=student, args=args, train_dataset=train, eval_dataset=test,
                                             callbacks=[timer])
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    trainer.train()
    durations = [b - a for a, b in zip(timer.ends[warmup:], timer.ends[warmup + 1:])]
    peak = (torch.cuda.max_memory_allocated() if device == "cuda"
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
    result = {"median_step_s": statistics.median(durations), "steps_timed": len(durations), "peak_memory_bytes": peak,
              "memory_kind": "CUDA max allocated" if device == "cuda" else "peak RSS of the process",
              "num_samples": len(train)}
    if eval_samples:
        result["accuracy"] = trainer.evaluate()["eval_accuracy"]
        result["train_steps"] = warmup + steps
    return result


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


def _ratio(result: dict, name: str, base: str) -> float:
    """Median over rounds of ``name``'s step time over ``base``'s in the same round."""
    steps = result["steps"]
    return statistics.median(a["median_step_s"] / b["median_step_s"]
                             for a, b in zip(steps[name]["rounds"], steps[base]["rounds"]))


def checks(result: dict) -> list[dict]:
    """The targets of issue 13, each with its measured value and whether it was met."""
    out = []
    steps = result["steps"]

    def add(target: str, value: float, met: bool, shown: str) -> None:
        out.append({"target": target, "value": round(value, 4), "met": bool(met), "measured": shown})

    for name in (SHARED_4096, SHARED_16384):
        if name in steps and KD in steps:
            r = _ratio(result, name, KD)
            add(f"{name} ≤ 1.25× KD", r, r <= 1.25, f"{r:.2f}×")
    if CACHED in steps and STUDENT in steps:
        r = _ratio(result, CACHED, STUDENT)
        add(f"{CACHED} ≤ 1.3× student alone", r, r <= 1.3, f"{r:.2f}×")
    points = {(p["formulation"], p["batch_size"], p["nce_k"]): p for p in result["loss_alone"]}
    key = (result["batch_size"], LOSS_CHECK_K)
    if ("shared",) + key in points and ("reference",) + key in points:
        shared, reference = points[("shared",) + key], points[("reference",) + key]
        speedup = reference["ms"] / shared["ms"]
        add(f"loss alone, batch {key[0]}, K={key[1]}: shared ≥ 10× faster than the reference formulation", speedup,
            speedup >= 10, f"{speedup:.1f}×")
        memory = shared["peak_extra_memory_bytes"] / max(reference["peak_extra_memory_bytes"], 1)
        add(f"loss alone, batch {key[0]}, K={key[1]}: shared peak memory ≤ ½ the reference's", memory, memory <= 0.5,
            f"{memory:.3f}× ({shared['peak_extra_memory_bytes'] / 2**20:.0f} vs "
            f"{reference['peak_extra_memory_bytes'] / 2**20:.0f} MB)")
    if BIG_N in steps and SHARED_4096 in steps:
        r = _ratio(result, BIG_N, SHARED_4096)
        add("step time flat from N=60,000 to N=600,000 (shared, K=4096): within 10%", r, abs(r - 1) <= 0.10,
            f"{r:.2f}×")
    return out


def render(result: dict) -> str:
    steps = result["steps"]
    lines = [f"Machine: {result['machine']}; batch {result['batch_size']}, {result['precision']}; "
             f"{result['rounds']} interleaved round(s) of every configuration, each in its own process.", "",
             "| configuration | N | median step (ms) | × student alone | × KD | peak memory (MB) |",
             "|---|---|---|---|---|---|"]
    for name, row in steps.items():
        student = f"{_ratio(result, name, STUDENT):.2f}" if STUDENT in steps else "–"
        kd = f"{_ratio(result, name, KD):.2f}" if KD in steps else "–"
        lines.append(f"| {name} | {row['num_samples']:,} | {row['median_step_s'] * 1000:.1f} | {student} | {kd} | "
                     f"{row['peak_memory_bytes'] / 2**20:.0f} |")
    check = result.get("cache_accuracy_check", {})
    if check:
        lines += ["", "Same short run with and without the teacher cache (test accuracy on 2,000 images):", ""]
        lines += [f"- {name}: {row['accuracy']:.2%} after {row['train_steps']} steps" for name, row in check.items()]
    lines += ["", f"Contrastive loss alone (both directions, forward + backward, N = "
                  f"{result['loss_alone'][0]['num_samples']:,}; peak memory: extra over one call):", "",
              "| batch | K | per-sample (ms) | shared (ms) | reference gather (ms) | shared speed-up | "
              "per-sample / shared / reference peak (MB) |", "|---|---|---|---|---|---|---|"]
    points = {(p["formulation"], p["batch_size"], p["nce_k"]): p for p in result["loss_alone"]}
    for batch, k in dict.fromkeys((p["batch_size"], p["nce_k"]) for p in result["loss_alone"]):
        row = [points[(f, batch, k)] for f in LOSS_FORMULATIONS]
        memory = " / ".join(f"{p['peak_extra_memory_bytes'] / 2**20:.0f}" for p in row)
        lines.append(f"| {batch} | {k} | {row[0]['ms']:.1f} | {row[1]['ms']:.1f} | {row[2]['ms']:.1f} | "
                     f"{row[2]['ms'] / row[1]['ms']:.1f}× | {memory} |")
    lines += ["", "Targets (issue 13):", "", "| target | measured | met |", "|---|---|---|"]
    lines += [f"| {c['target']} | {c['measured']} | {'met' if c['met'] else 'NOT met'} |" for c in result["checks"]]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="8 timed steps, 1 round and fewer loss-alone points")
    parser.add_argument("--rounds", type=int, help="interleaved rounds of every configuration (default 3, quick 1)")
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads per process (default 1: on a shared CPU, 2 threads under contention made "
                             "steps up to 100 times slower)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--bf16", action="store_true")
    parser.add_argument("--output", default=os.path.join(HERE, "results"))
    parser.add_argument("--name", default="speed", help="output file stem")
    parser.add_argument("--configs", nargs="*", default=list(CONFIGS), help="subset of configurations")
    parser.add_argument("--accuracy_steps", type=int, default=None,
                        help="training steps of the cache on/off accuracy check (default 300, quick 100)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--eval_samples", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--loss_worker", help=argparse.SUPPRESS)
    parser.add_argument("--cache_dir", default=os.path.join(HERE, "cache", "speed"), help=argparse.SUPPRESS)
    opts = parser.parse_args()
    torch.set_num_threads(opts.threads)
    steps, warmup = (8, 3) if opts.quick else (20, 5)
    rounds = opts.rounds or (1 if opts.quick else 3)
    repeats = 3 if opts.quick else 5
    if opts.loss_worker:  # one loss-alone point, in its own process (for its peak memory)
        formulation, batch, k = opts.loss_worker.split(",")
        print("RESULT " + json.dumps(loss_point(formulation, int(batch), int(k), 60000, opts.device, repeats)))
        return
    if opts.worker:  # one configuration, in its own process
        if opts.eval_samples:
            steps = opts.accuracy_steps - warmup
        result = run_config(opts.worker, steps, warmup, opts.batch_size, opts.device, opts.bf16, opts.cache_dir,
                            opts.eval_samples)
        print("RESULT " + json.dumps(result))
        return

    def worker(name: str, *extra: str) -> dict:
        command = [sys.executable, __file__, "--worker", name, "--batch_size", str(opts.batch_size), "--device",
                   opts.device, "--threads", str(opts.threads), "--cache_dir", opts.cache_dir, *extra] + \
                  (["--quick"] if opts.quick else []) + \
                  (["--bf16"] if opts.bf16 else [])
        output = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
        if output.returncode:
            raise RuntimeError(f"{name} failed:\n{output.stderr[-3000:]}")
        return json.loads(output.stdout.rsplit("RESULT ", 1)[1])

    def loss_worker(formulation: str, batch: int, k: int) -> dict:
        command = [sys.executable, __file__, "--loss_worker", f"{formulation},{batch},{k}", "--device", opts.device,
                   "--threads", str(opts.threads)] \
            + (["--quick"] if opts.quick else [])
        output = subprocess.run(command, capture_output=True, text=True)
        if output.returncode:
            raise RuntimeError(f"loss alone {formulation} {batch} {k} failed:\n{output.stderr[-3000:]}")
        point = json.loads(output.stdout.rsplit("RESULT ", 1)[1])
        print(f"loss alone {formulation} batch {batch} K {k}: {point['ms']:.1f} ms", flush=True)
        return point

    steps_result: dict[str, dict] = {}
    for round_ in range(rounds):  # interleaved: contention hits every configuration alike
        for name in opts.configs:
            run = worker(name)
            row = steps_result.setdefault(name, {"rounds": []})
            row["rounds"].append(run)
            print(f"round {round_ + 1}/{rounds} {name}: {run['median_step_s'] * 1000:.1f} ms/step", flush=True)
    for row in steps_result.values():
        runs = row["rounds"]
        row.update(median_step_s=statistics.median(r["median_step_s"] for r in runs),
                   peak_memory_bytes=max(r["peak_memory_bytes"] for r in runs), num_samples=runs[0]["num_samples"])
    accuracy_steps = opts.accuracy_steps or (100 if opts.quick else 300)
    cache_check = {name: worker(name, "--eval_samples", "2000", "--accuracy_steps", str(accuracy_steps))
                   for name in (SHARED_4096, CACHED)} if CACHED in opts.configs else {}
    ks = [4096, LOSS_CHECK_K] if opts.quick else [1024, 4096, LOSS_CHECK_K]
    batch_sizes = sorted({64, opts.batch_size})
    loss_rows = [loss_worker(f, b, k) for b in batch_sizes for k in ks for f in LOSS_FORMULATIONS]
    result = {"machine": machine(opts.device), "batch_size": opts.batch_size, "precision": "bf16" if opts.bf16 else "fp32",
              "rounds": rounds, "steps": steps_result, "cache_accuracy_check": cache_check, "loss_alone": loss_rows}
    result["checks"] = checks(result)
    table = render(result)
    print(table)
    os.makedirs(opts.output, exist_ok=True)
    with open(os.path.join(opts.output, f"{opts.name}.json"), "w") as f:
        json.dump(result, f, indent=2)
    with open(os.path.join(opts.output, f"{opts.name}.md"), "w") as f:
        f.write(table + "\n")


if __name__ == "__main__":
    main()
