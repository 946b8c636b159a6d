"""Reliability of the data path (issue 12): no silently wrong inputs, no leaked paths or remote code, clear errors."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from cktf_hf.transforms import to_rgb


# --------------------------------------------------------------------------------------- deep images (item 13)
def _gradient(high: int) -> np.ndarray:
    return np.tile(np.linspace(0, high, 256), (8, 1))


@pytest.mark.parametrize("mode, array", [
    ("I;16", _gradient(65535).astype(np.uint16)),
    ("I;16B", _gradient(65535).astype(">u2")),
    ("I", _gradient(65535).astype(np.int32)),
    ("F", _gradient(1.0).astype(np.float32)),
])
def test_deep_grayscale_gradients_keep_their_gray_levels(mode, array):
    image = Image.fromarray(array) if mode != "I;16B" else Image.frombytes("I;16B", (256, 8), array.tobytes())
    assert image.mode == mode
    rgb = np.asarray(to_rgb(image)).astype(int)
    assert rgb.shape == (8, 256, 3) and (rgb[..., 0] == rgb[..., 2]).all()
    row = rgb[0, :, 0]
    assert row[0] == 0 and row[-1] == 255 and (np.diff(row) >= 0).all()
    assert len(np.unique(row)) > 200                       # a gradient, not black and white
    expected = np.rint(array[0].astype(np.float64) / (array.max() / 255.0))
    assert np.abs(row - expected).max() <= 1


def test_deep_arrays_and_eight_bit_ranges_are_scaled_the_same_way():
    gradient16 = _gradient(65535).astype(np.uint16)
    assert np.array_equal(np.asarray(to_rgb(gradient16)), np.asarray(to_rgb(Image.fromarray(gradient16))))
    eight_bit_as_int = Image.fromarray(_gradient(255).astype(np.int32))  # mode I holding 8-bit values: kept
    assert np.array_equal(np.asarray(to_rgb(eight_bit_as_int))[..., 0], _gradient(255).astype(np.int32))
    odd = Image.fromarray((_gradient(2.0) - 1.0).astype(np.float32))     # F in [-1, 1]: min-max rescaled
    row = np.asarray(to_rgb(odd))[0, :, 0]
    assert row[0] == 0 and row[-1] == 255
