"""Verdicts: each claim of a sweep (:mod:`stability.analysis.claims`) checked over independent seeds.

How a verdict is reached (every rule is here, and every one is tested):

- **The seed is the unit of replication.** A grid's seed sets both the training seed and the data split
  (:func:`stability.sweep.cells.set_seed`), so the interval over seeds includes the split's variance. A
  treatment run is paired with the control run that agrees on every other configuration axis *and the seed*.
  Cells that share a seed never count as separate replicates.
- **Per learning rate.** Unless ``pool: true`` (or ``where`` fixes the lr), each lr gets its own verdict.
  Grid metrics (LR sensitivity, largest stable lr) are computed per seed over the lr grid instead, over the
  learning rates the treatment and the control both have for that seed: at least :data:`MIN_LR_POINTS`, else
  the seed does not count ("too few runs (fewer than 3 learning rates)").
- **Bundles are compared as bundles.** Only runs that match every treatment key are treatment runs and only
  runs that match every control key are control runs, so a bundle's effect is never charged to one toggle.
- **Each metric kind its statistic** (:attr:`stability.analysis.claims.Metric.kind`; the intervals and their
  sources are :mod:`stability.analysis.intervals`; ``confidence`` 95% by default):

  - *continuous*: effect = the mean over seeds of the per-seed difference (a seed's pairs averaged first);
    interval = Student t over the n seeds.
  - *binary* (the rates): effect = treatment rate - control rate, counted over the runs of the cells that pair,
    each run one Bernoulli trial (the runs are taken as independent trials, treatment and control as
    independent samples, although a seed's runs share its data split); interval = Newcombe's hybrid score
    interval, which stays in [-1, 1].
  - *ordinal* (the largest stable lr): effect = the median over seeds of the per-seed difference in decades
    on the lr grid; interval = the order statistics ``[d_(k), d_(n+1-k)]`` with the largest k whose coverage
    ``1 - 2 BinomCDF(k-1; n, 1/2)`` reaches the confidence (the sign-test interval).

- **Gates**, in this order; the first that fails makes the verdict *inconclusive* and says why:

  1. every kind: at least :data:`MIN_SEEDS` seeds pair (grid metrics: seeds with >= :data:`MIN_LR_POINTS`
     common learning rates);
  2. metrics read at convergence (``Metric.at_convergence``: the accuracies, the losses, LR sensitivity; not
     the rates, the attention logits, log Z, the largest stable lr): the control converged (below). Only for
     these is ``control_converged`` filled in; for the others it is empty;
  3. every kind: the interval is finite;
  4. ordinal: the order-statistic interval reaches the confidence, which needs 6 seeds at 95% (with fewer,
     ``[min, max]`` is shown with its coverage ``1 - 2^(1-n)``);
  5. every kind: the interval has non-zero width (identical seeds measure no spread: no verdict from them).
- **Verdicts** (``e`` = the effect in the claimed direction, ``[lo, hi]`` its interval, ``m`` = min_effect):
  *supported* when ``lo > m`` (the whole interval shows an effect that matters); *contradicted* when
  ``hi < m`` (the whole interval is below what matters: no effect, or the opposite one); otherwise
  *inconclusive*.
- **Convergence** of the control (:func:`converged`): a run converged when it completed (not diverged,
  collapsed or failed) and its per-epoch mean training loss fell by at most ``CONVERGENCE_TOL`` x its initial
  loss over the last quarter of its epochs. The control converged when, for every seed (and setting of the
  other axes), its run at that seed's best lr converged, the best lr being the one with that seed's highest
  final *validation* accuracy. Chosen per seed, not on the mean over seeds: a seed whose best run stopped
  early is not hidden behind the others, and each seed's choice uses its own validation split only. Then the
  runs were long enough, and a control that fails at a higher lr is a result, not a run stopped too early.
  The gate decides whether a verdict may be read; it never selects which runs the effect is computed from.
- **Failures count.** A diverged or collapsed run scores chance accuracy (``1 / num_classes``) and its initial
  loss; the failure metrics count it as 1.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from stability.analysis import decisions, intervals
from stability.analysis import metrics as M
from stability.analysis.claims import METRICS, Claim, Metric
from stability.analysis.decisions import Evidence
from stability.analysis.grid_metrics import MIN_LR_POINTS, grid_differences, row_keys
from stability.record.files import COLLAPSED, COMPLETED, DIVERGED
from stability.record.identity import LR, SEED

MIN_SEEDS = 3  # fewer seeds than this never give a verdict
CONVERGENCE_TOL = 0.02  # see the module docstring: the last quarter's training-loss drop, x the initial loss
VERDICTS = ("supported", "contradicted", "equivalent", "inconclusive")
TOO_FEW_LRS = f"too few runs (fewer than {MIN_LR_POINTS} learning rates)"


# -- per-run values -----------------------------------------------------------------------------------------
def converged(history: Any, initial_loss: float | None, status: str) -> bool:
    """Whether one run converged (module docstring): completed, and a flat training loss at the end.

    ``history`` is the per-epoch mean training loss (a list, or its JSON text as a run table holds it)."""
    if isinstance(history, str):
        history = json.loads(history)
    if status != COMPLETED or not isinstance(history, (list, tuple)) or len(history) < 4:
        return False
    losses = np.asarray(history, dtype=float)
    if not np.isfinite(losses).all():
        return False
    quarter = max(1, len(losses) // 4)
    scale = initial_loss if initial_loss and math.isfinite(initial_loss) else float(losses[0])
    return float(losses[-quarter - 1] - losses[-1]) <= CONVERGENCE_TOL * scale


def run_values(runs: pd.DataFrame, metric: str) -> pd.Series:
    """The metric per run, with failures scored as the module docstring says (NaN where unknown)."""
    failed = runs["status"].isin([DIVERGED, COLLAPSED])
    chance = 1.0 / pd.to_numeric(runs.get("num_classes", pd.Series(10, index=runs.index)), errors="coerce")
    if metric == "failure_rate":
        return failed.astype(float)
    if metric == "divergence_rate":
        return runs["status"].eq(DIVERGED).astype(float)
    if metric == "collapse_rate":
        return runs["status"].eq(COLLAPSED).astype(float)
    values = pd.to_numeric(runs.get(metric, pd.Series(np.nan, index=runs.index)), errors="coerce")
    if metric.endswith("_acc"):
        values = values.where(~(failed & values.isna()), chance)
    elif metric.endswith("_loss"):
        initial = pd.to_numeric(runs.get("initial_loss", pd.Series(np.nan, index=runs.index)), errors="coerce")
        values = values.where(~runs["status"].eq(DIVERGED), np.minimum(values.fillna(np.inf), initial))
    elif metric == "max_attn_logit":
        values = np.log10(values.where(values > 0))
    return values.astype(float)


# -- verdicts -------------------------------------------------------------------------------------------------
@dataclass
class Verdict:
    """One claim's answer (one per lr unless pooled)."""

    claim: Claim
    lr: float | None  # the lr this row is about (None: pooled, or the metric spans the lr grid)
    effect: M.Interval  # treatment - control, in the metric's units, over seeds (``mean``: the kind's effect)
    verdict: str  # one of VERDICTS
    why: str
    seeds: list[Any]  # the seeds that paired
    control_converged: str  # e.g. "3/3 at lr 0.003"; empty where the metric has no convergence gate
    p_value: float = math.nan  # of "the effect is m" (stability.analysis.decisions); NaN when a gate failed
    tost_p: float = math.nan  # of "no effect beyond the margin"; NaN without a margin or when a gate failed
    equivalence: M.Interval | None = None  # the 1 - 2 alpha interval the equivalence reads (with a margin)
    seeds_needed: float = math.nan  # an inconclusive verdict's estimate (decisions.seeds_needed)

    @property
    def setting(self) -> str:
        """Where the claim was tested, in words: ``lr 0.003``, ``lr 0.03 vs 0.001``, ``over the lr grid``."""
        c = self.claim
        if LR in c.treatment:
            return f"lr {c.treatment['lr']:g} vs {c.control['lr']:g}"
        if metric_of(c).per == "grid":
            return "over the lr grid"
        return f"lr {self.lr:g}" if self.lr is not None else "every lr, pooled"

    def row(self) -> dict[str, Any]:
        c = self.claim
        metric = metric_of(c)
        eq = self.equivalence
        return {"claim": c.claim, "source": c.source, "metric": c.metric, "unit": metric.unit, "kind": metric.kind,
                "direction": c.direction, "min_effect": c.min_effect,
                "margin": math.nan if c.equivalence_margin is None else c.equivalence_margin, "setting": self.setting,
                LR: math.nan if self.lr is None else self.lr, "effect": self.effect.mean,
                "low": self.effect.low, "high": self.effect.high, "n_seeds": self.effect.n,
                "verdict": self.verdict, "why": self.why, "control_converged": self.control_converged,
                "seeds": ", ".join(map(str, self.seeds)), "p_value": self.p_value, "tost_p": self.tost_p,
                "eq_low": eq.low if eq else math.nan, "eq_high": eq.high if eq else math.nan,
                "seeds_needed": self.seeds_needed}


@dataclass(frozen=True)
class Estimate:
    """A claim's effect at one setting, by its metric kind's statistic (module docstring)."""

    interval: M.Interval  # effect (mean, median or difference of rates), low, high, n = seeds that paired
    seeds: list[str]  # the seeds that paired, as key text
    coverage: float  # what the interval achieves (the ordinal one can fall short of the confidence)
    short_of_lrs: int = 0  # seeds left out of a grid metric for fewer than MIN_LR_POINTS common lrs
    evidence: Evidence | None = None  # what the interval came from, for p-values and power


def metric_of(claim: Claim) -> Metric:
    """The claim's metric (a name not in METRICS, from code rather than a grid file: a continuous one)."""
    return METRICS.get(claim.metric) or Metric(claim.metric, claim.metric, "")


def _matches(runs: pd.DataFrame, selector: Mapping[str, Any]) -> pd.Series:
    mask = pd.Series(True, index=runs.index)
    for key, value in selector.items():
        options = value if isinstance(value, list) else [value]
        if key not in runs:
            return pd.Series(False, index=runs.index)
        mask &= runs[key].map(lambda x, o=options: any(M.same_value(x, v) for v in o))
    return mask


def evaluate(claim: Claim, runs: pd.DataFrame, config_columns: Sequence[str],
             confidence: float = 0.95) -> list[Verdict]:
    """Every verdict of one claim over the finished runs of a sweep (``runs``: one row per run, the columns of
    :class:`stability.analysis.results.Sweep` plus ``train_loss_history``)."""
    finished = runs[runs["status"].isin([COMPLETED, DIVERGED, COLLAPSED])]
    keys = set(claim.treatment)
    metric = metric_of(claim)
    control_ok = _control_convergence(claim, finished, [c for c in config_columns if c not in keys]) \
        if metric.at_convergence else (True, "")
    selected = finished[_matches(finished, claim.where)]
    by_lr = metric.per == "run" and not claim.pool and LR not in keys and LR in selected \
        and len(sorted_values(selected[LR])) > 1
    # the axes a treatment run and its control run must agree on, besides the seed
    other = [c for c in config_columns if c not in keys and c != SEED and (metric.per == "run" or c != LR)]
    treat = selected[_matches(selected, claim.treatment)]
    ctrl = selected[_matches(selected, claim.control)]
    if metric.per == "grid":
        estimate = _grid_estimate(claim, metric, treat, ctrl, other, confidence)
        return [_verdict(claim, metric, None, estimate, control_ok, confidence)]
    lrs = sorted_values(selected[LR]) if by_lr else [None]
    single = sorted_values(selected[LR]) if LR in selected else []
    out = []
    for lr in lrs:
        t = treat if lr is None else treat[treat[LR].map(lambda x, v=lr: M.same_value(x, v))]
        c = ctrl if lr is None else ctrl[ctrl[LR].map(lambda x, v=lr: M.same_value(x, v))]
        estimate = _run_estimate(claim, metric, t, c, other, confidence)
        shown = lr if lr is not None else (single[0] if len(single) == 1 else None)
        out.append(_verdict(claim, metric, None if shown is None else float(shown), estimate, control_ok,
                            confidence))
    return out


def sorted_values(series: pd.Series) -> list[Any]:
    """The distinct values of a column in sorted order (numbers as numbers)."""
    seen: dict[str, Any] = {}
    for v in series:
        seen.setdefault(M.key_text(v), v)
    try:
        return sorted(seen.values())
    except TypeError:
        return list(seen.values())


def _run_estimate(claim: Claim, metric: Metric, treat: pd.DataFrame, ctrl: pd.DataFrame, other: Sequence[str],
                  confidence: float) -> Estimate:
    """A per-run metric's effect: rates as proportions of runs (binary), the rest as a mean over seeds."""
    if treat.empty or ctrl.empty or SEED not in treat:
        return Estimate(M.Interval(math.nan, math.nan, math.nan, 0), [], confidence)
    t = treat.assign(_value=run_values(treat, claim.metric))
    c = ctrl.assign(_value=run_values(ctrl, claim.metric))
    if metric.kind == "binary":
        counts = intervals.paired_counts(t, c, "_value", other)
        evidence = Evidence("binary", np.empty(0), counts)
        return Estimate(evidence.interval(confidence)[0], counts.seeds, confidence, evidence=evidence)
    per_seed = M.seed_effect(M.paired_by_seed(t, c, "_value", other))[1]
    evidence = Evidence("continuous", per_seed.to_numpy(dtype=float))
    return Estimate(evidence.interval(confidence)[0], list(per_seed.index), confidence, evidence=evidence)


def _grid_estimate(claim: Claim, metric: Metric, treat: pd.DataFrame, ctrl: pd.DataFrame, other: Sequence[str],
                   confidence: float) -> Estimate:
    """A grid metric's effect over seeds: the median (ordinal) or the mean (continuous) of the seeds' values."""
    per_seed, short = grid_differences(claim, metric, treat, ctrl, other)
    evidence = Evidence("ordinal" if metric.kind == "ordinal" else "continuous", per_seed.to_numpy(dtype=float))
    ci, coverage = evidence.interval(confidence)
    return Estimate(ci, list(per_seed.index), coverage, short, evidence)


def _control_convergence(claim: Claim, finished: pd.DataFrame, other: Sequence[str]) -> tuple[bool, str]:
    """Whether the control converged at each seed's best lr (module docstring).

    The control runs checked are those that pair with a treatment run on every axis but the lr (same seed,
    same other toggles), at any lr of the sweep: the claim's ``where`` pins everything but the lr. Per seed
    (and setting of the other axes) the best lr is the one with the highest final validation accuracy.
    """
    pinned = {k: v for k, v in claim.where.items() if k != LR}
    treat = finished[_matches(finished, {**pinned, **claim.treatment})]
    ctrl = finished[_matches(finished, {**pinned, **claim.control})]
    cols = [c for c in other if c != LR] + [SEED]
    ctrl = ctrl[row_keys(ctrl, cols).isin(set(row_keys(treat, cols)))]
    if ctrl.empty:
        return False, "no control run"
    ok = ctrl.apply(lambda r: converged(r.get("train_loss_history"), r.get("initial_loss"), r["status"]), axis=1)
    if LR not in ctrl or ctrl[LR].nunique() < 2:
        return bool(ok.all()), f"{int(ok.sum())}/{len(ok)}"
    lr = ctrl[LR].astype(float)
    acc = run_values(ctrl, "final_val_acc").fillna(-math.inf)  # no validation accuracy: never the best lr
    best: dict[str, float] = {}
    fine: dict[str, bool] = {}
    for group, rows in ctrl.groupby(row_keys(ctrl, cols), sort=True):
        best[group] = float(acc[rows.index].groupby(lr[rows.index]).mean().idxmax())
        fine[group] = bool(ok[rows.index][lr[rows.index] == best[group]].all())
    lrs = sorted(set(best.values()))
    where = f"at lr {lrs[0]:g}" if len(lrs) == 1 else \
        f"at each seed's best lr ({', '.join(f'{v:g}' for v in lrs)})"
    return all(fine.values()), f"{sum(fine.values())}/{len(fine)} {where}"


def _seed_value(text: str) -> int | str:
    """A seed back from its key text (``"2.0"`` -> 2)."""
    try:
        value = float(text)
    except ValueError:
        return text
    return int(value) if value.is_integer() else text


def _gate(metric: Metric, estimate: Estimate, control: tuple[bool, str], lo: float, hi: float,
          confidence: float) -> str | None:
    """Why no verdict can be read off the interval (the gates of the module docstring, in order), or None."""
    n = estimate.interval.n
    if n < MIN_SEEDS:
        few = f"{n} seed(s) paired; a verdict needs {MIN_SEEDS}"
        if estimate.short_of_lrs:
            return f"{TOO_FEW_LRS} common to treatment and control in {estimate.short_of_lrs} seed(s); {few}"
        return few
    if metric.at_convergence and not control[0]:
        return f"the control did not converge ({control[1]}); train longer"
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return "no interval (the seeds' values are not finite)"
    if metric.kind == "ordinal" and estimate.coverage < confidence:
        return (f"{n} seeds bound an ordinal effect with at most {decisions.percent(estimate.coverage)} confidence; "
                f"{decisions.percent(confidence)} needs {intervals.seeds_for_median(confidence)}")
    if intervals.zero_width(lo, hi):
        return "the interval has zero width (every seed gave the same difference): no spread was measured"
    return None


def _verdict(claim: Claim, metric: Metric, lr: float | None, estimate: Estimate, control: tuple[bool, str],
             confidence: float) -> Verdict:
    ci, evidence = estimate.interval, estimate.evidence
    seeds = sorted(_seed_value(s) for s in estimate.seeds)
    sign = 1.0 if claim.direction == "increase" else -1.0
    lo, hi = decisions.oriented(ci, sign)  # for the gates
    m, margin = claim.min_effect, claim.equivalence_margin
    why = _gate(metric, estimate, control, lo, hi, confidence)
    out = Verdict(claim, lr, ci, "inconclusive", why or "", seeds, control[1] if metric.at_convergence else "")
    if why is not None:
        if evidence is not None and not (metric.at_convergence and not control[0]):  # seeds cannot fix that gate
            out.seeds_needed = decisions.seeds_needed(evidence, sign, m, margin, confidence)
        return out
    assert evidence is not None  # every estimate that passes the gates has its evidence
    out.verdict, out.why, out.equivalence = decisions.decide(evidence, sign, m, margin, confidence)
    out.p_value = decisions.p_value(evidence, sign, m)
    if margin is not None:
        out.tost_p = decisions.tost_p(evidence, margin)
    if out.verdict == "inconclusive":
        out.seeds_needed = decisions.seeds_needed(evidence, sign, m, margin, confidence)
    return out


def claims_table(claims: Sequence[Claim], runs: pd.DataFrame, config_columns: Sequence[str],
                 confidence: float = 0.95) -> pd.DataFrame:
    """One row per verdict (see :meth:`Verdict.row`), in claim order, with the study-wide correction beside
    each (:func:`study_correction`)."""
    rows = [v.row() for claim in claims for v in evaluate(claim, runs, config_columns, confidence)]
    cols = ["claim", "source", "metric", "unit", "kind", "direction", "min_effect", "margin", "setting", LR,
            "effect", "low", "high", "n_seeds", "verdict", "why", "control_converged", "seeds", "p_value", "tost_p",
            "eq_low", "eq_high", "seeds_needed"]
    return study_correction(pd.DataFrame(rows, columns=cols), 1 - confidence)


def study_correction(table: pd.DataFrame, alpha: float) -> pd.DataFrame:
    """Add ``verdict_holm`` and the adjusted p-values: the verdicts a study keeps when its claims are held to a
    family-wise error ``alpha`` together (Holm 1979, "A simple sequentially rejective multiple test
    procedure", Scand. J. Statist. 6). The family is every hypothesis the table tested: each verdict's test
    against the minimal effect, and each equivalence test; verdicts a gate stopped tested nothing and stay
    inconclusive. A verdict survives when its own test still rejects after the correction."""
    table = table.copy()
    family = np.concatenate([table["p_value"].to_numpy(dtype=float), table["tost_p"].to_numpy(dtype=float)])
    _, adjusted = decisions.holm(family, alpha)
    table["p_holm"], table["tost_p_holm"] = adjusted[:len(table)], adjusted[len(table):]
    keep = {"supported": table["p_holm"] < alpha, "contradicted": table["p_holm"] < alpha,
            "equivalent": table["tost_p_holm"] < alpha}
    table["verdict_holm"] = [v if v in keep and bool(keep[v][i]) else "inconclusive"
                             for i, v in zip(table.index, table["verdict"], strict=True)]
    return table
