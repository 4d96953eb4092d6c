"""Robust summaries over many configurations: the interquartile mean, stratified bootstrap intervals and the
probability of improvement (Agarwal et al. 2021, "Deep Reinforcement Learning at the Edge of the Statistical
Precipice", NeurIPS), with the seed-mean and its t-interval beside them.

Why: with a handful of seeds a mean is at the mercy of one odd seed, and a t-interval assumes the seeds' values
are roughly normal; one run that trained badly breaks both. The IQM ignores the best and the worst quarter of the
seeds, and the bootstrap assumes nothing about their shape. When the two views disagree the table says so, and
the reader knows the mean alone would mislead.

Definitions (every function here follows them; the statistics and the resampling are scipy's):

- **Values.** A configuration's values are its finished runs' ``metric`` (:data:`stability.record.files.FINISHED`:
  completed, diverged, collapsed), read through :func:`stability.analysis.verdicts.run_values`, so failures count
  as the verdicts count them: a diverged or collapsed run without an accuracy scores chance accuracy
  (``1 / num_classes``), a diverged run's loss counts at its initial loss. A failure is a result, so it is never
  dropped from an accuracy comparison. A finished run still without a value (a completed run that did not record
  the metric) is left out and counted (``n_missing``). Runs that raised (``failed``) or did not finish are not
  results and are not here. Runs of one configuration and one seed are averaged first: the seed is the unit of
  replication (:mod:`stability.analysis.verdicts`).
- **IQM** (:func:`iqm`): ``scipy.stats.trim_mean(x, 0.25)``, the mean of the middle half of the seeds' values
  (a quarter cut from each end; for n divisible by 4 exactly the middle n/2 values).
- **Stratified bootstrap** (:func:`iqm_interval`, :func:`improvement_interval`, :func:`iqm_difference_interval`):
  ``scipy.stats.bootstrap`` with the percentile method (as ``rliable``), ``n_resamples`` (2,000) resamples,
  95%. The strata are the configurations: a configuration's seeds are resampled with replacement among
  themselves, and when two configurations are compared each one's seeds are resampled separately. Every interval
  draws from a fresh ``numpy.random.default_rng(seed)``, so a row's interval is reproducible and does not depend
  on which other rows the table has. Fewer than 2 values give no interval (NaN bounds).
- **Probability of improvement** (:func:`probability_of_improvement`): ``P(X > Y)`` of a configuration X over its
  reference Y in the Mann-Whitney form, ties counting half,
  ``P = (#{x_i > y_j} + 0.5 #{x_i = y_j}) / (n m)``: scipy's Mann-Whitney ``U`` of X over Y divided by ``n m``.
  For a metric where lower is better (a loss) "improvement" is ``X < Y``.
- **Reference** of a configuration: the configuration with every toggle at its baseline and every other
  configuration column (the learning rate, ...) equal to its own; when there is none and exactly one
  configuration has every toggle at its baseline, that one. No reference: no comparison (NaN).
- **t vs bootstrap** (:func:`disagreement`): a configuration is flagged when

  1. the Welch t-interval of its mean minus the reference's mean and the bootstrap interval of its IQM minus the
     reference's IQM disagree about zero (exactly one of them excludes it): "the difference is real" would hang
     on the choice of statistic; or
  2. its own t-interval (mean) and bootstrap interval (IQM) overlap by less than half the narrower one's width:
     the mean sits far from the bulk of the seeds (a degenerate, zero-width interval counts as fully overlapped
     when it lies inside the other, else not at all).

  A t-interval over seeds is wide when one seed is an outlier, so rule 1 catches the small-sample case (the IQM's
  interval excludes zero, the mean's does not) and rule 2 the many-seed one (the mean's interval leaves the IQM's).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from stability.analysis import metrics as M
from stability.analysis.verdicts import run_values
from stability.errors import ConfigError
from stability.record.files import COLLAPSED, DIVERGED, FINISHED
from stability.record.identity import SEED

IQM_CUT = 0.25  # the fraction trimmed from each end for the interquartile mean
AGREE = "agree"
T_ONLY = "t excludes 0, bootstrap does not"
BOOTSTRAP_ONLY = "bootstrap excludes 0, t does not"
APART = "intervals overlap < half"
MIN_OVERLAP = 0.5  # rule 2 of the module docstring: overlap below this x the narrower width is a disagreement
NAN_INTERVAL = M.Interval(math.nan, math.nan, math.nan, 0)


@dataclass(frozen=True)
class BootstrapOptions:
    """How the bootstrap intervals are drawn (module docstring)."""

    n_resamples: int = 2000  # resamples per interval
    confidence: float = 0.95  # of every interval, t and bootstrap alike
    seed: int = 0  # each interval's generator: numpy.random.default_rng(seed)

    def __post_init__(self) -> None:
        if isinstance(self.n_resamples, bool) or not isinstance(self.n_resamples, int) or self.n_resamples < 1:
            raise ConfigError(f"n_resamples: got {self.n_resamples!r}; it must be a whole number >= 1 (e.g. 2000)")
        if not (isinstance(self.confidence, (int, float)) and 0 < self.confidence < 1):
            raise ConfigError(f"confidence: got {self.confidence!r}; it must be a number in (0, 1) (e.g. 0.95)")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ConfigError(f"seed: got {self.seed!r}; it must be a whole number >= 0")


# -- statistics -----------------------------------------------------------------------------------------------
def iqm(values: M.ArrayLike) -> float:
    """The interquartile mean: ``scipy.stats.trim_mean(values, 0.25)`` over the finite values (NaN if none)."""
    x = _finite(values)
    return float(stats.trim_mean(x, IQM_CUT)) if len(x) else math.nan


def probability_of_improvement(x: M.ArrayLike, y: M.ArrayLike, higher_is_better: bool = True) -> float:
    """``P(X > Y)`` (``P(X < Y)`` when lower is better), ties counting half: ``U / (n m)`` (module docstring)."""
    a, b = _finite(x), _finite(y)
    if not len(a) or not len(b):
        return math.nan
    return float(_improvement(a, b, higher_is_better))


def _iqm_stat(x: np.ndarray, axis: int = -1) -> np.ndarray:
    return stats.trim_mean(x, IQM_CUT, axis=axis)


def _improvement(x: np.ndarray, y: np.ndarray, higher_is_better: bool = True, axis: int = -1) -> np.ndarray:
    """Vectorised over resamples (scipy's bootstrap passes a batch axis in front)."""
    better, worse = (x, y) if higher_is_better else (y, x)
    u = stats.mannwhitneyu(better, worse, axis=axis, method="asymptotic", use_continuity=False).statistic
    return np.asarray(u) / (x.shape[axis] * y.shape[axis])


def _bootstrap(samples: tuple[np.ndarray, ...], statistic: Any, point: float,
               options: BootstrapOptions) -> M.Interval:
    """``point`` with the percentile interval of ``statistic`` over ``samples``, each resampled on its own."""
    n = min(len(s) for s in samples)
    if n < 2 or not math.isfinite(point):
        return M.Interval(point, math.nan, math.nan, n)
    result = stats.bootstrap(samples, statistic, n_resamples=options.n_resamples, method="percentile",
                             confidence_level=options.confidence, vectorized=True,
                             rng=np.random.default_rng(options.seed))
    ci = result.confidence_interval
    return M.Interval(point, float(ci.low), float(ci.high), n)


def iqm_interval(values: M.ArrayLike, options: BootstrapOptions | None = None) -> M.Interval:
    """The IQM of ``values`` with its bootstrap interval (the values resampled with replacement)."""
    x = _finite(values)
    return _bootstrap((x,), _iqm_stat, iqm(x), options or BootstrapOptions())


def iqm_difference_interval(x: M.ArrayLike, y: M.ArrayLike, options: BootstrapOptions | None = None) -> M.Interval:
    """``IQM(x) - IQM(y)`` with its stratified bootstrap interval (x and y resampled separately)."""
    a, b = _finite(x), _finite(y)
    point = iqm(a) - iqm(b) if len(a) and len(b) else math.nan
    return _bootstrap((a, b), lambda p, q, axis=-1: _iqm_stat(p, axis) - _iqm_stat(q, axis), point,
                      options or BootstrapOptions())


def improvement_interval(x: M.ArrayLike, y: M.ArrayLike, higher_is_better: bool = True,
                         options: BootstrapOptions | None = None) -> M.Interval:
    """:func:`probability_of_improvement` with its stratified bootstrap interval (x and y resampled separately)."""
    a, b = _finite(x), _finite(y)
    return _bootstrap((a, b), lambda p, q, axis=-1: _improvement(p, q, higher_is_better, axis),
                      probability_of_improvement(a, b, higher_is_better), options or BootstrapOptions())


def welch_difference(x: M.ArrayLike, y: M.ArrayLike, confidence: float = 0.95) -> M.Interval:
    """``mean(x) - mean(y)`` with Welch's t-interval (scipy's ``ttest_ind``, unequal variances): the t-side of the
    comparison whose bootstrap side is :func:`iqm_difference_interval` (both treat the samples as independent).

    Two samples without spread (every seed the same) give a zero-width interval at the difference."""
    a, b = _finite(x), _finite(y)
    if len(a) < 2 or len(b) < 2:
        diff = float(a.mean() - b.mean()) if len(a) and len(b) else math.nan
        return M.Interval(diff, math.nan, math.nan, min(len(a), len(b)))
    diff = float(a.mean() - b.mean())
    if np.ptp(a) == 0 and np.ptp(b) == 0:
        return M.Interval(diff, diff, diff, min(len(a), len(b)))
    with warnings.catch_warnings():  # a sample whose seeds all agree: scipy warns of "precision loss" computing
        warnings.filterwarnings("ignore", "Precision loss", RuntimeWarning)  # its zero variance, which is exact
        ci = stats.ttest_ind(a, b, equal_var=False).confidence_interval(confidence)
    return M.Interval(diff, float(ci.low), float(ci.high), min(len(a), len(b)))


def disagreement(level_t: M.Interval, level_boot: M.Interval, diff_t: M.Interval | None = None,
                 diff_boot: M.Interval | None = None) -> str:
    """Whether the t-interval and the bootstrap interval tell different stories (the module docstring's rules).

    Args:
        level_t, level_boot: the configuration's mean with its t-interval and its IQM with its bootstrap interval.
        diff_t, diff_boot: against the reference: Welch's interval of the mean difference and the bootstrap
            interval of the IQM difference (None for the reference itself, or without one).

    Returns:
        :data:`AGREE`, the reason they disagree (:data:`T_ONLY`, :data:`BOOTSTRAP_ONLY`, :data:`APART`), or
        ``""`` when there are no intervals to compare (fewer than 2 seeds).
    """
    if not (_bounded(level_t) and _bounded(level_boot)):
        return ""
    if diff_t is not None and diff_boot is not None and _bounded(diff_t) and _bounded(diff_boot):
        t_says, boot_says = _excludes_zero(diff_t), _excludes_zero(diff_boot)
        if t_says and not boot_says:
            return T_ONLY
        if boot_says and not t_says:
            return BOOTSTRAP_ONLY
    return APART if overlap_fraction(level_t, level_boot) < MIN_OVERLAP else AGREE


def overlap_fraction(a: M.Interval, b: M.Interval) -> float:
    """The length two intervals share, as a fraction of the narrower one's width (1: one inside the other).

    A zero-width interval counts 1 when it lies inside the other, else 0."""
    overlap = min(a.high, b.high) - max(a.low, b.low)
    narrower = min(a.high - a.low, b.high - b.low)
    if narrower <= 0:
        return 1.0 if overlap >= 0 else 0.0
    return max(0.0, overlap) / narrower


# -- a table of configurations --------------------------------------------------------------------------------
def seed_values(runs: pd.DataFrame, metric: str) -> pd.Series:
    """One value per seed of one configuration's finished runs (module docstring: failures scored, runs of one
    seed averaged), indexed by the seed's key text; without a seed column, one value per run."""
    values = run_values(runs, metric).dropna()
    if SEED not in runs:
        return values.reset_index(drop=True)
    return values.groupby(runs.loc[values.index, SEED].map(M.key_text), sort=True).mean()


def higher_is_better_for(metric: str) -> bool:
    """Accuracies up, losses (and anything else named ``*_loss``) down."""
    return not metric.endswith("_loss")


def robust_summary(runs: pd.DataFrame, config_columns: Sequence[str], baselines: Mapping[str, Any], metric: str,
                   *, higher_is_better: bool | None = None, options: BootstrapOptions | None = None) -> pd.DataFrame:
    """One row per configuration with a finished run: the robust summary of ``metric`` (module docstring).

    Args:
        runs: one row per run with ``status``, the configuration columns, ``seed`` and the metric (a
            :class:`stability.analysis.results.Sweep`'s ``runs`` or ``finished``); runs not finished are ignored.
        config_columns: what makes a configuration (:attr:`stability.analysis.results.Sweep.config_columns`).
        baselines: toggle -> its baseline value (:attr:`~stability.analysis.results.Sweep.baselines`): defines each
            configuration's reference.
        metric: a column of ``runs`` (``test_acc``, ``final_val_acc``, ...).
        higher_is_better: the direction of "improvement"; default :func:`higher_is_better_for`.

    Returns:
        In order of first appearance: the configuration columns; ``key`` (its values as one text key) and
        ``reference`` (the reference's key, ``""`` without one; ``is_reference``); ``n_runs``, ``n_failed``
        (diverged or collapsed), ``n_missing``, ``n_seeds``; ``mean, t_low, t_high``; ``iqm, iqm_low, iqm_high``;
        against the reference ``p_improve, p_low, p_high``, ``diff_mean, diff_t_low, diff_t_high``, ``diff_iqm,
        diff_iqm_low, diff_iqm_high``; ``t_vs_bootstrap`` (:func:`disagreement`) and ``disagree`` (bool); and
        ``metric``, ``higher_is_better``, ``n_resamples``, ``confidence``, ``bootstrap_seed``.
    """
    options = options or BootstrapOptions()
    better = higher_is_better_for(metric) if higher_is_better is None else higher_is_better
    finished = runs[runs["status"].isin(FINISHED)]
    cols = [c for c in config_columns if c in finished]
    keys = _keys(finished, cols)
    groups = {k: finished[keys == k] for k in dict.fromkeys(keys)}
    samples = {k: seed_values(g, metric).to_numpy(dtype=float) for k, g in groups.items()}
    firsts = {k: g.iloc[0] for k, g in groups.items()}
    rows = []
    for k, g in groups.items():
        x = samples[k]
        ref = _reference(k, firsts, cols, baselines)
        level_t, level_boot = M.t_interval(x, options.confidence), iqm_interval(x, options)
        row: dict[str, Any] = {c: firsts[k][c] for c in cols}
        row.update(key=k, reference=ref or "", is_reference=ref == k, n_runs=len(g),
                   n_failed=int(g["status"].isin([DIVERGED, COLLAPSED]).sum()),
                   n_missing=int(run_values(g, metric).isna().sum()), n_seeds=len(x),
                   mean=level_t.mean, t_low=level_t.low, t_high=level_t.high,
                   iqm=level_boot.mean, iqm_low=level_boot.low, iqm_high=level_boot.high)
        p = diff_t = diff_boot = None
        if ref is not None and ref != k:
            y = samples[ref]
            p = improvement_interval(x, y, better, options)
            diff_t = welch_difference(x, y, options.confidence)
            diff_boot = iqm_difference_interval(x, y, options)
        for point, prefix, ci in (("p_improve", "p", p), ("diff_mean", "diff_t", diff_t),
                                  ("diff_iqm", "diff_iqm", diff_boot)):
            ci = ci or NAN_INTERVAL
            row.update({point: ci.mean, f"{prefix}_low": ci.low, f"{prefix}_high": ci.high})
        verdict = disagreement(level_t, level_boot, diff_t, diff_boot)
        row.update(t_vs_bootstrap=verdict, disagree=verdict not in ("", AGREE), metric=metric,
                   higher_is_better=better, n_resamples=options.n_resamples, confidence=options.confidence,
                   bootstrap_seed=options.seed)
        rows.append(row)
    return pd.DataFrame(rows, columns=[*cols, *_COLUMNS])


_COLUMNS = ["key", "reference", "is_reference", "n_runs", "n_failed", "n_missing", "n_seeds", "mean", "t_low",
            "t_high", "iqm", "iqm_low", "iqm_high", "p_improve", "p_low", "p_high", "diff_mean", "diff_t_low",
            "diff_t_high", "diff_iqm", "diff_iqm_low", "diff_iqm_high", "t_vs_bootstrap", "disagree", "metric",
            "higher_is_better", "n_resamples", "confidence", "bootstrap_seed"]


def _reference(key: str, firsts: Mapping[str, pd.Series], cols: Sequence[str],
               baselines: Mapping[str, Any]) -> str | None:
    """The reference configuration's key (module docstring), or None."""
    toggles = [c for c in cols if c in baselines]
    if not toggles:
        return None
    at_baseline = [k for k, r in firsts.items() if all(M.same_value(r[c], baselines[c]) for c in toggles)]
    mine = firsts[key]
    exact = [k for k in at_baseline if all(M.same_value(firsts[k][c], mine[c]) for c in cols if c not in toggles)]
    if exact:
        return exact[0]
    return at_baseline[0] if len(at_baseline) == 1 else None


def _keys(frame: pd.DataFrame, cols: Sequence[str]) -> pd.Series:
    """Each run's configuration as one text key (the grouping of :func:`stability.report.configs.group_key`)."""
    if not cols or frame.empty:
        return pd.Series("", index=frame.index, dtype=object)
    return frame[list(cols)].map(M.key_text).agg("|".join, axis=1)


def _finite(values: M.ArrayLike) -> np.ndarray:
    x = np.asarray(values, dtype=float).ravel()
    return x[np.isfinite(x)]


def _bounded(ci: M.Interval) -> bool:
    return math.isfinite(ci.low) and math.isfinite(ci.high)


def _excludes_zero(ci: M.Interval) -> bool:
    return ci.low > 0 or ci.high < 0
