"""A user's own image folder that fits the model in nothing: one ``stability fit`` names every mismatch.

The model config stays authoritative (the run id is computed from it), so nothing is inferred; instead the
one error line lists channels, image size and classes together, with the values to set, so a first try with
a new folder takes one correction instead of three.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from PIL import Image
from sweep_helpers import BASE

from stability.cli import main

TINY = {"model": {"vit": {"embed_dim": 16, "depth": 1, "num_heads": 2, "mlp_ratio": 2.0}},
        "trainer": {"max_epochs": 1, "limit_train_batches": 1, "limit_val_batches": 1, "limit_test_batches": 1}}


def image_folder(root: Path, classes: int, side: int) -> Path:
    """``root/images/{train,val}/<class>/<n>.png``: real RGB PNGs of ``side`` x ``side`` pixels."""
    for split in ("train", "val"):
        for c in range(classes):
            folder = root / "images" / split / f"class{c}"
            folder.mkdir(parents=True)
            for n in range(2):
                Image.new("RGB", (side, side), (40 * c % 256, 10 * n, 120)).save(folder / f"{n}.png")
    return root / "images"


def fit_argv(tmp_path: Path, data_dir: Path, *extra: str) -> list[str]:
    tiny = tmp_path / "tiny.yaml"
    tiny.write_text(yaml.safe_dump(TINY))
    return ["fit", "--config", str(BASE), "--config", str(tiny),
            "--data.class_path", "stability.data.ImageFolderDataModule", "--data.data_dir", str(data_dir),
            "--data.img_size", "32", "--data.num_workers", "0", *extra, "--run_dir", str(tmp_path / "run")]


def test_every_mismatch_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # The digits base config is set for 1 channel, 8x8 images and 10 classes; the folder has 3, 32, 5.
    data_dir = image_folder(tmp_path, classes=5, side=32)
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    assert main(fit_argv(tmp_path, data_dir)) == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error: ")]
    assert len(errors) == 1, lines
    assert re.fullmatch(
        r"error: model\.vit: got in_chans=1, img_size=8, num_classes=10, but the data \(ImageFolderDataModule\) "
        r"has in_chans=3, img_size=32, num_classes=5; set --model\.vit\.in_chans 3 --model\.vit\.img_size 32 "
        r"--model\.vit\.num_classes 5", errors[0]), errors[0]
    assert "Traceback" not in "\n".join(lines)
    assert not (tmp_path / "run").exists()
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before + [Path("tiny.yaml")]


def test_the_values_it_names_are_enough(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Setting exactly what the line says makes the run go through (two training steps on the folder)."""
    data_dir = image_folder(tmp_path, classes=5, side=32)
    argv = fit_argv(tmp_path, data_dir, "--model.vit.in_chans", "3", "--model.vit.img_size", "32",
                    "--model.vit.patch_size", "8", "--model.vit.num_classes", "5", "--data.batch_size", "4")
    assert main(argv) == 0, capsys.readouterr().err
    assert (tmp_path / "run" / "config.yaml").is_file()
