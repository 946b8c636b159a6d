"""Every configuration error is raised before the first step, with a message that says what to change."""

import pytest
import torch
from torch.utils.data import IterableDataset
from transformers import ViTForImageClassification

import tiny
from cktf_hf import ContrastiveDistillationConfig, ContrastiveDistillationTrainer


def build(tmp_path, student=None, teacher=None, dataset=None, **config):
    args = ContrastiveDistillationConfig(output_dir=str(tmp_path), max_steps=1, nce_k=8, report_to="none", **config)
    return ContrastiveDistillationTrainer(
        model=student or tiny.vit(32, 2), args=args, teacher_model=teacher or tiny.vit(64, 4),
        train_dataset=dataset if dataset is not None else tiny.digits("train", 32),
    )


def test_label_count_mismatch(tmp_path):
    with pytest.raises(ValueError, match=r"student has 5 labels but the teacher has 10.*id2label=teacher.config"):
        build(tmp_path, student=tiny.vit(32, 2, num_labels=5))


def test_label_names_mismatch(tmp_path):
    student = tiny.vit(32, 2)
    student.config.id2label = {**student.config.id2label, 3: "three"}
    with pytest.raises(ValueError, match=r"id2label differs.*3: student 'three' vs teacher '3'"):
        build(tmp_path, student=student)


def test_transfer_preset_accepts_a_different_label_space(tmp_path):
    trainer = build(tmp_path, student=tiny.vit(32, 2, num_labels=5), preset="transfer")
    assert trainer.objective.settings.ce_weight == 0


def test_layer_index_out_of_range_lists_valid_layers(tmp_path):
    with pytest.raises(ValueError, match=r"Student layer index 7 is out of range.*0=embeddings, 1=layer1, 2=layer2"):
        build(tmp_path, layer_pairs="7:1")
    with pytest.raises(ValueError, match=r"Unknown teacher layer 'block9'"):
        build(tmp_path, layer_pairs="1:block9")


class NoHiddenStates(ViTForImageClassification):
    def forward(self, pixel_values=None, output_hidden_states=None, **kwargs):
        return super().forward(pixel_values=pixel_values, output_hidden_states=False, **kwargs)


def test_model_without_hidden_states(tmp_path):
    student = NoHiddenStates(tiny.vit(32, 2).config)
    with pytest.raises(ValueError, match="student returned no hidden states"):
        build(tmp_path, student=student)


def test_grayscale_pixel_values_are_refused_with_a_fix(tmp_path):
    gray = tiny.digits("train", 16).map(lambda e: {"pixel_values": e["pixel_values"][:1]})
    with pytest.raises(ValueError, match=r"expects 3-channel images.*convert images to RGB"):
        build(tmp_path, dataset=gray.with_format("torch"))


def test_wrong_image_size_names_the_expected_size(tmp_path):
    big = tiny.digits("train", 16).map(lambda e: {"pixel_values": torch.nn.functional.interpolate(
        e["pixel_values"][None], size=32)[0]})
    with pytest.raises(ValueError, match=r"cannot take the training images.*image_size=16"):
        build(tmp_path, dataset=big.with_format("torch"))


def test_memory_bank_without_indices(tmp_path):
    def collate_without_index(examples):
        return {"pixel_values": torch.stack([e["pixel_values"] for e in examples]),
                "labels": torch.tensor([int(e["labels"]) for e in examples])}

    args = ContrastiveDistillationConfig(output_dir=str(tmp_path), max_steps=1, nce_k=8, report_to="none",
                                         preset="cktf-reference")
    with pytest.raises(ValueError, match=r"needs 'index' and 'contrast_idx'.*negatives='in_batch'"):
        ContrastiveDistillationTrainer(model=tiny.vit(32, 2), args=args, teacher_model=tiny.vit(64, 4),
                                       train_dataset=tiny.digits("train", 32), data_collator=collate_without_index)


class Stream(IterableDataset):
    def __iter__(self):
        yield from tiny.digits("train", 8)


def test_memory_bank_with_an_iterable_dataset(tmp_path):
    with pytest.raises(ValueError, match=r"map-style train_dataset with stable indices.*negatives=.in_batch. without a teacher cache"):
        build(tmp_path, dataset=Stream(), preset="cktf-reference")


def test_in_batch_negatives_train_on_an_iterable_dataset(tmp_path):
    trainer = build(tmp_path, dataset=Stream(), per_device_train_batch_size=4, save_strategy="no")  # the recipe
    assert trainer.args.negatives == "in_batch"
    assert trainer.train().global_step == 1


@pytest.mark.parametrize("config, message", [
    ({"preset": "cktf++"}, r"Unknown preset 'cktf\+\+'. Known presets: .*cktf"),
    ({"classic_objectives": "attention=1"}, r"Unknown objective 'attention'. Known objectives: .*at, cc"),
    ({"classic_objectives": "at"}, None),
    ({"negatives": "queue"}, r"negatives must be one of"),
])
def test_unknown_objective_or_preset(tmp_path, config, message):
    if message is None:  # a name without a weight means weight 1
        assert ContrastiveDistillationConfig(output_dir=str(tmp_path), **config).objective_settings.classic == {"at": 1.0}
        return
    with pytest.raises(ValueError, match=message):
        ContrastiveDistillationConfig(output_dir=str(tmp_path), **config)


def test_missing_teacher(tmp_path):
    args = ContrastiveDistillationConfig(output_dir=str(tmp_path), report_to="none")
    with pytest.raises(ValueError, match="No teacher"):
        ContrastiveDistillationTrainer(model=tiny.vit(32, 2), args=args, train_dataset=tiny.digits("train", 8))


def test_unreachable_teacher_explains_offline_mode(tmp_path):
    args = ContrastiveDistillationConfig(output_dir=str(tmp_path), report_to="none", teacher="someone/no-such-model")
    with pytest.raises(OSError, match=r"HF_HUB_OFFLINE is set.*local folder"):
        ContrastiveDistillationTrainer(model=tiny.vit(32, 2), args=args, train_dataset=tiny.digits("train", 8))
