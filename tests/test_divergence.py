"""Diverged training fails loudly: a non-finite loss stops training, naming the step and the cause, and a non-finite
student is never saved, carded or pushed. Non-finite loss weights are configuration errors."""

from __future__ import annotations

import math

import pytest
import torch

import tiny
from cktf_hf import ContrastiveDistillationConfig, ContrastiveDistillationTrainer
from cktf_hf import divergence
from cktf_hf.divergence import TrainingDiverged
from cktf_hf.objectives.classic import ClassicObjective
from cktf_hf.objectives.registry import OBJECTIVES, register_objective


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


# ------------------------------------------------------------------------------------------ the gradient norm
class SqrtOfZero(ClassicObjective):
    """A finite loss (0) whose gradient is NaN: the square root of a squared norm that is 0, as RepDistiller's PKT
    on an all-zero feature row."""

    inputs = "final"

    def forward(self, f_s: torch.Tensor, f_t: torch.Tensor) -> torch.Tensor:
        return (f_s - f_s.detach()).pow(2).sum().sqrt()


@pytest.fixture
def sqrt_of_zero():
    register_objective("sqrt_of_zero")(SqrtOfZero)
    yield "sqrt_of_zero"
    OBJECTIVES.pop("sqrt_of_zero")


def test_a_non_finite_gradient_stops_the_step_naming_its_term(tmp_path, sqrt_of_zero):
    trainer = build(tmp_path, classic_objectives=f"{sqrt_of_zero}=1", save_strategy="no")
    before = {name: p.detach().clone() for name, p in trainer.model.named_parameters()}
    with pytest.raises(TrainingDiverged, match=r"at step 1: the gradient norm is nan while the loss is finite "
                                               r"\(non-finite gradient from: sqrt_of_zero\)\. The optimizer did not "
                                               r"apply this step"):
        trainer.train()
    assert all(torch.equal(p, before[name]) for name, p in trainer.model.named_parameters())  # not applied
    assert trainer.state.global_step == 0 and saved_models(tmp_path) == []


def test_healthy_steps_only_check_the_norm(tmp_path, monkeypatch):
    def never(*args, **kwargs):
        raise AssertionError("the per-term diagnosis ran on a healthy step")

    monkeypatch.setattr(divergence, "nonfinite_gradient_terms", never)
    checked = []
    original = divergence.GradientGuard.check
    monkeypatch.setattr(divergence.GradientGuard, "check",
                        lambda self, norm, trainer: checked.append(norm) or original(self, norm, trainer))
    trainer = build(tmp_path, save_strategy="no", max_grad_norm=0.0)  # no clipping: the norm is still checked
    trainer.train()
    assert len(checked) == 3 and all(math.isfinite(float(norm)) for norm in checked)
