"""The report's Lipschitz table, its upper >= lower check and the certified-accuracy figure, on fabricated runs.

Three configurations x seeds 0-2 with hand-chosen summary.json Lipschitz fields (``RUNS``): the baseline ViT
(unbounded: dot attention and LayerNorm), a bounded but vacuous one (bounds ~1e37) and a certifying one
(bound ~45, certified accuracy > 0). The expected cells are worked out by hand next to the numbers.
"""

from __future__ import annotations

from pathlib import Path

import fabricate as fab
import numpy as np
import pandas as pd
import pytest

from stability.report import build_report, main, to_latex, write_report
from stability.report.certificates import (
    DEFAULT_RADIUS_KEY,
    bound_violations,
    has_lipschitz,
    radius_columns,
    unbounded_cause,
)
from stability.report.formatting import fmt_bound, radius_label

UNBOUNDED = ("blocks.0.attn, blocks.1.attn: dot-product attention is not globally Lipschitz, Kim et al. 2021 "
             "(attention='dot'); blocks.0.norm1 and 3 more: LayerNorm divides by the token's standard deviation, "
             "unbounded as it goes to 0 (norm='layernorm')")
RADII = ("0", "0.07059", "0.1412", "0.2824")  # 0, 18, 36, 72 /255 as summary.json writes them
# configuration (toggles) -> per seed: test_acc, upper, backbone, lower, certified (per radius), sqrt2 (per radius)
RUNS = {
    (): [(0.90, None, None, 80.0, (0.90, 0, 0, 0), (0.90, 0, 0, 0)),
         (0.92, None, None, 100.0, (0.92, 0, 0, 0), (0.92, 0, 0, 0)),
         (0.94, None, None, 120.0, (0.94, 0, 0, 0), (0.94, 0, 0, 0))],
    (("norm", "centernorm"), ("attention", "cosine_paper")):
        [(0.95, 3e36, 1e36, 90.0, (0.95, 0, 0, 0), (0.95, 0, 0, 0)),
         (0.96, 1.1e37, 8e36, 100.0, (0.96, 0, 0, 0), (0.96, 0, 0, 0)),
         (0.97, 2.2e37, 9e36, 110.0, (0.97, 0, 0, 0), (0.97, 0, 0, 0))],
    (("norm", "centernorm"), ("attention", "shift"), ("weight_decay", 0.01)):  # its own recipe
        [(0.84, 44.7, 24.0, 17.0, (0.84, 0.70, 0.50, 0.06), (0.84, 0.2, 0.01, 0)),
         (0.82, 45.8, 24.5, 17.5, (0.82, 0.72, 0.49, 0.05), (0.82, 0.2, 0.00, 0)),
         (0.86, 45.2, 24.3, 18.0, (0.86, 0.74, 0.51, 0.07), (0.86, 0.2, 0.02, 0))],
}


def write_runs(root: Path, runs: dict = RUNS) -> Path:
    for config, seeds in runs.items():
        for seed, (acc, upper, backbone, lower, cert, sqrt2) in enumerate(seeds):
            fab.write_record(root, seed, **dict(config), test_acc=acc, lipschitz_upper=upper,
                             lipschitz_backbone=backbone, lipschitz_lower=lower,
                             lipschitz_unbounded=UNBOUNDED if upper is None else None,
                             certified_acc=dict(zip(RADII, cert, strict=True)),
                             certified_acc_sqrt2=dict(zip(RADII, sqrt2, strict=True)))
    return root


@pytest.fixture(scope="module")
def lip_report(tmp_path_factory: pytest.TempPathFactory):
    return build_report(write_runs(tmp_path_factory.mktemp("lip")))


def test_radius_columns_split_on_the_first_dot_and_keep_the_two_forms_apart() -> None:
    cols = ["certified_acc.0", "certified_acc.0.1412", "certified_acc_sqrt2.0.1412", "certified_acc.0.07059",
            "versions.torch", "test_acc"]
    assert radius_columns(cols) == {"certified_acc.0": 0.0, "certified_acc.0.07059": 0.07059,
                                    "certified_acc.0.1412": 0.1412}
    assert radius_columns(cols, "certified_acc_sqrt2") == {"certified_acc_sqrt2.0.1412": 0.1412}


def test_default_radius_key_is_what_the_callback_writes() -> None:
    from stability.model.lipschitz import DEFAULT_RADIUS
    from stability.training.lipschitz_monitor import radius_key

    assert radius_key(DEFAULT_RADIUS) == DEFAULT_RADIUS_KEY


def test_cells_radius_labels_bounds_and_causes() -> None:
    assert [radius_label(float(r)) for r in RADII] == ["0/255", "18/255", "36/255", "72/255"]
    assert radius_label(0.05) == "0.05"
    assert [fmt_bound(v) for v in (45.2, 5300.0, 1.1e37, 0.5, float("nan"))] == ["45.2", "5.3e3", "1.1e37", "0.5",
                                                                                   "–"]
    assert unbounded_cause(UNBOUNDED) == "attention=dot, norm=layernorm"
    assert unbounded_cause("no toggle named here") == "no toggle named here"


def test_lipschitz_numbers_per_configuration(lip_report) -> None:
    table = lip_report.tables["lipschitz"]
    assert len(table) == 3 and list(table["n_runs"]) == [3, 3, 3]
    base, lips, shift = (table.iloc[i] for i in range(3))
    # rows in the configuration table's order (baseline first), named by their toggles: the weight decay
    # comes with attention=shift, so it names nothing the toggles do not (the CSV has it)
    assert list(table["configuration"]) == ["baseline", "norm=centernorm,attention=cosine_paper",
                                            "norm=centernorm,attention=shift"]
    assert list(table["weight_decay"]) == [0.05, 0.05, 0.01]
    assert list(lip_report.tables["configurations"]["attention"]) == list(table["attention"])
    assert base["test_acc_mean"] == pytest.approx(0.92) and base["test_acc_std"] == pytest.approx(0.02)
    assert base["upper_n"] == 0 and base["n_unbounded"] == 3 and base["unbounded"] == UNBOUNDED
    assert base["lower_mean"] == pytest.approx(100.0) and base["lower_std"] == pytest.approx(20.0)
    # bounds: median and range over seeds, not a mean (that of 3e36, 1.1e37, 2.2e37 would be 1.2e37)
    assert lips["upper_median"] == pytest.approx(1.1e37) and lips["upper_min"] == pytest.approx(3e36)
    assert lips["upper_max"] == pytest.approx(2.2e37) and lips["backbone_median"] == pytest.approx(8e36)
    assert shift["certified_acc.0.1412_mean"] == pytest.approx(0.50)
    assert shift["certified_acc.0.1412_std"] == pytest.approx(0.01)
    assert shift["certified_acc_sqrt2.0.1412_mean"] == pytest.approx(0.01)
    assert shift["certified_acc.0.2824_mean"] == pytest.approx(0.06)
    assert shift["upper_median"] == pytest.approx(45.2) and shift["lower_mean"] == pytest.approx(17.5)
    assert list(table["n_both"]) == [0, 3, 3] and list(table["n_upper_below_lower"]) == [0, 0, 0]


def test_short_labels_keep_a_hyperparameter_that_varies_within_a_toggle_combination(tmp_path: Path) -> None:
    from stability.report.configs import configuration_groups, short_labels

    for seed in range(2):
        for lr in (1e-3, 1e-2):
            fab.write_record(tmp_path, seed, lr=lr, test_acc=0.9)
        fab.write_record(tmp_path, seed, lr=1e-2, attention="shift", weight_decay=0.01, test_acc=0.9)
    sweep = build_report(tmp_path).sweep
    rows = [done.iloc[0] for _, done in configuration_groups(sweep, sweep.runs)]
    assert short_labels(sweep, rows) == ["baseline,lr=0.001", "baseline,lr=0.01", "attention=shift,lr=0.01"]


def test_lipschitz_text(lip_report) -> None:
    text = lip_report.text["lipschitz"]
    assert list(text.columns) == ["configuration", "test acc", "certified @ 18/255", "certified @ 36/255",
                                  "certified @ 72/255", "certified @ 36/255, sqrt(2) L form",
                                  "upper bound (network)", "backbone bound", "lower bound", "upper ≥ lower", "n"]
    base, lips, shift = (text.iloc[i] for i in range(3))
    assert base["upper bound (network)"] == "unbounded (attention=dot, norm=layernorm)"
    assert base["backbone bound"] == "unbounded" and base["upper ≥ lower"] == "–"
    assert base["certified @ 36/255"] == "0" and base["test acc"] == "0.920 ± 0.020"
    assert base["lower bound"] == "100 ± 20"
    assert lips["upper bound (network)"] == "1.1e37 (3.0e36–2.2e37)"
    assert shift["upper bound (network)"] == "45.2 (44.7–45.8)" and shift["backbone bound"] == "24.3 (24–24.5)"
    assert shift["certified @ 36/255"] == "0.500 ± 0.010"
    assert shift["certified @ 36/255, sqrt(2) L form"] == "0.010 ± 0.010"
    assert shift["lower bound"] == "17.5 ± 0.5" and shift["upper ≥ lower"] == "3/3"
    tex = to_latex(text, "bounds median (min–max), upper ≥ lower", "tab:lipschitz")
    assert "≥" not in tex and "–" not in tex and r"$\geq$" in tex


def test_seeds_that_disagree_on_boundedness_are_both_shown() -> None:
    from stability.report.formatting import format_lipschitz

    row = {"configuration": "x", "n_runs": 3, "test_acc_mean": 0.9, "test_acc_std": 0.01, "test_acc_n": 3,
           "certified_acc.0.1412_mean": 0.0, "certified_acc.0.1412_std": np.nan, "certified_acc.0.1412_n": 1,
           "upper_median": 50.0, "upper_min": 40.0, "upper_max": 60.0, "upper_n": 2,
           "backbone_median": 20.0, "backbone_min": 20.0, "backbone_max": 20.0, "backbone_n": 1,
           "n_unbounded": 1, "unbounded": "blocks.0.norm1: ... (norm='rmsnorm')",
           "lower_mean": 0.52, "lower_std": np.nan, "lower_n": 1, "n_both": 1, "n_upper_below_lower": 0}
    text = format_lipschitz(pd.DataFrame([row])).iloc[0]
    assert text["upper bound (network)"] == "50 (40–60); unbounded (norm=rmsnorm) in 1/3"
    assert text["backbone bound"] == "20; unbounded in 1/3"
    assert text["certified @ 36/255"] == "0 (n=1)" and text["lower bound"] == "0.52 (n=1)"
    assert "certified @ 36/255, sqrt(2) L form" not in text  # the runs recorded no sqrt(2)-form accuracy


def test_report_files_put_the_table_after_the_configurations(lip_report, tmp_path: Path) -> None:
    written = write_report(lip_report, tmp_path, plots=False)
    assert {p.name for p in written} >= {"lipschitz.csv", "lipschitz.md", "lipschitz.tex"}
    csv = pd.read_csv(tmp_path / "lipschitz.csv")
    assert csv["upper_median"].iloc[2] == pytest.approx(45.2) and "certified_acc.0.07059_mean" in csv
    md = (tmp_path / "report.md").read_text()
    assert md.index("## Per-configuration") < md.index("## Lipschitz") < md.index("## Effect")
    assert "upper ≥ lower: holds in every one of the 6 run(s) with both bounds; 3 run(s) without both" in md


def test_a_bound_below_the_lower_bound_is_named(tmp_path: Path) -> None:
    runs = {k: list(v) for k, v in RUNS.items()}
    key = next(k for k in runs if ("attention", "shift") in k)
    runs[key][1] = (0.82, 15.0, 24.5, 17.5, (0.82, 0.72, 0.49, 0.05), (0.82, 0.2, 0.0, 0))  # 15 < 17.5
    report = build_report(write_runs(tmp_path, runs))
    bad = bound_violations(report.runs)
    assert len(bad) == 1 and bad["upper"].iloc[0] == 15.0 and bad["lower"].iloc[0] == 17.5
    assert report.text["lipschitz"]["upper ≥ lower"].iloc[2] == "2/3"
    gap = next(g for g in report.gaps if g.startswith("Lipschitz"))
    assert bad["run"].iloc[0] in gap and "upper 15 < lower 17.5" in gap and "1 of 6" in gap
    assert any("FAILS in 1 of the 6" in n for n in report.notes)


def test_no_lipschitz_fields_no_table_no_figure(tmp_path: Path) -> None:
    for seed in range(2):
        fab.write_record(tmp_path, seed, final_val_acc=0.9, test_acc=0.9)
    report = build_report(tmp_path)
    assert not has_lipschitz(report.runs)
    assert "lipschitz" not in report.tables and "lipschitz" not in report.text
    written = write_report(report, tmp_path / "report", formats=["csv"])
    assert not any("lipschitz" in p.name or "certified" in p.name for p in written)


def test_certified_accuracy_figure(lip_report, tmp_path: Path) -> None:
    from stability.report import plots as P
    from stability.report.certificates import certified_long
    from stability.report.figures import write_figures

    written = write_figures(lip_report, tmp_path)
    assert {p.name for p in written} >= {"certified_accuracy.png", "certified_accuracy.pdf"}
    assert all(p.stat().st_size > 1000 for p in written)
    data = certified_long(lip_report.sweep, lip_report.runs)
    assert len(data) == 9 * len(RADII) and list(dict.fromkeys(data["configuration"]))[0] == "baseline"
    over = data.assign(accuracy=np.where(data["radius"] == 0, 1.3, data["accuracy"]))  # out of range: clipped
    fig = P.certified_accuracy(over)
    ax = fig.axes[0]
    assert ax.get_ylim() == (0.0, 1.0)
    lines = [line for line in ax.get_lines() if len(line.get_xdata())]
    assert len(lines) == 3
    for line in lines:
        assert list(line.get_xdata()) == pytest.approx([0, 18, 36, 72], abs=0.02)  # radii in /255
        assert np.all((line.get_ydata() >= 0) & (line.get_ydata() <= 1))
    shift = lines[2].get_ydata()  # medians over seeds: 0.72 at 18/255, 0.50 at 36/255
    assert shift[1] == pytest.approx(0.72) and shift[2] == pytest.approx(0.50) and shift[0] == 1.0


def test_no_certified_accuracy_figure_when_nothing_certifies_beyond_radius_0(lip_report, tmp_path: Path) -> None:
    import dataclasses

    from stability.report.figures import write_figures

    runs = lip_report.runs.copy()
    beyond_0 = [c for c in runs.columns if c.startswith("certified_acc") and not c.endswith(".0")]
    assert beyond_0
    runs[beyond_0] = 0.0  # unbounded models: clean accuracy at radius 0, nothing beyond
    written = write_figures(dataclasses.replace(lip_report, runs=runs), tmp_path)
    assert not any("certified" in p.name for p in written)


def test_cli_report_shows_the_table(tmp_path: Path) -> None:
    sweep = write_runs(tmp_path / "sweep")
    assert main([str(sweep), "--out", str(tmp_path / "out"), "--format", "md", "--no-plots"]) == 0
    md = (tmp_path / "out" / "lipschitz.md").read_text()
    assert "unbounded (attention=dot, norm=layernorm)" in md and "45.2 (44.7–45.8)" in md


# ------------------------------------------------------------------ the README's Lipschitz section
def test_readme_lipschitz_prose_matches_the_committed_study() -> None:
    """The prose under the README's Lipschitz table says what notebooks/results/lipschitz/lipschitz.csv holds
    (``make results`` regenerates it; test_docs checks the table itself)."""
    root = Path(__file__).resolve().parents[2]
    text = (root / "README.md").read_text(encoding="utf-8")
    section = text.split("## Lipschitz bounds and certified accuracy", 1)[1].split("\n## ", 1)[0]
    prose = " ".join(section.split("<!-- end table -->", 1)[1].split())
    assert "<!-- table: notebooks/results/lipschitz/lipschitz.md -->" in section
    table = pd.read_csv(root / "notebooks" / "results" / "lipschitz" / "lipschitz.csv")
    at36 = f"certified_acc.{DEFAULT_RADIUS_KEY}_mean"
    positive = [c for c, r in radius_columns(table.columns.str.removesuffix("_mean")).items() if r > 0]
    certifies = table[(table[[f"{c}_mean" for c in positive]] > 0).any(axis=1)]
    # "Only the margin-trained LipShiFT certifies anything"
    assert "Only the margin-trained LipShiFT certifies anything" in prose
    assert len(certifies) == 1 and certifies["attention"].iloc[0] == "shift" and certifies["margin_eps"].iloc[0] > 0
    margin = certifies.iloc[0]
    plain = table[(table["attention"] == "shift") & (table["margin_eps"] == 0)].iloc[0]
    lipsformer = table[table["attention"] == "cosine_paper"].iloc[0]
    assert margin["upper_median"] / margin["lower_mean"] < 3 and "within a factor of 3" in prose
    assert 0.45 <= margin[at36] <= 0.55 and "half the test digits are certified at 36/255" in prose
    cost = round(100 * (plain["test_acc_mean"] - margin["test_acc_mean"]))
    assert f"cost of {cost} points of clean accuracy" in prose
    assert 100 <= plain["upper_median"] / margin["upper_median"] < 1000 and "two orders of magnitude" in prose
    assert lipsformer["upper_min"] > 1e30 and "finite but vacuous" in prose
    assert table["n_upper_below_lower"].sum() == 0
    assert f"Upper >= lower holds in all {int(table['n_both'].sum())} runs that have both bounds" in prose
    assert (table["test_acc_mean"] - table["certified_acc.0_mean"]).abs().max() < 1e-6  # both top-1 fractions
    assert "at radius 0 (in the CSV) certified accuracy equals test acc" in prose
