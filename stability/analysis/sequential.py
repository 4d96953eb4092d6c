"""Verdicts that settle: a claim looked at again as seeds are added, with the error rate held over the looks.

``stability sweep GRID --settle`` (:mod:`stability.sweep.settle`) adds seeds in rounds to the cells of the claims
still inconclusive and looks at each again. Looking repeatedly at a 95% interval and stopping at the first that
clears the minimal effect would declare an effect that is not there far more often than 5% of the time (about
twice as often over four looks). So each look spends a part of the error rate ``alpha``:

- **Spending rule**: Lan & DeMets 1983 ("Discrete sequential boundaries for clinical trials", Biometrika 70),
  Pocock-type spending function ``alpha(t) = alpha ln(1 + (e - 1) t)``, ``t`` = seeds at the look / the most
  seeds the study may take (``--max-seeds``). Look ``k`` may spend ``alpha(t_k) - alpha(t_{k-1})``; the Pocock
  shape spends early looks' share evenly, so a claim that is clear at the grid's own seeds can stop there.
- **Each look tests at its increment**, its interval at ``1 - alpha_k`` (equivalence at ``1 - 2 alpha_k``). By
  the union bound over looks the chance of any wrong verdict is at most the sum of the increments, ``alpha``:
  conservative (it ignores that looks share seeds, which group-sequential boundaries exploit), but it holds for
  every metric kind the verdicts use, rates and medians included, not only for normal means. A seeded
  simulation of null studies checks the error rate stays at or under ``alpha`` (``tests/analysis``).
- **A sequential p-value** for the study-wide correction: ``p* = min over looks of p_k alpha / alpha_k``, valid
  because ``P(p* <= u) <= sum_k u alpha_k / alpha = u`` under the null.

The looks' seeds are fixed by the schedule (the grid's seeds, then ``step`` more per round up to the maximum);
only the stopping depends on the data.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from stability.analysis.claims import Claim
from stability.analysis.metrics import Interval, key_text
from stability.analysis.verdicts import Verdict, evaluate, metric_of, study_correction
from stability.record.identity import SEED

SPENDING = "Lan-DeMets Pocock-type alpha spending, each look at its increment (union bound over looks)"
STOP_SETTLED, STOP_BUDGET, STOP_CANNOT = "settled", "budget spent", "more seeds cannot settle it"


def spent(fraction: float, alpha: float) -> float:
    """Error rate spent by information fraction ``fraction`` (module docstring): 0 at 0, ``alpha`` at 1."""
    return alpha * math.log(1 + (math.e - 1) * min(1.0, max(0.0, fraction)))


def look_alphas(looks: Sequence[int], max_seeds: int, alpha: float) -> list[float]:
    """What each look may spend, for looks at ``looks`` seeds (increasing) of at most ``max_seeds``."""
    out, before = [], 0.0
    for n in looks:
        now = spent(n / max_seeds, alpha)
        out.append(now - before)
        before = now
    return out


def sequential_p(p_values: Sequence[float], alphas: Sequence[float], alpha: float) -> float:
    """``min_k p_k alpha / alpha_k`` over the looks taken (module docstring), at most 1; NaN if no look had one."""
    values = [p * alpha / a for p, a in zip(p_values, alphas, strict=True) if math.isfinite(p) and a > 0]
    return min(1.0, min(values)) if values else math.nan


def schedule(first: int, step: int, max_seeds: int) -> list[int]:
    """Seeds at each look: the grid's own, then ``step`` more each round, the last capped at ``max_seeds``."""
    looks = [first]
    while looks[-1] < max_seeds:
        looks.append(min(max_seeds, looks[-1] + step))
    return looks


def cannot_settle(verdict: Verdict) -> bool:
    """Whether more seeds would not change an inconclusive verdict: the control did not converge."""
    return verdict.verdict == "inconclusive" and "did not converge" in verdict.why


@dataclass
class Look:
    """One look at one verdict row: the seeds it rests on, what it could spend, what it found."""

    seeds: list[Any]
    alpha: float
    verdict: Verdict


@dataclass
class SettledRow:
    """A claim's verdict row through its looks, and why it stopped (None while it goes on)."""

    claim: Claim
    setting: str
    looks: list[Look] = field(default_factory=list)
    stopped: str | None = None


def row_verdict(claim: Claim, runs: pd.DataFrame, config_columns: Sequence[str], seeds: Sequence[Any],
                setting: str, alpha_k: float) -> Verdict | None:
    """The claim's verdict at ``setting`` from the runs of ``seeds`` only, its interval at ``1 - alpha_k``."""
    wanted = {key_text(s) for s in seeds}
    subset = runs[runs[SEED].map(key_text).isin(wanted)]
    return next((v for v in evaluate(claim, subset, config_columns, 1 - alpha_k) if v.setting == setting), None)


def take_look(row: SettledRow, runs: pd.DataFrame, config_columns: Sequence[str], seeds: Sequence[Any],
              max_seeds: int, alpha: float) -> Look:
    """Look at ``row`` on ``seeds`` and decide whether it stops (module docstring)."""
    counts = [len(look.seeds) for look in row.looks] + [len(seeds)]
    alpha_k = look_alphas(counts, max_seeds, alpha)[-1]
    verdict = row_verdict(row.claim, runs, config_columns, seeds, row.setting, alpha_k)
    if verdict is None:  # no run of these seeds tests the row (yet): an empty look
        nothing = Interval(math.nan, math.nan, math.nan, 0)
        verdict = Verdict(row.claim, None, nothing, "inconclusive", "no runs paired", [], "")
    look = Look(list(seeds), alpha_k, verdict)
    row.looks.append(look)
    if verdict.verdict != "inconclusive":
        row.stopped = STOP_SETTLED
    elif cannot_settle(verdict):
        row.stopped = STOP_CANNOT
    elif len(seeds) >= max_seeds:
        row.stopped = STOP_BUDGET
    return look


def settled_table(rows: Sequence[SettledRow], alpha: float) -> pd.DataFrame:
    """The claims table of a settled study: each row's verdict at its last look, the seeds it rests on, what
    that look could spend and why it stopped; p-values sequential (:func:`sequential_p`), then Holm's
    correction over the study (:func:`stability.analysis.verdicts.study_correction`)."""
    out = []
    for row in rows:
        if not row.looks:
            continue
        last = row.looks[-1].verdict
        record = last.row()
        alphas = [look.alpha for look in row.looks]
        record["p_value"] = sequential_p([look.verdict.p_value for look in row.looks], alphas, alpha)
        record["tost_p"] = sequential_p([look.verdict.tost_p for look in row.looks], alphas, alpha)
        record["looks"] = len(row.looks)
        record["look_alpha"] = alphas[-1]
        record["seeds_by_look"] = " → ".join(str(len(look.seeds)) for look in row.looks)
        record["stopped"] = _stop_text(row)
        if metric_of(row.claim).per == "run" and last.lr is not None:
            record["lr"] = last.lr
        out.append(record)
    return study_correction(pd.DataFrame(out), alpha) if out else pd.DataFrame()


def _stop_text(row: SettledRow) -> str:
    n = len(row.looks[-1].seeds)
    if row.stopped == STOP_SETTLED:
        return f"settled at look {len(row.looks)} ({n} seeds)"
    if row.stopped == STOP_BUDGET:
        return f"budget spent ({n} seeds)"
    if row.stopped == STOP_CANNOT:
        return f"{STOP_CANNOT}: {row.looks[-1].verdict.why}"
    return f"open after look {len(row.looks)} ({n} seeds)"
