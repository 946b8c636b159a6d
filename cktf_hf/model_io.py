"""Running a Hugging Face image classifier for distillation: logits, hidden states and the classifier input."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
from torch import nn

CLASSIFIER_ATTRIBUTES = ("classifier", "head", "fc")


@dataclass
class ModelFeatures:
    """What one forward pass gives the objective."""

    logits: torch.Tensor
    hidden_states: tuple[torch.Tensor, ...]
    final: torch.Tensor  # the classifier's input


def find_classifier(model: nn.Module) -> nn.Module:
    """The classification head whose input is the "final" feature (``model.classifier`` in transformers)."""
    for name in CLASSIFIER_ATTRIBUTES:
        module = getattr(model, name, None)
        if isinstance(module, nn.Module):
            return module
    raise ValueError(
        f"{type(model).__name__} has no classification head named one of {CLASSIFIER_ATTRIBUTES}; use an "
        "AutoModelForImageClassification model."
    )


class ClassifierInputCapture:
    """A forward pre-hook on the classification head that keeps its input (the classifier-input features)."""

    def __init__(self, model: nn.Module) -> None:
        self.value: Optional[torch.Tensor] = None
        self.handle = find_classifier(model).register_forward_pre_hook(self._hook)

    def _hook(self, module: nn.Module, args: tuple) -> None:
        self.value = args[0]

    def pop(self) -> torch.Tensor:
        value, self.value = self.value, None
        if value is None:
            raise RuntimeError("The classification head did not run in this forward pass.")
        return value

    def remove(self) -> None:
        self.handle.remove()


def select_hidden_states(outputs: object, model_name: str) -> tuple[torch.Tensor, ...]:
    """Spatial hidden states when the model offers them (Swin's ``reshaped_hidden_states``), else ``hidden_states``."""
    hidden_states = getattr(outputs, "reshaped_hidden_states", None) or getattr(outputs, "hidden_states", None)
    if not hidden_states:
        raise ValueError(
            f"{model_name} returned no hidden states with output_hidden_states=True; cktf_hf needs a model that "
            "exposes them (every AutoModelForImageClassification architecture in transformers does)."
        )
    return tuple(hidden_states)


def run_model(model: nn.Module, capture: ClassifierInputCapture, pixel_values: torch.Tensor, name: str) -> ModelFeatures:
    """One forward pass with hidden states; ``model`` may be wrapped (DDP) around the hooked module."""
    outputs = model(pixel_values=pixel_values, output_hidden_states=True, return_dict=True)
    return ModelFeatures(outputs.logits, select_hidden_states(outputs, name), capture.pop())


def probe(model: nn.Module, pixel_values: torch.Tensor, side: str) -> ModelFeatures:
    """One no-grad eval-mode forward of ``model`` (the ``side``, "student" or "teacher") on a probe batch, with a
    clear error when the images do not fit it. The model's training flag is left as it was."""
    param = next(model.parameters())
    expected = getattr(model.config, "num_channels", None)
    if expected is not None and pixel_values.shape[1] != expected:
        raise ValueError(
            f"The {side} expects {expected}-channel images but the batch has pixel_values of shape "
            f"{tuple(pixel_values.shape)}; "
            + ("convert images to RGB in the transform (ImageClassificationTransform does)." if expected == 3 else
               f"give it {expected}-channel images: ImageClassificationTransform converts every image to RGB (3 "
               f"channels), so use a transform of your own that keeps {expected} (e.g. image.convert('L') for 1), "
               "or a model that takes RGB images.")
        )
    capture = ClassifierInputCapture(model)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            return run_model(model, capture, pixel_values.to(param.device, param.dtype), side)
    except ValueError as error:
        if "hidden states" in str(error):
            raise
        raise ValueError(
            f"The {side} ({type(model).__name__}) cannot take the training images (pixel_values "
            f"{tuple(pixel_values.shape)}): {error}. Resize them to the size its config expects "
            f"(image_size={getattr(model.config, 'image_size', '?')}) with the image processor."
        ) from error
    finally:
        capture.remove()
        model.train(was_training)
