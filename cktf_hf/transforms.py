"""Batch transform for ``datasets.Dataset.with_transform``: images → ``pixel_values`` via an HF image processor.

Augmentation (train only) is a RandomCrop(size, padding=4)-style shifted crop plus a random horizontal flip, written
with torch ops on the processed batch (no torchvision). Random numbers come from torch's global RNG, so a seeded run,
and Trainer resuming with its checkpointed RNG state, replays the same augmentation.

Example::

    processor = ViTImageProcessor(size={"height": 28, "width": 28}, image_mean=[0.286] * 3, image_std=[0.353] * 3)
    train = ds["train"].with_transform(ImageClassificationTransform(processor, augment=True))
    test = ds["test"].with_transform(ImageClassificationTransform(processor))
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from PIL import Image

__all__ = ["ImageClassificationTransform", "to_rgb"]


def to_rgb(image: Any) -> Image.Image:
    """Return ``image`` (PIL image of any mode, or an HxW / HxWxC array) as a PIL RGB image.

    Images deeper than 8 bits are scaled to 8 bits first (PIL's own conversion clips them, turning a 16-bit image
    black and white): 16-bit integers (mode ``I;16*``, ``uint16`` arrays) are divided by 257, so 0..65535 maps onto
    0..255. For 32-bit integers (mode ``I``) and floats (mode ``F``) the range is read from the values: integers
    within 0..255 are kept and within 0..65535 divided by 257; floats within [0, 1] are multiplied by 255 and
    within [0, 255] kept; anything else is rescaled from its own minimum and maximum.
    """
    if not isinstance(image, Image.Image):
        array = np.asarray(image)
        if array.dtype.kind in "iuf" and array.dtype != np.uint8:
            array = _to_uint8(array)
        image = Image.fromarray(array)
    if image.mode.startswith("I") or image.mode == "F":
        image = Image.fromarray(_to_uint8(np.asarray(image)))
    if image.mode == "RGB":
        return image
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")  # avoids PIL's warning for palette transparency given as bytes
    return image.convert("RGB")


def _to_uint8(array: np.ndarray) -> np.ndarray:
    """Scale a 16-bit, 32-bit integer or float image to uint8 (see :func:`to_rgb` for the rules)."""
    values = array.astype(np.float64)
    low, high = (float(values.min()), float(values.max())) if values.size else (0.0, 0.0)
    if array.dtype.kind == "u" and array.dtype.itemsize == 2:
        scaled = values / 257.0
    elif array.dtype.kind in "iu" and low >= 0 and high <= 255:
        scaled = values
    elif array.dtype.kind in "iu" and low >= 0 and high <= 65535:
        scaled = values / 257.0
    elif array.dtype.kind == "f" and low >= 0 and high <= 1:
        scaled = values * 255.0
    elif array.dtype.kind == "f" and low >= 0 and high <= 255:
        scaled = values
    else:
        scaled = (values - low) * (255.0 / (high - low)) if high > low else np.zeros_like(values)
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


class ImageClassificationTransform:
    """Callable turning a batch ``{image_column: [...], label_column: [...]}`` into model inputs.

    Returns ``{"pixel_values": list of float tensors [3, H, W], "labels": list[int]}`` (``labels`` only when the
    batch has the label column). Every image is converted to RGB first (grayscale, RGBA, palette, ...).

    With ``augment=True``: after the processor's resize and normalisation, each image is shifted by a random crop of
    the image padded with ``padding`` black pixels on each side (the processor's normalised value of 0, as
    ``torchvision.transforms.RandomCrop(size, padding=4)`` before ``Normalize`` would give), then flipped horizontally
    with probability 0.5.
    """

    def __init__(
        self,
        image_processor: Any,
        augment: bool = False,
        image_column: str = "image",
        label_column: str = "label",
        padding: int = 4,
    ) -> None:
        self.image_processor = image_processor
        self.augment = bool(augment)
        self.image_column = image_column
        self.label_column = label_column
        self.padding = int(padding)

    @property
    def is_deterministic(self) -> bool:
        """False when the output depends on the RNG (augmentation on)."""
        return not self.augment

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(augment={self.augment}, image_column={self.image_column!r}, "
            f"label_column={self.label_column!r}, padding={self.padding})"
        )

    def _pad_value(self, channels: int) -> torch.Tensor:
        """The processed value of a black (0) pixel, per channel."""
        proc = self.image_processor
        value = torch.zeros(channels)
        if getattr(proc, "do_normalize", False) and getattr(proc, "image_mean", None) is not None:
            mean = torch.as_tensor(proc.image_mean, dtype=torch.float32).reshape(-1)
            std = torch.as_tensor(proc.image_std, dtype=torch.float32).reshape(-1)
            value = (value - mean) / std
        return value.expand(channels) if value.numel() == 1 else value

    def _augment(self, pixels: torch.Tensor) -> torch.Tensor:
        batch, channels, height, width = pixels.shape
        p = self.padding
        if p > 0:
            padded = self._pad_value(channels).to(pixels.dtype).view(1, channels, 1, 1)
            padded = padded.expand(batch, channels, height + 2 * p, width + 2 * p).clone()
            padded[:, :, p : p + height, p : p + width] = pixels
            offsets = torch.randint(0, 2 * p + 1, (batch, 2))
            pixels = torch.stack(
                [padded[i, :, y : y + height, x : x + width] for i, (y, x) in enumerate(offsets.tolist())]
            )
        flip = torch.rand(batch) < 0.5
        return torch.where(flip.view(-1, 1, 1, 1), pixels.flip(-1), pixels)

    def __call__(self, batch: dict[str, list]) -> dict[str, list]:
        images = [to_rgb(image) for image in batch[self.image_column]]
        pixels = self.image_processor(images=images, return_tensors="pt")["pixel_values"].float()
        if self.augment:
            pixels = self._augment(pixels)
        out: dict[str, list] = {"pixel_values": list(pixels)}
        if self.label_column in batch:
            out["labels"] = [int(label) for label in batch[self.label_column]]
        return out
