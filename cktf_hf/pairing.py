"""Which student hidden state is paired with which teacher hidden state, and the pairing table.

Hidden states are indexed as transformers returns them: 0 is the embeddings / stem, 1..L the stage (hierarchical
models) or layer (token models) outputs. The classifier inputs always form one more pair, "final".
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any, Mapping, Optional, Sequence, Union

import torch
from torch import nn

from .features import FeatureLayout, Pooling, batch_l2_normalize, to_map
from .model_io import ModelFeatures, probe
from .objectives import FINAL, PairFeatures, PairShape
from .objectives.combined import StudentStages
from .objectives.settings import BY_FAMILY_PAIRING, PairSpec, automatic_pairing, parse_pair_spec
from .teacher_input import TeacherInput

# OFAKD custom_forward/beit.py and deit.py stage_info: a 12-block ViT's four stages end after blocks 2, 4, 10 and 12.
OFA_VIT_STAGES = (2, 4, 10, 12)


@dataclass(frozen=True)
class LayerPair:
    """``student_index`` ↔ ``teacher_index`` (hidden-state indices; None for the final pair)."""

    name: str
    student_index: int | None
    teacher_index: int | None

    @property
    def is_final(self) -> bool:
        return self.name == FINAL

    @property
    def is_stem(self) -> bool:
        return self.student_index == 0 and self.teacher_index == 0


def family(layouts: Sequence[FeatureLayout]) -> str:
    """"hierarchical" when the hidden states are NCHW maps, "token" when they are token sequences."""
    kinds = {layout.kind for layout in layouts}
    return "hierarchical" if kinds == {"map"} else "token" if kinds == {"tokens"} else "mixed"


def layer_name(index: int, layout: FeatureLayout) -> str:
    """Readable name of hidden state ``index``: embeddings, stage{i} (maps) or layer{i} (tokens)."""
    if index == 0:
        return "embeddings"
    return f"stage{index}" if layout.kind == "map" else f"layer{index}"


def pairs_intermediate_layers_across(student_layouts: Sequence[FeatureLayout],
                                     teacher_layouts: Sequence[FeatureLayout]) -> bool:
    """Whether ``layer_pairs="auto-by-family"`` pairs intermediate layers of these two models: always, except from a
    token (ViT) teacher to a convolutional student, whose stages gain nothing from matching the teacher's intermediate
    tokens (benchmarks/README.md, the ViT → CNN screens); those two get the final pair alone."""
    return not (family(teacher_layouts[1:]) == "token" and family(student_layouts[1:]) == "hierarchical")


def _relative_depth_pairs(student_depth: int, teacher_depth: int) -> list[tuple[int, int]]:
    """Stem ↔ stem, then M = min(depths) groups: the end of the student's m-th group ↔ the end of the teacher's."""
    groups = min(student_depth, teacher_depth)
    pairs = [(0, 0)]
    for m in range(1, groups + 1):
        pairs.append((int(m * student_depth / groups + 0.5), int(m * teacher_depth / groups + 0.5)))
    return pairs


def _resolve_index(key: Union[int, str], count: int, side: str, layouts: Sequence[FeatureLayout]) -> int:
    valid = ", ".join(f"{i}={layer_name(i, layouts[i])}" for i in range(count))
    if isinstance(key, str):
        text = key.strip().lower()
        if text in ("stem", "embeddings"):
            return 0
        for prefix in ("stage", "layer"):
            if text.startswith(prefix) and text[len(prefix):].lstrip("-").isdigit():
                key = int(text[len(prefix):])
                break
        else:
            if text.lstrip("-").isdigit():
                key = int(text)
            else:
                raise ValueError(f"Unknown {side} layer {key!r}. Valid {side} layers: {valid}.")
    if not -count <= key < count:
        raise ValueError(
            f"{side.capitalize()} layer index {key} is out of range: the {side} has {count} hidden states "
            f"(indices 0..{count - 1} or {-count}..-1): {valid}."
        )
    return key % count


def build_pairs(
    spec: PairSpec,
    student_layouts: Sequence[FeatureLayout],
    teacher_layouts: Sequence[FeatureLayout],
) -> list[LayerPair]:
    """The layer pairs for ``spec`` ("auto", "auto-by-family" or explicit pairs), the final pair last."""
    automatic = automatic_pairing(spec)
    if automatic:
        indices = _relative_depth_pairs(len(student_layouts) - 1, len(teacher_layouts) - 1)
        if automatic == BY_FAMILY_PAIRING and not pairs_intermediate_layers_across(student_layouts, teacher_layouts):
            indices = []
    else:
        indices = []
        for s_key, t_key in parse_pair_spec(spec):
            if str(s_key).lower() == FINAL and str(t_key).lower() == FINAL:
                continue
            s = _resolve_index(s_key, len(student_layouts), "student", student_layouts)
            t = _resolve_index(t_key, len(teacher_layouts), "teacher", teacher_layouts)
            if (s, t) not in indices:
                indices.append((s, t))
    pairs = [LayerPair(f"s{s}_t{t}", s, t) for s, t in indices]
    return pairs + [LayerPair(FINAL, None, None)]


def student_stage_indices(layouts: Sequence[FeatureLayout]) -> list[int]:
    """The student's hidden states that OFA's per-stage branches read: every stage of a hierarchical model (ResNet,
    ConvNeXt: ``1..L``); OFA's stages of a 12-layer token model (:data:`OFA_VIT_STAGES`); for other depths the ends of
    ``min(4, L)`` equal groups of layers, as the automatic pairing splits them."""
    depth = len(layouts) - 1
    if depth < 1:
        return []
    if family(layouts[1:]) == "hierarchical":
        return list(range(1, depth + 1))
    if depth == OFA_VIT_STAGES[-1]:
        return list(OFA_VIT_STAGES)
    return [end for end, _ in _relative_depth_pairs(depth, min(4, depth))[1:]]


@dataclass(frozen=True)
class PairingRow:
    """One line of the pairing table: the pair, each side's layer name and per-sample shape, the pair's weight."""

    pair: str
    student_layer: str
    student_shape: tuple[int, ...]
    teacher_layer: str
    teacher_shape: tuple[int, ...]
    weight: float

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready (shapes as lists), as ``distillation_config.json`` and the model card hold it."""
        row = asdict(self)
        row["student_shape"], row["teacher_shape"] = list(self.student_shape), list(self.teacher_shape)
        return row


def pairing_table(rows: Sequence[PairingRow]) -> str:
    """Render pairing rows as a text table."""
    header = ("pair", "student layer", "shape", "teacher layer", "shape", "weight")
    cells = [header] + [
        (r.pair, r.student_layer, _shape(r.student_shape), r.teacher_layer, _shape(r.teacher_shape), f"{r.weight:g}")
        for r in rows
    ]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _shape(shape: Union[tuple, torch.Size]) -> str:
    return "[" + ", ".join(str(d) for d in shape) + "]"


@dataclass(frozen=True)
class FeatureReader:
    """Reads one side's :class:`~cktf_hf.objectives.PairFeatures` out of a forward pass.

    Every pair in ``pairs`` gets a pooled vector (intermediate ones batch-L2-normalised first when ``batch_norm``,
    CKTF's stage preprocessing), and the pairs named in ``map_pairs`` also keep their spatial map. Pairs named in
    ``map_only`` (read only as maps, e.g. spatially contrasted ones) get their map and no pooled vector.
    """

    pairs: tuple[LayerPair, ...]
    layouts: Mapping[str, Sequence[FeatureLayout]]  # "student" / "teacher" → one layout per hidden state
    pooling: Pooling = Pooling()
    batch_norm: bool = False
    map_pairs: tuple[str, ...] = ()
    map_only: tuple[str, ...] = ()
    stage_indices: tuple[int, ...] = ()  # student hidden states handed over as they are (OFA's branches)

    def only(self, names: Sequence[str]) -> "FeatureReader":
        """A reader of the named pairs alone (the final pair always included)."""
        return replace(self, pairs=tuple(p for p in self.pairs if p.is_final or p.name in names))

    def raw(self) -> "FeatureReader":
        """The same pairs, every one pooled, without batch normalisation and without maps."""
        return replace(self, batch_norm=False, map_pairs=(), map_only=())

    def read(self, side: str, out: ModelFeatures) -> PairFeatures:
        """The features of ``side`` (``"student"`` or ``"teacher"``); ``out.hidden_states`` may be a mapping from
        hidden-state index to tensor holding just the indices this reader's pairs use."""
        layouts = self.layouts[side]
        pooled, maps = {}, {}
        for pair in self.pairs:
            if pair.is_final:
                pooled[FINAL] = out.final.flatten(1)
                continue
            index = pair.student_index if side == "student" else pair.teacher_index
            hidden, layout = out.hidden_states[index], layouts[index]
            if pair.name in self.map_pairs:
                maps[pair.name] = to_map(hidden, layout)
            if pair.name in self.map_only:
                continue
            if self.batch_norm and not pair.is_stem:
                hidden = batch_l2_normalize(hidden)
            pooled[pair.name] = self.pooling(hidden, layout)
        stages = [out.hidden_states[i] for i in self.stage_indices] if side == "student" else []
        return PairFeatures(out.logits, pooled, maps, stages)


@dataclass
class PairingPlan:
    """Everything decided from the probe batch: the pairs, each side's layouts, the pairs' shapes (what the
    objective is built from), the pairing table and the per-example pixel shape."""

    pairs: list[LayerPair]
    layouts: dict[str, list[FeatureLayout]]
    shapes: list[PairShape]
    rows: list[PairingRow]
    pixel_shape: tuple[int, ...]
    pooling: Pooling = Pooling()
    student_stages: Optional[StudentStages] = None
    teacher_input: TeacherInput = TeacherInput()
    note: str = ""  # why the plan holds fewer pairs than the pairing asked for, when it does

    @property
    def table(self) -> str:
        """The pairing table, then a line on the teacher's input (the student's, or re-normalised / resized) and the
        plan's note."""
        lines = [pairing_table(self.rows), f"teacher input: {self.teacher_input.describe()}"]
        return "\n".join(lines + ([self.note] if self.note else []))

    @property
    def dicts(self) -> list[dict[str, Any]]:
        return [row.as_dict() for row in self.rows]

    def reader(self, read_pairs: Sequence[str], map_pairs: Sequence[str], batch_norm: bool,
               pooled_pairs: Optional[Sequence[str]] = None, student_stages: bool = False) -> FeatureReader:
        """The reader of the pairs an objective declares it reads (the final pair always). A map pair not among
        ``pooled_pairs`` (when given) is read as a map alone. ``student_stages``: also hand over the student's stage
        hidden states (:attr:`student_stages`) as they are."""
        pairs = tuple(p for p in self.pairs if p.is_final or p.name in read_pairs or p.name in map_pairs)
        map_only = () if pooled_pairs is None else tuple(n for n in map_pairs if n not in pooled_pairs)
        stages = self.student_stages.indices if student_stages and self.student_stages else ()
        return FeatureReader(pairs, self.layouts, self.pooling, batch_norm, tuple(map_pairs), map_only, stages)


def plan_pairs(
    student: nn.Module,
    teacher: nn.Module,
    pixel_values: torch.Tensor,
    layer_pairs: PairSpec = "auto",
    pooling: Pooling = Pooling(),
    final_weight: float = 0.0,
    layer_weight: float = 0.0,
    teacher_input: TeacherInput = TeacherInput(),
) -> PairingPlan:
    """Probe both models on ``pixel_values`` (the teacher on them as ``teacher_input`` turns them into its own input)
    and plan the layer pairs of ``layer_pairs`` from the real shapes, pooled by ``pooling`` (the weights only fill the
    pairing table), and the student's stages that OFA's branches read (:func:`student_stage_indices`)."""
    outputs = {"student": probe(student, pixel_values, "student"),
               "teacher": probe(teacher, teacher_input(pixel_values), "teacher")}
    layouts = {side: [FeatureLayout.infer(h) for h in out.hidden_states] for side, out in outputs.items()}
    pairs = build_pairs(layer_pairs, layouts["student"], layouts["teacher"])
    shapes, rows = [], []
    for pair in pairs:
        with_map = not pair.is_final and all(
            layouts[side][_index(pair, side)].kind != "vector" for side in ("student", "teacher"))
        reader = FeatureReader((pair,), layouts, pooling, map_pairs=(pair.name,) if with_map else ())
        features = {side: reader.read(side, out) for side, out in outputs.items()}
        s_map, t_map = (features[side].maps.get(pair.name) for side in ("student", "teacher"))
        shapes.append(PairShape(
            pair.name,
            features["student"].pooled[pair.name].shape[1],
            features["teacher"].pooled[pair.name].shape[1],
            tuple(s_map.shape[1:]) if s_map is not None else None,
            tuple(t_map.shape[1:]) if t_map is not None else None,
            is_stem=pair.is_stem,
        ))
        rows.append(_pairing_row(pair, outputs, layouts, final_weight if pair.is_final else layer_weight))
    return PairingPlan(pairs, layouts, shapes, rows, tuple(pixel_values.shape[1:]), pooling,
                       _student_stages(outputs, layouts["student"]), teacher_input, _note(layer_pairs, layouts))


def _note(layer_pairs: PairSpec, layouts: dict[str, list[FeatureLayout]]) -> str:
    if automatic_pairing(layer_pairs) != BY_FAMILY_PAIRING or pairs_intermediate_layers_across(
            layouts["student"], layouts["teacher"]):
        return ""
    return (f"layer_pairs={BY_FAMILY_PAIRING!r}: a token (ViT) teacher and a convolutional student are paired on their "
            "final features alone; set layer_pairs='auto' to pair their intermediate layers too.")


def _student_stages(outputs: dict[str, ModelFeatures], layouts: Sequence[FeatureLayout]) -> Optional[StudentStages]:
    indices = tuple(student_stage_indices(layouts))
    if not indices:
        return None
    hidden = outputs["student"].hidden_states
    return StudentStages(indices, tuple(tuple(hidden[i].shape[1:]) for i in indices),
                         max(layouts[i].prefix_tokens for i in indices), outputs["teacher"].logits.shape[1])


def _index(pair: LayerPair, side: str) -> Optional[int]:
    return pair.student_index if side == "student" else pair.teacher_index


def _pairing_row(pair: LayerPair, outputs: dict[str, ModelFeatures], layouts: dict[str, list[FeatureLayout]],
                 weight: float) -> PairingRow:
    if pair.is_final:
        return PairingRow(FINAL, "classifier input", tuple(outputs["student"].final.shape[1:]), "classifier input",
                          tuple(outputs["teacher"].final.shape[1:]), weight)
    s, t = pair.student_index, pair.teacher_index
    return PairingRow(pair.name, layer_name(s, layouts["student"][s]),
                      tuple(outputs["student"].hidden_states[s].shape[1:]), layer_name(t, layouts["teacher"][t]),
                      tuple(outputs["teacher"].hidden_states[t].shape[1:]), weight)
