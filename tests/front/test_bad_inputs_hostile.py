"""Inputs a hostile tester found: paths that hang or never end, a grid that names itself, image folders that link
to themselves, settings the sweep ignored, group config files that slipped past the strict reader, and output
under the C/POSIX locale.

Each case runs the real command line in this process, as :mod:`test_bad_inputs` does (its helpers are reused)
and under a timer (:func:`deadline`): a path that blocks fails the test instead of hanging the suite. Bad input
is one ``error:`` line naming the file or key, exit 2, no traceback, and nothing new in the folder; a few inputs
are valid and must run (exit 0). The locale cases run ``python -m stability.cli`` in a fresh interpreter with
``LC_ALL=POSIX PYTHONUTF8=0`` and no ``PYTHONIOENCODING``, where Python writes ASCII unless told otherwise.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml
from sweep_helpers import BASE, ROOT
from test_bad_inputs import (
    BOMB,
    IMAGES,
    ONE_CELL,
    Case,
    check_case,
    fit_with,
    grid_text,
    images,
    sweep,
    sweep_with,
    tree,
    write,
)

from stability.cli import main

SECONDS = 120  # a case that blocks on a FIFO or walks a link loop fails after this long instead of hanging


@pytest.fixture
def deadline() -> Iterator[None]:
    def expired(signum: int, frame: object) -> None:
        raise TimeoutError(f"still running after {SECONDS} s: blocked on a FIFO or walking a link loop?")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.alarm(SECONDS)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def fifo(name: str) -> Callable[[Path], object]:
    return lambda folder: os.mkfifo(folder / name)


def with_option(option: str, name: str, *extra: str, joined: bool = False) -> Callable[[Path], list[str]]:
    """`stability fit --config <base> OPTION folder/NAME [EXTRA] --run_dir run`, or OPTION=folder/NAME."""
    def build(folder: Path) -> list[str]:
        value = str(folder / name) if not name.startswith("/") else name
        pair = [f"{option}={value}"] if joined else [option, value]
        return ["fit", "--config", str(BASE), *pair, *extra, "--run_dir", str(folder / "run")]
    return build


def setup_then(setup: Callable[[Path], object], build: Callable[[Path], list[str]]) -> Callable[[Path], list[str]]:
    def both(folder: Path) -> list[str]:
        setup(folder)
        return build(folder)
    return both


def run_dir_override(folder: Path) -> list[str]:
    """A grid whose overrides send the runs to folder/elsewhere: which must not be created."""
    write(folder, "grid.yaml", f"base: [{BASE}]\noverrides: {{run_dir: '{folder}/elsewhere'}}\n{ONE_CELL}")
    return ["sweep", str(folder / "grid.yaml"), "--out", str(folder / "out")]


def base_with_run_dir(folder: Path) -> None:
    write(folder, "base-run.yaml", yaml.safe_dump({**yaml.safe_load(BASE.read_text()), "run_dir": "runs/mine"}))


def group_file(option: str, name: str, content: str | bytes, joined: bool = False) -> Callable[[Path], list[str]]:
    """`stability fit ... OPTION NAME`, NAME holding ``content``."""
    return setup_then(lambda folder: write(folder, name, content), with_option(option, name, joined=joined))


DUPLICATE_MODEL = "vit:\n  embed_dim: 16\n  embed_dim: 32\n"

CASES = [
    # 1. FIFOs and devices: refused by their mode, before anything opens them
    Case("grid-is-a-fifo", setup_then(fifo("grid.yaml"), sweep(None)), r"grid\.yaml: is a FIFO, not a regular file"),
    Case("grid-is-a-fifo-dry-run", setup_then(fifo("grid.yaml"), sweep(None, "--dry-run")),
         r"grid\.yaml: is a FIFO, not a regular file"),
    Case("grid-is-a-device", lambda f: ["sweep", "/dev/zero", "--out", str(f / "out")],
         r"^error: /dev/zero: is a device, not a regular file; expected a YAML file$"),
    Case("config-is-a-fifo", setup_then(fifo("c.yaml"), with_option("--config", "c.yaml")),
         r"c\.yaml: is a FIFO, not a regular file; expected a YAML file"),
    Case("model-is-a-fifo", setup_then(fifo("m.yaml"), with_option("--model", "m.yaml")), r"m\.yaml: is a FIFO"),
    Case("model-is-a-fifo-joined", setup_then(fifo("m.yaml"), with_option("--model", "m.yaml", joined=True)),
         r"m\.yaml: is a FIFO"),
    Case("data-is-a-fifo", setup_then(fifo("d.yaml"), with_option("--data", "d.yaml")), r"d\.yaml: is a FIFO"),
    Case("trainer-is-a-fifo", setup_then(fifo("t.yaml"), with_option("--trainer", "t.yaml")), r"t\.yaml: is a FIFO"),
    Case("trainer-is-a-device", with_option("--trainer", "/dev/zero"), r"/dev/zero: is a device, not a regular"),
    Case("base-is-a-fifo", sweep_with(fifo("b.yaml"), ONE_CELL, base="b.yaml"),
         r"grid\.yaml: base: .*b\.yaml is a FIFO, not a regular file; give a config file"),
    Case("base-is-a-device", sweep(ONE_CELL, base="/dev/zero"),
         r"grid\.yaml: base: /dev/zero is a device, not a regular file; give a config file"),
    # 2. a grid as the base
    Case("base-is-the-grid-itself", sweep(ONE_CELL, base="grid.yaml"),
         r"grid\.yaml: base: .*grid\.yaml is this grid file itself \(the grid names itself as its base\)"),
    Case("base-is-another-grid", setup_then(lambda f: write(f, "other.yaml", grid_text(ONE_CELL)),
                                            sweep(ONE_CELL, base="other.yaml")),
         r"grid\.yaml: base: .*other\.yaml is a grid file \(it has 'base:'\), not a config file"),
    # 3. an image that is a FIFO would block the header check
    Case("image-is-a-fifo", fit_with(lambda f: (images(f), os.mkfifo(f / "images/train/a/x.png")), *IMAGES,
                                     "--model.vit.num_classes", "3"),
         r"data\.data_dir: '.*images/train/a/x\.png' is a FIFO, not an image file"),
    # 4. claims that are not a list
    Case("claims-false", sweep(ONE_CELL + "claims: false\n"),
         r"grid\.yaml: claims: must be a list of claims, got false$"),
    Case("claims-true", sweep(ONE_CELL + "claims: true\n"), r"claims: must be a list of claims, got true$"),
    Case("claims-a-mapping", sweep(ONE_CELL + "claims: {claim: x}\n"), r"claims: must be a list .*, got \{claim: x\}$"),
    Case("claims-a-string", sweep(ONE_CELL + "claims: LaPE helps\n"), r"claims: must be a list .*, got LaPE helps$"),
    Case("claims-zero", sweep(ONE_CELL + "claims: 0\n"), r"claims: must be a list of claims, got 0$"),
    # 5. run_dir, wherever a grid could set it: the sweep names the run folders
    Case("run-dir-in-overrides", run_dir_override,
         r"grid\.yaml: overrides\.run_dir: the sweep names each run's folder itself .*give --out to pick the sweep"),
    Case("run-dir-top-level", sweep(ONE_CELL + "run_dir: elsewhere\n"), r"grid\.yaml: run_dir: the sweep names"),
    Case("run-dir-an-axis", sweep("axes: {run_dir: [a, b]}\n"), r"grid\.yaml: axes\.run_dir: the sweep names"),
    Case("run-dir-in-include", sweep(ONE_CELL + "include: [{run_dir: a}]\n"), r"include\[0\]\.run_dir: the sweep"),
    Case("run-dir-sampled", sweep("samples: {n: 2, params: {run_dir: {choice: [a, b]}}}\n"),
         r"samples\.params\.run_dir: the sweep names"),
    Case("run-dir-in-smoke", sweep(ONE_CELL + "smoke: {run_dir: a}\n"), r"smoke\.run_dir: the sweep names"),
    Case("run-dir-in-a-base", sweep_with(base_with_run_dir, ONE_CELL, base="base-run.yaml"),
         r"grid\.yaml: base: .*base-run\.yaml sets run_dir: the sweep names each run's folder itself"),
    # 6. group files go through the strict reader
    Case("model-duplicate-key", group_file("--model", "m.yaml", DUPLICATE_MODEL),
         r"m\.yaml: YAML error at line 3, column 3: key 'embed_dim' is given twice \(first at line 2\)"),
    Case("model-duplicate-key-joined", group_file("--model", "m.yaml", DUPLICATE_MODEL, joined=True),
         r"m\.yaml: YAML error at line 3, column 3: key 'embed_dim' is given twice"),
    Case("model-alias-bomb", group_file("--model", "m.yaml", BOMB),
         r"m\.yaml: expands to more than 100,000 values"),
    Case("model-binary", group_file("--model", "m.yaml", bytes(range(256)) * 8),
         r"m\.yaml: not UTF-8 text \(byte 0x80 at line 2\)"),
    Case("data-duplicate-key", group_file("--data", "d.yaml", "class_path: a\nclass_path: b\n", joined=True),
         r"d\.yaml: YAML error at line 2, column 1: key 'class_path' is given twice"),
    Case("trainer-duplicate-key", group_file("--trainer", "t.yaml", "max_epochs: 1\nmax_epochs: 2\n"),
         r"t\.yaml: YAML error at line 2, column 1: key 'max_epochs' is given twice"),
    Case("trainer-is-a-folder", setup_then(lambda f: (f / "t").mkdir(), with_option("--trainer", "t")),
         r"/t: is a folder; expected a YAML file"),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_hostile_input(case: Case, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                       capsys: pytest.CaptureFixture[str], deadline: None) -> None:
    check_case(case, tmp_path, monkeypatch, capsys)


def self_linked_images(folder: Path) -> None:
    """Three classes of one image each; class a holds two links to itself and one to its image."""
    images(folder)
    for link, target in (("self", "."), ("again", "."), ("copy.png", "0.png")):
        os.symlink(target, folder / "images/train/a" / link)


# Valid inputs the same checks must let through: they train (a tiny model, a few steps) and exit 0.
VALID = [
    pytest.param(fit_with(self_linked_images, *IMAGES, "--model.vit.num_classes", "3", "--data.batch_size", "1",
                          "--trainer.limit_train_batches", "1.0"), 3, id="image-folder-links-counted-once"),
    pytest.param(setup_then(lambda f: (write(f, "m.yaml", "vit: {embed_dim: 16, depth: 1, num_heads: 2}\n"),
                                       write(f, "t.yaml", "max_epochs: 1\nlimit_train_batches: 2\n"
                                                          "limit_val_batches: 1\nlimit_test_batches: 1\n")),
                            with_option("--model", "m.yaml", "--trainer", "t.yaml")), 2, id="group-files"),
]


@pytest.mark.parametrize(("build", "steps"), VALID)
def test_valid_input_still_runs(build: Callable[[Path], list[str]], steps: int, tmp_path: Path,
                                monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
                                deadline: None) -> None:
    """A self-linked class folder trains on its 3 images (one step each at batch size 1: a link loop counted
    them about twentyfold, two links never finished listing); group files set what they say."""
    monkeypatch.chdir(tmp_path)
    argv = build(tmp_path)
    code = main(argv)
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "Traceback" not in out + err and "error:" not in err
    summary = json.loads((tmp_path / "run" / "summary.json").read_text(encoding="utf-8"))
    assert summary["steps"] == steps
    config = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text(encoding="utf-8"))
    if "--model" in argv:
        assert (config["model"]["vit"]["embed_dim"], config["model"]["vit"]["depth"]) == (16, 1)


# -- 7. the C/POSIX locale -------------------------------------------------------------------------------------
HEADER = "# Grille d'essai \u2014 caf\u00e9 \u2713\n"
LAPE_CLAIM = ("claims:\n  - {claim: 'LaPE am\u00e9liore la pr\u00e9cision', treatment: {pos_embed: lape}, "
              "metric: final_val_acc, direction: increase, min_effect: 0.01}\n")


def posix(argv: list[str | bytes], cwd: Path) -> subprocess.CompletedProcess[bytes]:
    """``python -m stability.cli ARGV`` under ``LC_ALL=POSIX PYTHONUTF8=0``, output as bytes."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONIOENCODING", "PYTHONUTF8", "LANG", "LANGUAGE")
           and not k.startswith("LC_")}
    env.update(LC_ALL="POSIX", PYTHONUTF8="0", PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-m", "stability.cli", *argv], capture_output=True, cwd=cwd, env=env,
                          timeout=300)


def test_posix_locale_dry_run_prints_non_ascii_text(tmp_path: Path) -> None:
    grid = tmp_path / "grill\u00e9.yaml"
    grid.write_text(HEADER + grid_text("axes: {model.vit.pos_embed: [default, lape]}\n" + LAPE_CLAIM)
                    .removeprefix("# a test grid\n"), encoding="utf-8")
    done = posix(["sweep", grid.name, "--dry-run"], tmp_path)
    out, err = done.stdout.decode("utf-8"), done.stderr.decode("utf-8")  # strict: valid UTF-8 throughout
    assert done.returncode == 0, err
    assert "Traceback" not in out + err
    assert out.startswith("# Grille d'essai \u2014 caf\u00e9 \u2713\n"), out
    assert "2 runs -> runs/grill\u00e9: 0 finished" in out, out  # the file name readable, not \udcc3\udca9
    assert sorted(p.name for p in tmp_path.iterdir()) == [grid.name]


POSIX_ERRORS = [
    # a non-ASCII grid name in the error line
    pytest.param(lambda f: [write(f, "grill\u00e9.yaml", "# caf\u00e9\nbase: [b.yaml]\nclaims: false\n").name],
                 "sweep", rb"^error: grill\xc3\xa9\.yaml: base: b\.yaml does not exist\n$", id="utf-8-name"),
    # a name that is not UTF-8 at all: its byte comes back as it was, as `ls` shows it
    pytest.param(lambda f: [os.fsencode(write(f, os.fsdecode(b"caf\xe9.yaml"), "claims: false\n").name)],
                 "sweep", rb"^error: caf\xe9\.yaml: base: got None; give a config file", id="latin-1-name"),
    # jsonargparse reads --config files with the locale's encoding: a UTF-8 comment must not stop it
    pytest.param(lambda f: ["--config", str(BASE), "--config", write(f, "c.yaml", "# caf\u00e9 \u2014\nmodel: "
                                                                    "{lr: 0}\n").name, "--run_dir", "run"],
                 "fit", rb"^error: model\.lr: got 0\.0; give a finite number > 0\n$", id="utf-8-config"),
    # a claim in words, echoed in an error line
    pytest.param(lambda f: [write(f, "g.yaml", grid_text(ONE_CELL + LAPE_CLAIM, str(BASE))).name], "sweep",
                 rb"^error: g\.yaml: claims\[0\] \(\"LaPE am\xc3\xa9liore la pr\xc3\xa9cision\"\): treatment",
                 id="claim"),
]


@pytest.mark.parametrize(("build", "command", "match"), POSIX_ERRORS)
def test_posix_locale_error_line(build: Callable[[Path], list[str | bytes]], command: str, match: bytes,
                                 tmp_path: Path) -> None:
    argv = build(tmp_path)
    before = tree(tmp_path)
    done = posix([command, *argv, *(["--out", "out"] if command == "sweep" else [])], tmp_path)
    assert done.returncode == 2, done.stderr
    assert done.stdout == b"" and b"Traceback" not in done.stderr, done.stderr
    assert len(done.stderr.splitlines()) == 1 and re.search(match, done.stderr), done.stderr
    assert tree(tmp_path) == before
