"""stability.analysis.metrics (definitions, by hand) and stability.report (tables, files, CLI) on fabricated sweeps.

Tests in the "invariants" section take the ``any_sweep`` fixture and check properties that hold for any
sweep folder: the fabricated one, and the real ``stability sweep ablations/smoke.yaml`` of conftest.py.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import fabricate as fab
import numpy as np
import pandas as pd
import pytest

from stability.analysis import metrics as M
from stability.analysis.results import Sweep, load_sweep
from stability.errors import ConfigError
from stability.report import (
    Report,
    ReportOptions,
    build_report,
    effects_table,
    fmt_interval,
    fmt_mean_std,
    main,
    to_latex,
    write_report,
)
from stability.report.configs import config_label, distinct_values, format_cell, group_key, is_finite
from stability.report.output_folder import MANIFEST

# --------------------------------------------------------------------------------------------- metrics


def test_ema_is_bias_corrected() -> None:
    # first point is the value itself; second = (0.9*1*x0 + x1) / (0.9 + 1) with alpha 0.1
    out = M.ema([1.0, 3.0], alpha=0.1)
    assert out[0] == pytest.approx(1.0)
    assert out[1] == pytest.approx((0.9 * 1.0 + 3.0) / 1.9)


def test_loss_auc_is_mean_over_normalised_steps() -> None:
    steps = np.array([0, 10, 20])
    assert M.loss_auc(steps, [3.0, 2.0, 1.0]) == pytest.approx(2.0)
    # the same curve logged at 10x the steps has the same AUC (comparable across run lengths)
    assert M.loss_auc(steps * 10, [3.0, 2.0, 1.0]) == pytest.approx(2.0)
    # stopped at step 20 of 40: the rest counts at the cap -> (2*20 + 2.5*20 mean ... ) trapezoid by hand
    padded = M.loss_auc(steps, [3.0, 2.0, 1.0], cap=3.0, total_steps=40)
    assert padded == pytest.approx((2.0 * 20 + 3.0 * 20) / 40)


def test_steps_to_target_uses_the_smoothed_loss() -> None:
    steps = np.arange(6)
    losses = [2.0, 2.0, 0.1, 2.0, 2.0, 2.0]  # one lucky batch is not "reached"
    assert math.isnan(M.steps_to_target(steps, losses, 0.5, alpha=0.1))
    assert M.steps_to_target(steps, losses, 0.5, alpha=1.0) == 2  # no smoothing: the raw crossing
    assert M.steps_to_target(steps, [2.0, 1.0, 0.4, 0.3], 0.5, alpha=1.0) == 2


def test_loss_spikes_count_and_size() -> None:
    losses = np.full(20, 1.0)
    losses[8] = 3.0  # one-step spike, 3x its history
    losses[14:16] = 2.0  # two-step spike, reported once
    spikes = M.loss_spikes(np.arange(20) * 10, losses, factor=1.5, alpha=0.1)
    assert [(s.step, s.length) for s in spikes] == [(80, 1), (140, 2)]
    assert spikes[0].size == pytest.approx(3.0)
    assert spikes[1].peak_step == 140
    # the absolute floor: a ratio of 3 at a loss of 0.03 is batch noise, not a spike
    assert M.loss_spikes(np.arange(20), losses * 0.01, factor=1.5, min_excess=0.1) == []


def test_final_min_gap() -> None:
    assert M.final_min_gap([3.0, 1.0, 2.0], alpha=1.0) == pytest.approx(1.0)
    assert M.final_min_gap([3.0, 2.0, 1.0], alpha=1.0) == 0.0
    assert M.final_min_gap([3.0, 2.0, 1.0], alpha=1.0, final=2.3) == pytest.approx(1.3)


def test_curve_stats_of_a_diverged_run() -> None:
    steps = np.arange(10)
    losses = np.array([2.3, 2.0, 1.5, 1.0, 0.8, 0.7, 5.0, 50.0, np.inf, np.nan])
    stats = M.curve_stats(steps, losses, initial_loss=2.3, diverged=True, diverged_step=6, total_steps=9,
                          options=M.CurveOptions(ema_alpha=1.0))
    # the explosion from step 6 on is the divergence, not a spike; the final loss counts at l0
    assert stats["n_spikes"] == 0 and stats["max_spike"] == 1.0
    assert stats["final_smoothed"] == 2.3
    assert stats["final_min_gap"] == pytest.approx(2.3 - 0.7)
    finite_part = np.trapezoid([2.3, 2.0, 1.5, 1.0, 0.8, 0.7], dx=1.0)
    assert stats["auc"] == pytest.approx((finite_part + 2.3 * 4) / 9)
    assert math.isnan(stats["steps_to_target"])  # 0.25 x 2.3 = 0.575 is not reached before the divergence


def test_curve_stats_target_and_options() -> None:
    steps = np.arange(5)
    losses = [2.0, 1.0, 0.4, 0.3, 0.2]
    assert M.curve_stats(steps, losses, options=M.CurveOptions(ema_alpha=1.0))["steps_to_target"] == 2
    assert M.curve_stats(steps, losses, options=M.CurveOptions(ema_alpha=1.0, target_loss=0.25))[
        "steps_to_target"] == 4
    with pytest.raises(ConfigError, match="spike_factor"):
        M.CurveOptions(spike_factor=0.5)


def test_clamp_loss_counts_diverged_at_initial_loss() -> None:
    assert M.clamp_loss(0.5, 2.3) == 0.5
    assert M.clamp_loss(4.0, 2.3) == 2.3  # Wortsman: min(l, l0)
    assert M.clamp_loss(float("nan"), 2.3) == 2.3
    assert M.clamp_loss(None, 2.3) == 2.3
    assert M.clamp_loss(0.5, 2.3, diverged=True) == 2.3


def test_lr_sensitivity_by_hand() -> None:
    # two seeds over a 3-point grid; seed 1 diverges at the largest lr
    lrs = [1e-3, 1e-2, 1e-1] * 2
    losses = [1.0, 0.5, 1.5, 1.2, 0.6, float("inf")]
    seeds = [0, 0, 0, 1, 1, 1]
    diverged = [False, False, False, False, False, True]
    res = M.lr_sensitivity(lrs, losses, 2.0, diverged, seeds)
    s0 = np.mean([1.0, 0.5, 1.5]) - 0.5
    s1 = np.mean([1.2, 0.6, 2.0]) - 0.6
    assert res.value == pytest.approx((s0 + s1) / 2)
    assert res.std == pytest.approx(np.std([s0, s1], ddof=1))
    assert (res.n_seeds, res.n_lrs) == (2, 3)
    assert res.best_lr == 1e-2 and res.best_loss == pytest.approx(0.55)
    assert res.max_stable_lr == 1e-2
    # a model at chance everywhere scores 0 (the metric is invariant to the loss level)
    assert M.lr_sensitivity([1e-3, 1e-2], [2.0, 2.0], 2.0).value == 0.0


def test_t_interval_by_hand() -> None:
    ci = M.t_interval([0.03, 0.02, 0.05, 0.47])
    x = np.array([0.03, 0.02, 0.05, 0.47])
    half = 3.182446305284263 * x.std(ddof=1) / 2  # t_{0.975, 3}
    assert (ci.mean, ci.low, ci.high, ci.n) == pytest.approx((x.mean(), x.mean() - half, x.mean() + half, 4))
    one = M.t_interval([0.5])
    assert one.n == 1 and math.isnan(one.low)


def test_pairs_average_repeats_skip_unmatched_and_count_each_seed_once() -> None:
    runs = pd.DataFrame({"norm": ["ln", "cn", "cn", "ln", "cn", "ln", "cn", "ln", "cn"],
                         "wd": [1, 1, 1, 2, 3, 1, 1, 2, 2], "seed": [0, 0, 0, 0, 0, 1, 1, 1, 1],
                         "acc": [0.5, 0.6, 0.8, 0.4, 0.9, 0.5, 0.6, 0.5, 0.8]})
    pairs = M.paired_by_seed(runs[runs["norm"] == "cn"], runs[runs["norm"] == "ln"], "acc", ["wd"])
    assert len(pairs) == 3  # seed 0: wd 2 has no cn run, wd 3 no ln run; seed 1: wd 1 and 2
    assert pairs.loc[("0.0", "1.0"), "on"] == pytest.approx(0.7)  # the repeated cell is averaged first
    ci, per_seed = M.seed_effect(pairs)
    assert per_seed.to_dict() == pytest.approx({"0.0": 0.2, "1.0": 0.2})  # seed 1's two pairs: one value
    assert ci.n == 2 and ci.mean == pytest.approx(0.2)


def test_same_value_and_key_text_treat_missing_values_as_one() -> None:
    assert M.same_value(math.nan, None) and M.same_value(None, math.nan) and not M.same_value(math.nan, 0.0)
    assert M.same_value(1, 1.0) and not M.same_value("layernorm", "centernorm")
    assert M.key_text(None) == M.key_text(math.nan) == "NA"
    assert M.key_text(1) == M.key_text(np.float64(1.0)) and M.key_text(True) == "True" != M.key_text(1)


def test_edf_and_fraction_within() -> None:
    x, f = M.edf([0.3, 0.1, np.inf, 0.2])
    np.testing.assert_allclose(x, [0.0, 0.1, 0.2])
    np.testing.assert_allclose(f, [0.25, 0.5, 0.75])  # the diverged run keeps F below 1
    assert M.fraction_within([0.3, 0.1, np.inf, 0.2], 0.1) == 0.5
    assert M.fraction_within([np.inf], 0.1) == 0.0


# ------------------------------------------------------------------------------------ report on sweeps


@pytest.fixture(scope="module")
def sweep_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return fab.make_sweep(tmp_path_factory.mktemp("sweep"))


@pytest.fixture(scope="module")
def report(sweep_dir: Path) -> Report:
    return build_report(sweep_dir)


def _cfg_row(table: pd.DataFrame, norm: str, lr: float) -> pd.Series:
    hit = table[(table["norm"] == norm) & np.isclose(table["lr"].astype(float), lr)]
    assert len(hit) == 1
    return hit.iloc[0]


def test_configuration_table_numbers(report: Report) -> None:
    table = report.tables["configurations"]
    assert len(table) == 4  # norm x lr
    row = _cfg_row(table, "centernorm", 1e-3)
    assert row["best_val_acc_mean"] == pytest.approx(0.835)
    assert row["best_val_acc_std"] == pytest.approx(np.std([0.83, 0.84], ddof=1))
    assert (row["n_runs"], row["n_diverged"], row["not_finished"]) == (2, 0, "1 pending")
    div = _cfg_row(table, "layernorm", 1e-2)
    assert (div["n_runs"], div["n_diverged"], div["final_val_acc_n"]) == (2, 1, 1)
    # the diverged run's final loss counts at the initial loss
    finite_final = fab.loss_curve(*fab.RESUMED)[-1]
    assert div["final_loss_mean"] == pytest.approx((finite_final + fab.L0) / 2)
    assert div["n_spikes_mean"] == 0.5  # the resumed run's spike at step 30; none before the divergence
    text = report.text["configurations"]
    cell = text.loc[(text["norm"] == "layernorm") & (text["lr"] == "0.01")]
    assert cell["final val acc"].iloc[0] == "0.60 (n=1)"
    assert cell["diverged"].iloc[0] == "1/2"
    assert cell["best val acc"].iloc[0] == "0.500 ± 0.283"


def test_effects_answer_does_centernorm_help_per_lr_over_seeds(report: Report) -> None:
    table = report.tables["effects"]
    assert set(table["toggle"]) == {"norm"} and set(table["value"]) == {"centernorm"}
    at = {lr: g.set_index("metric") for lr, g in table.groupby("lr")}
    assert sorted(at) == [1e-3, 1e-2]
    best = fab.EXPECTED["effect_best_val_acc"]  # per (lr, seed): (1e-3, 0), (1e-3, 1), (1e-2, 0), (1e-2, 1)
    for lr, per_seed in ((1e-3, best[:2]), (1e-2, best[2:])):
        ci = M.t_interval(per_seed)  # one difference per seed: n = 2 seeds, not 4 pairs
        row = at[lr].loc["best_val_acc"]
        assert (row["mean"], row["low"], row["high"], row["n"]) == pytest.approx(tuple(ci))
    final = at[1e-2].loc["final_val_acc"]  # seed 1 diverged at 1e-2: no final accuracy, one seed left
    assert final["n"] == 1 and final["mean"] == pytest.approx(fab.EXPECTED["effect_final_val_acc"][2])
    failed = at[1e-2].loc["failed"]
    assert (failed["rate_off"], failed["rate_on"], failed["pairs"], failed["mean"]) == (0.5, 0.0, 2, -0.5)
    text = report.text["effects"].set_index("lr")
    assert text.loc["0.01", "on − off"] == "centernorm − layernorm"
    assert text.loc["0.01", "failed off → on"] == "1/2 → 0/2"
    assert text.loc["0.01", "final val acc"].endswith("(n=1)") and text.loc["0.01", "seeds"] == 2


def test_effects_three_valued_toggle_and_collinear_hparam(tmp_path: Path) -> None:
    rows = []
    for attention, acc in (("dot", 0.70), ("cosine", 0.75), ("qknorm", 0.72)):
        for warmup in (True, False):
            for seed in range(3):
                failed = attention == "dot" and not warmup and seed == 0
                rows.append({"attention": attention, "warmup": warmup,
                             "warmup_epochs": 2.0 if warmup else 0.0,  # moves with the warmup toggle
                             "seed": seed, "best_val_acc": acc + 0.01 * seed - (0.05 if not warmup else 0),
                             "diverged": failed, "status": "diverged" if failed else "completed",
                             "has_summary": True})
    runs = pd.DataFrame(rows)
    runs.index = [f"r{i}" for i in range(len(runs))]
    sweep = Sweep(path=tmp_path, runs=runs, toggles=["attention", "warmup"],
                  hparams=["warmup_epochs", "seed"], baselines={"attention": "dot", "warmup": True})
    gaps: list[str] = []
    table = effects_table(sweep, runs, ReportOptions(), gaps)
    acc = table[table["metric"] == "best_val_acc"].set_index(["toggle", "value"])
    assert acc.loc[("attention", "cosine"), "mean"] == pytest.approx(0.05)
    assert acc.loc[("attention", "qknorm"), "mean"] == pytest.approx(0.02)
    assert acc.loc[("attention", "cosine"), "n"] == 3  # 6 pairs (warmup x seed), 3 seeds
    # warmup_epochs is 0 exactly when warmup is off: it must not prevent pairing
    assert acc.loc[("warmup", False), "mean"] == pytest.approx(-0.05) and acc.loc[("warmup", False), "n"] == 3
    failed = table[table["metric"] == "failed"].set_index(["toggle", "value"])
    assert failed.loc[("warmup", False), "rate_on"] == pytest.approx(1 / 9)
    assert failed.loc[("warmup", False), "pairs"] == 9
    assert gaps == []


def test_lr_sensitivity_table(report: Report) -> None:
    table = report.tables["lr_sensitivity"].set_index("norm")
    for norm in ("layernorm", "centernorm"):
        value, std = fab.EXPECTED["lr_sens"][norm]
        assert table.loc[norm, "value"] == pytest.approx(value)
        assert table.loc[norm, "std"] == pytest.approx(std, abs=1e-12)
        assert table.loc[norm, "best_lr"] == fab.EXPECTED["best_lr"][norm]
        assert table.loc[norm, "max_stable_lr"] == fab.EXPECTED["max_stable_lr"][norm]
        assert table.loc[norm, "loss"] == "final_val_loss"


def test_divergence_and_edf_tables(report: Report) -> None:
    div = report.tables["divergence"]
    assert div["n"].sum() == 8 and div["k"].sum() == 1
    hit = div[(div["value"] == "layernorm") & np.isclose(div["lr"].astype(float), 1e-2)]
    assert (hit["k"].iloc[0], hit["n"].iloc[0], bool(hit["warmup"].iloc[0])) == (1, 2, True)
    wide = report.text["divergence"]
    assert list(wide.columns) == ["toggle", "value", "warmup", "lr=0.001", "lr=0.01"]
    edf = report.tables["edf"].set_index("norm")
    # layernorm errors 0.22, 0.20, 0.40 and one diverged; centernorm 0.19, 0.18, 0.28, 0.26
    assert edf.loc["layernorm", "best_err"] == pytest.approx(0.20)
    assert edf.loc["layernorm", "within_0.05"] == 0.5 and edf.loc["layernorm", "n_infinite"] == 1
    assert edf.loc["centernorm", "within_0.1"] == 1.0


def test_spikes_table_traces_the_counts(report: Report) -> None:
    spikes = report.tables["spikes"]
    assert len(spikes) == 1
    assert spikes["step"].iloc[0] == fab.SPIKE_STEP and spikes["size"].iloc[0] > 1.5


def test_gaps_name_every_unfinished_run(report: Report) -> None:
    gaps = "\n".join(report.gaps)
    for status in ("failed", "running", "incomplete", "pending"):
        names = report.sweep.runs.index[report.sweep.runs["status"] == status]
        assert all(n in gaps for n in names), status
    assert "out of memory" in gaps


def test_configuration_helpers(report: Report) -> None:
    sweep = report.sweep
    assert format_cell(0.0010) == "0.001" and format_cell(np.int64(3)) == "3" and format_cell(True) == "True"
    assert format_cell(math.nan) == format_cell(None) == "–"
    assert is_finite(np.float32(2.0)) and is_finite("1.5")
    assert not any(is_finite(v) for v in (None, math.nan, math.inf, "layernorm"))
    mixed = pd.Series([1.0, math.nan, 1, None, "a"], dtype=object)
    assert [format_cell(v) for v in distinct_values(mixed)] == ["1", "–", "a"]
    frame = pd.DataFrame({"norm": ["layernorm", "layernorm", "centernorm"], "lr": [1e-3, 0.001, 1e-3]})
    key = group_key(frame, ["norm", "lr", "absent"])
    assert key.iloc[0] == key.iloc[1] != key.iloc[2]
    assert (group_key(frame, []) == "").all()
    row = pd.Series({"norm": "centernorm", "lr": 0.01, "seed": 0})
    assert config_label(sweep, row) == "norm=centernorm,lr=0.01"
    assert config_label(sweep, row, columns=sweep.toggles) == "norm=centernorm"
    assert config_label(sweep, pd.Series({"norm": "layernorm", "lr": 0.01}), columns=sweep.toggles) == "baseline"


def test_plots_draw_dataframes_and_the_report_writes_its_figures(report: Report, tmp_path: Path) -> None:
    from stability.report import plots
    from stability.report.figures import write_figures

    finished = report.runs.loc[report.sweep.finished.index]
    fig = plots.divergence_curves(finished, report.curves, "norm", title="my runs")
    assert fig.get_suptitle() == "my runs: train/loss by norm (x = diverged)"
    assert plots.divergence_curves(finished, report.curves, None).get_suptitle() == \
        "train/loss by run (x = diverged)"
    written = write_figures(report, tmp_path)
    # 2 learning rates and 4 runs per configuration: too few for a curve against lr or an EDF, so neither is
    # drawn, and the gaps say why; the diverged and the failed run get their telemetry
    assert [p.name for p in written] == ["failure_map.png", "failure_map.pdf", "curves_norm.png", "curves_norm.pdf",
                                         "failure_telemetry.png", "failure_telemetry.pdf"]
    assert all(p.stat().st_size > 1000 for p in written)
    assert any("too few learning rates (2)" in g for g in report.gaps)
    assert any("EDF" in g and "too few runs (4)" in g for g in report.gaps)
    assert set(report.text["edf"]["within 0.01"]) == {"too few runs (4)"}


def test_formatting() -> None:
    assert fmt_mean_std(0.91234, 0.0041, 3, 3) == "0.912 ± 0.004"
    assert fmt_mean_std(0.91234, math.nan, 1, 3) == "0.91 (n=1)"
    assert fmt_mean_std(0.9, 0.01, 2, 2, n_expected=3) == "0.90 ± 0.01 (n=2)"
    assert fmt_interval(0.012, -0.004, 0.028, 5, 3) == "+0.012 [-0.004, +0.028]"
    assert fmt_interval(0.01, math.nan, math.nan, 1, 3) == "+0.01 (n=1)"  # one pair: no interval
    tex = to_latex(pd.DataFrame({"a_b": ["0.9 ± 0.1"]}), "Cap & more", "tab:x")
    assert r"\toprule" in tex and r"a\_b" in tex and r"0.9 $\pm$ 0.1" in tex and r"Cap \& more" in tex


# ------------------------------------------------------------------------------------------------- CLI


def test_main_writes_every_format_and_prints_the_main_table(sweep_dir: Path, tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "rep"
    assert main([str(sweep_dir), "--out", str(out)]) == 0
    printed = capsys.readouterr()
    assert "| norm" in printed.out and "0.60 (n=1)" in printed.out and "centernorm − layernorm" in printed.out
    assert "warning: 1 run(s) failed" in printed.err
    for name in ("configurations", "effects", "lr_sensitivity", "divergence", "edf", "runs"):
        for ext in ("md", "csv", "tex"):
            assert (out / f"{name}.{ext}").stat().st_size > 0, (name, ext)
    csv = pd.read_csv(out / "configurations.csv")
    assert len(csv) == 4 and csv["n_runs"].sum() == 8
    md = (out / "report.md").read_text()
    assert "## Gaps" in md and "CUDA out of memory" in md and "![curves_norm](plots/curves_norm.png)" in md
    for ext in ("png", "pdf"):
        assert (out / "plots" / f"curves_norm.{ext}").stat().st_size > 1000


def test_main_default_out_and_format_subset(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    sweep = fab.make_sweep(tmp_path / "s", unfinished=False)
    assert main([str(sweep), "--format", "csv", "--no-plots"]) == 0
    files = sorted(p.name for p in (sweep / "report").iterdir() if p.name != MANIFEST)
    assert files and all(f.endswith(".csv") for f in files)
    capsys.readouterr()
    assert main([str(sweep), "--format", "md,pdf"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --format") and "md, csv, tex, html" in err


def test_a_report_removes_what_an_earlier_report_left_and_only_that(tmp_path: Path) -> None:
    sweep = fab.make_sweep(tmp_path / "s", unfinished=False)
    out = tmp_path / "out"
    (out / "plots").mkdir(parents=True)
    stale = [out / "plots" / "lr_curves.png", out / "lipschitz.md", out / "claims.csv", out / "report.html"]
    mine = [out / "notes.txt", out / "plots" / "sketch.svg"]
    for path in stale + mine:
        path.write_text("from before")
    # the stale files are an earlier report's: its manifest lists them (the user's files are not in it)
    (out / MANIFEST).write_text(json.dumps({"files": [str(p.relative_to(out)) for p in stale]}))
    assert main([str(sweep), "--out", str(out), "--format", "md,csv", "--no-plots"]) == 0
    assert not any(p.exists() for p in stale)  # this sweep has no claims, no Lipschitz fields; no plots asked
    assert all(p.read_text() == "from before" for p in mine)
    assert (out / "report.md").is_file() and (out / "configurations.csv").is_file()


@pytest.mark.parametrize("case", ["not_a_sweep", "empty"])
def test_main_bad_folder_exits_2(tmp_path: Path, case: str, capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "x"
    target.mkdir()
    if case == "not_a_sweep":
        (target / "notes.txt").write_text("hello")
    assert main([str(target), "--no-plots"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: sweep folder") and err.count("\n") == 1


def test_main_all_failed_exits_1_with_the_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    sweep = fab.make_failed_sweep(tmp_path / "failed")
    assert main([str(sweep)]) == 1
    err = capsys.readouterr().err
    assert "all 3 runs failed" in err and "CUDA out of memory" in err
    runs = pd.read_csv(sweep / "report" / "runs.csv")  # the run list is still written
    assert len(runs) == 3 and set(runs["status"]) == {"failed"}
    assert not (sweep / "report" / "configurations.csv").exists()


def test_partial_report_single_lr_names_its_gaps(tmp_path: Path) -> None:
    sweep_dir = tmp_path / "one_lr"
    for i, (norm, seed) in enumerate([("layernorm", 0), ("centernorm", 0), ("layernorm", 1)]):
        fab.write_run(sweep_dir, norm, 1e-3, seed, "completed", f"{i:06x}")
    fab.write_run(sweep_dir, "centernorm", 1e-3, 1, "failed", "ffffff")
    report = build_report(sweep_dir)
    assert "lr_sensitivity" not in report.tables and "edf" not in report.tables
    gaps = "\n".join(report.gaps)
    assert "single learning rate" in gaps and "EDF" in gaps and "failed" in gaps
    effect = report.tables["effects"].set_index("metric").loc["best_val_acc"]
    assert effect["n"] == 1  # only seed 0 has both sides
    assert report.text["effects"]["best val acc"].iloc[0] == "+0.03 (n=1)"
    assert "0.83 (n=1)" in report.text["configurations"]["best val acc"].tolist()


# ------------------------------------------------------------------------------------------ invariants


@pytest.fixture(params=["fabricated", "smoke"])
def any_sweep(request: pytest.FixtureRequest) -> Path:
    """Sweep folders the invariants must hold on: the fabricated one, and the real smoke sweep that
    conftest.py runs once per session (`stability sweep ablations/smoke.yaml`; read-only)."""
    if request.param == "smoke":
        return request.getfixturevalue("smoke_sweep").out
    return request.getfixturevalue("sweep_dir")


def test_invariants(any_sweep: Path, tmp_path: Path) -> None:
    report = build_report(any_sweep)
    sweep = load_sweep(any_sweep)
    finished = sweep.finished
    assert set(report.tables["runs"]["run"]) == set(sweep.runs.index)  # nobody dropped
    cfg = report.tables["configurations"]
    assert cfg["n_runs"].sum() == len(finished)
    assert cfg["n_diverged"].sum() == int(finished["diverged"].sum())
    for col in ("best_val_acc_mean", "final_val_acc_mean"):
        values = cfg[col].dropna()
        assert ((values >= 0) & (values <= 1)).all()
    assert (cfg["auc_n"] <= cfg["n_runs"]).all()
    eff = report.tables["effects"]
    if len(eff):
        assert (eff["n"] <= len(finished) // 2).all()
        ok = eff.dropna(subset=["low"])
        assert ((ok["low"] <= ok["mean"]) & (ok["mean"] <= ok["high"])).all()
    if "lr_sensitivity" in report.tables:
        assert (report.tables["lr_sensitivity"]["value"].dropna() >= -1e-12).all()
    written = write_report(report, tmp_path, ["md", "csv"], plots=False)
    assert (tmp_path / "report.md") in written
    with pytest.raises(ConfigError, match="--format"):
        write_report(report, tmp_path, ["xlsx"])


def test_effects_text_leaves_out_cells_without_pairs(tmp_path: Path) -> None:
    # LaPE runs at one lr of two; CenterNorm only inside a bundle with post-norm: neither pairs everywhere.
    for seed in range(3):
        for lr in (1e-3, 1e-2):
            fab.write_record(tmp_path, seed, lr=lr, best_val_acc=0.8, final_val_acc=0.8)
        fab.write_record(tmp_path, seed, lr=1e-3, pos_embed="lape", best_val_acc=0.85, final_val_acc=0.85)
        fab.write_record(tmp_path, seed, lr=1e-3, norm="centernorm", norm_placement="post", best_val_acc=0.7,
                         final_val_acc=0.7)
    report = build_report(tmp_path)
    table = report.tables["effects"]
    assert set(table.loc[table["n"] == 0, "toggle"]) == {"pos_embed", "norm", "norm_placement"}  # the CSV keeps all
    text = report.text["effects"]
    assert list(zip(text["toggle"], text["lr"])) == [("pos_embed", "0.001")]
    assert text["best val acc"].iloc[0].startswith("+0.050")
    gaps = [g for g in report.gaps if "not in the effects table" in g]
    assert len(gaps) == 2 and all("bundle" in g for g in gaps)  # norm and norm_placement, never alone
