"""Helpers for the sweep tests: tiny grid files in the real format, sweeps run through the real CLI."""

from __future__ import annotations

import contextlib
import hashlib
import io
import logging
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
BASE = ROOT / "ablations" / "base" / "digits.yaml"
SMOKE = ROOT / "ablations" / "smoke.yaml"
# A finished run that did not diverge. Runs of a few steps rarely leave chance accuracy, and the collapse rule
# (stability.training.collapse) rightly records them as collapsed; the sweep's mechanics treat both alike.
TRAINED = ("completed", "collapsed")

# A ViT small enough that a run of a few steps takes about a second on one core.
TINY = {
    "model.vit.embed_dim": 16,
    "model.vit.depth": 2,
    "model.vit.num_heads": 2,
    "model.vit.mlp_ratio": 2.0,
    "model.warmup_epochs": 0.5,
    "trainer.max_epochs": 1,
    "trainer.limit_train_batches": 2,
    "trainer.limit_val_batches": 1,
    "trainer.limit_test_batches": 1,
}


def write_grid(folder: Path, name: str, body: dict[str, Any], comment: str = "test grid") -> Path:
    """Write a grid file whose base is the real digits base config."""
    folder.mkdir(parents=True, exist_ok=True)
    body = {"base": [str(BASE)], **body}
    path = folder / f"{name}.yaml"
    path.write_text(f"# {comment}\n" + yaml.safe_dump(body, sort_keys=False))
    return path


def tree_digest(folder: Path) -> dict[str, str]:
    """sha256 of every file under ``folder`` by relative path: equal digests = byte-identical trees."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@dataclass
class SweepResult:
    out: Path
    rc: int
    stdout: str
    stderr: str


def run_sweep(argv: list[str], out: Path) -> SweepResult:
    """``stability sweep ARGV --out OUT`` in this process (its workers are real processes)."""
    from stability.sweep.cli import main

    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        rc = main([*argv, "--out", str(out)])
    return SweepResult(out, rc, stdout.getvalue(), stderr.getvalue())


def summaries(out: Path) -> dict[str, dict[str, Any]]:
    """Run folder name -> its summary.json."""
    import json

    return {p.parent.name: json.loads(p.read_text()) for p in sorted(out.glob("*/summary.json"))}


def fabricate_cifar10(root: Path, per_file: int = 8) -> Path:
    """A folder in torchvision's CIFAR-10 python format (5 training batches, a test batch, the meta file),
    filled with random images: enough for the real data module to load and train on."""
    import pickle

    import numpy as np

    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {"batch_label": name, "data": rng.integers(0, 256, (per_file, 3 * 32 * 32), dtype=np.uint8),
                 "labels": [int(x) for x in rng.integers(0, 10, per_file)],
                 "filenames": [f"{name}_{i}.png" for i in range(per_file)]}
        (folder / name).write_bytes(pickle.dumps(batch, protocol=2))
    meta = {"label_names": [f"class{i}" for i in range(10)], "num_cases_per_batch": per_file, "num_vis": 3072}
    (folder / "batches.meta").write_bytes(pickle.dumps(meta, protocol=2))
    return root


@contextlib.contextmanager
def lightning_logs_to_stderr() -> Iterator[None]:
    """Point Lightning's log handlers, which hold the stderr of import time, at the current ``sys.stderr``
    (the one ``capsys`` captures during the test's call), so a line Lightning prints is seen."""
    handlers = [h for name in ("lightning", "lightning.pytorch", "lightning.fabric")
                for h in logging.getLogger(name).handlers if isinstance(h, logging.StreamHandler)]
    streams = [h.stream for h in handlers]
    for handler in handlers:
        handler.stream = sys.stderr
    try:
        yield
    finally:
        for handler, stream in zip(handlers, streams, strict=True):
            handler.stream = stream
