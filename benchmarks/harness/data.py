"""Data and models of the benchmarks: the teacher's files, fixed stratified splits, images encoded once through the
teacher's processor (``encode``, saved for worker processes by ``save_encoded``), the named students and top-1
accuracy."""

from __future__ import annotations

import os
from typing import Any, Optional

import datasets
import numpy as np
import torch
from transformers import (
    AutoConfig,
    AutoImageProcessor,
    AutoModelForImageClassification,
    PretrainedConfig,
    ResNetConfig,
)
from transformers.utils import logging as hf_logging

from cktf_hf.demo import DEPRECATED_STUDENT_NAMES, load_or_build_student, student_config
from cktf_hf.transforms import ImageClassificationTransform

TEACHER_COMMAND = (
    "python examples/train_teacher.py --dataset fashion_mnist --architecture resnet --embedding_size 64 "
    "--hidden_sizes 64 128 256 --depths 1 1 1 --augment --augment_padding 1 --label_smoothing_factor 0.1 "
    "--num_train_epochs 16 --per_device_train_batch_size 128 --learning_rate 2e-3 --weight_decay 0.05 "
    "--lr_scheduler_type cosine --warmup_steps 0.05 --eval_strategy epoch --save_strategy no --seed 0 "
    "--output_dir examples/teachers/fashion-mnist-resnet"
)
# A small same-family student for a ResNet teacher (≈0.2M parameters at 28 px, 3 stages of one basic block).
RESNET_SMALL = dict(embedding_size=24, hidden_sizes=[32, 64, 96], depths=[1, 1, 1], layer_type="basic")
# The teacher at half width (about a quarter of its parameters), started from its weights by weight selection or fresh:
# the pair measures whether teacher initialisation helps (issue 15).
SHRUNK_TEACHERS = {"teacher-w0.5": "teacher:depth=1,width=0.5",
                   "teacher-w0.5-fresh": "teacher:depth=1,width=0.5,init=fresh"}
# The compression benchmark's default pair. The row label "vit-tiny" keys every committed run journal; the model is the
# library's `cktf-vit-tiny` (build_student maps the label, so a benchmark run does not warn about the old name).
STUDENTS = ("vit-tiny", "resnet-small")
KNOWN_STUDENTS = (*STUDENTS, *SHRUNK_TEACHERS)



def quiet() -> None:
    """Errors only from transformers, datasets and cktf_hf (whose notices, e.g. uniform negatives on unlabelled data,
    are expected here)."""
    import logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    datasets.disable_progress_bars()
    logging.getLogger("cktf_hf").setLevel(logging.ERROR)


def load_teacher_files(path: str) -> tuple[Any, PretrainedConfig, int]:
    """The teacher's image processor, config and input size; a clear exit when the folder is missing."""
    if not os.path.isfile(os.path.join(path, "config.json")):
        raise SystemExit(
            f"No teacher at {path!r} (config.json missing). Pass --teacher <folder or Hub id>, or train the shipped "
            f"one once (about 20-30 min on 2 CPU cores):\n  {TEACHER_COMMAND}"
        )
    processor = AutoImageProcessor.from_pretrained(path)
    size = getattr(processor, "size", None) or {}
    image_size = int(size.get("height") or size.get("shortest_edge") or 224)
    return processor, AutoConfig.from_pretrained(path), image_size


def fixed_subset(dataset: datasets.Dataset, size: Optional[int], seed: int = 0) -> datasets.Dataset:
    """A class-stratified subset of ``size`` examples, the same for every run (``seed`` fixes it, not the run's)."""
    if not size or size >= len(dataset):
        return dataset
    return dataset.train_test_split(train_size=size, stratify_by_column="label", seed=seed)["train"]


def train_validation_split(dataset: datasets.Dataset, val_size: int, train_size: Optional[int] = None,
                           seed: int = 0) -> tuple[datasets.Dataset, datasets.Dataset]:
    """A class-stratified validation split of ``val_size`` examples and, disjoint from it, a class-stratified training
    subset of ``train_size`` (``None`` or 0: all the rest); the same for every run (``seed`` fixes both).

    Model selection (epoch, learning rate) reads the validation split only; the test split is never looked at.
    """
    if not 0 < val_size < len(dataset):
        raise ValueError(f"val_size must be in 1..{len(dataset) - 1} (the dataset has {len(dataset)} examples), "
                         f"got {val_size}.")
    parts = dataset.train_test_split(test_size=val_size, stratify_by_column="label", seed=seed)
    if train_size and train_size > len(parts["train"]):
        raise ValueError(f"train_size {train_size} is more than the {len(parts['train'])} examples left beside the "
                         f"{val_size}-example validation split; lower it, or pass 0 for all of them.")
    return fixed_subset(parts["train"], train_size, seed), parts["test"]


def encode(dataset: datasets.Dataset, processor: Any, keep_labels: bool = True,
           batch_size: int = 2000) -> datasets.Dataset:
    """``image``/``label`` rows → ``pixel_values`` (float32 [3, H, W], the processor's output) and ``labels``.

    Without ``keep_labels`` the dataset has no label column at all: memory-bank negatives are then drawn uniformly
    and nothing can read a label (unlabelled target data in the transfer protocol).
    """
    transform = ImageClassificationTransform(processor)
    pixels, labels = [], []
    for start in range(0, len(dataset), batch_size):
        batch = dataset[start:start + batch_size]
        out = transform(batch)
        pixels.append(torch.stack(out["pixel_values"]).numpy())
        labels.extend(out["labels"])
    pixels = np.concatenate(pixels).astype(np.float32)
    columns: dict[str, Any] = {"pixel_values": pixels}
    features = {"pixel_values": datasets.Array3D(shape=pixels.shape[1:], dtype="float32")}
    if keep_labels:
        columns["labels"] = np.asarray(labels, dtype=np.int64)
        features["labels"] = datasets.Value("int64")
    return datasets.Dataset.from_dict(columns, features=datasets.Features(features)).with_format("torch")


def build_student(name: str, teacher_config: PretrainedConfig, image_size: int, seed: int) -> torch.nn.Module:
    """A student with the teacher's labels: ``vit-tiny`` (the library's ``cktf-vit-tiny``; the other named ViT sizes
    likewise) or ``resnet-small``, fresh, or a half-width teacher (:data:`SHRUNK_TEACHERS`)."""
    torch.manual_seed(seed)
    if name in SHRUNK_TEACHERS:
        return load_or_build_student(SHRUNK_TEACHERS[name], teacher_config, image_size)
    if name == "resnet-small":
        config = ResNetConfig(**RESNET_SMALL, num_channels=getattr(teacher_config, "num_channels", 3),
                              num_labels=teacher_config.num_labels, id2label=dict(teacher_config.id2label),
                              label2id=dict(teacher_config.label2id))
    else:
        config = student_config(DEPRECATED_STUDENT_NAMES.get(name, name), teacher_config, image_size=image_size)
    return AutoModelForImageClassification.from_config(config)


@torch.no_grad()
def accuracy(model: torch.nn.Module, dataset: datasets.Dataset, device: str, batch_size: int = 1000) -> float:
    """Top-1 accuracy of ``model`` on an encoded dataset."""
    model.eval().to(device)
    correct = 0
    for start in range(0, len(dataset), batch_size):
        batch = dataset[start:start + batch_size]
        logits = model(pixel_values=batch["pixel_values"].to(device)).logits
        correct += int((logits.argmax(-1).cpu() == batch["labels"]).sum())
    return correct / len(dataset)



def save_encoded(splits: dict[str, datasets.Dataset], folder: str) -> dict[str, str]:
    """Save encoded splits so that worker processes memory-map them instead of encoding again."""
    paths = {}
    for name, dataset in splits.items():
        paths[name] = os.path.join(folder, name)
        dataset.with_format(None).save_to_disk(paths[name])
    return paths


def load_encoded(paths: dict[str, str]) -> dict[str, datasets.Dataset]:
    return {name: datasets.load_from_disk(path).with_format("torch") for name, path in paths.items()}
