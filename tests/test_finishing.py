"""A run that can always be finished, and results that describe the model they name: examples/distill_vit.py and the
library after train() (final save, results files, finished runs whose final steps were cut short, damaged
checkpoints, a full disk)."""

from __future__ import annotations

import errno
import json
import logging
import os
import signal
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import modeling_utils

import tiny
from cktf_hf import ContrastiveDistillationConfig, ContrastiveDistillationTrainer, checkpointing
from cktf_hf.checkpointing import STATE_NAME, last_complete_checkpoint
from test_examples import ENV, SCRIPT, run_script, workspace  # noqa: F401 (the fixture)

SAVING = ("--save_strategy", "steps", "--save_steps", "2", "--max_steps", "2", "--do_train", "--do_eval")


def _trainer(output, **overrides) -> ContrastiveDistillationTrainer:
    args = ContrastiveDistillationConfig(**{
        "output_dir": str(output), "per_device_train_batch_size": 16, "nce_k": 16, "report_to": "none",
        "save_strategy": "steps", "save_steps": 2, "disable_tqdm": True, "use_cpu": True, **overrides})
    return ContrastiveDistillationTrainer(model=tiny.vit(32, 2, seed=1), args=args, teacher_model=tiny.vit(64, 4),
                                          train_dataset=tiny.digits("train", 64))


def _same_weights(folder_a, folder_b) -> bool:
    a, b = load_file(os.path.join(folder_a, "model.safetensors")), load_file(os.path.join(folder_b, "model.safetensors"))
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_a_finished_run_whose_final_steps_died_is_finished_by_the_same_command(workspace, tmp_path):
    output = tmp_path / "student"
    first = run_script(workspace, [sys.executable], output, *SAVING, "--overwrite_output_dir")
    assert first.returncode == 0, first.stderr[-3000:]
    accuracy = json.loads((output / "eval_results.json").read_text())["eval_accuracy"]
    # A death in the final save (a truncated student), the evaluation and the card.
    weights = output / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    for name in ("eval_results.json", "README.md"):
        (output / name).unlink()
    again = run_script(workspace, [sys.executable], output, *SAVING)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "Finishing the run of" in again.stderr and "holds a finished run" not in again.stderr
    assert _same_weights(output, output / "checkpoint-2")  # the final student, not trained again
    assert json.loads((output / "eval_results.json").read_text())["eval_accuracy"] == accuracy
    assert (output / "README.md").is_file() and not (output / "_cktf_incomplete_final").exists()
    # Finished and complete: the same command is refused, the student untouched.
    student = weights.read_bytes()
    complete = run_script(workspace, [sys.executable], output, *SAVING)
    assert complete.returncode != 0 and "holds a finished run" in complete.stderr
    assert weights.read_bytes() == student

    # --do_eval alone into the finished run's folder evaluates that run's student, not a fresh one.
    evaluated = run_script(workspace, [sys.executable], output, "--do_eval")
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    assert f"student     {output}:" in evaluated.stdout
    assert json.loads((output / "eval_results.json").read_text())["eval_accuracy"] == accuracy
    other = subprocess.run([sys.executable, SCRIPT, "--teacher", str(workspace / "teacher"), "--dataset",
                            str(workspace / "images"), "--output_dir", str(output), "--do_eval", "--student",
                            str(workspace / "teacher")], capture_output=True, text=True, env=ENV, cwd=str(workspace),
                           timeout=300)  # another saved model: its results would replace the run's
    assert other.returncode == 2 and "holds a finished run's student and results" in other.stderr

    # Training over it from scratch removes the results and card that describe the previous student.
    over = run_script(workspace, [sys.executable], output, "--max_steps", "1", "--do_train", "--overwrite_output_dir",
                      "--card_latency", "false")
    assert over.returncode == 0, over.stderr[-3000:]
    assert not (output / "eval_results.json").exists()
    assert "eval_accuracy" not in json.loads((output / "all_results.json").read_text())


def test_sigterm_during_the_final_evaluation_finishes_it_then_the_rerun_writes_the_card(workspace, tmp_path):
    output = tmp_path / "student"
    # The script, with the student's evaluation sending the process a SIGTERM while it runs.
    wrapper = (
        "import os, runpy, signal, sys\n"
        "from cktf_hf import ContrastiveDistillationTrainer as T\n"
        "evaluate = T.evaluate\n"
        "def terminated(self, *a, **k):\n"
        "    os.kill(os.getpid(), signal.SIGTERM)\n"
        "    return evaluate(self, *a, **k)\n"
        "T.evaluate = terminated\n"
        "sys.argv = sys.argv[1:]\n"  # run_script puts the script path first
        f"runpy.run_path({SCRIPT!r}, run_name='__main__')\n"
    )
    stopped = run_script(workspace, [sys.executable, "-c", wrapper], output, *SAVING, "--overwrite_output_dir")
    assert stopped.returncode == 128 + signal.SIGTERM, stopped.stderr[-3000:]
    assert "Stopped on SIGTERM after the evaluation" in stopped.stderr and "Traceback" not in stopped.stderr
    assert (output / "eval_results.json").is_file() and not (output / "README.md").exists()
    rerun = run_script(workspace, [sys.executable], output, *SAVING)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert (output / "README.md").is_file() and _same_weights(output, output / "checkpoint-2")


def test_the_final_student_is_never_left_truncated(tmp_path, monkeypatch):
    output = tmp_path / "student"
    trainer = _trainer(output, max_steps=2, save_strategy="no")
    trainer.train()
    trainer.save_model()
    before = (output / "model.safetensors").read_bytes()
    real = modeling_utils.safe_save_file

    def dies_half_way(tensors, path, *args, **kwargs):
        real(tensors, path, *args, **kwargs)
        with open(path, "r+b") as f:
            f.truncate(os.path.getsize(path) // 2)
        raise KeyboardInterrupt  # a death in the middle of the write

    monkeypatch.setattr(modeling_utils, "safe_save_file", dies_half_way)
    with pytest.raises(KeyboardInterrupt):
        trainer.save_model()
    assert (output / "model.safetensors").read_bytes() == before  # the previous student, whole
    monkeypatch.setattr(modeling_utils, "safe_save_file", real)
    trainer.save_model()  # the next save clears the temporary folder
    assert not (output / "_cktf_incomplete_final").exists() and (output / "config.json").is_file()


def test_results_files_are_written_through_a_temporary_name(tmp_path, monkeypatch):
    trainer = _trainer(tmp_path / "student", max_steps=1, save_strategy="no")
    os.makedirs(trainer.args.output_dir, exist_ok=True)
    trainer.save_metrics("eval", {"eval_accuracy": 0.5})
    replaced = []
    real_replace = os.replace
    monkeypatch.setattr(checkpointing.os, "replace", lambda a, b: (replaced.append(os.path.basename(b)),
                                                                  real_replace(a, b)))
    trainer.save_metrics("train", {"train_loss": 1.0})
    assert replaced == ["train_results.json", "all_results.json"]
    assert json.loads((tmp_path / "student" / "all_results.json").read_text()) == {"eval_accuracy": 0.5,
                                                                                    "train_loss": 1.0}


@pytest.mark.parametrize("damage", ["trainer_state", "weights"])
def test_a_damaged_newest_checkpoint_is_named_and_the_previous_one_used(tmp_path, caplog, damage):
    output = tmp_path / "run"
    for step in (2, 4):
        folder = output / f"checkpoint-{step}"
        folder.mkdir(parents=True)
        save_file({"w": torch.zeros(64)}, str(folder / "model.safetensors"))
        save_file({"z": torch.zeros(4)}, str(folder / STATE_NAME))
        (folder / "trainer_state.json").write_text(json.dumps({"global_step": step}))
    newest = output / "checkpoint-4"
    if damage == "trainer_state":
        (newest / "trainer_state.json").write_text('{"global_step": 4, "log_hist')
    else:
        weights = newest / "model.safetensors"
        weights.write_bytes(weights.read_bytes()[:-100])
    with caplog.at_level(logging.WARNING, logger="cktf_hf"):
        assert last_complete_checkpoint(str(output)) == str(output / "checkpoint-2")
    assert f"Skipping incomplete checkpoint {newest}" in caplog.text
    assert ("readable trainer_state.json" if damage == "trainer_state" else "truncated") in caplog.text


@pytest.mark.parametrize("error", [OSError(errno.ENOSPC, "No space left on device"),
                                   RuntimeError("[enforce fail at inline_container.cc:664] . unexpected pos 64 vs 0")])
def test_a_full_disk_during_a_checkpoint_says_so_and_what_was_kept(tmp_path, monkeypatch, error):
    real, calls = checkpointing.save_file, []

    def full_on_second(tensors, path, *args, **kwargs):
        calls.append(path)
        if len(calls) == 2:
            raise error
        real(tensors, path, *args, **kwargs)

    monkeypatch.setattr(checkpointing, "save_file", full_on_second)
    usage = checkpointing.shutil.disk_usage  # torch's writer error counts as "full" on a disk with no space left
    monkeypatch.setattr(checkpointing.shutil, "disk_usage", lambda path: usage(path)._replace(free=0))
    output = tmp_path / "run"
    trainer = _trainer(output, max_steps=4)
    with pytest.raises(OSError, match="The disk is full") as raised:
        trainer.train()
    message = str(raised.value)
    assert f"the last complete checkpoint, {output / 'checkpoint-2'}, is kept" in message
    assert "rerun the same command to resume" in message and raised.value.errno == errno.ENOSPC
    assert not (output / "_cktf_incomplete" / "checkpoint-4").exists()
