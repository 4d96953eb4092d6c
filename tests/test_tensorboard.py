"""What `tensorboard --logdir <sweep>` shows, read back from a real sweep's event files with a real reader."""

from __future__ import annotations

import pytest
from sweep_helpers import SweepResult, summaries
from tbparse import SummaryReader


def test_one_tensorboard_run_per_cell_with_toggles_and_metrics(smoke_sweep: SweepResult) -> None:
    records = summaries(smoke_sweep.out)
    assert len(records) == 4
    # One TensorBoard run per cell, named by the toggles that differ from the baseline.
    toggles_in_name = {name.split("lr=")[0].rstrip(",") for name in records}
    assert toggles_in_name == {"", "stem=conv", "norm=centernorm", "stem=conv,norm=centernorm"}

    reader = SummaryReader(str(smoke_sweep.out), extra_columns={"dir_name", "wall_time"})
    hparams = reader.hparams
    scalars = reader.scalars.sort_values("wall_time")
    # The HParams tab lists every run of the sweep, its toggles as columns ...
    assert set(hparams["dir_name"]) == set(records)
    for name, summary in records.items():
        row = dict(hparams.loc[hparams["dir_name"] == name, ["tag", "value"]].values)
        for toggle in ("stem", "norm", "attention", "pos_embed"):
            assert row[f"toggle/{toggle}"] == summary["toggles"][toggle], (name, toggle)
        assert row["lr"] == pytest.approx(summary["hparams"]["lr"])
        # ... and real metrics: the last hp/* scalar of the run is its summary's value, not a placeholder.
        run = scalars[scalars["dir_name"] == name]
        last = {tag: group["value"].iloc[-1] for tag, group in run.groupby("tag")}
        assert last["hp/best_val_acc"] == pytest.approx(summary["best_val_acc"])
        assert last["hp/test_acc"] == pytest.approx(summary["test_acc"])
        assert last["hp/diverged"] == float(summary["status"] == "diverged")
        assert "hp_metric" not in last
        assert {"train/loss", "train/grad_norm", "attn/max_logit/layer_0", "val/acc"} <= set(last)
