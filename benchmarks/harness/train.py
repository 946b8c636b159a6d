"""One training run: the shared optimiser and schedule (``training_config``), a student trained with validation and
test evaluated after every epoch (``train_student``), the epoch selected on validation (``summarise_run``) and the
learning rate chosen on validation (``choose_learning_rate``). The test split plays no part in any choice."""

from __future__ import annotations

import time
from typing import Any

import datasets
import numpy as np
import torch
from transformers.trainer_callback import PrinterCallback

from cktf_hf import ContrastiveDistillationConfig, ContrastiveDistillationTrainer

def training_config(output_dir: str, device: str, seed: int, epochs: float, batch_size: int, learning_rate: float,
                    **overrides: Any) -> ContrastiveDistillationConfig:
    """The one optimiser and schedule of every run: AdamW, linear warmup (5 %), cosine decay, weight decay 0.05,
    evaluation at the end of every epoch (on the validation and the test split, see ``train_student``), nothing
    saved."""
    settings = dict(
        output_dir=output_dir,
        seed=seed,
        data_seed=seed,
        num_train_epochs=epochs,
        per_device_train_batch_size=batch_size,
        per_device_eval_batch_size=1000,
        learning_rate=learning_rate,
        weight_decay=0.05,
        warmup_steps=0.05,
        lr_scheduler_type="cosine",
        optim="adamw_torch",
        eval_strategy="epoch",
        save_strategy="no",
        logging_strategy="epoch",
        report_to="none",
        disable_tqdm=True,
        dataloader_num_workers=0,
        use_cpu=device == "cpu",
    )
    return ContrastiveDistillationConfig(**{**settings, **overrides})


def epoch_accuracies(log_history: list[dict[str, Any]], split: str) -> list[float]:
    """The accuracy on eval split ``split`` (a key of the Trainer's ``eval_dataset`` dict) after each epoch, in
    order."""
    key = f"eval_{split}_accuracy"
    return [entry[key] for entry in log_history if key in entry]


def select_epoch(val_accuracies: list[float]) -> int:
    """The epoch (counted from 1) with the best validation accuracy; the earliest one on a tie."""
    if not val_accuracies:
        raise ValueError("No validation accuracy to select an epoch on.")
    return int(np.argmax(val_accuracies)) + 1


def summarise_run(val: list[float], test: list[float], wall_time_s: float, **fields: Any) -> dict[str, Any]:
    """One run: the per-epoch validation and test accuracies, the epoch selected on validation (``selected_epoch``),
    the validation and test accuracy at that epoch (``val``, ``test``), the test accuracy after the last epoch
    (``test_last``) and the wall time. The test accuracies play no part in the selection."""
    if len(val) != len(test):
        raise ValueError(f"{len(val)} validation accuracies but {len(test)} test accuracies: one of each per epoch.")
    epoch = select_epoch(val)
    return {**fields, "epoch_val_accuracies": [round(a, 4) for a in val],
            "epoch_test_accuracies": [round(a, 4) for a in test], "selected_epoch": epoch,
            "val": round(val[epoch - 1], 4), "test": round(test[epoch - 1], 4), "test_last": round(test[-1], 4),
            "wall_time_s": round(wall_time_s, 1)}


def train_student(student: torch.nn.Module, teacher: Any, train: datasets.Dataset, val: datasets.Dataset,
                  test: datasets.Dataset, args: ContrastiveDistillationConfig
                  ) -> tuple[ContrastiveDistillationTrainer, list[float], list[float], float]:
    """Train ``student`` against ``teacher`` (a folder or a model) with ``args``, evaluating on ``val`` and ``test``
    after every epoch (one pass over each); the trainer, the per-epoch validation and test accuracies and the wall
    time (training plus the evaluations)."""
    start = time.perf_counter()
    trainer = ContrastiveDistillationTrainer(model=student, args=args, teacher_model=teacher, train_dataset=train,
                                             eval_dataset={"val": val, "test": test})
    trainer.remove_callback(PrinterCallback)  # one progress line per run instead of every log dict
    trainer.train()
    history = trainer.state.log_history
    return (trainer, epoch_accuracies(history, "val"), epoch_accuracies(history, "test"),
            time.perf_counter() - start)


def choose_learning_rate(runs: list[dict[str, Any]]) -> float:
    """The ``learning_rate`` of the run with the best validation accuracy at its selected epoch (``val``); the first
    such run in ``runs`` (grid order) on a tie. Test accuracies play no part."""
    if not runs:
        raise ValueError("No grid run to choose a learning rate from.")
    best = max(range(len(runs)), key=lambda i: (runs[i]["val"], -i))
    return runs[best]["learning_rate"]
