"""Images in torchvision's ImageFolder layout (ImageNet as usually extracted, or any subset of it).

The folder layout and the image headers are checked in ``__init__``, before any run folder exists: a missing
folder or a file that is not an image raises :class:`~stability.errors.ConfigError` with one line naming it.

Symbolic links are followed, since data sets are often assembled from links into shared storage: a link to a
folder is walked, a link to an image is that image. But every folder is walked once and every image counted
once per class, both by their resolved path, so a link to a folder walked already adds nothing, and a link
back to the class folder or to a folder above it (a loop) is not followed. torchvision's own walk
(``os.walk(followlinks=True)``) follows such a link again and again: one self-link multiplied a class's
images about twentyfold, two never finished. An image that is a FIFO, a device or a link to nothing is an error.
"""

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision.datasets import ImageFolder
from torchvision.datasets.folder import IMG_EXTENSIONS
from torchvision.transforms import v2

from stability.data.loading import FileDataModule, check_common, require
from stability.errors import ConfigError, special_file

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


class _ImageFolderWithClasses(ImageFolder):
    """ImageFolder whose class list is given (the train folder's), so that a val/ folder lacking a class
    keeps the training label indices instead of silently renumbering the classes after it."""

    def __init__(self, root: Path, classes: list[str], transform: Callable) -> None:
        self._given_classes = classes
        super().__init__(str(root), transform=transform, allow_empty=True)

    def find_classes(self, directory: str | Path) -> tuple[list[str], dict[str, int]]:
        return self._given_classes, {name: i for i, name in enumerate(self._given_classes)}

    def make_dataset(self, directory: str | Path, class_to_idx: dict[str, int],  # type: ignore[override]
                     extensions: object = None, is_valid_file: object = None,
                     allow_empty: bool = False) -> list[tuple[str, int]]:
        """(image, class index) pairs from :func:`_class_images`, classes in sorted order as torchvision's."""
        return [(path, class_to_idx[name]) for name in sorted(class_to_idx)
                for path in _class_images(Path(directory) / name)]


def _class_folders(split_dir: Path) -> list[str]:
    return sorted(entry.name for entry in os.scandir(split_dir) if entry.is_dir())


# Images whose headers are read when an image folder is checked, per split: all of them up to this many,
# else this many spread evenly over the sorted list (on ImageNet's 1.28M images, reading every header would
# take minutes per cell). A bad image outside the sample fails the run that reads it, named in its record.
MAX_CHECKED_IMAGES = 20_000
_CHECKED_FOLDERS: set[tuple] = set()  # folders whose images passed, with their class folders' mtimes


def _walk(class_dir: Path) -> Iterator[tuple[str, list[tuple[str, str]]]]:
    """(folder, its images as (path, resolved path)) for ``class_dir`` and every folder below it, links
    followed, each folder (by resolved path) walked once; a link to ``class_dir`` or above it is a loop (it
    would also bring other classes' images under this class) and is not followed.

    Entries are read in name order. A file named like an image that is a FIFO or a device (reading it would
    block or never end) or a link to nothing raises :class:`ConfigError` naming it.
    """
    top = os.path.realpath(class_dir)
    seen = {top}
    stack = [(str(class_dir), top)]
    while stack:
        folder, real = stack.pop()
        try:
            with os.scandir(folder) as listing:
                entries = sorted(listing, key=lambda entry: entry.name)
        except OSError:
            continue  # unreadable: skipped, as os.walk (and so torchvision) does
        images, below = [], []
        for entry in entries:
            target = os.path.realpath(entry.path) if entry.is_symlink() else os.path.join(real, entry.name)
            if entry.is_dir():
                if target not in seen and not top.startswith(target.rstrip(os.sep) + os.sep):
                    seen.add(target)
                    below.append((entry.path, target))
            elif entry.name.lower().endswith(IMG_EXTENSIONS):
                if not entry.is_file():
                    _refuse_non_file(entry.path)
                images.append((entry.path, target))
        yield folder, images
        stack.extend(reversed(below))


def _refuse_non_file(path: str) -> None:
    try:
        what = special_file(os.stat(path).st_mode) or "a special file"
    except OSError:
        what = "a link to nothing"
    raise ConfigError(f"data.data_dir: {path!r} is {what}, not an image file; remove or replace it")


def _class_images(class_dir: Path) -> list[str]:
    """The images of one class folder, each once (by resolved path), in torchvision's order: folders sorted by
    path, files by name."""
    seen: set[str] = set()
    files = []
    for _, images in sorted(_walk(class_dir), key=lambda found: found[0]):
        for path, target in images:
            if target not in seen:
                seen.add(target)
                files.append(path)
    return files


def _image_files(split_dir: Path, classes: list[str]) -> list[Path]:
    """The files the data set loads from ``split_dir``, in its order."""
    return [Path(path) for name in classes for path in _class_images(split_dir / name)]


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
    return any(images for _, images in _walk(class_dir))


class ImageFolderDataModule(FileDataModule):
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
    mean, std = IMAGENET_MEAN, IMAGENET_STD  # what it normalises with (the Lipschitz bounds read them too)

    def __init__(self, data_dir: str, img_size: int = 224, batch_size: int = 128, num_workers: int = 4,
                 augment: bool = True, seed: int = 0) -> None:
        super().__init__()
        check_common(batch_size, seed, num_workers)
        require(isinstance(img_size, int) and img_size >= 1, "img_size", img_size,
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
                  v2.Normalize(self.mean, self.std), v2.ToPureTensor()]
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
