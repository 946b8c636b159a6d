"""``ContrastiveDistillationConfig``: the Trainer arguments plus everything the distillation needs."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field, fields
from typing import Any, Mapping, Optional, Union

from transformers import TrainingArguments
from transformers.utils import logging

from .data import NEGATIVE_SAMPLING
from .features import STAGE_POOLING, TOKEN_POOLING
from .hub import TokensNeverPickled, check_repo_id
from .locations import check_teacher_location, looks_like_local_path
from .objectives import NEGATIVE_MODES, ObjectiveSettings, get_preset
from .objectives.contrastive import BANK_DTYPES, BANK_LOSSES, BANK_WARM_STARTS, POSITIVES
from .objectives.registry import check_choice
from .pairing import parse_pair_spec
from .projectors import PROJECTOR_KINDS, TEACHER_PROJECTORS

CONFIG_NAME = "distillation_config.json"
LOCAL_PATHS_KEY = "local_paths_removed"
TEACHER_DTYPES = ("auto", "float32", "bfloat16", "float16")

logger = logging.get_logger(__name__)
_BANK_OPTIONS = ("nce_k", "negative_sampling", "bank_dtype", "nce_momentum")


@dataclass
class ContrastiveDistillationConfig(TokensNeverPickled, TrainingArguments):
    r"""
    Configuration of [`ContrastiveDistillationTrainer`]: every `TrainingArguments` field plus the distillation.

    Parameters:
        teacher (`str`, *optional*):
            Hub id or local folder of the teacher, loaded with `AutoModelForImageClassification.from_pretrained`. May
            be left out when a teacher model is passed to the trainer.
        teacher_revision (`str`, *optional*): Hub revision (branch, tag or commit) of the teacher.
        teacher_dtype (`str`, *optional*, defaults to `"auto"`):
            `float32`, `bfloat16`, `float16`, or `auto` (bfloat16/float16 when training with `bf16`/`fp16`, else float32).
        trust_remote_code (`bool`, *optional*, defaults to `False`): Allow custom modelling code for the teacher.
        preset (`str`, *optional*, defaults to `"cktf"`):
            Named objective settings: `cktf` (the recipe: in-batch negatives, intermediate pairs contrasted cell by
            cell against the teacher's own features; also named `cktf-recipe`), `cktf-reference` and `crd-reference`
            (the paper's code, frozen), `cktf+kd`, `crd`, `crd+kd`, `transfer` (the paper's settings), `kd`,
            `scratch`, a classic method (`fitnets`, `at`, `sp`, `cc`, `vid`, `rkd`, `pkt`, `nst`, `dkd`, `dist`),
            `<classic>+cktf` (the paper's Table 2) or `<classic>+cktf-recipe`. The fields below override it when set.
        ce_weight, kd_weight, final_weight, layer_weight (`float`, *optional*):
            γ (cross-entropy), α (KD), β (contrastive loss on the classifier inputs) and θ (each intermediate pair).
        temperature (`float`, *optional*): Contrastive temperature τ.
        kd_temperature (`float`, *optional*): KD temperature T.
        classic_objectives (`str`, *optional*):
            Extra classic terms with weights, e.g. `"at=1000,pkt=30000"` (replaces the preset's).
        feature_batch_norm (`bool`, *optional*): CKTF's batch-dimension L2 normalisation of intermediate features.
        negatives (`str`, *optional*):
            `memory_bank` (the reference: NCE with momentum banks, K other-class negatives) or `in_batch` (InfoNCE).
            Defaults to the preset's: `in_batch` for `cktf` (the recipe) and the `+cktf-recipe` presets, else
            `memory_bank`.
        nce_k (`int`, *optional*, defaults to `16384`): Negatives per sample in memory-bank mode.
        negative_sampling (`str`, *optional*, defaults to `"per_sample"`):
            `per_sample` (the reference: K other-class negatives drawn for each sample, cost ∝ B·K·D plus a pass
            over the bank) or `shared` (K negatives drawn once per step for the whole batch, other-class ones masked per anchor:
            one `[B, D] × [D, K]` product per pair and direction, cost independent of the dataset size).
        bank_dtype (`str`, *optional*, defaults to `"float32"`):
            Storage of the memory banks: `float32`, `bfloat16` or `float16` (half the memory; the math stays float32).
        nce_momentum (`float`, *optional*, defaults to `0.5`): Memory-bank momentum.
        positive (`str`, *optional*):
            Where the memory-bank positive comes from: `bank` (the reference: the other side's bank row) or `current`
            (the other side's current embedding, detached; bank rows only serve as negatives). Overrides the preset.
        bank_warm_start (`str`, *optional*):
            `none` (the reference) or `skip_unwritten` (bank rows never written are left out of the negatives and an
            unwritten own row gives the current-embedding positive, so no score reads initialisation noise).
            Overrides the preset.
        bank_loss (`str`, *optional*):
            The memory-bank loss: `nce` (CRD's binary NCE with a fixed normaliser, the reference) or `infonce` (MoCo's
            softmax cross-entropy of the positive against the K negatives). Overrides the preset.
        contrastive_warmup (`float`, *optional*):
            Fraction of training in [0, 1) over which β and θ rise linearly from 0 (0 = none). Overrides the preset.
        spatial_contrast (`bool`, *optional*):
            Contrast the intermediate pairs cell by cell (both maps average-pooled to their common grid, one projector
            shared by the cells, InfoNCE across the batch's samples and across the sample's cells) instead of as one
            pooled vector. Needs `negatives="in_batch"`. Overrides the preset; left unset with
            `negatives="memory_bank"`, a preset's cell-by-cell contrast (`cktf`'s) is off and its pairs are pooled.
        stage_pooling (`str`, *optional*, defaults to `"global"`):
            `global` (every map pooled to one `grid_size` grid) or `fixed_window` (CKTF's code: average pooling with a
            `pool_window` window and stride per stage, so 32, 16, 8-cell maps give 4×4, 2×2, 1×1 grids; a map smaller
            than the window is pooled globally). Token layers are pooled on their patch grid the same way.
        pool_window (`int`, *optional*, defaults to `8`): Window (= stride) of `stage_pooling="fixed_window"`.
        feat_dim (`int`, *optional*, defaults to `128`): Projector output size.
        projector (`str`, *optional*, defaults to `"linear"`): `linear` or `mlp` heads.
        teacher_projector (`str`, *optional*):
            `trained` (a head per pair on the teacher side too, as CRD and CKTF do) or `none` (the teacher's features
            are used as they are, L2-normalised, and the student's heads map into the teacher's feature space).
            Overrides the preset.
        layer_pairs (`str`, *optional*, defaults to `"auto"`):
            `auto`, or explicit `student:teacher` pairs by hidden-state index (negative allowed) or name, e.g.
            `"0:0,2:4,-1:-1"` or `"stage1:stage2,stage2:stage4"`. The final (classifier-input) pair is always added.
        token_pooling (`str`, *optional*, defaults to `"mean"`): Token layers pooled by patch-token `mean` or `cls`.
        grid_size (`int`, *optional*, defaults to `1`): Keep a g×g grid when pooling maps (1 = global average).
        label_column (`str`, *optional*): Dataset column with the labels, for other-class negatives.
        allow_label_mismatch (`bool`, *optional*, defaults to `False`):
            Train although the dataset's `ClassLabel` names differ from the teacher's `id2label` (e.g. transfer to new
            classes with cross-entropy): the student's `id2label` becomes the dataset's. Without it that is an error
            (the same names in another order are remapped either way).
        label_map (`str` or `dict`, *optional*):
            Dataset class names mapped onto the teacher's, for names that differ in more than case, spacing and
            punctuation (those are matched without it): `"T-shirt_top=T-shirt/top,Ankle_boot=Ankle boot"` or
            `{"T-shirt_top": "T-shirt/top"}`.
        teacher_check (`bool`, *optional*, defaults to `True`):
            Score the teacher on up to 256 evaluation images before training and stop when it is no better than
            always guessing the most frequent class (label mismatch, preprocessing, damaged weights). `False` goes on.
        teacher_cache_dir (`str`, *optional*):
            Opt-in teacher-output cache: the teacher's paired features and logits are computed once per training image,
            stored under this folder (fingerprinted by teacher, data, transform and pairing) and read back by index
            instead of running the teacher each step. Refused with random augmentation. A dataset that is not a
            `datasets.Dataset` is fingerprinted by a hash of all its examples (one extra pass over the data).
        card_latency (`bool`, *optional*, defaults to `True`):
            Measure the CPU latency of student and teacher for the model card (about 0.2 s per model and batch size,
            or a few forward passes of a slow model). `False` leaves latency out of the card.
        card_latency_batch_sizes (`list[int]`, *optional*, defaults to `[1, 32]`): Batch sizes timed for the card.
    """

    teacher: Optional[str] = field(default=None, metadata={"help": "Hub id or local folder of the teacher."})
    teacher_revision: Optional[str] = field(default=None, metadata={"help": "Hub revision of the teacher."})
    teacher_dtype: str = field(default="auto", metadata={"help": f"Teacher dtype: one of {TEACHER_DTYPES}."})
    trust_remote_code: bool = field(default=False, metadata={"help": "Allow custom modelling code for the teacher."})
    preset: str = field(default="cktf", metadata={"help": "Named objective settings (cktf, cktf+kd, crd, kd, ...)."})
    ce_weight: Optional[float] = field(default=None, metadata={"help": "γ: cross-entropy weight (overrides preset)."})
    kd_weight: Optional[float] = field(default=None, metadata={"help": "α: KD weight (overrides preset)."})
    final_weight: Optional[float] = field(default=None, metadata={"help": "β: final-pair contrastive weight."})
    layer_weight: Optional[float] = field(default=None, metadata={"help": "θ: weight of each intermediate pair."})
    temperature: Optional[float] = field(default=None, metadata={"help": "τ: contrastive temperature."})
    kd_temperature: Optional[float] = field(default=None, metadata={"help": "T: KD temperature."})
    classic_objectives: Optional[str] = field(
        default=None, metadata={"help": "Classic terms with weights, e.g. 'at=1000,pkt=30000'."}
    )
    feature_batch_norm: Optional[bool] = field(
        default=None, metadata={"help": "Batch-dimension L2 normalisation of intermediate features."}
    )
    negatives: Optional[str] = field(
        default=None, metadata={"help": f"Negatives: one of {NEGATIVE_MODES} (default: the preset's)."}
    )
    nce_k: int = field(default=16384, metadata={"help": "Negatives per sample (memory bank)."})
    negative_sampling: str = field(
        default="per_sample", metadata={"help": f"Memory-bank negatives: one of {NEGATIVE_SAMPLING}."}
    )
    bank_dtype: str = field(default="float32", metadata={"help": f"Memory-bank storage: one of {tuple(BANK_DTYPES)}."})
    nce_momentum: float = field(default=0.5, metadata={"help": "Memory-bank momentum."})
    positive: Optional[str] = field(default=None, metadata={"help": f"Bank positive: one of {POSITIVES}."})
    bank_warm_start: Optional[str] = field(
        default=None, metadata={"help": f"Bank warm start: one of {BANK_WARM_STARTS}."}
    )
    bank_loss: Optional[str] = field(default=None, metadata={"help": f"Memory-bank loss: one of {BANK_LOSSES}."})
    contrastive_warmup: Optional[float] = field(
        default=None, metadata={"help": "Fraction of training over which β and θ rise linearly from 0."}
    )
    spatial_contrast: Optional[bool] = field(
        default=None, metadata={"help": "Contrast intermediate pairs cell by cell (in-batch negatives only)."}
    )
    stage_pooling: str = field(default="global", metadata={"help": f"Map pooling: one of {STAGE_POOLING}."})
    pool_window: int = field(default=8, metadata={"help": "Window (= stride) of stage_pooling='fixed_window'."})
    feat_dim: int = field(default=128, metadata={"help": "Projector output dimension."})
    projector: str = field(default="linear", metadata={"help": f"Projector heads: one of {PROJECTOR_KINDS}."})
    teacher_projector: Optional[str] = field(
        default=None, metadata={"help": f"Teacher-side heads: one of {TEACHER_PROJECTORS} (default: the preset's)."}
    )
    layer_pairs: str = field(default="auto", metadata={"help": "'auto' or 'student:teacher,...' pairs."})
    token_pooling: str = field(default="mean", metadata={"help": f"Token pooling: one of {TOKEN_POOLING}."})
    grid_size: int = field(default=1, metadata={"help": "Pooling grid g (g×g kept; 1 = global)."})
    label_column: Optional[str] = field(default=None, metadata={"help": "Label column for other-class negatives."})
    allow_label_mismatch: bool = field(
        default=False, metadata={"help": "Train although the dataset's class names differ from the teacher's."}
    )
    label_map: Union[dict[str, str], str, None] = field(
        default=None, metadata={"help": "Dataset class names mapped onto the teacher's, e.g. "
                                        "'T-shirt_top=T-shirt/top,Ankle_boot=Ankle boot'."}
    )
    teacher_check: bool = field(
        default=True, metadata={"help": "Score the teacher on up to 256 evaluation images before training; stop when "
                                        "it is near chance."}
    )
    teacher_cache_dir: Optional[str] = field(
        default=None, metadata={"help": "Cache the teacher's outputs per training image in this folder (opt-in; "
                                        "needs deterministic preprocessing)."}
    )
    card_latency: bool = field(default=True, metadata={"help": "Measure CPU latency for the model card."})
    card_latency_batch_sizes: list[int] = field(
        default_factory=lambda: [1, 32], metadata={"help": "Batch sizes whose CPU latency the model card reports."}
    )

    # Defaults that distillation needs from the Trainer (overridable).
    remove_unused_columns: bool = field(default=False, metadata={"help": "Keep dataset columns for the transform."})
    ddp_find_unused_parameters: Optional[bool] = field(default=False, metadata={"help": "See TrainingArguments."})
    ddp_broadcast_buffers: Optional[bool] = field(
        default=False, metadata={"help": "Memory banks are synchronised by cktf_hf; do not broadcast them."}
    )

    def __post_init__(self) -> None:
        if not isinstance(self.layer_pairs, str):  # a list of (student, teacher) pairs from Python
            self.layer_pairs = ",".join(f"{s}:{t}" for s, t in self.layer_pairs)
        super().__post_init__()
        if self.teacher:
            check_teacher_location(self.teacher)  # "folder not found", not "invalid repo id", for a missing path
        check_choice("teacher_dtype", self.teacher_dtype, TEACHER_DTYPES)
        check_choice("negative_sampling", self.negative_sampling, NEGATIVE_SAMPLING)
        check_choice("bank_dtype", self.bank_dtype, tuple(BANK_DTYPES))
        check_choice("projector", self.projector, PROJECTOR_KINDS)
        check_choice("token_pooling", self.token_pooling, TOKEN_POOLING)
        check_choice("stage_pooling", self.stage_pooling, STAGE_POOLING)
        if self.pool_window < 1:
            raise ValueError(f"pool_window must be a positive integer, got {self.pool_window}.")
        if self.stage_pooling == "fixed_window" and self.grid_size != 1:
            raise ValueError("stage_pooling='fixed_window' sets each stage's grid from pool_window; leave grid_size "
                             f"at 1 (got {self.grid_size}) or use stage_pooling='global'.")
        if any(not isinstance(b, int) or b < 1 for b in self.card_latency_batch_sizes):
            raise ValueError(f"card_latency_batch_sizes must be positive integers, got {self.card_latency_batch_sizes}.")
        if self.nce_k < 1 or self.feat_dim < 1 or self.grid_size < 1:
            raise ValueError("nce_k, feat_dim and grid_size must be positive integers.")
        if not 0 <= self.nce_momentum < 1:
            raise ValueError(f"nce_momentum must be in [0, 1), got {self.nce_momentum}.")
        self.label_map = parse_label_map(self.label_map)
        if self.layer_pairs.strip().lower() != "auto":
            parse_pair_spec(self.layer_pairs)
        self.negatives = self.objective_settings.negatives  # the preset's unless set; fails early on a bad value
        self._warn_unused_bank_options()
        check_repo_id(self.hub_model_id, self.output_dir, self.push_to_hub)

    def _warn_unused_bank_options(self) -> None:
        """Memory-bank options changed from their defaults do nothing with in-batch negatives (the default preset's)."""
        if self.negatives != "in_batch":
            return
        defaults = {f.name: f.default for f in fields(self) if f.name in _BANK_OPTIONS}
        changed = [f"{name}={getattr(self, name)!r}" for name in _BANK_OPTIONS if getattr(self, name) != defaults[name]]
        if changed:
            logger.warning("%s only act on memory-bank negatives, but negatives='in_batch' (preset %r): they have no "
                           "effect. Pass negatives='memory_bank' to use the bank.", ", ".join(changed), self.preset)

    @property
    def objective_settings(self) -> ObjectiveSettings:
        """The preset with every explicitly set weight applied (a preset's cell-by-cell contrast is off when memory-bank
        negatives are chosen and ``spatial_contrast`` is not set: the bank holds one pooled vector per pair)."""
        preset = get_preset(self.preset)
        spatial_contrast = self.spatial_contrast
        if spatial_contrast is None and preset.spatial_contrast and self.negatives not in (None, "in_batch"):
            spatial_contrast = False
        return preset.with_overrides(
            ce_weight=self.ce_weight,
            kd_weight=self.kd_weight,
            final_weight=self.final_weight,
            layer_weight=self.layer_weight,
            temperature=self.temperature,
            kd_temperature=self.kd_temperature,
            feature_batch_norm=self.feature_batch_norm,
            classic=parse_classic_objectives(self.classic_objectives) if self.classic_objectives else None,
            positive=self.positive,
            bank_warm_start=self.bank_warm_start,
            bank_loss=self.bank_loss,
            contrastive_warmup=self.contrastive_warmup,
            spatial_contrast=spatial_contrast,
            negatives=self.negatives,
            teacher_projector=self.teacher_projector,
        )

    @classmethod
    def distillation_fields(cls) -> list[str]:
        """The names of the fields this class adds to ``TrainingArguments``."""
        inherited = {f.name for f in fields(TrainingArguments)}
        return [f.name for f in fields(cls) if f.name not in inherited]

    def distillation_dict(self) -> dict[str, Any]:
        """The distillation fields (not the generic Trainer ones) plus the resolved objective settings."""
        own = {name: getattr(self, name) for name in self.distillation_fields()}
        settings = self.objective_settings
        own["resolved_objective"] = {f.name: getattr(settings, f.name) for f in fields(settings)}
        return own

    def save_distillation_config(self, directory: str, **extra: Any) -> str:
        """Write ``distillation_config.json`` (distillation fields, resolved weights, ``extra``) to ``directory``.

        The file is published with the student, so it holds no local path: a teacher loaded from a local folder is
        written as the folder's name and the teacher cache folder as null, both listed under ``local_paths_removed``.
        """
        path = os.path.join(directory, CONFIG_NAME)
        os.makedirs(directory, exist_ok=True)
        content, removed = {**self.distillation_dict(), **extra}, {}
        if content.get("teacher") and looks_like_local_path(content["teacher"]):
            content["teacher"] = os.path.basename(os.path.normpath(content["teacher"]))
            removed["teacher"] = "a local folder: only its name is kept"
        if content.get("teacher_cache_dir"):
            content["teacher_cache_dir"] = None
            removed["teacher_cache_dir"] = "a local folder: not recorded"
        if removed:
            content[LOCAL_PATHS_KEY] = removed
        with open(path, "w") as f:
            json.dump(content, f, indent=2, sort_keys=True)
        return path

    @classmethod
    def from_distillation_config(cls, path: str, **overrides: Any) -> "ContrastiveDistillationConfig":
        """Read back a ``distillation_config.json`` (file or folder) into a config; ``overrides`` set other fields
        (``output_dir`` at least).

        Reading a file never enables remote code: ``trust_remote_code`` is taken from ``overrides`` only, whatever
        the file says. Fields the file lists under ``local_paths_removed`` are left unset (pass ``teacher=`` again).
        """
        if os.path.isdir(path):
            path = os.path.join(path, CONFIG_NAME)
        saved = read_json(path, "a distillation_config.json written by ContrastiveDistillationTrainer.save_model")
        skipped = {"trust_remote_code", *saved.get(LOCAL_PATHS_KEY, {})}
        kwargs = {k: v for k, v in saved.items() if k in cls.distillation_fields() and k not in skipped}
        if saved.get("trust_remote_code") and "trust_remote_code" not in overrides:
            logger.warning("%s asks for trust_remote_code=True; reading a config never enables remote code: pass "
                           "trust_remote_code=True yourself if you have read and trust the teacher's code.", path)
        resolved = saved.get("resolved_objective") if "preset" not in overrides else None
        try:
            config = cls(**{**kwargs, **overrides})
        except ValueError:
            if isinstance(resolved, dict):  # e.g. the saved negatives clash with what the preset has become
                preset = kwargs.get("preset", "cktf")
                _check_same_objective(path, resolved, get_preset(preset), preset, overrides)
            raise
        if isinstance(resolved, dict):
            _check_same_objective(path, resolved, config.objective_settings, config.preset, overrides)
        return config


def _check_same_objective(path: str, resolved: dict[str, Any], settings: ObjectiveSettings, preset: str,
                          overrides: dict[str, Any]) -> None:
    """Refuse a saved config whose preset now resolves to other weights than it was written with (a preset renamed
    or changed since: ``cktf`` was the paper's settings before it became the recipe), naming a preset that gives them."""
    now = json.loads(json.dumps({f.name: getattr(settings, f.name) for f in fields(settings)}))
    overridden = set(overrides) | ({"classic"} if "classic_objectives" in overrides else set())
    differing = sorted(name for name, value in resolved.items()
                       if name in now and name not in overridden and now[name] != value)
    if not differing:
        return
    from .objectives.presets import PRESETS

    same = sorted(name for name, known in PRESETS.items()
                  if json.loads(json.dumps({f.name: getattr(known, f.name) for f in fields(known)})) == resolved)
    hint = (f"pass preset={same[0]!r} to train as it was" if same else
            "pass the saved values of these fields explicitly to train as it was")
    changes = ", ".join(f"{name}: {resolved[name]!r} saved, {now[name]!r} now" for name in differing)
    raise ValueError(f"{path} was written with objective settings that preset {preset!r} no longer gives "
                     f"({changes}); {hint}, or pass preset yourself to train with that preset's current settings.")


def read_json(path: str, expected: str) -> Any:
    """``json.load`` of ``path``, with an error naming the file and what it should hold when it is not valid JSON."""
    with open(path) as f:
        try:
            return json.load(f)
        except json.JSONDecodeError as error:
            raise ValueError(
                f"{path} is not valid JSON ({error}); it should be {expected}. Restore or re-create the file."
            ) from None


def parse_classic_objectives(spec: str) -> dict[str, float]:
    """``"at=1000,pkt=30000"`` → ``{"at": 1000.0, "pkt": 30000.0}``."""
    weights = {}
    for item in spec.split(","):
        if not item.strip():
            continue
        name, sep, weight = item.partition("=")
        key = name.strip().lower()
        if key in weights:
            raise ValueError(f"Classic objective {name.strip()!r} is named twice in {spec!r}: give each objective "
                             "once, with its weight (e.g. 'at=1000,pkt=30000').")
        try:
            weights[key] = float(weight) if sep else 1.0
        except ValueError:
            raise ValueError(f"Cannot read classic objective {item!r}: write name=weight, e.g. 'at=1000'.") from None
    return weights


def parse_label_map(spec: Optional[Union[str, Mapping[str, str]]]) -> Optional[dict[str, str]]:
    """``"T-shirt_top=T-shirt/top,Ankle_boot=Ankle boot"`` (or a mapping) → ``{dataset name: teacher name}``."""
    if spec is None or isinstance(spec, Mapping):
        pairs = list((spec or {}).items())
    elif isinstance(spec, str):
        pairs = [item.partition("=")[::2] if "=" in item else (item, None) for item in spec.split(",") if item.strip()]
    else:
        raise ValueError(f"label_map must be a string such as 'T-shirt_top=T-shirt/top' or a dict, got {spec!r}.")
    mapping: dict[str, str] = {}
    for dataset_name, teacher_name in pairs:
        if not isinstance(dataset_name, str) or not isinstance(teacher_name, str) or not dataset_name.strip() \
                or not teacher_name.strip():
            raise ValueError(f"Cannot read label_map entry {dataset_name!r}: write dataset name=teacher name, "
                             "e.g. label_map='T-shirt_top=T-shirt/top,Ankle_boot=Ankle boot'.")
        key = dataset_name.strip()
        if key in mapping:
            raise ValueError(f"label_map names the dataset class {key!r} twice; give each class once.")
        mapping[key] = teacher_name.strip()
    return mapping or None
