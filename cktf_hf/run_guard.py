"""What guards one ``train()`` run: a lock on the output folder, a clean stop on SIGTERM, no resume past the end of a
finished run, and a finished run whose final steps (save, evaluate, card) were cut short finished without training."""

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
from transformers.trainer_utils import TrainOutput
from transformers.utils import logging

from .checkpointing import last_complete_checkpoint, resolve_resume, student_missing
from .locations import check_output_dir_apart

logger = logging.get_logger(__name__)

LOCK_NAME = "_cktf.lock"  # "_" keeps it out of every Hub push


class OutputDirLocked(RuntimeError):
    """Another training run writes the same output folder."""


class TrainingInterrupted(RuntimeError):
    """Training stopped on SIGTERM after saving a checkpoint to resume from."""


class RunFinished(ValueError):
    """The checkpoint to resume ends its run, and the arguments ask for no longer a schedule."""


RESULTS_FILES = ("train_results.json", "eval_results.json", "all_results.json", "README.md", "training_curves.png",
                 "example.png")  # what a run writes after training: its metrics and its model card


def finished_run_files(evaluated: bool) -> tuple[str, ...]:
    """What a finished run of the examples leaves in ``output_dir`` besides its student: its results and card."""
    return ("train_results.json", "all_results.json", "README.md") + (("eval_results.json",) if evaluated else ())


def refuse_finished_run(checkpoint: str, args: Any, expected: tuple[str, ...] = ()) -> bool:
    """Whether ``checkpoint`` ends a finished run whose final steps are still to do.

    When ``checkpoint`` reached its run's last step and ``args`` (``max_steps``, else ``num_train_epochs``) asks for no
    more, transformers would resume it one step past its end and rewrite its student: if ``output_dir`` holds the
    student (readable) and every file of ``expected``, this raises :class:`RunFinished`; if something is missing (a
    death during the final save, evaluation or card), it returns True: :func:`load_finished_run` then loads the
    final student so that those steps can be done again. False: a checkpoint cut short, or a longer schedule."""
    state = TrainerState.load_from_json(os.path.join(checkpoint, TRAINER_STATE_NAME))
    if state.global_step < state.max_steps:
        return False
    longer = (args.max_steps > state.global_step if args.max_steps > 0
              else args.num_train_epochs > state.num_train_epochs)
    if longer:
        return False
    missing = student_missing(args.output_dir) + [
        name for name in expected if not os.path.isfile(os.path.join(args.output_dir, name))]
    if missing:
        logger.warning("%s holds a finished run (step %d of %d), but %s lacks %s: loading its final student to finish "
                       "the steps after training, without training again.", checkpoint, state.global_step,
                       state.max_steps, args.output_dir, ", ".join(missing))
        return True
    raise RunFinished(
        f"The checkpoint to resume, {checkpoint}, holds a finished run (step {state.global_step} of "
        f"{state.max_steps}), and this run's schedule is no longer: resuming would train past its end and rewrite "
        "its student. Pass a longer max_steps or num_train_epochs to continue it, train from scratch (no "
        "resume_from_checkpoint; --overwrite_output_dir in the examples), or choose another output_dir."
    )


def checked_start(trainer: Any, resume_from_checkpoint: Union[str, bool, None]) -> tuple[Optional[str], bool]:
    """The checkpoint ``trainer.train`` resumes from (see :func:`~cktf_hf.checkpointing.resolve_resume`), and whether
    it ends a finished run to finish (:func:`refuse_finished_run`, which refuses a finished and complete one);
    ``output_dir`` refused when it is, or contains, the teacher's folder."""
    teacher = trainer.accelerator.unwrap_model(trainer.teacher)
    check_output_dir_apart(trainer.args.output_dir, getattr(teacher, "name_or_path", None), "the teacher's folder")
    checkpoint = resolve_resume(resume_from_checkpoint, trainer.args.output_dir)
    return checkpoint, checkpoint is not None and refuse_finished_run(checkpoint, trainer.args)


def load_finished_run(trainer: Any, checkpoint: str) -> TrainOutput:
    """Load a finished run's final student (the best one with ``load_best_model_at_end``), its distillation state and
    its trainer state from its last ``checkpoint``, as ``train()`` would have left them; the metrics are those of
    ``train_results.json`` when the run wrote it."""
    trainer._load_from_checkpoint(checkpoint)
    trainer.state = TrainerState.load_from_json(os.path.join(checkpoint, TRAINER_STATE_NAME))
    best = trainer.state.best_model_checkpoint
    if trainer.args.load_best_model_at_end and best and os.path.isdir(best):
        trainer._load_best_model()
    results = os.path.join(trainer.args.output_dir, "train_results.json")
    metrics = {"epoch": trainer.state.epoch}
    if os.path.isfile(results):
        with contextlib.suppress(OSError, ValueError), open(results, encoding="utf-8") as f:
            metrics = {**metrics, **json.load(f)}
    return TrainOutput(trainer.state.global_step, metrics.get("train_loss", float("nan")), metrics)


def clear_previous_results(output_dir: str) -> list[str]:
    """Remove the results files and model card an earlier run left in ``output_dir`` (before training over it from
    scratch: they describe another student). Returns the names removed."""
    removed = [name for name in RESULTS_FILES if os.path.isfile(os.path.join(output_dir, name))]
    for name in removed:
        os.remove(os.path.join(output_dir, name))
    if removed:
        logger.warning("Removed the previous run's %s from %s.", ", ".join(removed), output_dir)
    return removed


def student_to_evaluate(output_dir: str, requested: str, names_saved_model: bool) -> str:
    """The student an evaluation-only run evaluates, its results going to ``output_dir``: the run's own student when
    ``output_dir`` holds one (a ``requested`` saved model, ``names_saved_model``, must then be that one: a fresh
    architecture is not), ``requested`` into a folder without a run. A run without its student (checkpoints, no saved
    model) is refused: its results would describe another model."""
    if not student_missing(output_dir):
        if names_saved_model and os.path.abspath(requested) != os.path.abspath(output_dir):
            raise ValueError(
                f"output_dir {output_dir!r} holds a finished run's student and results: evaluating {requested!r} "
                "there would replace them with another model's. Drop --student to evaluate that run's student, or "
                "choose another output_dir for this evaluation."
            )
        return output_dir
    ran = last_complete_checkpoint(output_dir) is not None or os.path.isfile(
        os.path.join(output_dir, "train_results.json"))
    if ran:
        raise ValueError(
            f"output_dir {output_dir!r} holds a training run but no saved student: an evaluation there would describe "
            "another model. Rerun that run's training command to finish it (it saves, evaluates and writes the card), "
            "or choose another output_dir for this evaluation."
        )
    return requested


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

    def installed(self) -> contextlib.AbstractContextManager[None]:
        """Handle SIGTERM for the duration of the block (main thread only; elsewhere signals cannot be handled)."""
        return _handling_sigterm(self, "finishing this step, saving a checkpoint, then stopping")


class FinalStepsGuard:
    """SIGTERM after training (final save, evaluation, model card, push): the step under way finishes, then
    :meth:`stop_if_requested` raises :class:`TrainingInterrupted`; rerunning the same command does the rest."""

    def __init__(self) -> None:
        self.requested = False

    def installed(self) -> contextlib.AbstractContextManager[None]:
        """Handle SIGTERM for the duration of the block (install it around ``train()`` and the steps after it)."""
        return _handling_sigterm(self, "finishing the step under way, then stopping")

    def stop_if_requested(self, done: str, output_dir: str) -> None:
        """Raise :class:`TrainingInterrupted` when SIGTERM came; ``done`` names the last step completed."""
        if self.requested:
            raise TrainingInterrupted(
                f"Stopped on SIGTERM after {done}. Training is finished and its last checkpoint is in {output_dir!r}: "
                "rerun the same command to do the remaining steps (save, evaluation, model card, push) without "
                "training again."
            )


@contextlib.contextmanager
def _handling_sigterm(owner: Any, action: str) -> Iterator[None]:
    """Set ``owner.requested`` on SIGTERM within the block (main thread only), restoring the previous handler."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: Any) -> None:
        logger.warning("SIGTERM received: %s.", action)
        owner.requested = True

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
