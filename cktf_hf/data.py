"""The data path of the memory bank: stable dataset indices and K other-class negatives per sample."""

from __future__ import annotations

import hashlib
import itertools
from typing import TYPE_CHECKING, Any, Optional, Sequence

import torch
from torch.utils.data import Dataset
from transformers.utils import logging

from .objectives.contrastive import bank_row_order

if TYPE_CHECKING:
    from .objectives import ObjectiveSettings

logger = logging.get_logger(__name__)


class IndexedDataset(Dataset):
    """Wraps a map-style dataset so each example also carries its position: ``{**dataset[i], "index": i}``."""

    def __init__(self, dataset: Any) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return {**self.dataset[i], "index": i}

    def __getitems__(self, indices: list[int]) -> list[dict[str, Any]]:
        """A batch of examples in one call of the wrapped dataset's ``__getitems__`` where it has one (a
        ``datasets.Dataset`` then runs its transform once per batch, not once per example), as the DataLoader asks."""
        getitems = getattr(self.dataset, "__getitems__", None)
        examples = getitems(indices) if getitems else [self.dataset[i] for i in indices]
        return [{**example, "index": i} for example, i in zip(examples, indices)]


def dataset_labels(dataset: Any, label_column: Optional[str] = None) -> Optional[list[int]]:
    """The label of every example, read from the Arrow column when ``dataset`` is a ``datasets.Dataset`` (no image
    decoding, no transform), else None. ``label_column`` defaults to "label" or "labels", whichever exists."""
    dataset = getattr(dataset, "dataset", dataset)  # IndexedDataset
    columns = getattr(dataset, "column_names", None)
    if columns is None:
        return None
    names = [label_column] if label_column else ["label", "labels"]
    for name in names:
        if name in columns:
            return list(dataset.with_format(None)[name])
    return None


class NegativeSampler:
    """Draws K negative dataset indices per sample: from other classes when labels are known (CRD's "exact" mode),
    else uniformly over the dataset. With ``shared=True`` it draws K indices once for the whole batch instead and,
    when labels are known, a ``[B, K]`` mask of the ones of another class than each anchor.

    Per-sample negatives are drawn with replacement, as i.i.d. noise samples (the NCE assumption); the reference draws
    without replacement when the pool allows, which differs only by duplicates (≈ K/(2·pool) of the draws). Shared
    negatives are K consecutive entries (wrapping round) of the fixed shuffle :func:`bank_row_order`, from a start
    drawn uniformly: every index is in a batch's negatives with probability K/N, as with uniform draws, and a bank
    that keeps its rows in that shuffle reads them as one slice. The draws of a batch are seeded by ``seed`` and the
    batch's indices, so they need no RNG state: a resumed run, which sees the same batches, draws the same negatives
    whatever the data loader prefetched before the interruption.
    """

    def __init__(
        self, num_samples: int, nce_k: int, labels: Optional[Sequence[int]] = None, seed: int = 0,
        shared: bool = False,
    ) -> None:
        self.num_samples, self.nce_k, self.seed, self.shared = num_samples, nce_k, seed, shared
        self.window_order = bank_row_order(num_samples) if shared else None
        if labels is None:
            self.order = None
            return
        labels_t = torch.as_tensor(list(labels), dtype=torch.long)
        if labels_t.numel() != num_samples:
            raise ValueError(f"Got {labels_t.numel()} labels for a dataset of {num_samples} examples.")
        self.order = torch.argsort(labels_t, stable=True)  # dataset indices grouped by class
        counts = torch.bincount(labels_t)
        self.class_start = torch.cumsum(counts, 0) - counts
        self.class_count = counts
        self.labels = labels_t
        if (num_samples - counts.max()) < 1:
            raise ValueError("Other-class negatives need at least two classes in the training set.")

    def _generator(self, index: torch.Tensor) -> torch.Generator:
        digest = hashlib.blake2b(index.numpy().tobytes(), digest_size=8, key=str(self.seed).encode()).digest()
        return torch.Generator().manual_seed(int.from_bytes(digest, "little") >> 1)

    def sample_shared(self, index: torch.Tensor) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        """``(negatives [K], mask [B, K] or None)``: K consecutive entries of :func:`bank_row_order` from a uniformly
        drawn start, once for the batch, and (labels known) ``mask[b, k]`` True where negative k is of another class
        than anchor b."""
        start = torch.randint(self.num_samples, (1,), generator=self._generator(index))
        negatives = self.window_order[torch.arange(self.nce_k).add_(start).remainder_(self.num_samples)]
        if self.order is None:
            return negatives, None
        return negatives, self.labels.index_select(0, negatives)[None, :] != self.labels.index_select(0, index)[:, None]

    def __call__(self, index: torch.Tensor) -> torch.Tensor:
        """``contrast_idx`` of shape ``[B, K+1]``: column 0 is ``index`` itself, columns 1..K the negatives."""
        batch_size = index.shape[0]
        uniform = torch.rand(batch_size, self.nce_k, generator=self._generator(index))
        if self.order is None:
            negatives = (uniform * self.num_samples).long().clamp_(max=self.num_samples - 1)
        else:
            label = self.labels[index]
            start, count = self.class_start[label, None], self.class_count[label, None]
            # A position in the class-sorted order with the anchor's own class segment cut out.
            position = (uniform * (self.num_samples - count)).long().clamp_(max=self.num_samples - count - 1)
            position = position + (position >= start).long() * count
            negatives = self.order[position]
        return torch.cat([index[:, None], negatives], dim=1)


class DistillationCollator:
    """Stacks ``pixel_values`` and ``labels`` and, for the memory bank, adds ``index`` and ``contrast_idx``.

    Examples must carry ``pixel_values`` (a ``[3, H, W]`` tensor) and optionally ``labels`` (or ``label``); the
    ``index`` of examples from :class:`IndexedDataset` is kept, with negatives when a ``negative_sampler`` is given:
    ``contrast_idx`` ``[B, K+1]`` per sample, or (shared sampler) ``contrast_idx`` ``[K]`` and ``contrast_mask``
    ``[B, K]`` when labels are known.
    """

    def __init__(self, negative_sampler: Optional[NegativeSampler] = None) -> None:
        self.negative_sampler = negative_sampler

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        first = examples[0]
        if "pixel_values" not in first:
            raise ValueError(
                f"Examples need a 'pixel_values' tensor, got keys {sorted(first)}; apply the image processor first "
                "(e.g. dataset.with_transform(cktf_hf.transforms.ImageClassificationTransform(processor)))."
            )
        batch = {"pixel_values": torch.stack([torch.as_tensor(e["pixel_values"]) for e in examples])}
        label_key = "labels" if "labels" in first else "label" if "label" in first else None
        if label_key is not None:
            batch["labels"] = torch.tensor([int(e[label_key]) for e in examples], dtype=torch.long)
        if "index" in first:  # training batches (IndexedDataset); evaluation has no index
            batch["index"] = torch.tensor([int(e["index"]) for e in examples], dtype=torch.long)
            sampler = self.negative_sampler
            if sampler is not None and sampler.shared:
                batch["contrast_idx"], mask = sampler.sample_shared(batch["index"])
                if mask is not None:
                    batch["contrast_mask"] = mask
            elif sampler is not None:
                batch["contrast_idx"] = sampler(batch["index"])
        return batch


def prepare_training_data(
    dataset: Any,
    collator: Optional[Any],
    settings: "ObjectiveSettings",
    needs_index: bool,
    label_column: Optional[str] = None,
    seed: int = 0,
) -> tuple[Any, Any, Optional[int]]:
    """The training data path: dataset indices where the memory bank (``settings.uses_memory_bank``) or the teacher
    cache (``needs_index``) reads them, ``settings.nce_k`` other-class negatives for the bank (one set per batch with
    ``settings.negative_sampling="shared"``), and the default collator.

    Returns ``(dataset, collator, bank size or None)``.
    """
    uses_bank = settings.uses_memory_bank
    if (uses_bank or needs_index) and not (hasattr(dataset, "__getitem__") and hasattr(dataset, "__len__")):
        raise ValueError(
            "negatives='memory_bank' and teacher_cache_dir need a map-style train_dataset with stable indices (not an "
            "iterable or streaming dataset); use negatives='in_batch' without a teacher cache for those."
        )
    if (uses_bank or needs_index) and not isinstance(dataset, IndexedDataset):
        dataset = IndexedDataset(dataset)
    if not uses_bank:
        return dataset, collator or DistillationCollator(), None
    labels = dataset_labels(dataset, label_column)
    if labels is None:
        logger.warning("No label column found: memory-bank negatives are drawn uniformly, not from other classes.")
    sampler = NegativeSampler(len(dataset), settings.nce_k, labels, seed=seed,
                              shared=settings.negative_sampling == "shared")
    return dataset, collator or DistillationCollator(sampler), len(dataset)


def first_examples(dataset: Any, count: int) -> list[Any]:
    """Up to ``count`` examples from the start of a map-style or an iterable dataset."""
    if hasattr(dataset, "__getitem__") and hasattr(dataset, "__len__"):
        return [dataset[i] for i in range(min(count, len(dataset)))]
    return list(itertools.islice(iter(dataset), count))
