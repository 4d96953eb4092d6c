"""The report's failure-rate change (Newcombe's interval, as the claims get) and its LR sensitivity table (too few
learning rates say so), on fabricated run records in the real format."""

from __future__ import annotations

from pathlib import Path

import fabricate as fab
import pytest
from statsmodels.stats.proportion import confint_proportions_2indep

from stability.report import build_report
from stability.report.markdown import definitions


def test_the_failure_rate_change_has_newcombes_interval(tmp_path: Path) -> None:
    """Centernorm fails in 0 of 3 seeds, layernorm in 3 of 3: a t-interval over seeds says [-1, -1]."""
    for seed in range(3):
        fab.write_record(tmp_path, seed, status="diverged", best_val_acc=0.1, final_val_acc=None)
        fab.write_record(tmp_path, seed, norm="centernorm", best_val_acc=0.8 + 0.01 * seed,
                         final_val_acc=0.8 + 0.01 * seed)
    report = build_report(tmp_path)
    failed = report.tables["effects"].set_index("metric").loc["failed"]
    low, high = confint_proportions_2indep(0, 3, 3, 3, method="newcomb", compare="diff", alpha=0.05)
    assert (failed["mean"], failed["low"], failed["high"]) == pytest.approx((-1.0, low, high))
    assert -1.0 <= failed["low"] < failed["high"] < 0 and failed["n"] == 3
    assert (failed["k_off"], failed["n_off"], failed["k_on"], failed["n_on"]) == (3, 3, 0, 3)
    text = report.text["effects"].iloc[0]
    assert text["failed off → on"] == "3/3 → 0/3"
    assert text["failure rate on − off"] == f"-1.000 [-1.000, {high:+.3f}]"
    assert any("Newcombe" in line for line in definitions())


def test_a_configuration_run_at_one_lr_has_too_few_runs_for_lr_sensitivity(tmp_path: Path) -> None:
    """The baseline at three lrs has a sensitivity; LaPE, run at one lr, has none (not 0.000 ± 0.000)."""
    for seed in range(3):
        for lr, loss in ((1e-3, 0.5), (3e-3, 0.4), (1e-2, 0.9)):
            fab.write_record(tmp_path, seed, lr=lr, final_val_loss=loss + 0.01 * seed, final_val_acc=0.8)
        fab.write_record(tmp_path, seed, lr=3e-3, pos_embed="lape", final_val_loss=0.35, final_val_acc=0.85)
    report = build_report(tmp_path)
    table = report.tables["lr_sensitivity"].set_index("pos_embed")
    assert table.loc["lape", "too_few_lrs"] and not table.loc["default", "too_few_lrs"]
    text = report.text["lr_sensitivity"].set_index("pos_embed")["LR sensitivity"]
    assert text["lape"] == "too few runs (1 learning rate)"
    assert text["default"].startswith(f"{table.loc['default', 'value']:.3f} ± ")
