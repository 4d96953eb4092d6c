"""What `tensorboard --logdir <sweep>` shows, read back from real event files with TensorBoard's own readers.

The views themselves (a real TensorBoard server, a real browser) are tested in test_tensorboard_view.py.
"""

from __future__ import annotations

import copy
import math
from pathlib import Path
from typing import Any

import pytest
from sweep_helpers import BASE, SweepResult, summaries
from tbparse import SummaryReader
from tensorboard.backend.event_processing.event_file_loader import LegacyEventFileLoader
from tensorboard.plugins.custom_scalar import layout_pb2
from tensorboard.plugins.hparams import api_pb2
from tensorboard.plugins.hparams import metadata as hp_metadata

from stability.record.config_files import load_config_files
from stability.record.files import COLLAPSED, COMPLETED, DIVERGED, FAILED, RunSummary
from stability.training import run as train
from stability.training.tensorboard import (
    HPARAMS_METRICS,
    SWEEP_EVENTS,
    VISIBLE_COLUMNS,
    hparam_values,
    result_metrics,
    run_experiment,
    sweep_experiment,
)


def events(folder: Path) -> list[Any]:
    """Every event of the event files directly in ``folder``, in file order."""
    found = []
    for path in sorted(folder.glob("events.out.tfevents.*")):
        found += list(LegacyEventFileLoader(str(path)).Load())
    return found


def summary_values(folder: Path, tag: str) -> list[tuple[int, Any]]:
    """(step, summary value) of every value with ``tag`` in ``folder``'s event files."""
    return [(e.step, v) for e in events(folder) if e.HasField("summary") for v in e.summary.value if v.tag == tag]


def experiment(folder: Path) -> api_pb2.Experiment | None:
    found = summary_values(folder, hp_metadata.EXPERIMENT_TAG)
    return hp_metadata.parse_experiment_plugin_data(found[-1][1].metadata.plugin_data.content) if found else None


def shown_by_default(exp: api_pb2.Experiment) -> list[str]:
    """The hyperparameter columns TensorBoard 2.21's HParams table ticks without a click, by its own rule:
    the server sorts the experiment's hparams by (not differs, name) (``_sort_and_reduce_to_hparams_limit``),
    the dashboard stably re-sorts them by differs and ticks the first min(5, n) (``_computeHParams``)."""
    served = sorted(exp.hparam_infos, key=lambda h: (not h.differs, h.name))
    dashboard = sorted(served, key=lambda h: not h.differs)
    return [h.display_name for h in dashboard[:min(5, len(dashboard))]]


def scalars(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    frame = SummaryReader(str(run_dir), extra_columns={"wall_time"}).scalars
    frame = frame.sort_values("wall_time").drop_duplicates(["tag", "step"], keep="last")
    return {tag: sorted(zip(g["step"], g["value"])) for tag, g in frame.groupby("tag")}


def tiny(**overrides: Any) -> dict:
    config = load_config_files([BASE])
    config["model"]["vit"].update(embed_dim=16, depth=2, num_heads=2)
    config["trainer"].update(max_epochs=2, limit_train_batches=4, limit_val_batches=2, limit_test_batches=2,
                             enable_progress_bar=False)
    config["telemetry"]["every_n_steps"] = 2
    for key, value in overrides.items():
        section, name = key.split(".", 1)
        config[section][name] = value
    return config


@pytest.fixture(scope="module")
def single_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, RunSummary]]:
    """Two runs outside any sweep: one that collapses (conv stem), one that diverges (absurd lr, no warmup).

    The first trains to the end but cannot leave chance: its 8 steps all fall in the base config's 2-epoch
    warmup, so the learning rate never gets above a small fraction of 3e-3 and the loss stays at ln 10.
    """
    root = tmp_path_factory.mktemp("fit")
    runs = {}
    for name, config in {"flat": tiny(), "boom": tiny(**{"model.lr": 1000.0, "model.warmup": False})}.items():
        if name == "flat":
            config["model"]["vit"]["stem"] = "conv"
        runs[name] = (root / name, train.run(config, root / name))
    return runs


# -- a sweep: one experiment at the root, one session per run ---------------------------------------------------
def test_one_tensorboard_run_per_cell_with_toggles_and_metrics(smoke_sweep: SweepResult) -> None:
    records = summaries(smoke_sweep.out)
    assert len(records) == 4
    # One TensorBoard run per cell, named by the toggles that differ from the baseline.
    toggles_in_name = {name.split("lr=")[0].rstrip(",") for name in records}
    assert toggles_in_name == {"", "stem=conv", "norm=centernorm", "stem=conv,norm=centernorm"}

    reader = SummaryReader(str(smoke_sweep.out), extra_columns={"dir_name", "wall_time"})
    hparams = reader.hparams
    scalars = reader.scalars.sort_values("wall_time")
    # Every run's session holds its values (the sweep's root holds no session) ...
    assert set(hparams["dir_name"]) == set(records)
    for name, summary in records.items():
        row = dict(hparams.loc[hparams["dir_name"] == name, ["tag", "value"]].values)
        for toggle in ("stem", "norm", "attention", "pos_embed"):
            assert row[f"toggle/{toggle}"] == summary["toggles"][toggle], (name, toggle)
        assert row["trial/lr"] == pytest.approx(summary["hparams"]["lr"])
        assert "trial/gradient_clip_val" not in row  # unset (None): left out, not the text "None"
        # ... and real metrics: the last hp/* scalar of the run is its summary's value, not a placeholder.
        run = scalars[scalars["dir_name"] == name]
        last = {tag: group["value"].iloc[-1] for tag, group in run.groupby("tag")}
        assert last["hp/best_val_acc"] == pytest.approx(summary["best_val_acc"])
        assert last["hp/test_acc"] == pytest.approx(summary["test_acc"])
        assert last["hp/diverged"] == float(summary["status"] == "diverged")
        assert "hp_metric" not in last
        # every run writes every metric (TensorBoard's parallel coordinates draw only such runs)
        assert {m.tag for m in HPARAMS_METRICS} <= set(last)
        assert last["hp/steps_survived"] == summary["steps"]  # none of them diverged: all their steps
        assert {"train/loss", "train/grad_norm", "attn/max_logit/layer_0", "val/acc"} <= set(last)


def test_the_sweep_root_holds_the_one_experiment_in_reading_order(smoke_sweep: SweepResult) -> None:
    root = smoke_sweep.out
    assert (root / SWEEP_EVENTS).is_file()
    exp = experiment(root)
    # The varied toggles (smoke varies stem and norm), then lr and seed; the grid's constants are left out.
    assert [h.display_name for h in exp.hparam_infos] == ["norm", "stem", "lr", "seed"]
    assert [h.name for h in exp.hparam_infos] == ["toggle/norm", "toggle/stem", "trial/lr", "trial/seed"]
    assert [h.differs for h in exp.hparam_infos] == [True, True, False, False]
    assert sorted(exp.hparam_infos[0].domain_discrete.values[i].string_value for i in range(2)) == \
        ["centernorm", "layernorm"]
    # TensorBoard sorts columns "differing first, then by name": that is already our order.
    assert sorted(exp.hparam_infos, key=lambda h: (not h.differs, h.name)) == list(exp.hparam_infos)
    assert shown_by_default(exp) == ["norm", "stem", "lr", "seed"]  # fewer than five: lr and seed too
    visible = [m.name.tag for m in exp.metric_infos][:VISIBLE_COLUMNS]
    assert visible == ["hp/diverged", "hp/collapsed", "hp/steps_survived", "hp/test_acc", "hp/best_val_acc"]
    # Runs of a sweep write no experiment of their own: TensorBoard would pick one of them arbitrarily.
    for run_dir in (p.parent for p in root.glob("*/summary.json")):
        assert experiment(run_dir) is None
        start = summary_values(run_dir, hp_metadata.SESSION_START_INFO_TAG)
        end = summary_values(run_dir, hp_metadata.SESSION_END_INFO_TAG)
        assert len(start) == 1 and len(end) == 1  # one session, though Lightning logs hparams before fit and test
        info = hp_metadata.parse_session_start_info_plugin_data(start[0][1].metadata.plugin_data.content)
        assert info.group_name == run_dir.name
        status = hp_metadata.parse_session_end_info_plugin_data(end[0][1].metadata.plugin_data.content).status
        assert status == api_pb2.STATUS_SUCCESS


def test_sweep_experiment_columns_follow_what_the_grid_varies() -> None:
    base = tiny()
    cells = []
    for lr in (1e-3, 1e-2):
        for warmup in (True, False):
            for seed in (0, 1):
                config = copy.deepcopy(base)
                config["model"].update(lr=lr, warmup=warmup)
                config["seed_everything"] = seed
                cells.append(hparam_values(config))
    exp = experiment_of(sweep_experiment(cells))
    assert [h.display_name for h in exp.hparam_infos] == ["warmup", "lr", "seed"]
    assert all(h.differs for h in exp.hparam_infos)
    assert shown_by_default(exp) == ["warmup", "lr", "seed"]
    lr = exp.hparam_infos[1]
    assert (lr.domain_interval.min_value, lr.domain_interval.max_value) == (1e-3, 1e-2)
    assert {v.string_value for v in exp.hparam_infos[0].domain_discrete.values} == {"True", "False"}


def experiment_of(summary: Any) -> api_pb2.Experiment:
    return hp_metadata.parse_experiment_plugin_data(summary.value[0].metadata.plugin_data.content)


def test_lr_and_seed_are_shown_whenever_they_vary_however_many_toggles_vary() -> None:
    """A grid shaped like the digits study: the baseline and one-toggle cells at two learning rates, one cell
    with five toggles changed at once, two seeds: seven toggles, lr and seed vary, and TensorBoard ticks five."""
    base = tiny()
    changes = [{}, {"model.vit.stem": "conv"}, {"model.vit.attention": "cosine"}, {"model.warmup": False},
               {"model.vit.norm": "centernorm", "model.vit.norm_placement": "post", "model.vit.residual": "weighted",
                "model.vit.init": "spectral", "model.vit.pos_embed": "lape"}]
    cells = []
    for change in changes:
        for lr in (1e-3, 1e-2) if len(change) < 2 else (1e-3,):
            for seed in (0, 1):
                config = copy.deepcopy(base)
                for key, value in {**change, "model.lr": lr}.items():
                    section, rest = key.split(".", 1)
                    target = config[section]["vit"] if rest.startswith("vit.") else config[section]
                    target[rest.removeprefix("vit.")] = value
                config["seed_everything"] = seed
                cells.append(hparam_values(config))
    exp = experiment_of(sweep_experiment(cells))
    # lr, seed, then the toggles that set the most runs apart (4 runs each: stem, attention, warmup); the
    # combination cell's five toggles (2 runs each) are listed, a tick away.
    assert shown_by_default(exp) == ["attention", "stem", "warmup", "lr", "seed"]
    listed = {h.display_name: h.differs for h in exp.hparam_infos}
    assert listed == {"attention": True, "stem": True, "warmup": True, "lr": True, "seed": True, "init": False,
                      "norm": False, "norm_placement": False, "pos_embed": False, "residual": False}
    # TensorBoard serves them in the order written: what the table shows is the head of the experiment.
    assert [h.display_name for h in exp.hparam_infos][:VISIBLE_COLUMNS] == shown_by_default(exp)


def test_a_single_run_with_many_tricks_still_shows_lr_and_seed() -> None:
    config = tiny(**{"model.warmup": False, "model.lr": 0.01})
    config["model"]["vit"].update(norm="centernorm", norm_placement="post", attention="cosine", residual="weighted",
                                  init="spectral")
    exp = experiment_of(run_experiment(hparam_values(config)))
    shown = shown_by_default(exp)
    assert len(shown) == VISIBLE_COLUMNS and {"lr", "seed"} <= set(shown)
    assert shown == ["attention", "norm", "norm_placement", "lr", "seed"]  # three of six tricks, in TOGGLES order


# -- the Stability/ group, the divergence marker, the layout ----------------------------------------------------
def test_divergence_is_marked_at_its_step(single_runs: dict) -> None:
    run_dir, summary = single_runs["boom"]
    assert summary.status == "diverged" and summary.diverged_step is not None
    tags = scalars(run_dir)
    assert tags["Stability/diverged"] == [(summary.diverged_step, 1.0)]
    text = summary_values(run_dir, "Stability/events")
    assert [step for step, _ in text] == [summary.diverged_step]
    message = text[0][1].tensor.string_val[0].decode()
    assert message == f"**diverged** at step {summary.diverged_step}: {summary.divergence_reason}"
    # HParams: every metric, the steps it survived, and chance accuracy for the test it never had
    assert {m.tag for m in HPARAMS_METRICS} <= set(tags)
    assert tags["hp/diverged"][-1][1] == 1.0 and tags["hp/steps_survived"][-1][1] == summary.diverged_step
    assert summary.test_acc is None and tags["hp/test_acc"][-1][1] == pytest.approx(0.1)  # 10 classes
    assert tags["hp/collapsed"][-1][1] == 0.0 and "Stability/collapsed" not in tags
    flat_dir, _ = single_runs["flat"]
    assert "Stability/diverged" not in scalars(flat_dir)


def test_collapse_is_marked_at_the_end_of_training(single_runs: dict) -> None:
    run_dir, summary = single_runs["flat"]
    assert summary.status == COLLAPSED and summary.collapse_reason
    tags = scalars(run_dir)
    last_step = summary.steps - 1  # the last optimiser step: where the loss and validation curves end
    assert tags["train/loss"][-1][0] == last_step and tags["val/acc"][-1][0] == last_step
    assert tags["Stability/collapsed"] == [(last_step, 1.0)]
    text = summary_values(run_dir, "Stability/events")
    assert [step for step, _ in text] == [last_step]
    assert text[0][1].tensor.string_val[0].decode() == f"**collapsed** at step {last_step}: {summary.collapse_reason}"
    assert tags["hp/collapsed"][-1][1] == 1.0 and tags["hp/diverged"][-1][1] == 0.0
    assert "Stability/diverged" not in tags


def test_result_metrics_flag_each_failure_once() -> None:
    flags = {status: {tag: result_metrics(RunSummary(status=status, run_name="r", run_id="0"), 10)[tag]
                      for tag in ("hp/diverged", "hp/collapsed")}
             for status in (COMPLETED, DIVERGED, COLLAPSED, FAILED)}
    assert flags == {COMPLETED: {"hp/diverged": 0.0, "hp/collapsed": 0.0},
                     DIVERGED: {"hp/diverged": 1.0, "hp/collapsed": 0.0},
                     COLLAPSED: {"hp/diverged": 0.0, "hp/collapsed": 1.0},
                     FAILED: {"hp/diverged": 0.0, "hp/collapsed": 0.0}}


def test_every_run_gets_every_metric_with_its_documented_failure_value() -> None:
    """TensorBoard's parallel-coordinates view draws only runs that have every HParams metric: a run that never
    measured a value gets the one HPARAMS_METRICS documents (chance, its initial loss, -1), never a gap."""
    tags = [m.tag for m in HPARAMS_METRICS]
    bare = {status: result_metrics(RunSummary(status=status, run_name="r", run_id="0"), 4)
            for status in (COMPLETED, DIVERGED, COLLAPSED, FAILED)}
    assert all(list(values) == tags for values in bare.values())
    failed = bare[FAILED]
    assert failed["hp/steps_survived"] == 0.0  # failed before its first step
    assert failed["hp/test_acc"] == failed["hp/best_val_acc"] == failed["hp/final_val_acc"] == 0.25  # chance
    assert failed["hp/final_train_loss"] == pytest.approx(math.log(4))  # no initial loss either: ln classes
    assert failed["hp/max_attn_logit"] == failed["hp/max_grad_norm"] == -1.0  # never measured
    diverged = result_metrics(RunSummary(status=DIVERGED, run_name="r", run_id="0", diverged_step=7, steps=8,
                                         initial_loss=2.3, final_train_loss=31.2, max_grad_norm=40.0,
                                         max_attn_logit=90.0), 10)
    assert diverged["hp/steps_survived"] == 7.0 and diverged["hp/test_acc"] == pytest.approx(0.1)
    assert diverged["hp/final_train_loss"] == pytest.approx(2.3)  # min(loss, initial loss), as the verdicts
    assert diverged["hp/max_attn_logit"] == 90.0 and diverged["hp/max_grad_norm"] == 40.0
    completed = result_metrics(RunSummary(status=COMPLETED, run_name="r", run_id="0", steps=12, test_acc=0.8,
                                          initial_loss=2.3, final_train_loss=0.4), 10)
    assert completed["hp/steps_survived"] == 12.0 and completed["hp/test_acc"] == pytest.approx(0.8)
    assert completed["hp/final_train_loss"] == pytest.approx(0.4)


def test_the_stability_group_repeats_the_signals_that_come_first(single_runs: dict) -> None:
    run_dir, summary = single_runs["flat"]
    tags = scalars(run_dir)
    assert tags["Stability/loss"] == tags["train/loss"] and len(tags["train/loss"]) == summary.steps
    assert tags["Stability/grad_norm"] == tags["train/grad_norm"]
    layers = [tags[tag] for tag in sorted(tags) if tag.startswith("attn/max_logit/layer_")]
    expected = [(points[0][0], max(value for _, value in points)) for points in zip(*layers)]
    assert tags["Stability/max_attn_logit"] == expected
    assert [step for step, _ in expected] == [0, 2, 4, 6]
    # TensorBoard groups tags by the part before the first "/" and sorts the groups by name
    groups = sorted({tag.split("/", 1)[0] for tag in tags})
    assert groups[0] == "Stability"


def test_each_run_writes_the_custom_scalars_layout(single_runs: dict) -> None:
    for name, blocks in (("flat", 1), ("boom", 2)):  # the conv stem replaces one of the two blocks
        run_dir, _ = single_runs[name]
        found = summary_values(run_dir, "custom_scalars__config__")
        assert found, run_dir
        layout = layout_pb2.Layout.FromString(found[0][1].tensor.string_val[0])
        titles = [c.title for c in layout.category]
        assert titles[0] == "loss and failures"
        first = layout.category[0].chart
        assert first[0].title == "training loss (train/loss)" and first[1].title.startswith("failure markers")
        assert list(first[1].multiline.tag) == [r"^Stability/diverged$", r"^Stability/collapsed$"]
        attn = next(c for c in layout.category if c.title.startswith("max attention logit"))
        assert [c.multiline.tag[0] for c in attn.chart] == [rf"^attn/max_logit/layer_{i}$" for i in range(blocks)]


def test_a_run_outside_a_sweep_writes_its_own_experiment(single_runs: dict) -> None:
    run_dir, summary = single_runs["flat"]
    exp = experiment(run_dir)
    assert exp is not None
    # its non-baseline toggle (conv stem), lr and seed lead; no value domains (other runs may differ)
    names = [h.name for h in exp.hparam_infos]
    assert names[:3] == ["toggle/stem", "trial/lr", "trial/seed"]
    assert [h.differs for h in exp.hparam_infos[:4]] == [True, True, True, False]
    assert shown_by_default(exp)[:3] == ["stem", "lr", "seed"]
    assert not any(h.HasField("domain_discrete") or h.HasField("domain_interval") for h in exp.hparam_infos)
    assert [m.name.tag for m in exp.metric_infos] == [m.tag for m in HPARAMS_METRICS]
