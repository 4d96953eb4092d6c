"""A run's folder: where it is, whether this run may use it, creating it, the checkpoint the run resumes from,
and writing into it so that a full disk or a kill leaves the run resumable.

A run folder holds ``config.yaml`` (written first), TensorBoard events, ``checkpoints/last.ckpt`` and
``summary.json`` (written atomically, last). Re-running on the same folder resumes from ``last.ckpt``, after
removing the temporary files that a write cut off by a kill left behind (:func:`remove_stale_temp_files`).
"""

from __future__ import annotations

import contextlib
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.plugins import TorchCheckpointIO

from stability.errors import ConfigError, OutOfSpace, full_disk_error
from stability.record.config_files import read_yaml
from stability.record.files import CHECKPOINTS, CONFIG, LAST_CKPT, UNREADABLE_CKPT, atomic_file, write_atomic
from stability.record.identity import config_hash, run_name

# Keys of a run's config.yaml that say how it ran, not what it is, so they are not part of its id (the id leaves
# out where it ran, ``run_dir``, already): ``threads``, the torch thread count the run used.
PROCESS_KEYS = ("threads",)
# The name :func:`stability.record.files.atomic_file` gives the file it writes before renaming it: ".<name>.<8 hex
# digits>.tmp", beside the target (checkpoints and every record file of a run folder are written that way).
TEMP_NAME = re.compile(r"\..+\.[0-9a-f]{8}\.tmp")


def identity_config(config: dict[str, Any]) -> dict[str, Any]:
    """``config`` without :data:`PROCESS_KEYS`: what its run id is the hash of."""
    return {key: value for key, value in config.items() if key not in PROCESS_KEYS}


def resolve_run_dir(config: dict[str, Any], run_dir: str | Path | None = None, run_id: str | None = None) -> Path:
    """The explicit folder, else ``run_dir`` from the config, else ``runs/fit/<run name>`` (``run_id``: the
    config's id if known, so that the name does not hash the config again)."""
    return Path(run_dir or config.get("run_dir") or Path("runs") / "fit" / run_name(config, run_id=run_id))


def check_run_folder(run_dir: Path, run_id: str) -> None:
    """Raise ConfigError unless ``run_dir`` is new or holds the config whose id is ``run_id`` (where the folder
    lives, ``run_dir``, does not count, so a moved sweep folder still resumes) and nothing stands where its
    checkpoint goes."""
    if run_dir.exists() and not run_dir.is_dir():
        raise ConfigError(f"run_dir: {run_dir} is a file; give a folder (it is created if missing)")
    for path, kind in ((run_dir / LAST_CKPT.parent, "folder"), (run_dir / LAST_CKPT, "file")):
        if path.exists() and not (path.is_dir() if kind == "folder" else path.is_file()):
            raise ConfigError(f"run_dir: {path} is in the way of the run's checkpoint (it must be a {kind}); "
                              "move it away")
    path = run_dir / CONFIG
    if not path.exists():
        return
    advice = "choose another --run_dir (or delete that folder to start over)"
    try:
        stored = read_yaml(path)
    except ConfigError as error:
        raise ConfigError(f"run_dir: {run_dir} holds a config.yaml this program did not write ({error}); "
                          f"{advice}") from None
    if not isinstance(stored, dict):
        raise ConfigError(f"run_dir: {path} holds a {type(stored).__name__}, not a run's config; {advice}")
    if config_hash(identity_config(stored)) != run_id:
        raise ConfigError(f"run_dir: {run_dir} holds a run with a different config.yaml; {advice}")


def prepare_run_dir(run_dir: Path, config_text: str) -> None:
    """Create the run folder and write ``config.yaml``; on failure remove the folders this call created."""
    created = [folder for folder in (run_dir, *run_dir.parents) if not folder.exists()]
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        if not (run_dir / CONFIG).is_file():
            write_atomic(run_dir / CONFIG, config_text)
    except OSError as error:
        for folder in created:  # deepest first; only the empty ones we made
            with contextlib.suppress(OSError):
                folder.rmdir()
        if full_disk_error(error):
            raise OutOfSpace(run_dir, "creating the run folder") from None
        raise ConfigError(f"run_dir: cannot write to {run_dir} ({error.strerror}); choose a writable folder") from None


def remove_stale_temp_files(run_dir: Path) -> list[Path]:
    """Remove what a write killed half-way left in ``run_dir`` and its ``checkpoints/``: files named like
    :func:`~stability.record.files.atomic_file`'s temporary files (:data:`TEMP_NAME`), nothing else; returns them.

    Only a run of this folder writes them, and it is starting now, so none of them is still being written.
    """
    removed = []
    for folder in (run_dir, run_dir / CHECKPOINTS):
        if not folder.is_dir() or folder.is_symlink():
            continue
        for path in folder.iterdir():
            if TEMP_NAME.fullmatch(path.name) and path.is_file() and not path.is_symlink():
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
                removed.append(path)
    return removed


def checkpoint_to_resume(run_dir: Path) -> Path | None:
    """``last.ckpt`` if it can be read; an unreadable one (a copy cut short by hand, a disk error) is moved
    aside, not deleted, and the run starts again from step 0."""
    path = run_dir / LAST_CKPT
    if not path.is_file():
        return None
    try:
        torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - whatever makes it unreadable, it cannot be resumed from
        n = 1
        while (run_dir / UNREADABLE_CKPT.format(n=n)).exists():
            n += 1
        aside = run_dir / UNREADABLE_CKPT.format(n=n)
        path.rename(aside)
        reason = " ".join(str(error).split())[:120] or "empty or cut short"
        print(f"note: {path} cannot be read ({type(error).__name__}: {reason}); moved to {aside.name}, "
              "and the run starts again from step 0", file=sys.stderr, flush=True)
        return None
    return path


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint I/O, writing each checkpoint atomically in its own folder.

    Lightning writes ``last.ckpt`` through fsspec, whose local "transaction" writes a temporary file in the
    system's temp folder and *copies* it over when that is another file system: a full disk or a kill
    during the copy leaves a cut-off ``last.ckpt`` that no resume can read. Here the bytes go to a
    temporary file beside the target, are fsync'ed and renamed over it (:func:`stability.record.files.atomic_file`):
    ``last.ckpt`` is always the previous complete checkpoint or the new one.
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} takes no storage_options")
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        with atomic_file(target) as file:
            torch.save(checkpoint, file)


@contextlib.contextmanager
def out_of_space(run_dir: Path, during: str) -> Iterator[None]:
    """Turn a full-disk OSError (also one wrapped by Lightning or TensorBoard) into :class:`OutOfSpace`."""
    try:
        yield
    except Exception as exc:
        full = full_disk_error(exc)
        if full is None:
            raise
        raise OutOfSpace(full.filename or run_dir, during) from None
