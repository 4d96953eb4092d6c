"""The claims table as people read it: one line per verdict, with the study-wide verdict (Holm) beside it and,
for an inconclusive one, the seeds that would likely settle it (:mod:`stability.analysis.decisions`)."""

from __future__ import annotations

import math

import pandas as pd

from stability.analysis.decisions import percent
from stability.report.configs import is_finite
from stability.report.formatting import fmt_interval


def format_claims(table: pd.DataFrame) -> pd.DataFrame:
    """One line per verdict: the claim, where it was tested, the effect over seeds, the verdict and why, the
    verdict with the study's claims held together (Holm), and the seeds an inconclusive one would need."""
    rows = []
    for _, r in table.iterrows():
        digits = 1 if r["unit"] == "decades" else 3
        effect = fmt_interval(r["effect"], r["low"], r["high"], int(r["n_seeds"]), digits) \
            if is_finite(r["effect"]) else "no pairs"
        margin = f", equivalent within ±{r['margin']:g}" if is_finite(r.get("margin", math.nan)) else ""
        why = r["why"]
        if r["verdict"] == "equivalent" and is_finite(r.get("eq_low", math.nan)):
            why += f" ([{r['eq_low']:+.{digits}f}, {r['eq_high']:+.{digits}f}])"
        rows.append({
            "claim": r["claim"],
            "metric": f"{r['metric']} ({r['direction']} ≥ {r['min_effect']:g} {r['unit']}{margin})",
            "tested at": r["setting"],
            "effect": effect,
            "seeds": f"{int(r['n_seeds'])} ({r['seeds']})" if r["seeds"] else "0",
            "verdict": _verdict_text(r["verdict"]),
            "why": why,
            "held together": _held_together(r),
            "seeds to settle": seeds_to_settle(r),
            "control converged": r["control_converged"],
            **({"settled": _settled(r)} if "stopped" in r else {}),
        })
    return pd.DataFrame(rows)


def _settled(r: pd.Series) -> str:
    """After ``--settle``: why the row stopped, the seeds at each look, and the level of the interval shown (the
    last look's: ``1 - alpha_k``, not 95%)."""
    return (f"{r['stopped']}; seeds at each look {r['seeds_by_look']}; the interval is the last look's, at "
            f"{percent(1 - r['look_alpha'])} (alpha {r['look_alpha']:.2g} spent there)")


def _verdict_text(verdict: str) -> str:
    return verdict.upper() if verdict != "inconclusive" else "inconclusive"


def _held_together(r: pd.Series) -> str:
    """The Holm verdict, with the adjusted p-value of the test that decides it."""
    if "verdict_holm" not in r:
        return "–"
    p = r["tost_p_holm"] if r["verdict"] == "equivalent" else r["p_holm"]
    return _verdict_text(r["verdict_holm"]) + (f" (p={p:.2g})" if is_finite(p) else "")


def seeds_to_settle(r: pd.Series) -> str:
    """What the seeds-needed estimate says about an inconclusive verdict (empty for the others)."""
    if r["verdict"] != "inconclusive":
        return ""
    n = r.get("seeds_needed", math.nan)
    if is_finite(n):
        return f"~{int(n)} (estimate)"
    if isinstance(n, float) and math.isinf(n):
        return "more than 1000: the effect sits on the minimal effect"
    if "did not converge" in str(r["why"]):
        return "more seeds will not settle it: train longer"
    return "no estimate (no spread measured)" if int(r["n_seeds"]) >= 2 else "no estimate (fewer than 2 seeds)"
