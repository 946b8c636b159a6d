"""Diverged training fails loudly: a non-finite loss stops training, naming the step and the cause, and a non-finite
student is never saved, carded or pushed. Non-finite loss weights are configuration errors."""

from __future__ import annotations

import math

import pytest
import torch

import tiny
from cktf_hf import ContrastiveDistillationConfig, ContrastiveDistillationTrainer
from cktf_hf.divergence import TrainingDiverged


def build(tmp_path, student=None, train=None, **overrides) -> ContrastiveDistillationTrainer:
    settings = dict(output_dir=str(tmp_path / "out"), per_device_train_batch_size=32, max_steps=3, nce_k=16,
                    save_strategy="steps", save_steps=1, report_to="none", disable_tqdm=True, logging_steps=1)
    args = ContrastiveDistillationConfig(**{**settings, **overrides})
    return ContrastiveDistillationTrainer(model=student or tiny.vit(32, 2, seed=1), args=args,
                                          teacher_model=tiny.vit(64, 4), train_dataset=train or tiny.digits("train", 32))


def saved_models(tmp_path) -> list[str]:
    return sorted(str(p.relative_to(tmp_path)) for p in (tmp_path / "out").rglob("model.safetensors"))


def test_a_nan_input_stops_training_at_that_step(tmp_path):
    data = tiny.digits("train", 32)[:]
    data["pixel_values"][7, 0, 3, 3] = math.nan  # not in the two-image probe batch; in the first (full) batch
    train = [{"pixel_values": p, "labels": l} for p, l in zip(data["pixel_values"], data["labels"])]
    trainer = build(tmp_path, train=train)
    with pytest.raises(TrainingDiverged, match=r"at step 1: the loss is nan \(non-finite loss terms: .*ce.*; "
                                               r"the batch's pixel_values hold NaN/inf values"):
        trainer.train()
    assert saved_models(tmp_path) == []


def test_an_infinite_weight_is_named_and_never_saved(tmp_path):
    student = tiny.vit(32, 2, seed=1)
    with torch.no_grad():
        student.classifier.weight[0, 0] = math.inf
    trainer = build(tmp_path, student=student)
    with pytest.raises(TrainingDiverged, match=r"at step 1: .*non-finite student weights, first classifier.weight"):
        trainer.train()
    for action in (trainer.save_model, trainer.create_model_card, trainer.push_to_hub):
        with pytest.raises(TrainingDiverged, match=r"Refusing .*non-finite weights .*first classifier.weight"):
            action()
    assert saved_models(tmp_path) == [] and not (tmp_path / "out" / "README.md").exists()


def test_a_huge_learning_rate_fails_instead_of_saving_nan_weights(tmp_path):
    trainer = build(tmp_path, learning_rate=1e6, max_steps=6, save_strategy="no")
    with pytest.raises(TrainingDiverged, match=r"(Training diverged at step [2-6]|Refusing to save)"):
        trainer.train()
        trainer.save_model()
    assert saved_models(tmp_path) == []
    logged = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    assert all(math.isfinite(loss) for loss in logged)  # the logged losses stop before the divergence, none shows 0


@pytest.mark.parametrize("setting", [dict(ce_weight=math.nan), dict(final_weight=math.inf),
                                     dict(temperature=math.nan), dict(classic_objectives="at=inf")])
def test_non_finite_loss_weights_are_config_errors(tmp_path, setting):
    with pytest.raises(ValueError, match="must be a finite number"):
        ContrastiveDistillationConfig(output_dir=str(tmp_path), report_to="none", **setting)
