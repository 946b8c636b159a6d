"""Reliability of the data path (issue 12): no silently wrong inputs, no leaked paths or remote code, clear errors."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import re
import sys
from pathlib import Path

import datasets
import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

import tiny
from cktf_hf import ContrastiveDistillationConfig, ContrastiveDistillationTrainer
from cktf_hf.config import CONFIG_NAME
from cktf_hf.objectives import ObjectiveSettings
from cktf_hf.teacher import load_teacher, teacher_fingerprint
from cktf_hf.trainer import STATE_NAME
from cktf_hf.transforms import to_rgb

ROOT = Path(__file__).resolve().parents[1]


# --------------------------------------------------------------------------------------- deep images (item 13)
def _gradient(high: int) -> np.ndarray:
    return np.tile(np.linspace(0, high, 256), (8, 1))


@pytest.mark.parametrize("mode, array", [
    ("I;16", _gradient(65535).astype(np.uint16)),
    ("I;16B", _gradient(65535).astype(">u2")),
    ("I", _gradient(65535).astype(np.int32)),
    ("F", _gradient(1.0).astype(np.float32)),
])
def test_deep_grayscale_gradients_keep_their_gray_levels(mode, array):
    image = Image.fromarray(array) if mode != "I;16B" else Image.frombytes("I;16B", (256, 8), array.tobytes())
    assert image.mode == mode
    rgb = np.asarray(to_rgb(image)).astype(int)
    assert rgb.shape == (8, 256, 3) and (rgb[..., 0] == rgb[..., 2]).all()
    row = rgb[0, :, 0]
    assert row[0] == 0 and row[-1] == 255 and (np.diff(row) >= 0).all()
    assert len(np.unique(row)) > 200                       # a gradient, not black and white
    expected = np.rint(array[0].astype(np.float64) / (array.max() / 255.0))
    assert np.abs(row - expected).max() <= 1


def test_deep_arrays_and_eight_bit_ranges_are_scaled_the_same_way():
    gradient16 = _gradient(65535).astype(np.uint16)
    assert np.array_equal(np.asarray(to_rgb(gradient16)), np.asarray(to_rgb(Image.fromarray(gradient16))))
    eight_bit_as_int = Image.fromarray(_gradient(255).astype(np.int32))  # mode I holding 8-bit values: kept
    assert np.array_equal(np.asarray(to_rgb(eight_bit_as_int))[..., 0], _gradient(255).astype(np.int32))
    odd = Image.fromarray((_gradient(2.0) - 1.0).astype(np.float32))     # F in [-1, 1]: min-max rescaled
    row = np.asarray(to_rgb(odd))[0, :, 0]
    assert row[0] == 0 and row[-1] == 255


# ------------------------------------------------------------------------- distillation_config.json (item 2)
def _remote_code_teacher(folder, marker) -> None:
    """A teacher folder whose config names custom code (auto_map) that writes ``marker`` when it is imported."""
    folder.mkdir()
    (folder / "marker_model.py").write_text(
        f"open({str(marker)!r}, 'w').write('remote code ran')\n"
        "from transformers import ViTConfig, ViTForImageClassification\n"
        "class MarkerConfig(ViTConfig):\n    model_type = 'marker-vit'\n"
        "class MarkerModel(ViTForImageClassification):\n    config_class = MarkerConfig\n"
    )
    (folder / "config.json").write_text(json.dumps({
        "model_type": "marker-vit", "architectures": ["MarkerModel"],
        "auto_map": {"AutoConfig": "marker_model.MarkerConfig",
                     "AutoModelForImageClassification": "marker_model.MarkerModel"},
    }))


def test_a_distillation_config_never_enables_remote_code(tmp_path):
    marker, teacher = tmp_path / "marker.txt", tmp_path / "evil-teacher"
    _remote_code_teacher(teacher, marker)
    saved = tmp_path / "published"
    saved.mkdir()
    (saved / CONFIG_NAME).write_text(json.dumps({"teacher": str(teacher), "trust_remote_code": True, "nce_k": 8}))
    args = ContrastiveDistillationConfig.from_distillation_config(str(saved), output_dir=str(tmp_path / "out"))
    assert args.trust_remote_code is False and args.teacher == str(teacher) and args.nce_k == 8
    with pytest.raises((OSError, ValueError)):
        load_teacher(args.teacher, args)
    assert not marker.exists()
    explicit = ContrastiveDistillationConfig.from_distillation_config(str(saved), output_dir=str(tmp_path / "out"),
                                                                       trust_remote_code=True)
    assert explicit.trust_remote_code is True  # only the caller can turn it on


def test_a_saved_distillation_config_holds_no_local_path(tmp_path):
    teacher = tmp_path / "my-teacher"
    teacher.mkdir()
    config = ContrastiveDistillationConfig(output_dir=str(tmp_path / "run"), teacher=str(teacher),
                                           teacher_cache_dir=str(tmp_path / "cache"), nce_k=8)
    text = open(config.save_distillation_config(str(tmp_path / "saved"))).read()
    assert str(tmp_path) not in text
    saved = json.loads(text)
    assert saved["teacher"] == "my-teacher" and saved["teacher_cache_dir"] is None
    assert set(saved["local_paths_removed"]) == {"teacher", "teacher_cache_dir"}
    restored = ContrastiveDistillationConfig.from_distillation_config(str(tmp_path / "saved"),
                                                                       output_dir=str(tmp_path / "b"))
    assert restored.teacher is None and restored.teacher_cache_dir is None and restored.nce_k == 8
    hub = ContrastiveDistillationConfig(output_dir=str(tmp_path / "run"), teacher="org/teacher")
    assert json.loads(open(hub.save_distillation_config(str(tmp_path / "hub"))).read())["teacher"] == "org/teacher"


# ----------------------------------------------------------------------------- teacher fingerprint (item 3)
def _trainer(tmp_path, teacher_model, dataset=None, student=None, **config):
    args = ContrastiveDistillationConfig(**{**dict(output_dir=str(tmp_path / "student"), max_steps=1, nce_k=8,
                                                   report_to="none", save_strategy="no", disable_tqdm=True), **config})
    return ContrastiveDistillationTrainer(model=student or tiny.vit(32, 2, seed=1), args=args,
                                          teacher_model=teacher_model,
                                          train_dataset=dataset if dataset is not None else tiny.digits("train", 32))


def test_a_teacher_with_flipped_bytes_has_another_sha256(tmp_path):
    folder = tmp_path / "teacher"
    tiny.vit(64, 4).save_pretrained(folder)
    args = ContrastiveDistillationConfig(output_dir=str(tmp_path / "out"))
    weights = folder / "model.safetensors"
    before = teacher_fingerprint(str(folder), load_teacher(str(folder), args))
    assert before == {"source": "local folder", "name": "teacher",
                      "weights_sha256": {"model.safetensors": hashlib.sha256(weights.read_bytes()).hexdigest()}}
    data = bytearray(weights.read_bytes())
    for i in range(len(data) - 5000, len(data)):  # tensor bytes, not the header: the teacher still loads
        data[i] ^= 0xFF
    weights.write_bytes(bytes(data))
    corrupted = load_teacher(str(folder), args)
    assert teacher_fingerprint(str(folder), corrupted)["weights_sha256"] != before["weights_sha256"]
    model = tiny.vit(64, 4)
    by_object = teacher_fingerprint(model, model)["state_dict_sha256"]
    with torch.no_grad():
        model.classifier.bias[0] += 1
    assert teacher_fingerprint(model, model)["state_dict_sha256"] != by_object


def test_the_trainer_records_the_teacher_in_distillation_config(tmp_path):
    folder = tmp_path / "teacher"
    tiny.vit(64, 4).save_pretrained(folder)
    trainer = _trainer(tmp_path, str(folder))
    assert trainer.teacher_fingerprint["source"] == "local folder"
    trainer.save_model()
    saved = json.loads((tmp_path / "student" / CONFIG_NAME).read_text())
    assert saved["teacher_fingerprint"] == trainer.teacher_fingerprint
    assert str(tmp_path) not in json.dumps(saved)


def test_a_hub_teacher_is_recorded_by_its_commit(fake_hub, tmp_path):
    folder = tmp_path / "teacher"
    tiny.vit(64, 4).save_pretrained(folder)
    commit = fake_hub.publish("tester/fingerprinted-teacher", str(folder))
    later = fake_hub.publish("tester/fingerprinted-teacher", {"notes.txt": b"a later commit"})
    trainer = _trainer(tmp_path, None, teacher="tester/fingerprinted-teacher", teacher_revision=commit)
    weights = hashlib.sha256((folder / "model.safetensors").read_bytes()).hexdigest()
    assert trainer.teacher_fingerprint == {"source": "hub", "repo_id": "tester/fingerprinted-teacher",
                                           "commit": commit, "weights_sha256": {"model.safetensors": weights}}
    args = ContrastiveDistillationConfig(output_dir=str(tmp_path / "out"))  # no revision: main, the later commit
    latest = teacher_fingerprint("tester/fingerprinted-teacher", load_teacher("tester/fingerprinted-teacher", args))
    assert latest["commit"] == later != commit


# ------------------------------------------------------------------------------------------ labels (item 9)
def _digits_with(labels, dtype=None, limit=32):
    data = tiny.digits("train", limit).with_format(None)
    data = data.remove_columns("labels").add_column("labels", labels)
    if dtype is not None:
        data = data.cast_column("labels", datasets.Value(dtype))
    return data.with_format("torch")


def test_float_labels_are_refused(tmp_path):
    labels = [float(v) for v in tiny.digits("train", 32)["labels"]]
    labels[5] = 2.5
    with pytest.raises(ValueError, match=r"'labels' holds floats.*2\.5 at row 5.*cast_column\('labels'"):
        _trainer(tmp_path, tiny.vit(64, 4), dataset=_digits_with(labels, "float32"))
    with pytest.raises(ValueError, match=r"holds floats"):  # integral floats too: a float label is a bug
        _trainer(tmp_path, tiny.vit(64, 4), dataset=_digits_with([float(v) for v in range(10)] * 3, "float64", 30))


def test_string_labels_are_refused_with_the_fix(tmp_path):
    with pytest.raises(ValueError, match=r"str values \(e\.g\. '0' at row 0\).*class_encode_column\('labels'\)"):
        _trainer(tmp_path, tiny.vit(64, 4), dataset=_digits_with([str(i % 10) for i in range(32)]))


@pytest.mark.parametrize("bad, message", [(10, r"label 10 at row 7 .*outside \[0, 10\).*10 classes"),
                                          (-1, r"label -1 at row 7 .*missing label.*filter")])
def test_labels_out_of_range_are_refused_before_training(tmp_path, bad, message):
    labels = [int(v) for v in tiny.digits("train", 32)["labels"]]
    labels[7] = bad
    with pytest.raises(ValueError, match=message):
        _trainer(tmp_path, tiny.vit(64, 4), dataset=_digits_with(labels))


def test_empty_training_set_and_bad_evaluation_labels(tmp_path):
    with pytest.raises(ValueError, match="train_dataset is empty"):
        _trainer(tmp_path, tiny.vit(64, 4), dataset=tiny.digits("train", 32).select([]))
    labels = [int(v) for v in tiny.digits("train", 32)["labels"]]
    labels[3] = 12
    args = ContrastiveDistillationConfig(output_dir=str(tmp_path), max_steps=1, nce_k=8, report_to="none")
    with pytest.raises(ValueError, match=r"eval_dataset has label 12 at row 3"):
        ContrastiveDistillationTrainer(model=tiny.vit(32, 2), args=args, teacher_model=tiny.vit(64, 4),
                                       train_dataset=tiny.digits("train", 32), eval_dataset=_digits_with(labels))


# ------------------------------------------------------------------------------------ class names (item 10)
ORDER = [3, 7, 0, 9, 1, 5, 2, 8, 6, 4]  # dataset class d is the teacher's class ORDER[d]


def _named(dataset, names):
    return dataset.with_format(None).cast_column("labels", datasets.ClassLabel(names=names)).with_format("torch")


def _permuted_copy(dataset):
    """The same images with the classes renumbered in ORDER, named accordingly."""
    inverse = {teacher_class: d for d, teacher_class in enumerate(ORDER)}
    data = dataset.with_format(None)
    data = data.map(lambda e: {"labels": inverse[e["labels"]]})
    return _named(data, [str(t) for t in ORDER])


def test_same_class_names_in_another_order_are_remapped(tmp_path):
    train = tiny.digits("train", 64)
    original = _named(train, [str(i) for i in range(10)])
    permuted = _permuted_copy(train)
    config = dict(preset="cktf+kd", negatives="in_batch", per_device_eval_batch_size=64)
    a = _trainer(tmp_path / "a", tiny.vit(64, 4), dataset=original, student=tiny.vit(32, 2, seed=1), **config)
    # the student's classes are named as the teacher's: its head rows follow the names into the dataset's order
    b = _trainer(tmp_path / "b", tiny.vit(64, 4), dataset=permuted, student=tiny.vit(32, 2, seed=1), **config)
    assert b.model.config.id2label == dict(enumerate(str(t) for t in ORDER))
    assert b.model.config.label2id == {str(t): d for d, t in enumerate(ORDER)}

    def losses(trainer):
        batch = trainer.data_collator([trainer.train_dataset[i] for i in range(32)])
        trainer.model.train()
        loss = trainer.compute_loss(trainer.model, dict(batch))
        return loss.item(), {k: float(v) for k, v in trainer._components.items()}

    loss_a, parts_a = losses(a)
    loss_b, parts_b = losses(b)
    assert parts_a["kd"] > 0 and parts_a["ce"] > 0
    assert loss_b == pytest.approx(loss_a, rel=1e-5)
    # abs: KD is a KL divergence of ~0.02, a difference of nearly equal float32 sums, so summing the classes in
    # another order moves it by ~1e-6 absolute (7e-7 seen on an AMD EPYC); a wrong mapping moves it by far more.
    assert parts_b == pytest.approx(parts_a, rel=1e-5, abs=2e-6)
    accuracy_a = a.evaluate_teacher(original)["teacher_accuracy"]
    assert b.evaluate_teacher(permuted)["teacher_accuracy"] == pytest.approx(accuracy_a)


def test_different_class_names_need_an_opt_in(tmp_path):
    names = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
    renamed = _named(tiny.digits("train", 32), names)
    with pytest.raises(ValueError, match=r"class names differ.*the dataset's classes 'zero', 'one'.* are not among the "
                                         r"teacher's, and the teacher's '0', '1'.*allow_label_mismatch"):
        _trainer(tmp_path, tiny.vit(64, 4), dataset=renamed)
    trainer = _trainer(tmp_path, tiny.vit(64, 4), dataset=renamed, allow_label_mismatch=True)
    assert trainer.model.config.id2label == dict(enumerate(names))
    transfer = _trainer(tmp_path, tiny.vit(64, 4), dataset=renamed, student=tiny.vit(32, 2, num_labels=5),
                        preset="transfer")  # no term reads labels against the teacher
    assert transfer.model.config.num_labels == 5
    assert not transfer.label_alignment.teacher_scorable  # no class in common: its accuracy here would mean nothing


def test_evaluation_classes_in_another_order_than_training_are_refused(tmp_path):
    args = ContrastiveDistillationConfig(output_dir=str(tmp_path), max_steps=1, nce_k=8, report_to="none")
    train = _named(tiny.digits("train", 32), [str(i) for i in range(10)])
    with pytest.raises(ValueError, match=r"eval_dataset's class names .* not in the order.*align_labels_with_mapping"):
        ContrastiveDistillationTrainer(model=tiny.vit(32, 2), args=args, teacher_model=tiny.vit(64, 4),
                                       train_dataset=train, eval_dataset=_permuted_copy(tiny.digits("test", 32)))


# ------------------------------------------------------------------------------- refuse early (item 11)
def test_settings_the_data_cannot_support_are_refused_early(tmp_path):
    teacher = tiny.vit(64, 4)
    with pytest.raises(ValueError, match=r"in_batch' with one sample per batch.*per_device_train_batch_size >= 2"):
        _trainer(tmp_path, teacher, negatives="in_batch", per_device_train_batch_size=1)
    one_image = tiny.digits("train", 1)  # every batch holds one image, whatever the batch size
    with pytest.raises(ValueError, match=r"in_batch' on a training set of 1 image has no negatives: every "
                                         r"contrastive term would be 0 at every step.*preset='kd'"):
        _trainer(tmp_path, teacher, dataset=one_image)  # the default preset's in-batch negatives
    with pytest.raises(ValueError, match=r"memory_bank' needs negatives of another class.*offers none"):
        _trainer(tmp_path, teacher, dataset=one_image, negatives="memory_bank")
    assert _trainer(tmp_path, teacher, dataset=one_image, preset="kd").train().global_step == 1  # the way through
    counts = np.bincount(np.asarray(tiny.digits("train", 32).with_format(None)["labels"]))
    pool = 32 - counts.max()
    with pytest.raises(ValueError, match=rf"nce_k=10,000,000 is larger than the {pool} other-class negatives.*"
                                         rf"at most {pool}"):
        _trainer(tmp_path, teacher, nce_k=10_000_000, negatives="memory_bank")
    _trainer(tmp_path, teacher, nce_k=int(pool), negatives="memory_bank")  # the largest that fits
    with pytest.raises(ValueError, match=r"grid_size=64 is larger than a paired feature map of 4×4.*at most 4"):
        _trainer(tmp_path, teacher, grid_size=64)
    with pytest.raises(ValueError, match=r"label_column='fine_label' is not a column.*\['labels', 'pixel_values'\]"):
        _trainer(tmp_path, teacher, label_column="fine_label")


def test_duplicate_objective_names_are_refused():
    with pytest.raises(ValueError, match=r"'AT' is named twice"):
        ContrastiveDistillationConfig(output_dir="unused", classic_objectives="at=1000,AT=5")
    with pytest.raises(ValueError, match=r"named more than once.*\['at'\]"):
        ObjectiveSettings(classic={"at": 1000.0, "AT": 5.0})


# ------------------------------------------------------------------------------------ teacher cache (item 12)
class PlainDataset(torch.utils.data.Dataset):
    """A map-style torch dataset: no datasets fingerprint, only a type and a length."""

    def __init__(self, data) -> None:
        self.data = data

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, i: int) -> dict:
        return self.data[i]


@pytest.mark.parametrize("make", [
    lambda: (PlainDataset(tiny.digits("train", 64)), PlainDataset(tiny.digits("test", 64))),
    lambda: (torch.utils.data.Subset(tiny.digits("train", 96), range(64)),
             torch.utils.data.Subset(tiny.digits("train", 96), range(32, 96))),
], ids=["plain", "subset"])
def test_same_length_datasets_never_share_a_teacher_cache(tmp_path, make):
    first, second = make()
    cache, teacher = tmp_path / "cache", tiny.vit(64, 4)
    _trainer(tmp_path, teacher, dataset=first, teacher_cache_dir=str(cache))
    trainer = _trainer(tmp_path, teacher, dataset=second, teacher_cache_dir=str(cache))
    assert len(os.listdir(cache)) == 2
    pixel_values = torch.stack([second[i]["pixel_values"] for i in range(8)])
    with torch.no_grad():
        expected = trainer.teacher(pixel_values=pixel_values).logits
    torch.testing.assert_close(trainer.teacher_cache.lookup(torch.arange(8), torch.device("cpu")).logits, expected)
    _trainer(tmp_path, teacher, dataset=make()[1], teacher_cache_dir=str(cache))  # the same content: reused
    assert len(os.listdir(cache)) == 2


# ------------------------------------------------------------------------------------ clear errors (item 15)
def test_a_missing_teacher_folder_is_reported_as_a_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "teachers").mkdir()
    for path in ["./no-such-teacher", str(tmp_path / "gone"), "teachers/typo", "~/no/such/teacher", "a/b/c"]:
        with pytest.raises(FileNotFoundError, match=r"Teacher folder not found: .*Check the path"):
            ContrastiveDistillationConfig(output_dir="out", teacher=path)
    args = ContrastiveDistillationConfig(output_dir="out")
    with pytest.raises(FileNotFoundError, match="Teacher folder not found: './gone'"):
        load_teacher("./gone", args)
    assert ContrastiveDistillationConfig(output_dir="out", teacher="someone/model").teacher == "someone/model"
    distill_vit = _load_example("examples/distill_vit.py")  # the CLI builds the config first: the same message
    monkeypatch.setattr("sys.argv", ["distill_vit.py", "--teacher", "./missing-teacher", "--output_dir", "out"])
    with pytest.raises(FileNotFoundError, match="Teacher folder not found: './missing-teacher'"):
        distill_vit.parse_args()


def _load_example(relative_path):
    name = "cktf_reliability_" + Path(relative_path).stem
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, ROOT / relative_path)
        sys.modules[name] = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(sys.modules[name])
    return sys.modules[name]


def test_corrupted_files_are_named_with_the_fix(tmp_path):
    folder = tmp_path / "teacher"
    tiny.vit(64, 4).save_pretrained(folder)
    weights = folder / "model.safetensors"
    weights.write_bytes(b"\xff" * 8 + weights.read_bytes()[8:])  # a broken header
    args = ContrastiveDistillationConfig(output_dir=str(tmp_path / "out"))
    with pytest.raises(OSError, match=rf"could not be read from {re.escape(str(weights))}.*corrupted"):
        load_teacher(str(folder), args)
    (tmp_path / CONFIG_NAME).write_text('{"teacher": "org/teacher",')
    with pytest.raises(ValueError, match=rf"{re.escape(str(tmp_path / CONFIG_NAME))} is not valid JSON"):
        ContrastiveDistillationConfig.from_distillation_config(str(tmp_path), output_dir=str(tmp_path / "out"))


def test_a_corrupted_teacher_cache_is_named_with_the_fix(tmp_path):
    cache, teacher = tmp_path / "cache", tiny.vit(64, 4)
    _trainer(tmp_path, teacher, teacher_cache_dir=str(cache))
    (arrow,) = cache.glob("*/teacher_outputs.arrow")
    arrow.write_bytes(arrow.read_bytes()[: arrow.stat().st_size // 2])
    with pytest.raises(ValueError, match=rf"cache {re.escape(str(arrow))} is unreadable.*Delete the folder"):
        _trainer(tmp_path, teacher, teacher_cache_dir=str(cache))


def test_a_resume_that_no_longer_fits_says_what_changed(tmp_path):
    teacher = tiny.vit(64, 4)
    first = _trainer(tmp_path, teacher, preset="crd")
    checkpoint = tmp_path / "checkpoint-1"
    first.save_model(str(checkpoint))
    save_file(first.objective.state_dict(), str(checkpoint / STATE_NAME))
    bigger = _trainer(tmp_path, teacher, dataset=tiny.digits("train", 48), preset="crd", feat_dim=64)
    with pytest.raises(ValueError, match=r"does not fit this run: the training set had 32 examples, now 48 .*"
                                         r"embedding size was 128, now 64 \(feat_dim.*projector.*Resume with the "
                                         r"training set"):
        bigger._load_from_checkpoint(str(checkpoint))
    headless = _trainer(tmp_path, teacher, preset="crd", teacher_projector="none")  # trained heads saved, none now
    with pytest.raises(ValueError, match=r"checkpoint has terms this run lacks \(teacher_projectors\.final\.net\).*"
                                         r"teacher_projector"):
        headless._load_from_checkpoint(str(checkpoint))
    shared = _trainer(tmp_path, teacher, preset="crd", negative_sampling="shared")
    save_file(shared.objective.state_dict(), str(checkpoint / STATE_NAME))  # float32 banks
    halved = _trainer(tmp_path, teacher, preset="crd", negative_sampling="shared", bank_dtype="bfloat16")
    with pytest.raises(ValueError, match=r"memory banks were stored in float32, this run stores them in bfloat16 "
                                         r"\(bank_dtype changed: pass bank_dtype=float32 to resume"):
        halved._load_from_checkpoint(str(checkpoint))  # not rounded into bfloat16 silently
    shared._load_from_checkpoint(str(checkpoint))  # the same storage: resumes
    # banks saved in dataset order without row_of (as 0.2.0's shared runs saved them) are read into the shuffled order
    save_file(first.objective.state_dict(), str(checkpoint / STATE_NAME))
    shared._load_from_checkpoint(str(checkpoint))
    everything = torch.arange(32)
    for name, bank in shared.objective.contrastive.items():
        saved = first.objective.contrastive[name]
        assert bank.row_of is not None and saved.row_of is None
        for a, b in zip(bank.bank_entries(everything), saved.bank_entries(everything)):
            assert torch.equal(a, b)
    (checkpoint / STATE_NAME).write_bytes(b"not a safetensors file")
    with pytest.raises(ValueError, match=rf"{re.escape(str(checkpoint / STATE_NAME))} is unreadable.*corrupted"):
        first._load_from_checkpoint(str(checkpoint))


# ------------------------------------------------------------------- issue 27: edges and messages that name the fix
def test_the_default_student_on_a_299_px_teacher_gets_bounded_patches():
    from transformers import ResNetConfig

    from cktf_hf.demo.students import MAX_PATCH_TOKENS, student_config

    teacher = ResNetConfig(num_labels=3)
    with pytest.warns(UserWarning, match="using 13-px patches"):
        config = student_config("cktf-vit-tiny:patch=7", teacher, 299)  # 299 = 13 × 23: not 1-px patches
    assert config.patch_size == 13 and (299 // 13) ** 2 <= MAX_PATCH_TOKENS
    with pytest.raises(ValueError, match=r"12,544 patches, more than the 1,024.*Patch sizes that work at 224 px: "
                                         r"\[7, 8, 14, 16, 28, 32, 56, 112\]"):
        student_config("cktf-vit-tiny:patch=2", teacher, 224)
    with pytest.raises(ValueError, match=r"257-px image: no patch size of 2 px or more.*near it that work: \[254"):
        student_config("cktf-vit-tiny:patch=7", teacher, 257)  # a prime size
    with pytest.raises(ValueError, match=r"Cannot read 'patch=²'.*in the digits 0-9"):
        student_config("cktf-vit-tiny:patch=²", teacher, 28)


def _class_folders(root: Path, classes=("cat", "dog"), count: int = 3) -> Path:
    for name in classes:
        (root / name).mkdir(parents=True)
        for i in range(count):
            Image.new("L", (8, 8), color=i * 40).save(root / name / f"{i}.png")
    return root


def test_image_folders_are_checked_before_training_naming_the_bad_file(tmp_path):
    from cktf_hf.demo import load_image_folders

    folder = _class_folders(tmp_path / "train")
    (folder / "dog" / "empty.png").write_bytes(b"")
    (folder / "cat" / "broken.jpg").write_bytes(b"not a jpeg at all")
    with pytest.raises(ValueError, match=r"--train_dir .*2 of 8 image files cannot be read: .*cat/broken.jpg \(.*"
                                         r"dog/empty.png \(an empty file \(0 bytes\)\).*Remove or replace them"):
        load_image_folders(str(folder))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match=r"--train_dir .*empty holds no image files: expected .*/<class_name>/<image>"):
        load_image_folders(str(tmp_path / "empty"))
    one = _class_folders(tmp_path / "one", classes=("cat",))
    with pytest.raises(ValueError, match=r"holds images of one class only \('cat'\).*its own folder"):
        load_image_folders(str(one))


def test_a_held_out_split_with_fewer_images_than_classes_names_the_fraction_that_works():
    from cktf_hf.demo.datasets import check_held_out_split

    split = datasets.Dataset.from_dict({"label": [0, 1, 2] * 12})
    with pytest.raises(ValueError, match=r"--train_val_split 0.01 holds out 1 of the 36 training images, fewer than "
                                         r"its 3 classes.*--train_val_split 0.084 or more"):
        check_held_out_split(split, 0.01)
    check_held_out_split(split, 0.084)  # 4 images: one per class fits


def test_a_missing_student_folder_is_named_as_a_folder(tmp_path):
    from transformers import ResNetConfig

    from cktf_hf.demo import load_or_build_student

    (tmp_path / "models").mkdir()
    for missing in ("./no_student", str(tmp_path / "no_student"), f"{tmp_path / 'models'}/student"):
        with pytest.raises(FileNotFoundError, match=r"--student .*no such folder.*Hub id"):
            load_or_build_student(missing, ResNetConfig(num_labels=3), 16)


def test_a_one_channel_teacher_is_not_told_to_convert_to_rgb():
    from transformers import ViTConfig, ViTForImageClassification

    from cktf_hf.model_io import probe

    gray = ViTForImageClassification(ViTConfig(image_size=16, patch_size=4, num_channels=1, hidden_size=16,
                                               num_hidden_layers=1, num_attention_heads=2, intermediate_size=32))
    with pytest.raises(ValueError) as raised:
        probe(gray, torch.zeros(2, 3, 16, 16), "teacher")
    assert "expects 1-channel images" in str(raised.value) and "image.convert('L')" in str(raised.value)
    assert "convert images to RGB" not in str(raised.value)


def test_an_unknown_label_column_on_a_builtin_dataset_is_refused():
    from cktf_hf.demo import load_image_dataset

    with pytest.raises(ValueError, match=r"--label_column_name 'fine_label' is not a column of the dataset; its "
                                         r"columns are \['image', 'label'\]"):
        load_image_dataset("digits", label_column="fine_label")
    assert set(load_image_dataset("digits", label_column="label")["train"].features) == {"image", "label"}


def test_memory_bank_advice_never_suggests_nce_k_0(tmp_path):
    one_class = tiny.digits("train", 200).filter(lambda row: row["labels"] == 0)
    with pytest.raises(ValueError) as raised:
        _trainer(tmp_path, tiny.vit(64, 4), dataset=one_class, negatives="memory_bank")
    assert "offers none" in str(raised.value) and "negatives='in_batch'" in str(raised.value)
    assert "at most 0" not in str(raised.value)
