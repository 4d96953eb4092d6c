"""What every data module shares: the one-line config checks, held-out split sizes, the per-item loader and
the train/val loaders of the on-disk data sets.

Which items a step sees, and in what order, is decided by the samplers and datasets of
:mod:`stability.data.samplers` (seeded epoch-wise shuffling that replays on resume and shards cleanly under
DDP); this module wires them to a data set.
"""

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset

from stability.data.samplers import EpochBatchSampler, EpochShuffleSampler, train_epoch_size
from stability.errors import ConfigError


# -- small checks ----------------------------------------------------------------------------------------
def require(ok: bool, key: str, value: object, valid: str) -> None:
    """Raise the one-line ConfigError the CLI prints: key, value given, what is valid."""
    if not ok:
        raise ConfigError(f"data.{key}: {value!r} is invalid; {valid}")


def check_common(batch_size: int, seed: int, num_workers: int = 0) -> None:
    require(isinstance(batch_size, int) and batch_size >= 1, "batch_size", batch_size,
            "expected an integer >= 1")
    require(isinstance(seed, int) and seed >= 0, "seed", seed, "expected an integer >= 0")
    require(isinstance(num_workers, int) and num_workers >= 0, "num_workers", num_workers,
            "expected an integer >= 0 (0 loads in the main process)")


def check_fraction(key: str, value: float) -> None:
    require(0.0 < value < 1.0, key, value, "expected a fraction strictly between 0 and 1")


# -- splits and loaders ----------------------------------------------------------------------------------
def split_sizes(total: int, fractions: dict[str, float]) -> dict[str, int]:
    """Round each held-out fraction of ``total`` to a count >= 1 and check something is left to train on."""
    sizes = {key: max(1, round(frac * total)) for key, frac in fractions.items()}
    keys = " + data.".join(fractions)
    require(sum(sizes.values()) < total, keys, sum(fractions.values()),
            f"the held-out splits ({sizes}) leave no training items out of {total}")
    return sizes


def trainer_world_size(module: L.LightningDataModule) -> int:
    """Number of DDP processes of the trainer this module is attached to (1 outside a trainer)."""
    return module.trainer.world_size if module.trainer is not None else 1


def item_loader(dataset: Dataset, batch_size: int, shuffle: bool, seed: int, num_workers: int,
                world_size: int = 1) -> DataLoader:
    """A per-item DataLoader (images decoded and augmented one by one, possibly in workers); when
    shuffling (training), an epoch is :func:`train_epoch_size` items."""
    epoch_size = train_epoch_size(len(dataset), batch_size, world_size) if shuffle else None
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=EpochShuffleSampler(len(dataset), shuffle, seed, epoch_size),
        num_workers=num_workers,
        persistent_workers=num_workers > 0,  # keep workers (and their copy of the data) across epochs
        pin_memory=torch.cuda.is_available(),
    )


class FileDataModule(L.LightningDataModule):
    """Train/val loaders shared by the on-disk data sets, whose ``setup`` fills ``self.datasets``
    (per-item datasets with transforms, read by ``num_workers`` worker processes)."""

    datasets: dict[str, Dataset]
    batch_size: int
    seed: int
    num_workers: int

    def train_dataloader(self) -> DataLoader:
        train = self.datasets["train"]
        return item_loader(train, self.batch_size, True, self.seed, self.num_workers, trainer_world_size(self))

    def val_dataloader(self) -> DataLoader:
        return item_loader(self.datasets["val"], self.batch_size, False, self.seed, self.num_workers)


class TensorDataModule(L.LightningDataModule):
    """Train/val/test loaders shared by the in-memory data sets (digits, Fashion-MNIST), whose ``setup`` fills
    ``self.splits`` with datasets that return whole batches for a tensor of indices: the sampler draws the
    seeded epoch order and the batches, so no per-item collation runs."""

    splits: dict[str, Dataset]
    batch_size: int
    seed: int
    num_workers: int = 0

    def _batches(self, split: str, shuffle: bool) -> DataLoader:
        dataset = self.splits[split]
        epoch_size = train_epoch_size(len(dataset), self.batch_size, trainer_world_size(self)) if shuffle else None
        items = EpochShuffleSampler(len(dataset), shuffle, self.seed, epoch_size)
        # batch_size=None: the sampler yields index tensors and the dataset returns whole batches.
        return DataLoader(dataset, sampler=EpochBatchSampler(items, self.batch_size), batch_size=None,
                          num_workers=self.num_workers, persistent_workers=self.num_workers > 0)

    def train_dataloader(self) -> DataLoader:
        return self._batches("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._batches("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._batches("test", shuffle=False)
