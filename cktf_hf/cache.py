"""Opt-in teacher-output cache: the frozen teacher's paired features and logits per dataset index, on disk.

With deterministic preprocessing the teacher's outputs for a dataset index never change, so they are computed once
(one pass over the training set) and read back by index instead of running the teacher on every step. The cache
lives in ``<cache_dir>/<fingerprint>/``: a different teacher (weights or config), transform, pairing or dataset
gives another fingerprint, hence a fresh cache. A ``datasets.Dataset`` is identified by its own fingerprint; any other
dataset by a sha256 of every example's content (one pass over the data, no model), never by its type and length.
Features that the objective pools per sample are stored pooled;
those that it normalises across the batch first (CKTF's ``feature_batch_norm``) or hands to a classic map loss are
stored whole, so the cached path computes exactly what the uncached one does.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import uuid
from typing import Any, Callable, Sequence

import datasets
import numpy as np
import pyarrow as pa
import torch
from datasets.arrow_writer import ArrowWriter
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm
from transformers.utils import logging

from .data import DistillationCollator, IndexedDataset
from .model_io import ModelFeatures
from .objectives import PairFeatures
from .pairing import FeatureReader, LayerPair

CACHE_FORMAT = 1
FILE_NAME = "teacher_outputs.arrow"

logger = logging.get_logger(__name__)


def check_deterministic(dataset: Any) -> None:
    """Refuse datasets whose examples change from one read to the next (random augmentation)."""
    transform = _format_transform(dataset)
    if getattr(transform, "is_deterministic", True) is False:
        raise ValueError(_RANDOM_AUGMENTATION)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        first = dataset[0]["pixel_values"]
        torch.manual_seed(1)
        second = dataset[0]["pixel_values"]
    if not torch.equal(torch.as_tensor(first), torch.as_tensor(second)):
        raise ValueError(_RANDOM_AUGMENTATION)


_RANDOM_AUGMENTATION = (
    "teacher_cache_dir needs deterministic preprocessing, but the training images change from one read to the next "
    "(random augmentation): a cached teacher output would belong to another version of the image than the one the "
    "student sees. Turn augmentation off, or leave teacher_cache_dir unset so the teacher runs on every batch."
)


def _format_transform(dataset: Any) -> Any:
    dataset = getattr(dataset, "dataset", dataset)  # IndexedDataset
    return (getattr(dataset, "format", None) or {}).get("format_kwargs", {}).get("transform")


def fingerprint(teacher: nn.Module, dataset: Any, pairs: Sequence[LayerPair], description: dict[str, Any]) -> str:
    """A hash of the teacher's config and weights, the dataset and its transform, and the pairing."""
    digest = hashlib.sha256()
    digest.update(json.dumps({"format": CACHE_FORMAT, **description}, sort_keys=True, default=str).encode())
    add_model(digest, teacher)
    base = dataset.dataset if isinstance(dataset, IndexedDataset) else dataset
    transform = _format_transform(base)
    processor = getattr(transform, "image_processor", None)
    digest.update(json.dumps({
        "dataset": getattr(base, "_fingerprint", None) or content_digest(base),
        "length": len(base),
        "transform": repr(transform),
        "processor": processor.to_json_string() if hasattr(processor, "to_json_string") else None,
        "pairs": [(p.name, p.student_index, p.teacher_index) for p in pairs],
    }, sort_keys=True).encode())
    return digest.hexdigest()[:16]


def add_model(digest: Any, model: nn.Module) -> None:
    """Feed a model's config and weights to ``digest`` (a ``hashlib`` hash). The folder it was loaded from
    (``config._name_or_path``) is left out: the same teacher copied to another folder or clone is the same teacher."""
    config = model.config.to_dict()
    config.pop("_name_or_path", None)
    digest.update(json.dumps(config, sort_keys=True, default=str).encode())
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())


def model_digest(model: nn.Module) -> str:
    """A sha256 (16 hex digits) of a model's config and weights: what tells two teachers saved in one folder apart."""
    digest = hashlib.sha256()
    add_model(digest, model)
    return digest.hexdigest()[:16]


def cache_key(teacher: nn.Module, dataset: Any, reader: FeatureReader, **extra: Any) -> str:
    """The cache folder name for ``reader``'s teacher features of ``dataset`` (see :func:`fingerprint`); ``extra``
    adds what else changes the outputs (batch size, dtype)."""
    description = {"token_pooling": reader.pooling.token_pooling, "grid_size": reader.pooling.grid_size,
                   "batch_norm": reader.batch_norm, "maps": list(reader.map_pairs), **extra}
    if reader.pooling.stage_pooling != "global":  # only then: the reference's cache keys stay as they were
        description.update(stage_pooling=reader.pooling.stage_pooling, pool_window=reader.pooling.pool_window)
    return fingerprint(teacher, dataset, reader.pairs, description)


def content_digest(dataset: Any) -> str:
    """A sha256 of every example of ``dataset`` (tensors, arrays, images and plain values, in order): what tells two
    datasets apart that have no ``datasets`` fingerprint. One pass over the data, no model."""
    logger.info("Fingerprinting the teacher cache by the content of all %d examples of a %s (a datasets.Dataset "
                "needs no such pass).", len(dataset), type(dataset).__name__)
    digest = hashlib.sha256(type(dataset).__name__.encode())
    for i in range(len(dataset)):
        _update(digest, dataset[i])
    return digest.hexdigest()


def _update(digest: Any, value: Any) -> None:
    if isinstance(value, dict):
        for key in sorted(value, key=str):
            digest.update(f"<{key}>".encode())
            _update(digest, value[key])
    elif isinstance(value, (list, tuple)):
        digest.update(f"[{len(value)}".encode())
        for item in value:
            _update(digest, item)
    elif isinstance(value, (torch.Tensor, np.ndarray)):
        array = value.detach().cpu().contiguous() if isinstance(value, torch.Tensor) else np.ascontiguousarray(value)
        digest.update(f"{array.dtype}{tuple(array.shape)}".encode())
        digest.update(array.reshape(-1).view(torch.uint8).numpy().tobytes() if isinstance(array, torch.Tensor)
                      else array.tobytes())
    elif isinstance(value, Image.Image):
        digest.update(f"{value.mode}{value.size}".encode())
        digest.update(value.tobytes())
    else:
        digest.update(repr(value).encode())


class TeacherCache:
    """Cached teacher outputs, read back as :class:`~cktf_hf.objectives.PairFeatures` for a batch of indices.

    Pairs that ``reader`` batch-normalises or keeps as maps are stored whole (``raw_<pair>``) and read through
    ``reader`` at lookup; the others are stored pooled (``pooled_<pair>``).
    """

    def __init__(self, table: datasets.Dataset, reader: FeatureReader) -> None:
        self.table = table.with_format("torch")
        self.reader = reader
        self.raw_pairs = _raw_pairs(reader)
        self._raw_reader = reader.only(self.raw_pairs)

    @classmethod
    def build_or_load(
        cls,
        directory: str,
        key: str,
        run_teacher: Callable[[torch.Tensor], ModelFeatures],
        batches: Callable[[], Any],
        reader: FeatureReader,
    ) -> "TeacherCache":
        """Load ``<directory>/<key>``, or write it first by running ``run_teacher`` over ``batches()`` (batches with
        ``pixel_values`` and ``index``, in dataset order). The file is written under a name of this process's own and
        renamed into place when complete, so runs that build the same cache at once each finish with a whole file."""
        path = os.path.join(directory, key, FILE_NAME)
        if not os.path.isfile(path):
            os.makedirs(os.path.dirname(path), exist_ok=True)
            remove_stale_temporaries(path)
            temporary = f"{path}.{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp"
            try:
                _write(temporary, run_teacher, batches(), reader.raw(), _raw_pairs(reader))
                os.replace(temporary, path)
            finally:
                if os.path.exists(temporary):
                    os.remove(temporary)
        try:
            table = datasets.Dataset.from_file(path)
        except (pa.ArrowException, OSError) as error:
            raise ValueError(
                f"The teacher-output cache {path} is unreadable ({error}): it is corrupted or was cut short. Delete "
                f"the folder {os.path.dirname(path)} to rebuild it on the next run."
            ) from None
        return cls(table, reader)

    def lookup(self, index: torch.Tensor, device: torch.device) -> PairFeatures:
        rows = self._rows(index)
        hidden = {p.teacher_index: rows[f"raw_{p.name}"].to(device) for p in self.reader.pairs
                  if p.name in self.raw_pairs}
        out = ModelFeatures(rows["logits"].to(device), hidden, rows["final"].to(device))
        features = self._raw_reader.read("teacher", out)
        for pair in self.reader.pairs:
            if pair.name not in features.pooled and pair.name not in self.reader.map_only:
                features.pooled[pair.name] = rows[f"pooled_{pair.name}"].to(device)
        return features

    def _rows(self, index: torch.Tensor) -> dict[str, torch.Tensor]:
        """The cached rows of ``index``, every column as a float32 tensor, read straight from the memory-mapped file."""
        if not hasattr(self, "_reader"):
            self._reader = RowReader(self.table)
        return self._reader(index.cpu().numpy())


def remove_stale_temporaries(path: str) -> list[str]:
    """Delete the half-written ``<path>.<host>-<pid>-<id>.tmp`` files left by killed writers on this host (their
    process no longer exists); another host's, or a live writer's, are left alone. Returns the deleted paths."""
    folder, prefix = os.path.dirname(path), f"{os.path.basename(path)}.{socket.gethostname()}-"
    removed = []
    for name in os.listdir(folder):
        if not (name.startswith(prefix) and name.endswith(".tmp")):
            continue
        pid = name[len(prefix):].split("-", 1)[0]
        if pid.isdigit() and not _alive(int(pid)):
            os.remove(os.path.join(folder, name))
            removed.append(os.path.join(folder, name))
    if removed:
        logger.warning("Deleted %d half-written teacher-cache file(s) left by killed runs: %s", len(removed), removed)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, another user's
        pass
    return True


class RowReader:
    """Rows of a memory-mapped Arrow table of fixed-shape float32 columns, gathered by index without conversion.

    ``Dataset.__getitem__`` turns every nested list of a row into Python objects and back into tensors, which costs far
    more than the teacher forward it replaces; this reader keeps one zero-copy numpy view ``[rows, *shape]`` per
    column chunk and copies only the requested rows.
    """

    def __init__(self, table: datasets.Dataset) -> None:
        if table._indices is not None:
            raise ValueError("RowReader needs a table without an indices mapping (a plain Dataset.from_file).")
        arrow = table.data.table
        lengths = [len(chunk) for chunk in arrow.column(0).chunks]
        self.starts = np.cumsum([0] + lengths[:-1])
        self.columns = {name: [_chunk_view(chunk) for chunk in arrow.column(name).chunks]
                        for name in arrow.column_names}

    def __call__(self, index: np.ndarray) -> dict[str, torch.Tensor]:
        chunk = np.searchsorted(self.starts, index, side="right") - 1
        local = index - self.starts[chunk]
        rows = {}
        for name, views in self.columns.items():
            out = np.empty((len(index), *views[0].shape[1:]), dtype=np.float32)
            for i, (c, r) in enumerate(zip(chunk.tolist(), local.tolist())):
                out[i] = views[c][r]
            rows[name] = torch.from_numpy(out)
        return rows


def _chunk_view(chunk: pa.Array) -> np.ndarray:
    """A zero-copy ``[rows, *shape]`` float32 view of one chunk of a fixed-shape (nested) list column."""
    values, shape = getattr(chunk, "storage", chunk), []
    while pa.types.is_list(values.type) or pa.types.is_fixed_size_list(values.type):
        inner = values.flatten()
        shape.append(len(inner) // max(len(values), 1))  # this level's list size
        values = inner
    return values.to_numpy(zero_copy_only=True).reshape(len(chunk), *shape)


def _raw_pairs(reader: FeatureReader) -> list[str]:
    return [p.name for p in reader.pairs
            if not p.is_final and ((reader.batch_norm and not p.is_stem) or p.name in reader.map_pairs)]


def _write(path: str, run_teacher: Callable, batches: Any, reader: FeatureReader, raw_pairs: Sequence[str]) -> None:
    writer, expected = None, 0
    with torch.no_grad():
        for batch in batches:
            if not torch.equal(batch["index"], torch.arange(expected, expected + len(batch["index"]))):
                raise RuntimeError("The teacher cache must be written in dataset order.")
            expected += len(batch["index"])
            out = run_teacher(batch["pixel_values"])
            pooled = reader.read("teacher", out)
            columns = {"logits": out.logits, "final": out.final}
            for pair in reader.pairs:
                if pair.name in raw_pairs:
                    columns[f"raw_{pair.name}"] = out.hidden_states[pair.teacher_index]
                elif not pair.is_final:
                    columns[f"pooled_{pair.name}"] = pooled.pooled[pair.name]
            columns = {k: v.detach().float().cpu().numpy() for k, v in columns.items()}
            if writer is None:
                writer = ArrowWriter(features=_features(columns), path=path)
            writer.write_batch(columns)
    writer.finalize()
    writer.close()


def _features(columns: dict[str, Any]) -> datasets.Features:
    kinds = {2: datasets.Array2D, 3: datasets.Array3D, 4: datasets.Array4D}
    features = {}
    for name, array in columns.items():
        shape = array.shape[1:]
        features[name] = (datasets.Sequence(datasets.Value("float32"), length=shape[0]) if len(shape) == 1
                          else kinds[len(shape)](shape=shape, dtype="float32"))
    return datasets.Features(features)


def load_teacher_cache(trainer: Any) -> TeacherCache:
    """Build (main process first) or load the teacher-output cache of ``trainer``'s training set (a
    :class:`~cktf_hf.ContrastiveDistillationTrainer`, read duck-typed), batched as training batches it."""
    args, dataset = trainer.args, trainer.train_dataset
    teacher = trainer.accelerator.unwrap_model(trainer.teacher)
    key = cache_key(teacher, dataset, trainer.reader, batch_size=args.per_device_train_batch_size,
                    teacher_dtype=str(next(teacher.parameters()).dtype),
                    **trainer.pairing.teacher_input.fingerprint())  # nothing when the teacher takes the batch as is

    def batches():
        # The training batch size: kernels chosen by batch shape then compute what training would.
        loader = DataLoader(dataset, batch_size=args.per_device_train_batch_size, shuffle=False,
                            collate_fn=DistillationCollator())
        yield from tqdm(loader, desc="Caching teacher outputs", disable=args.disable_tqdm)

    with args.main_process_first(desc="teacher-output cache"):
        return TeacherCache.build_or_load(args.teacher_cache_dir, key, trainer._run_teacher, batches, trainer.reader)
