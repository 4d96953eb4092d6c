"""p-values, equivalence, seeds needed and the study-wide correction, on fixed numbers and fabricated records."""

from __future__ import annotations

import math
from pathlib import Path

import fabricate as fab
import numpy as np
import pandas as pd
import pytest
from scipy import stats
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.weightstats import DescrStatsW

from stability.analysis import decisions
from stability.analysis.decisions import Evidence
from stability.analysis.intervals import PairedCounts
from stability.analysis.results import load_sweep
from stability.analysis.verdicts import claims_table, study_correction
from stability.report.claims_text import format_claims

LAPE = {"claim": "LaPE raises accuracy", "treatment": {"pos_embed": "lape"}, "metric": "final_val_acc",
        "direction": "increase", "min_effect": 0.01}


def _table(root: Path, gains: list[float], claim: dict) -> pd.DataFrame:
    for seed, gain in enumerate(gains):
        base = 0.90 + 0.002 * seed
        fab.write_record(root, seed, final_val_acc=base)
        fab.write_record(root, seed, pos_embed="lape", final_val_acc=base + gain)
    fab.write_claims(root, [claim])
    sweep = load_sweep(root)
    return claims_table(sweep.claims, sweep.finished, sweep.config_columns)


# -- p-values: the inverted interval ---------------------------------------------------------------------------
def test_a_continuous_p_value_is_the_t_test_against_the_minimal_effect() -> None:
    x = np.array([0.03, 0.01, 0.05, 0.02])
    assert decisions.p_value(Evidence("continuous", x), 1.0, 0.01) == pytest.approx(
        stats.ttest_1samp(x, 0.01).pvalue, rel=1e-12)
    assert decisions.p_value(Evidence("continuous", x), -1.0, 0.0) == pytest.approx(
        stats.ttest_1samp(-x, 0.0).pvalue, rel=1e-12)


@pytest.mark.parametrize("counts", [(0, 6, 4, 6), (1, 12, 9, 12), (2, 6, 3, 6), (0, 3, 3, 3)])
def test_a_rate_p_value_agrees_with_its_interval(counts: tuple[int, int, int, int]) -> None:
    """p < alpha exactly when the 1 - alpha Newcombe interval excludes the minimal effect."""
    evidence = Evidence("binary", np.empty(0), PairedCounts(*counts, seeds=["0", "1", "2"], pairs=3))
    p = decisions.p_value(evidence, -1.0, 0.0)
    for alpha in (0.01, 0.05, 0.2):
        ci, _ = evidence.interval(1 - alpha)
        excluded = ci.high < 0 or ci.low > 0
        assert (p < alpha) == excluded, (counts, alpha, p, ci)


def test_an_ordinal_p_value_is_the_sign_test() -> None:
    x = np.array([1.0, 1.0, 0.5, 1.0, 0.5, 1.0, -0.5])
    expected = stats.binomtest(6, 7, 0.5).pvalue
    assert decisions.p_value(Evidence("ordinal", x), 1.0, 0.0) == pytest.approx(expected, rel=1e-3)


# -- equivalence ---------------------------------------------------------------------------------------------
def test_tost_matches_statsmodels() -> None:
    x = np.array([0.001, -0.002, 0.003, 0.0, 0.002])
    assert decisions.tost_p(Evidence("continuous", x), 0.01) == pytest.approx(
        DescrStatsW(x).ttost_mean(-0.01, 0.01)[0], rel=1e-12)


def test_an_interval_inside_the_margin_is_equivalent(tmp_path: Path) -> None:
    claim = {**LAPE, "equivalence_margin": 0.01}
    [v] = _table(tmp_path, [0.001, -0.002, 0.002, 0.0, -0.001], claim).to_dict("records")
    assert v["verdict"] == "equivalent" and v["tost_p"] < 0.05
    assert -0.01 < v["eq_low"] < v["eq_high"] < 0.01
    assert "no effect larger" in v["why"]


def test_an_interval_crossing_the_margin_is_not_equivalent(tmp_path: Path) -> None:
    claim = {**LAPE, "equivalence_margin": 0.01}
    [v] = _table(tmp_path, [0.012, -0.009, 0.02, 0.0], claim).to_dict("records")
    assert v["verdict"] == "inconclusive" and v["tost_p"] > 0.05
    assert v["eq_high"] > 0.01


def test_without_a_margin_no_effect_is_still_contradicted(tmp_path: Path) -> None:
    [v] = _table(tmp_path, [0.001, -0.002, 0.002, 0.0, -0.001], LAPE).to_dict("records")
    assert v["verdict"] == "contradicted" and math.isnan(v["tost_p"])


# -- Holm over the study --------------------------------------------------------------------------------------
def test_holm_matches_statsmodels_on_fixed_p_values() -> None:
    p = [0.01, 0.04, 0.03, 0.005, float("nan"), 0.2]
    reject, adjusted = decisions.holm(p, 0.05)
    ref_reject, ref_adjusted, _, _ = multipletests([0.01, 0.04, 0.03, 0.005, 0.2], alpha=0.05, method="holm")
    assert list(reject[[0, 1, 2, 3, 5]]) == list(ref_reject) and not reject[4]
    assert np.allclose(adjusted[[0, 1, 2, 3, 5]], ref_adjusted) and math.isnan(adjusted[4])
    # by hand: sorted 0.005, 0.01, 0.03, 0.04, 0.2 against 0.05/5, 0.05/4, 0.05/3: the first two reject
    assert list(np.flatnonzero(reject)) == [0, 3]


def test_the_study_correction_keeps_only_verdicts_whose_test_survives() -> None:
    table = pd.DataFrame({"verdict": ["supported", "contradicted", "supported", "equivalent", "inconclusive"],
                          "p_value": [0.001, 0.02, 0.04, 0.3, float("nan")],
                          "tost_p": [float("nan"), float("nan"), float("nan"), 0.002, float("nan")]})
    out = study_correction(table, 0.05)
    # family of 5 tests: 0.001*5, 0.002*4 reject; 0.02*3 = 0.06 does not, and the step-down stops there
    assert list(out["verdict_holm"]) == ["supported", "inconclusive", "inconclusive", "equivalent", "inconclusive"]


# -- seeds needed ---------------------------------------------------------------------------------------------
def _supported_share(effect: float, sd: float, n: int, m: float, trials: int = 4000) -> float:
    """Over simulated studies of n seeds: how often the 95% t-interval's lower bound clears m."""
    rng = np.random.default_rng(0)
    x = rng.normal(effect, sd, size=(trials, n))
    half = stats.t.ppf(0.975, n - 1) * x.std(axis=1, ddof=1) / math.sqrt(n)
    return float(np.mean(x.mean(axis=1) - half > m))


def test_a_claim_that_needs_about_eight_seeds_gets_an_estimate_near_eight(tmp_path: Path) -> None:
    # three seeds with effect 0.04 and spread 0.025 against m = 0.01: standardised distance 1.2
    gains = [0.04 - 0.025, 0.04, 0.04 + 0.025]
    [v] = _table(tmp_path, gains, LAPE).to_dict("records")
    assert v["verdict"] == "inconclusive" and 7 <= v["seeds_needed"] <= 9
    # what "needs n seeds" means: studies of n seeds at this effect and spread settle it ~80% of the time
    share = _supported_share(0.04, 0.025, int(v["seeds_needed"]), 0.01)
    assert 0.72 <= share <= 0.9
    assert _supported_share(0.04, 0.025, 3, 0.01) < 0.4  # and three seeds usually do not
    assert format_claims(pd.DataFrame([v]))["seeds to settle"][0] == f"~{int(v['seeds_needed'])} (estimate)"


def test_an_effect_on_the_minimal_effect_needs_unboundedly_many_seeds() -> None:
    x = np.array([0.0, 0.02, 0.01])
    assert math.isinf(decisions.seeds_needed(Evidence("continuous", x), 1.0, 0.01, None, 0.95))


def test_seeds_needed_for_rates_and_ordinal_metrics_grow_as_the_evidence_weakens() -> None:
    seeds = [str(s) for s in range(3)]
    strong = Evidence("binary", np.empty(0), PairedCounts(0, 3, 3, 3, seeds, 3))
    weak = Evidence("binary", np.empty(0), PairedCounts(1, 3, 2, 3, seeds, 3))
    n_strong, n_weak = (decisions.seeds_needed(e, -1.0, 0.0, None, 0.95) for e in (strong, weak))
    assert 2 <= n_strong < n_weak < math.inf
    assert decisions.seeds_needed(Evidence("ordinal", np.array([1.0, 1.0, 1.0])), 1.0, 0.0, None, 0.95) >= 6
    assert decisions.seeds_needed(Evidence("ordinal", np.array([1.0, -1.0, 1.0])), 1.0, 0.0, None, 0.95) > 6


def test_a_control_that_did_not_converge_gets_no_estimate(tmp_path: Path) -> None:
    still_falling = [fab.L0 * (1 - i / 20) for i in range(16)]
    for seed, gain in enumerate([0.05, 0.06, 0.05]):
        fab.write_record(tmp_path, seed, final_val_acc=0.9, history=still_falling)
        fab.write_record(tmp_path, seed, pos_embed="lape", final_val_acc=0.9 + gain)
    fab.write_claims(tmp_path, [LAPE])
    sweep = load_sweep(tmp_path)
    table = claims_table(sweep.claims, sweep.finished, sweep.config_columns)
    assert math.isnan(table["seeds_needed"][0])
    assert format_claims(table)["seeds to settle"][0] == "more seeds will not settle it: train longer"
