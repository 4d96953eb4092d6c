"""A diverged run's loss curve ends at the loss that stopped it (finite), or at the last finite loss before a
non-finite one; the statistics of training still leave the divergence out."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from stability.analysis import metrics as M
from stability.report import plots

STEPS = np.arange(6)
EXPLODED = np.array([2.3, 2.0, 1.7, 9.1, 25.7, np.nan])  # the detector fired at step 4 (25.7 > 5 x 2.3)


def test_the_curve_ends_at_the_diverging_loss() -> None:
    steps, losses = M.finite_prefix(STEPS, EXPLODED, diverged_step=4)
    assert steps.tolist() == [0, 1, 2, 3, 4] and losses[-1] == 25.7


def test_a_non_finite_diverging_loss_ends_the_curve_at_the_last_finite_one() -> None:
    nan_at_4 = np.array([2.3, 2.0, 1.7, 9.1, np.nan, 3.0])
    steps, losses = M.finite_prefix(STEPS, nan_at_4, diverged_step=4)
    assert steps.tolist() == [0, 1, 2, 3] and losses[-1] == 9.1
    steps, losses = M.finite_prefix(STEPS, np.array([2.3, 2.0, np.inf, 2.0, 2.0, 2.0]))  # no detector record
    assert steps.tolist() == [0, 1]


def test_nothing_after_the_divergence_is_kept_and_unsorted_steps_are_sorted() -> None:
    steps, losses = M.finite_prefix(STEPS[::-1], np.array([1.0, 1.0, 25.7, 9.1, 2.0, 2.3]), diverged_step=3)
    assert steps.tolist() == [0, 1, 2, 3] and losses.tolist() == [2.3, 2.0, 9.1, 25.7]


def test_statistics_of_training_still_stop_before_the_divergence() -> None:
    steps, losses = M.finite_prefix(STEPS, EXPLODED, diverged_step=4, through_divergence=False)
    assert steps.tolist() == [0, 1, 2, 3] and losses[-1] == 9.1
    stats = M.curve_stats(STEPS, EXPLODED, initial_loss=2.3, diverged=True, diverged_step=4,
                          options=M.CurveOptions(ema_alpha=1.0))
    assert stats["max_spike"] == pytest.approx(9.1 / 1.7)  # the 25.7 is the divergence, not a spike
    assert stats["auc"] == pytest.approx(np.trapezoid([2.3, 2.0, 1.7, 9.1]) / 3)


def test_the_loss_figure_draws_a_diverged_run_up_to_its_diverging_loss() -> None:
    runs = pd.DataFrame({"diverged": [True, False], "diverged_step": [4, math.nan], "lr": [1.0, 1.0]},
                        index=["boom", "calm"])
    calm = [2.3, 2.0, 1.7, 1.5, 1.4, 1.3]
    curves = pd.DataFrame([{"run": run, "tag": "train/loss", "step": int(s), "value": float(v)}
                           for run, values in (("boom", EXPLODED), ("calm", calm)) for s, v in zip(STEPS, values)])
    fig = plots.divergence_curves(runs, curves, None)
    crosses = [line for ax in fig.axes for line in ax.lines if line.get_marker() == "x"]
    assert len(crosses) == 1
    assert (crosses[0].get_xdata()[0], crosses[0].get_ydata()[0]) == (4, 25.7)
