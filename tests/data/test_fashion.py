"""Fashion-MNIST: fabricated IDX files in the real format (plain, gzipped, torchvision's layout) read through
the real data module, each broken file's one-line error, and a real fit on the fabricated folder."""

from __future__ import annotations

import gzip
import json
import re
import struct
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from sweep_helpers import lightning_logs_to_stderr
from torchvision.datasets.mnist import read_image_file, read_label_file

from stability.cli import main
from stability.data import FashionMNISTDataModule
from stability.errors import ConfigError
from stability.record.config_files import load_config_files
from stability.training import run as train

ROOT = Path(__file__).resolve().parents[2]
BASE = ROOT / "ablations" / "base" / "fashion.yaml"
N_TRAIN, N_TEST = 60, 20
NAMES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


@pytest.fixture(autouse=True)
def _no_global_seed(monkeypatch: pytest.MonkeyPatch) -> None:
    """Shuffle orders depend on seed_everything's PL_GLOBAL_SEED; start every test without one."""
    monkeypatch.delenv("PL_GLOBAL_SEED", raising=False)


# -- fabrication: the IDX format as the Fashion-MNIST release writes it ------------------------------------
def idx_bytes(array: np.ndarray, magic: int | None = None, dims: tuple[int, ...] | None = None) -> bytes:
    """An IDX file: big-endian magic (0x00000803 images, 0x00000801 labels), the dimensions, uint8 data."""
    magic = (0x0800 | array.ndim) if magic is None else magic
    dims = array.shape if dims is None else dims
    return struct.pack(f">I{len(dims)}I", magic, *dims) + array.astype(np.uint8).tobytes()


def fake_data(seed: int = 0) -> dict[str, np.ndarray]:
    """Random images; labels 0..9, six of each class in training, two in the test set, shuffled."""
    rng = np.random.default_rng(seed)
    return {
        NAMES[0]: rng.integers(0, 256, (N_TRAIN, 28, 28), dtype=np.uint8),
        NAMES[1]: rng.permutation(np.arange(N_TRAIN) % 10).astype(np.uint8),
        NAMES[2]: rng.integers(0, 256, (N_TEST, 28, 28), dtype=np.uint8),
        NAMES[3]: rng.permutation(np.arange(N_TEST) % 10).astype(np.uint8),
    }


def fabricate(root: Path, layout: str = "plain", seed: int = 0) -> tuple[Path, dict[str, np.ndarray]]:
    """Write the four files into ``root`` (``layout``: plain, gzip, or torchvision's FashionMNIST/raw/ with
    both forms, as its download leaves them); return the folder holding them and the arrays written."""
    data = fake_data(seed)
    folder = root / "FashionMNIST" / "raw" if layout == "torchvision" else root
    folder.mkdir(parents=True, exist_ok=True)
    for name, array in data.items():
        if layout in ("plain", "torchvision"):
            (folder / name).write_bytes(idx_bytes(array))
        if layout in ("gzip", "torchvision"):
            (folder / f"{name}.gz").write_bytes(gzip.compress(idx_bytes(array)))
    return folder, data


def test_fabricated_files_are_what_torchvision_reads(tmp_path: Path) -> None:
    folder, data = fabricate(tmp_path)
    assert (folder / NAMES[0]).read_bytes()[:16] == bytes.fromhex("00000803 0000003c 0000001c 0000001c")
    assert (folder / NAMES[1]).read_bytes()[:8] == bytes.fromhex("00000801 0000003c")
    assert torch.equal(read_image_file(str(folder / NAMES[0])), torch.from_numpy(data[NAMES[0]]))
    assert torch.equal(read_label_file(str(folder / NAMES[1])), torch.from_numpy(data[NAMES[1]]).long())


# -- loading ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("layout", ["plain", "gzip", "torchvision"])
def test_loads_every_layout_exactly(tmp_path: Path, layout: str) -> None:
    _, data = fabricate(tmp_path, layout)
    dm = FashionMNISTDataModule(str(tmp_path), batch_size=8, normalize=False)
    assert (dm.num_classes, dm.img_size, dm.in_chans) == (10, 28, 1)  # known before any pixel is read
    dm.setup("fit")
    idx = dm.split_indices
    assert (len(idx["train"]), len(idx["val"]), len(dm.splits["test"])) == (54, 6, N_TEST)
    assert sorted(np.concatenate([idx["train"], idx["val"]]).tolist()) == list(range(N_TRAIN))  # a partition
    for split, (images_name, labels_name, rows) in {
        "train": (NAMES[0], NAMES[1], idx["train"]), "val": (NAMES[0], NAMES[1], idx["val"]),
        "test": (NAMES[2], NAMES[3], np.arange(N_TEST)),
    }.items():
        images, labels = dm.splits[split].images, dm.splits[split].labels
        assert images.shape == (len(rows), 1, 28, 28) and images.dtype == torch.float32
        assert labels.dtype == torch.int64 and 0 <= labels.min() and labels.max() <= 9
        assert 0.0 <= images.min() and images.max() <= 1.0
        expected = torch.from_numpy(data[images_name][rows]).unsqueeze(1).float() / 255
        assert torch.equal(images, expected), split
        assert labels.tolist() == data[labels_name][rows].tolist(), split
    assert sorted(dm.splits["val"].labels.tolist()) == sorted(set(dm.splits["val"].labels.tolist()))  # stratified
    images, labels = next(iter(dm.train_dataloader()))
    assert images.shape == (8, 1, 28, 28) and labels.shape == (8,)
    assert sum(len(y) for _, y in dm.val_dataloader()) == 6 and sum(len(y) for _, y in dm.test_dataloader()) == 20


def test_normalisation_uses_the_training_images(tmp_path: Path) -> None:
    fabricate(tmp_path, "gzip")
    raw = FashionMNISTDataModule(str(tmp_path), normalize=False)
    dm = FashionMNISTDataModule(str(tmp_path))
    assert (dm.mean, dm.std) == (0.0, 1.0)  # until setup: nothing read yet
    raw.setup()
    dm.setup()
    train = raw.splits["train"].images
    assert dm.mean == pytest.approx(train.mean().item()) and dm.std == pytest.approx(train.std().item())
    assert 0.27 < dm.std < 0.31  # uniform random bytes: the std of U(0, 1) is 0.289
    assert dm.splits["train"].images.mean().item() == pytest.approx(0.0, abs=1e-5)
    assert torch.allclose(dm.splits["test"].images, (raw.splits["test"].images - dm.mean) / dm.std)


def test_the_split_is_a_function_of_the_seed(tmp_path: Path) -> None:
    fabricate(tmp_path)

    def split(seed: int) -> dict[str, list[int]]:
        dm = FashionMNISTDataModule(str(tmp_path), seed=seed)
        dm.setup("fit")
        return {name: idx.tolist() for name, idx in dm.split_indices.items()}

    assert split(0) == split(0)
    assert split(0)["val"] != split(1)["val"]


def test_train_subset_is_seeded_stratified_and_nested(tmp_path: Path) -> None:
    fabricate(tmp_path)

    def module(subset: int | None, seed: int = 0) -> FashionMNISTDataModule:
        dm = FashionMNISTDataModule(str(tmp_path), train_subset=subset, seed=seed, normalize=False)
        dm.setup("fit")
        return dm

    full, twenty, ten = module(None), module(20), module(10)
    assert len(twenty.splits["train"]) == 20 and len(ten.splits["train"]) == 10
    assert set(ten.split_indices["train"]) < set(twenty.split_indices["train"]) < set(full.split_indices["train"])
    assert ten.split_indices["val"].tolist() == full.split_indices["val"].tolist()  # the subset leaves val alone
    counts = np.bincount(twenty.splits["train"].labels.numpy(), minlength=10)
    assert counts.min() >= 1 and counts.max() - counts.min() <= 1, counts  # every class, in proportion
    assert twenty.split_indices["train"].tolist() == module(20).split_indices["train"].tolist()
    assert twenty.split_indices["train"].tolist() != module(20, seed=1).split_indices["train"].tolist()
    assert module(54).split_indices["train"].tolist() == full.split_indices["train"].tolist()
    for bad in (55, 0, -3):
        with pytest.raises(ConfigError, match=rf"^data\.train_subset: {bad} is invalid; expected") as error:
            FashionMNISTDataModule(str(tmp_path), train_subset=bad)
        assert "\n" not in str(error.value)


# -- the checks: one line naming the file ------------------------------------------------------------------
def _rewrite(name: str, change: Callable[[bytes], bytes]) -> Callable[[Path], None]:
    def apply(folder: Path) -> None:
        path = folder / name
        path.write_bytes(change(path.read_bytes()))
    return apply


def _replace(name: str, array: np.ndarray, **header: object) -> Callable[[Path], None]:
    return lambda folder: (folder / name).write_bytes(idx_bytes(array, **header))  # type: ignore[arg-type]


def _cut_gzip(folder: Path) -> None:
    path = folder / f"{NAMES[0]}.gz"
    path.write_bytes(path.read_bytes()[:-300])


BAD_FILES: dict[str, tuple[str, Callable[[Path], None], str, str]] = {
    # case: (layout, break it, the file named, the problem)
    "file-missing": ("plain", lambda f: (f / NAMES[3]).unlink(), "",
                     r"lacks t10k-labels-idx1-ubyte \(expected the four Fashion-MNIST files train-images-idx3-ubyte, "
                     r"train-labels-idx1-ubyte, t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte, each plain or \.gz.*"
                     r"dataset-fashion-mnist.*download=True"),
    "truncated": ("plain", _rewrite(NAMES[0], lambda b: b[:-100]), NAMES[0],
                  r"is truncated: its header promises 60 images of 28x28 pixels \(47040 bytes after the header\), it "
                  r"holds 46940; copy it again$"),
    "truncated-labels": ("plain", _rewrite(NAMES[1], lambda b: b[:20]), NAMES[1],
                         r"is truncated: its header promises 60 labels \(60 bytes after the header\), it holds 12"),
    "cut-header": ("plain", _rewrite(NAMES[2], lambda b: b[:10]), NAMES[2],
                   r"is truncated: 10 bytes, shorter than its 16-byte IDX header"),
    "truncated-gzip": ("gzip", _cut_gzip, f"{NAMES[0]}.gz", r"is not a complete gzip file \("),
    "magic-images": ("plain", _replace(NAMES[2], np.zeros((N_TEST, 28, 28)), magic=2049, dims=(N_TEST,)),
                     NAMES[2], r"has magic number 2049 \(0x00000801\), expected 2051 \(0x00000803, IDX images\)"),
    "gzip-without-gz": ("plain", lambda f: (f / NAMES[1]).write_bytes(gzip.compress(idx_bytes(fake_data()[NAMES[1]]))),
                        NAMES[1], r"has magic number .*; a gzipped file's name must end in \.gz$"),
    "corrupt-gzip": ("gzip", lambda f: (f / f"{NAMES[1]}.gz").write_bytes(b"\x1f\x8b" + b"x" * 40), f"{NAMES[1]}.gz",
                     r"(is not a complete gzip file|cannot be read) \("),
    "magic-foreign": ("plain", _rewrite(NAMES[1], lambda b: b"\x00\x00\x08\x02" + b[4:]), NAMES[1],
                      r"has magic number 2050 \(0x00000802\), expected 2049 \(0x00000801, IDX labels\); it is not a "
                      r"Fashion-MNIST labels file"),
    "count-mismatch": ("plain", _replace(NAMES[3], np.zeros(N_TEST - 1)), NAMES[3],
                       rf"holds {N_TEST - 1} labels but '.*{NAMES[2]}' holds {N_TEST} images"),
    "not-28x28": ("plain", _replace(NAMES[0], np.zeros((N_TRAIN, 32, 32))), NAMES[0],
                  r"holds images of 32x32 pixels, expected 28x28"),
    "label-10": ("plain", _replace(NAMES[1], np.arange(N_TRAIN) % 11), NAMES[1],
                 r"holds label 10, expected labels 0\.\.9"),
    "extra-bytes": ("plain", _rewrite(NAMES[3], lambda b: b + b"\x00" * 5), NAMES[3],
                    r"holds 5 bytes more than its header's 20 labels"),
}


@pytest.mark.parametrize("case", list(BAD_FILES))
def test_a_broken_file_is_one_line_naming_it(tmp_path: Path, case: str) -> None:
    layout, breaks, name, problem = BAD_FILES[case]
    folder, _ = fabricate(tmp_path, layout)
    breaks(folder)
    with pytest.raises(ConfigError) as error:
        FashionMNISTDataModule(str(tmp_path))
    message = str(error.value)
    assert "\n" not in message and message.startswith("data.data_dir: ")
    assert re.search(rf"'{re.escape(str(folder / name))}' {problem}", message), message


def test_a_missing_folder_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"^data\.data_dir: '.*nowhere' is not a folder; install Debian's "
                                          r"dataset-fashion-mnist.*Downloading is disabled here\.$"):
        FashionMNISTDataModule(str(tmp_path / "nowhere"))


def test_an_incomplete_torchvision_folder_names_that_folder(tmp_path: Path) -> None:
    folder, _ = fabricate(tmp_path, "torchvision")
    for name in (NAMES[2], f"{NAMES[2]}.gz"):
        (folder / name).unlink()
    with pytest.raises(ConfigError, match=rf"^data\.data_dir: '{re.escape(str(folder))}' lacks {NAMES[2]} \("):
        FashionMNISTDataModule(str(tmp_path))


def test_a_file_fixed_after_a_failed_check_is_checked_again(tmp_path: Path) -> None:
    """The checks are cached per (file, size, mtime): a replaced file is a new file."""
    folder, data = fabricate(tmp_path)
    (folder / NAMES[1]).write_bytes(idx_bytes(data[NAMES[1]])[:-1])
    with pytest.raises(ConfigError, match="is truncated"):
        FashionMNISTDataModule(str(tmp_path))
    (folder / NAMES[1]).write_bytes(idx_bytes(data[NAMES[1]]))
    assert FashionMNISTDataModule(str(tmp_path)).files["train"][1].dims == (N_TRAIN,)


# -- through the command line and a real run ---------------------------------------------------------------
def tiny_fashion_config(data_dir: Path) -> dict:
    """The shipped base config on the fabricated folder, shrunk to a few steps."""
    config = load_config_files([BASE])
    config["model"]["vit"].update(embed_dim=16, depth=2, num_heads=2)
    config["data"]["init_args"].update(data_dir=str(data_dir), batch_size=8)
    config["trainer"].update(max_epochs=1, limit_train_batches=3, limit_val_batches=1, limit_test_batches=1,
                             enable_progress_bar=False)
    return config


def test_a_real_fit_on_fabricated_files(tmp_path: Path) -> None:
    fabricate(tmp_path / "fashion", "gzip")
    run_dir = tmp_path / "run"
    summary = train.run(tiny_fashion_config(tmp_path / "fashion"), run_dir)
    assert summary.status in ("completed", "collapsed")  # 3 steps may not leave chance: the collapse rule says so
    assert summary.steps == 3 and summary.epochs == 1 and 0.0 <= summary.test_acc <= 1.0
    assert summary.to_dict() == json.loads((run_dir / "summary.json").read_text())
    resolved = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert resolved["data"]["class_path"] == "stability.data.FashionMNISTDataModule"
    assert resolved["data"]["init_args"]["data_dir"] == str(tmp_path / "fashion")
    assert resolved["model"]["vit"]["img_size"] == 28 and resolved["model"]["vit"]["patch_size"] == 7


def _tree(folder: Path) -> dict[str, int]:
    return {str(p.relative_to(folder)): (p.stat().st_size if p.is_file() else -1) for p in sorted(folder.rglob("*"))}


CLI_CASES = {
    "folder-missing": (None, (), r"data\.data_dir: '.*fashion' is not a folder"),
    "file-missing": (lambda f: (f / f"{NAMES[1]}.gz").unlink(), (), r"lacks train-labels-idx1-ubyte \(expected"),
    "truncated": (_cut_gzip, (), rf"{NAMES[0]}\.gz' is not a complete gzip file"),
    "model-for-digits": (lambda f: None, ("--model.vit.img_size", "8", "--model.vit.patch_size", "2"),
                         r"model\.vit\.img_size: got 8, but the data \(FashionMNISTDataModule\) has img_size=28"),
}


@pytest.mark.parametrize("case", list(CLI_CASES))
def test_stability_fit_on_a_bad_folder_is_one_error_line(case: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    breaks, extra, match = CLI_CASES[case]
    if breaks is not None:
        folder, _ = fabricate(tmp_path / "fashion", "gzip")
        breaks(folder)
    tiny = tmp_path / "tiny.yaml"
    tiny.write_text(yaml.safe_dump({"model": {"vit": {"embed_dim": 16, "depth": 2, "num_heads": 2}},
                                    "trainer": {"max_epochs": 1, "limit_train_batches": 1}}))
    monkeypatch.chdir(tmp_path)
    before = _tree(tmp_path)
    capsys.readouterr()
    with lightning_logs_to_stderr():
        code = main(["fit", "--config", str(BASE), "--config", str(tiny),
                     "--data.class_path", "stability.data.FashionMNISTDataModule",
                     "--data.data_dir", str(tmp_path / "fashion"), *extra, "--run_dir", str(tmp_path / "run")])
    out, err = capsys.readouterr()
    assert code == 2 and out == "" and "Traceback" not in err
    assert len(err.splitlines()) == 1 and err.startswith("error: "), err
    assert re.search(match, err), err
    assert _tree(tmp_path) == before  # no run folder, nothing else
