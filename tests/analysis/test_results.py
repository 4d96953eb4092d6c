"""stability.analysis.results: run records and TensorBoard events of a fabricated sweep -> pandas."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import fabricate as fab
import numpy as np
import pandas as pd
import pytest

from stability.analysis.results import (
    _read_scalars,
    dedupe_steps,
    infer_baselines,
    load_curves,
    load_runs,
    load_sweep,
)
from stability.errors import ConfigError
from stability.record.identity import HPARAM_KEYS, TOGGLES


@pytest.fixture(scope="module")
def sweep_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return fab.make_sweep(tmp_path_factory.mktemp("sweep"))


def _row(runs: pd.DataFrame, norm: str, lr: float, seed: int) -> pd.Series:
    hit = runs[(runs["norm"] == norm) & np.isclose(runs["lr"].astype(float), lr) & (runs["seed"] == seed)]
    assert len(hit) == 1, hit
    return hit.iloc[0]


def test_one_row_per_run_every_status_kept(sweep_dir: Path) -> None:
    sweep = load_sweep(sweep_dir)
    assert len(sweep.runs) == fab.EXPECTED["n_runs"]
    assert sweep.runs["status"].value_counts().to_dict() == fab.EXPECTED["status"]
    assert len(sweep.finished) == fab.EXPECTED["n_finished"]
    assert sweep.runs.index.is_unique
    assert sweep.problems == []


def test_toggles_and_hparams_are_columns(sweep_dir: Path) -> None:
    sweep = load_sweep(sweep_dir)
    assert sweep.toggles == list(fab.BASE_TOGGLES)
    assert sweep.hparams == list(HPARAM_KEYS)  # what real runs record (identity.hparams_of)
    # configuration = every toggle + every hparam that varies, except the seed
    assert sweep.varying_hparams == ["lr", "seed"]
    assert sweep.config_columns == [*fab.BASE_TOGGLES, "lr"]
    row = _row(sweep.runs, "centernorm", 1e-3, 1)
    assert row["status"] == "completed" and row["best_val_acc"] == pytest.approx(0.84)
    assert row["weight_decay"] == 0.05 and row["warmup"] == True  # noqa: E712 - numpy or python bool
    assert row["versions.torch"] == "2.14.1"
    assert sweep.runs["final_val_acc"].dtype == "float64"  # null accuracies became NaN, not None


def test_diverged_run_row(sweep_dir: Path) -> None:
    runs = load_runs(sweep_dir)
    row = _row(runs, *fab.DIVERGED)
    assert row["status"] == "diverged" and bool(row["diverged"])
    assert row["diverged_step"] == fab.DIVERGED_STEP
    assert math.isnan(row["final_val_acc"]) and math.isnan(row["final_train_loss"])
    assert not runs.loc[runs["status"] != "diverged", "diverged"].any()


def test_unfinished_runs_take_their_configuration_from_config_yaml(sweep_dir: Path) -> None:
    runs = load_runs(sweep_dir)
    running = _row(runs, "centernorm", 1e-2, 2)
    assert running["status"] == "running" and not running["has_summary"]
    assert running["stem"] == "patchify" and running["warmup"] == True  # noqa: E712 - toggles filled
    assert running["batch_size"] == 64  # found under data.init_args in the nested config
    assert _row(runs, "layernorm", 1e-3, 2)["status"] == "incomplete"
    assert _row(runs, "centernorm", 1e-3, 2)["status"] == "pending"
    failed = _row(runs, "layernorm", 1e-2, 2)
    assert failed["status"] == "failed" and "out of memory" in failed["error"]


def test_running_becomes_incomplete_when_stale(sweep_dir: Path) -> None:
    later = load_runs(sweep_dir, now=time.time() + 7200)
    assert _row(later, "centernorm", 1e-2, 2)["status"] == "incomplete"
    assert "running" not in set(later["status"])


def test_a_run_without_any_record_of_its_config_is_named_as_a_gap(tmp_path: Path) -> None:
    """No summary, no config.yaml, no plan entry: its values are unknown (never guessed from the name)."""
    fab.make_sweep(tmp_path, unfinished=False)
    run_dir = fab.write_run(tmp_path, "centernorm", 1e-2, 3, "running", "b00001")
    (run_dir / "config.yaml").unlink()
    sweep = load_sweep(tmp_path)
    row = sweep.runs.loc[run_dir.name]
    assert row["status"] == "running" and pd.isna(row["norm"]) and pd.isna(row["lr"])
    assert any(p.startswith(run_dir.name) and "configuration is unknown" in p for p in sweep.problems)


def test_resumed_run_keeps_the_latest_wall_time(sweep_dir: Path) -> None:
    sweep = load_sweep(sweep_dir)
    name = _row(sweep.runs, *fab.RESUMED).name
    raw = _read_scalars(Path(sweep.runs.loc[name, "run_dir"]))
    raw_loss = raw[raw["tag"] == "train/loss"]
    assert len(raw_loss) == fab.STEPS + 10  # steps 15..24 are in both event files
    curves = load_curves(sweep, runs=[name])
    assert list(curves["tag"].unique()) == ["train/loss"]
    assert curves["step"].tolist() == list(range(fab.STEPS))
    expected = fab.loss_curve(*fab.RESUMED)
    expected[fab.SPIKE_STEP] *= 3.0
    # the first file logged value + 1 at steps 15..24; the resumed history must win
    np.testing.assert_allclose(curves["value"].to_numpy(), expected, rtol=1e-6)


def test_curves_keep_non_finite_losses_and_filter_tags(sweep_dir: Path) -> None:
    sweep = load_sweep(sweep_dir)
    name = _row(sweep.runs, *fab.DIVERGED).name
    loss = load_curves(sweep, runs=[name])
    assert loss["step"].max() == fab.DIVERGED_STEP and math.isnan(loss["value"].iloc[-1])
    val = load_curves(sweep, tags=["val/*"], runs=[name])
    assert set(val["tag"]) == {"val/acc", "val/loss"}
    attn = load_curves(sweep, tags=["attn/max_logit/*"], runs=[name])
    assert set(attn["tag"]) == {"attn/max_logit/layer_0", "attn/max_logit/layer_1"}
    every = load_curves(sweep_dir, tags=None)  # a folder works too; pending runs have no events
    assert set(every["run"]) == set(sweep.runs.index[sweep.runs["status"] != "pending"])
    assert not every.duplicated(["run", "tag", "step"]).any()


def test_dedupe_steps_latest_wall_time_wins() -> None:
    frame = pd.DataFrame({"run": ["a"] * 4, "tag": ["t"] * 4, "step": [0, 1, 1, 2],
                          "value": [1.0, 9.0, 2.0, 3.0], "wall_time": [0.0, 1.0, 5.0, 6.0]})
    out = dedupe_steps(frame.iloc[[0, 2, 1, 3]])
    assert out["value"].tolist() == [1.0, 2.0, 3.0]


def test_baselines_are_the_toggles_own(sweep_dir: Path) -> None:
    sweep = load_sweep(sweep_dir)
    assert sweep.baselines == {t: TOGGLES[t].baseline for t in sweep.toggles}
    assert sweep.baselines["norm"] == "layernorm" and sweep.baselines["warmup"] is True
    # a column that is no known toggle: the most common value among recorded runs
    runs = pd.DataFrame({"has_summary": [True, True, True, False], "residual": ["weighted", "plain", "weighted", None],
                         "trick": ["b", "a", "b", "a"]})
    assert infer_baselines(runs, ["residual", "trick"]) == {"residual": "plain", "trick": "b"}


def test_values_come_from_records_not_names(tmp_path: Path) -> None:
    """A run folder renamed by hand keeps its values: they are read from summary.json / config.yaml."""
    fab.make_sweep(tmp_path, unfinished=False)
    done = fab.write_run(tmp_path, "centernorm", 1e-2, 3, "completed", "c00002")
    cut = fab.write_run(tmp_path, "centernorm", 1e-2, 4, "incomplete", "c00003")
    done.rename(tmp_path / "renamed-done")
    cut.rename(tmp_path / "renamed-cut")
    runs = load_runs(tmp_path)
    for name, seed in (("renamed-done", 3), ("renamed-cut", 4)):
        assert (runs.loc[name, "norm"], runs.loc[name, "lr"], runs.loc[name, "seed"]) == ("centernorm", 0.01, seed)


def test_unreadable_summary_and_plan_listing(tmp_path: Path) -> None:
    fab.make_sweep(tmp_path, unfinished=False)
    broken = fab.write_run(tmp_path, "centernorm", 1e-2, 5, "running", "c00001")
    (broken / "summary.json").write_text('{"status": "compl')  # a write cut off (not atomic)
    (tmp_path / "plan.json").write_text(json.dumps({"runs": [{"run_name": "lr=0.1,seed=0-dddddd"}]}))
    sweep = load_sweep(tmp_path)
    assert sweep.runs.loc[broken.name, "status"] == "incomplete"
    assert any("summary.json unreadable" in p for p in sweep.problems)
    planned = sweep.runs.loc["lr=0.1,seed=0-dddddd"]
    assert planned["status"] == "pending" and pd.isna(planned["lr"])  # a plan entry without its config
    assert any(p.startswith("lr=0.1,seed=0-dddddd") and "unknown" in p for p in sweep.problems)


def test_a_held_sweep_lock_means_running(tmp_path: Path) -> None:
    from stability.record.status import RunLock
    fab.make_sweep(tmp_path, unfinished=False)
    run_dir = fab.write_run(tmp_path, "centernorm", 1e-2, 4, "incomplete", "d00001")  # old files
    assert load_runs(tmp_path).loc[run_dir.name, "status"] == "incomplete"
    with RunLock(run_dir) as lock:  # what a sweep worker holds while it trains the run
        assert lock.acquire()
        fab.age(run_dir, 3600)
        assert load_runs(tmp_path).loc[run_dir.name, "status"] == "running"
    assert load_runs(tmp_path).loc[run_dir.name, "status"] == "incomplete"


def test_plan_in_the_sweep_format_gives_pending_runs_their_config(tmp_path: Path) -> None:
    fab.make_sweep(tmp_path, unfinished=False)
    toggles = {**fab.BASE_TOGGLES, "stem": "conv", "warmup": False}
    hparams = {**fab.BASE_HPARAMS, "lr": 0.1, "seed": 7}
    name = "stem=conv,warmup=off,lr=0.1,seed=7-0123abcd"
    plan = {"format": 1, "varying": ["model.vit.stem"], "n_runs": 1,
            "runs": [{"run_id": "0123abcd", "run_name": name, "params": {"model.vit.stem": "conv"},
                      "config": fab.config_for(toggles, hparams)}]}
    (tmp_path / "plan.json").write_text(json.dumps(plan))
    row = load_runs(tmp_path).loc[name]
    assert row["status"] == "pending"
    got = (row["stem"], row["warmup"], row["lr"], row["seed"], row["norm"])
    assert got == ("conv", False, 0.1, 7, "layernorm")


@pytest.mark.parametrize("case", ["missing", "file", "empty", "not_a_sweep", "run_folder", "empty_plan"])
def test_bad_folders_raise_config_error(tmp_path: Path, case: str) -> None:
    target = tmp_path / "x"
    if case == "file":
        target.write_text("hi")
    elif case == "empty":
        target.mkdir()
    elif case == "not_a_sweep":
        (target / "src").mkdir(parents=True)
        (target / "src" / "main.py").write_text("print()")
    elif case == "run_folder":
        target = fab.write_run(tmp_path, "layernorm", 1e-3, 0, "completed", "e00001")
    elif case == "empty_plan":
        target.mkdir()
        (target / "plan.json").write_text(json.dumps({"runs": []}))
    with pytest.raises(ConfigError) as info:
        load_sweep(target)
    message = str(info.value)
    assert str(target) in message and "\n" not in message
    expected = {"missing": "does not exist", "file": "is a file", "empty": "is empty",
                "not_a_sweep": "not a sweep", "run_folder": "single run folder", "empty_plan": "is empty"}
    assert expected[case] in message
