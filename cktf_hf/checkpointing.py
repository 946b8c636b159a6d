"""Checkpoints that are either complete or invisible.

``Trainer._save_checkpoint`` writes ``checkpoint-N`` in place and rotates old checkpoints before the distillation state
joins the folder, so an interrupted or failed save could leave no checkpoint to resume. Here every checkpoint is
written under ``<output_dir>/_cktf_incomplete/checkpoint-N`` (the ``_`` keeps it out of every Hub push, and the name
is not ``checkpoint-*``, so transformers neither resumes nor rotates it), renamed to ``<output_dir>/checkpoint-N``
once complete (model, optimizer, trainer state and distillation state), and only then are old checkpoints rotated.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import shutil
import struct
from typing import Any, Callable, Iterator, Optional, Union

import torch
from safetensors.torch import save_file
from transformers.trainer import OPTIMIZER_NAME, SCHEDULER_NAME, TRAINER_STATE_NAME
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, rotate_checkpoints
from transformers.utils import (
    SAFE_WEIGHTS_INDEX_NAME,
    SAFE_WEIGHTS_NAME,
    WEIGHTS_INDEX_NAME,
    WEIGHTS_NAME,
    logging,
)

from .attachment import is_objective_key

logger = logging.get_logger(__name__)

STATE_NAME = "_cktf_distillation_state.safetensors"  # "_" keeps it out of every Hub push
STAGING_DIR = "_cktf_incomplete"
FINAL_STAGING_DIR = "_cktf_incomplete_final"  # where the final student is written before its files are moved in
_CHECKPOINT = re.compile(rf"^{PREFIX_CHECKPOINT_DIR}-(\d+)$")
_WEIGHTS = (SAFE_WEIGHTS_NAME, SAFE_WEIGHTS_INDEX_NAME, WEIGHTS_NAME, WEIGHTS_INDEX_NAME)


class AtomicCheckpoints:
    """The trainer's checkpoint writer: stages each checkpoint and publishes it by renaming once complete.

    The trainer routes ``_get_output_dir`` through :meth:`output_dir` and ``_push_from_checkpoint`` through
    :meth:`defers_push`, and calls :meth:`save` from ``_save_checkpoint``.
    """

    def __init__(self) -> None:
        self.staging = False
        self._pending_push: Optional[str] = None

    def output_dir(self, run_dir: str) -> str:
        """Where ``Trainer._save_checkpoint`` writes: the staging folder while a checkpoint is being written."""
        return os.path.join(run_dir, STAGING_DIR) if self.staging else run_dir

    def defers_push(self, trainer: Any, checkpoint_folder: str) -> bool:
        """``every_save`` pushes of the output folder wait until the checkpoint is renamed (the upload lists the
        folder while it runs). Checkpoint-folder pushes go out from the staging folder before the distillation state
        is written, which keeps the state out of the Hub."""
        if self.staging and trainer.args.hub_strategy == "every_save":
            self._pending_push = checkpoint_folder
            return True
        return False

    def save(self, trainer: Any, trial: Any, write: Callable[[], None], distillation_state: Callable[[], dict]) -> None:
        """Write a checkpoint with ``write`` (``Trainer._save_checkpoint``) and the distillation state into the
        staging folder, then rename it to ``checkpoint-N`` and rotate old checkpoints."""
        args, state = trainer.args, trainer.state
        run_dir = trainer._get_output_dir(trial)
        name = f"{PREFIX_CHECKPOINT_DIR}-{state.global_step}"
        staged, final = os.path.join(run_dir, STAGING_DIR, name), os.path.join(run_dir, name)
        if args.should_save and os.path.exists(staged):  # left over by an interrupted save
            shutil.rmtree(staged)
        trainer.accelerator.wait_for_everyone()
        self.staging, self._pending_push = True, None
        try:
            with _explain_disk_full(staged, run_dir, args.should_save):
                write()
        finally:
            self.staging = False
        if state.best_model_checkpoint == staged:
            state.best_model_checkpoint = final
        if args.should_save:
            if args.push_to_hub and trainer.push_in_progress is not None and self._pending_push is None:
                trainer.push_in_progress.wait_until_done()  # the staged folder is being uploaded as it is
            with _explain_disk_full(staged, run_dir, True):
                state.save_to_json(os.path.join(staged, TRAINER_STATE_NAME))  # best_model_checkpoint, final name
                save_file(distillation_state(), os.path.join(staged, STATE_NAME))
        trainer.accelerator.wait_for_everyone()  # every process's files (rng_state_<rank>.pth) are in
        if args.should_save:
            _publish(staged, final)
            rotate_checkpoints(run_dir, args.save_total_limit, state.best_model_checkpoint, use_mtime=True)
            if self._pending_push is not None:
                self._pending_push = None
                trainer._push_from_checkpoint(final)

    def save_student(self, output_dir: str, write: Callable[[str], None]) -> None:
        """Save the student with ``write(folder)``: in place within a staged checkpoint, else (the final student)
        through :func:`save_final_model`."""
        if self.staging:
            write(output_dir)
        else:
            save_final_model(output_dir, write)


def _is_disk_full(error: BaseException, folder: str) -> bool:
    """ENOSPC, or torch's zip writer failing (``unexpected pos 64 vs 0``, ``file write failed``) on a disk with less
    than 64 MiB free."""
    if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    if not (isinstance(error, RuntimeError) and ("unexpected pos" in str(error) or "write failed" in str(error))):
        return False
    with contextlib.suppress(OSError):
        return shutil.disk_usage(folder).free < 64 * 2**20
    return False


@contextlib.contextmanager
def _explain_disk_full(staged: str, run_dir: str, main: bool) -> Iterator[None]:
    """Turn a disk-full error while writing ``staged`` into an ``OSError(ENOSPC)`` that says so and what was kept."""
    try:
        yield
    except (OSError, RuntimeError) as error:
        if not _is_disk_full(error, run_dir):
            raise
        if main:
            shutil.rmtree(staged, ignore_errors=True)  # frees what the cut-short checkpoint took
        kept = last_complete_checkpoint(run_dir)
        raise OSError(errno.ENOSPC, (
            f"The disk is full: saving the checkpoint {os.path.basename(staged)} into {run_dir!r} failed "
            f"({type(error).__name__}: {str(error).splitlines()[0] if str(error) else 'no space left'}). The partial "
            "checkpoint was removed; "
            + (f"the last complete checkpoint, {kept}, is kept. " if kept else "no earlier checkpoint exists. ")
            + "Free disk space (or lower save_total_limit, or choose an output_dir on a larger disk) and rerun the "
            "same command to resume."
        )) from error


def _publish(staged: str, final: str) -> None:
    """Rename ``staged`` to ``final``; a checkpoint already there (same step, earlier run) is replaced only after."""
    previous = None
    if os.path.exists(final):
        previous = staged + ".replaced"
        shutil.rmtree(previous, ignore_errors=True)
        os.rename(final, previous)
    os.rename(staged, final)
    if previous is not None:
        shutil.rmtree(previous, ignore_errors=True)
    try:
        os.rmdir(os.path.dirname(staged))  # the staging folder, when nothing else is in it
    except OSError:
        pass


def missing_files(checkpoint: str) -> list[str]:
    """What ``checkpoint`` lacks to resume distillation: model weights, trainer state, distillation state; a file
    that is there but damaged (a truncated safetensors file, unreadable JSON) is named with why."""
    missing = [] if any(os.path.isfile(os.path.join(checkpoint, f)) for f in _WEIGHTS) else [SAFE_WEIGHTS_NAME]
    missing += [f for f in (TRAINER_STATE_NAME, STATE_NAME) if not os.path.isfile(os.path.join(checkpoint, f))]
    if missing:
        return missing
    return [f"readable {name} ({problem})" for name in (SAFE_WEIGHTS_NAME, STATE_NAME, TRAINER_STATE_NAME)
            if (problem := damage(os.path.join(checkpoint, name))) is not None]


def damage(path: str) -> Optional[str]:
    """Why the file at ``path`` cannot be read back (``None`` when it can, or is absent), by a cheap check: a
    ``.safetensors`` file's header and length, a ``.json`` file's parse."""
    if not os.path.isfile(path):
        return None
    try:
        if path.endswith(".safetensors"):
            return _safetensors_damage(path)
        if path.endswith(".json"):
            with open(path, encoding="utf-8") as f:
                json.load(f)
    except (OSError, ValueError) as error:
        return f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else 'unreadable'}"
    return None


def _safetensors_damage(path: str) -> Optional[str]:
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            return f"{size} bytes, shorter than a header"
        (length,) = struct.unpack("<Q", head)
        if length > size - 8:
            return f"its header says {length:,} bytes but the file has {size:,}"
        header = json.loads(f.read(length))
    end = max((t["data_offsets"][1] for k, t in header.items() if k != "__metadata__"), default=0)
    if size != 8 + length + end:
        return f"truncated: {size:,} bytes where its header needs {8 + length + end:,}"
    return None


def student_missing(output_dir: str) -> list[str]:
    """What ``output_dir`` lacks to hold a saved student: ``config.json`` and readable weights."""
    missing = [] if os.path.isfile(os.path.join(output_dir, "config.json")) else ["config.json"]
    weights = [f for f in _WEIGHTS if os.path.isfile(os.path.join(output_dir, f))]
    if not weights:
        return missing + [SAFE_WEIGHTS_NAME]
    problem = damage(os.path.join(output_dir, weights[0]))
    return missing + ([f"readable {weights[0]} ({problem})"] if problem else [])


def save_final_model(output_dir: str, save: Callable[[str], None]) -> None:
    """Save the final student with ``save(folder)`` into ``<output_dir>/_cktf_incomplete_final``, then move each file
    into ``output_dir`` with ``os.replace`` (``config.json`` last): a death mid-save leaves the earlier files whole,
    never a truncated ``model.safetensors``."""
    staged = os.path.join(output_dir, FINAL_STAGING_DIR)
    shutil.rmtree(staged, ignore_errors=True)
    save(staged)
    names = sorted(os.listdir(staged), key=lambda name: name == "config.json")
    for name in names:
        target = os.path.join(output_dir, name)
        if os.path.isdir(target) and not os.path.islink(target):
            shutil.rmtree(target)
        os.replace(os.path.join(staged, name), target)
    os.rmdir(staged)


def write_json_atomically(path: str, data: Any) -> None:
    """``json.dump`` into ``path`` through a temporary name and ``os.replace``: readers see the old file or the new
    one, never half of one."""
    temporary = f"{path}.{os.getpid()}.tmp"
    with open(temporary, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=4, sort_keys=True)
        f.flush()
        os.fsync(f.fileno())
    os.replace(temporary, path)


def save_metrics_atomically(output_dir: str, split: str, metrics: dict[str, Any], combined: bool = True) -> None:
    """``Trainer.save_metrics``'s files (``<split>_results.json`` and, with ``combined``, ``all_results.json``
    updated), each written atomically."""
    write_json_atomically(os.path.join(output_dir, f"{split}_results.json"), metrics)
    if combined:
        path = os.path.join(output_dir, "all_results.json")
        everything = {}
        if os.path.isfile(path) and damage(path) is None:
            with open(path, encoding="utf-8") as f:
                everything = json.load(f)
        write_json_atomically(path, {**everything, **metrics})


def last_complete_checkpoint(output_dir: str) -> Optional[str]:
    """The ``checkpoint-N`` of ``output_dir`` with the largest N that is complete; incomplete ones are skipped with a
    warning naming what they lack. ``None`` when there is none."""
    if not os.path.isdir(output_dir):
        return None
    found = [(int(m.group(1)), entry) for entry in os.listdir(output_dir)
             if (m := _CHECKPOINT.match(entry)) and os.path.isdir(os.path.join(output_dir, entry))]
    for _, entry in sorted(found, reverse=True):
        folder = os.path.join(output_dir, entry)
        missing = missing_files(folder)
        if not missing:
            return folder
        logger.warning("Skipping incomplete checkpoint %s (no %s); looking for an earlier one.", folder,
                       ", ".join(missing))
    return None


def resolve_resume(resume_from_checkpoint: Union[str, bool, None], output_dir: str) -> Optional[str]:
    """``Trainer.train``'s ``resume_from_checkpoint``, with ``True`` meaning the last complete checkpoint."""
    if resume_from_checkpoint is True:
        checkpoint = last_complete_checkpoint(output_dir)
        if checkpoint is None:
            raise ValueError(
                f"resume_from_checkpoint=True, but {output_dir!r} holds no complete checkpoint-N folder to resume "
                "from; train without resume_from_checkpoint to start from scratch."
            )
        return checkpoint
    if resume_from_checkpoint:
        if not os.path.isdir(resume_from_checkpoint):
            raise FileNotFoundError(
                f"resume_from_checkpoint={resume_from_checkpoint!r} does not exist. Pass a checkpoint-N folder of an "
                f"earlier run (e.g. {os.path.join(output_dir, 'checkpoint-500')}), or True for the last complete "
                f"checkpoint of output_dir {output_dir!r}."
            )
        missing = missing_files(resume_from_checkpoint)
        if missing:
            raise ValueError(
                f"{resume_from_checkpoint!r} is not a complete checkpoint of ContrastiveDistillationTrainer: it has no "
                f"{', '.join(missing)} (a save that was cut short, or a folder another trainer wrote). Resume from an "
                "earlier checkpoint-N, or pass True to take the last complete one."
            )
    return resume_from_checkpoint or None


def warn_inexact_resume(checkpoint: str, args: Any) -> None:
    """Warn, naming the files, when ``checkpoint`` lacks what an exact resume restores (optimizer, scheduler, RNG)."""
    rng = f"rng_state_{args.process_index}.pth" if args.world_size > 1 else "rng_state.pth"
    expected = [rng] + ([] if _shards_optimizer(args) else [OPTIMIZER_NAME, SCHEDULER_NAME])
    missing = [name for name in expected if not os.path.isfile(os.path.join(checkpoint, name))]
    if missing:
        logger.warning(
            "Checkpoint %s has no %s: training resumes, but not exactly as it would have continued (%s start "
            "afresh).", checkpoint, ", ".join(missing),
            " and ".join({OPTIMIZER_NAME: "optimizer moments", SCHEDULER_NAME: "the learning-rate schedule"}.get(
                name, "random number streams") for name in missing),
        )


def _shards_optimizer(args: Any) -> bool:
    """DeepSpeed and FSDP save the optimizer in their own files."""
    return bool(getattr(args, "deepspeed", None) or getattr(args, "fsdp", None))


def tensors_to_save(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A module's state as contiguous CPU tensors, for ``safetensors``."""
    return {key: value.detach().cpu().contiguous() for key, value in module.state_dict().items()}


def reload_student(student: Any, checkpoint: str) -> None:
    """Load ``checkpoint``'s student weights into ``student`` through ``from_pretrained`` (which knows transformers 5's
    renamed weights, e.g. ViT's ``attention.attention.query`` ↔ ``q_proj``); the objective's keys may be missing,
    nothing else may."""
    reloaded = type(student).from_pretrained(checkpoint, dtype=student.dtype)
    result = student.load_state_dict(reloaded.state_dict(), strict=False)
    missing = [k for k in result.missing_keys if not is_objective_key(k)]
    if missing or result.unexpected_keys:
        raise RuntimeError(f"Checkpoint {checkpoint} does not fit the student: missing {missing}, "
                           f"unexpected {list(result.unexpected_keys)}.")
