"""Checkpoints are complete or invisible: a failed or interrupted save never costs the last good checkpoint, SIGTERM
stops cleanly, resuming skips incomplete checkpoints and says when it cannot be exact."""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from transformers.trainer_utils import get_last_checkpoint

import tiny
from cktf_hf import ContrastiveDistillationConfig, ContrastiveDistillationTrainer, checkpointing
from cktf_hf.checkpointing import STAGING_DIR, STATE_NAME, missing_files
from cktf_hf.run_guard import LOCK_NAME, OutputDirLocked

TESTS = Path(__file__).resolve().parent


def build(output_dir: Path, **overrides) -> ContrastiveDistillationTrainer:
    settings = dict(output_dir=str(output_dir), per_device_train_batch_size=16, max_steps=6, save_strategy="steps",
                    save_steps=2, save_total_limit=1, nce_k=16, report_to="none", disable_tqdm=True, seed=0)
    args = ContrastiveDistillationConfig(**{**settings, **overrides})
    return ContrastiveDistillationTrainer(model=tiny.vit(32, 2, seed=1), args=args, teacher_model=tiny.vit(64, 4),
                                          train_dataset=tiny.digits("train", 64))


def checkpoints(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.glob("checkpoint-*"))


def test_a_failed_state_write_keeps_the_last_good_checkpoint_and_resumes(tmp_path, monkeypatch):
    real_save_file, calls = checkpointing.save_file, []

    def failing_second_write(tensors, path):
        calls.append(path)
        if len(calls) == 2:
            raise OSError("No space left on device")
        real_save_file(tensors, path)

    monkeypatch.setattr(checkpointing, "save_file", failing_second_write)
    output = tmp_path / "out"
    with pytest.raises(OSError, match="No space left"):
        build(output).train()
    assert checkpoints(output) == ["checkpoint-2"]  # not rotated away, and the broken checkpoint-4 is not visible
    assert missing_files(str(output / "checkpoint-2")) == []
    assert get_last_checkpoint(str(output)) == str(output / "checkpoint-2")

    monkeypatch.setattr(checkpointing, "save_file", real_save_file)
    resumed = build(output)
    resumed.train(resume_from_checkpoint=True)
    assert resumed.state.global_step == 6 and checkpoints(output) == ["checkpoint-6"]
    assert not (output / STAGING_DIR).exists()


def test_resume_true_skips_incomplete_checkpoints_with_a_warning(tmp_path, caplog):
    output = tmp_path / "out"
    build(output, max_steps=4, save_total_limit=None).train()
    os.remove(output / "checkpoint-4" / STATE_NAME)  # e.g. written by an older version, or by hand
    resumed = build(output, max_steps=6, save_total_limit=None)
    with caplog.at_level(logging.WARNING, logger="cktf_hf"):
        resumed.train(resume_from_checkpoint=True)
    assert resumed.state.global_step == 6
    assert f"Skipping incomplete checkpoint {output / 'checkpoint-4'} (no {STATE_NAME})" in caplog.text
    assert missing_files(str(output / "checkpoint-6")) == []


def test_resume_true_without_a_complete_checkpoint_is_explained(tmp_path):
    with pytest.raises(ValueError, match="holds no complete checkpoint-N folder"):
        build(tmp_path / "empty").train(resume_from_checkpoint=True)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "SIGKILL"])
def test_a_signal_while_saving_leaves_a_resumable_checkpoint(tmp_path, sig):
    output, marker = tmp_path / "out", tmp_path / "saving"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS.parent), str(TESTS)]), "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen([sys.executable, str(TESTS / "checkpoint_worker.py"), str(output), str(marker)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        deadline = time.monotonic() + 240
        while not marker.exists():
            assert process.poll() is None, process.communicate()[1][-3000:]
            assert time.monotonic() < deadline, "the worker never reached its second checkpoint"
            time.sleep(0.05)
        process.send_signal(sig)
        _, stderr = process.communicate(timeout=240)
    finally:
        process.kill()
    if sig == signal.SIGTERM:  # the save in progress completes, the next step is saved, then the run stops
        assert process.returncode == 1 and "Training stopped on SIGTERM at step 5" in stderr, stderr[-3000:]
        expected = "checkpoint-5"
    else:  # killed outright: the previous checkpoint is intact, the half-written one invisible
        assert process.returncode == -signal.SIGKILL
        assert (output / STAGING_DIR / "checkpoint-4").is_dir()
        expected = "checkpoint-2"
    assert checkpoints(output) == [expected] and missing_files(str(output / expected)) == []

    resumed = build(output, max_steps=int(expected.split("-")[1]) + 2)
    resumed.train(resume_from_checkpoint=True)
    assert resumed.state.global_step == int(expected.split("-")[1]) + 2


def _write_lock(output: Path, pid: int, host: str) -> Path:
    output.mkdir(parents=True, exist_ok=True)
    lock = output / LOCK_NAME
    lock.write_text(json.dumps({"pid": pid, "host": host}))
    return lock


def test_a_second_run_in_the_same_output_dir_is_refused(tmp_path):
    other_run = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        lock = _write_lock(tmp_path / "out", other_run.pid, socket.gethostname())
        trainer = build(tmp_path / "out", max_steps=1, save_strategy="no")
        with pytest.raises(OutputDirLocked, match=rf"pid {other_run.pid} on {socket.gethostname()}\) is writing"):
            trainer.train()
        assert json.loads(lock.read_text())["pid"] == other_run.pid  # not ours to remove
        assert trainer.state.global_step == 0
        _write_lock(tmp_path / "out", other_run.pid, "another-host")
        with pytest.raises(OutputDirLocked, match="if it is no longer running, delete"):
            trainer.train()
    finally:
        other_run.kill()
        other_run.wait()


def test_a_stale_lock_is_taken_over_and_the_lock_is_released(tmp_path, caplog):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    lock = _write_lock(tmp_path / "out", dead.pid, socket.gethostname())
    trainer = build(tmp_path / "out", max_steps=1, save_strategy="no")
    with caplog.at_level(logging.WARNING, logger="cktf_hf"):
        trainer.train()
    assert f"left by pid {dead.pid}" in caplog.text and "no longer running" in caplog.text
    assert not lock.exists() and trainer.state.global_step == 1


def test_the_lock_is_released_when_training_fails(tmp_path, monkeypatch):
    trainer = build(tmp_path / "out", max_steps=1, save_strategy="no")
    monkeypatch.setattr(trainer, "compute_loss", lambda *args, **kwargs: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        trainer.train()
    assert not (tmp_path / "out" / LOCK_NAME).exists()


def test_a_resume_missing_optimizer_or_rng_state_warns_naming_the_files(tmp_path, caplog):
    output = tmp_path / "out"
    build(output, max_steps=2).train()
    checkpoint = output / "checkpoint-2"
    os.remove(checkpoint / "optimizer.pt")
    os.remove(checkpoint / "rng_state.pth")
    resumed = build(output, max_steps=3)
    with caplog.at_level(logging.WARNING, logger="cktf_hf"):
        resumed.train(resume_from_checkpoint=str(checkpoint))
    assert f"Checkpoint {checkpoint} has no rng_state.pth, optimizer.pt: training resumes, but not exactly" in caplog.text
    assert "scheduler.pt" not in caplog.text and resumed.state.global_step == 3


def test_an_explicit_resume_path_that_is_missing_or_incomplete_is_named_with_the_fix(tmp_path):
    from cktf_hf.checkpointing import resolve_resume

    with pytest.raises(FileNotFoundError, match=r"resume_from_checkpoint='.*checkpoint-7' does not exist.*or True"):
        resolve_resume(str(tmp_path / "checkpoint-7"), str(tmp_path))
    partial = tmp_path / "checkpoint-3"
    partial.mkdir()
    (partial / "model.safetensors").write_bytes(b"")
    with pytest.raises(ValueError, match=rf"not a complete checkpoint.*no trainer_state.json, {STATE_NAME}"):
        resolve_resume(str(partial), str(tmp_path))
