"""Stability metrics: small pure functions on loss curves and run tables.

Definitions (chosen here; every table and plot uses these and nothing else):

- **Smoothed loss** (:func:`ema`): the bias-corrected exponential moving average over logged points,
  ``m_t = sum_i (1-a)^(t-i) x_i / sum_i (1-a)^(t-i)`` (Adam's debiasing; TensorBoard's smoothing slider),
  ``a = ema_alpha`` (default 0.1, about a 10-point window). Per-batch training losses are noisy, so
  "reached" and "final vs minimum" are read off the smoothed curve.
- **Area under the training-loss curve** (:func:`loss_auc`): the mean of the loss over normalised
  steps ``x = (step - first) / (last - first)`` in [0, 1], by the trapezoid rule; comparable across run
  lengths. A diverged run's curve stops at its last finite loss before the divergence step; if the
  planned length ``total_steps`` is known, the rest of the run counts at the initial loss (the
  Wortsman et al. 2023 convention of scoring a diverged run at the loss of an untrained model).
- **Steps to target** (:func:`steps_to_target`): the first logged step at which the smoothed loss is
  ``<= target``; NaN if never. Default target: ``target_fraction`` (0.25) x the initial loss, i.e.
  0.58 nats for 10 classes; an absolute ``target_loss`` overrides it.
- **Loss spike** (:func:`loss_spikes`): a maximal run of consecutive logged steps at which the loss
  exceeds the smoothed loss of the steps *before* it by a factor ``spike_factor`` (default 1.5) and by
  at least ``spike_min_excess`` (default 0.1 x initial loss, so that batch noise at a small loss does
  not count). Its size is the largest ratio loss / smoothed loss inside it. Only the finite part before
  divergence is searched: the divergence itself is reported separately, not as a spike.
- **Final-minus-minimum gap** (:func:`final_min_gap`): last smoothed loss minus the minimum smoothed
  loss; 0 for a curve that ends at its best, large for a run that got worse late. A diverged run's
  final loss counts at the initial loss.
- **LR sensitivity** (:func:`lr_sensitivity`), Wortsman et al. 2023, "Small-scale proxies for
  large-scale Transformer training instabilities", sec. 3.1:
  ``LRsens = E_{eta in grid}[ min(l(eta), l0) - l* ]``, ``l* = min_eta l(eta)``, ``l0`` the loss at
  initialisation; NaN/inf and diverged runs count at ``l0``.
- **Toggle effect** (:func:`paired_by_seed`, :func:`seed_effect`): runs that differ in the toggle alone pair
  when they agree on every other axis and the seed; the ``on - off`` differences of one seed are averaged, and
  the effect is their mean over the n seeds with a Student-t 95% interval ``mean +- t_{0.975, n-1} s /
  sqrt(n)``. The seed is the unit of replication: cells sharing a seed share its data split and initial
  weights, so they are not independent. Effects are given per learning rate.
- **Error distribution function** (:func:`edf`), Xiao et al. 2021, "Early Convolutions Help Transformers
  See Better", sec. 5 (after Radosavovic et al. 2019): ``F(e) = (1/n) #{runs with err - err_best <= e}``
  over the n runs of a hyperparameter grid; a diverged run has infinite error, so F stays below 1.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
import pandas as pd
from scipy import stats

from stability.errors import ConfigError

ArrayLike = Sequence[float] | np.ndarray | pd.Series


@dataclass(frozen=True)
class CurveOptions:
    """Knobs of the loss-curve statistics (module docstring has the definitions)."""

    target_loss: float | None = None  # absolute target for steps-to-target; None: use target_fraction
    target_fraction: float = 0.25  # target = this x initial loss
    spike_factor: float = 1.5  # loss / smoothed loss above this is a spike ...
    spike_min_excess: float = 0.1  # ... and loss - smoothed loss above this x initial loss
    ema_alpha: float = 0.1  # weight of the newest point in the smoothed loss

    def __post_init__(self) -> None:
        checks = {
            "target_loss": self.target_loss is None or (math.isfinite(self.target_loss)
                                                        and self.target_loss > 0),
            "target_fraction": 0 < self.target_fraction < 1,
            "spike_factor": math.isfinite(self.spike_factor) and self.spike_factor > 1,
            "spike_min_excess": math.isfinite(self.spike_min_excess) and self.spike_min_excess >= 0,
            "ema_alpha": 0 < self.ema_alpha <= 1,
        }
        valid = {"target_loss": "a number > 0 or None", "target_fraction": "a number in (0, 1)",
                 "spike_factor": "a number > 1", "spike_min_excess": "a number >= 0",
                 "ema_alpha": "a number in (0, 1]"}
        for key, ok in checks.items():
            if not ok:
                raise ConfigError(f"{key}: got {getattr(self, key)!r}; it must be {valid[key]}")

    def target(self, initial_loss: float | None) -> float:
        """The loss that "steps to target" waits for."""
        if self.target_loss is not None:
            return self.target_loss
        if initial_loss is None or not math.isfinite(initial_loss):
            return math.nan
        return self.target_fraction * initial_loss


class Spike(NamedTuple):
    step: int  # first step of the spike
    peak_step: int  # step of the largest ratio
    size: float  # largest loss / smoothed-loss ratio inside the spike
    length: int  # number of logged steps in the spike


def ema(values: ArrayLike, alpha: float = 0.1) -> np.ndarray:
    """Bias-corrected exponential moving average (module docstring); NaN in, NaN out at that point."""
    return pd.Series(np.asarray(values, dtype=float)).ewm(alpha=alpha, adjust=True).mean().to_numpy()


def finite_prefix(steps: ArrayLike, losses: ArrayLike, diverged_step: float | None = None, *,
                  through_divergence: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """The curve up to (not including) its first non-finite loss, and up to the divergence step.

    Steps are sorted first. Everything after a divergence is the divergence, not training. The divergence
    step's own loss is kept when it is finite: it is the loss that stopped the run, so a run whose loss hit
    25.7 is drawn ending at 25.7, not at the 9.1 before it (a non-finite one ends the curve at the last
    finite value). ``through_divergence=False`` ends the curve before the divergence step, for the
    statistics of training that leave the divergence itself out (:func:`curve_stats`, spikes).
    """
    steps = np.asarray(steps, dtype=float)
    losses = np.asarray(losses, dtype=float)
    order = np.argsort(steps, kind="stable")
    steps, losses = steps[order], losses[order]
    keep = np.ones(len(steps), dtype=bool)
    bad = np.flatnonzero(~np.isfinite(losses))
    if len(bad):
        keep[bad[0]:] = False
    if diverged_step is not None and math.isfinite(diverged_step):
        keep &= steps <= diverged_step if through_divergence else steps < diverged_step
    return steps[keep], losses[keep]


def loss_auc(steps: ArrayLike, losses: ArrayLike, *, cap: float | None = None,
             total_steps: float | None = None) -> float:
    """Mean training loss over normalised steps (trapezoid rule), comparable across run lengths.

    Args:
        steps, losses: the finite curve (see :func:`finite_prefix`).
        cap: the loss a run that stopped early is counted at after its last point (its initial loss).
        total_steps: the planned last step; with ``cap``, ``(last, total_steps]`` counts at ``cap``.
    """
    x = np.asarray(steps, dtype=float)
    y = np.asarray(losses, dtype=float)
    if len(x) == 0:
        return math.nan
    if cap is not None and total_steps is not None and total_steps > x[-1]:
        # A vertical jump to the cap right after the last point, then flat until the planned end.
        x = np.append(x, [x[-1], total_steps])
        y = np.append(y, [cap, cap])
    span = x[-1] - x[0]
    if span <= 0:
        return float(np.mean(y))
    trapezoid = getattr(np, "trapezoid", None) or np.trapz  # numpy < 2 names it trapz
    return float(trapezoid(y, x) / span)


def steps_to_target(steps: ArrayLike, losses: ArrayLike, target: float, *, alpha: float = 0.1) -> float:
    """First step at which the smoothed loss is <= ``target``; NaN if it never gets there."""
    if not math.isfinite(target) or len(losses) == 0:
        return math.nan
    smooth = ema(losses, alpha)
    hit = np.flatnonzero(smooth <= target)
    return float(np.asarray(steps, dtype=float)[hit[0]]) if len(hit) else math.nan


def loss_spikes(steps: ArrayLike, losses: ArrayLike, *, factor: float = 1.5, min_excess: float = 0.0,
                alpha: float = 0.1) -> list[Spike]:
    """Loss spikes of a finite curve (module docstring): each with its first step, peak step and size.

    The reference at step t is the smoothed loss of steps < t, so a spike is judged against the
    history before it, not against itself.
    """
    steps = np.asarray(steps, dtype=float)
    losses = np.asarray(losses, dtype=float)
    if len(losses) < 2:
        return []
    before = ema(losses, alpha)[:-1]  # smoothed loss up to t-1, for t = 1..n-1
    current = losses[1:]
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(before > 0, current / before, np.inf)
    is_spike = (ratio > factor) & (current - before > min_excess)
    spikes: list[Spike] = []
    i = 0
    while i < len(is_spike):
        if not is_spike[i]:
            i += 1
            continue
        j = i
        while j + 1 < len(is_spike) and is_spike[j + 1]:
            j += 1
        peak = i + int(np.argmax(ratio[i:j + 1]))
        spikes.append(Spike(step=int(steps[i + 1]), peak_step=int(steps[peak + 1]),
                            size=float(ratio[peak]), length=j - i + 1))
        i = j + 1
    return spikes


def final_min_gap(losses: ArrayLike, *, alpha: float = 0.1, final: float | None = None) -> float:
    """Last minus minimum of the smoothed loss; ``final`` replaces the last value (a diverged run's cap)."""
    if len(losses) == 0:
        return math.nan
    smooth = ema(losses, alpha)
    last = smooth[-1] if final is None else final
    return float(last - np.min(smooth))


def curve_stats(steps: ArrayLike, losses: ArrayLike, *, initial_loss: float | None = None,
                diverged: bool = False, diverged_step: float | None = None,
                total_steps: float | None = None, options: CurveOptions | None = None) -> dict[str, float]:
    """All loss-curve statistics of one run's training loss, with diverged runs handled explicitly.

    Args:
        steps, losses: the logged ``train/loss`` curve (may end in NaN/inf).
        initial_loss: the loss at step 0 (summary ``initial_loss``); default: the first logged loss.
        diverged, diverged_step: from the run summary; the curve from ``diverged_step`` on is ignored
            and the run's final loss counts at ``initial_loss``.
        total_steps: the planned length, so a diverged run's AUC covers the steps it never trained.

    Returns:
        ``auc, steps_to_target, n_spikes, max_spike, final_min_gap, final_smoothed``; NaN where there is
        no finite curve. ``max_spike`` is 1.0 for a run without spikes (no loss above its history).
    """
    options = options or CurveOptions()
    s, y = finite_prefix(steps, losses, diverged_step if diverged else None, through_divergence=False)
    nonfinite = len(s) < len(np.asarray(losses))
    if initial_loss is None or not math.isfinite(initial_loss):
        initial_loss = float(y[0]) if len(y) else math.nan
    if len(y) == 0:
        return {"auc": math.nan, "steps_to_target": math.nan, "n_spikes": math.nan, "max_spike": math.nan,
                "final_min_gap": math.nan, "final_smoothed": math.nan}
    stopped = diverged or (nonfinite and diverged_step is None)
    cap = initial_loss if stopped else None
    spikes = loss_spikes(s, y, factor=options.spike_factor,
                         min_excess=options.spike_min_excess * initial_loss, alpha=options.ema_alpha)
    smooth_last = float(ema(y, options.ema_alpha)[-1])
    return {
        "auc": loss_auc(s, y, cap=cap, total_steps=total_steps),
        "steps_to_target": steps_to_target(s, y, options.target(initial_loss), alpha=options.ema_alpha),
        "n_spikes": float(len(spikes)),
        "max_spike": max((sp.size for sp in spikes), default=1.0),
        "final_min_gap": final_min_gap(y, alpha=options.ema_alpha, final=cap),
        "final_smoothed": cap if cap is not None else smooth_last,
    }


def clamp_loss(loss: Any, initial_loss: float, diverged: bool = False) -> float:
    """Wortsman et al. 2023's ``min(l, l0)``: a diverged run or a NaN/inf/missing loss counts as ``l0``."""
    if diverged or loss is None:
        return float(initial_loss)
    loss = float(loss)
    if not math.isfinite(loss):
        return float(initial_loss)
    return min(loss, float(initial_loss))


class LRSensitivity(NamedTuple):
    value: float  # mean over seeds of E_eta[min(l, l0)] - min_eta min(l, l0)
    std: float  # its standard deviation over seeds (NaN for one seed)
    n_seeds: int  # seeds that have a run at every learning rate of the grid
    best_lr: float  # argmin over the grid of the seed-mean clamped loss
    best_loss: float  # that loss
    max_stable_lr: float  # the largest lr at which no run diverged (NaN if every lr had a divergence)
    n_lrs: int  # points of the grid


def lr_sensitivity(lrs: ArrayLike, losses: ArrayLike, initial_losses: ArrayLike | float,
                   diverged: ArrayLike | None = None, seeds: ArrayLike | None = None) -> LRSensitivity:
    """Learning-rate sensitivity of one configuration over its LR grid (Wortsman et al. 2023, sec. 3.1).

    Args:
        lrs, losses: one entry per finished run (losses: the final validation loss, may be NaN/inf).
        initial_losses: ``l0``, per run or one number (ln(num_classes) or the measured step-0 loss).
        diverged: per-run flags; a diverged run counts at ``l0`` whatever its last loss.
        seeds: per-run seeds. LRsens is computed per seed over the seeds present at every lr and then
            averaged, which gives its spread; without seeds all runs are one seed.

    The expectation is the plain mean over the grid points (the grid is the measure), as in the paper's
    7-point grid.
    """
    lrs = np.asarray(lrs, dtype=float)
    n = len(lrs)
    l0 = np.broadcast_to(np.asarray(initial_losses, dtype=float), (n,))
    div = np.zeros(n, dtype=bool) if diverged is None else np.asarray(diverged, dtype=bool)
    clamped = np.array([clamp_loss(v, l0[i], div[i]) for i, v in enumerate(np.asarray(losses, dtype=float))])
    frame = pd.DataFrame({"lr": lrs, "loss": clamped, "diverged": div,
                          "seed": 0 if seeds is None else np.asarray(seeds)})
    grid = np.sort(frame["lr"].unique())
    if len(grid) == 0:
        return LRSensitivity(math.nan, math.nan, 0, math.nan, math.nan, math.nan, 0)
    per_lr = frame.groupby("lr")["loss"].mean()
    best_lr = float(per_lr.idxmin())
    stable = frame.groupby("lr")["diverged"].any()
    stable_lrs = stable.index[~stable.to_numpy()]
    table = frame.pivot_table(index="seed", columns="lr", values="loss", aggfunc="mean")
    complete = table.dropna()
    per_seed = (complete.mean(axis=1) - complete.min(axis=1)).to_numpy()
    return LRSensitivity(
        value=float(per_seed.mean()) if len(per_seed) else math.nan,
        std=float(per_seed.std(ddof=1)) if len(per_seed) > 1 else math.nan,
        n_seeds=len(per_seed),
        best_lr=best_lr,
        best_loss=float(per_lr.min()),
        max_stable_lr=float(stable_lrs.max()) if len(stable_lrs) else math.nan,
        n_lrs=len(grid),
    )


class Interval(NamedTuple):
    mean: float
    low: float
    high: float
    n: int


def t_interval(values: ArrayLike, confidence: float = 0.95) -> Interval:
    """Mean with a Student-t interval ``mean +- t_{(1+c)/2, n-1} s / sqrt(n)``; NaN bounds for n < 2."""
    x = np.asarray(values, dtype=float)
    x = x[np.isfinite(x)]
    n = len(x)
    if n == 0:
        return Interval(math.nan, math.nan, math.nan, 0)
    mean = float(x.mean())
    if n < 2:
        return Interval(mean, math.nan, math.nan, 1)
    half = float(stats.t.ppf(0.5 + confidence / 2, n - 1) * x.std(ddof=1) / math.sqrt(n))
    return Interval(mean, mean - half, mean + half, n)


def paired_by_seed(treat: pd.DataFrame, ctrl: pd.DataFrame, column: str, match_on: Sequence[str]) -> pd.DataFrame:
    """Treatment and control cells that pair: the same seed and the same values of ``match_on``.

    Runs are keyed by (seed, ``match_on``); several runs with one key (a repeated cell) are averaged first.
    Returns one row per key present on both sides, indexed by (seed, key), with columns ``on`` and ``off``
    (the mean of ``column``). Both frames need a ``seed`` column.
    """
    def side(frame: pd.DataFrame) -> pd.Series:
        cols = [c for c in match_on if c in frame]
        key = frame[cols].map(key_text).agg("|".join, axis=1) if cols else pd.Series("", index=frame.index)
        values = pd.to_numeric(frame[column], errors="coerce").astype(float)
        return values.groupby([frame["seed"].map(key_text).rename("seed"), key.rename("key")]).mean()

    if treat.empty or ctrl.empty:
        return pd.DataFrame({"on": pd.Series(dtype=float), "off": pd.Series(dtype=float)})
    return pd.concat({"on": side(treat), "off": side(ctrl)}, axis=1, join="inner").dropna()


def seed_effect(pairs: pd.DataFrame, confidence: float = 0.95) -> tuple[Interval, pd.Series]:
    """``on - off`` averaged within each seed, then the mean and t-interval over the seeds (the seed is the
    unit of replication: cells that share a seed, and so its initialisation and data split, count once).
    Returns the interval and the per-seed differences."""
    if pairs.empty:
        return Interval(math.nan, math.nan, math.nan, 0), pd.Series(dtype=float)
    per_seed = (pairs["on"] - pairs["off"]).groupby(level="seed").mean()
    return t_interval(per_seed.to_numpy(), confidence), per_seed


def edf(errors: ArrayLike, best: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Error distribution function (Xiao et al. 2021, sec. 5): sorted ``err - err_best`` and F at them.

    ``F[i] = (i+1)/n`` with n counting every run, so infinite errors (diverged runs) never enter x and
    F tops out at the fraction of runs that trained. ``best`` defaults to the smallest finite error.
    """
    e = np.asarray(errors, dtype=float)
    n = len(e)
    finite = np.sort(e[np.isfinite(e)])
    if n == 0 or len(finite) == 0:
        return np.array([]), np.array([])
    ref = finite[0] if best is None else best
    return finite - ref, np.arange(1, len(finite) + 1) / n


def fraction_within(errors: ArrayLike, within: float, best: float | None = None) -> float:
    """F(within): the fraction of runs whose error is at most ``within`` above the best (EDF at a point)."""
    e = np.asarray(errors, dtype=float)
    if len(e) == 0:
        return math.nan
    finite = e[np.isfinite(e)]
    if len(finite) == 0:
        return 0.0
    ref = finite.min() if best is None else best
    return float(np.sum(finite - ref <= within + 1e-12) / len(e))


def key_text(v: Any) -> str:
    """A configuration value as text that groups and matches the way a person means it.

    Used as a groupby/matching key: NaN and None both read ``"NA"`` (so a missing value matches itself),
    numbers read as floats (so ``1`` stored as ``1.0`` after a round trip through a table still matches) and
    booleans stay ``"True"``/``"False"`` (not ``1.0``/``0.0``).
    """
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "NA"
    if isinstance(v, (bool, np.bool_)):
        return str(bool(v))
    if isinstance(v, (int, float, np.integer, np.floating)):
        return repr(float(v))
    return str(v)


def same_value(a: Any, b: Any) -> bool:
    """``a == b`` for configuration values, except that a missing value (None or NaN) equals another one.

    Selecting the runs of one toggle value, or finding its baseline, must not lose the runs where the value
    is missing, which ``==`` would (NaN is not equal to itself).
    """
    if a is None or (isinstance(a, float) and math.isnan(a)):
        return b is None or (isinstance(b, float) and math.isnan(b))
    return bool(a == b)
