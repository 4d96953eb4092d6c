"""Each metric kind its statistic (stability.analysis.intervals), and the gates of a verdict, on fabricated run
records in the real format (config.yaml + summary.json, plan.json)."""

from __future__ import annotations

import math
from pathlib import Path

import fabricate as fab
import pytest
from scipy import stats
from statsmodels.stats.proportion import confint_proportions_2indep

from stability.analysis import intervals
from stability.analysis.results import load_sweep
from stability.analysis.verdicts import claims_table

LAPE = {"claim": "LaPE raises accuracy", "treatment": {"pos_embed": "lape"}, "metric": "final_val_acc",
        "direction": "increase", "min_effect": 0.01}
STILL_FALLING = [fab.L0 * (1 - i / 20) for i in range(16)]  # a training loss that has not converged


def _verdicts(sweep_dir: Path, claims: list[dict]) -> list[dict]:
    fab.write_claims(sweep_dir, claims)
    sweep = load_sweep(sweep_dir)
    return claims_table(sweep.claims, sweep.finished, sweep.config_columns).to_dict("records")


# -- binary: failure rates --------------------------------------------------------------------------------------
@pytest.mark.parametrize(("failed_on", "failed_off"), [(0, 3), (3, 0), (1, 2), (2, 1), (0, 0)])
def test_rate_intervals_are_newcombes_and_stay_in_bounds(tmp_path: Path, failed_on: int, failed_off: int) -> None:
    """Three seeds, one run per side each: 0/3 vs 3/3 failures is not an effect of exactly -1 with no doubt."""
    for seed in range(3):
        fab.write_record(tmp_path, seed, status="diverged" if seed < failed_off else "completed")
        fab.write_record(tmp_path, seed, norm="centernorm", status="diverged" if seed < failed_on else "completed")
    claim = {"claim": "centernorm fails less", "treatment": {"norm": "centernorm"}, "metric": "failure_rate",
             "direction": "decrease", "min_effect": 0.1}
    [v] = _verdicts(tmp_path, [claim])
    low, high = confint_proportions_2indep(failed_on, 3, failed_off, 3, method="newcomb", compare="diff",
                                           alpha=0.05)
    assert v["effect"] == pytest.approx((failed_on - failed_off) / 3)
    assert (v["low"], v["high"]) == pytest.approx((low, high))
    assert -1.0 <= v["low"] <= v["effect"] <= v["high"] <= 1.0
    assert v["high"] - v["low"] > 0.3 and v["n_seeds"] == 3


def test_rates_count_each_run_of_the_paired_cells_as_a_trial() -> None:
    """Two cells (weight decays) of one seed: four runs per side, so 4 trials each, not one averaged seed."""
    import pandas as pd

    rows = [{"seed": s, "weight_decay": wd, "failed": float(on and s == 0), "side": on}
            for s in range(2) for wd in (0.05, 0.1) for on in (True, False)]
    frame = pd.DataFrame(rows)
    counts = intervals.paired_counts(frame[frame["side"]], frame[~frame["side"]], "failed", ["weight_decay"])
    assert counts == intervals.PairedCounts(2, 4, 0, 4, ["0.0", "1.0"], 4)


# -- continuous: a zero-width interval ----------------------------------------------------------------------
def test_a_zero_width_interval_gives_no_verdict(tmp_path: Path) -> None:
    """Every seed +0.05 exactly: the t-interval has width zero, which measures no spread, so no verdict."""
    for seed in range(3):
        fab.write_record(tmp_path, seed, final_val_acc=0.90 + 0.01 * seed)
        fab.write_record(tmp_path, seed, pos_embed="lape", final_val_acc=0.95 + 0.01 * seed)
    [v] = _verdicts(tmp_path, [LAPE])
    assert v["effect"] == pytest.approx(0.05) and v["low"] == pytest.approx(v["high"])
    assert v["verdict"] == "inconclusive" and "zero width" in v["why"]


# -- ordinal: the largest stable lr -------------------------------------------------------------------------
LADDER = (1e-3, 3e-3, 1e-2, 3e-2, 1e-1)


def _ladder(root: Path, treatment_edges: list[float], control_edge: float = 3e-3) -> Path:
    """Per seed, the baseline trains up to ``control_edge`` and the conv stem up to that seed's edge."""
    for seed, edge in enumerate(treatment_edges):
        for lr in LADDER:
            for stem, last in (("patchify", control_edge), ("conv", edge)):
                fab.write_record(root, seed, lr=lr, stem=stem, status="completed" if lr <= last else "diverged",
                                 final_val_acc=0.9 - seed * 0.01 if lr <= last else None,
                                 final_val_loss=0.3 + 0.01 * seed)
    return root


STABLE_LR = {"claim": "the conv stem trains at larger lrs", "treatment": {"stem": "conv"},
             "metric": "largest_stable_lr", "direction": "increase", "min_effect": 0.3}


@pytest.mark.parametrize(("n", "coverage"), [(3, "75%"), (5, "93.7%")])  # 1 - 2^(1-n), rounded down
def test_an_ordinal_claim_with_too_few_agreeing_seeds_is_inconclusive(tmp_path: Path, n: int, coverage: str) -> None:
    [v] = _verdicts(_ladder(tmp_path, [1e-2] * n), [STABLE_LR])
    assert v["effect"] == pytest.approx(math.log10(1e-2 / 3e-3)) and v["n_seeds"] == n
    assert v["verdict"] == "inconclusive"
    assert v["why"] == f"{n} seeds bound an ordinal effect with at most {coverage} confidence; 95% needs 6"


def test_an_ordinal_claim_with_six_seeds_can_be_supported(tmp_path: Path) -> None:
    """Four seeds gain half a decade, two a full one: the effect is the median, the interval [min, max]."""
    [v] = _verdicts(_ladder(tmp_path, [1e-2, 1e-2, 3e-2, 1e-2, 3e-2, 1e-2]), [STABLE_LR])
    half = math.log10(1e-2 / 3e-3)
    assert v["effect"] == pytest.approx(half)  # the median, not the mean (0.68)
    assert (v["low"], v["high"]) == pytest.approx((half, 1.0))
    assert v["n_seeds"] == 6 and v["verdict"] == "supported"
    assert v["control_converged"] == ""  # a failure edge is a result: no convergence gate


def test_six_agreeing_seeds_still_give_no_ordinal_verdict(tmp_path: Path) -> None:
    [v] = _verdicts(_ladder(tmp_path, [1e-2] * 6), [STABLE_LR])
    assert v["verdict"] == "inconclusive" and "zero width" in v["why"]


@pytest.mark.parametrize(("n", "k"), [(5, 0), (6, 1), (8, 1), (9, 2), (10, 2), (20, 6)])
def test_the_median_interval_takes_the_largest_rank_that_covers(n: int, k: int) -> None:
    assert intervals.median_rank(n) == k
    if k:
        assert 1 - 2 * stats.binom.cdf(k - 1, n, 0.5) >= 0.95 > 1 - 2 * stats.binom.cdf(k, n, 0.5)
    ci, coverage = intervals.median_interval(list(range(n)), 0.95)
    assert (ci.low, ci.high) == (max(k, 1) - 1, n - max(k, 1))
    assert coverage == pytest.approx(1 - 2 * 0.5 ** n if k <= 1 else 1 - 2 * stats.binom.cdf(k - 1, n, 0.5))
    assert intervals.seeds_for_median(0.95) == 6 and intervals.seeds_for_median(0.99) == 8


# -- gates ----------------------------------------------------------------------------------------------------
def test_control_converged_is_shown_only_for_metrics_it_gates(tmp_path: Path) -> None:
    for seed in range(3):
        fab.write_record(tmp_path, seed, final_val_acc=0.90 + 0.01 * seed, max_attn_logit=10.0 + seed,
                         history=STILL_FALLING)
        fab.write_record(tmp_path, seed, pos_embed="lape", final_val_acc=0.95 + 0.02 * seed,
                         max_attn_logit=20.0 + 3 * seed)
    logit = {**LAPE, "metric": "max_attn_logit", "min_effect": 0.1}
    rate = {**LAPE, "metric": "failure_rate", "direction": "decrease", "min_effect": 0.1}
    acc, v_logit, v_rate = _verdicts(tmp_path, [LAPE, logit, rate])
    assert acc["control_converged"] == "0/3" and acc["verdict"] == "inconclusive"
    assert v_logit["control_converged"] == "" == v_rate["control_converged"]
    assert v_logit["verdict"] == "supported"  # the unconverged control does not block a metric it does not gate


def test_the_convergence_gate_takes_each_seeds_best_lr(tmp_path: Path) -> None:
    """Averaged over seeds the control does best at 1e-3, where it converged; but seed 0 does best at 1e-2,
    where it did not: that seed's best run stopped early, so accuracy claims there get no verdict."""
    for seed in range(3):
        fab.write_record(tmp_path, seed, lr=1e-3, final_val_acc=0.90)
        fab.write_record(tmp_path, seed, lr=1e-2, final_val_acc=0.95 if seed == 0 else 0.5,
                         history=STILL_FALLING if seed == 0 else None)
        for lr in (1e-3, 1e-2):
            fab.write_record(tmp_path, seed, lr=lr, pos_embed="lape", final_val_acc=0.96 + 0.01 * seed)
    [v] = _verdicts(tmp_path, [{**LAPE, "where": {"lr": 1e-3}}])
    assert v["control_converged"] == "2/3 at each seed's best lr (0.001, 0.01)"
    assert v["verdict"] == "inconclusive" and "did not converge" in v["why"]


@pytest.mark.parametrize("metric", ["lr_sensitivity", "largest_stable_lr"])
def test_lr_metrics_need_three_learning_rates(tmp_path: Path, metric: str) -> None:
    for seed in range(3):
        for lr in (1e-3, 1e-2):
            fab.write_record(tmp_path, seed, lr=lr, final_val_loss=0.3 + 0.05 * seed * (lr > 5e-3))
            fab.write_record(tmp_path, seed, lr=lr, stem="conv", final_val_loss=0.3)
    claim = {"claim": "the conv stem is less sensitive", "treatment": {"stem": "conv"}, "metric": metric,
             "direction": "decrease", "min_effect": 0.0}
    [v] = _verdicts(tmp_path, [claim])
    assert v["verdict"] == "inconclusive" and v["n_seeds"] == 0
    assert v["why"].startswith("too few runs (fewer than 3 learning rates)")
