"""Tiny models and real small data for trainer tests (sklearn digits upsampled to 16×16 RGB)."""

from __future__ import annotations

import numpy as np
import torch
from datasets import Dataset
from sklearn.datasets import load_digits
from transformers import ConvNextConfig, ConvNextForImageClassification, ResNetConfig, ResNetForImageClassification
from transformers import ViTConfig, ViTForImageClassification

IMAGE_SIZE = 16
LABELS = {i: str(i) for i in range(10)}


def _label_kwargs(num_labels: int = 10) -> dict:
    id2label = {i: LABELS[i] for i in range(num_labels)}
    return {"num_labels": num_labels, "id2label": id2label, "label2id": {v: k for k, v in id2label.items()}}


def vit(hidden_size: int = 32, layers: int = 2, num_labels: int = 10, seed: int = 0) -> ViTForImageClassification:
    torch.manual_seed(seed)
    config = ViTConfig(image_size=IMAGE_SIZE, patch_size=4, hidden_size=hidden_size, num_hidden_layers=layers,
                       num_attention_heads=2, intermediate_size=2 * hidden_size, **_label_kwargs(num_labels))
    return ViTForImageClassification(config)


def resnet(widths: tuple[int, ...] = (8, 16), num_labels: int = 10, seed: int = 0) -> ResNetForImageClassification:
    torch.manual_seed(seed)
    config = ResNetConfig(embedding_size=8, hidden_sizes=list(widths), depths=[1] * len(widths),
                          downsample_in_first_stage=False, **_label_kwargs(num_labels))
    return ResNetForImageClassification(config)


def convnext(widths: tuple[int, ...] = (8, 16), seed: int = 0) -> ConvNextForImageClassification:
    torch.manual_seed(seed)
    config = ConvNextConfig(hidden_sizes=list(widths), depths=[1] * len(widths), patch_size=2,
                            image_size=IMAGE_SIZE, **_label_kwargs())
    return ConvNextForImageClassification(config)


def digits(split: str = "train", limit: int | None = None) -> Dataset:
    """sklearn digits as ``pixel_values`` [3, 16, 16] (normalised) and ``labels``; a fixed 1,500 / 297 split."""
    data = load_digits()
    images = data.images.astype(np.float32) / 16.0
    images = images.repeat(2, axis=1).repeat(2, axis=2)  # 8×8 → 16×16
    images = (images - 0.5) / 0.5
    pixel_values = np.repeat(images[:, None], 3, axis=1)
    labels = data.target.astype(np.int64)
    part = slice(0, 1500) if split == "train" else slice(1500, None)
    pixel_values, labels = pixel_values[part], labels[part]
    if limit is not None:
        pixel_values, labels = pixel_values[:limit], labels[:limit]
    return Dataset.from_dict({"pixel_values": pixel_values, "labels": labels}).with_format("torch")


def assert_bank_step_matches(loss, expected, leaves, references, flush, memories, values, index) -> None:
    """One bank-NCE step against its naive float64 formulation: the loss, the gradients of both sides' embeddings
    (``leaves`` against ``references``); then the module's bank write (``flush``), and the naive banks (``memories``,
    updated in place) take the reference momentum update (0.5) with the step's ``values`` at ``index``."""
    import pytest
    import torch.nn.functional as F

    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    loss.backward()
    expected.backward()
    for leaf, reference in zip(leaves, references):
        torch.testing.assert_close(leaf.grad.double(), reference.grad, rtol=1e-4, atol=1e-6)
    flush()
    for memory, v in zip(memories, values):
        memory[index] = F.normalize(memory[index] * 0.5 + v.double() * 0.5, dim=1)
