"""Files the model card shows or points to, written next to it in ``output_dir`` (and so pushed with the student):
the training curves (``training_curves.png``, needs matplotlib) and an example image for the Hub widget
(``example.png``)."""

from __future__ import annotations

import os
from typing import Any, Optional, Sequence

import torch
from PIL import Image

__all__ = ["CURVES_FILE", "EXAMPLE_FILE", "example_image", "plot_training_curves"]

CURVES_FILE = "training_curves.png"
EXAMPLE_FILE = "example.png"


def plot_training_curves(
    curve: Sequence[tuple[float, float]], teacher_accuracy: Optional[float], folder: str,
    filename: str = CURVES_FILE,
) -> Optional[str]:
    """Plot the student's evaluation accuracy per epoch (``curve``: ``(epoch, accuracy)`` pairs) against the teacher's
    accuracy (a horizontal line) into ``folder/filename``; returns ``filename``, or ``None`` (nothing written) when
    there is no curve or matplotlib is not installed."""
    if not curve:
        return None
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        return None
    figure = Figure(figsize=(6, 3.6), dpi=100)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    epochs, accuracy = zip(*curve)
    axes.plot(epochs, [100 * a for a in accuracy], marker="o", label="student (CKTF)")
    if teacher_accuracy is not None:
        axes.axhline(100 * teacher_accuracy, color="tab:red", linestyle="--", label="teacher")
    axes.set_xlabel("epoch")
    axes.set_ylabel("top-1 accuracy (%)")
    axes.set_title("Evaluation accuracy during distillation")
    axes.grid(alpha=0.3)
    axes.legend(loc="lower right")
    figure.tight_layout()
    figure.savefig(os.path.join(folder, filename))
    return filename


def example_image(dataset: Any, processor: Any = None) -> Optional[tuple[Image.Image, Any]]:
    """The first example of ``dataset`` as an RGB image, with its label (or ``None``).

    A Hugging Face ``Dataset`` is read without its format or transform, so its own image column (any ``PIL`` value)
    is used; otherwise ``pixel_values`` are turned back into an image with the processor's ``image_mean`` / ``image_std`` (or
    stretched to 0..255 without them). ``None`` when the dataset cannot be indexed or holds no image.
    """
    if dataset is None or not hasattr(dataset, "__getitem__") or not hasattr(dataset, "__len__"):
        return None
    if not len(dataset):
        return None
    raw = dataset.with_format(None)[0] if hasattr(dataset, "with_format") else dataset[0]
    if not isinstance(raw, dict):
        return None
    label = next((raw[k] for k in ("labels", "label") if k in raw), None)
    if isinstance(label, torch.Tensor) and label.numel() == 1:
        label = label.item()
    for value in raw.values():
        if isinstance(value, Image.Image):
            return value.convert("RGB"), label
    if raw.get("pixel_values") is None:
        return None
    pixels = torch.as_tensor(raw["pixel_values"], dtype=torch.float32)
    if pixels.dim() != 3:
        return None
    mean, std = getattr(processor, "image_mean", None), getattr(processor, "image_std", None)
    if mean is not None and std is not None and len(mean) == len(std) == pixels.shape[0]:
        pixels = pixels * torch.tensor(std).view(-1, 1, 1) + torch.tensor(mean).view(-1, 1, 1)
    else:
        pixels = (pixels - pixels.min()) / (pixels.max() - pixels.min()).clamp_min(1e-12)
    array = (pixels.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    image = Image.fromarray(array[..., 0] if array.shape[-1] == 1 else array)
    return image.convert("RGB"), label
