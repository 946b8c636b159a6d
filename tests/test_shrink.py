"""shrink_teacher: a shallower copy of the teacher initialised from its kept layers; the demo's student names."""

from __future__ import annotations

import logging
import warnings

import pytest
import torch
from transformers import (
    AutoConfig,
    ConvNextConfig,
    ConvNextForImageClassification,
    DeiTConfig,
    DeiTForImageClassification,
    ResNetConfig,
    ResNetForImageClassification,
    Swinv2Config,
    Swinv2ForImageClassification,
)

import tiny
from cktf_hf import shrink_teacher
from cktf_hf.shrink import select_weights
from cktf_hf.demo import STUDENT_SIZES, load_or_build_student, student_config
from cktf_hf.shrink import kept_layers

LABELS = dict(num_labels=10, id2label={i: str(i) for i in range(10)}, label2id={str(i): i for i in range(10)})


def _resnet():
    torch.manual_seed(0)
    return ResNetForImageClassification(ResNetConfig(
        embedding_size=8, hidden_sizes=[8, 16], depths=[2, 4], layer_type="bottleneck",
        downsample_in_first_stage=False, **LABELS))


def _convnext():
    torch.manual_seed(0)
    return ConvNextForImageClassification(ConvNextConfig(
        num_stages=2, hidden_sizes=[8, 16], depths=[2, 4], patch_size=2, image_size=16, **LABELS))


def _deit():
    torch.manual_seed(0)
    return DeiTForImageClassification(DeiTConfig(
        image_size=16, patch_size=4, hidden_size=32, num_hidden_layers=6, num_attention_heads=2,
        intermediate_size=64, **LABELS))


def _state(model) -> dict[str, torch.Tensor]:
    return model.state_dict()


def _pixels():
    return torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))


def test_kept_layers():
    assert kept_layers(12, 0.5) == [0, 2, 4, 6, 8, 10]  # every other layer, as DistilBERT
    assert kept_layers(4, 0.5) == [0, 2] and kept_layers(3, 0.5) == [0, 1] and kept_layers(1, 0.5) == [0]
    assert kept_layers(4, 1.0) == [0, 1, 2, 3] and kept_layers(6, 0.34) == [0, 3]


@pytest.mark.parametrize("build", [lambda: tiny.vit(32, 4), _deit])
def test_vit_and_deit_keep_every_other_layer_with_the_teachers_weights(build):
    teacher = build()
    student = shrink_teacher(teacher, depth=0.5)
    n = teacher.config.num_hidden_layers
    assert type(student) is type(teacher) and student.config.num_hidden_layers == n // 2
    t, s = _state(teacher), _state(student)
    prefix = next(p for p in (f"{teacher.base_model_prefix}.layers.", f"{teacher.base_model_prefix}.encoder.layer.")
                  if any(k.startswith(p) for k in t))
    kept = kept_layers(n, 0.5)
    for key in s:
        if key.startswith(prefix):
            j, rest = key[len(prefix):].split(".", 1)
            assert torch.equal(s[key], t[f"{prefix}{kept[int(j)]}.{rest}"]), key
        else:
            assert torch.equal(s[key], t[key]), key  # embeddings, final norm, classifier: the teacher's
    weight = next(k for k in s if k.startswith(f"{prefix}1.") and k.endswith("weight") and s[k].dim() == 2)
    assert not torch.equal(s[weight], t[weight])  # student layer 1 is teacher layer 2, not teacher layer 1
    logits = student(pixel_values=_pixels()).logits
    assert logits.shape == (2, 10) and student.config.id2label == teacher.config.id2label
    assert student.training and all(p.requires_grad for p in student.parameters())


@pytest.mark.parametrize("build", [_resnet, _convnext])
def test_cnns_shrink_every_stage(build):
    teacher = build()
    student = shrink_teacher(teacher, depth=0.5)
    assert student.config.depths == [len(kept_layers(d, 0.5)) for d in teacher.config.depths] == [1, 2]
    t, s = _state(teacher), _state(student)
    base = teacher.base_model_prefix
    # stage 1 keeps the teacher's layers 0 and 2, renumbered 0 and 1
    for j, i in ((0, 0), (1, 2)):
        prefix_s, prefix_t = f"{base}.encoder.stages.1.layers.{j}.", f"{base}.encoder.stages.1.layers.{i}."
        keys = [k for k in s if k.startswith(prefix_s)]
        assert keys and all(torch.equal(s[k], t[prefix_t + k[len(prefix_s):]]) for k in keys)
    others = [k for k in s if ".layers." not in k]
    assert others and all(torch.equal(s[k], t[k]) for k in others)  # stem, downsampling, norms, classifier
    with torch.no_grad():
        assert student(pixel_values=_pixels()).logits.shape == (2, 10)
    assert sum(p.numel() for p in student.parameters()) < sum(p.numel() for p in teacher.parameters())


def test_a_copy_at_full_depth_computes_what_the_teacher_does():
    teacher = _convnext().eval()
    student = shrink_teacher(teacher, depth=1.0).eval()
    with torch.no_grad():
        assert torch.equal(student(pixel_values=_pixels()).logits, teacher(pixel_values=_pixels()).logits)


def test_width_shrinks_and_the_dtype_is_float32():
    teacher = tiny.vit(64, 4).to(torch.bfloat16)
    teacher.requires_grad_(False)
    student = shrink_teacher(teacher, depth=0.5, width=0.5)
    assert student.config.hidden_size == 32 and student.config.intermediate_size == 64
    assert student.config.num_hidden_layers == 2 and student.config._name_or_path == teacher.config._name_or_path
    assert next(student.parameters()).dtype == torch.float32 and all(p.requires_grad for p in student.parameters())
    assert student(pixel_values=_pixels()).logits.shape == (2, 10)
    narrow = shrink_teacher(_resnet(), width=0.5)
    assert narrow.config.hidden_sizes == [8, 8] and narrow.config.embedding_size == 8


def test_a_narrow_student_selects_evenly_spaced_teacher_weights():
    teacher = _resnet()
    student = shrink_teacher(teacher, depth=1.0, width=0.5)
    source = teacher.state_dict()
    for key, value in student.state_dict().items():
        expected = source[key]
        for dim, size in enumerate(value.shape):
            if size < expected.shape[dim]:  # e.g. 16 channels → 8: indices 0, 2, 4, ... , 15 (first and last kept)
                index = torch.linspace(0, expected.shape[dim] - 1, size).round().long()
                assert index[0] == 0 and index[-1] == expected.shape[dim] - 1
                expected = expected.index_select(dim, index)
        assert torch.equal(value, expected.float()), key
    assert select_weights(torch.arange(10.0), torch.Size([4])).tolist() == [0.0, 3.0, 6.0, 9.0]
    with pytest.raises(ValueError, match=r"Cannot select a \(4, 2\) weight out of a \(3, 3\) one"):
        select_weights(torch.zeros(3, 3), torch.Size([4, 2]))


def test_fresh_init_keeps_nothing_of_the_teacher():
    teacher = tiny.vit(64, 4)
    fresh = shrink_teacher(teacher, depth=0.5, init="fresh")
    assert fresh.config._name_or_path == ""
    assert not torch.equal(fresh.state_dict()["vit.embeddings.patch_embeddings.projection.weight"],
                           teacher.state_dict()["vit.embeddings.patch_embeddings.projection.weight"])
    with pytest.raises(ValueError, match=r"init must be one of \('teacher', 'fresh'\), got 'random'"):
        shrink_teacher(teacher, init="random")


def test_unsupported_architecture_and_bad_fractions_are_refused():
    swin = Swinv2ForImageClassification(Swinv2Config(image_size=16, patch_size=4, embed_dim=8, depths=[1],
                                                     num_heads=[1], window_size=2, **LABELS))
    with pytest.raises(ValueError, match=r"ViT, DeiT, ResNet and ConvNeXt.*'swinv2'.*Swinv2ForImageClassification"):
        shrink_teacher(swin)
    with pytest.raises(ValueError, match="depth must be in"):
        shrink_teacher(tiny.vit(), depth=0)
    with pytest.raises(ValueError, match="width must be in"):
        shrink_teacher(tiny.vit(), width=1.5)


def test_a_depth_that_removes_no_layer_is_refused_naming_the_stages(caplog):
    one_block = tiny.resnet((8, 16, 32))  # every stage has one block, as the shipped teacher
    with pytest.raises(ValueError, match=r"depth=0.5 removes no layer of this ResNetForImageClassification: its "
                                         r"stages 0, 1, 2 have \[1, 1, 1\] layers and keep \[1, 1, 1\].*width < 1"):
        shrink_teacher(one_block, depth=0.5)
    with pytest.raises(ValueError, match=r"its encoder has 1 layer\(s\) and keeps 1"):
        shrink_teacher(tiny.vit(layers=1), depth=0.5)
    log = logging.getLogger("cktf_hf.shrink")
    with caplog.at_level(logging.WARNING, logger="cktf_hf.shrink"):
        log.addHandler(caplog.handler)
        try:
            narrow = shrink_teacher(one_block, depth=0.5, width=0.5)  # the width still shrinks it: a warning
        finally:
            log.removeHandler(caplog.handler)
    assert "removes no layer" in caplog.text and "Only width=0.5 shrinks the student" in caplog.text
    assert narrow.config.hidden_sizes == [8, 8, 16]
    assert shrink_teacher(tiny.resnet((8, 16)), depth=1.0).config.depths == [1, 1]  # depth 1 asks for no removal


# ------------------------------------------------------------------------------------------- the demo's names
def test_named_students_have_unmistakable_names_and_the_old_ones_warn():
    assert all(name.startswith("cktf-vit-") for name in STUDENT_SIZES)
    config = tiny.vit().config
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        new = student_config("cktf-vit-tiny", config, image_size=16)
    with pytest.warns(FutureWarning, match="'vit-tiny' is deprecated.*'cktf-vit-tiny'"):
        old = student_config("vit-tiny", config, image_size=16)
    assert old.to_dict() == new.to_dict()
    with pytest.warns(FutureWarning, match="'vit-nano' is deprecated"):
        assert load_or_build_student("vit-nano", config, 16).config.num_hidden_layers == 3


def test_a_named_student_takes_its_patch_size():
    config = tiny.vit().config  # 16 px, patch 4
    student = load_or_build_student("cktf-vit-nano:patch=8", config, 16)
    assert student.config.patch_size == 8 and student.vit.embeddings.patch_embeddings.num_patches == 4
    assert student_config("cktf-vit-nano", config, 16).patch_size == 4
    with pytest.warns(UserWarning, match="patch=7 does not divide the 16-px image: using 8-px patches"):
        assert student_config("cktf-vit-nano:patch=7", config, 16).patch_size == 8  # the demo's default, 16 px
    with pytest.warns(UserWarning, match="using 4-px patches"):
        assert student_config("cktf-vit-nano:patch=6", config, 16).patch_size == 4  # a tie: the smaller
    for bad in ("cktf-vit-nano:patch=0", "cktf-vit-nano:patch=17", "cktf-vit-nano:size=8", "cktf-vit-nano:patch"):
        with pytest.raises(ValueError, match=r"write cktf-vit-nano:patch=N with N a patch size in pixels, at most"):
            student_config(bad, config, 16)


def test_load_or_build_student_from_the_teacher(tmp_path):
    teacher = tiny.vit(32, 4)
    teacher.save_pretrained(tmp_path)
    config = AutoConfig.from_pretrained(tmp_path)
    student = load_or_build_student("teacher:depth=0.5", config)  # the teacher loaded from the config's folder
    assert student.config.num_hidden_layers == 2
    assert torch.equal(student.classifier.weight, teacher.classifier.weight)
    assert load_or_build_student("teacher", config, teacher=teacher).config.num_hidden_layers == 2  # depth 0.5
    assert load_or_build_student("teacher:depth=1,width=0.5", config, teacher=teacher).config.hidden_size == 16
    fresh = load_or_build_student("teacher:depth=1, init=fresh", config, teacher=teacher)
    assert fresh.config._name_or_path == "" and not torch.equal(fresh.classifier.weight, teacher.classifier.weight)
    with pytest.raises(ValueError, match="teacher:depth=0.5,width=1.0,init=teacher"):
        load_or_build_student("teacher:layers=2", config, teacher=teacher)
    with pytest.raises(ValueError, match=r"init is given twice in --student 'teacher:init=fresh,init=teacher'"):
        load_or_build_student("teacher:init=fresh,init=teacher", config, teacher=teacher)
    with pytest.raises(ValueError, match=r"init in --student 'teacher:init=zeros' must be one of"):
        load_or_build_student("teacher:init=zeros", config, teacher=teacher)
