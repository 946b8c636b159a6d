"""Which student hidden state is paired with which teacher hidden state, and the pairing table.

Hidden states are indexed as transformers returns them: 0 is the embeddings / stem, 1..L the stage (hierarchical
models) or layer (token models) outputs. The classifier inputs always form one more pair, "final".
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence, Union

import torch

from .features import FeatureLayout, batch_l2_normalize, pool, to_map
from .objectives import FINAL, PairFeatures

PairSpec = Union[str, Sequence[tuple[Union[int, str], Union[int, str]]]]


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
            raise ValueError(f"Cannot read layer pair {item!r}: write student:teacher, e.g. '2:4' or 'stage2:stage3'.")
        pairs.append((parts[0].strip(), parts[1].strip()))
    return pairs


def build_pairs(
    spec: PairSpec,
    student_layouts: Sequence[FeatureLayout],
    teacher_layouts: Sequence[FeatureLayout],
) -> list[LayerPair]:
    """The layer pairs for ``spec`` ("auto" or explicit pairs), the final pair last."""
    if isinstance(spec, str) and spec.strip().lower() == "auto":
        indices = _relative_depth_pairs(len(student_layouts) - 1, len(teacher_layouts) - 1)
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


def pairing_table(rows: Sequence[tuple[str, str, tuple, str, tuple, float]]) -> str:
    """Render ``(pair, student layer, student shape, teacher layer, teacher shape, weight)`` rows as a text table."""
    header = ("pair", "student layer", "shape", "teacher layer", "shape", "weight")
    cells = [header] + [
        (name, s_name, _shape(s_shape), t_name, _shape(t_shape), f"{weight:g}")
        for name, s_name, s_shape, t_name, t_shape, weight in rows
    ]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _shape(shape: Union[tuple, torch.Size]) -> str:
    return "[" + ", ".join(str(d) for d in shape) + "]"


def read_pair_features(
    side: str,
    hidden_states: Sequence[torch.Tensor],
    final: torch.Tensor,
    logits: torch.Tensor,
    pairs: Sequence[LayerPair],
    layouts: Sequence[FeatureLayout],
    token_pooling: str = "mean",
    grid_size: int = 1,
    batch_norm: bool = False,
    map_pairs: Sequence[str] = (),
) -> PairFeatures:
    """One side's (``"student"`` or ``"teacher"``) :class:`~cktf_hf.objectives.PairFeatures`: a pooled vector per
    pair, intermediate ones batch-L2-normalised first when ``batch_norm``, and the spatial maps of ``map_pairs``."""
    pooled, maps = {}, {}
    for pair in pairs:
        if pair.is_final:
            pooled[FINAL] = final.flatten(1)
            continue
        index = pair.student_index if side == "student" else pair.teacher_index
        hidden, layout = hidden_states[index], layouts[index]
        if pair.name in map_pairs:
            maps[pair.name] = to_map(hidden, layout)
        if batch_norm and not pair.is_stem:
            hidden = batch_l2_normalize(hidden)
        pooled[pair.name] = pool(hidden, layout, token_pooling, grid_size)
    return PairFeatures(logits, pooled, maps)
