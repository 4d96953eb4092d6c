"""Faults leave nothing that blocks a re-run, and a run's numbers do not depend on how the sweep ran it.

- a full disk: one ``error:`` line, exit 3, no temporary file, no record; the same command resumes once there
  is space (a fault injected at the checkpoint's write here; a real, small tmpfs in the slow test);
- an interrupted checkpoint write keeps the previous checkpoint (the atomic checkpoint I/O plugin);
- an unreadable checkpoint is set aside, not deleted, when its run is retried;
- a worker killed by a signal: retried by a plain re-run, at most ``MAX_KILLS`` kills per cell;
- record files follow the umask, and so does every file a sweep writes (the TensorBoard view file included);
- ``--workers 1`` and ``--workers 2`` give identical summaries.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import lightning as L
import pytest
import torch
import yaml
from sweep_helpers import BASE, ROOT, TINY, TRAINED, lightning_logs_to_stderr, run_sweep, summaries, write_grid

from stability.cli import main
from stability.errors import OutOfSpace
from stability.record.files import KILLS, atomic_file, write_atomic
from stability.record.status import run_status
from stability.sweep.runner import OUT_OF_SPACE, Task, run_task
from stability.sweep.store import MAX_KILLS, write_failure
from stability.training import run as train
from stability.training.cli import parse
from stability.training.run_folder import AtomicCheckpointIO

TIMINGS = {"wall_time_s", "train_time_s", "images_per_s"}
TWO_EPOCHS = {"model": {"vit": {"embed_dim": 16, "depth": 2, "num_heads": 2, "mlp_ratio": 2.0}, "warmup_epochs": 0.5},
              "trainer": {"max_epochs": 2, "limit_train_batches": 2, "limit_val_batches": 1,
                          "limit_test_batches": 1, "enable_progress_bar": False}}


def without_timings(summary: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in summary.items() if k not in TIMINGS}


def leftovers(folder: Path) -> list[str]:
    """Temporary files anywhere under ``folder`` (the atomic writers' ``.NAME.XXXX.tmp``)."""
    return [str(p) for p in folder.rglob("*") if p.name.endswith(".tmp")]


# -- record files -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_record_files_follow_the_umask(tmp_path: Path, umask: int) -> None:
    """Teammates reading a shared sweep folder see what the umask grants (it used to be 0600 always)."""
    previous = os.umask(umask)
    try:
        write_atomic(tmp_path / "summary.json", "{}\n")
        AtomicCheckpointIO().save_checkpoint({"step": 1}, tmp_path / "checkpoints" / "last.ckpt")
    finally:
        os.umask(previous)
    assert (tmp_path / "summary.json").stat().st_mode & 0o777 == 0o666 & ~umask
    assert (tmp_path / "checkpoints" / "last.ckpt").stat().st_mode & 0o777 == 0o666 & ~umask


def test_every_file_a_sweep_writes_follows_the_umask(tmp_path: Path) -> None:
    """A team's shared sweep folder under umask 002: every file and folder a tiny real sweep writes is
    group-writable (the sweep's TensorBoard view file used to be 0600, so teammates could not even read it)."""
    grid = write_grid(tmp_path, "g", {"overrides": TINY, "seeds": [0]})
    out = tmp_path / "out"
    previous = os.umask(0o002)
    try:
        result = run_sweep([str(grid), "--workers", "1"], out)
    finally:
        os.umask(previous)
    assert result.rc == 0, result.stdout + result.stderr
    written = [p for p in out.rglob("*") if not p.is_symlink()]
    assert any(p.name.startswith("events.out.tfevents") and p.parent == out for p in written)  # the view file
    assert any(p.name == "last.ckpt" for p in written) and any(p.name == "summary.json" for p in written)
    closed = {str(p.relative_to(out)): oct(p.stat().st_mode & 0o777) for p in written
              if p.stat().st_mode & 0o060 != 0o060}
    assert closed == {}, closed


def test_an_interrupted_write_keeps_the_previous_file(tmp_path: Path) -> None:
    """Whatever stops a write half-way (here torch.save meeting an object it cannot pickle, after it wrote
    the tensors), the file keeps its previous content and no temporary file stays."""
    path = tmp_path / "checkpoints" / "last.ckpt"
    io = AtomicCheckpointIO()
    io.save_checkpoint({"epoch": 0, "weights": torch.ones(3)}, path)
    with pytest.raises(Exception, match="pickle|lambda"):
        io.save_checkpoint({"epoch": 1, "weights": torch.zeros(10_000), "bad": lambda: 0}, path)
    assert torch.load(path, weights_only=True)["epoch"] == 0
    assert leftovers(tmp_path) == []
    with pytest.raises(RuntimeError), atomic_file(tmp_path / "summary.json") as file:
        file.write(b'{"status": "comp')
        raise RuntimeError("killed mid-write")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoints"]


# -- a full disk ----------------------------------------------------------------------------------------------
def fail_checkpoint_fsync(monkeypatch: pytest.MonkeyPatch, on_call: int) -> list[str]:
    """From the ``on_call``-th checkpoint write on, the disk is full: ``fsync`` of the checkpoint's
    temporary file fails with ENOSPC, as a real file system reports delayed allocation failing."""
    real_fsync = os.fsync
    calls: list[str] = []

    def fsync(fd: int) -> None:
        target = os.readlink(f"/proc/self/fd/{fd}") if os.path.exists(f"/proc/self/fd/{fd}") else ""
        if ".last.ckpt." in target:
            calls.append(target)
            if len(calls) >= on_call:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    return calls


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc to find the file being synced")
def test_a_full_disk_is_one_line_leaves_no_debris_and_the_run_resumes(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(TWO_EPOCHS))
    run_dir = tmp_path / "run"
    argv = ["fit", "--config", str(BASE), "--config", str(config), "--run_dir", str(run_dir)]
    calls = fail_checkpoint_fsync(monkeypatch, on_call=2)  # epoch 1's checkpoint is written, epoch 2's is not
    capsys.readouterr()
    with lightning_logs_to_stderr():
        assert main(argv) == 3
    out, err = capsys.readouterr()
    assert len(calls) == 2 and "Traceback" not in out + err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and err.splitlines()[-1] == errors[0], err
    assert "checkpoints/last.ckpt: no space left on the device while training" in errors[0]
    assert "run the same command again" in errors[0]
    assert leftovers(tmp_path) == []
    assert not (run_dir / "summary.json").exists()  # not "failed": nothing about the config is wrong
    assert run_status(run_dir) == "incomplete"
    assert torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 2

    monkeypatch.undo()  # space again: the same command resumes from epoch 1's checkpoint
    assert main(argv) == 0
    resumed = json.loads((run_dir / "summary.json").read_text())
    assert resumed["status"] in TRAINED and resumed["steps"] == 4
    straight = train.run(parse(["--config", str(BASE), "--config", str(config)]).config_dump_dict(),
                         tmp_path / "straight")
    assert without_timings(resumed) | {"run_name": ""} == without_timings(straight.to_dict()) | {"run_name": ""}


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc to find the file being synced")
def test_a_full_disk_in_a_sweep_cell_records_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    from stability.sweep.drive import final_report
    from stability.sweep.plan import PlannedRun

    cell = yaml.safe_load(BASE.read_text())
    for key, value in TWO_EPOCHS.items():
        cell.setdefault(key, {}).update(value)
    run_dir = tmp_path / "out" / "cell"
    fail_checkpoint_fsync(monkeypatch, on_call=1)
    outcome = run_task(Task("id", "cell", str(run_dir), cell))
    assert outcome.status == OUT_OF_SPACE and "no space left" in outcome.error
    assert not (run_dir / "summary.json").exists() and not (run_dir / "traceback.txt").exists()
    assert leftovers(tmp_path) == []
    capsys.readouterr()
    assert final_report("g", [PlannedRun("id", "cell", {}, cell)], tmp_path / "out", [outcome], 1.0) == 3
    assert capsys.readouterr().err.splitlines() == [f"error: {outcome.error}"]


def _tmpfs_available() -> bool:
    if not shutil.which("unshare") or not sys.platform.startswith("linux"):
        return False
    probe = subprocess.run(["unshare", "-rm", "sh", "-c", "mount -t tmpfs -o size=64k tmpfs /mnt 2>/dev/null || "
                            "mount -t tmpfs -o size=64k tmpfs /tmp"], capture_output=True, timeout=30)
    return probe.returncode == 0


@pytest.mark.slow
@pytest.mark.skipif(not _tmpfs_available(), reason="cannot mount a tmpfs in a user namespace here")
def test_a_full_disk_on_a_real_small_file_system(tmp_path: Path) -> None:
    """A 64 KiB tmpfs holds a tiny run's config and events but not its 100 KB checkpoint: `fit` and `sweep`
    end with one error line and leave no temporary file; with space again, `fit` finishes the run."""
    (tmp_path / "disk").mkdir()
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(TWO_EPOCHS))
    grid = write_grid(tmp_path, "g", {"overrides": TINY, "seeds": 2})
    python = f"PYTHONPATH={ROOT} {sys.executable} -m stability.cli"
    disk, report = tmp_path / "disk", tmp_path / "report"
    fit = f"{python} fit --config {BASE} --config {config} --run_dir {disk}/run"
    script = f"""
        mount -t tmpfs -o size=64k tmpfs {disk} || exit 99
        {fit} >{report}.fit.out 2>{report}.fit.err; echo $? >{report}.fit.rc
        find {disk} >{report}.fit.files
        mount -o remount,size=16m {disk}
        {fit} >{report}.again.out 2>{report}.again.err; echo $? >{report}.again.rc
        umount {disk} && mount -t tmpfs -o size=64k tmpfs {disk}
        {python} sweep {grid} --out {disk}/sweep --workers 1 >{report}.sweep.out 2>{report}.sweep.err
        echo $? >{report}.sweep.rc
        find {disk} >{report}.sweep.files
    """
    subprocess.run(["unshare", "-rm", "sh", "-c", script], check=True, timeout=600, cwd=tmp_path)

    def read(name: str) -> str:
        return Path(f"{report}.{name}").read_text()

    assert read("fit.rc").strip() == "3", read("fit.err")
    errors = [line for line in read("fit.err").splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "no space left on the device" in errors[0] and "Traceback" not in read("fit.err")
    assert not [f for f in read("fit.files").split() if f.endswith(".tmp") or f.endswith("summary.json")]
    assert read("again.rc").strip() == "0", read("again.err")
    assert read("again.out").startswith(("completed: ", "collapsed: "))

    assert read("sweep.rc").strip() == "3", read("sweep.err")
    assert read("sweep.err").splitlines() == [line for line in read("sweep.err").splitlines()
                                              if line.startswith("error:")] and len(read("sweep.err").splitlines()) == 1
    assert "no space left on the device" in read("sweep.err")
    files = read("sweep.files").split()
    assert not [f for f in files if f.endswith(".tmp") or f.endswith("summary.json")], files
    assert sum(1 for f in files if f.endswith("config.yaml")) == 1  # the second cell was never started


# -- unreadable checkpoints -------------------------------------------------------------------------------------
def test_an_unreadable_checkpoint_is_set_aside_when_a_failed_run_is_retried(tmp_path: Path) -> None:
    """A failed run whose last.ckpt was cut off (0 bytes): --retry-failed used to stop at it until someone
    deleted it by hand. Now it is renamed, kept, and the run starts over."""
    cell = yaml.safe_load(BASE.read_text())
    for key, value in TWO_EPOCHS.items():
        cell.setdefault(key, {}).update(value)
    run_dir = tmp_path / "cell"
    (run_dir / "checkpoints").mkdir(parents=True)
    (run_dir / "checkpoints" / "last.ckpt").write_bytes(b"")
    write_failure(run_dir, "cell", "id", "RuntimeError: CUDA error (an earlier attempt)", "Traceback ...")
    skipped = run_task(Task("id", "cell", str(run_dir), cell))
    assert skipped.status == "failed" and not skipped.ran
    retried = run_task(Task("id", "cell", str(run_dir), cell, retry_failed=True))
    assert retried.status in TRAINED and retried.ran
    assert (run_dir / "last.unreadable-1.ckpt").read_bytes() == b""
    assert json.loads((run_dir / "summary.json").read_text())["steps"] == 4
    assert not (run_dir / "traceback.txt").exists()


# -- workers killed by a signal ----------------------------------------------------------------------------------
class KillWorker(L.Callback):
    """SIGKILLs its own process at the first training step, ``times`` times in all (counted by files in
    ``marks``): what the kernel's OOM killer does to a sweep worker."""

    def __init__(self, marks: str, times: int = 1) -> None:
        self.marks, self.times = Path(marks), times

    def on_train_batch_start(self, trainer: L.Trainer, *args: Any) -> None:
        self.marks.mkdir(parents=True, exist_ok=True)
        done = len(list(self.marks.iterdir()))
        if done < self.times:
            (self.marks / f"kill-{done}").touch()
            os.kill(os.getpid(), signal.SIGKILL)


@pytest.mark.slow
def test_a_cell_that_keeps_killing_its_worker_is_retried_then_given_up(tmp_path: Path) -> None:
    """The sweep as a user runs it: a killed worker leaves its cell unfinished (exit 3) and a plain re-run
    retries it; the MAX_KILLS-th kill records it failed, plain re-runs then skip it, --retry-failed runs it."""
    assert MAX_KILLS == 2
    killer = {"class_path": "test_faults.KillWorker", "init_args": {"marks": str(tmp_path / "marks"), "times": 2}}
    grid = write_grid(tmp_path, "g", {"overrides": TINY | {"trainer.callbacks": [killer]}, "seeds": [0]})
    out = tmp_path / "out"
    first = run_sweep([str(grid), "--workers", "1"], out)
    assert first.rc == 3, first.stdout + first.stderr
    (run_dir,) = [p for p in out.iterdir() if p.is_dir()]
    assert json.loads((run_dir / KILLS).read_text()) == {"signals": ["SIGKILL"]}
    assert not (run_dir / "summary.json").exists()
    assert "1 whose worker was killed by a signal" in first.stderr and "re-run the same command" in first.stderr

    second = run_sweep([str(grid), "--workers", "1"], out)
    assert second.rc == 1, second.stdout + second.stderr
    failed = json.loads((run_dir / "summary.json").read_text())
    assert failed["status"] == "failed" and "killed by a signal 2 times" in failed["error"]

    third = run_sweep([str(grid), "--workers", "1"], out)
    assert third.rc == 1 and "1 ended earlier, 0 to run" in third.stdout

    retried = run_sweep([str(grid), "--workers", "1", "--retry-failed"], out)  # the cause is gone (times=2)
    assert retried.rc == 0, retried.stdout + retried.stderr
    assert summaries(out)[run_dir.name]["status"] in TRAINED and not (run_dir / KILLS).exists()


# -- the numbers do not depend on the worker count -----------------------------------------------------------------
@pytest.mark.slow
def test_worker_count_does_not_change_the_numbers(tmp_path: Path) -> None:
    """2 cells, 2 steps each: one worker or two, the summaries are identical but for timings.

    Before, the pool size set the thread count (cores // workers), and 2 threads vs 1 changed the 7th digit
    of this grid's final training loss (2.3484139 vs 2.3484142). The model is the digits base model: a much
    smaller one has tensors too small for torch to split across threads, and would not show a difference."""
    short = {key: value for key, value in TINY.items() if not key.startswith("model.vit.")}
    grid = write_grid(tmp_path, "g", {"overrides": short, "axes": {"model.vit.norm": ["layernorm", "rmsnorm"]}})
    one = run_sweep([str(grid), "--workers", "1"], tmp_path / "one")
    two = run_sweep([str(grid), "--workers", "2"], tmp_path / "two")
    assert one.rc == 0 and two.rc == 0, one.stderr + two.stderr
    plans = [json.loads((tmp_path / d / "plan.json").read_text()) for d in ("one", "two")]
    threads = plans[0]["threads"]  # 1 on CPUs (the default): 2 workers x 1 thread fill a 2-core machine
    assert plans[0] == plans[1] and threads >= 1
    assert f"1 worker x {threads} thread" in one.stdout and f"2 workers x {threads} thread" in two.stdout
    first, second = summaries(tmp_path / "one"), summaries(tmp_path / "two")
    assert len(first) == 2 and sorted(first) == sorted(second)
    for name in first:
        assert first[name]["threads"] == threads
        assert without_timings(first[name]) == without_timings(second[name]), name


def test_threads_are_fixed_by_the_plan_not_by_the_pool(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The thread count comes from the machine for a new plan and from plan.json on every re-run."""
    import argparse

    from stability.sweep import workers

    monkeypatch.setattr(workers, "usable_cores", lambda: 16)
    args = argparse.Namespace(threads=None)
    assert workers.plan_threads(args, tmp_path, gpus=[]) == workers.CPU_THREADS_PER_WORKER == 1
    assert workers.plan_threads(args, tmp_path, gpus=[0, 1]) == 8
    assert workers.default_workers(100, [], threads=4) == 4  # workers fit the threads, not the reverse
    (tmp_path / "plan.json").write_text(json.dumps({"threads": 3, "runs": [{"run_name": "r0"}]}))
    assert workers.plan_threads(args, tmp_path, gpus=[]) == 3  # a re-run keeps the plan's count
    assert workers.plan_threads(argparse.Namespace(threads=5), tmp_path, gpus=[]) == 5  # nothing started yet


def test_a_summary_records_its_threads(tmp_path: Path) -> None:
    cell = yaml.safe_load(BASE.read_text())
    for key, value in TWO_EPOCHS.items():
        cell.setdefault(key, {}).update(value)
    cell["trainer"]["max_epochs"] = 1
    before = torch.get_num_threads()
    try:
        summary = train.run(cell, tmp_path / "run", threads=2)
    finally:
        torch.set_num_threads(before)
    assert summary.threads == 2
    keys = list(json.loads((tmp_path / "run" / "summary.json").read_text()))
    assert keys.index("threads") == keys.index("versions") - 1


def test_out_of_space_names_the_cause() -> None:
    assert "no space left on the device while training" in str(OutOfSpace("/x/last.ckpt", "training"))
