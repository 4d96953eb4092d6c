"""A sweep you can watch: runs' progress files, the live display (terminal and plain), the ETA, the wording of
a resumed sweep and the line saying what to run next."""

from __future__ import annotations

import io
import json
import time
from pathlib import Path

import pytest
from sweep_helpers import BASE, SweepResult

from stability.record.config_files import load_config_files
from stability.record.files import FAILED, RunSummary
from stability.record.progress import PROGRESS, RunProgress, read_progress, write_progress
from stability.sweep.drive import describe_todo, next_steps
from stability.sweep.plan import PlannedRun
from stability.sweep.progress import Progress, format_duration
from stability.sweep.runner import Outcome
from stability.training import run as train


class Terminal(io.StringIO):
    """An in-memory stream that says it is a terminal (what tqdm and the display look at)."""

    def isatty(self) -> bool:
        return True


def progress(step: int, total: int = 30, epoch: int = 1, step_time: float = 1.0, loss: float = 0.5,
             updated: float | None = None) -> RunProgress:
    return RunProgress(step=step, total_steps=total, epoch=epoch, max_epochs=3, loss=loss, step_time_s=step_time,
                       updated=time.time() if updated is None else updated)


def runs_in(tmp_path: Path, *names: str) -> list[tuple[str, Path]]:
    return [(name, tmp_path / name) for name in names]


# -- the progress file -------------------------------------------------------------------------------------------
def test_progress_file_round_trip_and_bad_files(tmp_path: Path) -> None:
    written = progress(10)
    write_progress(tmp_path, written)
    assert read_progress(tmp_path) == written
    assert "epoch 2/3  step 10/30  loss 0.5" == written.describe()
    assert written.remaining_s() == 20.0
    (tmp_path / PROGRESS).write_text('{"step": 3')  # cut off mid-write by an older writer, or garbage
    assert read_progress(tmp_path) is None
    assert read_progress(tmp_path / "absent") is None


def test_a_real_run_writes_its_progress(tmp_path: Path) -> None:
    config = load_config_files([BASE])
    config["model"]["vit"].update(embed_dim=16, depth=1, num_heads=2)
    config["trainer"].update(max_epochs=2, limit_train_batches=3, limit_val_batches=1, limit_test_batches=1,
                             enable_progress_bar=False)
    summary: RunSummary = train.run(config, tmp_path / "run")
    final = read_progress(tmp_path / "run")
    assert final is not None
    assert (final.step, final.total_steps, final.max_epochs) == (summary.steps, 6, 2)
    assert final.loss == pytest.approx(summary.final_train_loss)
    assert final.step_time_s == pytest.approx(summary.train_time_s / summary.steps, rel=0.05)
    assert abs(final.updated - time.time()) < 120


# -- the display -------------------------------------------------------------------------------------------------
def test_plain_lines_list_running_cells_with_an_eta_from_their_step_times(tmp_path: Path) -> None:
    runs = runs_in(tmp_path, "a", "b", "c", "d")
    stream = io.StringIO()
    display = Progress(4, runs=runs, workers=2, stream=stream, plain_every_s=0.0)
    write_progress(tmp_path / "a", progress(10))  # 20 steps of 1 s left
    write_progress(tmp_path / "b", progress(25, step_time=2.0))  # 5 steps of 2 s left
    write_progress(tmp_path / "c", progress(29, updated=time.time() - 3600))  # a cut-off run's old file
    display.poll()
    lines = stream.getvalue().splitlines()
    assert lines[0] == "  running a  epoch 2/3  step 10/30  loss 0.5  (20s left)"
    assert lines[1] == "  running b  epoch 2/3  step 25/30  loss 0.5  (10s left)"
    # a and b: 20 + 10 s left; c and d not running: each a whole run, 30 steps x the mean step time (30 and 60 s)
    assert display.eta_seconds() == pytest.approx((20 + 10 + 2 * 45) / 2)
    assert lines[2] == f"  done 0 diverged 0 collapsed 0 failed 0 left 4 | ETA {format_duration(60)}"
    # once runs have ended, a cell not started is estimated by their measured wall time (startup included)
    display.record(Outcome("id-a", "a", "completed", True, wall_s=40.0, final_val_acc=0.9))
    assert display.eta_seconds() == pytest.approx((10 + 2 * 40) / 2)
    ended = stream.getvalue().splitlines()[-1]
    assert ended.startswith("[1/4] completed a  40.0s val_acc 0.900  "
                            "| done 1 diverged 0 collapsed 0 failed 0 left 3 | ETA 45s")
    assert not display.live


def test_nothing_measured_yet_means_no_eta(tmp_path: Path) -> None:
    display = Progress(3, {"completed": 1}, stream=io.StringIO(), runs=runs_in(tmp_path, "a", "b"))
    display.poll()
    assert display.eta() == "?" and display.left == 2


def test_a_terminal_gets_a_bar_per_running_cell(tmp_path: Path) -> None:
    runs = runs_in(tmp_path, "stem=conv,lr=0.01,seed=0-3f2a9c1e", "norm=centernorm,lr=0.01,seed=0-1b2c3d4e")
    stream = Terminal()
    write_progress(runs[0][1], progress(12))
    with Progress(2, runs=runs, stream=stream, poll_s=0.05) as display:
        assert display.live
        deadline = time.monotonic() + 10
        while "stem=conv" not in stream.getvalue() and time.monotonic() < deadline:
            time.sleep(0.05)
        display.record(Outcome("x", runs[0][0], "diverged", True, wall_s=3.0))
    text = stream.getvalue()
    assert "stem=conv,lr=0.01,seed=0-3f2a9c1e" in text and "epoch 2/3  step 12/30  loss 0.5" in text
    assert "sweep" in text and " runs, done " in text  # the sweep's own bar
    assert "[1/2] diverged  stem=conv,lr=0.01,seed=0-3f2a9c1e  3.0s" in text
    assert "\r" in text  # redrawn in place, not printed line after line


# -- wording: a resumed sweep, and what to run next --------------------------------------------------------------
def test_a_resumed_sweep_says_what_it_resumes(tmp_path: Path) -> None:
    def planned(name: str) -> PlannedRun:
        return PlannedRun(name, name, {}, {})

    (tmp_path / "cut" / "checkpoints").mkdir(parents=True)
    (tmp_path / "cut" / "checkpoints" / "last.ckpt").write_bytes(b"x")
    (tmp_path / "early").mkdir()
    (tmp_path / "early" / "events.out.tfevents.1.host").write_bytes(b"")
    (tmp_path / "broken").mkdir()
    RunSummary(status=FAILED, run_name="broken", run_id="broken", error="boom").write(tmp_path / "broken")
    todo = [planned(n) for n in ("cut", "early", "broken", "new1", "new2")]
    assert describe_todo(todo, tmp_path) == (" (1 resume from their last checkpoint, 1 restart (cut off before a "
                                             "checkpoint), 1 failed before and run again, 2 new)")
    assert describe_todo([planned("new1")], tmp_path) == ""


def test_a_finished_sweep_says_what_to_run_next(smoke_sweep: SweepResult) -> None:
    lines = smoke_sweep.stdout.splitlines()
    summary = lines.index(next(line for line in lines if line.startswith("sweep smoke: 4 runs in ")))
    assert lines[summary - 2].startswith("next: stability report ")
    assert lines[summary - 1].strip().startswith("tensorboard --logdir ")
    assert all(page in lines[summary - 1] for page in ("#hparams", "#timeseries", "#custom_scalars"))
    assert next_steps(Path("runs/digits").resolve())[0].startswith("next: stability report runs/digits ")
    # every run left its last progress: 1 epoch of 2 steps
    files = list(smoke_sweep.out.glob(f"*/{PROGRESS}"))
    assert len(files) == 4 and all(json.loads(f.read_text())["step"] == 2 for f in files)
