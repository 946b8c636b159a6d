"""Distil an image classifier into a small ViT with CKTF.

With no arguments it runs the offline demo: the Fashion-MNIST ResNet teacher shipped in
``examples/teachers/fashion-mnist-resnet`` → a ``vit-tiny`` student on the real Fashion-MNIST, evaluated on the
full 10,000-image test split, written to ``outputs/distill_vit``. The demo uses the CKTF weights with in-batch
negatives (the memory bank is the default everywhere else; see DEMO_DEFAULTS for why).

Usage:

    # one process (CPU or one GPU)
    python examples/distill_vit.py
    accelerate launch examples/distill_vit.py

    # a Hub teacher and a Hub dataset on 8 GPUs, bf16
    accelerate launch --multi_gpu --num_processes 8 examples/distill_vit.py \\
        --teacher nateraw/vit-base-patch16-224-cifar10 --dataset uoft-cs/cifar10 --eval_split test \\
        --student vit-small --bf16 --per_device_train_batch_size 64 --num_train_epochs 30 --output_dir outputs/cifar10

    # the same with torchrun, then publish the student with its model card
    torchrun --nproc_per_node 2 examples/distill_vit.py --push_to_hub --hub_model_id <user>/vit-tiny-fashion-mnist

Every field of ``ContrastiveDistillationConfig`` (``--preset``, ``--layer_weight``, ``--negatives in_batch``, ...)
and of ``TrainingArguments`` is a flag; ``--help`` lists them.

Rerunning with the same ``--output_dir`` resumes from its last complete checkpoint (``--resume_from_checkpoint PATH``
names another one); an ``--output_dir`` that holds files but no checkpoint is refused unless ``--overwrite_output_dir``
is given. On SIGTERM the run saves a checkpoint and exits with status 143; rerun the same command to resume.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from dataclasses import dataclass, field
from typing import Optional

from transformers import AutoConfig, AutoImageProcessor, HfArgumentParser, set_seed
from transformers.trainer_utils import get_last_checkpoint
from transformers.utils import logging

from cktf_hf import ContrastiveDistillationConfig, ContrastiveDistillationTrainer
from cktf_hf.checkpointing import last_complete_checkpoint
from cktf_hf.demo import DEFAULT_TEACHER, load_image_dataset, load_or_build_student
from cktf_hf.run_guard import TrainingInterrupted
from cktf_hf.transforms import ImageClassificationTransform

HERE = os.path.dirname(os.path.abspath(__file__))
SCRATCH_RESULTS = os.path.join(HERE, "..", "benchmarks", "results", "accuracy.json")
# Without --teacher: the offline CPU demo. In-batch negatives, because the reference memory bank costs two
# [64 × 60,000 × 128] products per layer pair and direction each step (about 0.6 s a step on 2 CPU cores, against
# 0.1 s); on a GPU the bank is cheap: pass --teacher (and --negatives memory_bank, the library default).
DEMO_DEFAULTS = {"--teacher": DEFAULT_TEACHER, "--negatives": "in_batch", "--num_train_epochs": "4"}


@dataclass
class DataArguments:
    dataset: str = field(default="fashion_mnist", metadata={"help": "Built-in name, image folder or Hub dataset id."})
    data_dir: Optional[str] = field(default=None, metadata={"help": "Folder with the dataset's files (IDX for "
                                                                     "fashion_mnist)."})
    train_split: str = field(default="train", metadata={"help": "Training split."})
    eval_split: str = field(default="test", metadata={"help": "Evaluation split."})
    augment: bool = field(default=False, metadata={"help": "Random crop (4 px padding) and horizontal flip."})
    max_train_samples: Optional[int] = field(default=None, metadata={"help": "Use only the first N training images."})
    max_eval_samples: Optional[int] = field(default=None, metadata={"help": "Use only the first N evaluation images."})


@dataclass
class StudentArguments:
    student: str = field(default="vit-tiny", metadata={"help": "Named size (vit-nano, vit-tiny, vit-small, vit-base), "
                                                              "Hub id or folder."})


@dataclass
class RunArguments:
    overwrite_output_dir: bool = field(default=False, metadata={"help": "Train from scratch into an output_dir that "
                                                                         "already holds files or checkpoints."})


def parse_args() -> tuple[StudentArguments, DataArguments, RunArguments, ContrastiveDistillationConfig]:
    parser = HfArgumentParser((StudentArguments, DataArguments, RunArguments, ContrastiveDistillationConfig))
    argv = sys.argv[1:]
    defaults = {"--output_dir": "outputs/distill_vit", "--eval_strategy": "epoch", "--save_strategy": "epoch",
                "--save_total_limit": "1", "--per_device_train_batch_size": "64", "--per_device_eval_batch_size": "256",
                "--learning_rate": "2e-3", "--weight_decay": "0.05", "--warmup_steps": "0.05",
                "--lr_scheduler_type": "cosine", "--logging_steps": "50"}
    if not any(arg == "--teacher" or arg.startswith("--teacher=") for arg in argv):
        defaults.update(DEMO_DEFAULTS)
    for flag, value in defaults.items():
        if not any(arg == flag or arg.startswith(flag + "=") for arg in argv):
            argv += [flag, value]
    return parser.parse_args_into_dataclasses(args=argv)


def main() -> None:
    student_args, data_args, run_args, args = parse_args()
    logging.set_verbosity_info() if args.should_log else logging.set_verbosity_warning()
    resume = checkpoint_to_resume(args, run_args.overwrite_output_dir)

    processor = AutoImageProcessor.from_pretrained(args.teacher, revision=args.teacher_revision)
    teacher_config = AutoConfig.from_pretrained(args.teacher, revision=args.teacher_revision)
    image_size = _processor_image_size(processor)
    set_seed(args.seed)  # a reproducible student initialisation
    student = load_or_build_student(student_args.student, teacher_config, image_size)

    dataset = load_image_dataset(data_args.dataset, data_args.data_dir)
    train, evaluation = dataset[data_args.train_split], dataset[data_args.eval_split]
    if data_args.max_train_samples:
        train = train.select(range(min(data_args.max_train_samples, len(train))))
    if data_args.max_eval_samples:
        evaluation = evaluation.select(range(min(data_args.max_eval_samples, len(evaluation))))
    train = train.with_transform(ImageClassificationTransform(processor, augment=data_args.augment))
    evaluation = evaluation.with_transform(ImageClassificationTransform(processor))

    trainer = ContrastiveDistillationTrainer(model=student, args=args, train_dataset=train, eval_dataset=evaluation,
                                             processing_class=processor)
    try:
        trainer.train(resume_from_checkpoint=resume)
    except TrainingInterrupted as stop:
        print(stop, file=sys.stderr)
        sys.exit(128 + signal.SIGTERM)
    student_metrics = trainer.evaluate()
    teacher_metrics = trainer.evaluate_teacher()
    trainer.save_model()
    card_kwargs = {"dataset": data_args.dataset, "dataset_split": data_args.eval_split}
    if args.push_to_hub:
        trainer.push_to_hub(**card_kwargs)
    elif trainer.is_world_process_zero():
        trainer.create_model_card(**card_kwargs)
    if trainer.is_world_process_zero():
        print(summary(trainer, student_metrics, teacher_metrics, student_args.student, data_args.dataset))


def checkpoint_to_resume(args: ContrastiveDistillationConfig, overwrite: bool) -> Optional[str]:
    """``--resume_from_checkpoint``, else the last complete checkpoint of ``output_dir`` (found as transformers'
    examples find it); a non-empty ``output_dir`` without one needs ``--overwrite_output_dir``."""
    if args.resume_from_checkpoint:
        print(f"Resuming from {args.resume_from_checkpoint}.", file=sys.stderr)
        return args.resume_from_checkpoint
    if overwrite or not os.path.isdir(args.output_dir):
        return None
    if get_last_checkpoint(args.output_dir) is not None:
        checkpoint = last_complete_checkpoint(args.output_dir)  # skips incomplete ones, with a warning
        if checkpoint is not None:
            print(f"Resuming from {checkpoint}; pass --overwrite_output_dir to train from scratch instead.",
                  file=sys.stderr)
            return checkpoint
    if [entry for entry in os.listdir(args.output_dir) if not entry.startswith("_cktf")]:  # not only our bookkeeping
        raise SystemExit(
            f"error: --output_dir {args.output_dir} already holds files and no checkpoint to resume from. Pass "
            "--overwrite_output_dir to train into it anyway, or choose another --output_dir."
        )
    return None


def _processor_image_size(processor) -> int:
    size = getattr(processor, "size", None) or {}
    return int(size.get("height") or size.get("shortest_edge") or 224)


def summary(trainer, student_metrics: dict, teacher_metrics: dict, student_name: str, dataset: str) -> str:
    """Teacher vs student: accuracy, parameters, size and CPU latency (as measured for the model card), plus the
    from-scratch baseline if the benchmark measured it."""
    teacher_stats, student_stats = trainer.card_info.teacher_stats, trainer.card_info.student_stats
    rows = [("accuracy (top-1)", f"{teacher_metrics['teacher_accuracy']:.2%}", f"{student_metrics['eval_accuracy']:.2%}"),
            ("parameters", f"{teacher_stats.parameters:,}", f"{student_stats.parameters:,}"),
            ("size on disk", f"{teacher_stats.size_bytes / 1e6:.2f} MB", f"{student_stats.size_bytes / 1e6:.2f} MB")]
    for batch in sorted(student_stats.latency_ms):
        rows.append((f"CPU latency, batch {batch}", f"{teacher_stats.latency_ms[batch]:.2f} ms",
                     f"{student_stats.latency_ms[batch]:.2f} ms"))
    lines = ["", f"{'':<22}{'teacher':>16}{'student':>16}"] + [f"{a:<22}{b:>16}{c:>16}" for a, b, c in rows]
    lines.append(f"compression {teacher_stats.parameters / student_stats.parameters:.1f}x fewer parameters; "
                 f"latency measured as: {student_stats.latency_setup}")
    scratch = _scratch_line(student_name, dataset)
    if scratch is not None:
        lines.append(scratch)
    lines.append(f"student, model card and distillation_config.json written to {trainer.args.output_dir}")
    return "\n".join(lines)


def _scratch_line(student_name: str, dataset: str) -> Optional[str]:
    """The summary's line on the benchmark's from-scratch baseline for this student, if there is one."""
    scratch = _scratch_baseline(student_name, dataset)
    if scratch is None:
        return None
    return (f"the same student trained from scratch in benchmarks/accuracy.py: {scratch['mean']:.2%} "
            f"± {scratch['std']:.2%} over {scratch['n']} seed(s), with its own budget "
            f"({scratch['train_images']:,} training images, {scratch['epochs']:g} epochs)")


def _scratch_baseline(student_name: str, dataset: str) -> Optional[dict]:
    """This student's from-scratch accuracy (``mean``, ``std``, ``n``, ``train_images``, ``epochs``) recorded by the
    compression benchmark, if it has been run."""
    if not os.path.isfile(SCRATCH_RESULTS):
        return None
    with open(SCRATCH_RESULTS) as f:
        results = json.load(f)
    entry = results.get("scratch_baselines", {}).get(f"{dataset}/{student_name}")
    return entry or None


if __name__ == "__main__":
    main()
