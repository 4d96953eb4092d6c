"""Verdicts: each claim of a sweep (:mod:`stability.analysis.claims`) checked over independent seeds.

How a verdict is reached (every rule is here, and every one is tested):

- **The seed is the unit of replication.** A grid's seed sets both the training seed and the data split
  (:func:`stability.sweep.cells.set_seed`), so the interval over seeds includes the split's variance. A
  treatment run is paired with the control run that agrees on every other configuration axis *and the seed*;
  the pair differences of one seed are averaged (over the other axes the selection spans), giving one number
  per seed. The effect is the mean over seeds with a Student-t 95% interval over the n seeds. Cells that share
  a seed never count as separate replicates.
- **Per learning rate.** Unless ``pool: true`` (or ``where`` fixes the lr), each lr gets its own verdict.
  Grid metrics (LR sensitivity, largest stable lr) are computed per seed over the lr grid instead.
- **Bundles are compared as bundles.** Only runs that match every treatment key are treatment runs and only
  runs that match every control key are control runs, so a bundle's effect is never charged to one toggle.
- **Verdicts** (``e`` = the effect in the claimed direction, ``[lo, hi]`` its interval, ``m`` = min_effect):
  *supported* when ``lo > m`` (the whole interval shows an effect that matters); *contradicted* when
  ``hi < m`` (the whole interval is below what matters: no effect, or the opposite one); otherwise
  *inconclusive*, and also when fewer than :data:`MIN_SEEDS` seeds pair up or when the control did not
  converge (for metrics read at convergence).
- **Convergence** of the control (:func:`converged`): a run converged when it completed (not diverged,
  collapsed or failed) and its per-epoch mean training loss fell by at most ``CONVERGENCE_TOL`` x its initial
  loss over the last quarter of its epochs. The control configuration counts as converged when, at the lr
  where it does best in the sweep, every seed converged: then the runs were long enough, and a control that
  fails at a higher lr is a result, not a run stopped too early.
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

from stability.analysis import metrics as M
from stability.analysis.claims import METRICS, Claim, Metric
from stability.record.files import COLLAPSED, COMPLETED, DIVERGED
from stability.record.identity import LR, SEED

MIN_SEEDS = 3  # fewer seeds than this never give a verdict
CONVERGENCE_TOL = 0.02  # see the module docstring: the last quarter's training-loss drop, x the initial loss
VERDICTS = ("supported", "contradicted", "inconclusive")


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
    effect: M.Interval  # treatment - control, in the metric's units, over seeds
    verdict: str  # one of VERDICTS
    why: str
    seeds: list[Any]  # the seeds that paired
    control_converged: str  # e.g. "3/3 at lr 0.003"

    @property
    def setting(self) -> str:
        """Where the claim was tested, in words: ``lr 0.003``, ``lr 0.03 vs 0.001``, ``over the lr grid``."""
        c = self.claim
        if LR in c.treatment:
            return f"lr {c.treatment['lr']:g} vs {c.control['lr']:g}"
        if c.metric in METRICS and METRICS[c.metric].per == "grid":
            return "over the lr grid"
        return f"lr {self.lr:g}" if self.lr is not None else "every lr, pooled"

    def row(self) -> dict[str, Any]:
        c = self.claim
        unit = METRICS[c.metric].unit if c.metric in METRICS else ""
        return {"claim": c.claim, "source": c.source, "metric": c.metric, "unit": unit,
                "direction": c.direction, "min_effect": c.min_effect, "setting": self.setting,
                LR: math.nan if self.lr is None else self.lr, "effect": self.effect.mean,
                "low": self.effect.low, "high": self.effect.high, "n_seeds": self.effect.n,
                "verdict": self.verdict, "why": self.why, "control_converged": self.control_converged,
                "seeds": ", ".join(map(str, self.seeds))}


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
    control_ok = _control_convergence(claim, finished, [c for c in config_columns if c not in keys])
    selected = finished[_matches(finished, claim.where)]
    metric = METRICS.get(claim.metric) or Metric(claim.metric, claim.metric, "")
    by_lr = metric.per == "run" and not claim.pool and LR not in keys and LR in selected \
        and len(sorted_values(selected[LR])) > 1
    # the axes a treatment run and its control run must agree on, besides the seed
    other = [c for c in config_columns if c not in keys and c != SEED and (metric.per == "run" or c != LR)]
    treat = selected[_matches(selected, claim.treatment)]
    ctrl = selected[_matches(selected, claim.control)]
    if metric.per == "grid":
        per_seed = _grid_differences(claim, treat, ctrl, other)
        return [_verdict(claim, None, per_seed, control_ok, confidence)]
    lrs = sorted_values(selected[LR]) if by_lr else [None]
    single = sorted_values(selected[LR]) if LR in selected else []
    out = []
    for lr in lrs:
        t = treat if lr is None else treat[treat[LR].map(lambda x, v=lr: M.same_value(x, v))]
        c = ctrl if lr is None else ctrl[ctrl[LR].map(lambda x, v=lr: M.same_value(x, v))]
        per_seed = _run_differences(claim, t, c, other)
        shown = lr if lr is not None else (single[0] if len(single) == 1 else None)
        out.append(_verdict(claim, None if shown is None else float(shown), per_seed, control_ok, confidence))
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


def _key(frame: pd.DataFrame, columns: Sequence[str]) -> pd.Series:
    cols = [c for c in columns if c in frame]
    if not cols:
        return pd.Series("", index=frame.index)
    return frame[cols].map(M.key_text).agg("|".join, axis=1)


def _run_differences(claim: Claim, treat: pd.DataFrame, ctrl: pd.DataFrame, other: Sequence[str]) -> pd.Series:
    """Treatment minus control per seed (:func:`stability.analysis.metrics.paired_by_seed`, then
    :func:`~stability.analysis.metrics.seed_effect`)."""
    if treat.empty or ctrl.empty or SEED not in treat:
        return pd.Series(dtype=float)
    pairs = M.paired_by_seed(treat.assign(_value=run_values(treat, claim.metric)),
                             ctrl.assign(_value=run_values(ctrl, claim.metric)), "_value", other)
    return M.seed_effect(pairs)[1]


def _grid_differences(claim: Claim, treat: pd.DataFrame, ctrl: pd.DataFrame, other: Sequence[str]) -> pd.Series:
    """Per seed (and other axes, then averaged): the grid metric of the treatment minus the control's, over the
    lrs both sides have."""
    if treat.empty or ctrl.empty or SEED not in treat or LR not in treat:
        return pd.Series(dtype=float)

    def per_group(frame: pd.DataFrame) -> dict[tuple[str, str], pd.DataFrame]:
        keys = list(zip(frame[SEED].map(M.key_text), _key(frame, other), strict=True))
        return {k: frame[[kk == k for kk in keys]] for k in dict.fromkeys(keys)}

    t_groups, c_groups = per_group(treat), per_group(ctrl)
    diffs: dict[str, list[float]] = {}
    for k, t in t_groups.items():
        c = c_groups.get(k)
        if c is None:
            continue
        common = set(t[LR].map(M.key_text)) & set(c[LR].map(M.key_text))
        if len(common) < 2:
            continue
        t = t[t[LR].map(M.key_text).isin(common)]
        c = c[c[LR].map(M.key_text).isin(common)]
        diffs.setdefault(k[0], []).append(_grid_value(claim.metric, t) - _grid_value(claim.metric, c))
    return pd.Series({seed: float(np.mean(v)) for seed, v in diffs.items()}, dtype=float).dropna()


def _grid_value(metric: str, runs: pd.DataFrame) -> float:
    """One configuration and seed over its lr grid."""
    failed = runs["status"].isin([DIVERGED, COLLAPSED])
    if metric == "largest_stable_lr":
        stable = runs.loc[~failed, LR].astype(float)
        return float(np.log10(stable.max())) if len(stable) else float(np.log10(runs[LR].astype(float).min()) - 1)
    initial = pd.to_numeric(runs.get("initial_loss"), errors="coerce").fillna(math.log(10))
    loss = pd.to_numeric(runs.get("final_val_loss"), errors="coerce")
    res = M.lr_sensitivity(runs[LR].astype(float).to_numpy(), loss.to_numpy(dtype=float), initial.to_numpy(),
                           failed.to_numpy())
    return res.value


def _control_convergence(claim: Claim, finished: pd.DataFrame, other: Sequence[str]) -> tuple[bool, str]:
    """Whether the control converged at the lr where it does best in the sweep (module docstring).

    The control runs checked are those that pair with a treatment run on every axis but the lr (same seed,
    same other toggles), at any lr of the sweep: the claim's ``where`` pins everything but the lr.
    """
    pinned = {k: v for k, v in claim.where.items() if k != LR}
    treat = finished[_matches(finished, {**pinned, **claim.treatment})]
    ctrl = finished[_matches(finished, {**pinned, **claim.control})]
    cols = [c for c in other if c != LR] + [SEED]
    ctrl = ctrl[_key(ctrl, cols).isin(set(_key(treat, cols)))]
    if ctrl.empty:
        return False, "no control run"
    ok = ctrl.apply(lambda r: converged(r.get("train_loss_history"), r.get("initial_loss"), r["status"]), axis=1)
    if LR not in ctrl or ctrl[LR].nunique() < 2:
        return bool(ok.all()), f"{int(ok.sum())}/{len(ok)}"
    acc = run_values(ctrl, "final_val_acc")
    best_lr = acc.groupby(ctrl[LR].astype(float)).mean().idxmax()
    at_best = ctrl[LR].astype(float) == best_lr
    return bool(ok[at_best].all()), f"{int(ok[at_best].sum())}/{int(at_best.sum())} at lr {best_lr:g}"


def _seed_value(text: str) -> int | str:
    """A seed back from its key text (``"2.0"`` -> 2)."""
    try:
        value = float(text)
    except ValueError:
        return text
    return int(value) if value.is_integer() else text


def _verdict(claim: Claim, lr: float | None, per_seed: pd.Series, control: tuple[bool, str],
             confidence: float) -> Verdict:
    ci = M.t_interval(per_seed.to_numpy(dtype=float), confidence)
    seeds = sorted(_seed_value(s) for s in per_seed.index)
    converged_ok, converged_text = control
    sign = 1.0 if claim.direction == "increase" else -1.0
    lo, hi = sorted((sign * ci.low, sign * ci.high)) if ci.n >= 2 else (math.nan, math.nan)
    m = claim.min_effect
    if ci.n < MIN_SEEDS:
        verdict, why = "inconclusive", f"{ci.n} seed(s) paired; a verdict needs {MIN_SEEDS}"
    elif claim.metric in METRICS and METRICS[claim.metric].at_convergence and not converged_ok:
        verdict, why = "inconclusive", f"the control did not converge ({converged_text}); train longer"
    elif not (math.isfinite(lo) and math.isfinite(hi)):
        verdict, why = "inconclusive", "no interval (the seeds' values are not finite)"
    elif lo > m:
        verdict, why = "supported", f"the whole interval is beyond the minimal effect {m:g}"
    elif hi < m:
        reversed_ = " (the opposite direction)" if hi < 0 else ""
        verdict, why = "contradicted", f"the whole interval is short of the minimal effect {m:g}{reversed_}"
    else:
        verdict, why = "inconclusive", f"the interval spans the minimal effect {m:g}"
    return Verdict(claim, lr, ci, verdict, why, seeds, converged_text)


def claims_table(claims: Sequence[Claim], runs: pd.DataFrame, config_columns: Sequence[str],
                 confidence: float = 0.95) -> pd.DataFrame:
    """One row per verdict (see :meth:`Verdict.row`), in claim order."""
    rows = [v.row() for claim in claims for v in evaluate(claim, runs, config_columns, confidence)]
    cols = ["claim", "source", "metric", "unit", "direction", "min_effect", "setting", LR, "effect", "low", "high",
            "n_seeds", "verdict", "why", "control_converged", "seeds"]
    return pd.DataFrame(rows, columns=cols)
