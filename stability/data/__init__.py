"""Data: LightningDataModules for the embedded digits (the default), Fashion-MNIST, CIFAR-10/100 and image
folders.

Config files name a data module by class path, ``stability.data.DigitsDataModule``: the names below are that
public path (run ids hash the resolved config, class paths included, so the path stays put).

Every module knows ``num_classes``, ``img_size`` and ``in_chans`` right after ``__init__`` (before any data
is read), so the CLI can check the model's dimensions against the data up front; ``batch_size`` is per
device, as everywhere in Lightning; ``mean``/``std`` are the statistics the model's inputs are normalised
with. Nothing is downloaded: a missing or incomplete folder, or a file that fails its check, raises
:class:`~stability.errors.ConfigError` in ``__init__`` with one line saying what was expected where.

Modules, in the order data flows through them:
- :mod:`~stability.data.samplers`: seeded, resumable, DDP-aware samplers and tensor datasets;
- :mod:`~stability.data.loading`: the checks, split sizes and loaders every data module shares;
- :mod:`~stability.data.digits`: scikit-learn's digits, in memory (the default);
- :mod:`~stability.data.fashion`: Fashion-MNIST from its four IDX files (plain or gzipped), headers checked
  first, in memory;
- :mod:`~stability.data.cifar`: CIFAR-10/100 from torchvision's python version, checksums checked first;
- :mod:`~stability.data.folders`: images in torchvision's ImageFolder layout (ImageNet), headers checked first.
"""

from stability.data.cifar import CIFAR10DataModule, CIFAR100DataModule
from stability.data.digits import DigitsDataModule
from stability.data.fashion import FashionMNISTDataModule
from stability.data.folders import ImageFolderDataModule

__all__ = [
    "CIFAR10DataModule",
    "CIFAR100DataModule",
    "DigitsDataModule",
    "FashionMNISTDataModule",
    "ImageFolderDataModule",
]
