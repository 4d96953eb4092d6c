"""CIFAR-10/100 from torchvision's on-disk python version, never downloaded, with its files checked first.

The files are checked in ``__init__``, before any run folder exists: against the official archive's md5
checksums (they are Python pickles, and unpickling a planted file runs its code; ``allow_unverified=True``
accepts other files after a format check). A missing or incomplete folder raises
:class:`~stability.errors.ConfigError` with one line saying what was expected where.

The training split can take the augmentation of the compact-transformer recipe for CIFAR (Hassani et al.
2021, whose training script is timm's): RandAugment and random erasing per image, mixup/cutmix per batch, all
through timm and all off by default. Mixup lives here, not in the LightningModule, because it is part of what
the data is: the data config then says what the model is trained on, and the model only has to accept the
soft targets it produces (``ViTClassifier`` does; label smoothing stays the model's, applied to whichever
targets arrive). It runs in ``on_after_batch_transfer``, on the device, in the training loop only: validation
and test batches are never augmented.
"""

import hashlib
import pickle
import re
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from timm.data import Mixup, rand_augment_transform
from timm.data.random_erasing import RandomErasing
from torch.utils.data import DataLoader, Dataset
from torchvision.datasets import CIFAR10, CIFAR100
from torchvision.transforms import v2

from stability.data.loading import FileDataModule, check_common, check_fraction, item_loader, require, split_sizes
from stability.data.samplers import TransformedSubset, stratified_order
from stability.errors import ConfigError

# Per-channel statistics of the training sets (pixels scaled to [0, 1]).
CIFAR10_MEAN, CIFAR10_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
CIFAR100_MEAN, CIFAR100_STD = (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)


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


class _CIFARDataModule(FileDataModule):
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
                 seed: int = 0, augment: bool = True, allow_unverified: bool = False,
                 randaugment: str | None = None, random_erasing: float = 0.0, mixup: float = 0.0,
                 cutmix: float = 0.0, mixup_off_epoch: int | None = None) -> None:
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
            randaugment: A timm RandAugment config string applied to each training image after the crop and
                flip (``timm.data.rand_augment_transform``), e.g. ``rand-m9-mstd0.5-inc1``, the compact
                transformers' CIFAR setting; null (default) for none.
            random_erasing: Probability that timm's RandomErasing replaces a random rectangle of a normalised
                training image with per-pixel normal noise (timm's ``pixel`` mode); 0 (default) for never.
            mixup: Mixup's Beta(alpha, alpha) parameter for training batches (timm's ``Mixup``); 0 disables.
            cutmix: CutMix's alpha; 0 disables. With both on, each batch is one or the other with equal odds.
                Either one makes the training targets soft: (batch, num_classes) probabilities.
            mixup_off_epoch: Train without mixup/cutmix from this epoch on (0-based); null: mix every epoch.
        """
        super().__init__()
        check_common(batch_size, seed, num_workers)
        check_fraction("val_fraction", val_fraction)
        require(isinstance(allow_unverified, bool), "allow_unverified", allow_unverified, "expected true or false")
        self.randaugment_transform = self._check_augmentation(randaugment, random_erasing, mixup, cutmix,
                                                              mixup_off_epoch, batch_size)
        self.save_hyperparameters()
        self.data_dir = Path(data_dir).expanduser()
        self.batch_size, self.num_workers, self.seed, self.augment = batch_size, num_workers, seed, augment
        self.val_fraction, self.allow_unverified = val_fraction, allow_unverified
        self.random_erasing, self.mixup_off_epoch = random_erasing, mixup_off_epoch
        # Mixup and CutMix share timm's object: it draws lambda, picks one of the two per batch (prob 1.0,
        # switch 0.5, whole-batch mode, as the recipe's training script sets them) and builds the targets.
        # Its label smoothing is 0: the model smooths, the same for mixed and for plain targets.
        self.mixer = (Mixup(mixup_alpha=mixup, cutmix_alpha=cutmix, prob=1.0, switch_prob=0.5, mode="batch",
                            label_smoothing=0.0, num_classes=self.num_classes) if mixup > 0 or cutmix > 0 else None)
        self._check_folder()
        self._check_files()
        self.datasets: dict[str, Dataset] = {}

    @property
    def soft_targets(self) -> bool:
        """Whether training batches may carry (batch, num_classes) probabilities instead of class indices."""
        return self.mixer is not None

    def _check_augmentation(self, randaugment: str | None, random_erasing: float, mixup: float, cutmix: float,
                            mixup_off_epoch: int | None, batch_size: int) -> Callable | None:
        """Check the augmentation keys (one line naming the key) and build the RandAugment transform."""
        require(isinstance(random_erasing, (int, float)) and not isinstance(random_erasing, bool)
                and 0 <= random_erasing <= 1, "random_erasing", random_erasing,
                "expected a probability in [0, 1] (0 disables it)")
        for key, value in (("mixup", mixup), ("cutmix", cutmix)):
            require(isinstance(value, (int, float)) and not isinstance(value, bool) and np.isfinite(value)
                    and value >= 0, key, value, "expected a Beta-distribution alpha >= 0 (0 disables it)")
        require(mixup_off_epoch is None or (isinstance(mixup_off_epoch, int) and not isinstance(mixup_off_epoch, bool)
                                            and mixup_off_epoch >= 0), "mixup_off_epoch", mixup_off_epoch,
                "expected an epoch number >= 0, or null to mix in every epoch")
        if mixup > 0 or cutmix > 0:  # timm mixes each image with the batch reversed: it needs pairs
            require(batch_size % 2 == 0, "batch_size", batch_size, "expected an even number with mixup or cutmix")
        if randaugment is None:
            return None
        valid = "expected a timm RandAugment string such as 'rand-m9-mstd0.5-inc1', or null for none"
        # timm reads "rand" then sections of a name and a number, and skips a section without a digit
        # silently: here that is a typo, not a setting
        require(isinstance(randaugment, str) and randaugment.split("-")[0] == "rand"
                and all(re.search(r"[a-z]+\d", part) for part in randaugment.split("-")[1:]), "randaugment",
                randaugment, valid)
        # timm's RandAugment parameters for an image of this size and mean, as timm's create_transform sets
        # them: translations up to 45% of the side, the fill colour of rotations and shears the data mean.
        hparams = {"translate_const": int(self.img_size * 0.45),
                   "img_mean": tuple(min(255, round(255 * m)) for m in self.mean)}
        try:
            return rand_augment_transform(randaugment, hparams)
        except (AssertionError, ValueError, KeyError, IndexError) as error:
            raise ConfigError(f"data.randaugment: {randaugment!r} is invalid ({error or 'unknown section'}); "
                              f"{valid}") from None

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

    def _transforms(self, train: bool) -> v2.Compose:
        """The per-image pipeline: on the PIL image crop + flip (``augment``), then RandAugment (it works on
        PIL images); to a normalised tensor; then random erasing (it fills with normal noise, which is the
        data's own scale after normalising). timm's order. Validation and test (``train=False``): none."""
        steps: list[Callable] = []
        if train and self.augment:
            steps += [v2.RandomCrop(32, padding=4), v2.RandomHorizontalFlip()]
        if train and self.randaugment_transform is not None:
            steps.append(self.randaugment_transform)
        steps += [v2.ToImage(), v2.ToDtype(torch.float32, scale=True), v2.Normalize(self.mean, self.std),
                  v2.ToPureTensor()]
        if train and self.random_erasing > 0:
            steps.append(RandomErasing(self.random_erasing, mode="pixel", device="cpu"))
        return v2.Compose(steps)

    def on_after_batch_transfer(self, batch: tuple[torch.Tensor, torch.Tensor],
                                dataloader_idx: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Mixup/CutMix on a training batch, on its device: (B, C, H, W) images and (B,) labels become mixed
        images and (B, num_classes) float probabilities. Other batches, and epochs from ``mixup_off_epoch``
        on, pass unchanged."""
        trainer = self.trainer
        if self.mixer is None or trainer is None or not trainer.training:
            return batch
        if self.mixup_off_epoch is not None and trainer.current_epoch >= self.mixup_off_epoch:
            return batch
        return self.mix(batch)

    def mix(self, batch: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Mixup or CutMix of one training batch (what ``on_after_batch_transfer`` applies in training)."""
        if self.mixer is None:
            return batch
        images, labels = batch
        images = images.clone()  # timm mixes in place: keep the loader's tensor as it was
        # timm pairs image i with image B-1-i, so it needs an even count. Full batches are (batch_size is
        # even); a training split smaller than one batch is used whole and may be odd: its last image stays
        # unmixed, with a one-hot target.
        even = len(labels) - len(labels) % 2
        targets = torch.nn.functional.one_hot(labels, self.num_classes).float()
        if even:
            images[:even], targets[:even] = self.mixer(images[:even], labels[:even])
        return images, targets

    def setup(self, stage: str | None = None) -> None:
        if stage in ("fit", "validate", None) and "train" not in self.datasets:
            full = self._read(train=True)
            labels = np.asarray(full.targets)
            n_val = split_sizes(len(labels), {"val_fraction": self.val_fraction})["val_fraction"]
            order = stratified_order(labels, self.seed)
            val_idx, train_idx = np.sort(order[:n_val]), np.sort(order[n_val:])
            self.datasets["train"] = TransformedSubset(full, train_idx, self._transforms(True))
            self.datasets["val"] = TransformedSubset(full, val_idx, self._transforms(False))
        if stage in ("test", None) and "test" not in self.datasets:
            test = self._read(train=False)
            self.datasets["test"] = TransformedSubset(test, range(len(test)), self._transforms(False))

    def test_dataloader(self) -> DataLoader:
        return item_loader(self.datasets["test"], self.batch_size, False, self.seed, self.num_workers)


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
