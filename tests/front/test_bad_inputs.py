"""Every bad input gets one clear line, the documented exit code, no traceback, and leaves nothing behind.

Each case builds its inputs in a fresh folder (the working directory of the call), runs the real command
line in this process (``stability.cli.main``, as the ``stability`` script does) and checks:

- the exit code (2 for bad input, see ``stability/cli.py``);
- stderr is exactly one line, ``error: ...``, matching what the case expects (the file or key, the value);
  stdout is empty: nothing is printed before the error, Lightning's log lines included;
- no traceback anywhere;
- the folder holds exactly what it held before: no run folder, no plan.json, no temporary file.

A few cases run in a fresh interpreter (``test_in_a_fresh_interpreter``), where what Lightning prints at
import and the sweep's worker processes are real.
"""

from __future__ import annotations

import pickle
import re
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from sweep_helpers import BASE, ROOT, TINY, fabricate_cifar10, lightning_logs_to_stderr

import stability.training.run  # noqa: F401 - loaded here, so sweeps validate their grids in this process
from stability.cli import main

# The tiny digits config every `fit` case starts from (a file, as users pass it).
TINY_FIT = {
    "model": {"vit": {"embed_dim": 16, "depth": 2, "num_heads": 2, "mlp_ratio": 2.0}},
    "trainer": {"max_epochs": 1, "limit_train_batches": 2, "limit_val_batches": 1, "limit_test_batches": 1},
}
BOMB = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{n}: &{n} [{', '.join([f'*{p}'] * 9)}]\n" for p, n in zip("abcdefgh", "bcdefghi"))


@dataclass
class Case:
    """One bad input: ``build(folder)`` writes its files and returns the argv; the error line must match."""

    id: str
    build: Callable[[Path], list[str]]
    match: str
    code: int = 2


def write(folder: Path, name: str, content: str | bytes) -> Path:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    return path


def tiny_config(folder: Path) -> Path:
    return write(folder, "tiny.yaml", yaml.safe_dump(TINY_FIT))


def fit(*args: str) -> Callable[[Path], list[str]]:
    """`stability fit --config <base> --config <tiny> ARGS --run_dir run` (``{}`` in ARGS is the folder)."""
    def build(folder: Path) -> list[str]:
        return ["fit", "--config", str(BASE), "--config", str(tiny_config(folder)),
                *(a.format(folder) for a in args), "--run_dir", str(folder / "run")]
    return build


def fit_with(setup: Callable[[Path], None], *args: str) -> Callable[[Path], list[str]]:
    def build(folder: Path) -> list[str]:
        setup(folder)
        return fit(*args)(folder)
    return build


def fit_config(content: str | bytes) -> Callable[[Path], list[str]]:
    """`stability fit --config bad.yaml` with ``content`` in bad.yaml."""
    def build(folder: Path) -> list[str]:
        return ["fit", "--config", str(write(folder, "bad.yaml", content)), "--run_dir", str(folder / "run")]
    return build


def grid_text(body: str, base: str | None = None) -> str:
    return f"# a test grid\nbase: [{base or BASE}]\noverrides: {yaml.safe_dump(TINY, default_flow_style=True)}" + body


def sweep(body: str | bytes | None, *args: str, base: str | None = None) -> Callable[[Path], list[str]]:
    """`stability sweep grid.yaml ARGS --out out`, grid.yaml holding ``body`` (text after base+overrides)."""
    def build(folder: Path) -> list[str]:
        if body is not None:
            content = body if isinstance(body, bytes) else grid_text(body, base)
            write(folder, "grid.yaml", content)
        return ["sweep", str(folder / "grid.yaml"), *(a.format(folder) for a in args), "--out", str(folder / "out")]
    return build


def sweep_with(setup: Callable[[Path], object], body: str, *args: str, base: str | None = None
               ) -> Callable[[Path], list[str]]:
    """As :func:`sweep`, then ``setup(folder)`` (which may read the grid)."""
    def build(folder: Path) -> list[str]:
        argv = sweep(body, *args, base=base)(folder)
        setup(folder)
        return argv
    return build


# -- data folders ---------------------------------------------------------------------------------------
CIFAR_MODEL = ("--model.vit.img_size", "32", "--model.vit.patch_size", "4", "--model.vit.in_chans", "3")


def cifar(*extra: str, allow: bool = False) -> tuple[str, ...]:
    flags = ("--data.allow_unverified", "true") if allow else ()
    return ("--data.class_path", "stability.data.CIFAR10DataModule", "--data.data_dir", "{}/cifar",
            "--data.num_workers", "0", *flags, *CIFAR_MODEL, *extra)


def fake_cifar(folder: Path) -> None:
    fabricate_cifar10(folder / "cifar", per_file=2)


def cut_cifar_batch(folder: Path) -> None:
    fake_cifar(folder)
    path = folder / "cifar" / "cifar-10-batches-py" / "data_batch_2"
    path.write_bytes(path.read_bytes()[:300])


def foreign_cifar_batch(folder: Path) -> None:
    fake_cifar(folder)
    (folder / "cifar" / "cifar-10-batches-py" / "data_batch_4").write_bytes(pickle.dumps([1, 2, 3]))


def missing_cifar_batch(folder: Path) -> None:
    fake_cifar(folder)
    (folder / "cifar" / "cifar-10-batches-py" / "test_batch").unlink()


class _Planted:
    """What a planted pickle would build: unpickling it calls ``Path.touch`` on a marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (Path.touch, (self.marker,))


def planted_cifar(folder: Path) -> None:
    fake_cifar(folder)
    payload = {"data": _Planted(folder / "cifar" / "PWNED"), "labels": []}
    (folder / "cifar" / "cifar-10-batches-py" / "data_batch_1").write_bytes(pickle.dumps(payload))


def images(folder: Path, classes: tuple[str, ...] = ("a", "b", "c"), bad: str | None = None,
           splits: tuple[str, ...] = ("train", "val")) -> None:
    from PIL import Image

    for split in splits:
        for name in classes:
            (folder / f"images/{split}/{name}").mkdir(parents=True)
            Image.new("RGB", (12, 12), (40, 80, 120)).save(folder / f"images/{split}/{name}/0.png")
    if bad:
        write(folder, f"images/train/a/{bad}", b"GIF89a? not really an image")


IMAGES = ("--data.class_path", "stability.data.ImageFolderDataModule", "--data.data_dir", "{}/images",
          "--data.img_size", "8", "--data.num_workers", "0", "--model.vit.in_chans", "3")


# -- run and sweep folders -------------------------------------------------------------------------------
def run_dir_with_config(content: str | bytes) -> Callable[[Path], None]:
    def setup(folder: Path) -> None:
        write(folder, "run/config.yaml", content)
    return setup


def planned_with_one_thread(folder: Path) -> None:
    """A sweep folder planned with 1 thread per run, one of whose runs has started (it has a checkpoint)."""
    write(folder, "out/plan.json", '{"threads": 1, "runs": [{"run_name": "r0"}]}\n')
    write(folder, "out/r0/checkpoints/last.ckpt", b"")


def _only_run_name(folder: Path) -> str:
    from stability.sweep.grid import load_grid
    from stability.sweep.plan import make_plan

    (run,) = make_plan(load_grid(folder / "grid.yaml"))
    return run.run_name


def run_folder_holds_another_config(folder: Path) -> None:
    write(folder, f"out/{_only_run_name(folder)}/config.yaml", "seed_everything: 7\n")


def run_folder_is_a_file(folder: Path) -> None:
    write(folder, f"out/{_only_run_name(folder)}", "not a folder")


def binary_config_in_run_folder(folder: Path) -> None:
    write(folder, f"out/{_only_run_name(folder)}/config.yaml", bytes(range(128, 256)))


ONE_CELL = "axes: {model.vit.norm: [layernorm]}\n"

CASES = [
    # -- the top-level command -------------------------------------------------------------------------------
    Case("no-command", lambda f: [], r"^error: give a command: fit, sweep"),
    Case("unknown-command", lambda f: ["frobnicate"], r"unknown command 'frobnicate'; valid commands: fit, "),
    # -- `fit` arguments: ranges the code used to accept, or caught only once the run had started ---------------
    Case("lr-zero", fit("--model.lr", "0"), r"^error: model\.lr: got 0\.0; give a finite number > 0$"),
    Case("lr-negative", fit("--model.lr", "-1"), r"model\.lr: got -1\.0; give a finite number > 0"),
    Case("lr-nan", fit("--model.lr", ".nan"), r"model\.lr: got nan; give a finite number > 0"),
    Case("lr-text", fit("--model.lr", "abc"), r"model\.lr.*abc"),
    Case("weight-decay-negative", fit("--model.weight_decay", "-1"), r"model\.weight_decay: got -1\.0; give .*>= 0"),
    Case("label-smoothing-1.5", fit("--model.label_smoothing", "1.5"), r"label_smoothing: got 1\.5; .*\[0, 1\)"),
    Case("label-smoothing-negative", fit("--model.label_smoothing", "-0.1"), r"label_smoothing: got -0\.1"),
    Case("warmup-negative", fit("--model.warmup_epochs", "-1"), r"model\.warmup_epochs: got -1\.0"),
    Case("z-loss-negative", fit("--model.z_loss", "-1"), r"model\.z_loss: got -1\.0"),
    Case("momentum-1.5", fit("--model.optimizer", "sgd", "--model.momentum", "1.5"), r"model\.momentum: got 1\.5"),
    Case("betas-one-value", fit("--model.betas", "[0.9]"), r"model\.betas.*2 elements.*\[0\.9\]"),
    Case("beta-of-1", fit("--model.betas", "[0.9, 1.0]"), r"model\.betas\[1\]: got 1\.0; give a number in \[0, 1\)"),
    Case("optimizer-unknown", fit("--model.optimizer", "adam"),
         r"model\.optimizer: got 'adam'; valid values: adamw, sgd"),
    Case("toggle-typo", fit("--model.vit.norm", "centrenorm"), r"model\.vit\.norm: got 'centrenorm'; valid values: "),
    Case("heads-do-not-divide", fit("--model.vit.embed_dim", "15"), r"embed_dim=15 is not divisible by num_heads=2"),
    Case("img-size-not-the-data", fit("--model.vit.img_size", "16"),
         r"model\.vit\.img_size: got 16, but the data \(DigitsDataModule\) has img_size=8"),
    Case("classes-not-the-data", fit("--model.vit.num_classes", "5"), r"model\.vit\.num_classes: got 5, .*=10"),
    Case("channels-not-the-data", fit("--model.vit.in_chans", "3"), r"model\.vit\.in_chans: got 3, .*in_chans=1"),
    Case("union-float-or-null", fit("--model.vit.residual_init", "abc"),
         r"^error: model\.vit\.residual_init: got 'abc'; expected a number or null$"),
    Case("unknown-key", fit("--model.learning_rate", "0.1"), r"unrecognized arguments: --model\.learning_rate 0\.1"),
    Case("max-epochs-negative", fit("--trainer.max_epochs", "-3"),
         r"trainer\.max_epochs: got -3; give an integer >= 1"),
    Case("max-epochs-zero", fit("--trainer.max_epochs", "0"), r"trainer\.max_epochs: got 0"),
    Case("max-epochs-text", fit("--trainer.max_epochs", "abc"),
         r"trainer\.max_epochs: got 'abc'; expected an integer or null"),
    Case("accelerator-tpu", fit("--trainer.accelerator", "tpu"),
         r"trainer\.accelerator: 'tpu' is not usable on this machine \(.*\); usable here: auto, .*cpu"),
    Case("devices-text", fit("--trainer.accelerator", "cpu", "--trainer.devices", "foo"), r"trainer: .*devices"),
    Case("strategy-unknown", fit("--trainer.strategy", "foo"), r"trainer: .*invalid strategy name: `strategy='foo'`"),
    Case("precision-unknown", fit("--trainer.precision", "7"), r"trainer\.precision: got '7'; expected one of 64, "),
    Case("limit-batches-1.5", fit("--trainer.limit_val_batches", "1.5"), r"invalid value 1\.5 for limit_val_batches"),
    Case("limit-batches-text", fit("--trainer.limit_val_batches", "abc"),
         r"trainer\.limit_val_batches: got 'abc'; expected an integer or a number or null"),
    Case("val-check-interval-text", fit("--trainer.val_check_interval", "abc"), r"trainer: .*val_check_interval"),
    Case("callbacks-not-a-class", fit("--trainer.callbacks", "foo"), r"trainer\.callbacks: got 'foo'; expected a list"),
    Case("seed-negative", fit("--seed_everything", "-5"), r"seed_everything: got -5; give an integer from 0 to 4294"),
    Case("seed-text", fit("--seed_everything", "abc"), r"seed_everything: got 'abc'; expected true or false or an int"),
    Case("batch-size-zero", fit("--data.batch_size", "0"), r"data\.batch_size: 0 is invalid; expected an integer >= 1"),
    Case("batch-size-text", fit("--data.batch_size", "abc"),
         r"^error: data\.batch_size: got 'abc'; expected an integer$"),
    Case("data-module-missing", fit("--data.class_path", "nonexistent.Module"),
         r"data\.class_path: 'nonexistent\.Module' cannot be imported \(no module named 'nonexistent'\)"),
    Case("data-module-not-a-datamodule", fit("--data.class_path", "os.path.join"),
         r"data\.class_path: 'os\.path\.join' is not a LightningDataModule subclass"),
    Case("data-option-unknown", fit("--data.data_dir", "/x"),
         r"data\.data_dir: not an option of stability\.data\.DigitsDataModule; its options: batch_size, "),
    Case("val-fraction-1.5", fit("--data.val_fraction", "1.5"), r"data\.val_fraction: 1\.5 is invalid"),
    Case("divergence-factor-negative", fit("--divergence.loss_factor", "-1"), r"divergence\.loss_factor: got -1"),
    Case("nested-config-not-a-file", fit("--model.vit", "foo"), r"model\.vit: got 'foo'; expected a mapping"),
    # -- `fit --config` files ----------------------------------------------------------------------------------
    Case("config-missing", lambda f: ["fit", "--config", str(f / "nope.yaml")], r"--config .*nope\.yaml: no such file"),
    Case("config-is-a-folder", lambda f: ["fit", "--config", str(f)], r"is a folder; expected a YAML file"),
    Case("config-binary", fit_config(bytes(range(256)) * 8), r"bad\.yaml: not UTF-8 text \(byte 0x80 at line 2\)"),
    Case("config-latin-1", fit_config("model:\n  lr: 0.1  # caf\xe9\n".encode("latin-1")), r"bad\.yaml: not UTF-8"),
    Case("config-duplicate-key", fit_config("model:\n  lr: 0.1\n  lr: 0.2\n"),
         r"bad\.yaml: YAML error at line 3, column 3: key 'lr' is given twice \(first at line 2\)"),
    Case("config-a-list", fit_config("- model\n- lr\n"), r"bad\.yaml: expected a mapping .*got list"),
    Case("config-syntax", fit_config("model: [1, 2\nlr: 3\n"), r"bad\.yaml: YAML error at line 2"),
    Case("config-alias-bomb", fit_config(BOMB), r"bad\.yaml: expands to more than 100,000 values"),
    Case("config-too-large", fit_config("# " + "x" * (1 << 20) + "\n"), r"bad\.yaml: larger than 1 MiB"),
    Case("config-model-a-number", fit_config("model: 5\n"), r"^error: model: got 5; expected a mapping of its keys"),
    Case("config-model-a-list", fit_config("model: [1, 2]\n"), r"model: got \[1, 2\]; expected a mapping"),
    Case("config-vit-a-list", fit_config("model: {vit: [1]}\n"), r"model\.vit: got \[1\]; expected a mapping"),
    Case("config-trainer-a-list", fit_config("trainer: [1]\n"), r"trainer: got \[1\]; expected a mapping"),
    Case("config-control-character", fit_config("model: {lr: 0.1}\x00\n"), r"bad\.yaml: YAML error: control char"),
    # -- `fit` run folders and checkpoints --------------------------------------------------------------------
    Case("run-dir-under-a-file", lambda f: [*fit()(f)[:-1], str(write(f, "a-file", "x") / "run")],
         r"run_dir: cannot write to .*a-file/run"),
    Case("run-dir-is-a-file", fit_with(lambda f: write(f, "run", "x")), r"run_dir: .*/run is a file; give a folder"),
    Case("run-dir-holds-another-run", fit_with(run_dir_with_config("seed_everything: 7\n")),
         r"run_dir: .*/run holds a run with a different config\.yaml"),
    Case("run-dir-config-binary", fit_with(run_dir_with_config(bytes(range(128, 256)))),
         r"run_dir: .*/run holds a config\.yaml this program did not write \(.*not UTF-8"),
    Case("run-dir-config-a-list", fit_with(run_dir_with_config("- 1\n- 2\n")), r"config\.yaml holds a list, not a run"),
    Case("checkpoints-is-a-file", fit_with(lambda f: write(f, "run/checkpoints", "x")),
         r"run/checkpoints is in the way of the run's checkpoint \(it must be a folder\)"),
    Case("last-ckpt-is-a-folder", fit_with(lambda f: (f / "run/checkpoints/last.ckpt").mkdir(parents=True)),
         r"last\.ckpt is in the way of the run's checkpoint \(it must be a file\)"),
    # -- data folders: checked before the run folder exists -----------------------------------------------------
    Case("cifar-folder-missing", fit(*cifar()), r"data\.data_dir: '.*cifar' is not a folder; put torchvision's"),
    Case("cifar-batch-missing", fit_with(missing_cifar_batch, *cifar()), r"lacks test_batch \(expected data_batch_1"),
    Case("cifar-unverified", fit_with(fake_cifar, *cifar()),
         r"data_batch_1' is not the official CIFAR-10 file \(md5 [0-9a-f]{32}, expected c99cafc.*allow_unverified"),
    Case("cifar-planted-pickle", fit_with(planted_cifar, *cifar()), r"data_batch_1' is not the official CIFAR-10"),
    Case("cifar-cut-short", fit_with(cut_cifar_batch, *cifar(allow=True)),
         r"data_batch_2' cannot be unpickled \(.*\); it is not a CIFAR-10 python file"),
    Case("cifar-not-a-batch", fit_with(foreign_cifar_batch, *cifar(allow=True)),
         r"data_batch_4' holds a list, not a CIFAR dictionary"),
    Case("cifar-model-too-small", fit_with(fake_cifar, *cifar("--model.vit.img_size", "8", allow=True)),
         r"model\.vit\.img_size: got 8, but the data \(CIFAR10DataModule\) has img_size=32"),
    Case("image-not-an-image", fit_with(lambda f: images(f, bad="cat.png"), *IMAGES, "--model.vit.num_classes", "3"),
         r"data\.data_dir: '.*images/train/a/cat\.png' is not a readable image \(cannot identify"),
    Case("image-classes-not-the-model", fit_with(images, *IMAGES), r"model\.vit\.num_classes: got 10, .*=3"),
    Case("image-no-val", fit_with(lambda f: images(f, splits=("train",)), *IMAGES), r"has no val/ subfolder"),
    # -- grid files ---------------------------------------------------------------------------------------------
    Case("grid-missing", sweep(None), r"grid\.yaml: no such grid file"),
    Case("grid-is-a-folder", lambda f: ["sweep", str(f), "--out", str(f / "out")], r"is a folder; expected a YAML"),
    Case("grid-binary", sweep(bytes(range(256)) * 8), r"grid\.yaml: not UTF-8 text"),
    Case("grid-latin-1", sweep("# caf\xe9\nbase: [x]\n".encode("latin-1")), r"grid\.yaml: not UTF-8 text \(byte 0xe9"),
    Case("grid-syntax", sweep(b"base: [a\naxes: 1\n"), r"grid\.yaml: YAML error at line 2"),
    Case("grid-a-list", sweep(b"- base\n"), r"grid\.yaml: a grid file is a mapping with keys base, .*got list"),
    Case("grid-unknown-key", sweep("axis: {model.lr: [0.1]}\n"), r"unknown key 'axis'; valid keys: base, "),
    Case("grid-axis-twice", sweep("axes:\n  model.lr: [0.001]\n  model.lr: [0.01]\n"),
         r"grid\.yaml: YAML error at line \d+, column 3: key 'model\.lr' is given twice \(first at line \d+\)"),
    Case("grid-same-value-two-keys", sweep("axes: {data.batch_size: [8], data.init_args.batch_size: [16]}\n"),
         r"data\.init_args\.batch_size and data\.batch_size set the same config value; keep one"),
    Case("grid-alias-bomb", sweep(BOMB.encode()), r"grid\.yaml: expands to more than 100,000 values"),
    Case("grid-too-large", sweep(b"# " + b"x" * (1 << 20) + b"\n"), r"grid\.yaml: larger than 1 MiB"),
    Case("grid-10-million-cells", sweep("axes: {model.lr: " + str(list(range(1, 1001))) + ",\n"
                                        "       seed_everything: " + str(list(range(10000))) + "}\n"),
         r"the grid has 10,000,000 cells \(1000 model\.lr x 10000 seed_everything\), more than --max-cells 10,000"),
    Case("grid-10-million-cells-dry-run", sweep("seeds: 10000\naxes: {model.lr: " + str(list(range(1, 1001))) + "}\n",
                                                "--dry-run"), r"the grid has 10,000,000 cells \(10000 seeds x 1000 "),
    Case("grid-billion-seeds", sweep("seeds: 1000000000\n"), r"seeds: got 1,000,000,000 seeds, more than the 10,000"),
    Case("grid-base-missing", sweep(ONE_CELL, base="nope.yaml"), r"grid\.yaml: base: .*nope\.yaml does not exist"),
    Case("grid-base-is-a-folder", sweep(ONE_CELL, base="."), r"grid\.yaml: base: .* is a folder; give a config file"),
    Case("grid-base-binary", sweep_with(lambda f: write(f, "b.yaml", bytes(range(256))), ONE_CELL, base="b.yaml"),
         r"b\.yaml: not UTF-8 text"),
    Case("grid-base-duplicate-key", sweep_with(lambda f: write(f, "b.yaml", "model: {lr: 1}\nmodel: {lr: 2}\n"),
                                               ONE_CELL, base="b.yaml"),
         r"b\.yaml: YAML error at line 2, column 1: key 'model' is given twice"),
    Case("grid-axis-not-a-list", sweep("axes: {model.lr: 0.1}\n"), r"axes\.model\.lr: got 0\.1; an axis is a list"),
    Case("grid-toggle-typo", sweep("axes: {model.vit.norm: [layernorm, centrenorm]}\n"),
         r"grid\.yaml: run model\.vit\.norm=centrenorm: model\.vit\.norm: got 'centrenorm'; valid values"),
    Case("grid-lr-zero", sweep("axes: {model.lr: [0.001, 0]}\n"), r"run model\.lr=0: model\.lr: got 0\.0; give a fin"),
    Case("grid-weight-decay-negative", sweep(ONE_CELL + "include: [{model.weight_decay: -1}]\n"),
         r"run model\.weight_decay=-1: model\.weight_decay: got -1\.0"),
    Case("grid-label-smoothing-1.5", sweep("axes: {model.label_smoothing: [0.1, 1.5]}\n"),
         r"model\.label_smoothing: got 1\.5; give a number in \[0, 1\)"),
    Case("grid-max-epochs-negative", sweep("axes: {trainer.max_epochs: [-1]}\n"), r"trainer\.max_epochs: got -1; give"),
    Case("grid-img-size-not-the-data", sweep("axes: {model.vit.img_size: [16]}\n"),
         r"model\.vit\.img_size: got 16, but the data \(DigitsDataModule\) has img_size=8"),
    Case("grid-accelerator-tpu", sweep("axes: {trainer.accelerator: [tpu]}\n"), r"trainer\.accelerator: 'tpu' is not"),
    Case("grid-cifar-unverified", sweep_with(fake_cifar, "axes: {data.class_path: [stability.data.CIFAR10DataModule]}"
                                             "\n", "--set", "data.data_dir={}/cifar"), r"is not the official CIFAR-10"),
    Case("grid-all-excluded", sweep("axes: {model.lr: [0.1]}\nexclude: [{model.lr: 0.1}]\n"), r"no runs left"),
    Case("grid-exclude-not-an-axis", sweep(ONE_CELL + "exclude: [{model.lr: 0.1}]\n"),
         r"exclude\[0\]\.model\.lr: not an axis of this grid; axes: model\.vit\.norm"),
    Case("grid-bad-distribution", sweep("samples: {n: 2, params: {model.lr: {normal: [0, 1]}}}\n"),
         r"samples\.params\.model\.lr: got \{'normal': \[0, 1\]\}; give exactly one of log_uniform, uniform, choice"),
    Case("grid-into-a-scalar", sweep(ONE_CELL, "--set", "model.lr.x=1"), r"model\.lr\.x: 'model\.lr' is 0\.003 in"),
    # -- sweep options ------------------------------------------------------------------------------------------
    Case("set-without-value", sweep(ONE_CELL, "--set", "model.lr"), r"--set: got 'model\.lr'; give KEY=VALUE"),
    Case("set-bad-yaml", sweep(ONE_CELL, "--set", "model.lr=[1"), r"--set model\.lr: '\[1' is not a YAML value"),
    Case("shard-out-of-range", sweep(ONE_CELL, "--shard", "3/2"), r"--shard: got '3/2'; give I/N with 0 <= I < N"),
    Case("workers-zero", sweep(ONE_CELL, "--workers", "0"), r"--workers: got 0; give an integer >= 1"),
    Case("threads-zero", sweep(ONE_CELL, "--threads", "0"), r"--threads: got 0; give an integer >= 1"),
    Case("workers-text", sweep(ONE_CELL, "--workers", "abc"),
         r"stability sweep: argument --workers: invalid int value"),
    Case("max-cells-zero", sweep(ONE_CELL, "--max-cells", "0"), r"--max-cells: got 0; give an integer >= 1"),
    Case("option-unknown", sweep(ONE_CELL, "--frobnicate"), r"unrecognized arguments: --frobnicate"),
    Case("slurm-with-shard", sweep(ONE_CELL, "--executor", "slurm", "--shard", "0/2"), r"--shard: not used with"),
    # -- sweep folders ------------------------------------------------------------------------------------------
    Case("out-is-a-file", lambda f: [*sweep(ONE_CELL)(f)[:-1], str(write(f, "out", "x"))], r"--out: .*out is a file"),
    Case("out-under-a-file", lambda f: [*sweep(ONE_CELL)(f)[:-1], str(write(f, "x", "x") / "out")],
         r"x/out: a file is in the way where a folder is needed"),
    Case("threads-changed-mid-sweep", sweep_with(planned_with_one_thread, ONE_CELL, "--threads", "2"),
         r"--threads 2: the sweep in .*out was planned with 1 thread per run and 1 of its runs have started"),
    Case("run-folder-holds-another-config", sweep_with(run_folder_holds_another_config, ONE_CELL),
         r"config\.yaml: not the config of this run \(id [0-9a-f]{8}\), though the folder has its name"),
    Case("run-folder-config-binary", sweep_with(binary_config_in_run_folder, ONE_CELL),
         r"config\.yaml: not a config this program wrote \(.*not UTF-8 text"),
    Case("run-folder-is-a-file", sweep_with(run_folder_is_a_file, ONE_CELL),
         r"a file where this sweep keeps a run's folder; move it away"),
    # -- report -------------------------------------------------------------------------------------------------
    Case("report-missing-folder", lambda f: ["report", str(f / "nowhere")], r"nowhere' does not exist"),
    Case("report-bad-format", lambda f: ["report", str(f), "--format", "pdf"], r"--format: got 'pdf'; valid values"),
    Case("report-out-empty", lambda f: ["report", str(f), "--out", ""], r"argument --out: got ''; give a folder"),
    Case("sweep-out-empty", lambda f: [*sweep(ONE_CELL)(f)[:-1], ""], r"argument --out: got ''; give a folder"),
    # -- bench ----------------------------------------------------------------------------------------------------
    Case("bench-reps-0", lambda f: ["bench", "model", "--reps", "0"], r"--reps: got 0; give a whole number >= 1"),
    Case("bench-steps-0", lambda f: ["bench", "model", "--steps", "0"], r"--steps: got 0; give a whole number"),
    Case("bench-batch-0", lambda f: ["bench", "model", "--batch", "0"], r"--batch: got 0; give a whole number"),
    Case("bench-threads-negative", lambda f: ["bench", "telemetry", "--threads", "-3"],
         r"argument --threads: got -3; give a whole number >= 0"),
    Case("bench-every-0", lambda f: ["bench", "telemetry", "--every", "0"], r"argument --every: got 0"),
    Case("bench-lipschitz-reps-x", lambda f: ["bench", "lipschitz", "--reps", "x"], r"argument --reps: got 'x'"),
    Case("bench-device-unknown", lambda f: ["bench", "model", "--device", "tpu"], r"argument --device: invalid choice"),
    Case("bench-sweep-fraction-1-0", lambda f: ["bench", "sweep", "--fraction", "1/0"],
         r"--fraction: got '1/0'; give 1/K with a whole K >= 1"),
    Case("bench-sweep-workers-0", lambda f: ["bench", "sweep", "--workers", "0,1"], r"--workers: got '0,1'"),
]


def tree(folder: Path) -> dict[str, int]:
    """Every path under ``folder`` (files with their size, folders as -1)."""
    return {str(p.relative_to(folder)): (p.stat().st_size if p.is_file() else -1) for p in sorted(folder.rglob("*"))}


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="a GPU is visible: --device cuda is valid")
def test_bench_on_cuda_without_a_gpu_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "model", "--device", "cuda"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["error: stability bench: --device cuda: no CUDA GPU is visible here; use --device cpu"]


def test_the_suite_is_large() -> None:
    assert len(CASES) >= 60 and len({c.id for c in CASES}) == len(CASES)


def check_case(case: Case, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
               capsys: pytest.CaptureFixture[str]) -> None:
    """Run one bad input in this process: exit ``case.code``, one ``error:`` line matching ``case.match``,
    nothing on stdout, no traceback, nothing written."""
    monkeypatch.chdir(tmp_path)
    argv = case.build(tmp_path)
    before = tree(tmp_path)
    capsys.readouterr()
    with lightning_logs_to_stderr():
        code = main(argv)
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    assert err.splitlines() and err.splitlines()[0].startswith("error: "), err
    assert len(err.splitlines()) == 1, err
    assert out == "", out
    assert re.search(case.match, err.strip()), err
    assert code == case.code, err
    assert tree(tmp_path) == before  # no run folder, no plan.json, no temporary file


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input(case: Case, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                   capsys: pytest.CaptureFixture[str]) -> None:
    check_case(case, tmp_path, monkeypatch, capsys)


def test_a_planted_cifar_pickle_is_never_unpickled(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    """CIFAR files are pickles: a planted one would run code when read. Unverified files are refused by
    their checksum before anything reads them; the same file with the explicit opt-in does run (which is
    why the README says to set it only for trusted files)."""
    monkeypatch.chdir(tmp_path)
    argv = fit_with(planted_cifar, *cifar())(tmp_path)
    assert main(argv) == 2
    assert not (tmp_path / "cifar" / "PWNED").exists()
    assert main([*argv[:-2], "--data.allow_unverified", "true", *argv[-2:]]) == 2  # then no valid batch...
    assert (tmp_path / "cifar" / "PWNED").exists()  # ...but the pickle did run: the opt-in means trust
    assert "data_batch_1" in capsys.readouterr().err


def test_a_grid_may_be_huge_on_purpose(tmp_path: Path) -> None:
    """--max-cells raises the bound; the count is arithmetic, so a huge grid is refused in milliseconds."""
    from stability.sweep.grid import count_cells, load_grid

    grid = write(tmp_path, "grid.yaml", grid_text("seeds: 3\naxes: {model.lr: [0.1, 0.2], model.vit.norm: "
                                                  "[layernorm, rmsnorm]}\ninclude: [{model.vit.stem: conv, "
                                                  "model.lr: [0.1, 0.3]}]\n"))
    assert count_cells(load_grid(grid)) == 3 * (4 + 2)
    with pytest.raises(Exception, match="the grid has 18 cells"):
        load_grid(grid, max_cells=17)
    assert count_cells(load_grid(grid, max_cells=18)) == 18


def test_limit_batches_keep_their_type() -> None:
    """``limit_val_batches: 1`` is one batch (an int), ``1.0`` all of them: the parser must not turn one into
    the other (the smoke grid's "1 batch" ran the whole validation set)."""
    from stability.training.cli import parse

    config = yaml.safe_load(BASE.read_text())
    config["trainer"].update(limit_val_batches=1, limit_train_batches=0.5, limit_test_batches=1.0)
    resolved = parse(config).config_dump_dict()["trainer"]
    assert resolved["limit_val_batches"] == 1 and isinstance(resolved["limit_val_batches"], int)
    assert resolved["limit_test_batches"] == 1.0 and isinstance(resolved["limit_test_batches"], float)
    assert resolved["limit_train_batches"] == 0.5


FRESH = [
    # a Trainer is built to check the settings: it reports the hardware and Lightning seeds first
    pytest.param(["fit", "--config", str(BASE), "--trainer.accelerator", "tpu", "--run_dir", "run"],
                 r"trainer\.accelerator: 'tpu'", id="fit-accelerator"),
    pytest.param(["fit", "--config", str(BASE), "--model.lr", "0", "--run_dir", "run"], r"model\.lr: got 0\.0",
                 id="fit-bad-value", marks=pytest.mark.slow),
]


@pytest.mark.parametrize(("argv", "match"), FRESH)
def test_in_a_fresh_interpreter(argv: list[str], match: str, tmp_path: Path) -> None:
    """What a user sees: Lightning's import-time and seeding lines, warnings and all, in a new process."""
    done = subprocess.run([sys.executable, "-m", "stability.cli", *argv], capture_output=True, text=True,
                          cwd=tmp_path, timeout=300, env=_env())
    assert done.returncode == 2, done.stderr
    assert done.stdout == "" and len(done.stderr.splitlines()) == 1, done.stderr
    assert done.stderr.startswith("error: ") and re.search(match, done.stderr), done.stderr
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_a_bad_grid_stops_the_workers_before_anything_is_written(tmp_path: Path) -> None:
    """From a fresh interpreter the sweep's workers validate the cells; a bad cell ends them all, one line."""
    grid = write(tmp_path, "grid.yaml", grid_text("axes: {model.lr: [0.001, 0.002, 0.003, 0]}\n"))
    done = subprocess.run([sys.executable, "-m", "stability.cli", "sweep", str(grid), "--out", "out",
                           "--workers", "2"], capture_output=True, text=True, cwd=tmp_path, timeout=300, env=_env())
    assert done.returncode == 2, done.stderr
    assert done.stdout == "" and len(done.stderr.splitlines()) == 1, done.stderr
    assert re.search(r"run model\.lr=0: model\.lr: got 0\.0", done.stderr), done.stderr
    assert [p.name for p in tmp_path.iterdir()] == ["grid.yaml"]


def _env() -> dict[str, str]:
    import os

    return {**os.environ, "PYTHONPATH": str(ROOT)}
