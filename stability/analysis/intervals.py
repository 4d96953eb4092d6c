"""Intervals for the three kinds of metric a claim can be about (:class:`stability.analysis.claims.Metric`).

Each kind gets the interval its numbers can support, since one interval for all would claim too much:

- **continuous** (accuracies, losses): the mean over seeds of the per-seed paired difference with a Student-t
  interval, :func:`stability.analysis.metrics.t_interval`.
- **binary** (failure, divergence and collapse rates: 0 or 1 per run): each run is one Bernoulli trial, so the
  treatment's and the control's runs are counted (:func:`paired_counts`) and the effect is the difference of the
  two proportions with Newcombe's hybrid score interval (:func:`newcombe_difference`; Newcombe 1998, "Interval
  estimation for the difference between independent proportions", Stat. Med. 17, method 10). It stays inside
  [-1, 1] and has positive width even at 0/3 vs 3/3, where a t-interval over seeds has width zero.
- **ordinal** (the largest stable lr: a point of the lr grid): the per-seed difference is a step on the grid,
  so the effect is the median and the interval the distribution-free order-statistic interval for the median
  (:func:`median_interval`; the sign-test interval, e.g. Conover 1999, *Practical Nonparametric Statistics*,
  sec. 3.2): ``[d_(k), d_(n+1-k)]`` covers the median with probability at least
  ``1 - 2 * BinomCDF(k - 1; n, 1/2)``, whatever the distribution, ties included.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import pandas as pd
from scipy import stats
from statsmodels.stats.proportion import confint_proportions_2indep

from stability.analysis.metrics import ArrayLike, Interval, key_text
from stability.record.identity import SEED

ZERO_WIDTH = 1e-12  # an interval narrower than this (relative to its bounds) has zero width


class PairedCounts(NamedTuple):
    """Runs counted on each side of a comparison, over the cells that pair (same seed, same other settings)."""

    k_on: int  # treatment runs with the event (e.g. diverged or collapsed)
    n_on: int  # treatment runs
    k_off: int  # control runs with the event
    n_off: int  # control runs
    seeds: list[str]  # the seeds that pair, as key text
    pairs: int  # cells (seed and other settings) present on both sides


def _cell_keys(frame: pd.DataFrame, match_on: Sequence[str]) -> pd.Series:
    """Each run's cell: its seed and the values of ``match_on``, as one text key."""
    cols = [SEED, *[c for c in match_on if c in frame and c != SEED]]
    return frame[cols].map(key_text).agg("|".join, axis=1)


def paired_counts(treat: pd.DataFrame, ctrl: pd.DataFrame, column: str, match_on: Sequence[str]) -> PairedCounts:
    """Count the 0/1 ``column`` over the runs of the cells both sides have (the same pairing as
    :func:`stability.analysis.metrics.paired_by_seed`), one run one trial: a repeated cell adds trials.

    Runs whose value is missing are not trials. Both frames need a ``seed`` column."""
    if treat.empty or ctrl.empty:
        return PairedCounts(0, 0, 0, 0, [], 0)
    t_keys, c_keys = _cell_keys(treat, match_on), _cell_keys(ctrl, match_on)
    t_val = pd.to_numeric(treat[column], errors="coerce")
    c_val = pd.to_numeric(ctrl[column], errors="coerce")
    common = set(t_keys[t_val.notna()]) & set(c_keys[c_val.notna()])
    t_in = t_val[t_keys.isin(common) & t_val.notna()]
    c_in = c_val[c_keys.isin(common) & c_val.notna()]
    seeds = sorted({key_text(s) for s in treat.loc[t_in.index, SEED]})
    return PairedCounts(int((t_in > 0).sum()), len(t_in), int((c_in > 0).sum()), len(c_in), seeds, len(common))


def newcombe_difference(k_on: int, n_on: int, k_off: int, n_off: int, confidence: float = 0.95,
                        n: int | None = None) -> Interval:
    """``k_on/n_on - k_off/n_off`` with Newcombe's hybrid score interval (module docstring), via statsmodels.

    The interval combines the two Wilson score intervals, so it lies in [-1, 1]. ``n`` is what the returned
    interval reports as its sample size (the seeds that pair); default: the fewer runs of the two sides.
    """
    size = min(n_on, n_off) if n is None else n
    if n_on == 0 or n_off == 0:
        return Interval(math.nan, math.nan, math.nan, 0)
    diff = k_on / n_on - k_off / n_off
    low, high = confint_proportions_2indep(k_on, n_on, k_off, n_off, method="newcomb", compare="diff",
                                           alpha=1 - confidence)
    return Interval(diff, max(-1.0, float(low)), min(1.0, float(high)), size)


def median_coverage(n: int, k: int) -> float:
    """Coverage of ``[d_(k), d_(n+1-k)]`` for the median of n values: ``1 - 2 * BinomCDF(k - 1; n, 1/2)``."""
    return float(1.0 - 2.0 * stats.binom.cdf(k - 1, n, 0.5))


def median_rank(n: int, confidence: float = 0.95) -> int:
    """The largest k with ``median_coverage(n, k) >= confidence`` (the narrowest interval that covers); 0 when
    even ``[min, max]`` (k = 1) covers less."""
    k = 0
    while k + 1 <= (n + 1) // 2 and median_coverage(n, k + 1) >= confidence:
        k += 1
    return k


def seeds_for_median(confidence: float = 0.95) -> int:
    """The fewest values whose ``[min, max]`` covers the median with ``confidence``: 6 at 95%."""
    n = 1
    while median_coverage(n, 1) < confidence:
        n += 1
    return n


def median_interval(values: ArrayLike, confidence: float = 0.95) -> tuple[Interval, float]:
    """The median with its order-statistic interval (module docstring) and that interval's achieved coverage.

    With too few values for any k (:func:`median_rank` is 0) the interval is ``[min, max]`` and its coverage,
    ``1 - 2^(1-n)``, is below ``confidence``: the caller must not read a verdict off it."""
    x = np.sort(np.asarray(values, dtype=float))
    x = x[np.isfinite(x)]
    n = len(x)
    if n == 0:
        return Interval(math.nan, math.nan, math.nan, 0), 0.0
    k = max(1, median_rank(n, confidence))
    return Interval(float(np.median(x)), float(x[k - 1]), float(x[n - k]), n), median_coverage(n, k)


def zero_width(low: float, high: float) -> bool:
    """True for an interval that measures no uncertainty (every seed gave the same number)."""
    return abs(high - low) <= ZERO_WIDTH * max(1.0, abs(low), abs(high))
