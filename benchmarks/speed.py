"""Step time and peak memory of each distillation method, and of the contrastive loss alone.

Training step: the demo pair (the shipped Fashion-MNIST ResNet teacher → a vit-tiny student, 28 px), batch 64,
the real Fashion-MNIST training set (so the memory banks have N = 60,000 rows), for: the student alone (CE), KD on
logits, CRD, CKTF with the memory bank at K = 4096 and K = 16384, CKTF with in-batch negatives, and CKTF (K = 4096)
with the teacher-output cache. Each configuration runs in its own process (so its peak resident memory is its
own); the step time is the median wall time between consecutive optimizer steps after warm-up, data loading
included, and every ratio is to the student-alone step of the same run.

Loss alone: forward + backward of one direction pair of the bank NCE (``MemoryBankNCELoss``) against batch size and
K, next to the reference formulation (gather the ``[B, K+1, D]`` bank rows, ``bmm``) for comparison.

    python benchmarks/speed.py            # full: 30 timed steps per configuration
    python benchmarks/speed.py --quick    # 8 timed steps, fewer loss-alone points
Writes benchmarks/results/speed.json and speed.md.
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

CONFIGS = {
    "student alone (CE)": {"preset": "scratch"},
    "KD": {"preset": "kd"},
    "CRD (K=16384)": {"preset": "crd", "nce_k": 16384},
    "CKTF bank K=4096": {"preset": "cktf", "nce_k": 4096},
    "CKTF bank K=16384": {"preset": "cktf", "nce_k": 16384},
    "CKTF in-batch": {"preset": "cktf", "negatives": "in_batch"},
    "CKTF bank K=4096 + teacher cache": {"preset": "cktf", "nce_k": 4096, "teacher_cache_dir": "CACHE"},
}


def run_config(name: str, steps: int, warmup: int, batch_size: int, device: str, bf16: bool, cache_dir: str,
               eval_samples: int = 0) -> dict:
    """Train one configuration for ``warmup + steps`` steps in this process; return its timings and memory (and the
    accuracy on the first ``eval_samples`` test images when asked)."""
    from transformers import AutoConfig, AutoImageProcessor, AutoModelForImageClassification, TrainerCallback

    from cktf_hf import ContrastiveDistillationConfig, ContrastiveDistillationTrainer
    from cktf_hf.demo import load_fashion_mnist, student_config
    from cktf_hf.transforms import ImageClassificationTransform

    processor = AutoImageProcessor.from_pretrained(TEACHER)
    data = load_fashion_mnist()
    train = data["train"].with_transform(ImageClassificationTransform(processor))
    test = data["test"].select(range(eval_samples)).with_transform(ImageClassificationTransform(processor))
    torch.manual_seed(0)  # the same student in every configuration
    student = AutoModelForImageClassification.from_config(student_config("vit-tiny", AutoConfig.from_pretrained(TEACHER), 28))
    config = {k: (cache_dir if v == "CACHE" else v) for k, v in CONFIGS[name].items()}

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
              "memory_kind": "CUDA max allocated" if device == "cuda" else "peak RSS of the process"}
    if eval_samples:
        result["accuracy"] = trainer.evaluate()["eval_accuracy"]
        result["train_steps"] = warmup + steps
    return result


def loss_alone(batch_sizes: list[int], ks: list[int], num_samples: int, device: str, repeats: int) -> list[dict]:
    """Forward + backward time of the bank NCE (both directions) and of the reference gather formulation."""
    from cktf_hf.objectives.contrastive import MemoryBankNCELoss, nce_loss

    rows = []
    for batch in batch_sizes:
        for k in ks:
            loss_fn = MemoryBankNCELoss(num_samples, 128, k, 0.1).to(device)
            v_s = F.normalize(torch.randn(batch, 128, device=device), dim=1).requires_grad_()
            v_t = F.normalize(torch.randn(batch, 128, device=device), dim=1).requires_grad_()
            index = torch.randint(0, num_samples, (batch,), device=device)
            idx = torch.cat([index[:, None], torch.randint(0, num_samples, (batch, k), device=device)], 1)

            def ours() -> None:
                loss_fn(v_s, v_t, index, idx).backward()

            def reference() -> None:  # RepDistiller's ContrastMemory: gather [B, K+1, D] rows, bmm
                w_t = loss_fn.memory_teacher[idx.view(-1)].view(batch, k + 1, 128)
                w_s = loss_fn.memory_student[idx.view(-1)].view(batch, k + 1, 128)
                e_s = torch.exp(torch.bmm(w_t, v_s.unsqueeze(2)).squeeze(2) / 0.1)
                e_t = torch.exp(torch.bmm(w_s, v_t.unsqueeze(2)).squeeze(2) / 0.1)
                loss = nce_loss(e_s / loss_fn.z_student.float(), num_samples)
                (loss + nce_loss(e_t / loss_fn.z_teacher.float(), num_samples)).backward()

            rows.append({"batch_size": batch, "nce_k": k, "num_samples": num_samples,
                         "cktf_hf_ms": _time_ms(ours, device, repeats), "reference_ms": _time_ms(reference, device, repeats)})
    return rows


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


def render(result: dict) -> str:
    base = result["steps"]["student alone (CE)"]["median_step_s"]
    kd = result["steps"]["KD"]["median_step_s"]
    lines = [f"Machine: {result['machine']}; batch {result['batch_size']}, {result['precision']}.", "",
             "| configuration | median step (ms) | × student alone | × KD | peak memory (MB) |", "|---|---|---|---|---|"]
    for name, row in result["steps"].items():
        step = row["median_step_s"]
        lines.append(f"| {name} | {step * 1000:.1f} | {step / base:.2f} | {step / kd:.2f} | "
                     f"{row['peak_memory_bytes'] / 2**20:.0f} |")
    check = result.get("cache_accuracy_check", {})
    if check:
        lines += ["", "Same short run with and without the teacher cache (test accuracy on 2,000 images):", ""]
        lines += [f"- {name}: {row['accuracy']:.2%} after {row['train_steps']} steps" for name, row in check.items()]
    lines += ["", f"Contrastive loss alone (both directions, forward + backward, N = {result['loss_alone'][0]['num_samples']}):",
              "", "| batch | K | cktf_hf (ms) | reference gather (ms) | speed-up |", "|---|---|---|---|---|"]
    for row in result["loss_alone"]:
        lines.append(f"| {row['batch_size']} | {row['nce_k']} | {row['cktf_hf_ms']:.1f} | {row['reference_ms']:.1f} | "
                     f"{row['reference_ms'] / row['cktf_hf_ms']:.1f}× |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="8 timed steps and fewer loss-alone points")
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--bf16", action="store_true")
    parser.add_argument("--output", default=os.path.join(HERE, "results"))
    parser.add_argument("--name", default="speed", help="output file stem")
    parser.add_argument("--configs", nargs="*", default=list(CONFIGS), help="subset of configurations")
    parser.add_argument("--accuracy_steps", type=int, default=None,
                        help="training steps of the cache on/off accuracy check (default 300, quick 100)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--eval_samples", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--cache_dir", default=os.path.join(HERE, "cache", "speed"), help=argparse.SUPPRESS)
    opts = parser.parse_args()
    steps, warmup = (8, 3) if opts.quick else (30, 5)
    if opts.worker:  # one configuration, in its own process
        if opts.eval_samples:
            steps = opts.accuracy_steps - warmup
        result = run_config(opts.worker, steps, warmup, opts.batch_size, opts.device, opts.bf16, opts.cache_dir,
                            opts.eval_samples)
        print("RESULT " + json.dumps(result))
        return

    def worker(name: str, *extra: str) -> dict:
        command = [sys.executable, __file__, "--worker", name, "--batch_size", str(opts.batch_size), "--device",
                   opts.device, "--cache_dir", opts.cache_dir, *extra] + (["--quick"] if opts.quick else []) + \
                  (["--bf16"] if opts.bf16 else [])
        output = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
        if output.returncode:
            raise RuntimeError(f"{name} failed:\n{output.stderr[-3000:]}")
        return json.loads(output.stdout.rsplit("RESULT ", 1)[1])

    steps_result = {}
    for name in opts.configs:
        steps_result[name] = worker(name)
        print(f"{name}: {steps_result[name]['median_step_s'] * 1000:.1f} ms/step", flush=True)
    accuracy_steps = opts.accuracy_steps or (100 if opts.quick else 300)
    cache_check = {name: worker(name, "--eval_samples", "2000", "--accuracy_steps", str(accuracy_steps))
                   for name in ("CKTF bank K=4096", "CKTF bank K=4096 + teacher cache")}
    batch_sizes, ks = ([64], [4096, 16384]) if opts.quick else ([32, 64, 128, 256], [1024, 4096, 16384])
    result = {"machine": machine(opts.device), "batch_size": opts.batch_size, "precision": "bf16" if opts.bf16 else "fp32",
              "steps": steps_result, "cache_accuracy_check": cache_check,
              "loss_alone": loss_alone(batch_sizes, ks, 60000, opts.device, 5 if opts.quick else 10)}
    table = render(result)
    print(table)
    os.makedirs(opts.output, exist_ok=True)
    with open(os.path.join(opts.output, f"{opts.name}.json"), "w") as f:
        json.dump(result, f, indent=2)
    with open(os.path.join(opts.output, f"{opts.name}.md"), "w") as f:
        f.write(table + "\n")


if __name__ == "__main__":
    main()
