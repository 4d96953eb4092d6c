"""``stability report A B`` on two studies of different data sets: no configuration in common, so the claims alone
are compared, by their text, and each verdict is said to transfer, change, or be decided in one sweep only.

The studies are fabricated in the real record format (``tests/fabricate.py`` ``write_record``), then each run's
data module and image size are set in its ``config.yaml`` and ``summary.json`` as a Fashion-MNIST run records
them; the two also differ in ``max_epochs`` and in the lr they are tested at (each data set's own ladder).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import fabricate as fab
import pandas as pd
import pytest
import yaml

from stability.cli import main as cli_main
from stability.record.files import CONFIG, SUMMARY
from stability.report import build_report
from stability.report.compare import compare_reports, render_comparison
from stability.report.compare_tables import data_set_name, transfer_of

DIGITS = ("stability.data.DigitsDataModule", 8)
FASHION = ("stability.data.FashionMNISTDataModule", 28)


def _claim(text: str, metric: str) -> dict[str, Any]:
    return {"claim": text, "treatment": {"pos_embed": "lape"}, "metric": metric, "direction": "increase",
            "min_effect": 0.01}


TEST_ACC = _claim("LaPE raises test accuracy", "test_acc")  # built to transfer: +0.05 on both
VAL_ACC = _claim("LaPE raises validation accuracy", "final_val_acc")  # built to change: +0.05, then -0.05
BEST_ACC = _claim("LaPE raises best validation accuracy", "best_val_acc")  # decided on digits only
CLAIMS = [TEST_ACC, VAL_ACC, BEST_ACC]


def _record(root: Path, data: tuple[str, int], seed: int, **values: Any) -> Path:
    """``fab.write_record``, then the data module and image size of ``data`` in the config and the summary."""
    module, size = data
    run = fab.write_record(root, seed, **values)
    config = yaml.safe_load((run / CONFIG).read_text())
    config["data"]["class_path"] = module
    config["model"]["vit"]["img_size"] = size
    (run / CONFIG).write_text(yaml.safe_dump(config, sort_keys=False))
    summary = json.loads((run / SUMMARY).read_text())
    summary["hparams"].update(data=module.rsplit(".", 1)[-1], img_size=size)
    (run / SUMMARY).write_text(json.dumps(summary))
    return run


def _study(root: Path, data: tuple[str, int], lrs: list[float], epochs: int, val_gain: float,
           best_gains: list[float], claims: list[dict[str, Any]] = CLAIMS) -> Path:
    """Baseline and LaPE at each lr, 3 seeds. LaPE's test-accuracy gain is a steady +0.05 and its validation gain
    ``val_gain`` (to within 0.002: identical gains in every seed would give a zero-width interval); its best
    validation gain per seed is ``best_gains``."""
    for lr in lrs:
        for seed in range(3):
            base = 0.80 + 0.01 * seed
            jitter = 0.001 * (seed - 1)
            _record(root, data, seed, lr=lr, max_epochs=epochs, final_val_acc=base, test_acc=base, best_val_acc=base)
            _record(root, data, seed, lr=lr, max_epochs=epochs, pos_embed="lape",
                    final_val_acc=base + val_gain + jitter, test_acc=base + 0.05 + jitter,
                    best_val_acc=base + best_gains[seed])
    fab.write_claims(root, claims)
    return root


@pytest.fixture(scope="module")
def studies(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("datasets")
    digits = _study(root / "digits", DIGITS, [1e-3], 30, +0.05, [0.05, 0.051, 0.049])
    fashion = _study(root / "fashion", FASHION, [3e-4], 10, -0.05, [0.10, -0.08, 0.02])  # spans 0.01: open
    return digits, fashion


def test_different_data_sets_compare_claim_by_claim(studies: tuple[Path, Path]) -> None:
    a, b = studies
    cmp = compare_reports([build_report(a), build_report(b)])
    assert cmp.claims_only and cmp.data_sets == ["digits", "fashion-mnist"]
    assert "configurations" not in cmp.tables and cmp.text["configurations"].empty

    claims = cmp.tables["claims"].set_index("claim")
    assert len(claims) == 3 and (claims["sweeps"] == "A,B").all()
    # each data set tested at its own lr: the rows pair by order, and say where each was tested
    assert claims["setting"].tolist() == ["A: lr 0.001; B: lr 0.0003"] * 3
    assert claims.loc["LaPE raises test accuracy", ["verdict_A", "verdict_B", "transfer"]].tolist() == \
        ["supported", "supported", "transfers"]
    assert claims.loc["LaPE raises validation accuracy", ["verdict_A", "verdict_B", "transfer"]].tolist() == \
        ["supported", "contradicted", "changes"]
    assert claims.loc["LaPE raises best validation accuracy", ["verdict_A", "verdict_B", "transfer"]].tolist() == \
        ["supported", "inconclusive", "decided in A only"]
    val = claims.loc["LaPE raises validation accuracy"]
    assert val["effect_A"] == pytest.approx(0.05) and val["effect_B"] == pytest.approx(-0.05)
    assert val["high_B"] < 0 < val["low_A"]  # both intervals, each on its own side

    text = cmp.text["claims"].set_index("claim")
    assert "agree" not in text.columns
    assert text.loc["LaPE raises validation accuracy", "transfer"] == "changes"
    assert text.loc["LaPE raises validation accuracy", "verdict B"] == "CONTRADICTED"
    assert text.loc["LaPE raises validation accuracy", "effect A"].startswith("+0.050 [")
    assert text.loc["LaPE raises validation accuracy", "effect B"].startswith("-0.050 [")

    assert "holds on both: supported: LaPE raises test accuracy" in cmp.summary
    assert "verdicts: 1 of 3 transfer, 1 changes (LaPE raises validation accuracy), 1 decided in A only" \
        in cmp.summary
    assert cmp.notes[0] == "data sets: A: digits, B: fashion-mnist"
    skipped = [n for n in cmp.notes if n.startswith("configurations not compared")]
    assert len(skipped) == 1 and "data: A has DigitsDataModule; B has FashionMNISTDataModule" in skipped[0]
    assert "max_epochs: A has 30; B has 10" in skipped[0]


def test_the_cli_compares_different_data_sets_and_writes_no_cell_table(studies: tuple[Path, Path], tmp_path: Path,
                                                                      capsys: pytest.CaptureFixture[str]) -> None:
    a, b = studies
    out = tmp_path / "out"
    assert cli_main(["report", str(a), str(b), "--out", str(out)]) == 0
    captured = capsys.readouterr()
    assert "error" not in captured.err
    assert "note: configurations not compared: no configuration is in every sweep" in captured.err
    assert "holds on both: supported: LaPE raises test accuracy" in captured.out
    assert sorted(p.name for p in out.iterdir()) == ["compare.md", "compare_claims.csv", "compare_claims.md",
                                                     "compare_claims.tex"]
    csv = pd.read_csv(out / "compare_claims.csv").set_index("claim")
    assert csv.loc["LaPE raises validation accuracy", "transfer"] == "changes"
    assert csv.loc["LaPE raises test accuracy", "setting_B"] == "lr 0.0003"
    md = (out / "compare.md").read_text()
    assert "Configurations side by side" not in md and "| transfer " in md and "| changes " in md
    assert "| data " in md and "fashion-mnist" in md  # the legend names each sweep's data set


def test_a_claim_tested_at_several_lrs_pairs_lowest_with_lowest(tmp_path: Path) -> None:
    a = _study(tmp_path / "digits", DIGITS, [1e-3, 1e-2], 30, +0.05, [0.05, 0.05, 0.05], [TEST_ACC])
    b = _study(tmp_path / "fashion", FASHION, [3e-4, 3e-3, 3e-2], 10, +0.05, [0.05, 0.05, 0.05], [TEST_ACC])
    cmp = compare_reports([build_report(a), build_report(b)])
    claims = cmp.tables["claims"]
    assert claims["setting_A"].tolist()[:2] == ["lr 0.001", "lr 0.01"]
    assert claims["setting_B"].tolist() == ["lr 0.0003", "lr 0.003", "lr 0.03"]
    assert pd.isna(claims["setting_A"].iloc[2]) and claims["transfer"].tolist() == \
        ["transfers", "transfers", "decided in B only"]
    # tested at several settings: the holds-on-both line names them
    assert any(line.startswith("holds on both: supported: LaPE raises test accuracy at A: lr 0.001; B: lr 0.0003")
               for line in cmp.summary)
    assert "No configuration is in every sweep" in render_comparison(cmp)


def test_same_data_same_settings_still_pair_by_setting(tmp_path: Path) -> None:
    """Two seed sets of one study on one data set: cells in common, claims paired by their setting as before."""
    a = _study(tmp_path / "a", DIGITS, [1e-3], 30, +0.05, [0.05, 0.05, 0.05], [TEST_ACC])
    b = _study(tmp_path / "b", DIGITS, [1e-3], 30, +0.05, [0.05, 0.05, 0.05], [TEST_ACC])
    cmp = compare_reports([build_report(a), build_report(b)])
    assert not cmp.claims_only and cmp.data_sets is None and "configurations" in cmp.tables
    assert cmp.tables["claims"]["setting"].tolist() == ["lr 0.001"]
    assert cmp.tables["claims"]["transfer"].tolist() == ["transfers"]
    assert "holds on both: supported: LaPE raises test accuracy" in cmp.summary


def test_different_data_sets_without_a_shared_claim_is_one_error_line(studies: tuple[Path, Path], tmp_path: Path,
                                                                      capsys: pytest.CaptureFixture[str]) -> None:
    a, _ = studies
    other = _study(tmp_path / "fashion", FASHION, [3e-4], 10, +0.05, [0.05, 0.05, 0.05],
                   [_claim("a claim digits does not state", "test_acc")])
    out = tmp_path / "out"
    assert cli_main(["report", str(a), str(other), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: comparison: no configuration is in every sweep (data: ")
    assert "data: A has DigitsDataModule; B has FashionMNISTDataModule" in err[0]
    assert "no claim is stated by every sweep" in err[0]
    assert not out.exists()


@pytest.mark.parametrize(("verdicts", "expected"), [
    ({"A": "supported", "B": "supported"}, "transfers"),
    ({"A": "contradicted", "B": "contradicted", "C": "contradicted"}, "transfers"),
    ({"A": "supported", "B": "contradicted"}, "changes"),
    ({"A": "supported", "B": "inconclusive", "C": "equivalent"}, "changes"),
    ({"A": "inconclusive", "B": "supported"}, "decided in B only"),
    ({"A": "supported", "B": None}, "decided in A only"),
    ({"A": "inconclusive", "B": None}, "undecided"),
])
def test_transfer_of(verdicts: dict[str, Any], expected: str) -> None:
    assert transfer_of(verdicts) == expected


@pytest.mark.parametrize(("module", "name"), [
    ("DigitsDataModule", "digits"), ("stability.data.FashionMNISTDataModule", "fashion-mnist"),
    ("CIFAR10DataModule", "cifar-10"), ("CIFAR100DataModule", "cifar-100"), ("ImageFolderDataModule", "image-folder"),
])
def test_data_set_name(module: str, name: str) -> None:
    assert data_set_name(module) == name
