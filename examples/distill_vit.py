"""Distil an image classifier into a small student with CKTF.

With no arguments it runs the offline demo: the Fashion-MNIST ResNet teacher shipped in
``examples/teachers/fashion-mnist-resnet`` → a ``cktf-vit-tiny`` student with 7-px patches on the real Fashion-MNIST,
evaluated on the full 10,000-image test split, written to ``outputs/distill_vit``. The script's defaults ARE the demo's (``--help``
shows them): a ``--teacher`` of your own keeps them (in-batch negatives, 4 epochs, ...) unless you override them, on
the command line or in a recipe file. ``examples/recipes/`` holds the demo's and the benchmark's recipes.

Usage:

    # one process (CPU or one GPU)
    python examples/distill_vit.py
    python examples/distill_vit.py examples/recipes/benchmark.yaml --num_train_epochs 3   # a recipe, one value changed
    accelerate launch examples/distill_vit.py --config examples/recipes/demo.yaml

    # a Hub teacher and a Hub dataset on 8 GPUs, bf16, with the memory bank (cheap on a GPU)
    accelerate launch --multi_gpu --num_processes 8 examples/distill_vit.py \\
        --teacher nateraw/vit-base-patch16-224-cifar10 --dataset_name uoft-cs/cifar10 --negatives memory_bank \\
        --student cktf-vit-small --bf16 --per_device_train_batch_size 64 --num_train_epochs 30 --output_dir outputs/cifar10

    # folders of class folders, 15 % of the training images held out for evaluation
    python examples/distill_vit.py --teacher <id> --train_dir data/train --train_val_split 0.15

    # torchrun (on a machine without an accelerator the processes train one data-parallel job on CPU, over gloo),
    # then publish the student with its model card
    torchrun --nproc_per_node 2 examples/distill_vit.py --push_to_hub --hub_model_id <user>/cktf-vit-tiny-fashion-mnist

Every field of ``ContrastiveDistillationConfig`` (``--preset``, ``--layer_weight``, ``--negatives``, ...) and of
``TrainingArguments`` is a flag, and a key of a recipe (YAML: ``flag_name: value``; flags given on the command line
win). The conventions of transformers' ``run_image_classification.py`` hold: ``--dataset_name`` /
``--dataset_config_name``, ``--train_dir`` / ``--validation_dir``, ``--train_val_split``, ``--image_column_name`` /
``--label_column_name``, ``--max_train_samples`` / ``--max_eval_samples`` (a seeded shuffle, then the first N),
``--do_train`` / ``--do_eval`` (neither: both), ``--trust_remote_code``; after training ``train_results.json``,
``eval_results.json``, ``all_results.json`` and ``trainer_state.json`` are in ``--output_dir``.

Rerunning with the same ``--output_dir`` resumes from its last complete checkpoint (``--resume_from_checkpoint PATH``
names another one); an ``--output_dir`` that holds files but no checkpoint is refused unless ``--overwrite_output_dir``
is given, and so is a finished run rerun with no longer a schedule. On SIGTERM the run saves a checkpoint and exits with status 143; rerun the same command to resume.
"""

from __future__ import annotations

import difflib
import json
import os
import signal
import sys
from dataclasses import dataclass, field
from typing import Any, Optional

import datasets
import torch
import yaml
from transformers import AutoConfig, AutoImageProcessor, HfArgumentParser, set_seed
from transformers.trainer import TRAINER_STATE_NAME
from transformers.trainer_callback import TrainerState
from transformers.trainer_utils import get_last_checkpoint
from transformers.utils import logging

from cktf_hf import ContrastiveDistillationConfig, ContrastiveDistillationTrainer
from cktf_hf.attachment import is_objective_key
from cktf_hf.checkpointing import last_complete_checkpoint
from cktf_hf.demo import (BUILTIN_DATASET_CARD_NAMES, DEFAULT_TEACHER, load_image_dataset, load_image_folders,
                          load_or_build_student)
from cktf_hf.run_guard import TrainingInterrupted
from cktf_hf.transforms import ImageClassificationTransform

HERE = os.path.dirname(os.path.abspath(__file__))
SCRATCH_RESULTS = os.path.join(HERE, "..", "benchmarks", "results", "accuracy.json")
# The script's defaults: the demo's (examples/recipes/demo.yaml spells them out). In-batch negatives, because the
# reference memory bank costs two [64 × 60,000 × 128] products per layer pair and direction each step (about 0.6 s a
# step on 2 CPU cores, against 0.1 s); on a GPU the bank is cheap: pass --negatives memory_bank.
SCRIPT_DEFAULTS: dict[str, Any] = {
    "teacher": DEFAULT_TEACHER, "preset": "cktf", "negatives": "in_batch", "num_train_epochs": 4,
    "output_dir": "outputs/distill_vit", "eval_strategy": "epoch", "save_strategy": "epoch", "save_total_limit": 1,
    "per_device_train_batch_size": 64, "per_device_eval_batch_size": 256, "learning_rate": 2e-3,
    "weight_decay": 0.05, "warmup_steps": 0.05, "lr_scheduler_type": "cosine", "logging_steps": 50,
}
RECIPE_SUFFIXES = (".yaml", ".yml")


@dataclass
class DataArguments:
    dataset_name: str = field(default="fashion_mnist", metadata={
        "aliases": ["--dataset"], "help": "A built-in (fashion_mnist, mnist, digits), an image folder or a Hub dataset "
                                          "id. Ignored when --train_dir / --validation_dir are given."})
    dataset_config_name: Optional[str] = field(default=None, metadata={"help": "The Hub dataset's configuration."})
    data_dir: Optional[str] = field(default=None, metadata={"help": "Folder with the dataset's files (IDX for "
                                                                     "fashion_mnist)."})
    train_dir: Optional[str] = field(default=None, metadata={"help": "A folder of class folders: the training split."})
    validation_dir: Optional[str] = field(default=None, metadata={"help": "A folder of class folders: the evaluation "
                                                                           "split."})
    train_split: str = field(default="train", metadata={"help": "Training split."})
    eval_split: Optional[str] = field(default=None, metadata={
        "help": "Evaluation split. None: 'validation', else 'test', else --train_val_split of the training split."})
    train_val_split: float = field(default=0.15, metadata={
        "help": "Fraction of the training split held out for evaluation (stratified, seeded) when the dataset has no "
                "evaluation split."})
    image_column_name: Optional[str] = field(default=None, metadata={
        "help": "The image column. None: 'image', else the first Image column."})
    label_column_name: Optional[str] = field(default=None, metadata={
        "help": "The label column. None: 'label', else labels / fine_label / ..., else the first ClassLabel column."})
    augment: bool = field(default=False, metadata={"help": "Random crop (4 px padding) and horizontal flip."})
    max_train_samples: Optional[int] = field(default=None, metadata={
        "help": "Train on N images: the training split shuffled with --seed, then the first N."})
    max_eval_samples: Optional[int] = field(default=None, metadata={
        "help": "Evaluate on N images: the evaluation split shuffled with --seed, then the first N."})


@dataclass
class StudentArguments:
    student: str = field(default="cktf-vit-tiny:patch=7", metadata={
        "help": "A named size (cktf-vit-nano, cktf-vit-tiny, cktf-vit-small, cktf-vit-base; :patch=N sets its patch "
                "size), teacher:depth=0.5,width=1.0 (the teacher shrunk, initialised from its weights), a Hub id or a "
                "folder."})


@dataclass
class RunArguments:
    config: Optional[str] = field(default=None, metadata={
        "help": "A YAML recipe (flag_name: value); flags on the command line override it. `distill_vit.py "
                "recipe.yaml` works too."})
    overwrite_output_dir: bool = field(default=False, metadata={"help": "Train from scratch into an output_dir that "
                                                                         "already holds files or checkpoints."})


@dataclass
class Plan:
    """What to run: the parsed arguments and the resolved --do_train / --do_eval."""

    student: StudentArguments
    data: DataArguments
    run: RunArguments
    args: ContrastiveDistillationConfig
    do_train: bool
    do_eval: bool


def build_parser() -> HfArgumentParser:
    parser = HfArgumentParser((StudentArguments, DataArguments, RunArguments, ContrastiveDistillationConfig),
                              description="Distil an image classifier into a small student with CKTF. The defaults "
                                          "are the offline demo's (bundled teacher, Fashion-MNIST); a --teacher of "
                                          "your own keeps them unless overridden.")
    parser.set_defaults(**SCRIPT_DEFAULTS)
    if _launched_distributed() and not _has_accelerator():
        # Without use_cpu the Trainer does not set up a gloo process group: each torchrun process would train its own
        # copy. On a machine without an accelerator, a distributed launch is a data-parallel job on CPU.
        parser.set_defaults(use_cpu=True)
    return parser


def _launched_distributed() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def _has_accelerator() -> bool:
    return torch.accelerator.is_available()


def parse_args(argv: Optional[list[str]] = None) -> Plan:
    """The command line, over a recipe file (``recipe.yaml`` first or ``--config recipe.yaml``), over the defaults."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    recipe_path = _recipe_path(argv)
    given = _dests_given(parser, argv)
    if recipe_path is not None:
        recipe = read_recipe(recipe_path, parser)
        parser.set_defaults(**recipe)
        given |= set(recipe)
    if argv and argv[0].endswith(RECIPE_SUFFIXES) and not argv[0].startswith("-"):
        argv = ["--config", *argv]
    student, data, run, args = parser.parse_args_into_dataclasses(args=argv)
    if "do_train" in given or "do_eval" in given:
        do_train, do_eval = bool("do_train" in given and args.do_train), bool("do_eval" in given and args.do_eval)
    else:
        do_train = do_eval = True
    if not do_train and not do_eval:
        parser.error("--do_train and --do_eval are both false: nothing to run.")
    if not do_eval and args.eval_strategy != "no":
        if "eval_strategy" in given:
            parser.error(f"--eval_strategy {args.eval_strategy.value} evaluates during training, but --do_eval is "
                         "not given: add --do_eval, or drop --eval_strategy.")
        parser.set_defaults(eval_strategy="no")  # --do_train alone: no evaluation at all
        student, data, run, args = parser.parse_args_into_dataclasses(args=argv)
    return Plan(student, data, run, args, do_train, do_eval)


def _recipe_path(argv: list[str]) -> Optional[str]:
    if argv and argv[0].endswith(RECIPE_SUFFIXES) and not argv[0].startswith("-"):
        return argv[0]
    for i, arg in enumerate(argv):
        if arg == "--config" and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith("--config="):
            return arg.split("=", 1)[1]
    return None


def _dests_given(parser: HfArgumentParser, argv: list[str]) -> set[str]:
    """The fields named by the flags on the command line."""
    actions = parser._option_string_actions
    return {actions[arg.split("=", 1)[0]].dest for arg in argv if arg.split("=", 1)[0] in actions}


def read_recipe(path: str, parser: HfArgumentParser) -> dict[str, Any]:
    """A YAML recipe as parser defaults: its keys are flag names (without ``--``; aliases such as ``dataset`` too).
    An unknown key is an error naming it (and the closest flag)."""
    if not os.path.isfile(path):
        raise SystemExit(f"error: recipe {path}: no such file.")
    with open(path) as f:
        try:
            recipe = yaml.safe_load(f) or {}
        except yaml.YAMLError as err:
            raise SystemExit(f"error: recipe {path} is not valid YAML: {err}") from None
    if not isinstance(recipe, dict):
        raise SystemExit(f"error: recipe {path} must be a mapping of flag names to values, got {type(recipe).__name__}.")
    actions = parser._option_string_actions
    defaults = {}
    for key, value in recipe.items():
        action = actions.get(f"--{key}")
        if action is None or action.dest in ("help", "config"):
            close = difflib.get_close_matches(f"--{key}", [o for o in actions if o.startswith("--")], n=1)
            hint = f" (did you mean {close[0][2:]!r}?)" if close else ""
            raise SystemExit(f"error: recipe {path}: unknown key {key!r}{hint}. Keys are the script's flag names "
                             "without '--' (see --help).")
        if value is False and "no" in (action.choices or ()):
            value = "no"  # YAML reads an unquoted `no` as false: `eval_strategy: no` means the choice "no"
        defaults[action.dest] = value
    return defaults


def main() -> None:
    plan = parse_args()
    student_args, data_args, run_args, args = plan.student, plan.data, plan.run, plan.args
    log_level = args.get_process_log_level()
    logging.set_verbosity(log_level)
    datasets.utils.logging.set_verbosity(log_level)
    resume = checkpoint_to_resume(args, run_args.overwrite_output_dir) if plan.do_train else None

    remote = {"trust_remote_code": args.trust_remote_code}
    processor = AutoImageProcessor.from_pretrained(args.teacher, revision=args.teacher_revision, **remote)
    teacher_config = AutoConfig.from_pretrained(args.teacher, revision=args.teacher_revision, **remote)
    image_size = _processor_image_size(processor)
    set_seed(args.seed)  # a reproducible student initialisation
    student = load_or_build_student(student_args.student, teacher_config, image_size, **remote)

    train, evaluation = load_splits(data_args, args.seed, plan.do_train, plan.do_eval)
    train_view = train if train is not None else evaluation  # evaluation only: the trainer's probe batch
    train_view = train_view.with_transform(ImageClassificationTransform(processor, augment=data_args.augment))
    eval_view = None if evaluation is None else evaluation.with_transform(ImageClassificationTransform(processor))

    trainer = ContrastiveDistillationTrainer(model=student, args=args, train_dataset=train_view,
                                             eval_dataset=eval_view, processing_class=processor)
    if trainer.is_world_process_zero():
        print(startup_summary(trainer, student_args.student, data_args, train, evaluation), flush=True)
    student_metrics = teacher_metrics = None
    if plan.do_train:
        try:
            result = trainer.train(resume_from_checkpoint=resume)
        except TrainingInterrupted as stop:
            print(stop, file=sys.stderr)
            sys.exit(128 + signal.SIGTERM)
        trainer.save_model()  # main process only
        metrics = {**result.metrics, "train_samples": len(train)}
        trainer.log_metrics("train", metrics)
        trainer.save_metrics("train", metrics)
        trainer.save_state()
    if plan.do_eval:
        student_metrics = trainer.evaluate()
        teacher_metrics = trainer.evaluate_teacher()
        metrics = {**student_metrics, **teacher_metrics, "eval_samples": len(evaluation)}
        trainer.log_metrics("eval", metrics)
        trainer.save_metrics("eval", metrics)
    if plan.do_train:
        card_kwargs = {"dataset": _dataset_label(data_args), "dataset_split": data_args.eval_split}
        if args.push_to_hub:
            trainer.push_to_hub(**card_kwargs)
        else:
            trainer.create_model_card(**card_kwargs)  # main process only
    if trainer.is_world_process_zero():
        print(summary(trainer, student_metrics, teacher_metrics, student_args.student, data_args.dataset_name,
                      plan.do_train))


def load_splits(data: DataArguments, seed: int, do_train: bool, do_eval: bool):
    """The training and evaluation splits (None when not needed), as ``run_image_classification.py`` picks them:
    ``--eval_split``, else ``validation``, else ``test``, else ``--train_val_split`` of the training split; each
    shuffled with ``seed`` before ``--max_*_samples`` are taken."""
    columns = {"image_column": data.image_column_name, "label_column": data.label_column_name}
    if data.train_dir or data.validation_dir:
        dataset = load_image_folders(data.train_dir, data.validation_dir, **columns)
    else:
        dataset = load_image_dataset(data.dataset_name, data.data_dir, config_name=data.dataset_config_name,
                                     **columns)
    eval_split = data.eval_split or next((s for s in ("validation", "test") if s in dataset), None)
    for split, needed in ((data.train_split, do_train or eval_split is None), (eval_split, do_eval)):
        if needed and split is not None and split not in dataset:
            raise SystemExit(f"error: the dataset has no split {split!r}; its splits are {list(dataset)}.")
    if do_eval and eval_split is None:
        if not 0 < data.train_val_split < 1:
            raise SystemExit(f"error: the dataset has only the splits {list(dataset)}: pass --eval_split, "
                             "--validation_dir, or --train_val_split between 0 and 1.")
        stratify = "label" if isinstance(dataset[data.train_split].features.get("label"), datasets.ClassLabel) else None
        held_out = dataset[data.train_split].train_test_split(test_size=data.train_val_split, seed=seed,
                                                              stratify_by_column=stratify)
        dataset[data.train_split], dataset["validation"] = held_out["train"], held_out["test"]
        eval_split = data.eval_split = "validation"
    data.eval_split = eval_split
    train = _first(dataset[data.train_split], data.max_train_samples, seed) if do_train else None
    evaluation = _first(dataset[eval_split], data.max_eval_samples, seed) if do_eval else None
    return train, evaluation


def _first(split: datasets.Dataset, count: Optional[int], seed: int) -> datasets.Dataset:
    """``count`` rows of ``split`` drawn with ``seed`` (all of it when ``count`` is None)."""
    if not count or count >= len(split):
        return split
    return split.shuffle(seed=seed).select(range(count))


def _classes(split: datasets.Dataset) -> str:
    """``"7 of 10 classes"``: the classes present in ``split`` (e.g. after ``--max_train_samples``)."""
    present = len(set(split["label"]))
    feature = split.features.get("label")
    total = feature.num_classes if isinstance(feature, datasets.ClassLabel) else present
    return f"{present} of {total} classes"


def _dataset_label(data: DataArguments) -> str:
    """The dataset as the model card names it: a folder's name, a built-in's Hub id (or description), a Hub id."""
    if data.train_dir or data.validation_dir:
        return os.path.basename(os.path.normpath(data.train_dir or data.validation_dir))
    return BUILTIN_DATASET_CARD_NAMES.get(data.dataset_name, data.dataset_name)


def startup_summary(trainer: ContrastiveDistillationTrainer, student_name: str, data: DataArguments,
                    train: Optional[datasets.Dataset], evaluation: Optional[datasets.Dataset]) -> str:
    """What is about to run: teacher, student and projector sizes, the data, and the layer pairing."""
    args = trainer.args
    student = trainer.accelerator.unwrap_model(trainer.model)
    teacher = trainer.accelerator.unwrap_model(trainer.teacher)
    student_params = sum(p.numel() for n, p in student.named_parameters() if not is_objective_key(n))
    projector_params = sum(p.numel() for p in trainer.objective.parameters() if p.requires_grad)
    data_lines = []
    if train is not None:
        data_lines.append(f"{len(train):,} training images of {_classes(train)} (split {data.train_split!r})")
    if evaluation is not None:
        data_lines.append(f"{len(evaluation):,} evaluation images of {_classes(evaluation)} "
                          f"(split {data.eval_split!r})")
    lines = [
        "CKTF distillation",
        f"  teacher     {args.teacher}: {type(teacher).__name__}, {sum(p.numel() for p in teacher.parameters()):,} "
        "parameters",
        f"  student     {student_name}: {type(student).__name__}, {student_params:,} parameters",
        f"  projectors  {projector_params:,} parameters, trained with the student and not saved (the Trainer's "
        f"\"trainable parameters\" count, {student_params + projector_params:,}, includes them)",
        f"  objective   preset {args.preset}, {args.negatives} negatives",
        f"  data        {_dataset_label(data)}: " + ", ".join(data_lines),
        "  layer pairing:",
        *("    " + line for line in trainer.pairing.table.splitlines()),
    ]
    return "\n".join(lines)


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
            finished = _finished_run(checkpoint, args)
            if finished:
                raise SystemExit(
                    f"error: --output_dir {args.output_dir} holds a finished run ({checkpoint} is {finished}) and "
                    "this run's schedule is no longer: resuming would train past its end and rewrite its student. "
                    "Pass a longer --max_steps or --num_train_epochs to continue it, --overwrite_output_dir to train "
                    "again from scratch, or another --output_dir."
                )
            print(f"Resuming from {checkpoint}; pass --overwrite_output_dir to train from scratch instead.",
                  file=sys.stderr)
            return checkpoint
    if [entry for entry in os.listdir(args.output_dir) if not entry.startswith("_cktf")]:  # not only our bookkeeping
        raise SystemExit(
            f"error: --output_dir {args.output_dir} already holds files and no checkpoint to resume from. Pass "
            "--overwrite_output_dir to train into it anyway, or choose another --output_dir."
        )
    return None


def _finished_run(checkpoint: str, args: ContrastiveDistillationConfig) -> Optional[str]:
    """``"step N of N"`` when ``checkpoint`` ends its run and ``args`` asks for no longer a schedule, else None."""
    state = TrainerState.load_from_json(os.path.join(checkpoint, TRAINER_STATE_NAME))
    if state.global_step < state.max_steps:  # cut short: resume it
        return None
    longer = (args.max_steps > state.global_step if args.max_steps > 0
              else args.num_train_epochs > state.num_train_epochs)
    return None if longer else f"step {state.global_step} of {state.max_steps}"


def _processor_image_size(processor) -> int:
    size = getattr(processor, "size", None) or {}
    return int(size.get("height") or size.get("shortest_edge") or 224)


def summary(trainer, student_metrics: Optional[dict], teacher_metrics: Optional[dict], student_name: str,
            dataset: str, trained: bool) -> str:
    """Teacher vs student: accuracy (when evaluated), parameters, size and CPU latency (as measured for the model
    card, when one was written), plus the from-scratch baseline if the benchmark measured it."""
    rows = []
    if student_metrics is not None:
        rows.append(("accuracy (top-1)", f"{teacher_metrics['teacher_accuracy']:.2%}",
                     f"{student_metrics['eval_accuracy']:.2%}"))
    card = trainer.card_info
    if card is not None:
        teacher_stats, student_stats = card.teacher_stats, card.student_stats
        rows += [("parameters", f"{teacher_stats.parameters:,}", f"{student_stats.parameters:,}"),
                 ("size on disk", f"{teacher_stats.size_bytes / 1e6:.2f} MB",
                  f"{student_stats.size_bytes / 1e6:.2f} MB")]
        for batch in sorted(student_stats.latency_ms):
            rows.append((f"CPU latency, batch {batch}", f"{teacher_stats.latency_ms[batch]:.2f} ms",
                         f"{student_stats.latency_ms[batch]:.2f} ms"))
    lines = ["", f"{'':<22}{'teacher':>16}{'student':>16}"] + [f"{a:<22}{b:>16}{c:>16}" for a, b, c in rows]
    if card is not None:
        lines.append(f"compression {teacher_stats.parameters / student_stats.parameters:.1f}x fewer parameters"
                     + (f"; latency measured as: {student_stats.latency_setup}" if student_stats.latency_ms else ""))
    scratch = _scratch_line(student_name, dataset)
    if scratch is not None and student_metrics is not None:
        lines.append(scratch)
    if trained:
        lines.append(f"student, model card, distillation_config.json and the metrics (all_results.json) written to "
                     f"{trainer.args.output_dir}")
    else:
        lines.append(f"evaluation only: metrics written to {os.path.join(trainer.args.output_dir, 'eval_results.json')}")
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
    baselines = results.get("scratch_baselines", {})
    # the benchmark names the student by its former name (vit-tiny for cktf-vit-tiny)
    entry = baselines.get(f"{dataset}/{student_name}") or baselines.get(f"{dataset}/{student_name.removeprefix('cktf-')}")
    return entry or None


if __name__ == "__main__":
    main()
