"""Samplers and small datasets behind the data modules: seeded epoch-wise shuffling that replays on resume
and shards cleanly under DDP, whole-batch tensor datasets, and a stratified split order.

Why a module of their own: these pieces decide *which* items a step sees and in what order, which the
stability measurements depend on (every step averages the same number of examples; a resumed or a
multi-GPU run sees the same sequence as a plain one). They know nothing about any particular data set, so
the data modules are built on them (:mod:`stability.data.loading`, :mod:`stability.data.digits`) and tests
can check them in isolation.

Shuffling is driven by :class:`EpochShuffleSampler`, whose order is a pure function of (data seed, global
``seed_everything`` seed, epoch). Lightning calls ``set_epoch`` on it every epoch (also when it resumes
from a checkpoint), so a resumed run replays the order an uninterrupted one would have seen. Under DDP,
Lightning wraps any sampler that is not a ``DistributedSampler`` in its ``DistributedSamplerWrapper``
(``lightning/pytorch/trainer/connectors/data_connector.py``), which materialises our sampler's output on
every rank, permutes it with the global seed and hands rank ``r`` the entries ``r, r + W, r + 2W, ...``;
because our order depends on seeds only, never on a process-local RNG, every rank computes the same list
and the shards are disjoint. (Entries are whole batches for digits, single items otherwise.) The wrapper
forwards ``set_epoch`` to the wrapped sampler (``lightning/fabric/utilities/distributed.py``). A training
epoch uses a multiple of ``batch_size * world_size`` items (:func:`train_epoch_size`), so the wrapper
never pads a rank's shard with another rank's items.
"""

import math
import os
from collections.abc import Callable, Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler


def _global_seed() -> int:
    """The seed given to Lightning's ``seed_everything`` (it exports it as PL_GLOBAL_SEED; spawned DDP
    ranks inherit it), or 0. Lightning's own DistributedSampler reads the same variable."""
    return int(os.environ.get("PL_GLOBAL_SEED", 0))


class EpochShuffleSampler(Sampler[int]):
    """Indices ``0..num_items-1``, shuffled by a generator seeded from (seed, global seed, epoch).

    Unlike ``RandomSampler`` (which draws from the process's global RNG, so the order depends on how many
    random numbers the model's initialisation consumed), the order here depends only on the seeds and the
    epoch; that makes it reproducible, resumable, and identical on every DDP rank. ``set_epoch`` picks the
    epoch; without it, each new iteration moves on to the next epoch's order.

    Args:
        num_items: Length of the dataset.
        shuffle: False gives ``0..num_items-1`` in order (validation and test).
        seed: Data seed; combined with the global ``seed_everything`` seed read at construction.
        epoch_size: Yield only the first ``epoch_size`` indices of each epoch's order (see
            :func:`train_epoch_size`); None yields all of them.
    """

    def __init__(self, num_items: int, shuffle: bool, seed: int, epoch_size: int | None = None) -> None:
        self.num_items, self.shuffle, self.seed = num_items, shuffle, seed
        self.epoch_size = num_items if epoch_size is None else min(epoch_size, num_items)
        self.global_seed = _global_seed()
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def order(self, epoch: int) -> torch.Tensor:
        """The indices of ``epoch``, an int64 tensor of length ``epoch_size``."""
        if not self.shuffle:
            return torch.arange(self.epoch_size)
        # SeedSequence mixes the three numbers, so seeds 0 and 1 (or epochs 3 and 4) give unrelated orders.
        entropy = [self.seed % 2**32, self.global_seed % 2**32, epoch]
        state = np.random.SeedSequence(entropy).generate_state(1, dtype=np.uint32)
        generator = torch.Generator().manual_seed(int(state[0]))
        return torch.randperm(self.num_items, generator=generator)[: self.epoch_size]

    def next_order(self) -> torch.Tensor:
        """This epoch's order, then move on to the next epoch (what one iteration consumes)."""
        order = self.order(self.epoch)
        self.epoch += 1  # overridden by the next set_epoch; moves on when nobody calls it
        return order

    def __iter__(self) -> Iterator[int]:
        # A generator: the order is drawn at the first index, not when iter() is called. On resume Lightning
        # creates the iterator before it calls set_epoch, and the resumed epoch must get its own order.
        yield from self.next_order().tolist()

    def __len__(self) -> int:
        return self.epoch_size


def train_epoch_size(num_items: int, batch_size: int, world_size: int) -> int:
    """How many of the shuffled training items one epoch uses: the largest multiple of
    ``batch_size * world_size`` that fits (the rest, a different random remainder each epoch, waits for
    the next epoch).

    Two reasons. Every step then averages the same number of examples, so the gradient-noise scale, and
    with it the stability measurements, is the same at every step (no ragged last batch). And under DDP
    each rank gets the same number of full batches without Lightning's DistributedSampler having to pad
    with repeated items, so the ranks' shards are disjoint. A split smaller than that is used whole.
    """
    usable = num_items - num_items % (batch_size * world_size)
    return usable if usable > 0 else num_items


class EpochBatchSampler(Sampler[torch.Tensor]):
    """Consecutive ``batch_size`` slices of an :class:`EpochShuffleSampler`'s order (the last one may be
    shorter), for a DataLoader whose dataset returns whole batches (:class:`TensorBatchDataset`).

    Batches are int64 tensors, not lists: gathering rows of a tensor with an index tensor takes a few
    microseconds, while a Python list is converted element by element (and, on busy cores, through
    torch's thread pool: milliseconds). ``set_epoch`` is forwarded to the item sampler (Lightning calls it
    on the DataLoader's ``sampler``, which this object is).
    """

    def __init__(self, sampler: EpochShuffleSampler, batch_size: int) -> None:
        self.sampler, self.batch_size = sampler, batch_size

    def set_epoch(self, epoch: int) -> None:
        self.sampler.set_epoch(epoch)

    def __iter__(self) -> Iterator[torch.Tensor]:
        # Lazy for the same reason as EpochShuffleSampler.__iter__ (set_epoch may come after iter()).
        yield from self.sampler.next_order().split(self.batch_size)

    def __len__(self) -> int:
        return math.ceil(len(self.sampler) / self.batch_size)


class TensorBatchDataset(Dataset):
    """Images and labels held as two tensors; indexing with a tensor of indices returns a whole batch.

    Used with an :class:`EpochBatchSampler` as the DataLoader's ``sampler`` and ``batch_size=None``, one
    fetch (a tensor of indices) is one tensor gather: no per-item ``__getitem__`` calls, no collate, no
    worker processes.
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor) -> None:
        assert len(images) == len(labels)
        self.images, self.labels = images, labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int | torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.images[index], self.labels[index]


class TransformedSubset(Dataset):
    """The items ``indices`` of ``base`` with ``transform`` applied to the image, so that one decoded copy
    of a data set serves both an augmented train split and a plain validation split."""

    def __init__(self, base: Dataset, indices: Sequence[int], transform: Callable | None) -> None:
        self.base, self.indices, self.transform = base, list(indices), transform

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        image, label = self.base[self.indices[index]]
        return (self.transform(image) if self.transform is not None else image), label


def stratified_order(labels: np.ndarray, seed: int) -> np.ndarray:
    """A seeded permutation of ``range(len(labels))`` in which every class is spread evenly, so that any
    contiguous slice of it (a test or validation split of any size) holds each class in proportion.

    Each item gets the quantile ``(rank within its class + 1/2) / class size`` in a random order; sorting by
    it interleaves the classes. Unlike scikit-learn's stratified splitter it never refuses tiny classes.
    """
    perm = np.random.default_rng(seed).permutation(len(labels))
    permuted = labels[perm]
    quantile = np.empty(len(labels))
    for c in np.unique(permuted):
        members = permuted == c
        quantile[members] = (np.arange(members.sum()) + 0.5) / members.sum()
    return perm[np.argsort(quantile, kind="stable")]
