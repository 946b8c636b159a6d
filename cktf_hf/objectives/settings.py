"""The objective spec: every knob of the CKTF objective in one frozen dataclass, each field carrying its label, help,
choices and when it matters; validation of every knob lives here too.

``ContrastiveDistillationConfig`` derives its objective fields from these fields
(:meth:`ObjectiveSettings.config_fields`), the presets are instances of it, :class:`~cktf_hf.objectives.CKTFObjective` is built from it alone, and the model card
renders :meth:`ObjectiveSettings.describe`. Adding a knob: a field here (with a label), its consumer, and a test.
"""

from __future__ import annotations

import functools
import inspect
import json
import math
from dataclasses import dataclass, field, fields, replace
from typing import Any, Callable, Mapping, Optional, Sequence, Union, get_type_hints

from ..features import STAGE_POOLING, TOKEN_POOLING, Pooling
from ..projectors import PROJECTOR_KINDS, TEACHER_PROJECTORS
from .contrastive import (BANK_DTYPES, BANK_LOSSES, BANK_PRODUCTS, BANK_WARM_STARTS, NEGATIVE_MODES, NEGATIVE_SAMPLING,
                          POSITIVES)
from .registry import INPUTS_WITHOUT_PAIR_MAPS, check_choice, get_objective

FINAL = "final"
PairSpec = Union[str, Sequence[tuple[Union[int, str], Union[int, str]]]]
# The pairings the plan chooses itself: "auto" pairs the stems, then the ends of equal groups of layers;
# "auto-by-family" does the same except from a token (ViT) teacher to a convolutional student, which get the final pair
# alone (pairing.pairs_intermediate_layers_across).
AUTO_PAIRING, BY_FAMILY_PAIRING = "auto", "auto-by-family"


def automatic_pairing(spec: PairSpec) -> Optional[str]:
    """``"auto"`` or ``"auto-by-family"`` when ``spec`` asks the pairing plan to choose the pairs; None when it lists
    them."""
    text = spec.strip().lower() if isinstance(spec, str) else None
    return text if text in (AUTO_PAIRING, BY_FAMILY_PAIRING) else None

_WEIGHTED_BY_FIELD = {
    "kd": "weight KD with kd_weight (α).",
    "crd": "CRD is the contrastive term on the final pair: weight it with final_weight (β), layer_weight=0.",
    "infonce": "choose in-batch negatives with negatives='in_batch' and weight the pairs with final/layer_weight.",
}


def parse_pair_spec(spec: PairSpec) -> list[tuple[Union[int, str], Union[int, str]]]:
    """``"0:0,2:4,-1:-1"`` or ``"stage1:stage2,layer4:layer8"`` (or a list of 2-tuples) → list of pairs."""
    if not isinstance(spec, str):
        return [tuple(pair) for pair in spec]
    pairs = []
    for item in spec.split(","):
        if not item.strip():
            continue
        parts = item.split(":")
        if len(parts) != 2:
            raise ValueError(f"Cannot read layer pair {item!r}: write student:teacher, e.g. '2:4' or 'stage2:stage3', "
                             f"or let the plan choose with {AUTO_PAIRING!r} or {BY_FAMILY_PAIRING!r}.")
        pairs.append((parts[0].strip(), parts[1].strip()))
    return pairs


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


def _format_classic_objectives(weights: Mapping[str, float]) -> Optional[str]:
    return ",".join(f"{name}={weight!r}" for name, weight in weights.items()) or None


def _parse_classic_options(value: Union[str, dict]) -> dict[str, dict[str, float]]:
    if isinstance(value, dict):
        return value
    try:
        parsed = json.loads(value)
    except json.JSONDecodeError:
        parsed = None
    if not isinstance(parsed, dict):
        raise ValueError(f"Cannot read classic_options {value!r}: write a JSON object, e.g. "
                         '\'{"dkd": {"warmup": 1.0}}\'.')
    return parsed


@functools.cache
def _type_hints(cls: type) -> dict[str, Any]:
    return get_type_hints(cls)


@dataclass(frozen=True)
class ConfigForm:
    """How a knob whose value is not a scalar appears on the config and the command line: under ``name``, typed
    ``type``, read by ``parse`` into the knob's value and written back by ``render``."""

    name: str
    type: Any
    parse: Callable[[Any], Any]
    render: Callable[[Any], Any]


# When a knob matters for a resolved run (what describe() lists).
def _always(s: "ObjectiveSettings", value: Any) -> bool:
    return True


def _if_set(s: "ObjectiveSettings", value: Any) -> bool:
    return bool(value)


def _if_contrasts(s: "ObjectiveSettings", value: Any) -> bool:
    return s.final_weight > 0 or s.layer_weight > 0


def _if_distils_logits(s: "ObjectiveSettings", value: Any) -> bool:
    return s.kd_weight > 0


def _if_bank(s: "ObjectiveSettings", value: Any) -> bool:
    return s.uses_memory_bank


def _if_shared_bank(s: "ObjectiveSettings", value: Any) -> bool:
    return s.uses_memory_bank and s.negative_sampling == "shared"


def _if_teacher_head_dropped(s: "ObjectiveSettings", value: Any) -> bool:
    return _if_contrasts(s, value) and value != "trained"


def _if_fixed_window(s: "ObjectiveSettings", value: Any) -> bool:
    return s.stage_pooling == "fixed_window"


def _if_grid(s: "ObjectiveSettings", value: Any) -> bool:
    return s.grid_size != 1


OFA_TERMS = ("ofa", "ofa-branches")  # the terms that read ofa_eps and ofa_temperature
FBT_TERM = "fbt-contrast"  # reads feat_dim


def _if_ofa(s: "ObjectiveSettings", value: Any) -> bool:
    return any(s.classic.get(name, 0) > 0 for name in OFA_TERMS)


def _if_projects(s: "ObjectiveSettings", value: Any) -> bool:
    return _if_contrasts(s, value) or s.classic.get(FBT_TERM, 0) > 0


def _knob(default: Any, label: str, help: str, group: str, when: Callable[["ObjectiveSettings", Any], bool] = _always,
          choices: Optional[tuple] = None, config: Optional[ConfigForm] = None) -> Any:
    """A field of :class:`ObjectiveSettings` with its metadata: ``label`` (the model card's words), ``help`` (the
    config's and the command line's), ``group``, ``when`` it matters for a run, and its ``choices``."""
    metadata = {"label": label, "help": help, "group": group, "when": when, "choices": choices, "config": config}
    if isinstance(default, dict):
        return field(default_factory=dict, metadata=metadata)
    return field(default=default, metadata=metadata)


@dataclass(frozen=True)
class ObjectiveSettings:
    """Every knob of ``γ·CE + α·KD + β·contrastive(final) + θ·Σ contrastive(intermediate) + Σ_X w_X·L_X``:
    weights, temperatures, classic terms, negatives and memory bank, projectors, pooling and layer pairs.

    Each field's metadata holds its ``label`` (as the model card shows it), ``help``, ``group``, ``choices`` and
    ``when`` it matters; :meth:`describe` lists the knobs that matter for this run. See the fields' help for each
    knob; :class:`~cktf_hf.objectives.MemoryBankNCELoss` for the bank options, :class:`~cktf_hf.features.Pooling` for
    pooling.
    """

    ce_weight: float = _knob(1.0, "γ: cross-entropy weight", "γ: cross-entropy weight.", "weights")
    kd_weight: float = _knob(0.0, "α: KD weight", "α: KD weight.", "weights")
    final_weight: float = _knob(0.8, "β: contrastive weight, final pair",
                                "β: contrastive weight of the final pair (the classifier inputs).", "weights")
    layer_weight: float = _knob(0.1, "θ: contrastive weight, each intermediate pair",
                                "θ: contrastive weight of each intermediate pair.", "weights")
    temperature: float = _knob(0.1, "τ: contrastive temperature", "τ: contrastive temperature.", "weights",
                               when=_if_contrasts)
    kd_temperature: float = _knob(4.0, "T: KD temperature", "T: KD temperature.", "weights", when=_if_distils_logits)
    classic: dict[str, float] = _knob(
        {}, "Classic terms (weights)", "Classic terms with weights, e.g. 'at=1000,pkt=30000' (replaces the preset's).",
        "weights", when=_if_set,
        config=ConfigForm("classic_objectives", str, parse_classic_objectives, _format_classic_objectives))
    feature_batch_norm: bool = _knob(True, "Batch-dimension L2 normalisation",
                                     "CKTF's batch-dimension L2 normalisation of intermediate features before pooling.",
                                     "features")
    classic_options: dict[str, dict[str, float]] = _knob(
        {}, "Classic term options", "Keyword arguments of classic terms' constructors, as JSON, e.g. "
        "'{\"dkd\": {\"warmup\": 1.0}}' (options of a term not in classic are unused).", "weights", when=_if_set,
        config=ConfigForm("classic_options", Union[dict, str], _parse_classic_options, lambda v: v or None))
    positive: str = _knob("bank", "Memory-bank positive (bank row or current embedding)",
                          "Where the memory-bank positive comes from: 'bank' (the reference: the other side's bank "
                          "row) or 'current' (the other side's current embedding, detached).", "bank",
                          when=_if_bank, choices=POSITIVES)
    bank_warm_start: str = _knob("none", "Memory-bank warm start",
                                 "'none' (the reference) or 'skip_unwritten' (bank rows never written are left out of "
                                 "the negatives; an unwritten own row gives the current-embedding positive).", "bank",
                                 when=_if_bank, choices=BANK_WARM_STARTS)
    contrastive_warmup: float = _knob(0.0, "Contrastive weights warmed up over (fraction of training)",
                                      "Fraction of training in [0, 1) over which β and θ rise linearly from 0.",
                                      "weights", when=_if_set)
    bank_loss: str = _knob("nce", "Memory-bank loss (CRD's NCE or MoCo's InfoNCE)",
                           "'nce' (CRD's binary NCE with a fixed normaliser, the reference) or 'infonce' (MoCo's "
                           "softmax cross-entropy of the positive against the K negatives).", "bank",
                           when=_if_bank, choices=BANK_LOSSES)
    spatial_contrast: bool = _knob(False, "Intermediate pairs contrasted cell by cell",
                                   "Contrast intermediate pairs cell by cell on their common grid (in-batch negatives "
                                   "only) instead of as one pooled vector.", "contrast", when=_if_set)
    negatives: str = _knob("memory_bank", "Negatives",
                           "'memory_bank' (the reference: NCE with momentum banks, K other-class negatives) or "
                           "'in_batch' (InfoNCE over the batch).", "contrast", when=_if_contrasts,
                           choices=NEGATIVE_MODES)
    teacher_projector: str = _knob("trained", "Teacher-side heads",
                                   "'trained' (a head per pair on both sides, as CRD and CKTF) or 'none' (the "
                                   "teacher's features L2-normalised as they are; the student's heads map into them).",
                                   "projector", when=_if_teacher_head_dropped, choices=TEACHER_PROJECTORS)
    nce_k: int = _knob(16384, "K: negatives per sample", "Negatives per sample K (memory bank).", "bank", when=_if_bank)
    negative_sampling: str = _knob(
        "per_sample", "Memory-bank negatives (per sample or shared by the batch)",
        "'per_sample' (the reference: K other-class negatives drawn for each sample) or 'shared' (K negatives drawn "
        "once per step for the batch, other-class ones masked per anchor).", "bank", when=_if_bank,
        choices=NEGATIVE_SAMPLING)
    bank_dtype: str = _knob("float32", "Memory-bank storage", "Storage of the memory banks (the math stays float32).",
                            "bank", when=_if_bank, choices=tuple(BANK_DTYPES))
    bank_products: str = _knob(
        "float32", "Shared-negative products",
        "Precision of the shared negatives' [B, D] x [D, K] products, whatever the banks' storage: 'float32', "
        "'bfloat16-gradient' (the gradient's product alone in bfloat16 where the device multiplies it natively, a CPU "
        "with AVX512-BF16 or AMX or a CUDA GPU) or 'bfloat16' (both). The loss stays float32. Either bfloat16 option "
        "cost about 0.35 validation points (benchmarks/README.md, 'Shared-bank precision and accuracy').",
        "bank", when=_if_shared_bank, choices=BANK_PRODUCTS)
    nce_momentum: float = _knob(0.5, "Memory-bank momentum", "Memory-bank momentum, in [0, 1).", "bank", when=_if_bank)
    feat_dim: int = _knob(128, "Projection size (feat_dim)", "Projector output dimension.", "projector",
                          when=_if_projects)
    projector: str = _knob("linear", "Projector heads", "Projector heads.", "projector", when=_if_contrasts,
                           choices=PROJECTOR_KINDS)
    token_pooling: str = _knob("mean", "Token pooling", "Token layers pooled by patch-token 'mean' or 'cls'.",
                               "pooling", choices=TOKEN_POOLING)
    grid_size: int = _knob(1, "Pooling grid g", "Keep a g×g grid when pooling maps (1 = global average).", "pooling",
                           when=_if_grid)
    stage_pooling: str = _knob("global", "Stage pooling",
                               "'global' (adaptive pooling to grid_size) or 'fixed_window' (CKTF's code: average "
                               "pooling with a pool_window window and stride).", "pooling",
                               when=_if_fixed_window, choices=STAGE_POOLING)
    pool_window: int = _knob(8, "Pooling window", "Window (= stride) of stage_pooling='fixed_window'.", "pooling",
                             when=_if_fixed_window)
    ofa_eps: float = _knob(1.0, "ε: OFA's loss exponent",
                           "ε of OFA-KD's loss −Σ_c [(p_t + y)^ε − y]_c · log p_s,c (terms 'ofa' and 'ofa-branches'; "
                           "the authors' default 1, 1.5 for their ImageNet CNN students).", "weights", when=_if_ofa)
    ofa_temperature: float = _knob(1.0, "OFA's softmax temperature",
                                   "Softmax temperature of OFA-KD's loss on both sides (terms 'ofa' and "
                                   "'ofa-branches'; the authors' default 1).", "weights", when=_if_ofa)
    layer_pairs: str = _knob(AUTO_PAIRING, "Layer pairs",
                             "'auto' (the stems, then the ends of equal groups of layers), 'auto-by-family' (the same, "
                             "except that a token (ViT) teacher and a convolutional student get the final pair alone) "
                             "or explicit 'student:teacher' pairs by hidden-state index or name, e.g. '0:0,2:4,-1:-1' or "
                             "'stage1:stage2'; the final pair is always added.", "pairs")

    def __post_init__(self) -> None:
        if not isinstance(self.layer_pairs, str):  # a list of (student, teacher) pairs from Python
            object.__setattr__(self, "layer_pairs", ",".join(f"{s}:{t}" for s, t in self.layer_pairs))
        hints = _type_hints(type(self))
        for spec in fields(self):
            value, kind = getattr(self, spec.name), hints[spec.name]
            if kind is bool and not isinstance(value, bool):  # "false" from a hand-written file would read as True
                raise ValueError(f"{spec.name} must be true or false, got {value!r}.")
            if kind is int and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ValueError(f"{spec.name} must be a positive integer, got {value!r}.")
            if spec.metadata["choices"] is not None:
                check_choice(spec.name, value, spec.metadata["choices"])
        if self.spatial_contrast and self.negatives != "in_batch":
            raise ValueError("spatial_contrast contrasts cells with in-batch negatives: set negatives='in_batch' "
                             "(the memory bank holds one vector per sample and pair).")
        if not (math.isfinite(self.contrastive_warmup) and 0 <= self.contrastive_warmup < 1):
            raise ValueError(f"contrastive_warmup is a fraction of training in [0, 1), got {self.contrastive_warmup}.")
        if not 0 <= self.nce_momentum < 1:
            raise ValueError(f"nce_momentum must be in [0, 1), got {self.nce_momentum}.")
        if self.stage_pooling == "fixed_window" and self.grid_size != 1:
            raise ValueError("stage_pooling='fixed_window' sets each stage's grid from pool_window; leave grid_size "
                             f"at 1 (got {self.grid_size}) or use stage_pooling='global'.")
        if automatic_pairing(self.layer_pairs) is None:
            parse_pair_spec(self.layer_pairs)
        for name in ("ce_weight", "kd_weight", "final_weight", "layer_weight"):
            if not math.isfinite(getattr(self, name)) or getattr(self, name) < 0:
                raise ValueError(f"{name} must be a finite number >= 0, got {getattr(self, name)}.")
        for name in ("temperature", "kd_temperature", "ofa_eps", "ofa_temperature"):
            if not math.isfinite(getattr(self, name)) or getattr(self, name) <= 0:
                raise ValueError(f"{name} must be a finite number > 0, got {getattr(self, name)}.")
        self._check_classic()

    def _check_classic(self) -> None:
        keys = [name.lower() for name in self.classic]
        duplicates = sorted({key for key in keys if keys.count(key) > 1})
        if duplicates:
            raise ValueError(f"Classic objectives named more than once (names ignore case): {duplicates} in "
                             f"{sorted(self.classic)}; give each objective once.")
        for name, weight in self.classic.items():
            get_objective(name)  # unknown names fail here, listing the known ones
            if name in _WEIGHTED_BY_FIELD:
                raise ValueError(f"{name!r} is not a classic term here: {_WEIGHTED_BY_FIELD[name]}")
            if not math.isfinite(weight) or weight < 0:
                raise ValueError(f"The weight of classic objective {name!r} must be a finite number >= 0, "
                                 f"got {weight}.")
        for name, options in self.classic_options.items():
            from_knobs = sorted(set(options) & set(self._knob_options(name.lower())))
            if from_knobs:
                raise ValueError(f"classic_options sets {from_knobs} of {name!r}, which a knob gives (ofa_eps and "
                                 "ofa_temperature for OFA's terms, feat_dim for fbt-contrast): set the knob instead.")
            accepted = inspect.signature(get_objective(name)).parameters
            unknown = sorted(set(options) - set(accepted))
            if unknown:
                raise ValueError(
                    f"Unknown option(s) {unknown} for classic objective {name!r}; it accepts {sorted(accepted)}."
                )

    # ------------------------------------------------------------------------------------------ derived
    def _knob_options(self, name: str) -> dict[str, Any]:
        """The constructor arguments of term ``name`` that knobs of this spec give (OFA's ε and T, FBT's feat_dim)."""
        if name in OFA_TERMS:
            return {"eps": self.ofa_eps, "temperature": self.ofa_temperature}
        if name == FBT_TERM:
            return {"feat_dim": self.feat_dim}
        return {}

    def term_options(self, name: str) -> dict[str, Any]:
        """Keyword arguments of classic term ``name``'s constructor: those its knobs give, then ``classic_options``."""
        return {**self._knob_options(name.lower()), **self.classic_options.get(name, {})}

    @property
    def pooling(self) -> Pooling:
        """The four pooling knobs as the one object the pairing plan and the feature reader take."""
        return Pooling(self.token_pooling, self.grid_size, self.stage_pooling, self.pool_window)

    @property
    def pairs_intermediate_layers(self) -> bool:
        """Whether ``layer_pairs`` may give any pair besides the final one (an automatic pairing may: "auto" always
        pairs the stems)."""
        if automatic_pairing(self.layer_pairs):
            return True
        return any(not (str(s).lower() == FINAL and str(t).lower() == FINAL)
                   for s, t in parse_pair_spec(self.layer_pairs))

    @property
    def classic_reads_pair_maps(self) -> bool:
        """Whether a classic term reads the spatial maps of intermediate pairs (FitNets' hint, AT's, VID's and NST's
        stages, SP's last stage), as opposed to the logits, the classifier inputs or the student's own stages."""
        return any(get_objective(name).inputs not in INPUTS_WITHOUT_PAIR_MAPS for name in self.classic)

    @property
    def planned_layer_pairs(self) -> str:
        """``layer_pairs`` as the pairing plan takes it: "auto-by-family" plans as "auto" when a classic term reads
        intermediate pairs (:attr:`classic_reads_pair_maps`), which the family rule must not take away."""
        if automatic_pairing(self.layer_pairs) == BY_FAMILY_PAIRING and self.classic_reads_pair_maps:
            return AUTO_PAIRING
        return self.layer_pairs

    @property
    def uses_memory_bank(self) -> bool:
        """Whether the run needs memory banks (and dataset indices and sampled negatives in every batch): memory-bank
        negatives and a contrastive term with weight > 0, i.e. the final pair (β) or, when the pairs include one, an
        intermediate pair (θ)."""
        contrasted = self.final_weight > 0 or (self.layer_weight > 0 and self.pairs_intermediate_layers)
        return self.negatives == "memory_bank" and contrasted

    def knobs_that_matter(self) -> dict[str, Any]:
        """Knob name → value of every knob that matters for this run, in field order: no bank knob without a memory
        bank, no KD temperature without KD, no τ or projector without a contrastive term, an option only when set."""
        return {spec.name: getattr(self, spec.name) for spec in fields(self)
                if spec.metadata["when"](self, getattr(self, spec.name))}

    def changed_knobs(self) -> dict[str, Any]:
        """Knob name → value of every knob that differs from the spec's default: what sets a preset apart, and what a
        benchmark's run journal keys it by (a preset whose settings change runs again)."""
        default = type(self)()
        return {spec.name: getattr(self, spec.name) for spec in fields(self)
                if getattr(self, spec.name) != getattr(default, spec.name)}

    @classmethod
    def labels(cls) -> dict[str, str]:
        """Knob name → its label (the model card's words)."""
        return {spec.name: spec.metadata["label"] for spec in fields(cls)}

    def describe(self) -> list[tuple[str, Any]]:
        """``(label, value)`` of :meth:`knobs_that_matter`: the objective as the model card lists it."""
        labels = self.labels()
        return [(labels[name], value) for name, value in self.knobs_that_matter().items()]

    def with_overrides(self, **overrides: Any) -> "ObjectiveSettings":
        """A copy with every override that is not None applied. Memory-bank negatives override a cell-by-cell contrast
        that was not itself overridden (the bank holds one pooled vector per pair)."""
        overrides = {name: value for name, value in overrides.items() if value is not None}
        if (self.spatial_contrast and "spatial_contrast" not in overrides
                and overrides.get("negatives", "in_batch") != "in_batch"):
            overrides["spatial_contrast"] = False
        return replace(self, **overrides)

    # ------------------------------------------------------------------------------------------ the config
    @classmethod
    def config_fields(cls) -> list[tuple[str, Any, Any]]:
        """``(name, type, field)`` of the config's objective fields, for ``dataclasses.make_dataclass``: one per knob,
        ``Optional`` and None by default ("the preset's"), with the knob's help."""
        hints = _type_hints(cls)
        derived = []
        for spec in fields(cls):
            form = spec.metadata["config"]
            name, kind = (form.name, form.type) if form else (spec.name, hints[spec.name])
            choices = spec.metadata["choices"]
            help_text = spec.metadata["help"] + (f" One of {choices}." if choices else "") + " (default: the preset's)"
            derived.append((name, Optional[kind], field(default=None, metadata={"help": help_text})))
        return derived

    @classmethod
    def overrides_from_config(cls, values: Mapping[str, Any]) -> dict[str, Any]:
        """The knobs set in ``values`` (config field name → value; None = unset), keyed and typed as the spec's."""
        overrides = {}
        for spec in fields(cls):
            form = spec.metadata["config"]
            value = values.get(form.name if form else spec.name)
            if value is not None and value != "":
                overrides[spec.name] = form.parse(value) if form else value
        return overrides

    def config_values(self) -> dict[str, Any]:
        """Every knob under its config field name, as the config holds it."""
        values = {}
        for spec in fields(self):
            form, value = spec.metadata["config"], getattr(self, spec.name)
            values[form.name if form else spec.name] = form.render(value) if form else value
        return values

    @classmethod
    def config_names(cls) -> dict[str, str]:
        """Knob name → config field name."""
        return {spec.name: spec.metadata["config"].name if spec.metadata["config"] else spec.name
                for spec in fields(cls)}
