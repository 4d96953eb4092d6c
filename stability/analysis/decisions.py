"""What a claim's evidence says beyond its 95% interval: a p-value, "no effect" as a finding, seeds needed.

A verdict (:mod:`stability.analysis.verdicts`) reads one interval. Three more questions need the evidence the
interval came from (:class:`Evidence`: the per-seed differences, or the runs counted for a rate):

- **p-values**, for a correction over the claims of a study (:func:`holm`). Each p-value is the inverted
  interval: the smallest ``alpha`` whose ``1 - alpha`` interval excludes the minimal effect. So "p < 0.05" and
  "the 95% interval excludes it" never disagree. For a continuous metric this is the one-sample t-test of the
  per-seed differences against the minimal effect (:func:`scipy.stats.ttest_1samp`); for the rates Newcombe's
  interval and for the ordinal metric the order-statistic interval are inverted by bisection.
- **Equivalence** (two one-sided tests, Schuirmann 1987, "A comparison of the two one-sided tests procedure
  and the power approach for assessing the equivalence of average bioavailability", J. Pharmacokin.
  Biopharm. 15): with a margin ``delta`` a claim may be found *equivalent*, no effect larger than ``delta``
  either way, when the ``1 - 2 alpha`` interval (90% at alpha 0.05) lies inside ``(-delta, delta)``. Its
  p-value is the larger of the two one-sided tests' (for a continuous metric, statsmodels'
  ``DescrStatsW.ttost_mean``).
- **Seeds needed**: how many seeds would likely settle an inconclusive verdict if the effect and the spread
  were what this study measured (80% power, :data:`POWER`). An estimate, not a promise: the measured spread of
  3 seeds is itself uncertain by a factor of ~2. Continuous metrics: statsmodels' ``TTestPower`` at the
  standardised distance ``|effect - m| / sd`` (and, with a margin, ``(delta - |effect|) / sd`` for an
  equivalence); rates: the two-sample z-test's power (statsmodels' ``NormalIndPower`` formula) on the two
  proportions, each shrunk as ``(k + 1/2) / (n + 1)`` so 0/3 still has a spread, runs converted to seeds at
  the study's runs per seed; the ordinal metric: the fewest seeds whose order-statistic interval would exclude
  ``m`` with 80% probability, from the measured share of seeds beyond ``m``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.power import TTestPower
from statsmodels.stats.weightstats import DescrStatsW

from stability.analysis import intervals
from stability.analysis.metrics import Interval, t_interval

POWER = 0.8  # the chance, at the measured effect and spread, that the estimated number of seeds settles it
MAX_SEEDS_ESTIMATE = 1000  # beyond this the estimate reads "more than 1000": the effect is as good as m


@dataclass(frozen=True)
class Evidence:
    """What an interval is computed from: per-seed values (continuous, ordinal) or counted runs (binary)."""

    kind: str  # stability.analysis.claims.KINDS
    values: np.ndarray  # the per-seed differences, treatment - control (binary: empty)
    counts: intervals.PairedCounts | None = None  # binary: events and runs on each side

    def interval(self, confidence: float) -> tuple[Interval, float]:
        """The effect's interval at ``confidence`` and the coverage it achieves (the ordinal one may fall
        short)."""
        if self.kind == "binary":
            c = self.counts
            if c is None:
                return Interval(math.nan, math.nan, math.nan, 0), confidence
            return intervals.newcombe_difference(c.k_on, c.n_on, c.k_off, c.n_off, confidence,
                                                 n=len(c.seeds)), confidence
        if self.kind == "ordinal":
            return intervals.median_interval(self.values, confidence)
        return t_interval(self.values, confidence), confidence

    @property
    def n_seeds(self) -> int:
        return len(self.counts.seeds) if self.counts is not None else int(np.isfinite(self.values).sum())


def oriented(interval: Interval, sign: float) -> tuple[float, float]:
    """The interval's bounds in the claimed direction (``sign`` -1 for a claimed decrease), low first."""
    if interval.n < 2 or not (math.isfinite(interval.low) and math.isfinite(interval.high)):
        return math.nan, math.nan
    low, high = sorted((sign * interval.low, sign * interval.high))
    return low, high


def _smallest_alpha(passes: Callable[[float], bool], top: float = 1.0) -> float:
    """The smallest alpha in (0, top] at which ``passes(alpha)`` holds, for a test that passes at every larger
    alpha once it passes at one (a wider interval at smaller alpha); ``top`` when it never passes below it."""
    if not passes(top * (1 - 1e-9)):
        return top
    lo, hi = 1e-12, top * (1 - 1e-9)
    if passes(lo):
        return lo
    for _ in range(60):  # bisection on log alpha: ~1e-5 relative precision
        mid = math.sqrt(lo * hi)
        lo, hi = (lo, mid) if passes(mid) else (mid, hi)
    return hi


def p_value(evidence: Evidence, sign: float, m: float) -> float:
    """Two-sided p-value of "the effect in the claimed direction equals ``m``" (module docstring); NaN
    without an interval."""
    if evidence.kind == "continuous":
        x = sign * evidence.values[np.isfinite(evidence.values)]
        if len(x) < 2 or float(np.std(x, ddof=1)) == 0.0:
            return math.nan
        return float(stats.ttest_1samp(x, m).pvalue)
    if not math.isfinite(oriented(evidence.interval(0.95)[0], sign)[0]):
        return math.nan

    def excludes(alpha: float) -> bool:
        ci, coverage = evidence.interval(1 - alpha)
        lo, hi = oriented(ci, sign)
        return coverage >= 1 - alpha - 1e-12 and (lo > m or hi < m)

    return _smallest_alpha(excludes)


def decide(evidence: Evidence, sign: float, m: float, margin: float | None,
           confidence: float) -> tuple[str, str, Interval | None]:
    """(verdict, why, the equivalence interval or None) from the evidence's intervals at ``confidence``, once
    the gates of :mod:`stability.analysis.verdicts` have passed: *supported* when the interval lies beyond
    ``m``; *equivalent* when a margin is given and the ``2 confidence - 1`` interval lies inside it; else
    *contradicted* when the interval lies short of ``m``; else *inconclusive*."""
    low, high = oriented(evidence.interval(confidence)[0], sign)
    equivalence, inside = None, False
    if margin is not None:
        equivalence, coverage = equivalence_interval(evidence, confidence)
        e_low, e_high = oriented(equivalence, 1.0)
        inside = coverage >= 2 * confidence - 1 - 1e-12 and -margin < e_low and e_high < margin
    if low > m:
        return "supported", f"the whole interval is beyond the minimal effect {m:g}", equivalence
    if inside:
        return "equivalent", (f"the {percent(2 * confidence - 1)} interval lies within the margin +-{margin:g}: "
                              "no effect larger than that either way"), equivalence
    if high < m:
        reversed_ = " (the opposite direction)" if high < 0 else ""
        return "contradicted", f"the whole interval is short of the minimal effect {m:g}{reversed_}", equivalence
    return "inconclusive", f"the interval spans the minimal effect {m:g}", equivalence


def percent(fraction: float) -> str:
    """``0.9`` -> ``"90%"``, ``0.9945`` -> ``"99.4%"`` (rounded down: never read as more than it is)."""
    return f"{math.floor(fraction * 1000 + 1e-9) / 10:g}%"


def equivalence_interval(evidence: Evidence, confidence: float) -> tuple[Interval, float]:
    """The ``2 confidence - 1`` interval (90% for 95%) that two one-sided tests at ``1 - confidence`` read."""
    return evidence.interval(2 * confidence - 1)


def tost_p(evidence: Evidence, margin: float) -> float:
    """p-value of the equivalence "|effect| < margin" by two one-sided tests (module docstring); NaN without an
    interval."""
    if evidence.kind == "continuous":
        x = evidence.values[np.isfinite(evidence.values)]
        if len(x) < 2 or float(np.std(x, ddof=1)) == 0.0:
            return math.nan
        return float(DescrStatsW(x).ttost_mean(-margin, margin)[0])
    if not math.isfinite(oriented(evidence.interval(0.9)[0], 1.0)[0]):
        return math.nan

    def inside(alpha: float) -> bool:
        ci, coverage = evidence.interval(1 - 2 * alpha)
        lo, hi = oriented(ci, 1.0)
        return coverage >= 1 - 2 * alpha - 1e-12 and -margin < lo and hi < margin

    return _smallest_alpha(inside, top=0.5)


def holm(p_values: Sequence[float], alpha: float) -> tuple[np.ndarray, np.ndarray]:
    """Holm's step-down correction over a family of p-values (statsmodels ``multipletests``): which reject at
    family-wise error ``alpha``, and the adjusted p-values. NaN p-values are not in the family."""
    p = np.asarray(p_values, dtype=float)
    reject, adjusted = np.zeros(len(p), dtype=bool), np.full(len(p), math.nan)
    tested = np.isfinite(p)
    if tested.any():
        r, a, _, _ = multipletests(p[tested], alpha=alpha, method="holm")
        reject[tested], adjusted[tested] = r, a
    return reject, adjusted


def seeds_needed(evidence: Evidence, sign: float, m: float, margin: float | None, confidence: float,
                 power: float = POWER) -> float:
    """Seeds (in all, not more) that would likely settle the claim at the measured effect and spread (module
    docstring); ``inf`` when the effect sits on ``m`` (no number of seeds separates them), NaN when it cannot
    be estimated (fewer than 2 seeds, or no spread measured)."""
    alpha = 1 - confidence
    if evidence.kind == "binary":
        return _seeds_for_rates(evidence, sign, m, alpha, power)
    x = evidence.values[np.isfinite(evidence.values)]
    if len(x) < 2:
        return math.nan
    if evidence.kind == "ordinal":
        return _seeds_for_median(sign * x, m, confidence, power)
    sd = float(np.std(x, ddof=1))
    if sd == 0.0:
        return math.nan
    effect = sign * float(np.mean(x))
    options = [_t_seeds(abs(effect - m) / sd, alpha, power, "two-sided")]
    if margin is not None and abs(effect) < margin:  # one-sided tests at alpha each, the nearer bound decides
        options.append(_t_seeds((margin - abs(effect)) / sd, alpha, power, "larger"))
    return min(options)


def _t_seeds(effect_size: float, alpha: float, power: float, alternative: str) -> float:
    if effect_size <= 1e-9:
        return math.inf
    try:
        n = TTestPower().solve_power(effect_size=effect_size, alpha=alpha, power=power, alternative=alternative)
    except (ValueError, RuntimeError):  # no root below statsmodels' bracket: a tiny standardised effect
        return math.inf
    n = float(np.asarray(n).ravel()[0])
    return math.inf if not math.isfinite(n) or n > MAX_SEEDS_ESTIMATE else float(max(2, math.ceil(n)))


def _seeds_for_rates(evidence: Evidence, sign: float, m: float, alpha: float, power: float) -> float:
    c = evidence.counts
    if c is None or c.n_on == 0 or c.n_off == 0 or not c.seeds:
        return math.nan
    p_on, p_off = (c.k_on + 0.5) / (c.n_on + 1), (c.k_off + 0.5) / (c.n_off + 1)
    distance = abs(sign * (c.k_on / c.n_on - c.k_off / c.n_off) - m)
    spread = math.sqrt((p_on * (1 - p_on) + p_off * (1 - p_off)) / 2)
    if distance <= 1e-9:
        return math.inf
    # runs per side for a two-sided z-test of the difference at this distance (NormalIndPower's formula, in
    # closed form: its root finder fails below 2 runs)
    runs = ((stats.norm.ppf(1 - alpha / 2) + stats.norm.ppf(power)) * spread / distance) ** 2 * 2
    runs_per_seed = min(c.n_on, c.n_off) / len(c.seeds)
    seeds = math.ceil(runs / runs_per_seed)
    return math.inf if seeds > MAX_SEEDS_ESTIMATE else float(max(2, seeds))


def _seeds_for_median(x: np.ndarray, m: float, confidence: float, power: float) -> float:
    """Fewest n whose interval [d_(k), d_(n+1-k)] lies beyond m (all on one side) with probability ``power``,
    each seed landing on the measured side of m with the shrunk share q = (k + 1/2) / (n + 1)."""
    above, below = int((x > m).sum()), int((x < m).sum())
    count = max(above, below)
    if count == 0:
        return math.inf
    q = (count + 0.5) / (len(x) + 1)
    for n in range(intervals.seeds_for_median(confidence), MAX_SEEDS_ESTIMATE + 1):
        k = max(1, intervals.median_rank(n, confidence))
        # the k-th smallest of the seeds on the far side is beyond m when at least n + 1 - k seeds are
        if stats.binom.sf(n - k, n, q) >= power:
            return float(n)
    return math.inf
