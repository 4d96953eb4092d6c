"""Sweep folders that lie: the report and the sweep read what is there without trusting it.

Every case fabricates a real sweep folder (config.yaml + summary.json written by the real RunSummary, as
``tests/fabricate.py`` does), then damages one run's record the way a hand edit, a bad copy or a hostile user
would. The report must name the file and the field in one warning line, leave that run out of its tables and
count it among the gaps, with exit status 0 and never a traceback; the sweep must count the run as not finished
(and run it again). Reads that could block (a FIFO) or never end (a link to /dev/zero) run under an alarm.
"""

from __future__ import annotations

import json
import math
import multiprocessing
import os
import re
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import fabricate as fab
import pytest

from stability import cli
from stability.analysis.results import load_curves, load_sweep
from stability.errors import ConfigError
from stability.record.checked_read import MAX_RECORD_BYTES
from stability.record.files import RecordError, load_summary, read_summary
from stability.record.status import RunLock, has_logged, is_run_dir, last_change, run_status
from stability.sweep.store import planned_threads, read_plan, write_plan

ROOT = Path(__file__).resolve().parents[2]
SMOKE_GRID = ROOT / "ablations" / "smoke.yaml"


@pytest.fixture(autouse=True)
def deadline() -> Iterator[None]:
    """Fail (rather than hang the suite) when a read blocks: 60 s is far more than any case takes."""
    def expire(*_: object) -> None:
        raise TimeoutError("a read blocked or ran on for 60 s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(60)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)


def small_sweep(root: Path) -> tuple[Path, Path]:
    """Two norms x two seeds, finished (records only); returns (sweep folder, the run to damage)."""
    sweep = root / "sweep"
    victim = None
    for seed in (0, 1):
        fab.write_record(sweep, seed, final_val_acc=0.80 + 0.01 * seed, best_val_acc=0.82)
        run = fab.write_record(sweep, seed, norm="centernorm", final_val_acc=0.85 + 0.01 * seed, best_val_acc=0.86)
        victim = victim or run
    return sweep, victim


def edit_summary(change: Callable[[dict], None], *, text: Callable[[str], str] = lambda t: t) -> Callable[[Path], None]:
    """Damage: rewrite the victim's summary.json with ``change`` applied to its JSON (then ``text`` to its text)."""
    def damage(run: Path) -> None:
        data = json.loads((run / "summary.json").read_text())
        change(data)
        (run / "summary.json").write_text(text(json.dumps(data)))
    return damage


def _set(path: str, value: object) -> Callable[[dict], None]:
    def change(data: dict) -> None:
        *parents, key = path.split(".")
        target = data
        for p in parents:
            target = target[p]
        target[key] = value
    return change


def _replace_with(make: Callable[[Path], None]) -> Callable[[Path], None]:
    def damage(run: Path) -> None:
        (run / "summary.json").unlink()
        make(run / "summary.json")
    return damage


# case -> (damage, fragments the warning must hold)
CASES: dict[str, tuple[Callable[[Path], None], tuple[str, ...]]] = {
    "link to /dev/zero": (_replace_with(lambda p: p.symlink_to("/dev/zero")), ("/dev/zero", "outside")),
    "FIFO": (_replace_with(os.mkfifo), ("FIFO",)),
    "folder": (_replace_with(lambda p: p.mkdir()), ("a folder",)),
    "17 MiB": (_replace_with(lambda p: os.truncate(os.open(p, os.O_CREAT | os.O_WRONLY), 17 << 20)),
               (f"{17 << 20:,} bytes", f"{MAX_RECORD_BYTES:,}")),
    "link loop": (_replace_with(lambda p: p.symlink_to(p.name)), ("symbolic link loop",)),
    "dangling link": (_replace_with(lambda p: p.symlink_to("gone.json")), ("symbolic link to nothing",)),
    "link outside the sweep": (_replace_with(lambda p: p.symlink_to(Path(__file__))), ("outside",)),
    "accuracy as text": (edit_summary(_set("final_val_acc", "0.9")), ("final_val_acc", '"0.9"', "[0, 1]")),
    "history as text": (edit_summary(_set("train_loss_history", "2.3, 1.1")), ("train_loss_history", '"2.3, 1.1"')),
    "history as a mapping": (edit_summary(_set("train_loss_history", {"0": 2.3})), ("train_loss_history", "a list")),
    "history holding text": (edit_summary(_set("train_loss_history", [2.3, "x"])), ("train_loss_history[1]", '"x"')),
    "toggle as a mapping": (edit_summary(_set("toggles.norm", {"a": 1})), ("toggles.norm", '{"a": 1}')),
    "toggle named like a column": (edit_summary(_set("toggles.status", "completed")), ("toggles['status']",)),
    "lr as text": (edit_summary(_set("hparams.lr", "fast")), ("hparams.lr", '"fast"', "> 0")),
    "lr negative": (edit_summary(_set("hparams.lr", -0.1)), ("hparams.lr", "-0.1")),
    "accuracy NaN": (edit_summary(_set("final_val_acc", 0.123), text=lambda t: t.replace("0.123", "NaN")),
                     ("final_val_acc", "NaN")),
    "loss Infinity": (edit_summary(_set("test_loss", 0.123), text=lambda t: t.replace("0.123", "Infinity")),
                      ("test_loss", "Infinity", "a finite number")),
    "loss overflowing to infinity": (edit_summary(_set("test_loss", 0.123), text=lambda t: t.replace("0.123", "1e999")),
                                     ("test_loss", "Infinity")),
    "accuracy 1e308": (edit_summary(_set("best_val_acc", 1e308)), ("best_val_acc", "1e+308", "[0, 1]")),
    "accuracy a bool": (edit_summary(_set("test_acc", True)), ("test_acc", "true")),
    "steps negative": (edit_summary(_set("steps", -3)), ("steps", "-3", ">= 0")),
    "steps fractional": (edit_summary(_set("steps", 2.5)), ("steps", "2.5")),
    "unknown key NaN": (edit_summary(_set("new_metric", 0.123), text=lambda t: t.replace("0.123", "NaN")),
                        ("new_metric", "NaN")),
    "nested too deep": (edit_summary(lambda d: None, text=lambda t: t[:-1] + ', "x": ' + "[" * 5000 + "]" * 5000 + "}"),
                        ("nested",)),
    "lr 1e300": (edit_summary(_set("hparams.lr", 1e300)), ("hparams.lr", "1e+300", "not plausible")),
}


def report(sweep: Path, out: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = cli.main(["report", str(sweep), "--out", str(out), "--format", "md", "--no-plots"])
    return code, capsys.readouterr().err


@pytest.mark.parametrize("case", list(CASES))
def test_the_report_names_a_bad_summary_and_leaves_its_run_out(case: str, tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    sweep, victim = small_sweep(tmp_path)
    damage, fragments = CASES[case]
    damage(victim)
    started = time.perf_counter()
    code, err = report(sweep, tmp_path / "report", capsys)
    assert time.perf_counter() - started < 30  # /dev/zero and the 17 MiB file are refused, not read
    assert code == 0 and "Traceback" not in err, err
    [line] = [line for line in err.splitlines() if line.startswith(f"warning: {victim.name}: summary.json")]
    assert str(victim / "summary.json") in line
    assert all(f in line for f in fragments), (line, fragments)
    assert "counted as incomplete and left out of the tables" in line
    # counted in the gaps, absent from the tables: 3 of the 4 runs are results
    assert any(victim.name in gap and "incomplete" in gap for gap in err.splitlines() if "1 run(s)" in gap)
    loaded = load_sweep(sweep)
    assert victim.name not in loaded.finished.index and len(loaded.finished) == 3
    assert loaded.runs.loc[victim.name, "status"] == "incomplete"
    assert loaded.runs.loc[victim.name, "norm"] == "centernorm"  # the run's configuration, from config.yaml


@pytest.mark.parametrize("case", [c for c in CASES if c != "lr 1e300"])
def test_the_sweep_runs_a_run_with_a_bad_summary_again(case: str, tmp_path: Path) -> None:
    """read_summary (the sweep's resume logic) says 'no summary': the run is not finished and is run again."""
    _, victim = small_sweep(tmp_path)
    CASES[case][0](victim)
    assert read_summary(victim) is None
    assert run_status(victim) == "incomplete"
    with pytest.raises(RecordError, match="summary.json"):
        load_summary(victim)


def test_an_absurd_lr_is_kept_by_the_sweep_and_named_by_the_report(tmp_path: Path) -> None:
    """Valid but absurd: the run did finish (running it again writes the same), so only the report refuses it."""
    _, victim = small_sweep(tmp_path)
    CASES["lr 1e300"][0](victim)
    assert read_summary(victim).hparams["lr"] == 1e300 and run_status(victim) == "completed"


def test_a_real_diverged_run_is_accepted_though_its_history_holds_nan(tmp_path: Path) -> None:
    """What training writes is never refused: at lr 1e30 the loss is NaN at step 1 and the epoch's mean loss,
    written by json as NaN, is in train_loss_history."""
    from stability.record.config_files import load_config_files
    from stability.training import run as train

    config = load_config_files([ROOT / "ablations" / "base" / "digits.yaml"])  # shrunk as tests/training does
    config["model"]["vit"].update(embed_dim=16, depth=2, num_heads=2)
    config["model"].update(lr=1e30, warmup=False)
    config["trainer"].update(max_epochs=2, limit_train_batches=4, limit_val_batches=2, limit_test_batches=2,
                             enable_progress_bar=False)
    run_dir = tmp_path / "sweep" / "diverged"
    train.run(config, run_dir)
    summary = load_summary(run_dir)
    last = summary.train_loss_history[-1]  # NaN as json writes it today (null would be read too)
    assert summary.status == "diverged" and (last is None or math.isnan(last))
    assert run_status(run_dir) == "diverged"  # finished for the sweep
    problems = load_sweep(run_dir.parent).problems  # lr 1e30 is absurd: the report names it
    assert any("hparams.lr" in p and "not plausible" in p for p in problems)


# -- what the rest of a run folder may hold ---------------------------------------------------------------------
def test_links_loops_and_fifos_in_a_run_folder_are_passed_over(tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    fab.make_sweep(tmp_path / "sweep", unfinished=False)  # with events: the report reads the curves
    sweep = tmp_path / "sweep"
    run = sorted(d for d in sweep.iterdir() if d.is_dir())[0]
    (run / "loop-a").symlink_to("loop-b")
    (run / "loop-b").symlink_to("loop-a")
    (run / "dangling").symlink_to("nowhere")
    (run / "events.out.tfevents.0.dangling").symlink_to("nowhere")
    os.mkfifo(run / "events.out.tfevents.1.fifo")
    (run / "events.out.tfevents.2.elsewhere").symlink_to(Path(__file__))
    (run / "checkpoints" / "up").symlink_to(tmp_path)  # a loop through the parent folder
    code, err = report(sweep, tmp_path / "report", capsys)
    assert code == 0 and "Traceback" not in err and run.name not in err, err
    curves = load_curves(load_sweep(sweep), runs=[run.name])
    assert len(curves) and set(curves["run"]) == {run.name}  # its real events still count


def test_folder_walks_survive_links_and_stay_inside(tmp_path: Path) -> None:
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    outside = tmp_path / "outside"
    outside.mkdir()
    (run / "config.yaml").write_text("seed_everything: 0\n")
    (run / "loop-a").symlink_to("loop-b")
    (run / "loop-b").symlink_to("loop-a")
    (run / "checkpoints" / "self").symlink_to(run)
    (run / "elsewhere").symlink_to(outside)
    os.utime(run / "config.yaml", (1e9, 1e9))
    for path in (run, run / "checkpoints"):
        os.utime(path, (1e9, 1e9))
    for link in ("loop-a", "loop-b", "elsewhere", "checkpoints/self"):
        os.utime(run / link, (1e9, 1e9), follow_symlinks=False)
    (outside / "new").write_text("changed now")  # newer, but outside the run folder
    assert last_change(run) == 1e9
    assert is_run_dir(run) and has_logged(run)
    assert not is_run_dir(tmp_path / "missing") and last_change(tmp_path / "missing") == 0.0
    os.mkfifo(run / ".sweep.lock")
    for path in (run / ".sweep.lock", run):
        os.utime(path, (1e9, 1e9))
    assert run_status(run, stale_after_s=60) == "incomplete"  # the FIFO lock is probed without blocking


def test_a_bad_config_yaml_is_a_gap_not_a_hang(tmp_path: Path) -> None:
    sweep, victim = small_sweep(tmp_path)
    (victim / "summary.json").unlink()
    (victim / "config.yaml").unlink()
    os.mkfifo(victim / "config.yaml")
    other = fab.write_record(sweep, 2)
    (other / "summary.json").unlink()
    (other / "config.yaml").write_text(json.dumps({"model": {"vit": {"norm": {"a": 1}}}}))
    loaded = load_sweep(sweep, stale_after_s=0)
    assert any(p.startswith(f"{victim.name}: config.yaml unreadable") and "FIFO" in p for p in loaded.problems)
    assert any(p.startswith(f"{other.name}: config.yaml: norm: got") for p in loaded.problems)
    assert loaded.runs.loc[other.name, "status"] == "pending"


def test_a_summary_key_cannot_replace_the_record_columns(tmp_path: Path) -> None:
    sweep, victim = small_sweep(tmp_path)
    edit_summary(lambda d: d.update(run_dir="/etc", has_summary=False, diverged=True))(victim)
    row = load_sweep(sweep).runs.loc[victim.name]
    assert row["run_dir"] == str(victim) and row["has_summary"] and not row["diverged"]


def test_the_run_lock_lets_the_umask_decide(tmp_path: Path) -> None:
    previous = os.umask(0o002)
    try:
        with RunLock(tmp_path / "run") as lock:
            assert lock.acquire()
    finally:
        os.umask(previous)
    assert (tmp_path / "run" / ".sweep.lock").stat().st_mode & 0o777 == 0o664


# -- plan.json ------------------------------------------------------------------------------------------------
def write_json(path: Path, data: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))


@pytest.mark.parametrize("threads", [10**12, 0, -1, "4", True, 2.0])
def test_a_plan_with_a_bad_thread_count_is_refused(threads: object, tmp_path: Path) -> None:
    write_json(tmp_path / "plan.json", {"threads": threads, "runs": [{"run_name": "r0"}]})
    with pytest.raises(RecordError, match=r"plan\.json: threads: got .*expected a whole number from 1 to"):
        read_plan(tmp_path)
    with pytest.raises(ConfigError, match=r"plan\.json: threads: got"):
        planned_threads(tmp_path)


def test_a_sweep_on_a_plan_with_10_to_the_12_threads_is_one_error_line(tmp_path: Path,
                                                                       capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    write_json(out / "plan.json", {"threads": 10**12, "runs": [{"run_name": "r0"}]})
    before = (out / "plan.json").read_bytes()
    code = cli.main(["sweep", str(SMOKE_GRID), "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    [line] = err.splitlines()
    assert line.startswith(f"error: {out / 'plan.json'}: threads: got 1000000000000; expected a whole number")
    assert sorted(os.listdir(out)) == ["plan.json"] and (out / "plan.json").read_bytes() == before
    assert not multiprocessing.active_children()  # no worker was started


@pytest.mark.parametrize(("run", "fragment"), [({"run_name": "../../elsewhere"}, "runs[0].run_name"),
                                               ({"run_name": ".."}, "runs[0].run_name"),
                                               ({"run_name": "r", "config": "x"}, "runs[0].config"),
                                               ({"run_name": "r", "run_id": 5}, "runs[0].run_id")])
def test_a_plan_run_that_is_not_a_plain_entry_is_refused(run: dict, fragment: str, tmp_path: Path) -> None:
    write_json(tmp_path / "plan.json", {"threads": 1, "runs": [run]})
    with pytest.raises(RecordError, match=re.escape(f"plan.json: {fragment}: got")):
        read_plan(tmp_path)


@pytest.mark.parametrize("kind", ["fifo", "dev-zero"])
def test_a_plan_that_is_no_file_is_read_as_none_and_replaced(kind: str, tmp_path: Path) -> None:
    plan = tmp_path / "plan.json"
    if kind == "fifo":
        os.mkfifo(plan)
    else:
        plan.symlink_to("/dev/zero")
    with pytest.raises(RecordError, match="plan.json"):
        read_plan(tmp_path)
    assert planned_threads(tmp_path) is None  # planned afresh, as for any plan this program did not write
    fab.write_record(tmp_path, 0)
    assert any(p.startswith("plan.json unreadable") for p in load_sweep(tmp_path).problems)
    write_plan(tmp_path, {"threads": 1, "runs": []})
    assert plan.is_file() and not plan.is_symlink() and read_plan(tmp_path)["threads"] == 1
