"""Distil an image classifier into a small student with CKTF.

With no arguments it runs the offline demo: the Fashion-MNIST ResNet teacher shipped in
``examples/teachers/fashion-mnist-resnet`` → a ``cktf-vit-tiny`` student with 7-px patches on the real Fashion-MNIST,
evaluated on the full 10,000-image test split, written to ``outputs/distill_vit``. The script's defaults ARE the
demo's (``--help`` shows them): a ``--teacher`` of your own keeps them (4 epochs, batch 64, ...) unless you override
them; the objective (negatives, weights) is the ``--preset``'s unless you set its fields. ``examples/recipes/`` holds
the demo's and the benchmark's recipes.

Usage:

    # one process (CPU or one GPU)
    python examples/distill_vit.py
    python examples/distill_vit.py examples/recipes/benchmark.yaml --num_train_epochs 3   # a recipe, one value changed
    python examples/distill_vit.py args.json                  # transformers' JSON args file: flag_name: value
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
``TrainingArguments`` is a flag, and a key of a recipe (YAML or JSON, ``flag_name: value``, read strictly by
``cktf_hf.demo.RecipeArgumentParser``; flags on the command line win; ``--trust_remote_code`` only on the command
line). The conventions of transformers' ``run_image_classification.py`` hold: ``--dataset_name`` /
``--dataset_config_name``, ``--train_dir`` / ``--validation_dir``, ``--train_val_split``, ``--image_column_name`` /
``--label_column_name``, ``--max_train_samples`` / ``--max_eval_samples`` (a seeded shuffle, then the first N),
``--do_train`` / ``--do_eval`` (neither: both); after training ``train_results.json``, ``eval_results.json``,
``all_results.json`` and ``trainer_state.json`` are in ``--output_dir``.

Rerunning with the same ``--output_dir`` resumes from its last complete checkpoint (``--resume_from_checkpoint PATH``
names another one), unless that run is finished and the schedule is no longer (``trainer.train`` refuses it); an
``--output_dir`` that holds files but no checkpoint is refused unless ``--overwrite_output_dir`` is given, and one that
is, or contains, the teacher's folder or a data folder always. On SIGTERM the run saves a checkpoint and exits with
status 143; rerun the same command to resume. A known user error (a teacher near chance, class names that do not
match, nce_k too large for the data, a folder that does not load, a checkpoint whose objective changed, ...) ends in
one ``error:`` line that names the fix, with exit status 2.
"""

from __future__ import annotations

import os
import signal
import sys
from dataclasses import dataclass, field
from typing import Any, Optional

import datasets
import torch
from transformers import AutoConfig, AutoImageProcessor, set_seed
from transformers.utils import logging

from cktf_hf import ContrastiveDistillationConfig, ContrastiveDistillationTrainer, MemoryBankNCELoss
from cktf_hf.checkpointing import last_complete_checkpoint, resolve_resume
from cktf_hf.demo import (DEFAULT_TEACHER, RecipeArgumentParser, check_positive, describe_dataset, load_image_dataset,
                          load_image_folders, load_or_build_student)
from cktf_hf.demo.datasets import check_held_out_split, check_image_folder, is_image_folder
from cktf_hf.demo.students import builds_fresh_student
from cktf_hf.formatting import format_accuracy, format_bytes, format_count, format_ratio
from cktf_hf.locations import check_output_dir_apart
from cktf_hf.measure import ModelStats, count_parameters, measure_model
from cktf_hf.model_card import format_latency
from cktf_hf.hub import HubPushError
from cktf_hf.run_guard import (FinalStepsGuard, OutputDirLocked, TrainingInterrupted, clear_previous_results,
                               finished_run_files, load_finished_run, refuse_finished_run, student_to_evaluate)
from cktf_hf.transforms import ImageClassificationTransform
from cktf_hf.validation import TEACHER_CHECK_SAMPLES

# The script's defaults: the demo's (examples/recipes/demo.yaml spells them out). No objective field here: those are
# the preset's unless the user sets them (the default preset, cktf, has in-batch negatives: the reference memory bank
# costs about 0.6 s a step on 2 CPU cores against 0.1 s; on a GPU it is cheap: pass --negatives memory_bank).
SCRIPT_DEFAULTS: dict[str, Any] = {
    "teacher": DEFAULT_TEACHER, "preset": "cktf", "num_train_epochs": 4,
    "output_dir": "outputs/distill_vit", "eval_strategy": "epoch", "save_strategy": "epoch", "save_total_limit": 1,
    "per_device_train_batch_size": 64, "per_device_eval_batch_size": 256, "learning_rate": 2e-3,
    "weight_decay": 0.05, "warmup_steps": 0.05, "lr_scheduler_type": "cosine", "logging_steps": 50,
}


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

    def __post_init__(self) -> None:
        check_positive(self, "max_train_samples", "max_eval_samples")

    def local_folders(self) -> dict[str, str]:
        """The local data folders this run reads, by flag."""
        names = ("train_dir", "validation_dir", "dataset_name", "data_dir")
        return {f"--{name}": getattr(self, name) for name in names if getattr(self, name)
                and os.path.isdir(getattr(self, name))}


@dataclass
class StudentArguments:
    student: str = field(default="cktf-vit-tiny:patch=7", metadata={
        "help": "A named size (cktf-vit-nano, cktf-vit-tiny, cktf-vit-small, cktf-vit-base; :patch=N sets its patch "
                "size), teacher:depth=0.5,width=1.0 (the teacher shrunk, initialised from its weights), a Hub id or a "
                "folder."})


@dataclass
class RunArguments:
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


def build_parser() -> RecipeArgumentParser:
    parser = RecipeArgumentParser((StudentArguments, DataArguments, RunArguments, ContrastiveDistillationConfig),
                                  description="Distil an image classifier into a small student with CKTF. The "
                                              "defaults are the offline demo's (bundled teacher, Fashion-MNIST); a "
                                              "--teacher of your own keeps them unless overridden.")
    parser.set_defaults(**SCRIPT_DEFAULTS)
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not torch.accelerator.is_available():
        # Without use_cpu the Trainer does not set up a gloo process group: each torchrun process would train its own
        # copy. On a machine without an accelerator, a distributed launch is a data-parallel job on CPU.
        parser.set_defaults(use_cpu=True)
    return parser


def parse_args(argv: Optional[list[str]] = None) -> Plan:
    """The command line, over a recipe file (``recipe.yaml`` / ``args.json`` first, or ``--config FILE``), over the
    defaults. ``--do_train`` / ``--do_eval``: neither given runs both; ``--do_train`` alone evaluates nothing."""
    parser = build_parser()
    command_line = parser.apply_config(argv)
    chosen, _ = parser.parse_known_args(command_line)
    do_train, do_eval = (chosen.do_train, chosen.do_eval) if {"do_train", "do_eval"} & parser.given else (True, True)
    if not do_train and not do_eval:
        parser.error("--do_train and --do_eval are both false: nothing to run.")
    if not do_eval and chosen.eval_strategy != "no":
        if "eval_strategy" in parser.given:
            parser.error(f"--eval_strategy {chosen.eval_strategy} evaluates during training, but --do_eval is not "
                         "given: add --do_eval, or drop --eval_strategy.")
        parser.set_defaults(eval_strategy="no")  # --do_train alone: no evaluation at all
    student, data, run, args = parser.parse_command_line(command_line)
    try:
        for flag, folder in data.local_folders().items():
            check_output_dir_apart(args.output_dir, folder, f"the {flag} folder")
        if not do_train:  # results written into a run's folder describe that run's student
            saved = "student" in parser.given and not builds_fresh_student(student.student)
            student.student = student_to_evaluate(args.output_dir, student.student, saved)
    except ValueError as err:
        parser.error(str(err))
    return Plan(student, data, run, args, do_train, do_eval)


# The errors whose message says what to change: the library's and the demo's refusals (TeacherCheckFailed, the label
# spaces, nce_k, the shrink, a folder that does not load, a checkpoint whose objective changed, a finished run: all
# ValueErrors), a missing folder, a Hub repo that cannot be made, an output_dir another run writes.
USER_ERRORS = (ValueError, FileNotFoundError, HubPushError, OutputDirLocked)


def main() -> None:
    """Parse, run, and turn a known user error into one ``error:`` line with exit status 2, as the argument parser
    does (no traceback); SIGTERM ends with status 143 once the step under way is saved."""
    try:
        run(parse_args())
    except TrainingInterrupted as stop:
        print(stop, file=sys.stderr)
        sys.exit(128 + signal.SIGTERM)
    except USER_ERRORS as err:
        build_parser().error(" ".join(str(err).split()))


def run(plan: Plan) -> None:
    """Load the teacher, the student and the data, print what is about to run, then run it (see :func:`run_steps`)."""
    student_args, data_args, run_args, args = plan.student, plan.data, plan.run, plan.args
    log_level = args.get_process_log_level()
    logging.set_verbosity(log_level)
    datasets.utils.logging.set_verbosity(log_level)
    resume, finishing = checkpoint_to_resume(plan) if plan.do_train else (None, False)

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
    if plan.do_train and run_args.overwrite_output_dir and trainer.is_world_process_zero():
        clear_previous_results(args.output_dir)  # they describe the student trained over
    final_steps = FinalStepsGuard()
    with final_steps.installed():  # until the end: after training, the step under way ends, the rerun does the rest
        metrics = run_steps(plan, trainer, train, evaluation, resume, finishing, final_steps)
        if trainer.is_world_process_zero():
            print(summary(trainer, metrics, plan.do_train))


def run_steps(plan: Plan, trainer: ContrastiveDistillationTrainer, train, evaluation, resume: Optional[str],
              finishing: bool, final_steps: FinalStepsGuard) -> dict[str, float]:
    """Train (or, for a finished run whose final steps were cut short, load its final student), save, evaluate, write
    the card and push; a SIGTERM after training stops between these steps. Returns the evaluation metrics."""
    args, metrics = plan.args, {}
    if plan.do_train:
        result = load_finished_run(trainer, resume) if finishing else trainer.train(resume_from_checkpoint=resume)
        trainer.save_model()  # main process only; through a temporary folder
        train_metrics = {**result.metrics, "train_samples": len(train)}
        trainer.log_metrics("train", train_metrics)
        trainer.save_metrics("train", train_metrics)
        trainer.save_state()
        final_steps.stop_if_requested("saving the student", args.output_dir)
    if plan.do_eval:
        metrics = trainer.evaluate()
        if trainer.label_alignment.teacher_scorable:  # else its classes are not the dataset's: no score to give
            metrics.update(trainer.evaluate_teacher())
        metrics["eval_samples"] = len(evaluation)
        trainer.log_metrics("eval", metrics)
        trainer.save_metrics("eval", metrics)
        final_steps.stop_if_requested("the evaluation", args.output_dir)
    if plan.do_train:
        card_kwargs = {"dataset": _dataset_label(plan.data), "dataset_split": plan.data.eval_split}
        if args.push_to_hub:
            trainer.push_to_hub(**card_kwargs)
        else:
            trainer.create_model_card(**card_kwargs)  # main process only
    return metrics


def load_splits(data: DataArguments, seed: int, do_train: bool, do_eval: bool):
    """The training and evaluation splits (None when not needed), as ``run_image_classification.py`` picks them:
    ``--eval_split``, else ``validation``, else ``test``, else ``--train_val_split`` of the training split; each
    shuffled with ``seed`` before ``--max_*_samples`` are taken."""
    columns = {"image_column": data.image_column_name, "label_column": data.label_column_name}
    if data.train_dir or data.validation_dir:
        dataset = load_image_folders(data.train_dir, data.validation_dir, **columns)  # checks the image files
    else:
        if os.path.isdir(data.dataset_name) and is_image_folder(data.dataset_name):
            check_image_folder(data.dataset_name, "--dataset_name")  # its image files, before training
        dataset = load_image_dataset(data.dataset_name, data.data_dir, config_name=data.dataset_config_name,
                                     **columns)
    eval_split = data.eval_split or next((s for s in ("validation", "test") if s in dataset), None)
    for split, needed in ((data.train_split, do_train or eval_split is None), (eval_split, do_eval)):
        if needed and split is not None and split not in dataset:
            raise ValueError(f"the dataset has no split {split!r}; its splits are {list(dataset)}.")
    if do_eval and eval_split is None:
        if not 0 < data.train_val_split < 1:
            raise ValueError(f"the dataset has only the splits {list(dataset)}: pass --eval_split, --validation_dir, "
                             "or --train_val_split between 0 and 1.")
        stratify = "label" if isinstance(dataset[data.train_split].features.get("label"), datasets.ClassLabel) else None
        check_held_out_split(dataset[data.train_split], data.train_val_split)
        held_out = dataset[data.train_split].train_test_split(test_size=data.train_val_split, seed=seed,
                                                              stratify_by_column=stratify)
        dataset[data.train_split], dataset["validation"] = held_out["train"], held_out["test"]
        eval_split = "validation"
    data.eval_split = eval_split
    train = _first(dataset[data.train_split], data.max_train_samples, seed) if do_train else None
    evaluation = _first(dataset[eval_split], data.max_eval_samples, seed) if do_eval else None
    return train, evaluation


def _first(split: datasets.Dataset, count: Optional[int], seed: int) -> datasets.Dataset:
    """``count`` rows of ``split`` drawn with ``seed`` (all of it when ``count`` is None)."""
    if count is None or count >= len(split):
        return split
    return split.shuffle(seed=seed).select(range(count))


def _classes(split: datasets.Dataset) -> str:
    """``"7 of 10 classes"``: the classes present in ``split`` (e.g. after ``--max_train_samples``)."""
    present = len(set(split["label"]))
    feature = split.features.get("label")
    total = feature.num_classes if isinstance(feature, datasets.ClassLabel) else present
    return f"{present} of {total} classes"


def _dataset_label(data: DataArguments) -> str:
    """The dataset as the model card names it (:func:`cktf_hf.demo.describe_dataset`): a Hub id, which the card's
    ``datasets`` metadata takes, or words for local data (``my_images (local folder)``), which it names in its text
    only."""
    if data.train_dir or data.validation_dir:
        return describe_dataset(data.train_dir or data.validation_dir).name
    return describe_dataset(data.dataset_name, data.data_dir).name


def startup_summary(trainer: ContrastiveDistillationTrainer, student_name: str, data: DataArguments,
                    train: Optional[datasets.Dataset], evaluation: Optional[datasets.Dataset]) -> str:
    """What is about to run: teacher, student and projector sizes, the objective as resolved, the data, how its classes
    were matched with the teacher's, the teacher check's score, and the layer pairing."""
    args = trainer.args
    student = trainer.accelerator.unwrap_model(trainer.model)
    teacher = trainer.accelerator.unwrap_model(trainer.teacher)
    student_params = count_parameters(student)
    projector_params = sum(p.numel() for p in trainer.objective.parameters() if p.requires_grad)
    data_lines = []
    if train is not None:
        data_lines.append(f"{len(train):,} training images of {_classes(train)} (split {data.train_split!r})")
    if evaluation is not None:
        data_lines.append(f"{len(evaluation):,} evaluation images of {_classes(evaluation)} "
                          f"(split {data.eval_split!r})")
    lines = [
        "CKTF distillation",
        f"  teacher     {args.teacher}: {type(teacher).__name__}, {count_parameters(teacher):,} parameters",
        f"  student     {student_name}: {type(student).__name__}, {student_params:,} parameters",
        f"  projectors  {projector_params:,} parameters, trained with the student and not saved (the Trainer's "
        f"\"trainable parameters\" count, {student_params + projector_params:,}, includes them)",
        f"  objective   {describe_objective(trainer)}",
        f"  data        {_dataset_label(data)}: " + ", ".join(data_lines),
        *([f"  {trainer.label_alignment.summary}"] if trainer.label_alignment.summary else []),
        f"  teacher check  {_teacher_check(trainer, evaluation)}",
        "  layer pairing:",
        *("    " + line for line in trainer.pairing.table.splitlines()),
    ]
    return "\n".join(lines)


def _teacher_check(trainer: ContrastiveDistillationTrainer, evaluation: Optional[datasets.Dataset]) -> str:
    """The teacher's score on a sample of the evaluation images before training, or why it was not scored."""
    if trainer.teacher_check_accuracy is not None:
        return (f"the teacher scores {format_accuracy(trainer.teacher_check_accuracy)} on up to "
                f"{TEACHER_CHECK_SAMPLES} evaluation images")
    if not trainer.label_alignment.teacher_scorable:
        return "not run: the teacher's classes are not the dataset's, it cannot be scored on this data"
    if not trainer.args.teacher_check:
        return "off (--teacher_check false)"
    return "not run: no evaluation images" if evaluation is None else "not run: the evaluation data has no labels"


def describe_objective(trainer: ContrastiveDistillationTrainer) -> str:
    """The objective as resolved (``args.objective_settings``) and as built (its contrastive terms' negatives)."""
    args, settings = trainer.args, trainer.args.objective_settings
    terms = [f"γ={settings.ce_weight:g} CE", f"α={settings.kd_weight:g} KD (T={settings.kd_temperature:g})",
             f"β={settings.final_weight:g} final pair", f"θ={settings.layer_weight:g} each intermediate pair",
             *(f"{name}={weight:g}" for name, weight in settings.classic.items())]
    contrastive = list(trainer.objective.contrastive.values())
    negatives = ("no contrastive term" if not contrastive else
                 f"memory-bank negatives (nce_k {args.nce_k})" if isinstance(contrastive[0], MemoryBankNCELoss) else
                 "in-batch negatives")
    return f"preset {args.preset}: {', '.join(terms)}; τ={settings.temperature:g}, {negatives}"


def checkpoint_to_resume(plan: Plan) -> tuple[Optional[str], bool]:
    """``--resume_from_checkpoint``, else the last complete checkpoint of ``output_dir``; a non-empty ``output_dir``
    without one needs ``--overwrite_output_dir``. The library's refusals (an incomplete checkpoint, a finished run
    with its student, results and card) come here, before anything loads, as ``trainer.train`` would give them; True
    with a finished run that lacks some of those: it is finished without training."""
    args, overwrite = plan.args, plan.run.overwrite_output_dir
    checkpoint = args.resume_from_checkpoint
    if checkpoint is None and not overwrite and os.path.isdir(args.output_dir):
        checkpoint = last_complete_checkpoint(args.output_dir)  # skips incomplete ones, with a warning
        if checkpoint is None and [entry for entry in os.listdir(args.output_dir) if not entry.startswith("_cktf")]:
            raise ValueError(
                f"--output_dir {args.output_dir} already holds files and no checkpoint to resume from. Pass "
                "--overwrite_output_dir to train into it anyway, or choose another --output_dir."
            )
    if checkpoint is None:
        return None, False
    checkpoint = resolve_resume(checkpoint, args.output_dir)  # RunFinished is a ValueError
    finishing = refuse_finished_run(checkpoint, args, finished_run_files(plan.do_eval))
    print(f"Finishing the run of {checkpoint} (saving, evaluating, writing its card) without training again."
          if finishing else f"Resuming from {checkpoint}; pass --overwrite_output_dir to train from scratch instead.",
          file=sys.stderr)
    return checkpoint, finishing


def _processor_image_size(processor) -> int:
    size = getattr(processor, "size", None) or {}
    return int(size.get("height") or size.get("shortest_edge") or 224)


def summary(trainer: ContrastiveDistillationTrainer, metrics: dict[str, float], trained: bool) -> str:
    """Teacher vs student, formatted as the model card formats them: accuracy (when evaluated; the teacher's when it
    can be scored), then parameters, weight size and CPU latency with the spread of its repeats, measured now (latency
    when ``card_latency`` is on)."""
    args = trainer.args
    batch_sizes = args.card_latency_batch_sizes if args.card_latency else ()
    teacher, student = (measure_model(trainer.accelerator.unwrap_model(model), trainer.pairing.pixel_shape,
                                      batch_sizes)
                        for model in (trainer.teacher, trainer.model))
    rows = []
    if "eval_accuracy" in metrics:
        teacher_accuracy = metrics.get("teacher_accuracy")
        rows.append(("accuracy (top-1)",
                     "not scored" if teacher_accuracy is None else format_accuracy(teacher_accuracy),
                     format_accuracy(metrics["eval_accuracy"])))
    rows += [("parameters", format_count(teacher.parameters), format_count(student.parameters)),
             ("size on disk", format_bytes(teacher.size_bytes), format_bytes(student.size_bytes))]
    rows += [(f"CPU latency, batch {b} (ms)", format_latency(teacher, b), format_latency(student, b))
             for b in sorted(student.latency_ms)]
    lines = ["", f"{'':<26}{'teacher':>24}{'student':>24}", *(f"{a:<26}{b:>24}{c:>24}" for a, b, c in rows),
             _compression(teacher, student)]
    if trained:
        lines.append(f"student, model card, distillation_config.json and the metrics (all_results.json) written to "
                     f"{args.output_dir}")
    else:
        lines.append(f"evaluation only: metrics written to {os.path.join(args.output_dir, 'eval_results.json')}")
    return "\n".join(lines)


def _compression(teacher: ModelStats, student: ModelStats) -> str:
    line = (f"compression {format_ratio(teacher.parameters, student.parameters)} fewer parameters"
            if teacher.parameters >= student.parameters else
            f"no compression: the student has {format_ratio(student.parameters, teacher.parameters)} the teacher's "
            "parameters")
    return line + (f"; latency measured as: {student.latency_setup}" if student.latency_setup else "")


if __name__ == "__main__":
    main()
