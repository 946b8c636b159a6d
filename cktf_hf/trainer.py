"""``ContrastiveDistillationTrainer``: a thin ``transformers.Trainer`` that distils a frozen teacher into the model."""

from __future__ import annotations

import os
from collections import defaultdict
from typing import Any, Optional, Union

import torch
import httpx2
from huggingface_hub.errors import HfHubHTTPError
from safetensors.torch import load_file, save_file
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm
from transformers import PreTrainedModel, Trainer, set_seed
from transformers.utils import SAFE_WEIGHTS_NAME, logging

from .cache import TeacherCache, check_deterministic, fingerprint
from .config import ContrastiveDistillationConfig
from .data import DistillationCollator, IndexedDataset, NegativeSampler, dataset_labels
from .features import FeatureLayout
from .metrics import make_compute_metrics
from .model_card import (
    DistillationCardInfo,
    build_model_card,
    checkpoint_from_args,
    hyperparameters_from_args,
    measure_model,
    objective_from_args,
)
from .model_io import ClassifierInputCapture, run_model
from .objectives import CKTFObjective, PairFeatures, PairShape
from .objectives.contrastive import BANK_DTYPES
from .pairing import LayerPair, build_pairs, layer_name, pairing_table, read_pair_features
from .teacher import check_label_spaces, load_teacher

logger = logging.get_logger(__name__)

OBJECTIVE_ATTRIBUTE = "cktf_objective"
STATE_NAME = "_cktf_distillation_state.safetensors"  # "_" keeps it out of every Hub push


class ContrastiveDistillationTrainer(Trainer):
    """Trains ``model`` (the student) on CKTF's objective against a frozen teacher.

    The teacher comes from ``args.teacher`` (Hub id or folder) or ``teacher_model``. Layer pairs, projectors and
    memory banks are built from one probe batch of ``train_dataset`` before training; they live in an
    ``nn.Module`` attached to the student (so DDP synchronises their gradients) and are left out of
    ``save_pretrained``; checkpoints keep them in ``_cktf_distillation_state.safetensors``. Datasets yield
    ``pixel_values`` and ``labels`` per example (see :class:`~cktf_hf.transforms.ImageClassificationTransform`).
    """

    _tag_names = ["knowledge-distillation", "cktf", "image-classification"]
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
        **kwargs: Any,
    ) -> None:
        if not isinstance(args, ContrastiveDistillationConfig):
            raise TypeError("args must be a ContrastiveDistillationConfig.")
        if train_dataset is None:
            raise ValueError("ContrastiveDistillationTrainer needs a train_dataset (the probe batch comes from it).")
        set_seed(args.seed)
        settings = args.objective_settings
        self.teacher = load_teacher(teacher_model if teacher_model is not None else args.teacher, args)
        check_label_spaces(model, self.teacher, uses_teacher_labels=settings.kd_weight > 0 or settings.ce_weight > 0)

        train_dataset, data_collator, num_samples = _prepare_training_data(train_dataset, data_collator, args)
        self.objective, self.pairs, self.layouts, self.pairing_rows = self._build_objective(
            model, train_dataset, data_collator, args, num_samples
        )
        model.add_module(OBJECTIVE_ATTRIBUTE, self.objective)
        model._keys_to_ignore_on_save = [k for k in model.state_dict() if k.startswith(OBJECTIVE_ATTRIBUTE + ".")]
        self._student_capture = ClassifierInputCapture(model)
        self._teacher_capture = ClassifierInputCapture(self.teacher)
        self._components: dict[str, torch.Tensor] = defaultdict(float)
        self._component_steps = 0
        self.card_info: Optional[DistillationCardInfo] = None  # what the last model card reported

        if compute_metrics is None:
            compute_metrics = make_compute_metrics(model.config.num_labels)
        super().__init__(
            model=model,
            args=args,
            train_dataset=train_dataset,
            eval_dataset=eval_dataset,
            data_collator=data_collator,
            compute_metrics=compute_metrics,
            **kwargs,
        )
        self.teacher = self.accelerator.prepare_model(self.teacher, evaluation_mode=True)
        logger.info("CKTF layer pairing:\n%s", pairing_table(self.pairing_rows))
        self.teacher_cache = self._load_teacher_cache() if args.teacher_cache_dir else None

    # ----------------------------------------------------------------------------------------------- set-up
    def _build_objective(
        self,
        student: PreTrainedModel,
        train_dataset: Any,
        collator: Any,
        args: ContrastiveDistillationConfig,
        num_samples: Optional[int],
    ) -> tuple[CKTFObjective, list[LayerPair], dict[str, list[FeatureLayout]], list[tuple]]:
        """Probe both models on two training examples; pair their layers and build the objective from real shapes."""
        batch = collator([train_dataset[i] for i in range(min(2, len(train_dataset)))])
        if num_samples is not None and "index" not in batch:
            raise ValueError(
                "negatives='memory_bank' needs 'index' and 'contrast_idx' in every batch, but the data collator "
                "does not add them; use cktf_hf.DistillationCollator (the default) or negatives='in_batch'."
            )
        self._pixel_shape = tuple(batch["pixel_values"].shape[1:])
        student_out = _probe(student, batch["pixel_values"], "student")
        teacher_out = _probe(self.teacher, batch["pixel_values"], "teacher")
        layouts = {
            "student": [FeatureLayout.infer(h) for h in student_out.hidden_states],
            "teacher": [FeatureLayout.infer(h) for h in teacher_out.hidden_states],
        }
        pairs = build_pairs(args.layer_pairs, layouts["student"], layouts["teacher"])
        settings = args.objective_settings
        shapes, rows = [], []
        for pair in pairs:
            s_feat = read_pair_features("student", student_out.hidden_states, student_out.final, student_out.logits,
                                        [pair], layouts["student"], args.token_pooling, args.grid_size,
                                        map_pairs=[pair.name] if _has_map(pair, layouts) else [])
            t_feat = read_pair_features("teacher", teacher_out.hidden_states, teacher_out.final, teacher_out.logits,
                                        [pair], layouts["teacher"], args.token_pooling, args.grid_size,
                                        map_pairs=[pair.name] if _has_map(pair, layouts) else [])
            s_map, t_map = s_feat.maps.get(pair.name), t_feat.maps.get(pair.name)
            shapes.append(PairShape(
                pair.name,
                s_feat.pooled[pair.name].shape[1],
                t_feat.pooled[pair.name].shape[1],
                tuple(s_map.shape[1:]) if s_map is not None else None,
                tuple(t_map.shape[1:]) if t_map is not None else None,
                is_stem=pair.is_stem,
            ))
            weight = settings.final_weight if pair.is_final else settings.layer_weight
            rows.append(_pairing_row(pair, student_out, teacher_out, layouts, weight))
        objective = CKTFObjective(
            settings, shapes, negatives=args.negatives, num_samples=num_samples, nce_k=args.nce_k,
            momentum=args.nce_momentum, feat_dim=args.feat_dim, projector=args.projector,
            bank_dtype=BANK_DTYPES[args.bank_dtype],
        ).to(next(student.parameters()).device)
        return objective, pairs, layouts, rows

    def _load_teacher_cache(self) -> TeacherCache:
        """Build (main process first) or load the teacher-output cache of the training set."""
        args, dataset = self.args, self.train_dataset
        key = fingerprint(self.accelerator.unwrap_model(self.teacher), dataset, self.pairs, {
            "token_pooling": args.token_pooling, "grid_size": args.grid_size,
            "batch_norm": self.objective.settings.feature_batch_norm, "maps": self._map_pairs,
            "batch_size": args.per_device_train_batch_size, "teacher_dtype": str(self._teacher_dtype),
        })

        def batches():
            # The training batch size: kernels chosen by batch shape then compute what training would.
            loader = DataLoader(dataset, batch_size=args.per_device_train_batch_size, shuffle=False,
                                collate_fn=DistillationCollator())
            yield from tqdm(loader, desc="Caching teacher outputs", disable=args.disable_tqdm)

        def run_teacher(pixel_values: torch.Tensor) -> Any:
            pixel_values = pixel_values.to(self.args.device, self._teacher_dtype)
            return run_model(self.teacher, self._teacher_capture, pixel_values, "teacher")

        with args.main_process_first(desc="teacher-output cache"):
            return TeacherCache.build_or_load(
                args.teacher_cache_dir, key, run_teacher, batches, self.pairs, self.layouts["teacher"],
                args.token_pooling, args.grid_size, self.objective.settings.feature_batch_norm, self._map_pairs,
            )

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
        index, contrast_idx = inputs.pop("index", None), inputs.pop("contrast_idx", None)
        contrast_mask = inputs.pop("contrast_mask", None)
        labels, pixel_values = inputs.get("labels"), inputs["pixel_values"]
        if not model.training:  # evaluation of the student (or, in evaluate_teacher, the teacher) alone
            outputs = model(pixel_values=pixel_values.to(next(model.parameters()).dtype), labels=labels)
            self._student_capture.value = self._teacher_capture.value = None
            return (outputs.loss, outputs) if return_outputs else outputs.loss
        if self.teacher_cache is not None:
            teacher_features = self.teacher_cache.lookup(index, pixel_values.device)
        elif not self.objective.needs_teacher:  # cross-entropy alone: no teacher forward
            teacher_features = PairFeatures(pixel_values.new_zeros(0), {})
        else:
            with torch.no_grad():
                teacher_out = run_model(self.teacher, self._teacher_capture, pixel_values.to(self._teacher_dtype),
                                        "teacher")
            teacher_features = self._pair_features("teacher", teacher_out)
        student_out = run_model(model, self._student_capture, pixel_values, "student")
        result = self.objective(
            self._pair_features("student", student_out), teacher_features,
            labels=labels, index=index, contrast_idx=contrast_idx, contrast_mask=contrast_mask,
        )
        for name, value in result.components.items():
            self._components[name] = self._components[name] + value
        self._component_steps += 1
        return (result.loss, student_out) if return_outputs else result.loss

    def evaluate_teacher(self, eval_dataset: Optional[Any] = None, metric_key_prefix: str = "teacher") -> dict[str, float]:
        """Evaluate the teacher on the evaluation set with the student's metrics (keys ``teacher_accuracy``, ...)."""
        student, student_wrapped = self.model, self.model_wrapped
        self.model = self.model_wrapped = self.teacher
        try:
            return self.evaluate(eval_dataset, metric_key_prefix=metric_key_prefix)
        finally:
            self.model, self.model_wrapped = student, student_wrapped

    @property
    def _teacher_dtype(self) -> torch.dtype:
        return next(self.teacher.parameters()).dtype

    @property
    def _map_pairs(self) -> list[str]:
        """Pairs whose spatial maps the classic map losses read (none without classic terms)."""
        objective = self.objective
        if not objective.classic:
            return []
        return [name for name in objective.stage_pairs if objective.pairs[name].student_map is not None]

    def _pair_features(self, side: str, out: Any) -> PairFeatures:
        """The features the objective reads: the final pair, contrastive pairs and the maps of classic losses."""
        args, used = self.args, {*self.objective.contrastive, *self._map_pairs}
        pairs = [pair for pair in self.pairs if pair.is_final or pair.name in used]
        return read_pair_features(
            side, out.hidden_states, out.final, out.logits, pairs, self.layouts[side], args.token_pooling,
            args.grid_size, batch_norm=self.objective.settings.feature_batch_norm, map_pairs=self._map_pairs,
        )

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
    def _save_checkpoint(self, model: nn.Module, trial: Any) -> None:
        """Also save the distillation state (projectors, memory banks, Z) into the checkpoint folder."""
        super()._save_checkpoint(model, trial)
        if self.args.push_to_hub and self.args.hub_strategy in ("checkpoint", "all_checkpoints") and self.push_in_progress:
            # The checkpoint folder is uploaded as it is: let that upload finish before the state joins the folder.
            self.push_in_progress.wait_until_done()
        if self.args.should_save:
            folder = os.path.join(self._get_output_dir(trial=trial), f"checkpoint-{self.state.global_step}")
            state = {k: v.detach().cpu().contiguous() for k, v in self.objective.state_dict().items()}
            save_file(state, os.path.join(folder, STATE_NAME))

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model: Optional[nn.Module] = None) -> None:
        """Restore the student and the distillation state (projectors, memory banks, Z) from a checkpoint.

        The student is read back through ``from_pretrained``: transformers 5 renames some weights on save (ViT's
        ``encoder.layer.N.attention.attention.query`` ↔ ``layers.N.attention.q_proj``), and the Trainer's plain
        ``load_state_dict`` misses those keys, silently resuming with fresh encoder weights.
        """
        state_path = os.path.join(resume_from_checkpoint, STATE_NAME)
        if not os.path.isfile(state_path):
            raise FileNotFoundError(
                f"{resume_from_checkpoint} has no {STATE_NAME} (projectors, memory banks, Z): it was not written by "
                "ContrastiveDistillationTrainer, so training cannot resume exactly from it."
            )
        self._reload_student(resume_from_checkpoint, model)
        self.objective.load_state_dict(load_file(state_path, device=str(self.args.device)))

    def _load_best_model(self) -> None:
        """``load_best_model_at_end``: the best student weights, read as in :meth:`_load_from_checkpoint`."""
        logger.info("Loading best student from %s (score: %s).", self.state.best_model_checkpoint,
                    self.state.best_metric)
        self._reload_student(self.state.best_model_checkpoint)

    def _reload_student(self, checkpoint: str, model: Optional[nn.Module] = None) -> None:
        student = self.accelerator.unwrap_model(model if model is not None else self.model)
        reloaded = type(student).from_pretrained(checkpoint, dtype=student.dtype)
        result = student.load_state_dict(reloaded.state_dict(), strict=False)
        missing = [k for k in result.missing_keys if not k.startswith(OBJECTIVE_ATTRIBUTE + ".")]
        if missing or result.unexpected_keys:
            raise RuntimeError(f"Checkpoint {checkpoint} does not fit the student: missing {missing}, "
                               f"unexpected {list(result.unexpected_keys)}.")

    def _save(self, output_dir: Optional[str] = None, state_dict: Optional[dict] = None) -> None:
        hub_token, self.args.hub_token = self.args.hub_token, None  # never written into training_args.bin
        try:
            super()._save(output_dir, state_dict)
        finally:
            self.args.hub_token = hub_token
        self.args.save_distillation_config(
            output_dir if output_dir is not None else self.args.output_dir, layer_pairing=self.pairing_dicts
        )

    @property
    def pairing_dicts(self) -> list[dict[str, Any]]:
        """The layer-pairing table as dicts (pair, student/teacher layer and shape, weight)."""
        keys = ("pair", "student_layer", "student_shape", "teacher_layer", "teacher_shape", "weight")
        return [dict(zip(keys, (r[0], r[1], list(r[2]), r[3], list(r[4]), r[5]))) for r in self.pairing_rows]

    # ------------------------------------------------------------------------------------------- the Hub
    def create_model_card(
        self,
        model_name: Optional[str] = None,
        dataset: Optional[Union[str, list[str]]] = None,
        dataset_split: Optional[str] = None,
        license: Optional[str] = None,
        baselines: Optional[dict[str, Any]] = None,
        **kwargs: Any,
    ) -> None:
        """Write ``README.md`` in ``output_dir``: the CKTF model card (see ``model_cards/cktf_model_card.md``).

        Accuracy comes from the latest ``evaluate()`` / ``evaluate_teacher()`` of this run (call them first to have it
        in the card); parameters, size and CPU latency are measured now. ``baselines`` adds rows such as
        ``{"from scratch": 0.84}``. Other keyword arguments of ``Trainer.create_model_card`` are accepted and ignored.
        """
        if not self.is_world_process_zero():
            return
        args = self.args
        dataset_id = dataset[0] if isinstance(dataset, (list, tuple)) else dataset
        student = self.accelerator.unwrap_model(self.model)
        info = DistillationCardInfo(
            teacher=args.teacher or getattr(self.teacher.config, "_name_or_path", None) or type(self.teacher).__name__,
            teacher_architecture=type(self.accelerator.unwrap_model(self.teacher)).__name__,
            student_architecture=type(student).__name__,
            repo_id=args.hub_model_id or self.hub_model_id,
            model_name=model_name,
            teacher_stats=measure_model(self.teacher, self._pixel_shape),
            student_stats=measure_model(student, self._pixel_shape),
            teacher_metrics=_latest_metrics(self.state.log_history, "teacher_"),
            student_metrics=_latest_metrics(self.state.log_history, "eval_"),
            baselines=baselines,
            dataset_id=dataset_id,
            dataset_on_hub=bool(dataset_id) and not os.path.isdir(dataset_id) and "/" in dataset_id,
            dataset_name=dataset_id,
            dataset_split=dataset_split,
            objective=objective_from_args(args),
            pairing=self.pairing_dicts,
            hyperparameters=hyperparameters_from_args(args),
            seed=args.seed,
            checkpoint=checkpoint_from_args(args),
            license=license,
        )
        os.makedirs(args.output_dir, exist_ok=True)
        build_model_card(info).save(os.path.join(args.output_dir, "README.md"))
        self.card_info = info

    def push_to_hub(self, commit_message: Optional[str] = "End of training", blocking: bool = True, **kwargs: Any):
        """Save the student, write its model card and upload the output folder (never the teacher, projectors or
        memory banks). A failed upload raises an error that says what failed and how to retry; the student is saved
        locally first either way."""
        try:
            return super().push_to_hub(commit_message=commit_message, blocking=blocking, **kwargs)
        except (HfHubHTTPError, OSError, httpx2.HTTPError) as error:
            if not os.path.isfile(os.path.join(self.args.output_dir, SAFE_WEIGHTS_NAME)):
                self.save_model(_internal_call=True)
            repo = self.hub_model_id or self.args.hub_model_id or os.path.basename(self.args.output_dir.rstrip("/"))
            raise HubPushError(
                f"Pushing the student to the Hub repo {repo!r} failed: {_describe(error)}. The student, its model "
                f"card and distillation_config.json are saved in {self.args.output_dir!r}. Retry with "
                f"trainer.push_to_hub(), or upload the folder later with `hf upload {repo} {self.args.output_dir}`."
            ) from None


class HubPushError(RuntimeError):
    """Uploading the student failed; it is saved locally."""


def _describe(error: Exception) -> str:
    response = getattr(error, "response", None)
    if response is not None:
        status = getattr(response, "status_code", "?")
        hint = {401: " (unauthorized: check HF_TOKEN or `hf auth login`)",
                403: " (forbidden: the token may lack write access)"}.get(status, "")
        return f"HTTP {status}{hint} from {getattr(response, 'url', 'the Hub')}"
    return f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else 'no connection'}"


def _latest_metrics(log_history: list[dict[str, Any]], prefix: str) -> Optional[dict[str, float]]:
    """The accuracy metrics of the latest log entry with ``<prefix>accuracy``, unprefixed."""
    for entry in reversed(log_history):
        if f"{prefix}accuracy" in entry:
            return {key[len(prefix):]: value for key, value in entry.items()
                    if key.startswith(prefix) and key[len(prefix):] in ("accuracy", "top5_accuracy")}
    return None

def _prepare_training_data(dataset: Any, collator: Any, args: ContrastiveDistillationConfig) -> tuple[Any, Any, Optional[int]]:
    """The training data path: dataset indices where the memory bank or the teacher cache needs them, other-class
    negatives for the bank, and the default collator. Returns (dataset, collator, bank size or None)."""
    settings = args.objective_settings
    uses_bank = args.negatives == "memory_bank" and (settings.final_weight > 0 or settings.layer_weight > 0)
    if (uses_bank or args.teacher_cache_dir) and not (hasattr(dataset, "__getitem__") and hasattr(dataset, "__len__")):
        raise ValueError(
            "negatives='memory_bank' and teacher_cache_dir need a map-style train_dataset with stable indices (not an "
            "iterable or streaming dataset); use negatives='in_batch' without a teacher cache for those."
        )
    if args.teacher_cache_dir:
        check_deterministic(dataset)
    if (uses_bank or args.teacher_cache_dir) and not isinstance(dataset, IndexedDataset):
        dataset = IndexedDataset(dataset)
    if not uses_bank:
        return dataset, collator or DistillationCollator(), None
    labels = dataset_labels(dataset, args.label_column)
    if labels is None:
        logger.warning("No label column found: memory-bank negatives are drawn uniformly, not from other classes.")
    sampler = NegativeSampler(len(dataset), args.nce_k, labels, seed=args.seed,
                              shared=args.negative_sampling == "shared")
    return dataset, collator or DistillationCollator(sampler), len(dataset)


def _probe(model: PreTrainedModel, pixel_values: torch.Tensor, side: str) -> Any:
    """One no-grad eval-mode forward on the probe batch, with a clear error when the images do not fit."""
    param = next(model.parameters())
    expected = getattr(model.config, "num_channels", None)
    if expected is not None and pixel_values.shape[1] != expected:
        raise ValueError(
            f"The {side} expects {expected}-channel images but the batch has pixel_values of shape "
            f"{tuple(pixel_values.shape)}; convert images to RGB in the transform (ImageClassificationTransform does)."
        )
    capture = ClassifierInputCapture(model)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            return run_model(model, capture, pixel_values.to(param.device, param.dtype), side)
    except ValueError as error:
        if "hidden states" in str(error):
            raise
        raise ValueError(
            f"The {side} ({type(model).__name__}) cannot take the training images (pixel_values "
            f"{tuple(pixel_values.shape)}): {error}. Resize them to the size its config expects "
            f"(image_size={getattr(model.config, 'image_size', '?')}) with the image processor."
        ) from error
    finally:
        capture.remove()
        model.train(was_training)


def _has_map(pair: LayerPair, layouts: dict[str, list[FeatureLayout]]) -> bool:
    if pair.is_final:
        return False
    return (layouts["student"][pair.student_index].kind != "vector"
            and layouts["teacher"][pair.teacher_index].kind != "vector")


def _pairing_row(pair: LayerPair, student_out: Any, teacher_out: Any, layouts: dict, weight: float) -> tuple:
    if pair.is_final:
        return ("final", "classifier input", tuple(student_out.final.shape[1:]), "classifier input",
                tuple(teacher_out.final.shape[1:]), weight)
    s, t = pair.student_index, pair.teacher_index
    return (pair.name, layer_name(s, layouts["student"][s]), tuple(student_out.hidden_states[s].shape[1:]),
            layer_name(t, layouts["teacher"][t]), tuple(teacher_out.hidden_states[t].shape[1:]), weight)
