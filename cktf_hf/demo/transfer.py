"""The transfer protocol's steps (the paper's transfer setting, CRD's transferability table): distil a teacher into
a student on unlabelled target images, then train a linear probe on the frozen student with the target's labels.

Used by ``examples/transfer.py`` and ``benchmarks/transfer.py``.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Mapping
from typing import Any, Optional, Union

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader
from transformers import AutoModelForImageClassification, PreTrainedModel
from transformers.trainer_callback import PrinterCallback

from ..attachment import detach_objective, without_objective_keys
from ..config import ContrastiveDistillationConfig
from ..data import DistillationCollator
from ..model_io import ClassifierInputCapture
from ..trainer import ContrastiveDistillationTrainer

# The distillation objective of each method: no cross-entropy anywhere (the target's labels are never seen).
TRANSFER_METHODS: dict[str, dict[str, Any]] = {
    "kd": dict(preset="kd", ce_weight=0.0, kd_weight=1.0, final_weight=0.0, layer_weight=0.0),
    "crd": dict(preset="crd", ce_weight=0.0, final_weight=1.0, temperature=0.07),
    "cktf": dict(preset="transfer"),  # the paper's: γ=0, β=1, θ=0.04, τ=0.07, memory bank
    # The recipe's contrast (in-batch, intermediate pairs cell by cell against the teacher's own features, θ=2), no CE.
    "cktf-recipe": dict(preset="cktf", ce_weight=0.0),
    # Today's cross-architecture methods without their cross-entropy: OFA's ε-loss at ε = 1 (where the labels cancel)
    # on the output and the stage branches, and timm's feature distillation.
    "ofa": dict(preset="ofa", ce_weight=0.0),
    "timm-feature": dict(preset="timm-feature", ce_weight=0.0),
}


def without_labels(dataset: Any) -> Any:
    """The dataset with its label column(s) removed: the distillation sees images only."""
    return dataset.remove_columns([c for c in ("label", "labels") if c in dataset.column_names])


def distill_unlabelled(student: PreTrainedModel, teacher: Any, images: Any, method: str, output_dir: str, *,
                       seed: int = 0, epochs: float = 10, batch_size: int = 128, learning_rate: float = 2e-3,
                       nce_k: int = 4096, device: str = "cpu", overrides: Optional[dict[str, Any]] = None
                       ) -> tuple[PreTrainedModel, float]:
    """Step 2: train ``student`` against ``teacher`` (folder, Hub id or model) on unlabelled ``images`` with the
    objective of ``method`` (``overrides``: config fields changed on top of it, e.g. ``{"negatives": "in_batch"}``);
    returns the student (distillation modules removed) and the wall time in seconds."""
    if method not in TRANSFER_METHODS:
        raise ValueError(f"Unknown transfer method {method!r}; choose one of {sorted(TRANSFER_METHODS)}.")
    if any(c in getattr(images, "column_names", []) for c in ("label", "labels")):
        raise ValueError("distill_unlabelled takes unlabelled images: pass without_labels(dataset).")
    args = ContrastiveDistillationConfig(
        output_dir=output_dir, seed=seed, data_seed=seed, num_train_epochs=epochs,
        per_device_train_batch_size=batch_size, learning_rate=learning_rate, weight_decay=0.05, warmup_steps=0.05,
        lr_scheduler_type="cosine", optim="adamw_torch", eval_strategy="no", save_strategy="no",
        logging_strategy="epoch", report_to="none", disable_tqdm=True, dataloader_num_workers=0,
        use_cpu=device == "cpu", nce_k=nce_k, **{**TRANSFER_METHODS[method], **(overrides or {})},
    )
    start = time.perf_counter()
    trainer = ContrastiveDistillationTrainer(model=student, args=args, teacher_model=teacher, train_dataset=images)
    trainer.remove_callback(PrinterCallback)
    trainer.train()
    student = trainer.accelerator.unwrap_model(trainer.model)
    detach_objective(student)  # projectors and memory banks are not part of the student
    return student, time.perf_counter() - start


def probe_model(backbone: PreTrainedModel, id2label: dict[int, str]) -> PreTrainedModel:
    """A copy of ``backbone`` with a fresh classifier for ``id2label``; everything but the classifier is frozen."""
    config = copy.deepcopy(backbone.config)
    config.num_labels = len(id2label)
    config.id2label = {int(i): name for i, name in id2label.items()}
    config.label2id = {name: int(i) for i, name in id2label.items()}
    torch.manual_seed(0)
    model = AutoModelForImageClassification.from_config(config)
    weights = {k: v for k, v in without_objective_keys(backbone.state_dict()).items() if not k.startswith("classifier.")}
    result = model.load_state_dict(weights, strict=False)
    missing = [k for k in result.missing_keys if not k.startswith("classifier.")]
    if missing or result.unexpected_keys:
        raise RuntimeError(f"Backbone weights do not fit: missing {missing}, unexpected {result.unexpected_keys}.")
    for name, parameter in model.named_parameters():
        parameter.requires_grad = name.startswith("classifier.")
    return model


@torch.no_grad()
def classifier_inputs(model: PreTrainedModel, dataset: Any, device: str, batch_size: int = 500
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    """The frozen model's classifier-input features (flattened) and the labels of every example of ``dataset``."""
    model.eval().to(device)
    capture = ClassifierInputCapture(model)
    features, labels = [], []
    try:
        for batch in DataLoader(dataset, batch_size=batch_size, collate_fn=DistillationCollator()):
            model(pixel_values=batch["pixel_values"].to(device))
            features.append(capture.pop().flatten(1).float())
            labels.append(batch["labels"].to(device))
    finally:
        capture.remove()
    return torch.cat(features), torch.cat(labels)


def linear_probe(backbone: PreTrainedModel, train: Any, test: Any, id2label: dict[int, str], *, seed: int = 0,
                 epochs: int = 100, batch_size: int = 256, learning_rate: float = 1e-2, device: str = "cpu"
                 ) -> tuple[PreTrainedModel, Union[list[float], dict[str, list[float]]], float]:
    """Step 3: train a new linear head on the frozen ``backbone`` with the labelled ``train`` split.

    The backbone is frozen, so its features are computed once (eval mode: BatchNorm statistics untouched) and the head
    is trained on them: AdamW with cosine decay, on features standardised with the training split's mean and std
    (a BatchNorm without affine, as in MAE's linear probe), folded into the head's weights afterwards so that the
    returned model is a plain ``transformers`` classifier. Returns it, the test accuracy after every epoch and the wall
    time in seconds. ``test`` may also be a mapping of split names to datasets (e.g. ``{"val": ..., "test": ...}``,
    to select the probe epoch on a validation split); the accuracies are then a dict of per-epoch lists by name.
    """
    named = isinstance(test, Mapping)
    model, accuracies, seconds = _probe(backbone, train, dict(test) if named else {"test": test}, id2label, seed,
                                        epochs, batch_size, learning_rate, device)
    return model, accuracies if named else accuracies["test"], seconds


def _probe(backbone: PreTrainedModel, train: Any, evals: dict[str, Any], id2label: dict[int, str], seed: int,
           epochs: int, batch_size: int, learning_rate: float, device: str
           ) -> tuple[PreTrainedModel, dict[str, list[float]], float]:
    start = time.perf_counter()
    model = probe_model(backbone, id2label)
    head = [m for m in model.classifier.modules() if isinstance(m, nn.Linear)][-1]
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():  # a seeded initialisation of the new head (on the CPU, before the model moves)
        head.weight.normal_(0.0, 0.01, generator=generator)
        head.bias.zero_()
    train_x, train_y = classifier_inputs(model, train, device)
    mean, std = train_x.mean(0), train_x.std(0) + 1e-6
    train_x = (train_x - mean) / std
    eval_sets = {}
    for name, dataset in evals.items():
        x, y = classifier_inputs(model, dataset, device)
        eval_sets[name] = ((x - mean) / std, y)
    optimizer = torch.optim.AdamW(head.parameters(), lr=learning_rate, weight_decay=0.0)
    steps_per_epoch = -(-len(train_x) // batch_size)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs * steps_per_epoch)
    accuracies: dict[str, list[float]] = {name: [] for name in eval_sets}
    for _ in range(int(epochs)):
        order = torch.randperm(len(train_x), generator=generator).to(train_x.device)
        for i in range(0, len(train_x), batch_size):
            batch = order[i:i + batch_size]
            loss = F.cross_entropy(head(train_x[batch]), train_y[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            scheduler.step()
        with torch.no_grad():
            for name, (x, y) in eval_sets.items():
                accuracies[name].append(float((head(x).argmax(-1) == y).float().mean()))
    with torch.no_grad():  # fold the standardisation into the head: W' = W / std, b' = b − W' · mean
        head.weight.div_(std)
        head.bias.sub_(head.weight @ mean)
    return model, accuracies, time.perf_counter() - start
