"""``ContrastiveDistillationConfig``: the Trainer arguments plus everything the distillation needs."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field, fields, make_dataclass
from typing import Any, Mapping, Optional, Union

from transformers import TrainingArguments
from transformers.utils import logging

from .hub import TokensNeverPickled, check_repo_id
from .locations import check_output_dir_apart, check_teacher_location, looks_like_local_path
from .objectives import ObjectiveSettings, get_preset
from .objectives.registry import check_choice
from .objectives.settings import parse_classic_objectives  # noqa: F401  (its public home before the spec)

CONFIG_NAME = "distillation_config.json"
LOCAL_PATHS_KEY = "local_paths_removed"
TEACHER_DTYPES = ("auto", "float32", "bfloat16", "float16")

logger = logging.get_logger(__name__)

# The preset and one field per knob of ObjectiveSettings (None = the preset's), derived from the spec's fields.
_PRESET_HELP = "Named objective settings (cktf, cktf+kd, crd, kd, ...)."
ObjectiveFields = make_dataclass("ObjectiveFields", [
    ("preset", str, field(default="cktf", metadata={"help": _PRESET_HELP})), *ObjectiveSettings.config_fields(),
])
OBJECTIVE_FIELDS = tuple(ObjectiveSettings.config_names().values())


def _objective_fields_doc() -> str:
    lines = []
    for spec in fields(ObjectiveSettings):
        name = ObjectiveSettings.config_names()[spec.name]
        lines.append(f"        {name} (*optional*): {spec.metadata['help']}")
    return "\n".join(lines)


@dataclass
class ContrastiveDistillationConfig(TokensNeverPickled, ObjectiveFields, TrainingArguments):
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
            `<classic>+cktf` (the paper's Table 2) or `<classic>+cktf-recipe`.
        The objective fields, one per knob of [`~cktf_hf.objectives.ObjectiveSettings`] (derived from its fields),
        override the preset when set; left at None they take the preset's value (after `__post_init__` each holds
        the resolved value, and `objective_settings` the resolved spec). A preset's cell-by-cell contrast is off when
        `negatives="memory_bank"` is set and `spatial_contrast` is not. The fields:
{objective_fields}
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
        card_license (`str`, *optional*):
            The `license` of the model card, a Hub license id such as `apache-2.0` (`create_model_card(license=...)`
            overrides it). Unset, the card inherits the license of the teacher's own card when it declares one, and
            otherwise says that it declares none.
    """

    teacher: Optional[str] = field(default=None, metadata={"help": "Hub id or local folder of the teacher."})
    teacher_revision: Optional[str] = field(default=None, metadata={"help": "Hub revision of the teacher."})
    teacher_dtype: str = field(default="auto", metadata={"help": f"Teacher dtype: one of {TEACHER_DTYPES}."})
    trust_remote_code: bool = field(default=False, metadata={"help": "Allow custom modelling code for the teacher."})
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
    card_license: Optional[str] = field(
        default=None, metadata={"help": "License of the model card (a Hub license id such as apache-2.0; default: "
                                        "the license of the teacher's card, if it has one)."}
    )

    # Defaults that distillation needs from the Trainer (overridable).
    remove_unused_columns: bool = field(default=False, metadata={"help": "Keep dataset columns for the transform."})
    ddp_find_unused_parameters: Optional[bool] = field(default=False, metadata={"help": "See TrainingArguments."})
    ddp_broadcast_buffers: Optional[bool] = field(
        default=False, metadata={"help": "Memory banks are synchronised by cktf_hf; do not broadcast them."}
    )

    def __post_init__(self) -> None:
        if self.layer_pairs is not None and not isinstance(self.layer_pairs, str):  # (student, teacher) pairs
            self.layer_pairs = ",".join(f"{s}:{t}" for s, t in self.layer_pairs)
        super().__post_init__()
        if self.teacher:
            check_teacher_location(self.teacher)  # "folder not found", not "invalid repo id", for a missing path
            check_output_dir_apart(self.output_dir, self.teacher, "the teacher's folder")
        check_choice("teacher_dtype", self.teacher_dtype, TEACHER_DTYPES)
        if any(not isinstance(b, int) or b < 1 for b in self.card_latency_batch_sizes):
            raise ValueError(f"card_latency_batch_sizes must be positive integers, got {self.card_latency_batch_sizes}.")
        self._typed_objective = {name for name in OBJECTIVE_FIELDS if getattr(self, name) not in (None, "")}
        self._resolved_objective: dict[str, Any] = {}
        settings = self.objective_settings  # the spec validates every knob here, early
        self._resolved_objective = settings.config_values()
        for name, value in self._resolved_objective.items():  # every field holds what the run uses
            setattr(self, name, value)
        self._warn_unused_bank_options(settings)
        self.label_map = parse_label_map(self.label_map)
        check_repo_id(self.hub_model_id, self.output_dir, self.push_to_hub)

    def _objective_overrides(self) -> dict[str, Any]:
        """The objective fields set by the caller: given at construction or changed since (config names)."""
        return {name: getattr(self, name) for name in OBJECTIVE_FIELDS
                if name in self._typed_objective or getattr(self, name) != self._resolved_objective.get(name)}

    def _warn_unused_bank_options(self, settings: ObjectiveSettings) -> None:
        """Memory-bank options set by the caller do nothing in a run without a memory bank (the default preset's)."""
        if settings.uses_memory_bank:
            return
        names = ObjectiveSettings.config_names()
        changed = [f"{names[spec.name]}={getattr(self, names[spec.name])!r}" for spec in fields(ObjectiveSettings)
                   if spec.metadata["group"] == "bank" and names[spec.name] in self._typed_objective]
        if changed:
            reason = ("Pass negatives='memory_bank' to use the bank." if settings.negatives == "in_batch" else
                      "No contrastive term that would use it has a weight > 0.")
            logger.warning("%s only act on memory-bank negatives, but this run uses no memory bank (negatives=%r, "
                           "preset %r): they have no effect. %s", ", ".join(changed), settings.negatives, self.preset,
                           reason)

    @property
    def objective_settings(self) -> ObjectiveSettings:
        """The resolved spec: the preset with every objective field set by the caller applied (a preset's cell-by-cell
        contrast is off when memory-bank negatives are chosen and ``spatial_contrast`` is not set: the bank holds one
        pooled vector per pair)."""
        overrides = ObjectiveSettings.overrides_from_config(self._objective_overrides())
        return get_preset(self.preset).with_overrides(**overrides)

    @classmethod
    def distillation_fields(cls) -> list[str]:
        """The names of the fields this class adds to ``TrainingArguments``."""
        inherited = {f.name for f in fields(TrainingArguments)}
        return [f.name for f in fields(cls) if f.name not in inherited]

    def distillation_dict(self) -> dict[str, Any]:
        """The distillation fields (not the generic Trainer ones; an objective field not set by the caller as None,
        "the preset's") plus the resolved objective settings."""
        overrides = self._objective_overrides()
        own = {name: overrides.get(name) if name in OBJECTIVE_FIELDS else getattr(self, name)
               for name in self.distillation_fields()}
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
                _check_same_objective(path, resolved, get_preset(preset), preset, {**kwargs, **overrides})
            raise
        if isinstance(resolved, dict):
            _check_same_objective(path, resolved, config.objective_settings, config.preset, {**kwargs, **overrides})
        return config


ContrastiveDistillationConfig.__doc__ = ContrastiveDistillationConfig.__doc__.replace(
    "{objective_fields}", _objective_fields_doc())


def _check_same_objective(path: str, resolved: dict[str, Any], settings: ObjectiveSettings, preset: str,
                          given: dict[str, Any]) -> None:
    """Refuse a saved config whose preset now resolves to other settings than it was written with (a preset renamed
    or changed since: ``cktf`` was the paper's settings before it became the recipe), naming a preset that gives them.
    Only the knobs the preset decided count: not those ``given`` (set in the file or by the caller)."""
    now = json.loads(json.dumps({f.name: getattr(settings, f.name) for f in fields(settings)}))
    names = ObjectiveSettings.config_names()
    decided = {name for name in resolved if name in now and given.get(names.get(name, name)) in (None, "")}
    differing = sorted(name for name in decided if now[name] != resolved[name])
    if not differing:
        return
    from .objectives.presets import PRESETS

    same = sorted(name for name, known in PRESETS.items()
                  if all(json.loads(json.dumps(getattr(known, knob))) == resolved[knob] for knob in decided))
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
