"""Fashion-MNIST (Xiao et al. 2017) from its four IDX files, never downloaded, with their headers checked first.

Fashion-MNIST is the real benchmark that fits a CPU: 70,000 grayscale 28x28 images of 10 kinds of clothing,
distributed as four IDX files, each plain or gzipped. Debian's ``dataset-fashion-mnist`` installs the gzipped
ones under ``/usr/share/datasets/fashion-mnist`` (the default folder); torchvision's ``FashionMNIST(root,
download=True)``, run on a machine with internet, leaves them (both forms) under ``<root>/FashionMNIST/raw/``,
and that layout is accepted too.

The files are checked in ``__init__``, before any run folder exists: every header (magic number, image count
and size), every file's length against what its header promises (a gzipped one is decompressed to count it),
that images and labels pair up, and that the labels are 0..9. Each problem raises
:class:`~stability.errors.ConfigError` with one line naming the file. The pixels are then read in ``setup`` by
torchvision's own IDX reader; it opens a path with plain ``open`` (no gzip), so a gzipped file is decompressed
into a temporary file first, rather than parsed by a reader of our own.
"""

import gzip
import math
import shutil
import struct
import tempfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torchvision.datasets.mnist import read_image_file, read_label_file

from stability.data.loading import (
    TensorDataModule,
    check_common,
    check_fraction,
    require,
    split_sizes,
)
from stability.data.samplers import (
    TensorBatchDataset,
    stratified_order,
)
from stability.errors import ConfigError

DEBIAN_FOLDER = "/usr/share/datasets/fashion-mnist"  # where `apt-get install dataset-fashion-mnist` puts them
TORCHVISION_SUBFOLDER = Path("FashionMNIST") / "raw"  # where torchvision's download=True puts them
# split -> (images file, labels file), as the Fashion-MNIST release names them (gzipped: + ".gz")
FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
# IDX magic numbers: 0x0000 (always), 0x08 (unsigned bytes), then the number of dimensions
IMAGE_MAGIC, LABEL_MAGIC = 0x00000803, 0x00000801
SIDE = 28  # images are SIDE x SIDE pixels
NUM_CLASSES = 10  # labels are 0..NUM_CLASSES-1
WHERE = ("install Debian's dataset-fashion-mnist (it fills /usr/share/datasets/fashion-mnist), or run "
         "torchvision's FashionMNIST(root, download=True) on a machine with internet and copy root over. "
         "Downloading is disabled here.")


@dataclass(frozen=True)
class IdxFile:
    """What the checks learnt about one IDX file: where it is, and its header's dimensions."""

    path: Path
    dims: tuple[int, ...]  # (count, rows, cols) for images, (count,) for labels
    max_label: int = -1  # labels only: the largest label in the file

    @property
    def gzipped(self) -> bool:
        return self.path.suffix == ".gz"


def _quoted(path: Path) -> str:
    return repr(str(path))


def _bad(path: Path, problem: str) -> ConfigError:
    return ConfigError(f"data.data_dir: {_quoted(path)} {problem}")


# -- locating the files ---------------------------------------------------------------------------------
def _present(folder: Path, name: str) -> Path | None:
    """The file ``name`` in ``folder``, plain (preferred: nothing to decompress) or gzipped, else None."""
    for candidate in (folder / name, folder / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    return None


def find_files(data_dir: Path) -> dict[str, Path]:
    """File name (without .gz) -> its path: in ``data_dir`` itself or in torchvision's ``FashionMNIST/raw/``."""
    names = [name for pair in FILES.values() for name in pair]
    if not data_dir.is_dir():
        raise ConfigError(f"data.data_dir: {_quoted(data_dir)} is not a folder; {WHERE}")
    best: tuple[Path, dict[str, Path]] | None = None
    for folder in (data_dir, data_dir / TORCHVISION_SUBFOLDER):
        found = {name: path for name in names if (path := _present(folder, name)) is not None}
        if len(found) == len(names):
            return found
        if best is None or len(found) > len(best[1]):
            best = (folder, found)
    assert best is not None
    folder, found = best
    missing = [name for name in names if name not in found]
    raise ConfigError(
        f"data.data_dir: {_quoted(folder)} lacks {', '.join(missing)} (expected the four Fashion-MNIST files "
        f"{', '.join(names)}, each plain or .gz, in data_dir or in data_dir/{TORCHVISION_SUBFOLDER}/); {WHERE}")


# -- checking them --------------------------------------------------------------------------------------
def _payload_size(path: Path, header_size: int, keep: bool) -> tuple[int, bytes]:
    """Bytes after the header (and, with ``keep``, the bytes themselves): the file's size for a plain file;
    a gzipped one is decompressed block by block, which also finds a cut-off or corrupt stream."""
    if path.suffix != ".gz":
        size = path.stat().st_size - header_size
        return size, (path.read_bytes()[header_size:] if keep else b"")
    total, kept = 0, []
    try:
        with gzip.open(path, "rb") as file:
            file.read(header_size)
            for block in iter(lambda: file.read(1 << 22), b""):
                total += len(block)
                if keep:
                    kept.append(block)
    except (EOFError, OSError, zlib.error) as error:
        reason = " ".join(str(error).split())[:100] or type(error).__name__
        raise _bad(path, f"is not a complete gzip file ({reason}); copy it again") from None
    return total, b"".join(kept)


def _read_header(path: Path, magic_expected: int, what: str) -> tuple[int, ...]:
    """The dimensions in an IDX header, after checking its magic number (big-endian, as IDX is)."""
    ndim = magic_expected & 0xFF
    size = 4 * (1 + ndim)
    try:
        with (gzip.open(path, "rb") if path.suffix == ".gz" else path.open("rb")) as file:
            header = file.read(size)
    except (EOFError, OSError, zlib.error) as error:
        reason = " ".join(str(error).split())[:100] or type(error).__name__
        raise _bad(path, f"cannot be read ({reason}); copy it again") from None
    if len(header) < 4:
        raise _bad(path, f"is truncated: {len(header)} bytes, shorter than an IDX header; copy it again")
    (magic,) = struct.unpack(">I", header[:4])
    if magic != magic_expected:
        hint = "; a gzipped file's name must end in .gz" if header[:2] == b"\x1f\x8b" else ""
        raise _bad(path, f"has magic number {magic} (0x{magic:08x}), expected {magic_expected} "
                         f"(0x{magic_expected:08x}, IDX {what}); it is not a Fashion-MNIST {what} file{hint}")
    if len(header) < size:
        raise _bad(path, f"is truncated: {len(header)} bytes, shorter than its {size}-byte IDX header; copy it again")
    return struct.unpack(f">{ndim}I", header[4:])


# (path, size, mtime_ns) -> what the checks found: a sweep validates every cell in the same worker process,
# and each cell builds its data module (decompressing the training images takes a few tenths of a second).
_CHECKED: dict[tuple[str, int, int], IdxFile] = {}


def check_file(path: Path, labels: bool) -> IdxFile:
    """Check one IDX file's header and length (and, for labels, their range); raise one line naming it."""
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if key in _CHECKED:
        return _CHECKED[key]
    what = "labels" if labels else "images"
    dims = _read_header(path, LABEL_MAGIC if labels else IMAGE_MAGIC, what)
    expected = math.prod(dims)  # Python ints: a corrupt header cannot overflow it
    size, payload = _payload_size(path, 4 * (1 + len(dims)), keep=labels)
    promised = f"{dims[0]} labels" if labels else f"{dims[0]} images of {dims[1]}x{dims[2]} pixels"
    if size < expected:
        raise _bad(path, f"is truncated: its header promises {promised} ({expected} bytes after the header), it "
                         f"holds {size}; copy it again")
    if size > expected:
        raise _bad(path, f"holds {size - expected} bytes more than its header's {promised}; it is not a "
                         "Fashion-MNIST file")
    if not labels and dims[1:] != (SIDE, SIDE):
        raise _bad(path, f"holds images of {dims[1]}x{dims[2]} pixels, expected {SIDE}x{SIDE}")
    max_label = -1
    if labels and expected:
        max_label = int(np.frombuffer(payload, dtype=np.uint8).max())
        if max_label >= NUM_CLASSES:
            raise _bad(path, f"holds label {max_label}, expected labels 0..{NUM_CLASSES - 1}")
    _CHECKED[key] = IdxFile(path, tuple(dims), max_label)
    return _CHECKED[key]


def check_split(images_path: Path, labels_path: Path) -> tuple[IdxFile, IdxFile]:
    """Check a split's two files, and that they pair up (one label per image)."""
    images, labels = check_file(images_path, labels=False), check_file(labels_path, labels=True)
    if images.dims[0] != labels.dims[0]:
        raise _bad(labels_path, f"holds {labels.dims[0]} labels but {_quoted(images_path)} holds "
                                f"{images.dims[0]} images; the two must come from the same release")
    if images.dims[0] == 0:
        raise _bad(images_path, "holds no images")
    return images, labels


# -- reading them ---------------------------------------------------------------------------------------
def read_idx(file: IdxFile, reader: Callable[[str], torch.Tensor]) -> torch.Tensor:
    """``reader`` (torchvision's ``read_image_file`` or ``read_label_file``) applied to ``file``; a gzipped
    file goes through a temporary decompressed copy, since torchvision opens the path without gzip."""
    if not file.gzipped:
        return reader(str(file.path))
    with tempfile.TemporaryDirectory(prefix="fashion-mnist-") as folder:
        plain = Path(folder) / file.path.stem
        with gzip.open(file.path, "rb") as source, plain.open("wb") as target:
            shutil.copyfileobj(source, target, 1 << 22)
        return reader(str(plain))


class FashionMNISTDataModule(TensorDataModule):
    """Fashion-MNIST: 60,000 training and 10,000 test grayscale 28x28 images of 10 classes, from the four
    IDX files in ``data_dir`` (or ``data_dir/FashionMNIST/raw/``), each plain or gzipped; never downloaded.

    Splits: validation = a seeded, stratified ``val_fraction`` of the 60,000 training images (the same rule
    as digits and CIFAR); train = the rest, or, with ``train_subset``, the first ``train_subset`` of the rest
    in a seeded, stratified order of the rest (so every class keeps its share, and a smaller subset is part
    of a larger one; the validation split does not depend on it); test = the 10,000 test images.

    Like digits, the images are held as tensors and served whole batches at a time (one tensor gather per
    batch): 60,000 28x28 images are 190 MB as float32, and no augmentation is applied. Pixels (0..255) are
    scaled to [0, 1] and, with ``normalize``, standardised with the mean and std (two scalars: one channel)
    of the training images in use, computed in ``setup`` (about 0.286 and 0.353 on the full training set).

    Args:
        data_dir: Folder holding train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte
            and t10k-labels-idx1-ubyte (each may end in .gz), directly or under FashionMNIST/raw/.
        batch_size: Images per batch (per device under DDP).
        num_workers: DataLoader worker processes gathering batches; 0 (in the main process) is fastest,
            since a batch is one tensor gather.
        val_fraction: Fraction of the 60,000 training images held out (stratified) for validation.
        seed: Seeds the validation split, the training subset and (with the global seed) the shuffle order.
        train_subset: Train on this many of the training images left after the validation split (null: all
            of them), chosen by the seeded, stratified order: a cheaper run on the same benchmark.
        normalize: Standardise pixels with the training images' mean and std (else keep them in [0, 1]).
    """

    num_classes: int = NUM_CLASSES
    img_size: int = SIDE
    in_chans: int = 1

    def __init__(self, data_dir: str = DEBIAN_FOLDER, batch_size: int = 128, num_workers: int = 0,
                 val_fraction: float = 0.1, seed: int = 0, train_subset: int | None = None,
                 normalize: bool = True) -> None:
        super().__init__()
        check_common(batch_size, seed, num_workers)
        check_fraction("val_fraction", val_fraction)
        require(train_subset is None or (isinstance(train_subset, int) and not isinstance(train_subset, bool)
                                         and train_subset >= 1),
                "train_subset", train_subset, "expected an integer >= 1, or null for all training images")
        self.save_hyperparameters()
        self.data_dir = Path(data_dir).expanduser()
        self.batch_size, self.num_workers, self.seed, self.normalize = batch_size, num_workers, seed, normalize
        self.val_fraction, self.train_subset = val_fraction, train_subset
        paths = find_files(self.data_dir)
        self.files = {split: check_split(paths[images], paths[labels]) for split, (images, labels) in FILES.items()}
        n_train = self.files["train"][0].dims[0]
        self.n_val = split_sizes(n_train, {"val_fraction": val_fraction})["val_fraction"]
        left = n_train - self.n_val
        require(train_subset is None or train_subset <= left, "train_subset", train_subset,
                f"expected at most the {left} training images left after the validation split (or null for all)")
        self.mean, self.std = 0.0, 1.0  # set by setup() when normalize is on
        self.splits: dict[str, TensorBatchDataset] = {}
        self.split_indices: dict[str, np.ndarray] = {}  # indices into the training file's images

    def _read(self, split: str) -> tuple[torch.Tensor, torch.Tensor]:
        images_file, labels_file = self.files[split]
        return read_idx(images_file, read_image_file), read_idx(labels_file, read_label_file)  # (N, 28, 28), (N,)

    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return  # built once, whatever the stage: reading the files is most of the cost
        train_images, train_labels = self._read("train")
        labels = train_labels.numpy()
        order = stratified_order(labels, self.seed)
        train = order[self.n_val:]
        if self.train_subset is not None:  # stratified among the images left, so each class keeps its share
            train = train[stratified_order(labels[train], self.seed)[:self.train_subset]]
        self.split_indices = {"val": np.sort(order[:self.n_val]), "train": np.sort(train)}
        test_images, test_labels = self._read("test")

        def pixels(images: torch.Tensor) -> torch.Tensor:
            return images.unsqueeze(1).to(torch.float32) / 255.0  # (N, 1, 28, 28) in [0, 1]

        tensors = {name: (pixels(train_images[idx]), train_labels[idx]) for name, idx in self.split_indices.items()}
        tensors["test"] = (pixels(test_images), test_labels)
        if self.normalize:
            train = tensors["train"][0]
            self.mean, self.std = train.mean().item(), train.std().item()
            tensors = {name: ((x - self.mean) / self.std, y) for name, (x, y) in tensors.items()}
        self.splits = {name: TensorBatchDataset(x, y) for name, (x, y) in tensors.items()}
