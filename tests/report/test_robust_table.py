"""The "Robust summaries" table (stability.report.robust_table) on fabricated sweeps in the real record format."""

from __future__ import annotations

from pathlib import Path

import fabricate as fab
import numpy as np
import pytest
from scipy import stats

from stability.analysis.results import load_sweep
from stability.report.robust_table import format_robust, robust_markdown, robust_table

BASE = [0.90, 0.91, 0.92, 0.93]
CENTERNORM = [0.94, 0.95, 0.95, 0.96]
LAPE = [0.92, 0.93, None, 0.94]  # seed 2 diverged: no accuracy


def _sweep(root: Path, configs: dict[str, list[float | None]]) -> Path:
    """One run record per configuration and seed; ``None`` is a diverged run (status diverged, no accuracy)."""
    toggles = {"baseline": {}, "centernorm": {"norm": "centernorm"}, "lape": {"pos_embed": "lape"},
               "conv": {"stem": "conv"}}
    for name, accs in configs.items():
        for seed, acc in enumerate(accs):
            fab.write_record(root, seed, test_acc=acc, final_val_acc=acc, **toggles[name],
                             status="completed" if acc is not None else "diverged",
                             **({"diverged_step": 3} if acc is None else {}))
    return root


def test_three_configurations_by_four_seeds_with_one_diverged_run(tmp_path: Path) -> None:
    sweep = load_sweep(_sweep(tmp_path, {"baseline": BASE, "centernorm": CENTERNORM, "lape": LAPE}))
    table = robust_table(sweep)
    assert table is not None and len(table) == 3
    assert table["configuration"].iloc[0] == "baseline" and table["is_reference"].iloc[0]
    rows = table.set_index("configuration")
    lape = rows.loc["pos_embed=lape"]
    scored = [0.92, 0.93, 0.10, 0.94]  # the diverged run counts at chance, 1/10 (as the verdicts count it)
    assert (lape["n_runs"], lape["n_failed"], lape["n_seeds"], lape["n_missing"]) == (4, 1, 4, 0)
    assert lape["mean"] == pytest.approx(np.mean(scored))
    assert lape["iqm"] == pytest.approx(stats.trim_mean(scored, 0.25)) == pytest.approx((0.92 + 0.93) / 2)
    assert lape["p_improve"] == pytest.approx(10 / 16)  # 0.92 > 1, 0.93 > 2 and ties one, 0.94 > 3, 0.10 > 0
    assert rows.loc["norm=centernorm", "p_improve"] == 1.0 and rows.loc["norm=centernorm", "n_failed"] == 0
    assert (rows["reference_label"] == "baseline").all() and (rows["metric"] == "test_acc").all()
    assert rows.loc["norm=centernorm", "iqm_low"] <= rows.loc["norm=centernorm", "iqm"] \
        <= rows.loc["norm=centernorm", "iqm_high"]

    text = format_robust(table).set_index("configuration")
    assert text.loc["pos_embed=lape", "failed"] == "1/4" and text.loc["baseline", "failed"] == "0/4"
    assert text.loc["baseline", "P(better than reference)"] == "reference"
    assert text.loc["pos_embed=lape", "mean [95% t]"].startswith("0.723 [")
    assert text.loc["pos_embed=lape", "P(better than reference)"].startswith("0.62 [")
    md = robust_markdown(table)
    assert md.startswith("## Robust summaries\n") and "2,000 resamples" in md and "counts at chance" in md
    assert "| pos_embed=lape" in md and "test_acc" in md


def test_the_table_is_reproducible(tmp_path: Path) -> None:
    sweep = load_sweep(_sweep(tmp_path, {"baseline": BASE, "centernorm": CENTERNORM, "lape": LAPE}))
    first, second = robust_table(sweep), robust_table(sweep)
    assert first is not None and second is not None
    assert first.drop(columns=["configuration"]).equals(second.drop(columns=["configuration"]))


def test_no_table_for_two_configurations_or_two_seeds(tmp_path: Path) -> None:
    two = load_sweep(_sweep(tmp_path / "two", {"baseline": BASE, "centernorm": CENTERNORM}))
    assert robust_table(two) is None
    short = load_sweep(_sweep(tmp_path / "short", {"baseline": BASE[:2], "centernorm": CENTERNORM[:2],
                                                   "lape": LAPE[:2]}))
    assert robust_table(short) is None


def test_a_configuration_with_too_few_seeds_is_listed_as_such(tmp_path: Path) -> None:
    sweep = load_sweep(_sweep(tmp_path, {"baseline": BASE, "centernorm": CENTERNORM, "lape": LAPE,
                                         "conv": [0.8, 0.81]}))
    table = robust_table(sweep)
    assert table is not None and len(table) == 4
    text = format_robust(table).set_index("configuration")
    assert text.loc["stem=conv", "t vs bootstrap"] == "too few seeds"
    assert text.loc["stem=conv", "IQM [95% bootstrap]"].endswith("(n=2)")
    assert text.loc["stem=conv", "runs"] == "2" and "seeds" not in text  # a seed per run: no seeds column


def test_an_outlier_seed_is_flagged_in_the_report(tmp_path: Path) -> None:
    """12 seeds: centernorm beats the baseline by 0.06 on 11 of them and diverged on the 12th. The t-interval of
    the mean difference spans zero, the IQM difference's bootstrap interval does not: the row says they differ."""
    rng = np.random.default_rng(1)
    base = list(np.round(0.80 + 0.01 * rng.standard_normal(12), 4))
    treat = [*np.round(0.86 + 0.005 * rng.standard_normal(11), 4), None]
    lape = list(np.round(0.81 + 0.01 * rng.standard_normal(12), 4))
    table = robust_table(load_sweep(_sweep(tmp_path, {"baseline": base, "centernorm": treat, "lape": lape})))
    assert table is not None
    rows = table.set_index("configuration")
    assert rows.loc["norm=centernorm", "disagree"] and not rows.loc["pos_embed=lape", "disagree"]
    assert rows.loc["norm=centernorm", "diff_t_low"] < 0 < rows.loc["norm=centernorm", "diff_iqm_low"]
    text = format_robust(table).set_index("configuration")
    assert text.loc["norm=centernorm", "t vs bootstrap"] == "DIFFER: bootstrap excludes 0, t does not"
    assert text.loc["pos_embed=lape", "t vs bootstrap"] == "agree"
    assert "1 of 3 configuration(s) flagged" in robust_markdown(table)


def test_without_a_baseline_run_the_first_configuration_is_the_reference(tmp_path: Path) -> None:
    sweep = load_sweep(_sweep(tmp_path, {"centernorm": CENTERNORM, "lape": LAPE, "conv": BASE}))
    table = robust_table(sweep)
    assert table is not None
    assert table["is_reference"].sum() == 1 and table["reference_label"].nunique() == 1
    ref = table.loc[table["is_reference"], "configuration"].iloc[0]
    assert (table["reference_label"] == ref).all()
    assert table.loc[~table["is_reference"], "p_improve"].notna().all()
