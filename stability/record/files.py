"""A run folder's record: its file names, the statuses a run can have, and ``summary.json`` as a typed record.

Plain Python (no torch, no Lightning): the training run writes the record, the sweep reads it to decide
what is left to run, and the results loader turns records into tables, all through this module.

A run folder::

    config.yaml             the fully resolved config, written first
    events.out.tfevents.*   TensorBoard events (per-step curves)
    checkpoints/last.ckpt   the rolling checkpoint a resumed run continues from
    summary.json            the result (:class:`RunSummary`), written atomically and last
    .sweep.lock             flock'ed while a sweep worker runs the cell
    output.log              what the run printed (sweep worker processes only)
    traceback.txt           why a failed run failed
    kills.json              how often a sweep worker running the cell was killed by a signal (OOM killer)
    last.unreadable-N.ckpt  a checkpoint that could not be read, set aside when the run started again

and a sweep folder holds ``plan.json`` (every cell, written before any run starts) beside its run folders.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import secrets
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from stability.record.checked_read import RecordError, check_summary_fields, parse_json, read_bounded

# -- file names --------------------------------------------------------------------------------------------
CONFIG = "config.yaml"
SUMMARY = "summary.json"
EVENTS_GLOB = "events.out.tfevents.*"
CHECKPOINTS = "checkpoints"
LAST_CKPT = Path(CHECKPOINTS) / "last.ckpt"
PLAN = "plan.json"
LOCK = ".sweep.lock"
OUTPUT = "output.log"
TRACEBACK = "traceback.txt"
KILLS = "kills.json"
UNREADABLE_CKPT = "last.unreadable-{n}.ckpt"  # in the run folder, not in checkpoints/ (Lightning scans that)

# -- statuses ----------------------------------------------------------------------------------------------
# What summary.json can say:
COMPLETED = "completed"  # trained to the end and tested
DIVERGED = "diverged"  # stopped when the loss became non-finite or exploded; a result, not an error
COLLAPSED = "collapsed"  # trained to the end but learned nothing: quiet failure (see stability.training.collapse)
FAILED = "failed"  # raised (bad hardware, out of memory, a bug): not a result; a sweep may retry it
# Inferred from the folder when there is no summary (see :mod:`stability.record.status`):
RUNNING = "running"  # a process is on it now
INCOMPLETE = "incomplete"  # it logged, then stopped without a summary: cut off, resumable
PENDING = "pending"  # planned, never started

FINISHED = (COMPLETED, DIVERGED, COLLAPSED)  # results: their numbers go into tables and they are never re-run
RECORDED = (*FINISHED, FAILED)  # the statuses a summary.json holds
STATUSES = (*RECORDED, RUNNING, INCOMPLETE, PENDING)


@dataclass
class RunSummary:
    """``summary.json``: what a run did, written once, last, by the run (or by the sweep for a run that died).

    Every field but the first three is None where it is not known (a run that failed before training, a
    diverged run's test accuracy). Keys a newer version wrote and this one does not know are kept in
    ``extra`` and written back unchanged.
    """

    status: str  # one of RECORDED
    run_name: str  # the run folder's name
    run_id: str  # identity.config_hash of the resolved config
    toggles: dict[str, Any] | None = None  # identity.toggles_of(config)
    hparams: dict[str, Any] | None = None  # identity.hparams_of(config)
    diverged_step: int | None = None  # global step at which the divergence detector stopped the run
    divergence_reason: str | None = None
    collapse_reason: str | None = None  # why a run counts as collapsed (stability.training.collapse)
    error: str | None = None  # first line of the exception of a failed run
    steps: int | None = None  # optimiser steps taken
    epochs: int | None = None
    wall_time_s: float | None = None  # fit + test, this process
    train_time_s: float | None = None  # training steps only
    images_per_s: float | None = None  # training throughput
    params: int | None = None
    flops_per_image: int | None = None  # forward pass
    initial_loss: float | None = None  # training loss of the first step (the divergence reference)
    final_train_loss: float | None = None
    final_val_acc: float | None = None  # after the last epoch
    best_val_acc: float | None = None  # best over epochs: optimistic on a small validation set
    final_val_loss: float | None = None
    best_val_loss: float | None = None
    test_acc: float | None = None  # the final model on the test split
    test_loss: float | None = None
    max_grad_norm: float | None = None  # largest finite global gradient norm; None when none was finite
    max_attn_logit: float | None = None  # largest over the probes (the failure probe included); None: none ran
    max_log_z: float | None = None  # largest batch-mean log-partition of the output logits (Wortsman et al.)
    # A diverged run's telemetry at the step the divergence detector fired, measured whatever
    # telemetry.every_n_steps says (the keys and their meaning: stability.training.telemetry, failure_at): the
    # step's loss, log Z, lr and gradient norms, the attention stats and update ratios of the weights that
    # produced the diverging loss, and the last steps' and probes' values up to it (window, probes). E.g.
    #   {"step": 2, "probe": "replayed", "loss": 24.8, "log_z": 9.6, "lr": 1.0, "grad_norm": 32.9,
    #    "max_attn_logit": 13.2, "attn_max_logit": [4.1, 13.2], "attn_entropy": [2.7, 0.4],
    #    "grad_norm_blocks": [...], "update_ratio_blocks": [...],
    #    "window": [{"step": 0, "loss": 2.31, "grad_norm": 1.2, "log_z": 2.4, "lr": 1.0}, ...], "probes": [...]}
    # None for every other run, and then absent from summary.json: the records of runs that did not diverge
    # are unchanged.
    failure: dict[str, Any] | None = None
    train_loss_history: list[float] | None = None  # mean training loss of each epoch
    val_acc_history: list[float] | None = None  # validation accuracy after each epoch
    # Lipschitz measurements (stability.training.lipschitz_monitor), the model in evaluation mode, inputs in [0, 1]
    # pixel space, l2 norms. Upper bounds are None when unbounded (then lipschitz_unbounded says why) or not
    # measured; certified accuracies are on the test split, keyed by radius written with 4 significant digits
    # ("0.1412" = 36/255), and are 0 at every radius > 0 for an unbounded model.
    lipschitz_upper: float | None = None  # bound of the whole network, pixels -> logits
    lipschitz_backbone: float | None = None  # bound up to the head's input (LipShiFT's reported figure)
    lipschitz_unbounded: str | None = None  # the layers without a global bound and why; None when bounded
    lipschitz_lower: float | None = None  # empirical lower bound of the network's constant (<= upper)
    certified_acc: dict[str, float] | None = None  # radius -> certified robust accuracy, head-aware certificate
    certified_acc_sqrt2: dict[str, float] | None = None  # radius -> the same with the plain sqrt(2) L form
    # torch intra-op threads the run used: float reductions are split by thread, so the last digits of every
    # number depend on it (a sweep fixes it in its plan; it is not part of the run's identity)
    threads: int | None = None
    versions: dict[str, str] | None = None  # stability, torch, lightning, timm, python
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The JSON object: fields in declaration order, then the unknown keys that were read."""
        data = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "extra"}
        if data["failure"] is None:  # written for diverged runs only (see the field)
            del data["failure"]
        return {**data, **self.extra}

    @classmethod
    def from_dict(cls, data: Any, source: str = SUMMARY) -> RunSummary:
        """Validate a parsed summary.json field by field (:mod:`stability.record.checked_read`); raises
        :class:`RecordError` naming ``source``, the field and what it held."""
        if not isinstance(data, dict):
            raise RecordError(f"{source}: expected a JSON object, got {type(data).__name__}")
        if data.get("status") not in RECORDED:
            raise RecordError(f"{source}: status {data.get('status')!r} is not one of {', '.join(RECORDED)}")
        for key in ("toggles", "hparams", "versions", "certified_acc", "certified_acc_sqrt2", "failure"):
            if data.get(key) is not None and not isinstance(data[key], dict):
                raise RecordError(f"{source}: {key} must be an object or null, got {type(data[key]).__name__}")
        check_summary_fields(data, source)
        names = {f.name for f in dataclasses.fields(cls)} - {"extra"}
        known = {k: v for k, v in data.items() if k in names}
        known.setdefault("run_name", "")
        known.setdefault("run_id", "")
        return cls(**known, extra={k: v for k, v in data.items() if k not in names})

    def write(self, run_dir: str | Path) -> Path:
        """Write ``<run_dir>/summary.json`` atomically."""
        path = Path(run_dir) / SUMMARY
        write_atomic(path, json.dumps(self.to_dict(), indent=2) + "\n")
        return path


def load_summary(run_dir: str | Path, root: str | Path | None = None) -> RunSummary | None:
    """The run's summary; None while there is none. Raises :class:`RecordError` if it cannot be read: not a
    regular file (a link is followed only inside the run folder or ``root``, the sweep folder), larger than
    any record, not JSON, or a field that is not what a run writes."""
    path = Path(run_dir) / SUMMARY
    data = read_bounded(path, [Path(root)] if root is not None else [])
    if data is None:
        return None
    return RunSummary.from_dict(parse_json(data, path), str(path))


def read_summary(run_dir: str | Path) -> RunSummary | None:
    """The run's summary, or None while there is none or it cannot be read (then the run counts as not
    finished, and re-running it writes a good one)."""
    try:
        return load_summary(run_dir)
    except RecordError:
        return None


def write_atomic(path: Path, text: str) -> None:
    """Write via a temporary file and rename: readers (and a killed writer) never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(path) as file:
        file.write(text.encode())


@contextlib.contextmanager
def atomic_file(path: Path) -> Iterator[IO[bytes]]:
    """A binary file that becomes ``path`` only once it is complete: written beside it under a temporary
    name, flushed to disk (fsync), then renamed over ``path``, and the folder entry synced.

    If anything fails (a full disk, an exception in the writer), the temporary file is removed and
    ``path`` keeps its previous content. The file is created with mode 0666 minus the umask, like any file
    a program writes, so a shared sweep folder is readable by whoever the umask lets read it.
    """
    tmp = path.parent / f".{path.name}.{secrets.token_hex(4)}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as file:
            yield file
            file.flush()
            os.fsync(file.fileno())
        os.replace(tmp, path)
    except BaseException as error:
        with contextlib.suppress(OSError):
            tmp.unlink()
        if isinstance(error, OSError) and error.filename is None:
            error.filename = str(path)  # a failed write() names no file; say which record it was
        raise
    with contextlib.suppress(OSError):  # the rename itself survives a crash once the folder is synced
        folder = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(folder)
        finally:
            os.close(folder)
