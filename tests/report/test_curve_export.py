"""``stability report SWEEP --curves FILE`` on the fabricated sweep (``tests/fabricate.py make_sweep``: real
TensorBoard event files, one run diverged, one resumed with repeated steps, one failed, one pending).

The rows are counted against the event files read with TensorBoard's own loader (not tbparse, which the export
reads through), one per (run, tag, step) since a resumed run logs its redone steps twice.
"""

from __future__ import annotations

import math
from pathlib import Path

import fabricate as fab
import pandas as pd
import pytest

from stability.analysis.results import load_sweep
from stability.cli import main as cli_main
from stability.record.identity import hparams_of, toggles_of
from stability.report.curve_export import CURVE_COLUMNS, curves_table


@pytest.fixture(scope="module")
def sweep(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return fab.make_sweep(tmp_path_factory.mktemp("curves") / "sweep")


def _logged(sweep: Path) -> set[tuple[str, str, int]]:
    """Every (run folder, scalar tag, step) in the sweep's event files, read with TensorBoard's loader."""
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

    seen = set()
    for path in sweep.glob("*/events.out.tfevents.*"):
        for event in EventFileLoader(str(path)).Load():
            for value in event.summary.value:
                if value.metadata.plugin_data.plugin_name == "scalars":
                    seen.add((path.parent.name, value.tag, event.step))
    return seen


def _run_of(table: pd.DataFrame, norm: str, lr: float, seed: int) -> pd.DataFrame:
    return table[(table["norm"] == norm) & (table["lr"] == lr) & (table["seed"] == seed)]


def test_csv_export_holds_every_logged_scalar_once_with_the_runs_settings(sweep: Path, tmp_path: Path,
                                                                          capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "exports" / "curves.csv"
    assert cli_main(["report", str(sweep), "--curves", str(out)]) == 0
    table = pd.read_csv(out)
    logged = _logged(sweep)
    assert len(table) == len(logged) and len(logged) > 0
    assert set(zip(table["run"], table["tag"], table["step"], strict=True)) == logged

    loaded = load_sweep(sweep)
    assert list(table.columns) == [*CURVE_COLUMNS, *loaded.toggles, *loaded.hparams, "status"]
    assert {"norm", "lr", "seed", "data", "status"} <= set(table.columns)
    assert set(table["tag"]) == {"train/loss", "train/lr", "train/grad_norm", "val/acc", "val/loss",
                                 "attn/max_logit/layer_0", "attn/max_logit/layer_1"}

    # the diverged run: its curves stop at the step it diverged, where the loss is NaN as logged
    diverged = _run_of(table, *fab.DIVERGED)
    loss = diverged[diverged["tag"] == "train/loss"].sort_values("step")
    assert loss["step"].max() == fab.DIVERGED_STEP and math.isnan(loss["value"].iloc[-1])
    assert set(diverged["status"]) == {"diverged"}
    # the resumed run's redone steps: once each, the later history's value
    resumed = _run_of(table, *fab.RESUMED)
    redone = resumed[(resumed["tag"] == "train/loss") & (resumed["step"] == 16)]
    assert len(redone) == 1 and redone["value"].iloc[0] == pytest.approx(fab.loss_curve(*fab.RESUMED)[16], rel=1e-6)
    # the pending run has no events: absent; the running and failed runs logged: present, with their status
    statuses = table.groupby("run")["status"].first()
    assert "pending" not in set(statuses) and {"running", "failed", "completed"} <= set(statuses)
    printed = capsys.readouterr()
    assert f"wrote {len(table)} rows" in printed.out and "1 pending" in printed.err

    # every row carries its run's recorded settings
    for run, rows in table.groupby("run"):
        config = loaded.runs.loc[run]
        assert (rows["lr"] == config["lr"]).all() and (rows["norm"] == config["norm"]).all()


def test_csv_gz_round_trip_is_exact(sweep: Path, tmp_path: Path) -> None:
    expected = curves_table(load_sweep(sweep), ["train/loss"])
    out = tmp_path / "loss.csv.gz"
    assert cli_main(["report", str(sweep), "--curves", str(out), "--curves-tags", "train/loss"]) == 0
    assert out.read_bytes()[:2] == b"\x1f\x8b"  # gzip
    back = pd.read_csv(out)
    assert set(back["tag"]) == {"train/loss"} and len(back) == len(expected)
    pd.testing.assert_frame_equal(back[list(CURVE_COLUMNS)], expected[list(CURVE_COLUMNS)], check_dtype=False)
    assert back["norm"].tolist() == expected["norm"].tolist() and back["seed"].tolist() == expected["seed"].tolist()


def test_tag_patterns_select_tags(sweep: Path) -> None:
    table = curves_table(load_sweep(sweep), ["attn/*", "val/acc"])
    assert set(table["tag"]) == {"attn/max_logit/layer_0", "attn/max_logit/layer_1", "val/acc"}


def test_the_run_attributes_match_the_records(sweep: Path) -> None:
    """The toggles and hparams on each row are the run's, as identity reads them from its config."""
    import yaml

    table = curves_table(load_sweep(sweep), ["train/lr"])
    for run, rows in table.groupby("run"):
        config = yaml.safe_load((sweep / run / "config.yaml").read_text())
        values = {**toggles_of(config), **hparams_of(config)}
        assert rows["lr"].iloc[0] == values["lr"] and rows["norm"].iloc[0] == values["norm"]
        assert rows["value"].tolist() == pytest.approx([values["lr"]] * len(rows), rel=1e-6)  # its own lr (float32)


@pytest.mark.parametrize(("args", "message"), [
    (["--curves", "{out}/curves.txt"], "error: --curves: got '{out}/curves.txt'; the file name must end in "
                                       ".parquet, .csv, .csv.gz"),
    (["--curves", "{out}/.csv"], "error: --curves: got '{out}/.csv'"),
    (["--curves", "{out}/c.csv", "--curves-tags", "train/los"], "error: --curves-tags: train/los matches no "
                                                                  "scalar tag in"),
    (["--curves", "{out}/c.csv", "--curves-tags", ","], "error: --curves-tags: got ','"),
    (["--curves-tags", "train/loss"], "error: --curves-tags: only with --curves FILE"),
])
def test_bad_input_is_one_error_line_and_nothing_written(sweep: Path, tmp_path: Path, args: list[str], message: str,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    argv = ["report", str(sweep), *[a.format(out=out) for a in args]]
    assert cli_main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(message.format(out=out)), err
    assert not out.exists() and not (sweep / "report").exists()


def test_an_unwritable_place_is_one_error_line(sweep: Path, tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    assert cli_main(["report", str(sweep), "--curves", str(blocker / "curves.csv")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: --curves: cannot write to '{blocker / 'curves.csv'}'")
    assert blocker.read_text() == "not a folder"


def test_parquet_needs_pyarrow_or_is_written(sweep: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Without pyarrow (the package does not depend on it): one line saying how to get it, nothing written; with
    it: the same table as Parquet."""
    import importlib.util

    out = tmp_path / "curves.parquet"
    code = cli_main(["report", str(sweep), "--curves", str(out)])
    if importlib.util.find_spec("pyarrow") is None and importlib.util.find_spec("fastparquet") is None:
        assert code == 2 and not out.exists()
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error: --curves:") and "pip install pyarrow" in err[0]
    else:
        assert code == 0
        assert len(pd.read_parquet(out)) == len(_logged(sweep))


def test_two_sweeps_or_a_sweep_without_events(sweep: Path, tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "c.csv"
    assert cli_main(["report", str(sweep), str(sweep), "--curves", str(out)]) == 2
    assert capsys.readouterr().err.strip() == "error: --curves: exports the curves of one sweep folder; got 2"
    records_only = tmp_path / "records"
    fab.write_record(records_only, 0, final_val_acc=0.9)  # a summary, no events
    assert cli_main(["report", str(records_only), "--curves", str(out)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: no curves to export in {records_only}: no run has")
    assert not out.exists()
