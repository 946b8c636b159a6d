"""Library guards of one train() run, through the Python API: no resume past the end of a finished run, and no
output_dir over the teacher's folder."""

from __future__ import annotations

import os

import pytest
from transformers import AutoModelForImageClassification

import tiny
from cktf_hf import ContrastiveDistillationConfig, ContrastiveDistillationTrainer, RunFinished


def _trainer(output_dir, teacher=None, **config) -> ContrastiveDistillationTrainer:
    args = ContrastiveDistillationConfig(
        output_dir=str(output_dir), per_device_train_batch_size=16, save_strategy="steps", save_steps=2,
        logging_steps=1, report_to="none", disable_tqdm=True, use_cpu=True, card_latency=False, **config)
    return ContrastiveDistillationTrainer(model=tiny.vit(32, 2, seed=1), args=args,
                                          teacher_model=teacher if teacher is not None else tiny.vit(64, 4),
                                          train_dataset=tiny.digits("train", 64))


def _snapshot(folder) -> dict[str, bytes]:
    return {path: open(os.path.join(root, path), "rb").read() for root, _, names in os.walk(folder)
            for path in names}


def test_resuming_a_finished_run_with_no_longer_schedule_is_refused(tmp_path):
    output = tmp_path / "student"
    first = _trainer(output, max_steps=2)
    first.train()
    first.save_model()
    before = _snapshot(output)
    for resume in (True, str(output / "checkpoint-2")):
        again = _trainer(output, max_steps=2)
        with pytest.raises(RunFinished, match=r"checkpoint-2, holds a finished run \(step 2 of 2\).*longer max_steps"):
            again.train(resume_from_checkpoint=resume)
        assert again.state.global_step == 0
    assert _snapshot(output) == before  # the student, its checkpoint and no lock left behind
    longer = _trainer(output, max_steps=3)
    longer.train(resume_from_checkpoint=True)  # a longer schedule continues the run
    assert longer.state.global_step == 3 and (output / "checkpoint-3").is_dir()


def test_a_run_cut_short_resumes(tmp_path):
    output = tmp_path / "student"
    _trainer(output, max_steps=4).train()
    # keep only the step-2 checkpoint: a run stopped half-way
    os.rename(output / "checkpoint-4", tmp_path / "later")
    resumed = _trainer(output, max_steps=4)
    resumed.train(resume_from_checkpoint=True)
    assert resumed.state.global_step == 4


def test_an_output_dir_that_is_or_holds_the_teacher_folder_is_refused(tmp_path):
    teacher_dir = tmp_path / "models" / "teacher"
    tiny.vit(64, 4).save_pretrained(teacher_dir)
    for output_dir, relation in ((teacher_dir, "is"), (tmp_path / "models", "contains")):
        with pytest.raises(ValueError, match=rf"output_dir '{output_dir}' {relation} the teacher's folder"):
            ContrastiveDistillationConfig(output_dir=str(output_dir), teacher=str(teacher_dir))
    inside = ContrastiveDistillationConfig(output_dir=str(teacher_dir / "student"), teacher=str(teacher_dir))
    assert inside.output_dir == str(teacher_dir / "student")  # beside the teacher's files, not over them

    # A teacher model loaded from that folder: train() refuses before anything is written.
    before = _snapshot(teacher_dir)
    trainer = _trainer(teacher_dir, teacher=AutoModelForImageClassification.from_pretrained(teacher_dir), max_steps=1)
    with pytest.raises(ValueError, match="is the teacher's folder"):
        trainer.train()
    assert _snapshot(teacher_dir) == before
