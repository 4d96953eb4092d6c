"""Robust summaries (stability.analysis.robust): IQM, probability of improvement, stratified bootstrap, the flag."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from stability.analysis import robust as R
from stability.analysis.metrics import t_interval
from stability.errors import ConfigError

BASE = {"norm": "layernorm"}
BASELINES = {"norm": "layernorm", "pos_embed": "default"}


def _iqm_by_hand(x: list[float]) -> float:
    s = sorted(x)
    q = len(s) // 4
    return sum(s[q:len(s) - q]) / (len(s) - 2 * q)


def _brute_p(x: list[float], y: list[float]) -> float:
    wins = sum(1.0 if a > b else 0.5 if a == b else 0.0 for a in x for b in y)
    return wins / (len(x) * len(y))


def _runs(samples: dict[str, list[float | None]], lr: float = 0.01, status: dict | None = None) -> pd.DataFrame:
    """A run table as a Sweep holds it: one row per run (norm x seed), accuracy None for a failed run."""
    rows = []
    for norm, values in samples.items():
        for seed, v in enumerate(values):
            st = (status or {}).get((norm, seed), "completed" if v is not None else "diverged")
            rows.append({"run": f"{norm}-{lr}-{seed}", "status": st, "norm": norm, "pos_embed": "default",
                         "lr": lr, "seed": seed, "num_classes": 10, "test_acc": math.nan if v is None else v})
    return pd.DataFrame(rows).set_index("run", drop=False)


# -- the statistics -------------------------------------------------------------------------------------------
def test_iqm_is_scipys_trimmed_mean_and_the_middle_half_by_hand() -> None:
    x = [0.91, 0.10, 0.93, 0.88, 0.95, 0.90, 0.92, 0.60]  # n = 8: the middle half is 4 values
    assert R.iqm(x) == pytest.approx(stats.trim_mean(x, 0.25))
    assert R.iqm(x) == pytest.approx(_iqm_by_hand(x)) == pytest.approx((0.90 + 0.91 + 0.92 + 0.88) / 4)
    odd = [3.0, 1.0, 7.0, 2.0, 100.0, 5.0, 4.0]
    assert R.iqm(odd) == pytest.approx(stats.trim_mean(odd, 0.25))
    assert R.iqm(odd) < np.mean(odd)  # the outlier 100 is cut
    assert math.isnan(R.iqm([]))


def test_probability_of_improvement_is_the_brute_force_count_with_ties_half() -> None:
    x = [0.90, 0.85, 0.85, 0.70, 0.95]
    y = [0.85, 0.80, 0.90, 0.60]
    assert R.probability_of_improvement(x, y) == pytest.approx(_brute_p(x, y))
    assert _brute_p(x, y) == pytest.approx(13.5 / 20)  # hand count: 4 + 2.5 + 2.5 + 1 + 3.5 wins of 20 pairs
    assert R.probability_of_improvement(x, x) == pytest.approx(0.5)
    assert R.probability_of_improvement([0.3, 0.3, 0.3], [0.3, 0.3]) == pytest.approx(0.5)
    # lower is better (a loss): improvement is X < Y
    assert R.probability_of_improvement(x, y, higher_is_better=False) == pytest.approx(_brute_p(y, x))
    assert R.probability_of_improvement([1.0, 2.0], [0.0]) == 1.0


def test_bootstrap_intervals_contain_the_estimate_and_are_reproducible() -> None:
    rng = np.random.default_rng(3)
    x, y = rng.normal(0.85, 0.02, 6), rng.normal(0.83, 0.02, 5)
    opts = R.BootstrapOptions(n_resamples=2000, seed=7)
    for ci in (R.iqm_interval(x, opts), R.iqm_difference_interval(x, y, opts), R.improvement_interval(x, y,
                                                                                                       options=opts)):
        assert ci.low <= ci.mean <= ci.high and ci.low < ci.high
    assert R.iqm_interval(x, opts) == R.iqm_interval(x, R.BootstrapOptions(seed=7))
    assert R.improvement_interval(x, y, options=opts) == R.improvement_interval(x, y, options=opts)
    assert R.iqm_interval(x, opts) != R.iqm_interval(x, R.BootstrapOptions(seed=8))  # the seed is used
    assert R.improvement_interval(x, y, options=opts).mean == pytest.approx(_brute_p(list(x), list(y)))


def test_bootstrap_intervals_narrow_with_more_seeds() -> None:
    """The same spread of values over 4 seeds and over 64 (each value 16 times): about a quarter of the width."""
    few, ref_few = np.array([0.78, 0.80, 0.81, 0.83]), np.array([0.77, 0.79, 0.80, 0.82])
    many, ref_many = np.tile(few, 16), np.tile(ref_few, 16)

    def width(ci: R.M.Interval) -> float:
        return ci.high - ci.low

    assert width(R.iqm_interval(many)) < 0.5 * width(R.iqm_interval(few))
    assert width(R.improvement_interval(many, ref_many)) < 0.5 * width(R.improvement_interval(few, ref_few))
    assert width(R.iqm_difference_interval(many, ref_many)) < 0.5 * width(R.iqm_difference_interval(few, ref_few))


def test_one_value_gives_no_interval() -> None:
    ci = R.iqm_interval([0.9])
    assert ci.mean == 0.9 and math.isnan(ci.low) and math.isnan(ci.high) and ci.n == 1
    assert math.isnan(R.improvement_interval([0.9], [0.8, 0.7]).low)


def test_welch_difference_is_scipys_and_zero_width_without_spread() -> None:
    x, y = [0.90, 0.92, 0.91, 0.95], [0.85, 0.84, 0.88]
    ci = R.welch_difference(x, y)
    ref = stats.ttest_ind(x, y, equal_var=False).confidence_interval(0.95)
    assert (ci.low, ci.high) == pytest.approx((ref.low, ref.high)) and ci.mean == pytest.approx(np.mean(x) - np.mean(y))
    flat = R.welch_difference([0.9, 0.9, 0.9], [0.8, 0.8, 0.8])
    assert flat.low == flat.high == pytest.approx(0.1)


def test_options_are_checked() -> None:
    with pytest.raises(ConfigError, match="n_resamples: got 0"):
        R.BootstrapOptions(n_resamples=0)
    with pytest.raises(ConfigError, match="confidence: got 1.5"):
        R.BootstrapOptions(confidence=1.5)


# -- t vs bootstrap ---------------------------------------------------------------------------------------------
def _outlier_case() -> tuple[np.ndarray, np.ndarray]:
    """12 seeds each; the treatment beats the baseline by 0.06 on 11 seeds, and its 12th seed diverged (chance)."""
    rng = np.random.default_rng(1)
    base = 0.80 + 0.01 * rng.standard_normal(12)
    treat = np.r_[0.86 + 0.005 * rng.standard_normal(11), 0.10]
    return treat, base


def test_flag_fires_when_an_outlier_seed_hides_the_effect_from_the_t_interval() -> None:
    treat, base = _outlier_case()
    diff_t, diff_boot = R.welch_difference(treat, base), R.iqm_difference_interval(treat, base)
    assert diff_t.low < 0 < diff_t.high  # the mean difference: nothing to see
    assert diff_boot.low > 0.04  # the IQM difference: the effect, clearly
    verdict = R.disagreement(t_interval(treat), R.iqm_interval(treat), diff_t, diff_boot)
    assert verdict == R.BOOTSTRAP_ONLY


def test_flag_stays_quiet_on_well_behaved_seeds() -> None:
    rng = np.random.default_rng(2)
    base, treat = 0.80 + 0.01 * rng.standard_normal(12), 0.86 + 0.01 * rng.standard_normal(12)
    assert R.disagreement(t_interval(treat), R.iqm_interval(treat), R.welch_difference(treat, base),
                          R.iqm_difference_interval(treat, base)) == R.AGREE
    small = [0.90, 0.91, 0.92, 0.93]  # 4 seeds, no reference: the level rule alone
    assert R.disagreement(t_interval(small), R.iqm_interval(small)) == R.AGREE


def test_flag_fires_when_the_mean_leaves_the_bulk_of_many_seeds() -> None:
    """Rule 2: 90 good seeds and 10 at chance: the mean's tight interval sits below the IQM's."""
    rng = np.random.default_rng(4)
    x = np.r_[0.90 + 0.002 * rng.standard_normal(90), np.full(10, 0.10)]
    level_t, level_boot = t_interval(x), R.iqm_interval(x)
    assert level_t.high < level_boot.low
    assert R.disagreement(level_t, level_boot) == R.APART
    assert R.overlap_fraction(level_t, level_boot) == 0.0


def test_overlap_fraction() -> None:
    i = R.M.Interval
    assert R.overlap_fraction(i(0, 0, 1, 3), i(0, 0.5, 0.7, 3)) == pytest.approx(1.0)
    assert R.overlap_fraction(i(0, 0, 1, 3), i(0, 0.8, 1.8, 3)) == pytest.approx(0.2)
    assert R.overlap_fraction(i(0, 0.5, 0.5, 3), i(0, 0, 1, 3)) == 1.0  # zero width inside
    assert R.overlap_fraction(i(0, 2, 2, 3), i(0, 0, 1, 3)) == 0.0
    assert R.disagreement(i(0, math.nan, math.nan, 1), i(0, 0, 1, 2)) == ""


# -- the table of configurations --------------------------------------------------------------------------------
def test_summary_scores_a_diverged_run_at_chance_and_counts_it() -> None:
    runs = _runs({"layernorm": [0.90, 0.91, 0.92, 0.93], "centernorm": [0.94, None, 0.95, 0.96],
                  "rmsnorm": [0.90, 0.90, 0.90, 0.90]})
    runs.loc["rmsnorm-0.01-3", "status"] = "failed"  # raised: not a result
    runs.loc["rmsnorm-0.01-2", "test_acc"] = math.nan  # completed without the metric: left out and counted
    s = R.robust_summary(runs, ["norm", "pos_embed", "lr"], BASELINES, "test_acc").set_index("norm")
    c = s.loc["centernorm"]
    values = [0.94, 0.10, 0.95, 0.96]  # the diverged seed at 1/num_classes
    assert (c["n_runs"], c["n_failed"], c["n_seeds"], c["n_missing"]) == (4, 1, 4, 0)
    assert c["mean"] == pytest.approx(np.mean(values)) and c["iqm"] == pytest.approx(stats.trim_mean(values, 0.25))
    assert c["p_improve"] == pytest.approx(_brute_p(values, [0.90, 0.91, 0.92, 0.93]))
    r = s.loc["rmsnorm"]
    assert (r["n_runs"], r["n_failed"], r["n_missing"], r["n_seeds"]) == (3, 0, 1, 2)
    base = s.loc["layernorm"]
    assert base["is_reference"] and math.isnan(base["p_improve"]) and base["t_vs_bootstrap"] == R.AGREE
    assert set(s["reference"]) == {base["key"]} and s["n_resamples"].eq(2000).all()


def test_each_configuration_is_compared_with_the_baseline_at_its_own_lr() -> None:
    runs = pd.concat([_runs({"layernorm": [0.90, 0.91, 0.92], "centernorm": [0.95, 0.96, 0.97]}, lr=0.01),
                      _runs({"layernorm": [0.50, 0.52, 0.51], "centernorm": [0.40, 0.41, 0.42]}, lr=0.1)])
    s = R.robust_summary(runs, ["norm", "lr"], BASELINES, "test_acc").set_index(["norm", "lr"])
    assert s.loc[("centernorm", 0.01), "reference"] == s.loc[("layernorm", 0.01), "key"]
    assert s.loc[("centernorm", 0.01), "p_improve"] == 1.0
    assert s.loc[("centernorm", 0.1), "p_improve"] == 0.0  # worse than its own lr's baseline, not 0.01's


def test_summary_of_a_loss_counts_lower_as_better() -> None:
    runs = _runs({"layernorm": [0.5, 0.6, 0.7], "centernorm": [0.3, 0.35, 0.4]}).rename(
        columns={"test_acc": "final_val_loss"})
    runs["initial_loss"] = math.log(10)
    s = R.robust_summary(runs, ["norm"], BASELINES, "final_val_loss").set_index("norm")
    assert s.loc["centernorm", "p_improve"] == 1.0 and not s.loc["centernorm", "higher_is_better"]
