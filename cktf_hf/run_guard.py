"""What guards one ``train()`` run: a lock on the output folder, a clean stop on SIGTERM, and no resume past the end
of a finished run."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import threading
from typing import Any, Iterator, Optional, Union

import torch
from transformers import TrainerCallback
from transformers.trainer import TRAINER_STATE_NAME
from transformers.trainer_callback import TrainerState
from transformers.utils import logging

from .checkpointing import resolve_resume
from .locations import check_output_dir_apart

logger = logging.get_logger(__name__)

LOCK_NAME = "_cktf.lock"  # "_" keeps it out of every Hub push


class OutputDirLocked(RuntimeError):
    """Another training run writes the same output folder."""


class TrainingInterrupted(RuntimeError):
    """Training stopped on SIGTERM after saving a checkpoint to resume from."""


class RunFinished(ValueError):
    """The checkpoint to resume ends its run, and the arguments ask for no longer a schedule."""


def refuse_finished_run(checkpoint: str, args: Any) -> None:
    """Raise :class:`RunFinished` when ``checkpoint`` reached its run's last step and ``args`` (``max_steps``, else
    ``num_train_epochs``) asks for no more: transformers would resume it one step past its end and rewrite its
    student. A checkpoint cut short, or a longer schedule, resumes."""
    state = TrainerState.load_from_json(os.path.join(checkpoint, TRAINER_STATE_NAME))
    if state.global_step < state.max_steps:
        return
    longer = (args.max_steps > state.global_step if args.max_steps > 0
              else args.num_train_epochs > state.num_train_epochs)
    if not longer:
        raise RunFinished(
            f"The checkpoint to resume, {checkpoint}, holds a finished run (step {state.global_step} of "
            f"{state.max_steps}), and this run's schedule is no longer: resuming would train past its end and rewrite "
            "its student. Pass a longer max_steps or num_train_epochs to continue it, train from scratch (no "
            "resume_from_checkpoint; --overwrite_output_dir in the examples), or choose another output_dir."
        )


def checked_start(trainer: Any, resume_from_checkpoint: Union[str, bool, None]) -> Optional[str]:
    """The checkpoint ``trainer.train`` resumes from (see :func:`~cktf_hf.checkpointing.resolve_resume`), refused when
    it ends a finished run; ``output_dir`` refused when it is, or contains, the teacher's folder."""
    teacher = trainer.accelerator.unwrap_model(trainer.teacher)
    check_output_dir_apart(trainer.args.output_dir, getattr(teacher, "name_or_path", None), "the teacher's folder")
    checkpoint = resolve_resume(resume_from_checkpoint, trainer.args.output_dir)
    if checkpoint is not None:
        refuse_finished_run(checkpoint, trainer.args)
    return checkpoint


class OutputDirLock:
    """``<output_dir>/_cktf.lock``, created exclusively and holding the owner's pid and host.

    A lock left by a dead process on this host is taken over with a warning; a live owner, or an owner on another host,
    is an error naming the file.
    """

    def __init__(self, output_dir: str) -> None:
        self.path = os.path.join(output_dir, LOCK_NAME)
        self.owner = {"pid": os.getpid(), "host": socket.gethostname()}

    def acquire(self) -> None:
        os.makedirs(os.path.dirname(self.path) or ".", exist_ok=True)
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                holder = self._read()
                if not self._is_stale(holder):
                    raise OutputDirLocked(
                        f"Another training run (pid {holder.get('pid')} on {holder.get('host')}) is writing "
                        f"{os.path.dirname(self.path)!r}: two runs in one output_dir overwrite each other's "
                        f"checkpoints and model. Choose another output_dir, or wait for that run to end (if it is no "
                        f"longer running, delete {self.path})."
                    ) from None
                logger.warning("Taking over %s, left by pid %s on %s, which is no longer running.", self.path,
                               holder.get("pid"), holder.get("host"))
                with contextlib.suppress(FileNotFoundError):
                    os.remove(self.path)
                continue
            with os.fdopen(fd, "w") as f:
                json.dump(self.owner, f)
            return
        raise OutputDirLocked(f"Could not take the lock {self.path}: another run took it at the same time.")

    def release(self) -> None:
        """Remove the lock if this process still holds it."""
        if self._read() == self.owner:
            with contextlib.suppress(FileNotFoundError):
                os.remove(self.path)

    def _read(self) -> dict[str, Any]:
        try:
            with open(self.path) as f:
                holder = json.load(f)
            return holder if isinstance(holder, dict) else {}
        except FileNotFoundError:
            return {}
        except (OSError, ValueError):  # being written, or not ours: treat as held
            return {"pid": "?", "host": "?"}

    def _is_stale(self, holder: dict[str, Any]) -> bool:
        """True when the holder is gone: no lock file any more, or a dead process on this host."""
        if not holder:
            return True
        if holder.get("host") != self.owner["host"] or not isinstance(holder.get("pid"), int):
            return False
        try:
            os.kill(holder["pid"], 0)
        except ProcessLookupError:
            return True
        except PermissionError:  # alive, another user's
            return False
        return False


class StopOnSigterm(TrainerCallback):
    """Turns SIGTERM (what schedulers send before killing a job) into: finish the step, save a checkpoint, stop.

    The handler only sets a flag; the Trainer finishes the current step (and a save in progress), then saves and
    leaves the training loop. Under several processes the flag is shared (a one-element all-reduce per step), so all
    of them stop at the same step.
    """

    def __init__(self, trainer: Any) -> None:
        self.trainer = trainer
        self.requested = False
        self.stopped_at: int | None = None

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
        requested = self.requested
        if args.world_size > 1:
            flag = torch.tensor([float(requested)], device=args.device)
            requested = bool(self.trainer.accelerator.reduce(flag, reduction="sum").item() > 0)
        if requested:
            control.should_save = args.save_strategy != "no"
            control.should_training_stop = True
            self.stopped_at = state.global_step
        return control

    def on_epoch_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
        if self.stopped_at is not None:  # saved at the step end already; no evaluation on the way out
            control.should_save = control.should_evaluate = False
        return control

    @contextlib.contextmanager
    def installed(self) -> Iterator[None]:
        """Handle SIGTERM for the duration of the block (main thread only; elsewhere signals cannot be handled)."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return

        def handler(signum: int, frame: Any) -> None:
            logger.warning("SIGTERM received: finishing this step, saving a checkpoint, then stopping.")
            self.requested = True

        previous = signal.signal(signal.SIGTERM, handler)
        try:
            yield
        finally:
            signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def guarded_run(trainer: Any) -> Iterator[StopOnSigterm]:
    """Hold the output-folder lock (main process) and the SIGTERM handler while training; raise
    :class:`TrainingInterrupted` after a SIGTERM stop."""
    lock = OutputDirLock(trainer.args.output_dir) if trainer.is_world_process_zero() else None
    if lock is not None:
        lock.acquire()
    stopper = StopOnSigterm(trainer)
    trainer.add_callback(stopper)
    try:
        with stopper.installed():
            yield stopper
    finally:
        trainer.remove_callback(stopper)
        if lock is not None:
            lock.release()
    if stopper.stopped_at is not None:
        where = (f"a checkpoint was saved in {trainer.args.output_dir!r}"
                 if trainer.args.save_strategy != "no" else "no checkpoint was saved (save_strategy='no')")
        raise TrainingInterrupted(
            f"Training stopped on SIGTERM at step {stopper.stopped_at}; {where}. Resume with "
            "train(resume_from_checkpoint=True) (--resume_from_checkpoint in the examples)."
        )
