"""Grid files, expansion, naming, plans, locks: everything about sweeps that needs no training."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sweep_helpers import BASE, ROOT, SMOKE, TINY, write_grid

from stability.errors import ConfigError
from stability.record.config_files import get_dotted, read_yaml, set_dotted
from stability.record.identity import format_value, readable_name
from stability.record.status import RunLock, is_locked, run_status
from stability.sweep.cells import expand
from stability.sweep.grid import load_grid
from stability.sweep.plan import make_plan, parse_shard, plan_document, shard
from stability.sweep.runner import Task, run_task
from stability.sweep.store import write_plan

GRIDS = sorted((ROOT / "ablations").glob("*.yaml"))


# -- YAML and dotted keys ----------------------------------------------------------------------------------
def test_yaml_reads_exponent_floats_as_numbers(tmp_path: Path) -> None:
    # PyYAML alone reads 1e-3 as the string "1e-3": it would hash and name differently from 0.001.
    path = tmp_path / "x.yaml"
    path.write_text("a: 1e-3\nb: 5.5E-4\nc: 1.0e+2\nd: 10\ne: e5\nf: .5\ng: 1_000\n")
    data = read_yaml(path)
    assert data == {"a": 0.001, "b": 0.00055, "c": 100.0, "d": 10, "e": "e5", "f": 0.5, "g": 1000}
    assert isinstance(data["a"], float) and isinstance(data["d"], int)


def test_set_dotted_creates_nests_and_follows_class_path_init_args() -> None:
    config = {"data": {"class_path": "stability.data.DigitsDataModule", "init_args": {"batch_size": 64}}}
    set_dotted(config, "model.vit.norm", "centernorm")
    set_dotted(config, "data.batch_size", 32)  # LightningCLI's shorthand for data.init_args.batch_size
    set_dotted(config, "data.init_args.seed", 3)
    assert config["model"] == {"vit": {"norm": "centernorm"}}
    assert config["data"]["init_args"] == {"batch_size": 32, "seed": 3}
    assert get_dotted(config, "data.batch_size") == 32
    assert get_dotted(config, "model.vit.depth", None) is None


def test_set_dotted_into_a_scalar_names_the_key() -> None:
    with pytest.raises(ConfigError, match=r"model\.lr\.x: 'model\.lr' is 0\.1"):
        set_dotted({"model": {"lr": 0.1}}, "model.lr.x", 1)


# -- loading and expanding -------------------------------------------------------------------------------
def test_smoke_grid_expands_to_its_product() -> None:
    spec = load_grid(SMOKE)
    cells = expand(spec)
    assert len(cells) == 4
    assert [(c.params["model.vit.stem"], c.params["model.vit.norm"]) for c in cells] == [
        ("patchify", "layernorm"), ("patchify", "centernorm"), ("conv", "layernorm"), ("conv", "centernorm")]
    for cell in cells:
        assert cell.config["model"]["vit"]["embed_dim"] == 16  # overrides reach every cell
        assert cell.config["model"]["vit"]["stem"] == cell.params["model.vit.stem"]
        assert cell.config["seed_everything"] == 0 and cell.config["data"]["init_args"]["seed"] == 0
        assert cell.config["data"]["init_args"]["batch_size"] == 64  # the base file's value survives


def test_seeds_exclude_include_order(tmp_path: Path) -> None:
    grid = write_grid(tmp_path, "g", {
        "axes": {"model.vit.stem": ["patchify", "conv"], "model.lr": [0.001, 0.01]},
        "seeds": 2,
        "exclude": [{"model.vit.stem": "conv", "model.lr": 0.01}],
        "include": [{"model.vit.attention": "qknorm", "model.lr": [0.001, 0.01]}],
    })
    cells = expand(load_grid(grid))
    # per seed: 4 product cells - 1 excluded + 2 included
    assert len(cells) == 2 * 5
    assert [c.config["seed_everything"] for c in cells] == [0] * 5 + [1] * 5  # seeds outermost
    assert not any(c.params.get("model.vit.stem") == "conv" and c.params.get("model.lr") == 0.01 for c in cells)
    included = [c for c in cells if c.params.get("model.vit.attention") == "qknorm"]
    assert [c.config["model"]["lr"] for c in included] == [0.001, 0.01, 0.001, 0.01]
    # keys an include does not give keep their base value
    assert all(c.config["model"]["vit"]["stem"] == "patchify" for c in included)
    assert all(c.config["data"]["init_args"]["seed"] == c.config["seed_everything"] for c in cells)


def test_samples_are_log_uniform_deterministic_and_paired(tmp_path: Path) -> None:
    body = {"axes": {"model.vit.stem": ["patchify", "conv"]},
            "samples": {"n": 40, "seed": 7, "params": {"model.lr": {"log_uniform": [1e-4, 1e-2]},
                                                      "model.weight_decay": {"uniform": [0.0, 0.5]}}}}
    cells = expand(load_grid(write_grid(tmp_path, "edf", body)))
    assert len(cells) == 80
    lrs = [c.config["model"]["lr"] for c in cells[:40]]
    assert all(1e-4 <= lr <= 1e-2 for lr in lrs)
    # log-uniform: about half the mass below the geometric midpoint 1e-3 (a uniform draw would put 10% there)
    assert 0.25 <= sum(lr < 1e-3 for lr in lrs) / len(lrs) <= 0.75
    assert len(set(lrs)) == 40
    # both stems get the same points (paired comparison), and a re-load draws the same points again
    assert lrs == [c.config["model"]["lr"] for c in cells[40:]]
    again = expand(load_grid(write_grid(tmp_path / "b", "edf", body)))
    assert [c.config["model"]["lr"] for c in again] == [c.config["model"]["lr"] for c in cells]
    body["samples"]["seed"] = 8
    other = expand(load_grid(write_grid(tmp_path / "c", "edf", body)))
    assert [c.config["model"]["lr"] for c in other] != [c.config["model"]["lr"] for c in cells]


def test_smoke_flag_shrinks_every_cell(tmp_path: Path) -> None:
    grid = write_grid(tmp_path, "g", {"axes": {"model.lr": [0.001, 0.01]},
                                      "overrides": {"trainer.max_epochs": 50}})
    cells = expand(load_grid(grid), smoke=True)
    assert all(c.config["trainer"]["max_epochs"] == 1 and c.config["trainer"]["limit_train_batches"] == 2
               for c in cells)
    grid = write_grid(tmp_path, "h", {"axes": {"trainer.max_epochs": [10, 20]},
                                      "smoke": {"trainer.max_epochs": 3}})
    assert [c.config["trainer"]["max_epochs"] for c in expand(load_grid(grid), smoke=True)] == [3, 3]


@pytest.mark.parametrize("grid", GRIDS, ids=[g.name for g in GRIDS])
def test_shipped_grids_load_and_say_what_they_cost(grid: Path) -> None:
    spec = load_grid(grid)
    text = spec.description.lower()
    assert "question" in text and "runs" in text and "cost" in text, grid
    assert "gpu" in text and "cpu" in text, grid
    assert len(expand(spec)) >= 1


# -- malformed grids ---------------------------------------------------------------------------------------
MALFORMED = [
    ("base: [x.yaml\naxes: {}\n", r"YAML error at line \d+, column \d+"),
    ("base: [BASE]\naxis: {model.lr: [0.1]}\n", r"unknown key 'axis'; valid keys: base, overrides, axes"),
    ("base: [BASE]\naxes: {model.lr: []}\n", r"axes\.model\.lr: empty list"),
    ("base: [BASE]\naxes: {model.lr: 0.1}\n", r"axes\.model\.lr: got 0\.1; an axis is a list"),
    ("base: [nowhere.yaml]\n", r"base: .*nowhere\.yaml does not exist"),
    ("axes: {model.lr: [0.1]}\n", r"base: got None"),
    ("base: [BASE]\naxes: {model.lr: [0.1]}\nexclude: [{model.vit.stem: conv}]\n",
     r"exclude\[0\]\.model\.vit\.stem: not an axis of this grid; axes: model\.lr"),
    ("base: [BASE]\nsamples: {n: 4, params: {model.lr: {loguniform: [1, 2]}}}\n",
     r"samples\.params\.model\.lr: .*log_uniform, uniform, choice"),
    ("base: [BASE]\nsamples: {n: 4, params: {model.lr: {log_uniform: [0, 1]}}}\n", r"0 < lo < hi"),
    ("base: [BASE]\nseeds: [0, 0]\n", r"seeds: got \[0, 0\]; the seeds must be distinct"),
    ("base: [BASE]\nseeds: []\n", r"seeds: got \[\]"),
    ("- just\n- a list\n", r"a grid file is a mapping"),
]


@pytest.mark.parametrize(("text", "message"), MALFORMED, ids=[m[1][:30] for m in MALFORMED])
def test_malformed_grid_is_one_clear_line(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text.replace("BASE", str(BASE)))
    with pytest.raises(ConfigError, match=message) as error:
        load_grid(path)
    assert "\n" not in str(error.value)
    assert str(path) in str(error.value)


@pytest.mark.parametrize(("axes", "message"), [
    ({"model.vit.norm": ["layernorm", "batchnorm"]}, r"batchnorm.*layernorm, centernorm"),
    ({"model.vit.nrom": ["layernorm"]}, r"nrom"),
    ({"model.vit.embed_dim": [16, 30]}, r"embed_dim=30 is not divisible by num_heads"),
])
def test_a_value_the_model_rejects_stops_planning(tmp_path: Path, axes: dict, message: str) -> None:
    grid = write_grid(tmp_path, "bad", {"overrides": TINY | {"model.vit.num_heads": 4}, "axes": axes})
    with pytest.raises(ConfigError, match=message) as error:
        make_plan(load_grid(grid))
    text = str(error.value)
    assert "\n" not in text and text.startswith(f"{grid}: run ")


def test_cli_rejects_a_malformed_grid_before_anything_runs(tmp_path: Path) -> None:
    grid = write_grid(tmp_path, "bad", {"overrides": TINY, "axes": {"model.vit.norm": ["layernorm", "batchnorm"]}})
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-m", "stability.cli", "sweep", str(grid), "--out", str(out)],
                          capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "batchnorm" in lines[0], proc.stderr
    assert not out.exists()  # nothing written: no plan, no run folder


# -- names, ids and plans ----------------------------------------------------------------------------------
def test_readable_names() -> None:
    config = {"model": {"vit": {"stem": "conv", "norm": "layernorm", "attention": "cosine"}, "warmup": False,
                        "lr": 0.01, "weight_decay": 0.05}, "seed_everything": 2}
    assert readable_name(config) == "stem=conv,attention=cosine,warmup=off,lr=0.01,seed=2"
    assert readable_name(config, ["model.weight_decay", "model.lr"]) == \
        "stem=conv,attention=cosine,warmup=off,wd=0.05,lr=0.01,seed=2"
    baseline = {"model": {"vit": {"stem": "patchify"}, "warmup": True, "lr": 5.5e-4}, "seed_everything": 0}
    assert readable_name(baseline) == "lr=0.00055,seed=0"
    assert format_value("a/b,c=d") == "a_b_c_d"


def test_plan_names_ids_dedupe_and_determinism(tmp_path: Path) -> None:
    grid = write_grid(tmp_path, "g", {
        "overrides": TINY,
        "axes": {"model.vit.attention": ["dot", "cosine"], "model.lr": [0.001, 0.01]},
        # the first include is already a product cell (deduplicated), the second is new
        "include": [{"model.vit.attention": "cosine", "model.lr": 0.01}, {"model.vit.attention": "qknorm"}],
    })
    spec = load_grid(grid)
    runs = make_plan(spec)
    assert len(runs) == 5
    names = [r.run_name for r in runs]
    assert names[0] == f"lr=0.001,seed=0-{runs[0].run_id}"
    assert names[3] == f"attention=cosine,lr=0.01,seed=0-{runs[3].run_id}"
    assert names[4].startswith("attention=qknorm,lr=0.003,seed=0-")
    assert len(set(names)) == len({r.run_id for r in runs}) == 5
    # the plan holds resolved configs (every default filled in) and is byte-identical when re-made
    assert runs[0].config["model"]["vit"]["cosine_tau"] == 10.0
    doc = plan_document(spec, runs, smoke=False)
    again = plan_document(spec, make_plan(load_grid(grid)), smoke=False)
    assert json.dumps(doc) == json.dumps(again)
    first = write_plan(tmp_path / "sweep", doc).read_bytes()
    assert write_plan(tmp_path / "sweep", again).read_bytes() == first


def test_shards_partition_the_plan() -> None:
    runs = list(range(10))
    parts = [shard(runs, i, 3) for i in range(3)]  # type: ignore[arg-type]
    assert sorted(sum(parts, [])) == runs and parts[0] == [0, 3, 6, 9]
    assert parse_shard("1/4") == (1, 4)
    for bad in ("4/4", "x", "-1/2", "1/0"):
        with pytest.raises(ConfigError, match="--shard"):
            parse_shard(bad)


def test_dry_run_prints_the_plan_and_writes_nothing(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from stability.sweep.cli import main

    out = tmp_path / "out"
    assert main([str(SMOKE), "--dry-run", "--out", str(out), "--shard", "1/2"]) == 0
    text = capsys.readouterr().out
    assert "# Question: does the whole pipeline work?" in text
    assert "norm=centernorm,lr=0.003,seed=0-" in text and "stem=conv,norm=centernorm" in text
    assert "2 runs -> " in text and "2 to run" in text
    assert not out.exists()


# -- status and locks -------------------------------------------------------------------------------
def test_run_status_from_the_folder(tmp_path: Path) -> None:
    run = tmp_path / "r"
    assert run_status(run) == "pending"
    run.mkdir()
    (run / "config.yaml").write_text("a: 1\n")
    assert run_status(run) == "pending"  # planned, never logged
    (run / "checkpoints").mkdir()
    assert run_status(run) == "incomplete"  # logged, then cut off
    for status in ("completed", "diverged", "failed"):
        (run / "summary.json").write_text(json.dumps({"status": status}))
        assert run_status(run) == status
    (run / "summary.json").write_text("{half a fi")  # unreadable: not finished
    assert run_status(run) == "incomplete"
    (run / "summary.json").write_text(json.dumps({"status": "completed", "toggles": 5}))  # not a record
    assert run_status(run) == "incomplete"


def test_lock_is_exclusive_and_dies_with_its_holder(tmp_path: Path) -> None:
    first, second = RunLock(tmp_path), RunLock(tmp_path)
    assert first.acquire() and is_locked(tmp_path)
    assert not second.acquire()
    first.release()
    assert not is_locked(tmp_path) and second.acquire()
    second.release()
    # A holder killed with SIGKILL leaves no stale lock: the OS drops flocks with the process.
    code = (f"import time; from stability.record.status import RunLock; assert RunLock({str(tmp_path)!r}).acquire(); "
            "print('held', flush=True); time.sleep(60)")
    holder = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    assert is_locked(tmp_path) and not RunLock(tmp_path).acquire()
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait(timeout=10)
    deadline = time.monotonic() + 5
    while is_locked(tmp_path) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert RunLock(tmp_path).acquire()


def test_run_task_leaves_locked_finished_and_failed_runs_alone(tmp_path: Path) -> None:
    run_dir = tmp_path / "cell"
    task = Task("abc", "cell", str(run_dir), {"not": "a config that could run"})
    with RunLock(run_dir) as held:
        assert held.acquire()
        assert run_task(task).status == "busy"  # another process has it: not touched, not run
    run_dir.mkdir(exist_ok=True)
    for status in ("completed", "diverged", "failed"):
        (run_dir / "summary.json").write_text(json.dumps({"status": status, "error": None}))
        before = sorted(p.name for p in run_dir.iterdir())
        outcome = run_task(task)
        assert (outcome.status, outcome.ran) == (status, False)
        assert sorted(p.name for p in run_dir.iterdir()) == before


# -- SLURM pieces that need no cluster ---------------------------------------------------------------------
def test_slurm_runtime_config_leaves_requeue_to_submitit(monkeypatch: pytest.MonkeyPatch) -> None:
    from stability.sweep.slurm import ShardJob, runtime_config
    from stability.training.cli import validate

    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    assert runtime_config(0) == {}
    monkeypatch.setenv("SLURM_JOB_ID", "123")
    extra = runtime_config(1)
    plugin = extra["trainer"]["plugins"][0]
    assert plugin["class_path"].endswith("SLURMEnvironment") and plugin["init_args"] == {"auto_requeue": False}
    assert extra["trainer"]["devices"] == 1
    config = load_grid(SMOKE)
    from stability.record.config_files import deep_merge
    from stability.sweep.cells import base_config

    merged = deep_merge(base_config(config), {"trainer": {"plugins": extra["trainer"]["plugins"]}})
    validate(merged)  # the plugin entry is a config the runs accept
    # On preemption/timeout submitit calls checkpoint(): the same shard is resubmitted with the same arguments.
    job = ShardJob()
    delayed = job.checkpoint("/sweep", 1, 4, False, 0)
    assert delayed.function is job and delayed.args == ("/sweep", 1, 4, False, 0)


def test_log_uniform_draws_are_rounded_to_readable_values(tmp_path: Path) -> None:
    body = {"samples": {"n": 5, "params": {"model.lr": {"log_uniform": [1e-4, 1e-2]}}}}
    for cell in expand(load_grid(write_grid(tmp_path, "s", body))):
        lr = cell.config["model"]["lr"]
        assert lr == float(f"{lr:.4g}") and math.isfinite(lr)


# -- command-line details ------------------------------------------------------------------------------------
def test_set_option_parses_yaml_values() -> None:
    from stability.sweep.cli import parse_set

    assert parse_set("model.lr=1e-3") == ("model.lr", 0.001)
    assert parse_set("data.data_dir=/datasets/cifar") == ("data.data_dir", "/datasets/cifar")
    assert parse_set("model.betas=[0.9, 0.95]") == ("model.betas", [0.9, 0.95])
    for bad in ("model.lr", "=3", "model lr=3"):
        with pytest.raises(ConfigError, match="--set"):
            parse_set(bad)


def test_default_workers_one_per_gpu_else_per_core(monkeypatch: pytest.MonkeyPatch) -> None:
    from stability.sweep import workers

    monkeypatch.setattr(workers, "usable_cores", lambda: 8)
    assert workers.default_workers(100, []) == 8 // workers.CPU_THREADS_PER_WORKER
    assert workers.default_workers(3, []) == min(3, 8 // workers.CPU_THREADS_PER_WORKER)  # never more than the runs
    assert workers.default_workers(100, [0, 1]) == 2
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,3")
    assert workers.visible_gpus() == [2, 3]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert workers.visible_gpus() == []
    assert workers.wants_gpu({"trainer": {"accelerator": "cpu"}}) is False
    assert workers.wants_gpu({"trainer": {}}) is True  # "auto" takes a GPU when there is one


def test_asked_workers_are_capped_by_runs_and_cores(monkeypatch: pytest.MonkeyPatch) -> None:
    from stability.sweep import workers

    monkeypatch.setattr(workers, "usable_cores", lambda: 2)
    assert workers.capped_workers(1000, 1, []) == (1, "note: --workers 1000: using 1 (1 run to run, 2 cores at "
                                                      "1 thread each)")
    assert workers.capped_workers(1000, 30, [], threads=1)[0] == 2  # the cores
    assert workers.capped_workers(4, 30, [0])[0] == 4  # a GPU may be shared on purpose: only the runs bound it
    assert workers.capped_workers(2, 30, []) == (2, None)  # nothing capped, nothing said
    assert workers.capped_workers(8, 0, []) == (1, None)  # a finished sweep starts no worker
