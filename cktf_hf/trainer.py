"""``ContrastiveDistillationTrainer``: a thin ``transformers.Trainer`` that distils a frozen teacher into the model."""

from __future__ import annotations

import functools
import os
from collections import defaultdict
from typing import Any, Optional, Union

import torch
from torch import nn
from transformers import PreTrainedModel, Trainer, set_seed
from transformers.utils import logging

from .attachment import attach_objective
from .cache import check_deterministic, load_teacher_cache
from .checkpointing import (STATE_NAME, AtomicCheckpoints, reload_student, save_metrics_atomically,
                            tensors_to_save, warn_inexact_resume)
from .config import ContrastiveDistillationConfig
from .data import first_examples, prepare_training_data
from .divergence import GradientGuard, check_loss, check_weights
from .hub import explain_push_failure, explain_repo_failure
from .metrics import make_compute_metrics
from .model_card import DEFAULT_TAGS, DistillationCardInfo, write_model_card
from .model_io import ClassifierInputCapture, run_model
from .objective_state import load_objective_state
from .objectives import CKTFObjective, PairFeatures
from .pairing import FeatureReader, LayerPair, PairingPlan, PairingRow, plan_pairs
from .run_guard import checked_start, guarded_run, load_finished_run
from .teacher import load_teacher, teacher_fingerprint, teacher_input_for
from .training_clock import TrainingClock
from .validation import check_teacher_accuracy, validate_training_setup

logger = logging.get_logger(__name__)


class ContrastiveDistillationTrainer(Trainer):
    """Trains ``model`` (the student) on CKTF's objective against a frozen teacher.

    The teacher comes from ``args.teacher`` (Hub id or folder) or ``teacher_model``. Layer pairs, projectors and
    memory banks are built from one probe batch of ``train_dataset`` before training; they live in an
    ``nn.Module`` attached to the student (so DDP synchronises their gradients) and are left out of
    ``save_pretrained``; checkpoints keep them in ``_cktf_distillation_state.safetensors``. Datasets yield
    ``pixel_values`` and ``labels`` per example (see :class:`~cktf_hf.transforms.ImageClassificationTransform`).
    When the teacher's image processor (``teacher_processing_class``, else the teacher's own) differs from the data's
    in mean/std or size, every teacher forward gets the batch re-normalised / resized for it (the pairing table says).
    """

    _tag_names = list(DEFAULT_TAGS)
    loss_is_scaled_for_ga = False  # compute_loss returns a per-batch mean

    def __init__(
        self,
        model: PreTrainedModel,
        args: ContrastiveDistillationConfig,
        teacher_model: Optional[Union[PreTrainedModel, str]] = None,
        train_dataset: Optional[Any] = None,
        eval_dataset: Optional[Any] = None,
        data_collator: Optional[Any] = None,
        compute_metrics: Optional[Any] = None,
        teacher_processing_class: Optional[Any] = None,
        **kwargs: Any,
    ) -> None:
        if not isinstance(args, ContrastiveDistillationConfig):
            raise TypeError("args must be a ContrastiveDistillationConfig.")
        if train_dataset is None:
            raise ValueError("ContrastiveDistillationTrainer needs a train_dataset (the probe batch comes from it).")
        set_seed(args.seed)
        settings = args.objective_settings
        self.teacher = load_teacher(teacher_model if teacher_model is not None else args.teacher, args)
        self.teacher_fingerprint = teacher_fingerprint(  # what the student is distilled from (commit or sha256)
            teacher_model if teacher_model is not None else args.teacher, self.teacher, args.teacher_revision)
        self.label_alignment = validate_training_setup(model, self.teacher, train_dataset, eval_dataset, args)
        if args.teacher_cache_dir:
            check_deterministic(train_dataset)
        train_dataset, data_collator, num_samples = prepare_training_data(
            train_dataset, data_collator, settings, bool(args.teacher_cache_dir), args.label_column, args.seed)
        probe_batch = data_collator(first_examples(train_dataset, 2))
        if settings.uses_memory_bank and "index" not in probe_batch:
            raise ValueError(
                "negatives='memory_bank' needs 'index' and 'contrast_idx' in every batch, but the data collator "
                "does not add them; use cktf_hf.DistillationCollator (the default) or negatives='in_batch'."
            )
        teacher_input = teacher_input_for(teacher_model if teacher_model is not None else args.teacher, args,
                                          train_dataset, probe_batch["pixel_values"].shape[1:],
                                          kwargs.get("processing_class"), teacher_processing_class)
        self.pairing: PairingPlan = plan_pairs(model, self.teacher, probe_batch["pixel_values"],
                                               settings.planned_layer_pairs,
                                               settings.pooling, settings.final_weight, settings.layer_weight,
                                               teacher_input)
        self.objective = CKTFObjective(settings, self.pairing.shapes, num_samples,
                                       self.pairing.student_stages).to(next(model.parameters()).device)
        self.reader: FeatureReader = self.pairing.reader(
            self.objective.read_pairs, self.objective.map_pairs, settings.feature_batch_norm,
            self.objective.pooled_pairs, self.objective.reads_student_stages,
        )
        attach_objective(model, self.objective)
        self._student_capture = ClassifierInputCapture(model)
        self._teacher_capture = ClassifierInputCapture(self.teacher)
        self._components: dict[str, torch.Tensor] = defaultdict(float)
        self._component_steps = 0
        self.card_info: Optional[DistillationCardInfo] = None  # what the last model card reported
        self._checkpoints = AtomicCheckpoints()
        self._gradient_guard = GradientGuard()

        super().__init__(
            model=model,
            args=args,
            train_dataset=train_dataset,
            eval_dataset=eval_dataset,
            data_collator=data_collator,
            compute_metrics=compute_metrics or make_compute_metrics(model.config.num_labels),
            **kwargs,
        )
        self.teacher = self.accelerator.prepare_model(self.teacher, evaluation_mode=True)
        self.add_callback(TrainingClock())  # wall time over resumed segments, for the model card
        logger.info("CKTF layer pairing:\n%s", self.pairing.table)
        self.teacher_check_accuracy = check_teacher_accuracy(self.teacher, eval_dataset, self.data_collator, args,
                                                             self.label_alignment)  # None when not checked
        self.teacher_cache = load_teacher_cache(self) if args.teacher_cache_dir else None

    @property
    def pairs(self) -> list[LayerPair]:
        """The layer pairs, the final (classifier-input) pair last."""
        return self.pairing.pairs

    @property
    def pairing_rows(self) -> list[PairingRow]:
        """The layer-pairing table's rows (pair, student/teacher layer and shape, weight)."""
        return self.pairing.rows

    def _set_signature_columns_if_needed(self) -> None:
        super()._set_signature_columns_if_needed()
        self._signature_columns = list(dict.fromkeys([*self._signature_columns, "index", "labels", "label"]))

    # ------------------------------------------------------------------------------------------------ loss
    def compute_loss(
        self,
        model: nn.Module,
        inputs: dict[str, torch.Tensor],
        return_outputs: bool = False,
        num_items_in_batch: Optional[Union[torch.Tensor, int]] = None,
    ) -> Union[torch.Tensor, tuple[torch.Tensor, Any]]:
        self._gradient_guard.remember(inputs)  # run again only when the step's gradient is not finite
        index, contrast_idx = inputs.pop("index", None), inputs.pop("contrast_idx", None)
        contrast_mask = inputs.pop("contrast_mask", None)
        labels, pixel_values = inputs.get("labels"), inputs["pixel_values"]
        if not model.training:  # evaluation of the student (or, in evaluate_teacher, the teacher) alone
            if self.model is self.teacher:
                pixel_values = self.pairing.teacher_input(pixel_values)
            outputs = model(pixel_values=pixel_values.to(next(model.parameters()).dtype), labels=labels)
            self._student_capture.value = self._teacher_capture.value = None
            return (outputs.loss, outputs) if return_outputs else outputs.loss
        teacher_features = self._teacher_features(pixel_values, index)
        student_out = run_model(model, self._student_capture, pixel_values, "student")
        self.objective.set_epoch(self.state.epoch or 0.0)  # warm-ups of classic terms (DKD) read the progress
        self.objective.set_progress(self.state.global_step / max(self.state.max_steps, 1))  # contrastive_warmup
        result = self.objective(self.reader.read("student", student_out), teacher_features,
                                labels=labels, index=index, contrast_idx=contrast_idx,
                                contrast_mask=contrast_mask)
        check_loss(result.loss, result.components, pixel_values, self.model, self.teacher, self.state.global_step + 1)
        for name, value in result.components.items():
            self._components[name] = self._components[name] + value
        self._component_steps += 1
        return (result.loss, student_out) if return_outputs else result.loss

    def _get_grad_norm(self, model: nn.Module, grad_norm: Optional[Any] = None) -> Any:
        return self._gradient_guard.check(super()._get_grad_norm(model, grad_norm), self)  # before optimizer.step

    def _teacher_features(self, pixel_values: torch.Tensor, index: Optional[torch.Tensor]) -> PairFeatures:
        """The teacher's side of a batch: from the cache, from the live teacher, or nothing (CE-only presets)."""
        if self.teacher_cache is not None:
            return self.teacher_cache.lookup(index, pixel_values.device)
        if not self.objective.needs_teacher:
            return PairFeatures(pixel_values.new_zeros(0), {})
        with torch.no_grad():
            return self.reader.read("teacher", self._run_teacher(pixel_values))

    def _run_teacher(self, pixel_values: torch.Tensor) -> Any:
        pixel_values = self.pairing.teacher_input(pixel_values.to(self.args.device))
        return run_model(self.teacher, self._teacher_capture, pixel_values.to(self._teacher_dtype), "teacher")

    def evaluate_teacher(self, eval_dataset: Optional[Any] = None, metric_key_prefix: str = "teacher") -> dict[str, float]:
        """Evaluate the teacher on the evaluation set with the student's metrics (keys ``teacher_accuracy``, ...)."""
        student, student_wrapped = self.model, self.model_wrapped
        self.model = self.model_wrapped = self.teacher
        try:
            return self.evaluate(eval_dataset, metric_key_prefix=metric_key_prefix)
        finally:
            self.model, self.model_wrapped = student, student_wrapped

    def get_decay_parameter_names(self, model: nn.Module) -> list[str]:
        """The Trainer's choice less learnable temperatures (FBT's ``logit_scale``: no weight decay, as in CLIP)."""
        return [name for name in super().get_decay_parameter_names(model) if not name.endswith("logit_scale")]

    @property
    def _teacher_dtype(self) -> torch.dtype:
        return next(self.teacher.parameters()).dtype

    def log(self, logs: dict[str, float], start_time: Optional[float] = None) -> None:
        """Add the mean of every loss component since the last log (training logs only)."""
        if "loss" in logs and self._component_steps:
            for name, total in self._components.items():
                value = torch.as_tensor(total, dtype=torch.float32, device=self.args.device) / self._component_steps
                logs[name] = round(self.accelerator.reduce(value, reduction="mean").item(), 6)
            self._components.clear()
            self._component_steps = 0
        super().log(logs, start_time)

    # ------------------------------------------------------------------------------------------ checkpoints
    def train(self, resume_from_checkpoint: Optional[Union[str, bool]] = None, *args: Any, **kwargs: Any) -> Any:
        """``Trainer.train``, holding a lock on ``output_dir``, stopping cleanly on SIGTERM, and resuming
        (``resume_from_checkpoint=True``) from the last complete checkpoint, unless that ends a finished run (refused;
        one without its saved student is loaded from its last checkpoint, not trained again)."""
        checkpoint, finished = checked_start(self, resume_from_checkpoint)  # before anything is written
        if finished:
            return load_finished_run(self, checkpoint)
        with guarded_run(self):
            return super().train(checkpoint, *args, **kwargs)

    def _save_checkpoint(self, model: nn.Module, trial: Any) -> None:
        """Write the checkpoint and the distillation state (projectors, memory banks, Z) under a temporary name, then
        rename it; old checkpoints are rotated only after that (see :mod:`cktf_hf.checkpointing`)."""
        self._checkpoints.save(self, trial, functools.partial(super()._save_checkpoint, model, trial),
                               functools.partial(tensors_to_save, self.objective))

    def _get_output_dir(self, trial: Any) -> str:
        return self._checkpoints.output_dir(super()._get_output_dir(trial))

    def _push_from_checkpoint(self, checkpoint_folder: str) -> None:
        if not self._checkpoints.defers_push(self, checkpoint_folder):
            super()._push_from_checkpoint(checkpoint_folder)

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model: Optional[nn.Module] = None) -> None:
        """Restore the student and the distillation state (projectors, memory banks, Z) from a checkpoint.

        The student is read back through ``from_pretrained``: transformers 5 renames some weights on save (ViT's
        ``encoder.layer.N.attention.attention.query`` ↔ ``layers.N.attention.q_proj``), and the Trainer's plain
        ``load_state_dict`` misses those keys, silently resuming with fresh encoder weights.
        """
        state_path = os.path.join(resume_from_checkpoint, STATE_NAME)  # complete: checked by resolve_resume
        warn_inexact_resume(resume_from_checkpoint, self.args)
        self._reload_student(resume_from_checkpoint, model)
        load_objective_state(self.objective, state_path, str(self.args.device))  # errors say what changed

    def _load_best_model(self) -> None:
        """``load_best_model_at_end``: the best student weights, read as in :meth:`_load_from_checkpoint`."""
        logger.info("Loading best student from %s (score: %s).", self.state.best_model_checkpoint,
                    self.state.best_metric)
        self._reload_student(self.state.best_model_checkpoint)

    def _reload_student(self, checkpoint: str, model: Optional[nn.Module] = None) -> None:
        reload_student(self.accelerator.unwrap_model(model if model is not None else self.model), checkpoint)

    def _save(self, output_dir: Optional[str] = None, state_dict: Optional[dict] = None) -> None:
        output_dir = output_dir if output_dir is not None else self.args.output_dir
        if not self.args.should_save and not self.is_distributed_loading_by_transformers:
            return  # transformers 5 calls _save on every rank; only the writer stages and moves the files
        check_weights(self.model, f"to save the student to {output_dir}")
        self._checkpoints.save_student(output_dir, functools.partial(self._write_student, state_dict=state_dict))

    def _write_student(self, folder: str, state_dict: Optional[dict] = None) -> None:
        super()._save(folder, state_dict)  # training_args.bin holds no token (TokensNeverPickled)
        self.args.save_distillation_config(folder, layer_pairing=self.pairing.dicts,
                                           teacher_fingerprint=self.teacher_fingerprint)

    def save_metrics(self, split: str, metrics: dict[str, float], combined: bool = True) -> None:
        """``Trainer.save_metrics``, each file written under a temporary name and renamed (main process only)."""
        if self.is_world_process_zero():
            save_metrics_atomically(self.args.output_dir, split, metrics, combined)

    def init_hf_repo(self, *args: Any, **kwargs: Any) -> None:
        with explain_repo_failure(self.args, in_init=not hasattr(self, "state")):  # push_to_hub's: explained there
            super().init_hf_repo(*args, **kwargs)

    # ------------------------------------------------------------------------------------------- the Hub
    def create_model_card(self, **card_kwargs: Any) -> None:
        """Write the CKTF model card (``README.md``, with ``training_curves.png`` and the widget's ``example.png``) in
        ``output_dir``, main process only. Accuracy comes from the latest ``evaluate()`` / ``evaluate_teacher()``; size
        and CPU latency are measured now. ``card_kwargs`` (``Trainer.create_model_card``'s, plus ``baselines``) as
        :func:`~cktf_hf.card_facts.gather_card_facts` reads them."""
        if self.is_world_process_zero():
            check_weights(self.accelerator.unwrap_model(self.model), "to write a model card")
            self.card_info = write_model_card(self, self.args.output_dir, **card_kwargs)

    def push_to_hub(self, commit_message: Optional[str] = "End of training", blocking: bool = True, **kwargs: Any):
        """Save the student, write its model card and upload the output folder (never the teacher, projectors or
        memory banks). The student is saved before any Hub call; a failed upload raises
        :class:`~cktf_hf.hub.HubPushError`, which says what failed and how to retry."""
        self.save_model(_internal_call=True)
        with explain_push_failure(self, card_kwargs=kwargs):
            return super().push_to_hub(commit_message=commit_message, blocking=blocking, **kwargs)

