"""Telemetry at the failure: the step the divergence detector fires on is probed whatever every_n_steps says.

Real tiny runs at lr 1 without warmup (they diverge within three steps), read back from summary.json and, with
TensorBoard's own event-file reader, from the run's events.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
from sweep_helpers import BASE, TINY
from tensorboard.backend.event_processing.event_file_loader import LegacyEventFileLoader
from tensorboard.util import tensor_util

from stability.record.config_files import load_config_files
from stability.training import run as train
from stability.training import telemetry
from stability.training.telemetry import WINDOW, StabilityTelemetry

TIMING = {"wall_time_s", "train_time_s", "images_per_s", "versions"}


def config(**overrides: Any) -> dict:
    """The digits base config shrunk to the smoke-size ViT (``TINY``), six steps, then ``overrides``."""
    cfg = load_config_files([BASE])
    changes = {**TINY, "trainer.limit_train_batches": 6, "trainer.enable_progress_bar": False,
               "telemetry.every_n_steps": 10, **overrides}
    for key, value in changes.items():
        *parents, leaf = key.split(".")
        node = cfg
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return cfg


EXPLODES = {"model.lr": 1.0, "model.warmup": False}  # diverges at step 1 or 2
# Random draws that change what the attention sees: the rate grows from 0 over the blocks, so the second of
# three blocks drops paths in front of the third's attention.
DROP_PATH = {"model.vit.depth": 3, "model.vit.drop_path_rate": 0.3}


def scalars_at(run_dir: Path, step: int) -> dict[str, float]:
    """Every scalar the run's event files hold at ``step``, read with TensorBoard's own loader (last write wins)."""
    found: dict[str, float] = {}
    for path in sorted(run_dir.glob("events.out.tfevents.*")):
        for event in LegacyEventFileLoader(str(path)).Load():
            if not event.HasField("summary") or event.step != step:
                continue
            for value in event.summary.value:
                if value.HasField("simple_value"):
                    found[value.tag] = value.simple_value
                elif value.HasField("tensor") and value.metadata.plugin_data.plugin_name == "scalars":
                    found[value.tag] = float(tensor_util.make_ndarray(value.tensor))
    return found


def record(run_dir: Path) -> dict[str, Any]:
    """The run's summary.json as written, timings left out."""
    return {k: v for k, v in json.loads((run_dir / "summary.json").read_text()).items() if k not in TIMING}


def fit(cfg: dict, run_dir: Path) -> dict[str, Any]:
    """Run ``cfg`` into ``run_dir``; its summary.json (:func:`record`)."""
    train.run(cfg, run_dir)
    return record(run_dir)


@pytest.fixture(scope="module")
def exploded(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run_dir = tmp_path_factory.mktemp("failure") / "exploded"
    train.run(config(**EXPLODES), run_dir)
    return run_dir


def test_the_failing_step_is_probed_between_sampled_steps(exploded: Path) -> None:
    summary = record(exploded)
    step = summary["diverged_step"]
    assert summary["status"] == "diverged" and step in (1, 2)  # every_n_steps 10: only step 0 is sampled
    failure = summary["failure"]
    assert failure["step"] == step and failure["probe"] == "replayed"
    layers = 2
    assert len(failure["attn_max_logit"]) == len(failure["attn_entropy"]) == layers
    assert all(math.isfinite(v) for v in failure["attn_max_logit"] + failure["attn_entropy"])
    assert len(failure["grad_norm_blocks"]) == len(failure["update_ratio_blocks"]) == layers
    assert failure["max_attn_logit"] == max(failure["attn_max_logit"])
    # the logits at the failure, not at initialisation: they grew far past the step-0 probe's
    at_init = failure["probes"][0]
    assert at_init["step"] == 0 and failure["max_attn_logit"] > 10 * at_init["max_attn_logit"]
    # the run's maximum includes the failure probe
    assert summary["max_attn_logit"] == failure["max_attn_logit"]
    # the step's own values: the diverging loss, log Z, lr and the raw gradient norm
    assert failure["loss"] > 5 * summary["initial_loss"] and failure["loss"] == pytest.approx(
        summary["final_train_loss"])
    assert failure["grad_norm"] > 0 and failure["log_z"] > 0 and failure["lr"] > 0
    assert summary["max_grad_norm"] >= failure["grad_norm"]
    # the window: every step up to the failure, oldest first; the probes: step 0 and the failure
    assert [entry["step"] for entry in failure["window"]] == list(range(step + 1))
    assert failure["window"][-1]["loss"] == failure["loss"]
    assert failure["window"][0]["loss"] == summary["initial_loss"]
    assert [p["step"] for p in failure["probes"]] == [0, step]
    assert "non_finite" not in failure  # a finite explosion: nothing to flag


def test_tensorboard_holds_the_failure_probe_at_its_step(exploded: Path) -> None:
    failure = record(exploded)["failure"]
    at_step = scalars_at(exploded, failure["step"])
    for i in range(2):
        assert at_step[f"attn/max_logit/layer_{i}"] == pytest.approx(failure["attn_max_logit"][i], rel=1e-6)
        assert at_step[f"attn/entropy/layer_{i}"] == pytest.approx(failure["attn_entropy"][i], rel=1e-6)
        assert at_step[f"grad_norm/block_{i}"] == pytest.approx(failure["grad_norm_blocks"][i], rel=1e-6)
        assert at_step[f"update_ratio/block_{i}"] == pytest.approx(failure["update_ratio_blocks"][i], rel=1e-6)
    assert at_step["Stability/max_attn_logit"] == pytest.approx(failure["max_attn_logit"], rel=1e-6)
    assert at_step["Stability/diverged"] == 1.0
    assert "attn/max_logit/layer_0" not in scalars_at(exploded, failure["step"] - 1)  # not a sampled step


def test_the_replay_sees_what_the_steps_own_forward_saw(tmp_path: Path) -> None:
    """The extra forward measures the weights, batch and random draws (drop path on) of the diverging step: a
    run that samples every step measures the same attention at that step, and trains the same steps."""
    drop_path = {**EXPLODES, **DROP_PATH}
    replayed = fit(config(**drop_path), tmp_path / "replayed")
    sampled = fit(config(**drop_path, **{"telemetry.every_n_steps": 1}), tmp_path / "sampled")
    assert replayed["status"] == sampled["status"] == "diverged"
    assert replayed["diverged_step"] == sampled["diverged_step"]
    a, b = replayed["failure"], sampled["failure"]
    assert (a["probe"], b["probe"]) == ("replayed", "sampled")
    for key in ("attn_max_logit", "attn_entropy", "grad_norm_blocks", "update_ratio_blocks", "loss", "grad_norm"):
        assert a[key] == b[key], key
    assert a["window"] == b["window"]


def test_a_run_that_does_not_diverge_is_unchanged(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No failure field, and the same numbers as a run with the failure check switched off: watching for the
    failure draws no random numbers and runs no forward (drop path on, so a stray draw would show)."""
    calm = config(**DROP_PATH, **{"telemetry.every_n_steps": 3})
    watched = fit(calm, tmp_path / "watched")
    assert watched["status"] in ("completed", "collapsed") and "failure" not in watched
    monkeypatch.setattr(StabilityTelemetry, "_diverges_now", lambda *args: False)
    monkeypatch.setattr(telemetry, "rng_state", lambda device: None)
    unwatched = fit(calm, tmp_path / "unwatched")
    assert watched == {**unwatched, "run_name": watched["run_name"]}


def test_a_non_finite_loss_is_flagged_not_dropped() -> None:
    """A NaN measured at the failure is written as null (JSON has no NaN) and named in ``non_finite``; a value
    never measured is null without being named."""
    telemetry = StabilityTelemetry(every_n_steps=0)
    telemetry._steps.extend([{"step": 0, "loss": 2.3, "grad_norm": 1.0, "log_z": 2.2, "lr": 0.1},
                             {"step": 1, "loss": math.nan, "grad_norm": math.inf, "log_z": None, "lr": 0.1}])
    failure = telemetry.failure_at(1)
    assert failure["loss"] is None and failure["grad_norm"] is None and failure["log_z"] is None
    assert failure["non_finite"] == ["loss", "grad_norm"]
    assert failure["probe"] is None and failure["max_attn_logit"] is None  # no probe ran at that step
    assert failure["window"][1]["non_finite"] == ["loss", "grad_norm"]
    assert telemetry.failure_at(None) is None
    assert telemetry.max_grad_norm is None  # no gradient seen: not measured, not 0


def test_the_window_keeps_the_last_steps_only() -> None:
    telemetry = StabilityTelemetry()
    telemetry._steps.extend({"step": s, "loss": 1.0, "grad_norm": 1.0, "log_z": 1.0, "lr": 1.0} for s in range(20))
    assert [entry["step"] for entry in telemetry.failure_at(19)["window"]] == list(range(20 - WINDOW, 20))
