"""End-to-end sweeps with real training runs: resume, failures, SIGKILL, the submitit path."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sweep_helpers import ROOT, TINY, TRAINED, SweepResult, run_sweep, summaries, tree_digest, write_grid

from stability.sweep.store import read_plan


# -- the smoke grid ----------------------------------------------------------------------------------------
def test_smoke_sweep_finishes_every_run(smoke_sweep: SweepResult) -> None:
    assert smoke_sweep.rc == 0, smoke_sweep.stdout + smoke_sweep.stderr
    plan = read_plan(smoke_sweep.out)
    found = summaries(smoke_sweep.out)
    assert plan["n_runs"] == 4 and sorted(found) == sorted(r["run_name"] for r in plan["runs"])
    for run in plan["runs"]:
        summary = found[run["run_name"]]
        assert summary["status"] in TRAINED
        # the folder's hash suffix, the plan's id and the run's own record agree
        assert summary["run_id"] == run["run_id"] and run["run_name"].endswith("-" + run["run_id"])
        assert summary["toggles"]["stem"] == run["params"]["model.vit.stem"]
    names = sorted(found)
    assert any(n.startswith("stem=conv,norm=centernorm,lr=0.003,seed=0-") for n in names)
    assert any(n.startswith("lr=0.003,seed=0-") for n in names)


def test_smoke_sweep_terminal_shows_progress_not_lightning(smoke_sweep: SweepResult) -> None:
    lines = smoke_sweep.stdout.splitlines()
    assert lines[0].startswith("sweep smoke: 4 runs -> ") and "0 ended earlier, 4 to run" in lines[0]
    progress = [line for line in lines if line.startswith("[")]
    assert len(progress) == 4 and re.match(r"\[4/4\] (completed|collapsed) ", progress[-1])
    assert re.search(r"done \d diverged 0 collapsed \d failed 0 left 0 \| ETA", progress[-1])
    assert lines[-1].startswith("sweep smoke: 4 runs in ")
    done = re.search(r"(\d) completed, 0 diverged, (\d) collapsed, 0 failed, 0 left", lines[-1])
    assert done and int(done[1]) + int(done[2]) == 4, lines[-1]
    # what Lightning prints goes to each run's output.log, not to the sweep's terminal
    assert "Epoch 0" not in smoke_sweep.stdout + smoke_sweep.stderr
    assert all((p.parent / "output.log").is_file() for p in smoke_sweep.out.glob("*/summary.json"))


def test_rerunning_a_finished_sweep_changes_nothing(smoke_sweep: SweepResult, tmp_path: Path) -> None:
    before = tree_digest(smoke_sweep.out)
    again = run_sweep([str(ROOT / "ablations" / "smoke.yaml")], smoke_sweep.out)
    assert again.rc == 0
    assert "4 ended earlier, 0 to run" in again.stdout
    assert tree_digest(smoke_sweep.out) == before


# -- a run that diverges and a run that raises --------------------------------------------------------------
@pytest.fixture(scope="module")
def mixed_sweep(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, SweepResult]:
    folder = tmp_path_factory.mktemp("mixed")
    grid = write_grid(folder, "mixed", {
        "overrides": TINY | {"trainer.limit_train_batches": 3},
        "axes": {"model.lr": [0.001]},
        "include": [
            {"model.lr": 1000.0, "model.warmup": False},  # absurd learning rate: the loss explodes
            {"trainer.val_check_interval": 1000},  # Lightning raises inside fit: more than 3 batches
        ],
    })
    return grid, run_sweep([str(grid)], folder / "out")


def test_sweep_records_diverged_and_failed_runs_and_finishes_the_rest(mixed_sweep: tuple) -> None:
    grid, result = mixed_sweep
    by_status = {("trained" if s["status"] in TRAINED else s["status"]): (name, s)
                 for name, s in summaries(result.out).items()}
    assert sorted(by_status) == ["diverged", "failed", "trained"]
    name, diverged = by_status["diverged"]
    assert name.startswith("warmup=off,lr=1000,seed=0-") and diverged["diverged_step"] is not None
    name, failed = by_status["failed"]
    assert name.startswith("val_check_interval=1000,") and "val_check_interval" in failed["error"]
    assert (result.out / name / "traceback.txt").read_text().startswith("Traceback")
    assert result.rc == 1
    closing = result.stderr.strip().splitlines()[-1]
    assert closing.startswith("FAILED: 1 of 3 runs failed")
    assert re.search(r"\d completed, 1 diverged, \d collapsed, 1 failed, 0 left", result.stdout)


def test_failed_runs_are_retried_only_on_request(mixed_sweep: tuple) -> None:
    grid, result = mixed_sweep
    failed = next(n for n, s in summaries(result.out).items() if s["status"] == "failed")
    others = {n: tree_digest(result.out / n) for n in summaries(result.out) if n != failed}
    log = result.out / failed / "output.log"
    size = log.stat().st_size

    again = run_sweep([str(grid)], result.out)
    assert again.rc == 1 and "3 ended earlier, 0 to run" in again.stdout
    assert log.stat().st_size == size  # not run again

    retried = run_sweep([str(grid), "--retry-failed", "--workers", "1"], result.out)
    assert retried.rc == 1 and "1 to run" in retried.stdout
    assert log.stat().st_size > size  # it ran again (and failed again: the cause is deterministic)
    assert summaries(result.out)[failed]["status"] == "failed"
    assert {n: tree_digest(result.out / n) for n in others} == others


# -- SIGKILL in the middle, then resume ---------------------------------------------------------------------
def _children(pid: int) -> list[int]:
    kids: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        kids += [int(k) for k in (task / "children").read_text().split()]
    return kids


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux-only")
def test_sigkilled_sweep_leaves_no_orphans_and_resumes_exactly_once(tmp_path: Path) -> None:
    grid = write_grid(tmp_path, "killme", {
        # two epochs of 12 steps: a checkpoint is written half-way through each run
        "overrides": TINY | {"trainer.max_epochs": 2, "trainer.limit_train_batches": 12},
        "seeds": 4,
    })
    out = tmp_path / "out"
    log = (tmp_path / "sweep.log").open("w")
    sweep = subprocess.Popen([sys.executable, "-m", "stability.cli", "sweep", str(grid), "--out", str(out),
                              "--workers", "1"], cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and sweep.poll() is None:
            finished = [p.parent for p in out.glob("*/summary.json")]
            cut = [p.parent.parent for p in out.glob("*/checkpoints/last.ckpt")
                   if not (p.parent.parent / "summary.json").exists()]
            if finished and cut:
                break
            time.sleep(0.05)
        assert sweep.poll() is None, "the sweep ended before it could be killed mid-run"
        assert finished and cut, "no run was caught mid-way"
        workers = _children(sweep.pid)
        assert workers
        os.kill(sweep.pid, signal.SIGKILL)
        sweep.wait(timeout=10)
    finally:
        if sweep.poll() is None:
            sweep.kill()
        log.close()
    # the kernel kills the workers with their parent (PR_SET_PDEATHSIG): no orphan keeps training
    deadline = time.monotonic() + 15
    while any(_alive(pid) for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(_alive(pid) for pid in workers)

    done_before = {p.parent.name: tree_digest(p.parent) for p in out.glob("*/summary.json")}
    resumed = run_sweep([str(grid), "--workers", "1"], out)
    assert resumed.rc == 0, resumed.stdout + resumed.stderr
    final = summaries(out)
    assert len(final) == 4 and all(s["status"] in TRAINED for s in final.values())
    assert sorted(final) == sorted(r["run_name"] for r in read_plan(out)["runs"])
    # runs finished before the kill were not run again: their records are byte-identical
    assert {name: tree_digest(out / name) for name in done_before} == done_before
    # the cut-off run continued from its checkpoint rather than starting over
    for run_dir in cut:
        if run_dir.name not in done_before:
            assert "Restored all states from the checkpoint" in (run_dir / "output.log").read_text()
            assert final[run_dir.name]["steps"] == 24


# -- submitit's local executor: the SLURM code path with real jobs -------------------------------------------
def test_slurm_executor_runs_a_job_array_with_submitit_local(tmp_path: Path) -> None:
    pytest.importorskip("submitit")
    grid = write_grid(tmp_path, "array", {"overrides": TINY, "axes": {"model.vit.norm": ["layernorm", "centernorm"]}})
    out = tmp_path / "out"
    result = run_sweep([str(grid), "--executor", "slurm", "--cluster", "local", "--slurm-jobs", "2",
                        "--timeout-min", "10"], out)
    assert result.rc == 0, result.stdout + result.stderr
    assert "submitted 2 array task(s)" in result.stdout
    final = summaries(out)
    assert len(final) == 2 and all(s["status"] in TRAINED for s in final.values())
    assert len(list((out / ".submitit").glob("*/*_result.pkl"))) == 2  # two array tasks, each returned
    # a second submission finds nothing to do
    again = run_sweep([str(grid), "--executor", "slurm", "--cluster", "local"], out)
    assert again.rc == 0 and "2 ended earlier, 0 to run" in again.stdout
    assert json.loads((out / "plan.json").read_text())["n_runs"] == 2


# -- the paper-scale grid, shrunk ------------------------------------------------------------------------------
def test_cifar10_grid_validates_and_one_cell_runs_with_smoke(tmp_path: Path) -> None:
    from sweep_helpers import fabricate_cifar10

    data = fabricate_cifar10(tmp_path / "cifar")
    grid = ROOT / "ablations" / "cifar10.yaml"
    out = tmp_path / "out"
    # every one of the 32 cells is validated with the real CIFAR-10 module and the ViT-Lite-7/4 model;
    # then one of them (shard 0 of 32) trains for two batches
    result = run_sweep([str(grid), "--smoke", "--set", f"data.data_dir={data}", "--set", "data.allow_unverified=true",
                        "--shard", "0/32", "--workers", "1"], out)
    assert result.rc == 0, result.stdout + result.stderr
    assert read_plan(out)["n_runs"] == 32
    (summary,) = summaries(out).values()
    assert summary["status"] in TRAINED and summary["params"] == 3_722_250
    assert summary["hparams"]["lr"] == 5.5e-4 and summary["hparams"]["weight_decay"] == 0.06


# -- a worker that dies mid-run costs only its own cell --------------------------------------------------------
def test_a_worker_killed_mid_run_leaves_its_cell_to_a_rerun_and_is_replaced(tmp_path: Path) -> None:
    import threading

    from stability.sweep.grid import load_grid
    from stability.sweep.local import LocalExecutor
    from stability.sweep.plan import make_plan
    from stability.sweep.runner import Task

    grid = write_grid(tmp_path, "g", {"overrides": TINY | {"trainer.limit_train_batches": 12,
                                                           "trainer.max_epochs": 2}, "seeds": 2})
    runs = make_plan(load_grid(grid))
    out = tmp_path / "out"
    tasks = [Task(r.run_id, r.run_name, str(out / r.run_name), r.config) for r in runs]
    pool = LocalExecutor(workers=1, threads=1)
    pool.start()
    victim = pool._pool[0].process

    def kill_when_first_run_starts() -> None:
        log = out / runs[0].run_name / "output.log"
        deadline = time.monotonic() + 120
        while not log.exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        victim.kill()  # SIGKILL: as the kernel's OOM killer would

    killer = threading.Thread(target=kill_when_first_run_starts)
    killer.start()
    try:
        outcomes = {o.run_name: o for o in pool.run(tasks, lambda o: None)}
        # a killed cell is not failed: the next sweep (here: the same pool, its replacement worker) retries it
        again = pool.run(tasks[:1], lambda o: None)
    finally:
        killer.join()
        pool.close()
    first, second = outcomes[runs[0].run_name], outcomes[runs[1].run_name]
    assert first.status == "killed" and "worker killed by SIGKILL (1 of 2 kills allowed)" in first.error
    assert json.loads((out / runs[0].run_name / "kills.json").read_text()) == {"signals": ["SIGKILL"]}
    assert second.status in TRAINED
    assert [o.status for o in again][0] in TRAINED and len(again) == 1
    found = summaries(out)
    assert found[runs[0].run_name]["status"] in TRAINED and found[runs[1].run_name]["status"] in TRAINED


# -- two sweeps on one folder -------------------------------------------------------------------------------
def test_two_sweeps_on_one_folder_run_each_cell_once(tmp_path: Path) -> None:
    grid = write_grid(tmp_path, "twice", {"overrides": TINY | {"trainer.limit_train_batches": 6}, "seeds": 4})
    out = tmp_path / "out"
    other = subprocess.Popen([sys.executable, "-m", "stability.cli", "sweep", str(grid), "--out", str(out),
                              "--workers", "1"], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    mine = run_sweep([str(grid), "--workers", "1"], out)
    other_out, _ = other.communicate(timeout=300)
    # each sweep ran some cells, skipped the ones the other held or had finished; together: all, once each
    assert mine.rc in (0, 3) and other.returncode in (0, 3), mine.stdout + other_out
    final = summaries(out)
    assert len(final) == 4 and all(s["status"] in TRAINED for s in final.values())
    for name in final:
        log = (out / name / "output.log").read_text()
        assert log.count("`Trainer.fit` stopped") == 1, name  # trained exactly once
