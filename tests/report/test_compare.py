"""stability.report.compare and ``stability report A B ...`` on fabricated sweeps in the real record format.

Two seed sets of one grid (claims: do the verdicts agree?), a sweep against a copy of itself (every same-seed
run identical), a copy with one run's number changed (moved, by how much), a copy without one configuration
(listed, not dropped), and the bad inputs (one error line, exit 2, nothing written).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import fabricate as fab
import pandas as pd
import pytest

from stability.errors import ConfigError
from stability.record.files import SUMMARY
from stability.report import build_report, main
from stability.report.compare import compare_reports

LAPE_VAL = {"claim": "LaPE raises validation accuracy", "treatment": {"pos_embed": "lape"},
            "metric": "final_val_acc", "direction": "increase", "min_effect": 0.01}
LAPE_TEST = {"claim": "LaPE raises test accuracy", "treatment": {"pos_embed": "lape"}, "metric": "test_acc",
             "direction": "increase", "min_effect": 0.01}


def _seed_set(root: Path, seeds: list[int], val_gains: list[float], claims: list[dict]) -> Path:
    """Baseline and LaPE at one lr, one run per seed; LaPE's test-accuracy gain is a steady +0.05 (to within 0.002:
    identical gains in every seed would give a zero-width interval, which gives no verdict)."""
    for seed, gain in zip(seeds, val_gains, strict=True):
        base = 0.90 + 0.01 * (seed % 3)
        fab.write_record(root, seed, final_val_acc=base, test_acc=base)
        fab.write_record(root, seed, pos_embed="lape", final_val_acc=base + gain,
                         test_acc=base + 0.05 + 0.001 * (seed % 3 - 1))
    fab.write_claims(root, claims)
    return root


@pytest.fixture(scope="module")
def grid(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The default fabricated sweep (norm x lr x 2 seeds, one run diverged), without unfinished runs."""
    return fab.make_sweep(tmp_path_factory.mktemp("grid") / "sweep", unfinished=False)


def _copy(sweep: Path, to: Path) -> Path:
    shutil.copytree(sweep, to)
    return to


def _summaries(sweep: Path) -> dict[str, Path]:
    """run folder -> its summary.json, keyed by ``norm,lr,seed`` read from the record (never from the name)."""
    out = {}
    for path in sweep.glob(f"*/{SUMMARY}"):
        data = json.loads(path.read_text())
        out[f"{data['toggles']['norm']},{data['hparams']['lr']:g},{data['hparams']['seed']}"] = path
    return out


# ------------------------------------------------------------------------------------------ two seed sets


def test_two_seed_sets_verdicts_side_by_side(tmp_path: Path) -> None:
    a = _seed_set(tmp_path / "s012", [0, 1, 2], [0.03, 0.035, 0.028], [LAPE_VAL, LAPE_TEST])  # supported
    b = _seed_set(tmp_path / "s345", [3, 4, 5], [0.10, -0.05, 0.02], [LAPE_VAL, LAPE_TEST])  # spans 0.01
    cmp = compare_reports([build_report(a), build_report(b)])

    claims = cmp.tables["claims"].set_index("claim")
    assert claims.loc["LaPE raises validation accuracy", ["verdict_A", "verdict_B"]].tolist() == \
        ["supported", "inconclusive"]
    assert not claims.loc["LaPE raises validation accuracy", "agree"]
    assert claims.loc["LaPE raises test accuracy", ["verdict_A", "verdict_B", "agree"]].tolist() == \
        ["supported", "supported", True]
    assert claims.loc["LaPE raises validation accuracy", "effect_A"] == pytest.approx((0.03 + 0.035 + 0.028) / 3)
    text = cmp.text["claims"].set_index("claim")
    assert text.loc["LaPE raises validation accuracy", "agree"] == "no"
    assert text.loc["LaPE raises test accuracy", "agree"] == "yes"
    assert text.loc["LaPE raises validation accuracy", "verdict A"] == "SUPPORTED"
    assert text.loc["LaPE raises validation accuracy", "effect A"].startswith("+0.031 [")
    assert "1 of 2 verdicts agree; they differ on: LaPE raises validation accuracy" in cmp.summary

    # both cells are in both sweeps although every run name differs (the seed is in it); no seed is shared
    configs = cmp.tables["configurations"]
    assert len(configs) == 2 and (configs["sweeps"] == "A,B").all()
    assert configs["shared_seeds_B"].tolist() == [0, 0]
    lape = configs[configs["pos_embed"] == "lape"].iloc[0]
    # B - A of the means, by hand: A's LaPE accuracies 0.93, 0.945, 0.948; B's 1.00, 0.86, 0.94
    mean_a = (0.90 + 0.03 + 0.91 + 0.035 + 0.92 + 0.028) / 3
    mean_b = (0.90 + 0.10 + 0.91 - 0.05 + 0.92 + 0.02) / 3
    assert lape["final_val_acc_diff_B"] == pytest.approx(mean_b - mean_a)
    assert not any(c.startswith("same seeds") for c in cmp.text["configurations"].columns)
    row = cmp.text["configurations"].set_index("pos_embed").loc["lape"]
    assert row["final val acc B − A"] == f"{mean_b - mean_a:+.3f}" and row["n (A, B)"] == "3, 3"


def test_claims_only_some_sweeps_state_are_listed(tmp_path: Path) -> None:
    a = _seed_set(tmp_path / "a", [0, 1, 2], [0.03, 0.035, 0.028], [LAPE_VAL, LAPE_TEST])
    b = _seed_set(tmp_path / "b", [0, 1, 2], [0.03, 0.035, 0.028], [LAPE_VAL])
    cmp = compare_reports([build_report(a), build_report(b)])
    assert cmp.text["claims"]["claim"].tolist() == ["LaPE raises validation accuracy"]
    elsewhere = cmp.text["claims_elsewhere"]
    assert elsewhere["claim"].tolist() == ["LaPE raises test accuracy"]
    assert elsewhere["stated by"].tolist() == ["A"] and elsewhere["verdict B"].tolist() == ["–"]


# ------------------------------------------------------------------------------------ same cells, same seeds


def test_a_sweep_against_a_renamed_copy_of_itself_is_identical_and_agrees(grid: Path, tmp_path: Path,
                                                                          capsys: pytest.CaptureFixture[str]) -> None:
    copy = _copy(grid, tmp_path / "copy")
    for i, run in enumerate(sorted(p for p in copy.iterdir() if p.is_dir())):
        run.rename(copy / f"run-{i}")  # cells are matched by their records, not by folder names
    out = tmp_path / "out"
    assert main([str(grid), str(copy), "--out", str(out), "--format", "md,csv"]) == 0
    printed = capsys.readouterr().out
    assert printed.index("# Claims") < printed.index("# Configurations side by side")
    assert "4 of 4 cells identical, 0 moved" in printed

    configs = pd.read_csv(out / "compare_configurations.csv")
    assert len(configs) == 4 and (configs["sweeps"] == "A,B").all()
    assert (configs["identical_seeds_B"] == configs["shared_seeds_B"]).all() and (configs["shared_seeds_B"] == 2).all()
    assert (configs["final_val_acc_diff_B"].fillna(0) == 0).all()
    md = (out / "compare.md").read_text()
    assert md.count("identical (2 seeds)") == 4 and "Configurations in only some sweeps" not in md
    assert sorted(p.name for p in out.iterdir()) == ["compare.md", "compare_claims.csv", "compare_claims.md",
                                                     "compare_configurations.csv", "compare_configurations.md"]


def test_a_sweep_against_a_copy_of_itself_agrees_on_every_claim(tmp_path: Path) -> None:
    a = _seed_set(tmp_path / "a", [0, 1, 2], [0.10, -0.05, 0.02], [LAPE_VAL, LAPE_TEST])
    cmp = compare_reports([build_report(a), build_report(_copy(a, tmp_path / "b"))])
    assert cmp.tables["claims"]["agree"].all() and (cmp.text["claims"]["agree"] == "yes").all()
    assert set(cmp.text["configurations"]["same seeds B vs A"]) == {"identical (3 seeds)"}


def test_a_changed_number_is_reported_as_moved_by_how_much(grid: Path, tmp_path: Path) -> None:
    copy = _copy(grid, tmp_path / "copy")
    path = _summaries(copy)["centernorm,0.001,1"]
    data = json.loads(path.read_text())
    data["final_val_acc"] += 0.0125
    path.write_text(json.dumps(data))
    path = _summaries(copy)["layernorm,0.001,0"]
    data = json.loads(path.read_text())
    data["max_grad_norm"] += 1e-6  # not a headline number, but the summaries are no longer equal bit for bit
    data["wall_time_s"] += 5.0  # timings are the process, not the outcome
    path.write_text(json.dumps(data))
    cmp = compare_reports([build_report(grid), build_report(copy)])
    text = cmp.text["configurations"].set_index(["norm", "lr"])["same seeds B vs A"]
    assert text.loc[("centernorm", "0.001")] == "moved (1/2 seeds): final val acc by ≤ 0.0125"
    assert text.loc[("layernorm", "0.001")] == "moved (1/2 seeds): headline numbers equal; differ in max_grad_norm"
    assert text.loc[("centernorm", "0.01")] == "identical (2 seeds)"
    configs = cmp.tables["configurations"].set_index(["norm", "lr"])
    assert configs.loc[("centernorm", 0.001), "final_val_acc_moved_B"] == pytest.approx(0.0125)
    assert configs.loc[("centernorm", 0.001), "final_val_acc_diff_B"] == pytest.approx(0.0125 / 2)
    assert "B vs A, runs of the same cell and seed: 2 of 4 cells identical, 2 moved" in cmp.summary


def test_a_hyperparameter_an_older_record_lacks_is_not_matched_on(grid: Path, tmp_path: Path) -> None:
    copy = _copy(grid, tmp_path / "old")
    for path in _summaries(copy).values():
        data = json.loads(path.read_text())
        del data["hparams"]["margin_eps"]
        path.write_text(json.dumps(data))
    cmp = compare_reports([build_report(grid), build_report(copy)])
    assert (cmp.tables["configurations"]["sweeps"] == "A,B").all()
    assert any("not matched on margin_eps" in n for n in cmp.notes)


# ------------------------------------------------------------------------------------- cells in one sweep


def test_a_configuration_missing_from_one_sweep_is_listed(grid: Path, tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    copy = _copy(grid, tmp_path / "cut")
    summaries = _summaries(copy)
    for seed in (0, 1):
        shutil.rmtree(summaries[f"centernorm,0.01,{seed}"].parent)  # that cell is gone
        shutil.rmtree(summaries[f"layernorm,0.001,{seed}"].parent)
    fab.write_run(copy, "layernorm", 1e-3, 2, "failed", "b00001")  # ... and this one only failed
    out = tmp_path / "out"
    assert main([str(grid), str(copy), "--out", str(out), "--format", "md"]) == 0
    printed = capsys.readouterr().out
    assert "2 configurations in every sweep, 2 in only some" in printed
    md = (out / "compare.md").read_text()
    assert "## Configurations in only some sweeps" in md
    cmp = compare_reports([build_report(grid), build_report(copy)])
    elsewhere = cmp.text["configurations_elsewhere"].set_index(["norm", "lr"])
    assert elsewhere.loc[("centernorm", "0.01"), "B"] == "absent"
    assert elsewhere.loc[("layernorm", "0.001"), "B"] == "no finished run (1 failed)"
    assert elsewhere.loc[("centernorm", "0.01"), "A"] == "2"
    assert len(cmp.text["configurations"]) == 2


# ------------------------------------------------------------------------------------------------ bad input


def _out_is_empty(out: Path) -> bool:
    return not out.exists() or not any(out.iterdir())


@pytest.mark.parametrize("case", ["missing", "not_a_sweep"])
def test_a_folder_that_is_not_a_sweep_is_one_error_line(grid: Path, tmp_path: Path, case: str,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "nothing"
    if case == "not_a_sweep":
        (target / "notes").mkdir(parents=True)
        (target / "notes" / "readme.txt").write_text("hello")
    out = tmp_path / "out"
    assert main([str(grid), str(target), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: sweep folder:") and str(target) in err[0]
    assert _out_is_empty(out)


def test_only_formats_a_comparison_does_not_write_is_one_error_line(grid: Path, tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    assert main([str(grid), str(_copy(grid, tmp_path / "b")), "--out", str(out), "--format", "html"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0] == "error: --format: a comparison writes md, csv, tex; got html"
    assert _out_is_empty(out)


def test_sweeps_without_a_common_configuration_is_one_error_line(grid: Path, tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    other = tmp_path / "longer"
    for seed in (0, 1):
        fab.write_record(other, seed, max_epochs=5, final_val_acc=0.9)
    out = tmp_path / "out"
    assert main([str(grid), str(other), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: comparison: no configuration is in every sweep")
    assert "max_epochs: A has 2; B has 5" in err[0]
    assert _out_is_empty(out)
    with pytest.raises(ConfigError, match="at least 2 sweeps"):
        compare_reports([build_report(grid)])


def test_a_sweep_with_nothing_finished_is_exit_1_nothing_written(grid: Path, tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    failed = fab.make_failed_sweep(tmp_path / "failed")
    out = tmp_path / "out"
    assert main([str(grid), str(failed), "--out", str(out)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: nothing to compare in {failed}: all 3 runs failed")
    assert _out_is_empty(out)


def test_default_out_is_the_first_sweeps_report_compare(grid: Path, tmp_path: Path) -> None:
    a = _copy(grid, tmp_path / "a")
    assert main([str(a), str(grid), "--format", "csv,tex"]) == 0
    assert sorted(p.name for p in (a / "report" / "compare").iterdir()) == [
        "compare_claims.csv", "compare_claims.tex", "compare_configurations.csv", "compare_configurations.tex"]


def test_three_sweeps_compare_each_with_the_first(grid: Path, tmp_path: Path) -> None:
    same = _copy(grid, tmp_path / "same")
    broke = _copy(grid, tmp_path / "broke")
    path = _summaries(broke)["centernorm,0.01,0"]
    data = json.loads(path.read_text())
    data.update(status="diverged", diverged_step=20, divergence_reason="non-finite training loss (nan) at step 20")
    path.write_text(json.dumps(data))
    cmp = compare_reports([build_report(grid), build_report(same), build_report(broke)])
    assert cmp.labels == ["A", "B", "C"]
    text = cmp.text["configurations"].set_index(["norm", "lr"])
    assert {"final val acc C − A", "same seeds B vs A", "same seeds C vs A", "n (A, B, C)"} <= set(text.columns)
    row = text.loc[("centernorm", "0.01")]
    assert row["same seeds B vs A"] == "identical (2 seeds)"
    assert row["same seeds C vs A"].startswith("moved (1/2 seeds): seed 0: completed → diverged; ")
    assert row["failed (A, B, C)"] == "0/2, 0/2, 1/2"
    assert "C vs A, runs of the same cell and seed: 3 of 4 cells identical, 1 moved" in cmp.summary
