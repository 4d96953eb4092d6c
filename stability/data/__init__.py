"""Data: LightningDataModules for the embedded digits (the default), CIFAR-10/100 and image folders.

Config files name a data module by class path, ``stability.data.DigitsDataModule``: the names below are that
public path (run ids hash the resolved config, class paths included, so the path stays put).

Modules, in the order data flows through them:
- :mod:`~stability.data.samplers`: seeded, resumable, DDP-aware samplers and tensor datasets;
- :mod:`~stability.data.modules`: the data modules themselves.
"""

from stability.data.modules import CIFAR10DataModule, CIFAR100DataModule, DigitsDataModule, ImageFolderDataModule

__all__ = ["CIFAR10DataModule", "CIFAR100DataModule", "DigitsDataModule", "ImageFolderDataModule"]
