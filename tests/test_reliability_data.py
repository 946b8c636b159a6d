"""Reliability of the data path (issue 12): no silently wrong inputs, no leaked paths or remote code, clear errors."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
import torch
from PIL import Image

import tiny
from cktf_hf import ContrastiveDistillationConfig, ContrastiveDistillationTrainer
from cktf_hf.config import CONFIG_NAME
from cktf_hf.teacher import load_teacher, teacher_fingerprint
from cktf_hf.transforms import to_rgb


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
    return ContrastiveDistillationTrainer(model=student or tiny.vit(32, 2, seed=1), args=args, teacher_model=teacher_model,
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
    assert trainer.teacher_fingerprint == {
        "source": "hub", "repo_id": "tester/fingerprinted-teacher", "commit": commit,
        "weights_sha256": {"model.safetensors": hashlib.sha256((folder / "model.safetensors").read_bytes()).hexdigest()},
    }
    args = ContrastiveDistillationConfig(output_dir=str(tmp_path / "out"))  # no revision: main, the later commit
    latest = teacher_fingerprint("tester/fingerprinted-teacher", load_teacher("tester/fingerprinted-teacher", args))
    assert latest["commit"] == later != commit
