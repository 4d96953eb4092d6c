"""Data modules: digits in memory, CIFAR from fabricated pickles in the real format, image folders of PNGs."""

import os
import pickle
import signal
import struct
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from lightning.fabric.utilities.distributed import DistributedSamplerWrapper
from PIL import Image

from stability.data import CIFAR10DataModule, CIFAR100DataModule, DigitsDataModule, ImageFolderDataModule
from stability.data.cifar import CIFAR10_MEAN, CIFAR10_STD, CIFAR100_MEAN, CIFAR100_STD
from stability.data.folders import IMAGENET_MEAN, IMAGENET_STD
from stability.data.samplers import EpochBatchSampler, EpochShuffleSampler, train_epoch_size
from stability.errors import ConfigError

N_DIGITS = 1797


@pytest.fixture(autouse=True)
def _no_global_seed(monkeypatch: pytest.MonkeyPatch) -> None:
    """Shuffle orders depend on seed_everything's PL_GLOBAL_SEED; start every test without one."""
    monkeypatch.delenv("PL_GLOBAL_SEED", raising=False)


@pytest.fixture(scope="module")
def digits() -> DigitsDataModule:
    dm = DigitsDataModule()
    dm.setup("fit")
    return dm


def _epoch_images(loader: torch.utils.data.DataLoader) -> torch.Tensor:
    return torch.cat([images for images, _ in loader])


# -- digits ----------------------------------------------------------------------------------------------
def test_digits_attributes_known_before_setup() -> None:
    dm = DigitsDataModule(batch_size=32, seed=3)
    assert (dm.num_classes, dm.img_size, dm.in_chans, dm.batch_size, dm.seed) == (10, 8, 1, 32, 3)
    assert dm.hparams["batch_size"] == 32 and dm.hparams["test_fraction"] == 0.2


def test_digits_batches_shapes_and_dtypes(digits: DigitsDataModule) -> None:
    images, labels = next(iter(digits.train_dataloader()))
    assert images.shape == (64, 1, 8, 8) and images.dtype == torch.float32
    assert labels.shape == (64,) and labels.dtype == torch.int64
    assert 0 <= labels.min() and labels.max() <= 9
    for loader in (digits.val_dataloader(), digits.test_dataloader()):
        assert all(x.shape[1:] == (1, 8, 8) for x, _ in loader)


def test_digits_splits_partition_the_data_set(digits: DigitsDataModule) -> None:
    idx = digits.split_indices
    sizes = {name: len(i) for name, i in idx.items()}
    assert sum(sizes.values()) == N_DIGITS
    assert sizes["test"] == round(0.2 * N_DIGITS) and sizes["val"] == round(0.1 * N_DIGITS)
    assert np.array_equal(np.sort(np.concatenate(list(idx.values()))), np.arange(N_DIGITS))  # no overlap
    # every image of a split is served exactly once by its (unshuffled) loader
    assert sum(len(y) for _, y in digits.val_dataloader()) == sizes["val"]
    assert sum(len(y) for _, y in digits.test_dataloader()) == sizes["test"]


def test_digits_splits_are_stratified(digits: DigitsDataModule) -> None:
    from sklearn.datasets import load_digits

    target = load_digits().target
    share = np.bincount(target, minlength=10) / N_DIGITS
    for name, idx in digits.split_indices.items():
        counts = np.bincount(target[idx], minlength=10)
        assert np.abs(counts - share * len(idx)).max() <= 2, (name, counts)


def test_digits_split_is_a_function_of_the_seed(digits: DigitsDataModule) -> None:
    same, other = DigitsDataModule(seed=0), DigitsDataModule(seed=1)
    same.setup("fit")
    other.setup("fit")
    for name in ("train", "val", "test"):
        assert np.array_equal(same.split_indices[name], digits.split_indices[name])
    assert not np.array_equal(other.split_indices["test"], digits.split_indices["test"])


def test_digits_normalisation(digits: DigitsDataModule) -> None:
    train = digits.splits["train"].images
    assert abs(train.mean().item()) < 1e-5 and abs(train.std().item() - 1) < 1e-5
    raw = DigitsDataModule(normalize=False)
    raw.setup("fit")
    assert raw.splits["train"].images.min() == 0.0 and raw.splits["train"].images.max() == 1.0
    # the same pixels, standardised with the train split's statistics (val/test included)
    for name in ("train", "val", "test"):
        expected = (raw.splits[name].images - digits.mean) / digits.std
        torch.testing.assert_close(digits.splits[name].images, expected)


def test_digits_shuffle_is_reproducible_and_changes_per_epoch(
    digits: DigitsDataModule, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = _epoch_images(digits.train_dataloader())
    again = DigitsDataModule()
    again.setup("fit")
    loader = again.train_dataloader()
    assert torch.equal(_epoch_images(loader), first)  # same seed, fresh module: same order
    second = _epoch_images(loader)  # the next iteration is the next epoch
    assert not torch.equal(second, first)
    loader.sampler.set_epoch(1)  # Lightning sets the epoch explicitly (also when resuming)
    assert torch.equal(_epoch_images(loader), second)
    loader.sampler.set_epoch(0)
    assert torch.equal(_epoch_images(loader), first)
    # an epoch is whole batches, each image at most once
    assert len(first) == train_epoch_size(len(digits.splits["train"]), 64, 1) == 19 * 64
    assert len(torch.unique(first.flatten(1), dim=0)) == len(first)

    # seed_everything's seed changes the order over the same split
    L.seed_everything(7, verbose=False)
    seeded = DigitsDataModule()
    seeded.setup("fit")
    order7 = _epoch_images(seeded.train_dataloader())
    assert np.array_equal(seeded.split_indices["train"], digits.split_indices["train"])
    assert not torch.equal(order7, first)
    L.seed_everything(7, verbose=False)
    assert torch.equal(_epoch_images(seeded.train_dataloader()), order7)


def test_digits_validation_and_test_are_not_shuffled(digits: DigitsDataModule) -> None:
    val = _epoch_images(digits.val_dataloader())
    torch.testing.assert_close(val, digits.splits["val"].images)
    assert torch.equal(_epoch_images(digits.val_dataloader()), val)


def test_digits_batched_sampler_shards_disjointly_under_lightnings_ddp_wrapper(
    digits: DigitsDataModule,
) -> None:
    """What Lightning does under DDP: wrap our sampler in DistributedSamplerWrapper, one per rank."""
    n = len(digits.splits["train"])
    size = train_epoch_size(n, 64, world_size=2)
    assert size % 128 == 0 and size > n - 128
    shards = []
    for rank in (0, 1):
        items = EpochShuffleSampler(n, shuffle=True, seed=0, epoch_size=size)
        wrapper = DistributedSamplerWrapper(EpochBatchSampler(items, 64),
                                            num_replicas=2, rank=rank, shuffle=True, seed=0)
        wrapper.set_epoch(1)
        assert items.epoch == 1  # forwarded to our sampler
        shards.append([i for batch in wrapper for i in batch.tolist()])
    assert len(shards[0]) == len(shards[1]) == size // 2
    assert not set(shards[0]) & set(shards[1])
    assert set(shards[0]) | set(shards[1]) == set(EpochShuffleSampler(n, True, 0, size).order(1).tolist())


def test_digits_bad_arguments_raise_one_line_config_errors() -> None:
    with pytest.raises(ConfigError, match=r"^data\.batch_size: 0 is invalid; expected an integer >= 1$"):
        DigitsDataModule(batch_size=0)
    with pytest.raises(ConfigError, match=r"data\.val_fraction: 1\.5 is invalid; expected a fraction"):
        DigitsDataModule(val_fraction=1.5)
    with pytest.raises(ConfigError, match=r"data\.val_fraction \+ data\.test_fraction: 1\.0 is invalid"):
        DigitsDataModule(val_fraction=0.5, test_fraction=0.5)


class _LinearClassifier(L.LightningModule):
    """The smallest model that trains on digits; records what each rank saw (for the DDP test)."""

    def __init__(self, out_dir: str | None = None) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(64, 10)
        self.out_dir = out_dir
        self.seen: list[torch.Tensor] = []
        self.losses: list[float] = []

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        images, labels = batch
        self.seen.append(images.flatten(1).clone())
        loss = F.cross_entropy(self.layer(images.flatten(1)), labels)
        self.losses.append(loss.item())
        return loss

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        images, labels = batch
        self.log("val_loss", F.cross_entropy(self.layer(images.flatten(1)), labels))

    def on_train_end(self) -> None:
        if self.out_dir is not None:
            torch.save(torch.cat(self.seen), Path(self.out_dir) / f"rank{self.global_rank}.pt")

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.1)


def _trainer(**kwargs: object) -> L.Trainer:
    return L.Trainer(max_epochs=1, accelerator="cpu", logger=False, enable_checkpointing=False,
                     enable_progress_bar=False, enable_model_summary=False, **kwargs)


def test_digits_plugs_into_a_lightning_fit() -> None:
    model = _LinearClassifier()
    trainer = _trainer(devices=1, limit_train_batches=2)
    trainer.fit(model, datamodule=DigitsDataModule())
    assert trainer.global_step == 2
    assert np.isfinite(trainer.callback_metrics["val_loss"].item())
    assert [s.shape for s in model.seen] == [(64, 64), (64, 64)]
    assert all(np.isfinite(model.losses))


@pytest.mark.slow
def test_digits_ddp_ranks_see_disjoint_shards(tmp_path: Path) -> None:
    """Two CPU processes (gloo): Lightning injects its sampler wrapper; each rank trains on its own half.
    6 s on 2 idle cores, over 20 s on busy ones (two processes start and import torch + Lightning)."""
    trainer = _trainer(devices=2, strategy="ddp_spawn")
    trainer.fit(_LinearClassifier(str(tmp_path)), datamodule=DigitsDataModule())
    rank0, rank1 = (torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1))
    train = DigitsDataModule()
    train.setup("fit")
    n = len(train.splits["train"])
    assert len(rank0) == len(rank1) == train_epoch_size(n, 64, 2) // 2
    rows0, rows1 = ({tuple(row.tolist()) for row in rank} for rank in (rank0, rank1))
    assert len(rows0) == len(rank0) and len(rows1) == len(rank1)  # no repeats within a rank
    assert not rows0 & rows1
    all_train = {tuple(row.tolist()) for row in train.splits["train"].images.flatten(1)}
    assert rows0 | rows1 <= all_train


# -- CIFAR: fabricated folders in torchvision's on-disk format -------------------------------------------
def _py2_pickle(obj: object) -> bytes:
    """Pickle like the Python 2 cPickle (protocol 2) that wrote the CIFAR files: strings are *byte*
    strings, which Python 3 reads as ``str`` with ``encoding="latin1"`` (torchvision) and as ``bytes`` with
    ``encoding="bytes"`` (the CIFAR web page's recipe, whence its ``b'data'`` keys)."""
    if isinstance(obj, str):
        raw = obj.encode("latin1")
        header = b"U" + bytes([len(raw)]) if len(raw) < 256 else b"T" + struct.pack("<I", len(raw))
        return header + raw  # SHORT_BINSTRING / BINSTRING
    if isinstance(obj, list):
        return b"](" + b"".join(_py2_pickle(item) for item in obj) + b"e"  # EMPTY_LIST MARK ... APPENDS
    if isinstance(obj, dict):
        return b"}(" + b"".join(_py2_pickle(k) + _py2_pickle(v) for k, v in obj.items()) + b"u"
    return pickle.dumps(obj, protocol=2)[2:-1]  # ints and numpy arrays: protocol-2 opcodes, PROTO/STOP cut


def _write_py2_pickle(path: Path, obj: dict) -> None:
    path.write_bytes(b"\x80\x02" + _py2_pickle(obj) + b".")


def _make_cifar(root: Path, classes: int, per_file: int = 4, seed: int = 0) -> dict[str, tuple]:
    """A CIFAR-10 (5 train batches + test batch) or CIFAR-100 (train + test) folder of random images.
    Returns {"train": (data, labels), "test": (data, labels)} as written (data: (N, 3072) uint8)."""
    rng = np.random.default_rng(seed)

    def batch(n: int, offset: int) -> tuple[np.ndarray, list[int]]:
        return rng.integers(0, 256, (n, 3072), dtype=np.uint8), [(offset + i) % classes for i in range(n)]

    written: dict[str, list] = {"train": [], "test": []}
    if classes == 10:
        folder = root / "cifar-10-batches-py"
        folder.mkdir(parents=True)
        files = [(f"data_batch_{i}", "train", f"training batch {i} of 5") for i in range(1, 6)]
        files.append(("test_batch", "test", "testing batch 1 of 1"))
        for k, (name, split, label) in enumerate(files):
            data, labels = batch(per_file, k)
            _write_py2_pickle(folder / name, {"batch_label": label, "labels": labels, "data": data,
                                              "filenames": [f"img_{k}_{i}.png" for i in range(per_file)]})
            written[split].append((data, labels))
        _write_py2_pickle(folder / "batches.meta", {"num_cases_per_batch": per_file, "num_vis": 3072,
                                                    "label_names": [f"class{i}" for i in range(10)]})
    else:
        folder = root / "cifar-100-python"
        folder.mkdir(parents=True)
        for name, n in (("train", 5 * per_file), ("test", per_file)):
            data, fine = batch(n, 0)
            _write_py2_pickle(folder / name, {
                "filenames": [f"img_{i}.png" for i in range(n)], "batch_label": f"{name}ing batch 1 of 1",
                "fine_labels": fine, "coarse_labels": [f // 5 for f in fine], "data": data})
            written[name].append((data, fine))
        _write_py2_pickle(folder / "meta", {"fine_label_names": [f"fine{i}" for i in range(100)],
                                            "coarse_label_names": [f"coarse{i}" for i in range(20)]})
    return {split: (np.concatenate([d for d, _ in parts]), sum((lab for _, lab in parts), []))
            for split, parts in written.items()}


def _chw(data: np.ndarray) -> torch.Tensor:
    """CIFAR rows (1024 red, 1024 green, 1024 blue values, each row-major) -> (N, 3, 32, 32) in [0, 1]."""
    return torch.from_numpy(data.reshape(-1, 3, 32, 32).astype(np.float32) / 255.0)


def _normalise(x: torch.Tensor, mean: tuple, std: tuple) -> torch.Tensor:
    return (x - torch.tensor(mean).view(3, 1, 1)) / torch.tensor(std).view(3, 1, 1)


def test_fabricated_cifar_matches_the_real_pickle_format(tmp_path: Path) -> None:
    _make_cifar(tmp_path, 10)
    with open(tmp_path / "cifar-10-batches-py" / "data_batch_1", "rb") as f:
        as_bytes = pickle.load(f, encoding="bytes")
    assert set(as_bytes) == {b"batch_label", b"labels", b"data", b"filenames"}
    assert as_bytes[b"data"].shape == (4, 3072) and as_bytes[b"data"].dtype == np.uint8
    with open(tmp_path / "cifar-10-batches-py" / "batches.meta", "rb") as f:
        assert pickle.load(f, encoding="latin1")["label_names"][3] == "class3"


CIFARS = [(CIFAR10DataModule, 10, CIFAR10_MEAN, CIFAR10_STD),
          (CIFAR100DataModule, 100, CIFAR100_MEAN, CIFAR100_STD)]


@pytest.mark.parametrize(("cls", "classes", "mean", "std"), CIFARS)
def test_cifar_loads_through_the_real_readers(tmp_path: Path, cls: type, classes: int, mean: tuple,
                                              std: tuple) -> None:
    written = _make_cifar(tmp_path, classes, per_file=4)
    dm = cls(str(tmp_path), batch_size=4, num_workers=0, val_fraction=0.25, augment=False, allow_unverified=True)
    assert (dm.num_classes, dm.img_size, dm.in_chans) == (classes, 32, 3)
    dm.setup("fit")
    dm.setup("test")
    train, val = dm.datasets["train"], dm.datasets["val"]
    assert (len(train), len(val), len(dm.datasets["test"])) == (15, 5, 4)
    assert not set(train.indices) & set(val.indices)
    assert sorted(train.indices + val.indices) == list(range(20))

    # test: file order, exact normalisation, channel layout (rows are R, G, B planes)
    images, labels = next(iter(dm.test_dataloader()))
    assert images.shape == (4, 3, 32, 32) and images.dtype == torch.float32 and labels.dtype == torch.int64
    torch.testing.assert_close(images, _normalise(_chw(written["test"][0]), mean, std))
    assert labels.tolist() == written["test"][1]
    # validation: the held-out training images, unaugmented
    val_images = _epoch_images(dm.val_dataloader())
    torch.testing.assert_close(val_images, _normalise(_chw(written["train"][0][val.indices]), mean, std))
    # training, augment=False: the same pixels in a shuffled order; 15 items -> 3 full batches of 4
    loader = dm.train_dataloader()
    assert len(loader) == 3
    order = loader.sampler.order(0).numpy()
    shuffled = _epoch_images(loader)
    expected = _chw(written["train"][0][np.asarray(train.indices)[order]])
    torch.testing.assert_close(shuffled, _normalise(expected, mean, std))


def _is_crop_flip_of(augmented: torch.Tensor, original: torch.Tensor, mean: tuple, std: tuple) -> bool:
    """Whether ``augmented`` is a 32x32 window of ``original`` zero-padded by 4, maybe flipped."""
    padded = F.pad(original, (4, 4, 4, 4))
    for image in (padded, padded.flip(-1)):
        for top in range(9):
            for left in range(9):
                window = _normalise(image[:, top:top + 32, left:left + 32], mean, std)
                if torch.allclose(window, augmented, atol=1e-5):
                    return True
    return False


def test_cifar_augmentation_is_random_crop_and_flip(tmp_path: Path) -> None:
    written = _make_cifar(tmp_path, 10, per_file=2)
    dm = CIFAR10DataModule(str(tmp_path), batch_size=2, num_workers=0, val_fraction=0.2, augment=True,
                           allow_unverified=True)
    dm.setup("fit")
    train = dm.datasets["train"]
    torch.manual_seed(0)
    changed = 0
    for i, source in enumerate(train.indices):
        image, _ = train[i]
        original = _chw(written["train"][0][source : source + 1])[0]
        assert _is_crop_flip_of(image, original, CIFAR10_MEAN, CIFAR10_STD)
        changed += not torch.allclose(image, _normalise(original, CIFAR10_MEAN, CIFAR10_STD))
    assert changed >= len(train) // 2
    # validation images are never augmented
    val_image, _ = dm.datasets["val"][0]
    original = _chw(written["train"][0][dm.datasets["val"].indices[0:1]])[0]
    torch.testing.assert_close(val_image, _normalise(original, CIFAR10_MEAN, CIFAR10_STD))


def test_cifar_missing_or_incomplete_folders_raise_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"data\.data_dir: .* is not a folder; .*Downloading is disabled"):
        CIFAR10DataModule(str(tmp_path / "nowhere"))
    with pytest.raises(ConfigError, match=r"has no cifar-10-batches-py/ folder; put torchvision's CIFAR-10 "
                                          r"python version there .*cifar-10-python\.tar\.gz"):
        CIFAR10DataModule(str(tmp_path))
    with pytest.raises(ConfigError, match=r"has no cifar-100-python/ folder"):
        CIFAR100DataModule(str(tmp_path))
    _make_cifar(tmp_path, 10)
    (tmp_path / "cifar-10-batches-py" / "data_batch_3").unlink()
    with pytest.raises(ConfigError, match=r"cifar-10-batches-py' lacks data_batch_3 \(expected data_batch_1"):
        CIFAR10DataModule(str(tmp_path))
    # present but truncated: found when the module is built (before any run folder exists), one line
    other = tmp_path / "truncated"
    _make_cifar(other, 100)
    path = other / "cifar-100-python" / "train"
    path.write_bytes(path.read_bytes()[:500])
    unreadable = r"cifar-100-python/train' cannot be unpickled .*re-extract cifar-100-python\.tar\.gz"
    with pytest.raises(ConfigError, match=unreadable) as info:
        CIFAR100DataModule(str(other), num_workers=0, allow_unverified=True)
    assert "\n" not in str(info.value)


# -- image folders ---------------------------------------------------------------------------------------
COLOURS = {"cat": (255, 0, 0), "dog": (0, 128, 255), "eel": (10, 200, 30)}


def _make_image_folder(root: Path, train: dict[str, int], val: dict[str, int]) -> None:
    """PNG images of one flat colour per class, of varied sizes (and one grayscale) like real folders."""
    for split, counts in (("train", train), ("val", val)):
        for name, count in counts.items():
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(count):
                Image.new("RGB", (20 + 3 * i, 24), COLOURS[name]).save(folder / f"{i}.png")
    Image.new("L", (21, 21), 90).save(root / "train" / next(iter(train)) / "gray.png")


def test_image_folder_loads_pngs(tmp_path: Path) -> None:
    _make_image_folder(tmp_path, train={"cat": 3, "dog": 3, "eel": 2}, val={"cat": 2, "eel": 2})
    dm = ImageFolderDataModule(str(tmp_path), img_size=16, batch_size=4, num_workers=0)
    assert (dm.num_classes, dm.img_size, dm.in_chans) == (3, 16, 3)  # before setup
    assert dm.classes == ["cat", "dog", "eel"]
    dm.setup("fit")
    assert len(dm.datasets["train"]) == 9
    images, labels = next(iter(dm.train_dataloader()))
    assert images.shape == (4, 3, 16, 16) and images.dtype == torch.float32 and labels.dtype == torch.int64
    assert len(dm.train_dataloader()) == 2  # 9 images -> 2 full batches of 4

    # val lacks "dog": "eel" keeps its training index 2; flat colours survive resize + centre crop exactly
    images, labels = _epoch_images(dm.val_dataloader()), torch.cat([y for _, y in dm.val_dataloader()])
    assert labels.tolist() == [0, 0, 2, 2]
    for image, label in zip(images, labels, strict=True):
        colour = torch.tensor(COLOURS[dm.classes[label]], dtype=torch.float32).view(3, 1, 1) / 255
        torch.testing.assert_close(image, _normalise(colour.expand(3, 16, 16), IMAGENET_MEAN, IMAGENET_STD))
    dm.setup("test")
    assert torch.equal(_epoch_images(dm.test_dataloader()), images)  # val doubles as test


def test_image_folder_layout_errors(tmp_path: Path) -> None:
    layout = r"expected train/<class>/<image> and val/<class>/<image> \(torchvision ImageFolder layout\)"
    with pytest.raises(ConfigError, match=rf"^data\.data_dir: .*nowhere' is not a folder; {layout}$"):
        ImageFolderDataModule(str(tmp_path / "nowhere"))
    (tmp_path / "train" / "cat").mkdir(parents=True)
    with pytest.raises(ConfigError, match=rf"has no val/ subfolder; {layout}"):
        ImageFolderDataModule(str(tmp_path))
    (tmp_path / "val").mkdir()
    no_images = rf"train' has class folders but no image files \(.*\.png.*\); {layout}"
    with pytest.raises(ConfigError, match=no_images):
        ImageFolderDataModule(str(tmp_path))
    Image.new("RGB", (8, 8)).save(tmp_path / "train" / "cat" / "a.jpg")
    with pytest.raises(ConfigError, match=rf"val' has no class subfolders; {layout}"):
        ImageFolderDataModule(str(tmp_path))
    (tmp_path / "val" / "yak").mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / "val" / "yak" / "a.png")
    with pytest.raises(ConfigError, match=r"val' has class folders that train/ lacks \(yak\)"):
        ImageFolderDataModule(str(tmp_path))


def test_image_folder_follows_links_but_counts_each_image_once(tmp_path: Path) -> None:
    """Links are followed (a class assembled from links into shared storage loads), but a folder is walked
    once and an image counted once: links back to the class folder or above it (two made listing never end,
    one multiplied the class about twentyfold) and a second link to the same image add nothing."""
    _make_image_folder(tmp_path, train={"cat": 3, "dog": 2}, val={"cat": 1, "dog": 1})
    shared = tmp_path / "shared"
    shared.mkdir()
    for i in range(2):
        Image.new("RGB", (20, 24), COLOURS["dog"]).save(shared / f"s{i}.png")
    cat, dog = tmp_path / "train" / "cat", tmp_path / "train" / "dog"
    (cat / "self").symlink_to(".")
    (cat / "again").symlink_to(cat)
    (cat / "up").symlink_to("..")
    (cat / "copy.png").symlink_to("0.png")
    (dog / "storage").symlink_to(shared)  # followed: its two images are dogs
    (dog / "storage-again").symlink_to(shared)
    (shared / "loop").symlink_to(shared)

    previous = signal.signal(signal.SIGALRM, _expired)
    signal.alarm(60)
    try:
        dm = ImageFolderDataModule(str(tmp_path), img_size=8, batch_size=2, num_workers=0)
        dm.setup("fit")
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    files = [Path(path).relative_to(tmp_path).as_posix() for path, _ in dm.datasets["train"].samples]
    assert files == ["train/cat/0.png", "train/cat/1.png", "train/cat/2.png", "train/cat/gray.png",
                     "train/dog/0.png", "train/dog/1.png", "train/dog/storage/s0.png", "train/dog/storage/s1.png"]
    assert dm.datasets["train"].targets == [0, 0, 0, 0, 1, 1, 1, 1]


def _expired(signum: int, frame: object) -> None:
    raise TimeoutError("listing the image folder did not finish: a link loop followed?")


@pytest.mark.parametrize("kind", ["fifo", "dangling"])
def test_image_folder_refuses_an_image_that_is_not_a_file(tmp_path: Path, kind: str) -> None:
    """A FIFO named like an image would block the header check forever; a link to nothing would fail a run."""
    _make_image_folder(tmp_path, train={"cat": 1, "dog": 1}, val={"cat": 1})
    path = tmp_path / "train" / "dog" / "x.png"
    if kind == "fifo":
        os.mkfifo(path)
    else:
        path.symlink_to(tmp_path / "nowhere.png")
    what = "a FIFO" if kind == "fifo" else "a link to nothing"
    with pytest.raises(ConfigError, match=rf"^data\.data_dir: '.*dog/x\.png' is {what}, not an image file"):
        ImageFolderDataModule(str(tmp_path), img_size=8, num_workers=0)
