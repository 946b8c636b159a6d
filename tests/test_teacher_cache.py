"""The opt-in teacher-output cache: bit-identical losses, fingerprint invalidation, refusal with augmentation."""

import os
import socket
import subprocess

import pytest
import torch

import tiny
from cktf_hf import ContrastiveDistillationConfig, ContrastiveDistillationTrainer
from cktf_hf.transforms import ImageClassificationTransform


def run(tmp_path, cache_dir, teacher=None, steps=6, **config):
    args = ContrastiveDistillationConfig(
        output_dir=str(tmp_path / "out"), max_steps=steps, per_device_train_batch_size=16, logging_steps=1,
        nce_k=16, report_to="none", save_strategy="no", disable_tqdm=True, teacher_cache_dir=cache_dir, seed=3,
        **config,
    )
    trainer = ContrastiveDistillationTrainer(model=tiny.vit(32, 2, seed=1), args=args,
                                             teacher_model=teacher or tiny.vit(64, 4),
                                             train_dataset=tiny.digits("train", 96))
    trainer.train()
    return trainer, [{k: v for k, v in e.items() if k not in ("grad_norm", "learning_rate", "epoch", "step")}
                     for e in trainer.state.log_history if "loss" in e]


@pytest.mark.parametrize("teacher_fn, config", [
    (lambda: tiny.vit(64, 4), {}),
    (lambda: tiny.vit(64, 4), {"negatives": "in_batch", "classic_objectives": "at=10,pkt=100", "preset": "cktf+kd"}),
    (lambda: tiny.resnet((16, 32, 64)), {}),  # BatchNorm buffers (0-dim num_batches_tracked) in the fingerprint
    (lambda: tiny.resnet((16, 32, 64)), {"preset": "cktf-recipe"}),  # spatial pairs cached as maps, never pooled
], ids=["vit-cktf", "vit-in-batch+kd+classic", "resnet-cktf", "resnet-recipe"])
def test_cached_losses_are_bit_identical(tmp_path, teacher_fn, config):
    _, uncached = run(tmp_path, None, teacher=teacher_fn(), **config)
    cached_trainer, cached = run(tmp_path, str(tmp_path / "cache"), teacher=teacher_fn(), **config)
    assert cached_trainer.teacher_cache is not None
    assert cached == uncached  # every logged component, exactly


def test_cache_skips_the_teacher_forward(tmp_path):
    trainer, _ = run(tmp_path, str(tmp_path / "cache"), steps=1)
    calls = []
    trainer.teacher.register_forward_hook(lambda *args: calls.append(1))
    trainer.args.max_steps = 2
    trainer.train()
    assert not calls


def test_changed_teacher_invalidates_the_cache(tmp_path):
    cache = tmp_path / "cache"
    run(tmp_path, str(cache), steps=1, teacher=tiny.vit(64, 4, seed=0))
    assert len(os.listdir(cache)) == 1
    _, other = run(tmp_path, str(cache), steps=2, teacher=tiny.vit(64, 4, seed=5))
    assert len(os.listdir(cache)) == 2  # a new fingerprint, a new cache
    _, reference = run(tmp_path, None, steps=2, teacher=tiny.vit(64, 4, seed=5))
    assert other == reference
    run(tmp_path, str(cache), steps=1, teacher=tiny.vit(64, 4, seed=5), layer_pairs="1:2")
    assert len(os.listdir(cache)) == 3  # another pairing


def test_two_runs_building_one_cache_at_once_both_succeed(tmp_path):
    """A second run (as another process would) builds the same cache while the first is half-way through writing it:
    each writes its own temporary file and renames it into place, so neither loses its file to the other."""
    cache, teacher, second = str(tmp_path / "cache"), tiny.vit(64, 4), []

    def temporary_files() -> list[str]:
        return [name for _, _, files in os.walk(cache) for name in files if name.endswith(".tmp")]

    def second_run_meanwhile(*_):
        if not second and temporary_files():  # the first run's file is being written
            second.append(1)
            with torch.enable_grad():  # the first run's cache writing runs the teacher under no_grad
                run(tmp_path / "second", cache, teacher=tiny.vit(64, 4), steps=1)

    teacher.register_forward_hook(second_run_meanwhile)
    run(tmp_path, cache, teacher=teacher, steps=1)
    assert second and temporary_files() == []
    _, cached = run(tmp_path / "third", cache, steps=2)  # the cache both wrote is whole and right
    assert cached == run(tmp_path / "uncached", None, steps=2)[1]


def test_random_augmentation_is_refused(tmp_path):
    from transformers import ViTImageProcessor
    from datasets import Dataset
    from PIL import Image
    import numpy as np

    images = [Image.fromarray((np.random.default_rng(i).random((16, 16)) * 255).astype("uint8")) for i in range(8)]
    data = Dataset.from_dict({"image": images, "label": [i % 2 for i in range(8)]})
    processor = ViTImageProcessor(size={"height": 16, "width": 16})
    augmented = data.with_transform(ImageClassificationTransform(processor, augment=True))
    args = ContrastiveDistillationConfig(output_dir=str(tmp_path), teacher_cache_dir=str(tmp_path / "c"),
                                         report_to="none", nce_k=4)
    with pytest.raises(ValueError, match="random augmentation"):
        ContrastiveDistillationTrainer(model=tiny.vit(32, 2, num_labels=2), args=args,
                                       teacher_model=tiny.vit(64, 4, num_labels=2), train_dataset=augmented)
    random_function = data.with_transform(lambda batch: {"pixel_values": [torch.rand(3, 16, 16) for _ in batch["label"]],
                                                         "labels": batch["label"]})
    with pytest.raises(ValueError, match="change from one read to the next"):
        ContrastiveDistillationTrainer(model=tiny.vit(32, 2, num_labels=2), args=args,
                                       teacher_model=tiny.vit(64, 4, num_labels=2), train_dataset=random_function)


def test_row_reader_returns_the_rows_of_every_chunk(tmp_path):
    import numpy as np
    import datasets
    from datasets.arrow_writer import ArrowWriter

    from cktf_hf.cache import RowReader, _features

    rng = np.random.default_rng(0)
    batches = [{"maps": rng.random((n, 3, 2, 2), dtype=np.float32), "pooled": rng.random((n, 5), dtype=np.float32)}
               for n in (4, 4, 3)]  # three chunks, the last shorter
    writer = ArrowWriter(features=_features(batches[0]), path=str(tmp_path / "t.arrow"))
    for batch in batches:
        writer.write_batch(batch)
    writer.finalize()
    writer.close()
    table = datasets.Dataset.from_file(str(tmp_path / "t.arrow")).with_format("torch")
    assert table.data.table.column("maps").num_chunks == 3
    index = np.array([10, 0, 5, 4, 5, 3, 8])
    rows, expected = RowReader(table)(index), table[index.tolist()]
    assert rows.keys() == {"maps", "pooled"}
    for name in rows:
        assert rows[name].dtype == torch.float32 and torch.equal(rows[name], expected[name])


def test_a_killed_writers_half_file_is_deleted_on_the_next_build(tmp_path):
    cache = tmp_path / "cache"
    run(tmp_path, str(cache), steps=1)
    (arrow,) = cache.glob("*/teacher_outputs.arrow")
    dead = subprocess.Popen(["true"])
    dead.wait()  # a pid that no longer exists: a writer killed mid-write
    host = socket.gethostname()
    stale = arrow.parent / f"{arrow.name}.{host}-{dead.pid}-0123abcd.tmp"
    live = arrow.parent / f"{arrow.name}.{host}-{os.getpid()}-0123abcd.tmp"  # a writer still at work
    remote = arrow.parent / f"{arrow.name}.another-host-{dead.pid}-0123abcd.tmp"  # not ours to judge
    for path in (stale, live, remote):
        path.write_bytes(b"half a file")
    arrow.unlink()
    trainer, _ = run(tmp_path, str(cache), steps=1)
    assert trainer.teacher_cache is not None and arrow.is_file()  # rebuilt
    assert not stale.exists() and live.exists() and remote.exists()
