"""Label spaces (issue 26, items 2 and 6) and the teacher check before training (issues 26 and 27): class names matched
by name, spelling and label_map, subsets and permutations published with the right id2label, no teacher scored on
misaligned labels, every suggested fix tested, and a teacher near chance stopped before training."""

from __future__ import annotations

import io
import json
import logging
import re
import shlex

import datasets
import numpy as np
import pytest
import torch

import tiny
from cktf_hf import ContrastiveDistillationConfig, ContrastiveDistillationTrainer
from cktf_hf.demo.datasets import FASHION_MNIST_CLASSES
from cktf_hf.validation import TeacherCheckFailed

FOLDER_SPELLING = ["T-shirt_top", *FASHION_MNIST_CLASSES[1:]]  # a folder name cannot hold "/"


@pytest.fixture
def log():
    """What cktf_hf logs at INFO and above during the test."""
    logger, stream = logging.getLogger("cktf_hf.validation"), io.StringIO()
    handler, level = logging.StreamHandler(stream), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    yield stream
    logger.removeHandler(handler)
    logger.setLevel(level)


def _fitted_teacher(names: list[str]) -> torch.nn.Module:
    """The tiny ViT with a least-squares classifier on its features of the digits' training split (~73 % on the
    test split), its classes named ``names``."""
    teacher = tiny.vit(64, 4).eval()
    train = tiny.digits("train")[:]
    captured = {}
    handle = teacher.classifier.register_forward_pre_hook(lambda module, args: captured.update(x=args[0]))
    with torch.no_grad():
        teacher(pixel_values=train["pixel_values"])
    handle.remove()
    features = torch.cat([captured["x"], torch.ones(len(captured["x"]), 1)], 1)
    targets = torch.nn.functional.one_hot(train["labels"], 10).float()
    solution = torch.linalg.solve(features.T @ features + 1e-2 * torch.eye(features.shape[1]), features.T @ targets)
    with torch.no_grad():
        teacher.classifier.weight.copy_(solution[:-1].T)
        teacher.classifier.bias.copy_(solution[-1])
    teacher.config.id2label = dict(enumerate(names))
    teacher.config.label2id = {name: i for i, name in enumerate(names)}
    return teacher


@pytest.fixture(scope="module")
def fashion_teacher_state():
    return _fitted_teacher(FASHION_MNIST_CLASSES).state_dict()


def _teacher(state, names=FASHION_MNIST_CLASSES):
    teacher = tiny.vit(64, 4)
    teacher.load_state_dict(state)
    teacher.config.id2label = dict(enumerate(names))
    teacher.config.label2id = {name: i for i, name in enumerate(names)}
    return teacher


def _named(dataset, names, keep=None):
    """``dataset`` with its labels as a ``ClassLabel`` of ``names``; ``keep`` maps old labels to new ones (others
    dropped)."""
    data = dataset.with_format(None)
    if keep is not None:
        data = data.filter(lambda e: e["labels"] in keep).map(lambda e: {"labels": keep[e["labels"]]})
    return data.cast_column("labels", datasets.ClassLabel(names=names)).with_format("torch")


def _student(names=FASHION_MNIST_CLASSES):
    """A student built with the teacher's label space, as the example script builds it from the teacher's config."""
    student = tiny.vit(32, 2, seed=1)
    student.config.id2label = dict(enumerate(names))
    student.config.label2id = {name: i for i, name in enumerate(names)}
    return student


def _trainer(tmp_path, teacher, train, evaluation=None, student=None, **config):
    args = ContrastiveDistillationConfig(**{**dict(
        output_dir=str(tmp_path / "student"), max_steps=2, per_device_train_batch_size=16,
        per_device_eval_batch_size=64, report_to="none", save_strategy="no", disable_tqdm=True, preset="cktf+kd",
        negatives="in_batch", card_latency=False), **config})
    return ContrastiveDistillationTrainer(model=student or _student(), args=args, teacher_model=teacher,
                                          train_dataset=train, eval_dataset=evaluation)


def _reference_predictions(state, unknown: tuple[int, ...] = ()) -> tuple[np.ndarray, np.ndarray]:
    """The teacher's predictions on the digits' test split (never one of the ``unknown`` classes) and the labels."""
    teacher = _teacher(state).eval()
    test = tiny.digits("test")[:]
    with torch.no_grad():
        logits = teacher(pixel_values=test["pixel_values"]).logits
    logits[:, list(unknown)] = -torch.inf
    return logits.argmax(-1).numpy(), test["labels"].numpy()


# ------------------------------------------------------------------------------------------ spelling, label_map
@pytest.mark.parametrize("spelling, label_map", [
    (FOLDER_SPELLING, None),                                             # matched ignoring punctuation
    (["Tee", *FASHION_MNIST_CLASSES[1:]], "Tee=T-shirt/top"),            # matched by label_map
    (["Tee", *FASHION_MNIST_CLASSES[1:]], {"Tee": "T-shirt/top"}),       # the same from Python
])
def test_respelled_classes_train_with_the_teacher_at_its_real_accuracy(tmp_path, fashion_teacher_state, spelling,
                                                                        label_map, log):
    predictions, labels = _reference_predictions(fashion_teacher_state)
    real = float((predictions == labels).mean())
    assert real > 0.6
    train, test = _named(tiny.digits("train", 64), spelling), _named(tiny.digits("test"), spelling)
    trainer = _trainer(tmp_path, _teacher(fashion_teacher_state), train, test, label_map=label_map)
    how = "ignoring case, spacing and punctuation" if label_map is None else "by label_map"
    assert trainer.label_alignment.summary in log.getvalue() and how in trainer.label_alignment.summary
    assert f"{spelling[0]!r} = 'T-shirt/top'" in trainer.label_alignment.summary
    assert trainer.teacher_check_accuracy == pytest.approx(real, abs=0.02)   # a sample of up to 256 images
    assert trainer.evaluate_teacher()["teacher_accuracy"] == pytest.approx(real)
    trainer.train()
    trainer.save_model()
    config = json.loads((tmp_path / "student" / "config.json").read_text())
    assert config["id2label"] == {str(i): name for i, name in enumerate(spelling)}  # what the log said


def test_every_fix_the_refusal_suggests_works(tmp_path, fashion_teacher_state):
    spelling = ["Tshirt", *FASHION_MNIST_CLASSES[1:8], "Bags", "Ankle boot"]
    train, test = _named(tiny.digits("train", 64), spelling), _named(tiny.digits("test"), spelling)
    with pytest.raises(ValueError) as refusal:
        _trainer(tmp_path, _teacher(fashion_teacher_state), train, test)
    message = str(refusal.value)
    assert "the dataset's classes 'Tshirt', 'Bags' are not among the teacher's" in message
    assert "the teacher's 'T-shirt/top', 'Bag' are not among the dataset's" in message  # sets, not positions
    suggested = shlex.split(re.search(r"--label_map ('[^']*')", message).group(1))[0]
    assert suggested == "Tshirt=T-shirt/top,Bags=Bag"
    mapped = _trainer(tmp_path / "mapped", _teacher(fashion_teacher_state), train, test, label_map=suggested)
    predictions, labels = _reference_predictions(fashion_teacher_state)
    assert mapped.evaluate_teacher()["teacher_accuracy"] == pytest.approx(float((predictions == labels).mean()))
    mapped.train()

    assert "allow_label_mismatch=True" in message
    allowed = _trainer(tmp_path / "allowed", _teacher(fashion_teacher_state), train, test, allow_label_mismatch=True)
    assert allowed.label_alignment.unknown_to_teacher == ["Tshirt", "Bags"]
    # the 8 classes that match stay aligned; the teacher never predicts the 2 it does not know (their images count
    # as its misses)
    predictions, labels = _reference_predictions(fashion_teacher_state, unknown=(0, 8))
    assert allowed.evaluate_teacher()["teacher_accuracy"] == pytest.approx(float((predictions == labels).mean()))
    allowed.train()
    allowed.save_model()
    config = json.loads((tmp_path / "allowed" / "student" / "config.json").read_text())
    assert config["id2label"] == {str(i): name for i, name in enumerate(spelling)}


def test_a_label_map_naming_unknown_classes_is_refused_with_the_closest_name(tmp_path, fashion_teacher_state):
    train = _named(tiny.digits("train", 32), FOLDER_SPELLING)
    with pytest.raises(ValueError, match=r"'T-shirt_to' is not a dataset class \(did you mean 'T-shirt_top'\?\)"):
        _trainer(tmp_path, _teacher(fashion_teacher_state), train, label_map="T-shirt_to=T-shirt/top")
    with pytest.raises(ValueError, match=r"'Bagg' is not a teacher class \(did you mean 'Bag'\?\)"):
        _trainer(tmp_path, _teacher(fashion_teacher_state), train, label_map="Bag=Bagg")
    with pytest.raises(ValueError, match=r"Cannot read label_map entry 'Bag'"):
        ContrastiveDistillationConfig(output_dir=str(tmp_path), label_map="Bag")


# ------------------------------------------------------------------------------------------- numbered names
def test_digit_names_against_a_named_teacher_are_refused(tmp_path, fashion_teacher_state):
    digits = _named(tiny.digits("train", 32), [str(i) for i in range(10)])
    with pytest.raises(ValueError, match=r"the dataset's classes '0', '1'.* are not among the teacher's, and the "
                                         r"teacher's 'T-shirt/top', 'Trouser'"):
        _trainer(tmp_path, _teacher(fashion_teacher_state), digits)


def test_numbered_names_on_both_sides_are_taken_class_for_class(tmp_path, fashion_teacher_state, log):
    digits = _named(tiny.digits("train", 32), [str(i) for i in range(10)])
    unnamed = [f"LABEL_{i}" for i in range(10)]
    trainer = _trainer(tmp_path, _teacher(fashion_teacher_state, unnamed), digits, student=_student(unnamed))
    assert "are numbered" in log.getvalue() and "class i is taken to be the teacher's class i" in log.getvalue()
    assert trainer.teacher.config.id2label == dict(enumerate(unnamed))  # untouched


def test_named_classes_against_an_unnamed_teacher_need_the_suggested_label_map(tmp_path, fashion_teacher_state):
    unnamed = [f"LABEL_{i}" for i in range(10)]
    train = _named(tiny.digits("train", 32), FASHION_MNIST_CLASSES)
    with pytest.raises(ValueError, match=r"if the dataset's class i is the teacher's class i") as refusal:
        _trainer(tmp_path, _teacher(fashion_teacher_state, unnamed), train, student=_student(unnamed))
    suggested = shlex.split(re.search(r"--label_map ('[^']*')", str(refusal.value)).group(1))[0]
    assert suggested.startswith("T-shirt/top=LABEL_0,Trouser=LABEL_1,")
    trainer = _trainer(tmp_path, _teacher(fashion_teacher_state, unnamed), train, student=_student(unnamed),
                       label_map=suggested)
    assert trainer.model.config.id2label == dict(enumerate(FASHION_MNIST_CLASSES))
    trainer.train()


# ------------------------------------------------------------------------------------------------- subsets
def test_a_subset_of_the_teachers_classes_publishes_its_own_names(tmp_path, fashion_teacher_state):
    keep = {8: 0, 1: 1}  # digit 8 images are "Bag", digit 1 images "Trouser"
    train = _named(tiny.digits("train", 300), ["Bag", "Trouser"], keep)
    test = _named(tiny.digits("test"), ["Bag", "Trouser"], keep)
    student = _student()
    rows = student.classifier.weight.detach()[[8, 1]].clone()
    trainer = _trainer(tmp_path, _teacher(fashion_teacher_state), train, test, student=student)
    assert "the teacher's logits are restricted to the dataset's classes" in trainer.label_alignment.summary
    assert torch.equal(trainer.model.classifier.weight.detach(), rows)  # its head keeps the rows of Bag and Trouser
    teacher = _teacher(fashion_teacher_state).eval()
    with torch.no_grad():
        logits = teacher(pixel_values=test[:]["pixel_values"]).logits[:, [8, 1]]
    restricted = (logits.argmax(-1) == test[:]["labels"]).float().mean().item()
    assert trainer.evaluate_teacher()["teacher_accuracy"] == pytest.approx(restricted)
    trainer.train()
    trainer.save_model()
    config = json.loads((tmp_path / "student" / "config.json").read_text())
    assert config["id2label"] == {"0": "Bag", "1": "Trouser"} and config["label2id"] == {"Bag": 0, "Trouser": 1}


# --------------------------------------------------------------------------------------- the eval set's order
def test_the_eval_order_fix_the_refusal_suggests_works(tmp_path, fashion_teacher_state):
    train = _named(tiny.digits("train", 32), FASHION_MNIST_CLASSES)
    reordered = _named(tiny.digits("test"), FASHION_MNIST_CLASSES[::-1], {d: 9 - d for d in range(10)})
    with pytest.raises(ValueError, match=r"align_labels_with_mapping\(label2id, 'labels'\)"):
        _trainer(tmp_path, _teacher(fashion_teacher_state), train, reordered)
    label2id = {name: i for i, name in enumerate(FASHION_MNIST_CLASSES)}
    aligned = reordered.with_format(None).align_labels_with_mapping(label2id, "labels").with_format("torch")
    trainer = _trainer(tmp_path, _teacher(fashion_teacher_state), train, aligned)
    predictions, labels = _reference_predictions(fashion_teacher_state)
    assert trainer.evaluate_teacher()["teacher_accuracy"] == pytest.approx(float((predictions == labels).mean()))


# ------------------------------------------------------------------------------------------- teacher check
def _flip_bytes(path, count: int, seed: int = 0) -> None:
    data = bytearray(path.read_bytes())
    header = 8 + int.from_bytes(data[:8], "little")
    rng = np.random.default_rng(seed)
    for i in rng.choice(np.arange(header, len(data)), size=count, replace=False):
        data[i] ^= 0xFF
    path.write_bytes(bytes(data))


def test_a_damaged_teacher_stops_the_run_before_training(tmp_path, fashion_teacher_state):
    folder = tmp_path / "teacher"
    _teacher(fashion_teacher_state).save_pretrained(folder)
    train, test = _named(tiny.digits("train", 32), FASHION_MNIST_CLASSES), _named(tiny.digits("test"), FASHION_MNIST_CLASSES)
    good = _trainer(tmp_path / "good", str(folder), train, test)
    assert good.teacher_check_accuracy > 0.6
    _flip_bytes(folder / "model.safetensors", 20_000)
    with pytest.raises(TeacherCheckFailed, match=r"The teacher scores .* on 256 evaluation images, no better than "
                                                 r"always guessing .*label_map.*preprocessed.*damaged.*"
                                                 r"teacher_check=False \(--teacher_check false\)"):
        _trainer(tmp_path / "bad", str(folder), train, test)
    going_on = _trainer(tmp_path / "bad", str(folder), train, test, teacher_check=False)  # the way through
    assert going_on.teacher_check_accuracy is None
    assert _trainer(tmp_path / "no-eval", str(folder), train).teacher_check_accuracy is None  # no evaluation data


def test_an_untrained_teacher_is_near_chance(tmp_path):
    train, test = tiny.digits("train", 32), tiny.digits("test")
    with pytest.raises(TeacherCheckFailed):
        _trainer(tmp_path, tiny.vit(64, 4), train, test, student=tiny.vit(32, 2))
