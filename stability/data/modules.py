"""LightningDataModules: scikit-learn's digits (the embedded default), CIFAR-10/100 and image folders.

Every module knows ``num_classes``, ``img_size`` and ``in_chans`` right after ``__init__`` (before any data
is read), so the CLI can check the model's dimensions against the data up front. ``batch_size`` is per
device, as everywhere in Lightning.

Which items a step sees, and in what order, is decided by the samplers and datasets of
:mod:`stability.data.samplers` (seeded epoch-wise shuffling that replays on resume and shards cleanly under
DDP; whole-batch tensor datasets; a stratified split order); this module only wires them to each data set.

Nothing is downloaded: a missing or incomplete folder raises :class:`~stability.errors.ConfigError` in
``__init__`` with one line saying what was expected where. The files themselves are checked there too,
before any run folder exists: CIFAR files against the official archive's md5 checksums (they are Python
pickles, and unpickling a planted file runs its code; ``allow_unverified=True`` accepts other files after
a format check), image files by their headers.
"""

import hashlib
import os
import pickle
from collections.abc import Callable
from pathlib import Path

import lightning as L
import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision.datasets import CIFAR10, CIFAR100, ImageFolder
from torchvision.datasets.folder import IMG_EXTENSIONS
from torchvision.transforms import v2

from stability.data.samplers import (
    EpochBatchSampler,
    EpochShuffleSampler,
    TensorBatchDataset,
    TransformedSubset,
    stratified_order,
    train_epoch_size,
)
from stability.errors import ConfigError

# Per-channel statistics of the training sets (pixels scaled to [0, 1]).
CIFAR10_MEAN, CIFAR10_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
CIFAR100_MEAN, CIFAR100_STD = (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


# -- small checks ----------------------------------------------------------------------------------------
def _require(ok: bool, key: str, value: object, valid: str) -> None:
    """Raise the one-line ConfigError the CLI prints: key, value given, what is valid."""
    if not ok:
        raise ConfigError(f"data.{key}: {value!r} is invalid; {valid}")


def _check_common(batch_size: int, seed: int, num_workers: int = 0) -> None:
    _require(isinstance(batch_size, int) and batch_size >= 1, "batch_size", batch_size,
             "expected an integer >= 1")
    _require(isinstance(seed, int) and seed >= 0, "seed", seed, "expected an integer >= 0")
    _require(isinstance(num_workers, int) and num_workers >= 0, "num_workers", num_workers,
             "expected an integer >= 0 (0 loads in the main process)")


def _check_fraction(key: str, value: float) -> None:
    _require(0.0 < value < 1.0, key, value, "expected a fraction strictly between 0 and 1")


# -- splits and loaders ----------------------------------------------------------------------------------
def _split_sizes(total: int, fractions: dict[str, float]) -> dict[str, int]:
    """Round each held-out fraction of ``total`` to a count >= 1 and check something is left to train on."""
    sizes = {key: max(1, round(frac * total)) for key, frac in fractions.items()}
    keys = " + data.".join(fractions)
    _require(sum(sizes.values()) < total, keys, sum(fractions.values()),
             f"the held-out splits ({sizes}) leave no training items out of {total}")
    return sizes


def _world_size(module: L.LightningDataModule) -> int:
    """Number of DDP processes of the trainer this module is attached to (1 outside a trainer)."""
    return module.trainer.world_size if module.trainer is not None else 1


def _loader(dataset: Dataset, batch_size: int, shuffle: bool, seed: int, num_workers: int,
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


# -- digits ----------------------------------------------------------------------------------------------
class DigitsDataModule(L.LightningDataModule):
    """scikit-learn's bundled handwritten digits: 1,797 grayscale 8x8 images of 10 classes.

    The embedded default: nothing to download, and small enough to keep as tensors in memory and to serve
    whole batches by one tensor gather (see :class:`TensorBatchDataset`), which makes an epoch cost
    about a millisecond. Pixels (0..16) are scaled to [0, 1] and, with ``normalize``, standardised with
    the training split's mean and std (a single channel, so two scalars).

    Args:
        batch_size: Images per batch (per device under DDP).
        val_fraction: Fraction of all 1,797 images held out for validation.
        test_fraction: Fraction of all 1,797 images held out for the test.
        seed: Seeds the stratified train/val/test split and (with the global seed) the shuffle order.
        normalize: Standardise pixels with the training split's mean and std (else keep them in [0, 1]).
    """

    num_classes: int = 10
    img_size: int = 8
    in_chans: int = 1

    def __init__(self, batch_size: int = 64, val_fraction: float = 0.1, test_fraction: float = 0.2,
                 seed: int = 0, normalize: bool = True) -> None:
        super().__init__()
        _check_common(batch_size, seed)
        _check_fraction("val_fraction", val_fraction)
        _check_fraction("test_fraction", test_fraction)
        held_out = val_fraction + test_fraction
        _require(held_out < 1.0, "val_fraction + data.test_fraction", held_out,
                 "the held-out fractions must sum to less than 1 to leave training images")
        self.save_hyperparameters()
        self.batch_size, self.seed, self.normalize = batch_size, seed, normalize
        self.val_fraction, self.test_fraction = val_fraction, test_fraction
        self.mean, self.std = 0.0, 1.0
        self.splits: dict[str, TensorBatchDataset] = {}
        self.split_indices: dict[str, np.ndarray] = {}  # indices into load_digits()'s 1,797 rows

    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return  # the whole data set is built once, whatever the stage
        from sklearn.datasets import load_digits

        digits = load_digits()
        images = torch.as_tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16.0  # (N, 1, 8, 8)
        labels = torch.as_tensor(digits.target, dtype=torch.int64)  # (N,)
        sizes = _split_sizes(len(labels), {"test_fraction": self.test_fraction,
                                           "val_fraction": self.val_fraction})
        order = stratified_order(digits.target, self.seed)
        n_test, n_val = sizes["test_fraction"], sizes["val_fraction"]
        self.split_indices = {
            "test": np.sort(order[:n_test]),
            "val": np.sort(order[n_test:n_test + n_val]),
            "train": np.sort(order[n_test + n_val:]),
        }
        if self.normalize:
            train = images[self.split_indices["train"]]
            self.mean, self.std = train.mean().item(), train.std().item()
            images = (images - self.mean) / self.std
        self.splits = {name: TensorBatchDataset(images[idx], labels[idx])
                       for name, idx in self.split_indices.items()}

    def _batches(self, split: str, shuffle: bool) -> DataLoader:
        dataset = self.splits[split]
        epoch_size = train_epoch_size(len(dataset), self.batch_size, _world_size(self)) if shuffle else None
        items = EpochShuffleSampler(len(dataset), shuffle, self.seed, epoch_size)
        sampler = EpochBatchSampler(items, self.batch_size)
        # batch_size=None: the sampler yields index tensors and the dataset returns whole batches.
        return DataLoader(dataset, sampler=sampler, batch_size=None)

    def train_dataloader(self) -> DataLoader:
        return self._batches("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._batches("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._batches("test", shuffle=False)


# -- CIFAR -----------------------------------------------------------------------------------------------
def _without_md5(dataset_cls: type[CIFAR10]) -> type[CIFAR10]:
    """torchvision's reader for ``dataset_cls`` with its md5 checks off.

    The data module has checked the files already in ``__init__`` (against the same checksums, with a
    one-line error naming the file, or, with ``allow_unverified``, their format); torchvision's own check
    would repeat the hashing and fail with a message that names no file.
    """
    return type(
        f"_{dataset_cls.__name__}Files",
        (dataset_cls,),
        {
            "train_list": [[name, None] for name, _ in dataset_cls.train_list],
            "test_list": [[name, None] for name, _ in dataset_cls.test_list],
            "meta": {**dataset_cls.meta, "md5": None},
        },
    )


# (path, size, mtime_ns) -> md5 hex digest, or the format problem of an unverified file ("" = fine): a sweep
# validates every cell in the same worker process, and each cell builds its data module.
_FILE_CHECKS: dict[tuple[str, int, int, str], str] = {}


def _file_key(path: Path, what: str) -> tuple[str, int, int, str]:
    stat = path.stat()
    return (str(path.resolve()), stat.st_size, stat.st_mtime_ns, what)


def _md5(path: Path) -> str:
    key = _file_key(path, "md5")
    if key not in _FILE_CHECKS:
        digest = hashlib.md5(usedforsecurity=False)
        with path.open("rb") as file:
            for block in iter(lambda: file.read(1 << 20), b""):
                digest.update(block)
        _FILE_CHECKS[key] = digest.hexdigest()
    return _FILE_CHECKS[key]


def _cifar_format_problem(path: Path, kind: str, label_key: str, num_classes: int) -> str:
    """What is wrong with an unverified CIFAR file ("" if nothing): unpickled, as torchvision will read it."""
    key = _file_key(path, kind)
    if key in _FILE_CHECKS:
        return _FILE_CHECKS[key]
    try:
        with path.open("rb") as file:
            entry = pickle.load(file, encoding="latin1")
    except Exception as error:  # noqa: BLE001 - whatever breaks unpickling: a truncated or foreign file
        problem = f"cannot be unpickled ({type(error).__name__}: {' '.join(str(error).split())[:100]})"
    else:
        problem = _cifar_entry_problem(entry, kind, label_key, num_classes)
    _FILE_CHECKS[key] = problem
    return problem


def _cifar_entry_problem(entry: object, kind: str, label_key: str, num_classes: int) -> str:
    if not isinstance(entry, dict):
        return f"holds a {type(entry).__name__}, not a CIFAR dictionary"
    if kind == "meta":
        names = entry.get(label_key)
        if not isinstance(names, list) or len(names) != num_classes:
            return f"has no list of {num_classes} class names under {label_key!r}"
        return ""
    data, labels = entry.get("data"), entry.get(label_key)
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        return "has no 'data' array of uint8 rows of 3x32x32 pixels"
    if not isinstance(labels, list) or len(labels) != len(data):
        return f"has no {label_key!r} list with one label per image"
    if not all(isinstance(label, int) and 0 <= label < num_classes for label in labels):
        return f"has {label_key!r} outside 0..{num_classes - 1}"
    return ""


class _FileDataModule(L.LightningDataModule):
    """Train/val loaders shared by the on-disk data sets, whose ``setup`` fills ``self.datasets``
    (per-item datasets with transforms, read by ``num_workers`` worker processes)."""

    datasets: dict[str, Dataset]
    batch_size: int
    seed: int
    num_workers: int

    def train_dataloader(self) -> DataLoader:
        train = self.datasets["train"]
        return _loader(train, self.batch_size, True, self.seed, self.num_workers, _world_size(self))

    def val_dataloader(self) -> DataLoader:
        return _loader(self.datasets["val"], self.batch_size, False, self.seed, self.num_workers)


class _CIFARDataModule(_FileDataModule):
    """Shared code of the CIFAR-10 and CIFAR-100 modules (they differ only in the class attributes)."""

    dataset_cls: type[CIFAR10]
    folder: str  # what cifar-*-python.tar.gz extracts to
    archive: str
    title: str
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    num_classes: int
    img_size: int = 32
    in_chans: int = 3

    label_key: str  # the labels' key in a batch file

    def __init__(self, data_dir: str, batch_size: int = 128, num_workers: int = 2, val_fraction: float = 0.1,
                 seed: int = 0, augment: bool = True, allow_unverified: bool = False) -> None:
        """
        Args:
            data_dir: Folder holding the extracted python version (cifar-10-batches-py/ or cifar-100-python/).
            batch_size: Images per batch (per device under DDP).
            num_workers: DataLoader worker processes that decode and augment images (0: main process).
            val_fraction: Fraction of the 50,000 training images held out (stratified) for validation.
            seed: Seeds the validation split and (with the global seed) the shuffle order.
            augment: Random crop 32 with 4-pixel zero padding + horizontal flip on the training split.
            allow_unverified: Read files whose md5 differs from the official archive's (a re-packed copy, a
                small test set). CIFAR files are Python pickles, and unpickling runs any code a file holds:
                set this only for files you trust as you trust code.
        """
        super().__init__()
        _check_common(batch_size, seed, num_workers)
        _check_fraction("val_fraction", val_fraction)
        _require(isinstance(allow_unverified, bool), "allow_unverified", allow_unverified, "expected true or false")
        self.save_hyperparameters()
        self.data_dir = Path(data_dir).expanduser()
        self.batch_size, self.num_workers, self.seed, self.augment = batch_size, num_workers, seed, augment
        self.val_fraction, self.allow_unverified = val_fraction, allow_unverified
        self._check_folder()
        self._check_files()
        self.datasets: dict[str, Dataset] = {}

    def _check_folder(self) -> None:
        root = self.data_dir / self.folder
        where = (f"put torchvision's {self.title} python version there (the {self.folder}/ folder extracted "
                 f"from {self.archive}). Downloading is disabled.")
        if not self.data_dir.is_dir():
            raise ConfigError(f"data.data_dir: {str(self.data_dir)!r} is not a folder; {where}")
        if not root.is_dir():
            raise ConfigError(f"data.data_dir: {str(self.data_dir)!r} has no {self.folder}/ folder; {where}")
        expected = [name for name, _ in self.dataset_cls.train_list + self.dataset_cls.test_list]
        expected.append(self.dataset_cls.meta["filename"])
        missing = [name for name in expected if not (root / name).is_file()]
        if missing:
            raise ConfigError(f"data.data_dir: {str(root)!r} lacks {', '.join(missing)} (expected "
                              f"{', '.join(expected)}); re-extract {self.archive}. Downloading is disabled.")

    def _check_files(self) -> None:
        """Every file is the official one (md5), or, with ``allow_unverified``, a readable CIFAR file."""
        root = self.data_dir / self.folder
        meta = self.dataset_cls.meta
        files = [(name, md5, "batch") for name, md5 in self.dataset_cls.train_list + self.dataset_cls.test_list]
        files.append((meta["filename"], meta["md5"], "meta"))
        for name, md5, kind in files:
            path = root / name
            if self.allow_unverified:
                label_key = meta["key"] if kind == "meta" else self.label_key
                problem = _cifar_format_problem(path, kind, label_key, self.num_classes)
                if problem:
                    raise ConfigError(f"data.data_dir: {str(path)!r} {problem}; it is not a {self.title} python "
                                      f"file: re-extract {self.archive}")
            elif _md5(path) != md5:
                raise ConfigError(
                    f"data.data_dir: {str(path)!r} is not the official {self.title} file (md5 {_md5(path)}, "
                    f"expected {md5}); re-extract {self.archive}, or, for files you trust (they are pickles, "
                    "which run code when read), set data.allow_unverified: true")

    def _read(self, train: bool) -> CIFAR10:
        try:
            return _without_md5(self.dataset_cls)(str(self.data_dir), train=train, download=False)
        except (pickle.UnpicklingError, EOFError, KeyError, ValueError, UnicodeDecodeError) as error:
            raise ConfigError(
                f"data.data_dir: {str(self.data_dir / self.folder)!r} holds an unreadable "
                f"{'training' if train else 'test'} file ({type(error).__name__}: {error}); "
                f"re-extract {self.archive}."
            ) from error

    def _transforms(self, augment: bool) -> v2.Compose:
        steps: list[Callable] = [v2.ToImage()]
        if augment:
            steps += [v2.RandomCrop(32, padding=4), v2.RandomHorizontalFlip()]
        steps += [v2.ToDtype(torch.float32, scale=True), v2.Normalize(self.mean, self.std), v2.ToPureTensor()]
        return v2.Compose(steps)

    def setup(self, stage: str | None = None) -> None:
        if stage in ("fit", "validate", None) and "train" not in self.datasets:
            full = self._read(train=True)
            labels = np.asarray(full.targets)
            n_val = _split_sizes(len(labels), {"val_fraction": self.val_fraction})["val_fraction"]
            order = stratified_order(labels, self.seed)
            val_idx, train_idx = np.sort(order[:n_val]), np.sort(order[n_val:])
            self.datasets["train"] = TransformedSubset(full, train_idx, self._transforms(self.augment))
            self.datasets["val"] = TransformedSubset(full, val_idx, self._transforms(False))
        if stage in ("test", None) and "test" not in self.datasets:
            test = self._read(train=False)
            self.datasets["test"] = TransformedSubset(test, range(len(test)), self._transforms(False))

    def test_dataloader(self) -> DataLoader:
        return _loader(self.datasets["test"], self.batch_size, False, self.seed, self.num_workers)


class CIFAR10DataModule(_CIFARDataModule):
    """CIFAR-10 (32x32 RGB, 10 classes) from torchvision's on-disk python version, never downloaded.

    Expects ``<data_dir>/cifar-10-batches-py/`` with ``data_batch_1`` .. ``data_batch_5``, ``test_batch`` and
    ``batches.meta`` (what ``cifar-10-python.tar.gz`` extracts to). Train = the 50,000 training images minus
    a seeded, stratified ``val_fraction``; validation = that held-out part; test = the 10,000 test images.
    """

    dataset_cls = CIFAR10
    folder, archive, title = "cifar-10-batches-py", "cifar-10-python.tar.gz", "CIFAR-10"
    mean, std = CIFAR10_MEAN, CIFAR10_STD
    num_classes = 10
    label_key = "labels"


class CIFAR100DataModule(_CIFARDataModule):
    """CIFAR-100 (32x32 RGB, 100 fine classes) from torchvision's on-disk python version, never downloaded.

    Expects ``<data_dir>/cifar-100-python/`` with ``train``, ``test`` and ``meta`` (what
    ``cifar-100-python.tar.gz`` extracts to). Splits as in :class:`CIFAR10DataModule`; labels are the fine
    labels.
    """

    dataset_cls = CIFAR100
    folder, archive, title = "cifar-100-python", "cifar-100-python.tar.gz", "CIFAR-100"
    mean, std = CIFAR100_MEAN, CIFAR100_STD
    num_classes = 100
    label_key = "fine_labels"


# -- image folders ---------------------------------------------------------------------------------------
class _ImageFolderWithClasses(ImageFolder):
    """ImageFolder whose class list is given (the train folder's), so that a val/ folder lacking a class
    keeps the training label indices instead of silently renumbering the classes after it."""

    def __init__(self, root: Path, classes: list[str], transform: Callable) -> None:
        self._given_classes = classes
        super().__init__(str(root), transform=transform, allow_empty=True)

    def find_classes(self, directory: str | Path) -> tuple[list[str], dict[str, int]]:
        return self._given_classes, {name: i for i, name in enumerate(self._given_classes)}


def _class_folders(split_dir: Path) -> list[str]:
    return sorted(entry.name for entry in os.scandir(split_dir) if entry.is_dir())


# Images whose headers are read when an image folder is checked, per split: all of them up to this many,
# else this many spread evenly over the sorted list (on ImageNet's 1.28M images, reading every header would
# take minutes per cell). A bad image outside the sample fails the run that reads it, named in its record.
MAX_CHECKED_IMAGES = 20_000
_CHECKED_FOLDERS: set[tuple] = set()  # folders whose images passed, with their class folders' mtimes


def _image_files(split_dir: Path, classes: list[str]) -> list[Path]:
    """The files ImageFolder would load from ``split_dir``, in its order."""
    files: list[Path] = []
    for name in classes:
        for root, _, names in sorted(os.walk(split_dir / name, followlinks=True)):
            files += [Path(root) / n for n in sorted(names) if n.lower().endswith(IMG_EXTENSIONS)]
    return files


def _check_images(split_dir: Path, classes: list[str]) -> None:
    """Read the header of every image (or of :data:`MAX_CHECKED_IMAGES` of them): a file that is not an
    image is an error now, with its name, not a failed run after its folder exists."""
    present = [name for name in classes if (split_dir / name).is_dir()]
    signature = (str(split_dir.resolve()), *((n, (split_dir / n).stat().st_mtime_ns) for n in present))
    if signature in _CHECKED_FOLDERS:
        return
    files = _image_files(split_dir, present)
    if len(files) > MAX_CHECKED_IMAGES:
        step = len(files) / MAX_CHECKED_IMAGES
        files = [files[int(i * step)] for i in range(MAX_CHECKED_IMAGES)]
    for path in files:
        try:
            with Image.open(path) as image:
                image.size  # noqa: B018 - the header is parsed on open; touching size keeps that explicit
        except Exception as error:  # noqa: BLE001 - unidentified, truncated header, decompression bomb
            reason = " ".join(str(error).split())[:120] or type(error).__name__
            raise ConfigError(f"data.data_dir: {str(path)!r} is not a readable image ({reason}); remove or "
                              "replace it") from None
    _CHECKED_FOLDERS.add(signature)


def _has_image(class_dir: Path) -> bool:
    """Whether ``class_dir`` holds at least one image (stops at the first: cheap even on ImageNet)."""
    for _, _, files in os.walk(class_dir, followlinks=True):
        if any(name.lower().endswith(IMG_EXTENSIONS) for name in files):
            return True
    return False


class ImageFolderDataModule(_FileDataModule):
    """Images in torchvision's ImageFolder layout: ``<data_dir>/train/<class>/<image>`` and
    ``<data_dir>/val/<class>/<image>`` (ImageNet as usually extracted, or any subset of it).

    ``val/`` doubles as the test set (ImageNet's test labels are not public), so the test metrics repeat
    the final validation metrics. Class indices come from the sorted class folders of ``train/``; ``val/``
    may lack classes but may not add any. Training images get RandomResizedCrop + horizontal flip,
    validation images Resize to ``img_size / 0.875`` + CenterCrop (the usual 224 -> 256 ratio); both are
    normalised with the ImageNet mean and std.

    Args:
        data_dir: Folder holding ``train/`` and ``val/``, each with one subfolder per class.
        img_size: Side of the square crops fed to the model.
        batch_size: Images per batch (per device under DDP).
        num_workers: DataLoader worker processes that decode and augment images (0: main process).
        augment: RandomResizedCrop + flip on the training split (else the validation transform).
        seed: Seeds (with the global seed) the shuffle order.
    """

    in_chans: int = 3

    def __init__(self, data_dir: str, img_size: int = 224, batch_size: int = 128, num_workers: int = 4,
                 augment: bool = True, seed: int = 0) -> None:
        super().__init__()
        _check_common(batch_size, seed, num_workers)
        _require(isinstance(img_size, int) and img_size >= 1, "img_size", img_size,
                 "expected an integer >= 1")
        self.save_hyperparameters()
        self.data_dir = Path(data_dir).expanduser()
        self.img_size, self.batch_size, self.num_workers = img_size, batch_size, num_workers
        self.augment, self.seed = augment, seed
        self.classes = self._check_folder()
        self.num_classes = len(self.classes)
        self.datasets: dict[str, Dataset] = {}

    def _check_folder(self) -> list[str]:
        layout = "expected train/<class>/<image> and val/<class>/<image> (torchvision ImageFolder layout)"
        if not self.data_dir.is_dir():
            raise ConfigError(f"data.data_dir: {str(self.data_dir)!r} is not a folder; {layout}")
        for split in ("train", "val"):
            if not (self.data_dir / split).is_dir():
                raise ConfigError(
                    f"data.data_dir: {str(self.data_dir)!r} has no {split}/ subfolder; {layout}")
        classes: dict[str, list[str]] = {}
        for split in ("train", "val"):
            split_dir = self.data_dir / split
            classes[split] = _class_folders(split_dir)
            if not classes[split]:
                raise ConfigError(f"data.data_dir: {str(split_dir)!r} has no class subfolders; {layout}")
            if not any(_has_image(split_dir / name) for name in classes[split]):
                raise ConfigError(f"data.data_dir: {str(split_dir)!r} has class folders but no image files "
                                  f"({', '.join(IMG_EXTENSIONS)}); {layout}")
        extra = sorted(set(classes["val"]) - set(classes["train"]))
        if extra:
            raise ConfigError(f"data.data_dir: {str(self.data_dir / 'val')!r} has class folders that train/ "
                              f"lacks ({', '.join(extra[:5])}{', ...' if len(extra) > 5 else ''}); "
                              "val/ classes must be a subset of train/ classes")
        for split in ("train", "val"):
            _check_images(self.data_dir / split, classes["train"])
        return classes["train"]

    def _transforms(self, augment: bool) -> v2.Compose:
        if augment:
            steps: list[Callable] = [v2.RandomResizedCrop(self.img_size), v2.RandomHorizontalFlip()]
        else:
            steps = [v2.Resize(round(self.img_size / 0.875)), v2.CenterCrop(self.img_size)]
        steps += [v2.ToImage(), v2.ToDtype(torch.float32, scale=True),
                  v2.Normalize(IMAGENET_MEAN, IMAGENET_STD), v2.ToPureTensor()]
        return v2.Compose(steps)

    def setup(self, stage: str | None = None) -> None:
        if stage in ("fit", None) and "train" not in self.datasets:
            self.datasets["train"] = _ImageFolderWithClasses(self.data_dir / "train", self.classes,
                                                             self._transforms(self.augment))
        if "val" not in self.datasets:
            self.datasets["val"] = _ImageFolderWithClasses(self.data_dir / "val", self.classes,
                                                           self._transforms(False))

    def test_dataloader(self) -> DataLoader:
        return self.val_dataloader()
