"""Hidden-state adapters, layer pairing, and the memory-bank data path (indices, negatives, collator)."""

from __future__ import annotations

import math

import pytest
import torch
from datasets import Dataset

from cktf_hf.data import DistillationCollator, IndexedDataset, NegativeSampler, dataset_labels
from cktf_hf.features import (
    FeatureLayout,
    batch_l2_normalize,
    count_prefix_tokens,
    pool,
    to_map,
    tokens_to_map,
)
from cktf_hf.model_io import ModelFeatures
from cktf_hf.pairing import FeatureReader, LayerPair, PairingRow, build_pairs, pairing_table, parse_pair_spec

MAP = FeatureLayout("map")
VECTOR = FeatureLayout("vector")


def _maps(stages: int) -> list[FeatureLayout]:
    return [MAP] * (stages + 1)


def _tokens(layers: int, prefix: int = 1) -> list[FeatureLayout]:
    return [FeatureLayout("tokens", prefix)] * (layers + 1)


def _indices(pairs: list[LayerPair]) -> list[tuple]:
    return [(p.student_index, p.teacher_index) for p in pairs]


# --- features --------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("length, prefix", [(65, 1), (66, 2), (49, 0), (17, 1), (197, 1), (198, 2), (4, 0)])
def test_count_prefix_tokens(length, prefix):
    assert count_prefix_tokens(length) == prefix


def test_count_prefix_tokens_error():
    with pytest.raises(ValueError, match="square patch grid"):
        count_prefix_tokens(12, max_prefix=1)


def test_feature_layout_infer():
    assert FeatureLayout.infer(torch.zeros(2, 3, 4, 4)) == FeatureLayout("map")
    assert FeatureLayout.infer(torch.zeros(2, 7)) == FeatureLayout("vector")
    assert FeatureLayout.infer(torch.zeros(2, 65, 8)) == FeatureLayout("tokens", 1)
    assert FeatureLayout.infer(torch.zeros(2, 66, 8)) == FeatureLayout("tokens", 2)
    assert FeatureLayout.infer(torch.zeros(2, 49, 8)) == FeatureLayout("tokens", 0)
    with pytest.raises(ValueError, match="2, 3 or 4 dims"):
        FeatureLayout.infer(torch.zeros(2, 3, 4, 4, 1))


def test_tokens_to_map_layout():
    batch, prefix, side, dim = 2, 1, 3, 2
    tokens = torch.full((batch, prefix + side * side, dim), -1.0)
    for b in range(batch):
        for p in range(side * side):
            for d in range(dim):
                tokens[b, prefix + p, d] = 100 * b + 10 * p + d
    feature_map = tokens_to_map(tokens, prefix)
    assert feature_map.shape == (batch, dim, side, side)
    for b in range(batch):
        for p in range(side * side):
            for d in range(dim):
                assert feature_map[b, d, p // side, p % side].item() == 100 * b + 10 * p + d
    assert (feature_map != -1).all()  # the CLS token was dropped
    assert torch.equal(to_map(tokens, FeatureLayout("tokens", 1)), feature_map)
    maps = torch.randn(2, 3, 4, 4)
    assert to_map(maps, MAP) is maps
    with pytest.raises(ValueError, match="no spatial map"):
        to_map(torch.zeros(2, 3), VECTOR)


def test_pool_tokens_mean_and_cls():
    tokens = torch.tensor([[[9.0, 9.0], [1.0, 2.0], [3.0, 4.0], [5.0, 0.0], [-1.0, 2.0]]])  # CLS + 2×2 patches
    layout = FeatureLayout("tokens", 1)
    torch.testing.assert_close(pool(tokens, layout, "mean"), torch.tensor([[2.0, 2.0]]))
    torch.testing.assert_close(pool(tokens, layout, "cls"), torch.tensor([[9.0, 9.0]]))
    with pytest.raises(ValueError, match="CLS token"):
        pool(tokens[:, 1:], FeatureLayout("tokens", 0), "cls")
    with pytest.raises(ValueError, match="token_pooling"):
        pool(tokens, layout, "max")


def test_pool_maps_global_and_grid():
    x = torch.arange(2 * 16, dtype=torch.float32).reshape(1, 2, 4, 4)
    torch.testing.assert_close(pool(x, MAP), torch.tensor([[7.5, 23.5]]))
    grid = pool(x, MAP, grid_size=2)
    assert grid.shape == (1, 2 * 4)
    expected = []
    for c in range(2):
        for i in range(2):
            for j in range(2):
                block = [x[0, c, 2 * i + a, 2 * j + b].item() for a in range(2) for b in range(2)]
                expected.append(sum(block) / 4)
    torch.testing.assert_close(grid, torch.tensor([expected]))
    # channel 0, top-left block: (0 + 1 + 4 + 5) / 4
    assert grid[0, 0].item() == 2.5


def test_pool_token_grid_equals_map_grid_and_vector_passthrough():
    tokens = torch.randn(2, 1 + 16, 3)
    layout = FeatureLayout("tokens", 1)
    torch.testing.assert_close(pool(tokens, layout, "cls", grid_size=2), pool(tokens_to_map(tokens, 1), MAP, grid_size=2))
    vector = torch.randn(2, 5)
    assert pool(vector, VECTOR) is vector


def test_batch_l2_normalize_over_batch_dim():
    x = torch.tensor([[[3.0, 1.0]], [[4.0, 0.0]], [[0.0, -1.0]]])  # [B=3, 1, 2]
    y = batch_l2_normalize(x)
    expected = torch.tensor([[[3 / 5, 1 / math.sqrt(2)]], [[4 / 5, 0.0]], [[0.0, -1 / math.sqrt(2)]]])
    torch.testing.assert_close(y, expected)
    z = batch_l2_normalize(torch.randn(4, 3, 2, 2))
    torch.testing.assert_close(z.pow(2).sum(dim=0), torch.ones(3, 2, 2))


# --- pairing ---------------------------------------------------------------------------------------------------------
def test_auto_pairs_hierarchical_equal_depth():
    pairs = build_pairs("auto", _maps(4), _maps(4))
    assert _indices(pairs) == [(0, 0), (1, 1), (2, 2), (3, 3), (4, 4), (None, None)]
    assert [p.name for p in pairs] == ["s0_t0", "s1_t1", "s2_t2", "s3_t3", "s4_t4", "final"]
    assert pairs[0].is_stem and not pairs[1].is_stem and pairs[-1].is_final


def test_auto_pairs_different_depths():
    assert _indices(build_pairs("auto", _maps(2), _maps(4))) == [(0, 0), (1, 2), (2, 4), (None, None)]
    assert _indices(build_pairs("AUTO", _tokens(6), _tokens(12))) == [
        (0, 0), (1, 2), (2, 4), (3, 6), (4, 8), (5, 10), (6, 12), (None, None)]


def test_auto_by_family_pairs_a_token_teacher_with_a_convolutional_student_on_the_final_features_alone():
    # A token (ViT) teacher and a convolutional student: the final pair alone; "auto" still pairs them all.
    assert _indices(build_pairs("auto-by-family", _maps(4), _tokens(6))) == [(None, None)]
    assert _indices(build_pairs("auto", _maps(4), _tokens(6))) == [(0, 0), (1, 2), (2, 3), (3, 5), (4, 6),
                                                                   (None, None)]
    # Every other pair of families is planned exactly as "auto" plans it.
    for student, teacher in ((_tokens(6), _maps(4)), (_maps(3), _maps(4)), (_tokens(6), _tokens(12))):
        assert build_pairs("Auto-By-Family", student, teacher) == build_pairs("auto", student, teacher)
    with pytest.raises(ValueError, match="Cannot read layer pair 'auto-by-familly'.*'auto' or 'auto-by-family'"):
        build_pairs("auto-by-familly", _maps(4), _tokens(6))
    # Explicit pairs are taken as given whatever the families.
    assert _indices(build_pairs("stage2:layer3", _maps(4), _tokens(6))) == [(2, 3), (None, None)]


def test_explicit_pairs():
    student, teacher = _maps(3), _maps(4)
    assert _indices(build_pairs("0:0,-1:-1", student, teacher)) == [(0, 0), (3, 4), (None, None)]
    assert _indices(build_pairs("stage1:stage2", student, teacher)) == [(1, 2), (None, None)]
    assert _indices(build_pairs("stem:stage4, 2:-2", student, teacher)) == [(0, 4), (2, 3), (None, None)]
    tokens = _tokens(6)
    assert _indices(build_pairs("embeddings:layer3", tokens, tokens)) == [(0, 3), (None, None)]
    assert _indices(build_pairs([(0, 0), ("stage2", "stage4")], student, teacher)) == [(0, 0), (2, 4), (None, None)]
    named = build_pairs("1:2", student, teacher)
    assert named[0].name == "s1_t2"


def test_final_pair_always_last_and_unique():
    pairs = build_pairs("final:final,1:1,1:1,2:2", _maps(3), _maps(3))
    assert [p.name for p in pairs] == ["s1_t1", "s2_t2", "final"]


def test_out_of_range_index_lists_valid_layers():
    with pytest.raises(ValueError, match="out of range") as info:
        build_pairs("5:0", _maps(3), _maps(4))
    message = str(info.value)
    assert "Student layer index 5" in message
    for valid in ("0=embeddings", "1=stage1", "2=stage2", "3=stage3"):
        assert valid in message
    assert "4=stage4" not in message  # the student's list, not the teacher's
    with pytest.raises(ValueError, match="out of range") as info:
        build_pairs("0:-7", _tokens(2), _tokens(4))
    assert "1=layer1" in str(info.value) and "4=layer4" in str(info.value)


def test_bad_spec_text_errors():
    with pytest.raises(ValueError, match="Cannot read layer pair '1-2'"):
        build_pairs("1-2", _maps(3), _maps(3))
    with pytest.raises(ValueError, match="Cannot read layer pair"):
        parse_pair_spec("1:2:3")
    with pytest.raises(ValueError, match="Unknown student layer 'foo'") as info:
        build_pairs("foo:1", _maps(2), _maps(2))
    assert "0=embeddings" in str(info.value) and "2=stage2" in str(info.value)
    with pytest.raises(ValueError, match="Unknown teacher layer"):
        build_pairs("1:block3", _maps(2), _maps(3))


def test_pairing_table():
    rows = [
        PairingRow("s0_t0", "embeddings", (64, 8, 8), "embeddings", (64, 8, 8), 0.1),
        PairingRow("s1_t2", "stage1", (64, 8, 8), "stage2", torch.Size([128, 4, 4]), 0.1),
        PairingRow("final", "classifier input", (512,), "classifier input", (2048,), 0.8),
    ]
    lines = pairing_table(rows).splitlines()
    assert len(lines) == 2 + len(rows)
    header = lines[0]
    for title in ("pair", "student layer", "shape", "teacher layer", "weight"):
        assert title in header
    assert set(lines[1].replace(" ", "")) == {"-"}
    assert lines[2].split()[0] == "s0_t0" and lines[3].split()[0] == "s1_t2" and lines[4].split()[0] == "final"
    assert "[128, 4, 4]" in lines[3] and "[2048]" in lines[4]
    assert lines[4].endswith("0.8") and lines[2].endswith("0.1")
    column = header.index("teacher layer")
    assert lines[3][column:].startswith("stage2")  # aligned columns


def test_read_pair_features():
    torch.manual_seed(0)
    hidden = [torch.randn(3, 2, 4, 4) + 1, torch.randn(3, 4, 2, 2) + 1]
    pairs = [LayerPair("s0_t0", 0, 0), LayerPair("s1_t1", 1, 1), LayerPair("final", None, None)]
    final, logits = torch.randn(3, 4, 1, 1), torch.randn(3, 5)
    reader = FeatureReader(tuple(pairs), {"student": _maps(1)}, batch_norm=True, map_pairs=("s1_t1",))
    out = reader.read("student", ModelFeatures(logits, tuple(hidden), final))
    assert out.logits is logits and set(out.maps) == {"s1_t1"}
    torch.testing.assert_close(out.maps["s1_t1"], hidden[1])  # raw map, not normalised
    torch.testing.assert_close(out.pooled["s0_t0"], hidden[0].mean(dim=(2, 3)))  # stem: no batch normalisation
    normalised = hidden[1] / hidden[1].pow(2).sum(dim=0, keepdim=True).sqrt()
    torch.testing.assert_close(out.pooled["s1_t1"], normalised.mean(dim=(2, 3)))
    torch.testing.assert_close(out.pooled["final"], final.flatten(1))


# --- data ------------------------------------------------------------------------------------------------------------
LABELS = [2, 0, 3, 0, 2, 2, 3, 0, 0, 2, 3, 3, 0, 2, 2, 0, 3, 2]  # classes 0, 2, 3 (class 1 empty), uneven sizes


def test_negative_sampler_other_class_negatives():
    torch.manual_seed(0)
    n, k = len(LABELS), 2000
    sampler = NegativeSampler(n, k, LABELS)
    index = torch.arange(n)
    labels = torch.tensor(LABELS)
    for _ in range(3):
        contrast_idx = sampler(index)
        assert contrast_idx.shape == (n, k + 1) and contrast_idx.dtype == torch.long
        assert torch.equal(contrast_idx[:, 0], index)
        negatives = contrast_idx[:, 1:]
        assert negatives.min() >= 0 and negatives.max() < n
        assert (labels[negatives] != labels[index][:, None]).all()
        for b in range(n):
            other = {i for i in range(n) if LABELS[i] != LABELS[b]}
            assert set(negatives[b].tolist()) == other  # every other-class sample is drawn, nothing else
            assert set(labels[negatives[b]].tolist()) == {0, 2, 3} - {LABELS[b]}
    # roughly uniform over the other-class pool
    counts = torch.bincount(negatives[0], minlength=n).float()
    pool_size = sum(1 for label in LABELS if label != LABELS[0])
    used = counts[counts > 0]
    assert used.numel() == pool_size
    assert (used - k / pool_size).abs().max() < 0.35 * k / pool_size


def test_negative_sampler_shuffled_batch_and_repeats():
    sampler = NegativeSampler(len(LABELS), 50, LABELS)
    index = torch.tensor([17, 3, 3, 10])
    contrast_idx = sampler(index)
    assert torch.equal(contrast_idx[:, 0], index)
    labels = torch.tensor(LABELS)
    assert (labels[contrast_idx[:, 1:]] != labels[index][:, None]).all()


def test_negative_sampler_without_labels():
    torch.manual_seed(1)
    sampler = NegativeSampler(7, 500)
    index = torch.tensor([0, 6, 3])
    contrast_idx = sampler(index)
    assert contrast_idx.shape == (3, 501)
    assert torch.equal(contrast_idx[:, 0], index)
    assert contrast_idx.min() >= 0 and contrast_idx.max() < 7
    assert set(contrast_idx[:, 1:].flatten().tolist()) == set(range(7))


def test_negative_sampler_reproducible():
    """Draws depend on the seed and the batch's indices only, not on the global RNG (exact resume)."""
    index = torch.tensor([1, 4, 9])
    torch.manual_seed(42)
    a = NegativeSampler(len(LABELS), 16, LABELS, seed=0)(index)
    torch.manual_seed(43)
    b = NegativeSampler(len(LABELS), 16, LABELS, seed=0)(index)
    c = NegativeSampler(len(LABELS), 16, LABELS, seed=1)(index)
    d = NegativeSampler(len(LABELS), 16, LABELS, seed=0)(torch.tensor([1, 4, 10]))
    assert torch.equal(a, b) and not torch.equal(a, c) and not torch.equal(a[:2], d[:2])


def test_negative_sampler_errors():
    with pytest.raises(ValueError, match="two classes"):
        NegativeSampler(3, 4, [1, 1, 1])
    with pytest.raises(ValueError, match="3 labels"):
        NegativeSampler(4, 4, [0, 1, 0])


def _example(i: int, label_key: str = "label", index: bool = True) -> dict:
    example = {"pixel_values": torch.full((3, 2, 2), float(i)), label_key: i % 2, "other": "x"}
    if index:
        example["index"] = i
    return example


def test_collator_with_indices():
    sampler = NegativeSampler(6, 4, [0, 1, 0, 1, 0, 1])
    batch = DistillationCollator(sampler)([_example(i) for i in (5, 2, 0)])
    assert set(batch) == {"pixel_values", "labels", "index", "contrast_idx"}
    assert batch["pixel_values"].shape == (3, 3, 2, 2)
    assert batch["pixel_values"][0, 0, 0, 0].item() == 5.0 and batch["pixel_values"][2].sum().item() == 0.0
    assert batch["labels"].tolist() == [1, 0, 0] and batch["labels"].dtype == torch.long
    assert batch["index"].tolist() == [5, 2, 0]
    assert batch["contrast_idx"].shape == (3, 5)
    assert torch.equal(batch["contrast_idx"][:, 0], batch["index"])


def test_collator_without_indices_or_sampler():
    sampler = NegativeSampler(6, 4)
    batch = DistillationCollator(sampler)([_example(i, "labels", index=False) for i in range(2)])
    assert set(batch) == {"pixel_values", "labels"} and batch["labels"].tolist() == [0, 1]
    batch = DistillationCollator()([_example(i) for i in range(2)])  # indices kept (teacher cache), no negatives
    assert set(batch) == {"pixel_values", "labels", "index"} and batch["index"].tolist() == [0, 1]
    batch = DistillationCollator()([{"pixel_values": torch.zeros(3, 2, 2)}])
    assert set(batch) == {"pixel_values"}


def test_collator_missing_pixel_values():
    with pytest.raises(ValueError, match="ImageClassificationTransform") as info:
        DistillationCollator()([{"image": object(), "label": 0}])
    assert "pixel_values" in str(info.value) and "image" in str(info.value)


def _failing_transform(batch):
    raise AssertionError("the transform must not run")


def test_indexed_dataset_and_dataset_labels():
    base = Dataset.from_dict({"pixels": [[0.0], [1.0], [2.0]], "label": [2, 0, 1]})
    indexed = IndexedDataset(base)
    assert len(indexed) == 3
    assert indexed[1] == {"pixels": [1.0], "label": 0, "index": 1}
    calls = []

    def batched(batch):
        calls.append(len(batch["label"]))
        return {"pixels": [[2 * p[0]] for p in batch["pixels"]], "label": batch["label"]}

    doubled = IndexedDataset(base.with_transform(batched))
    assert doubled.__getitems__([2, 0]) == [{"pixels": [4.0], "label": 1, "index": 2},
                                            {"pixels": [0.0], "label": 2, "index": 0}]
    assert calls == [2]  # one transform call for the batch, as the DataLoader fetches it
    assert doubled.__getitems__([1]) == [doubled[1]]
    assert IndexedDataset([{"x": 5}, {"x": 6}]).__getitems__([1]) == [{"x": 6, "index": 1}]  # no __getitems__
    transformed = base.with_transform(_failing_transform)
    assert dataset_labels(transformed) == [2, 0, 1]
    assert dataset_labels(IndexedDataset(transformed)) == [2, 0, 1]
    with pytest.raises(AssertionError, match="must not run"):  # the transform really is set
        transformed[0]
    plural = Dataset.from_dict({"x": [1, 2], "labels": [1, 0]}).with_transform(_failing_transform)
    assert dataset_labels(plural) == [1, 0]
    fine = Dataset.from_dict({"x": [1, 2], "label": [0, 0], "fine_label": [5, 7]})
    assert dataset_labels(fine, "fine_label") == [5, 7]
    assert dataset_labels(Dataset.from_dict({"x": [1, 2]})) is None
    assert dataset_labels([{"label": 0}]) is None  # not a datasets.Dataset
