"""The command line as a user meets it: help and version, loggers given with --trainer.logger, the dry run
without data and its cost estimate, and one stated cost per grid."""

from __future__ import annotations

import csv
import glob
import json
import re
from pathlib import Path

import pytest
from sweep_helpers import BASE, ROOT, TINY, SweepResult, fabricate_cifar10, write_grid

from stability.cli import COMMANDS, main
from stability.record.files import COLLAPSED, COMPLETED, RunSummary
from stability.sweep.cells import expand
from stability.sweep.grid import header_facts, load_grid
from stability.sweep.plan import make_plan

TINY_FIT = ["--config", str(BASE), "--model.vit.embed_dim", "16", "--model.vit.depth", "1", "--model.vit.num_heads",
            "2", "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "3", "--trainer.limit_val_batches", "1",
            "--trainer.limit_test_batches", "1", "--trainer.enable_progress_bar", "false"]


def run_cli(argv: list[str], capsys: pytest.CaptureFixture) -> tuple[int, str, str]:
    try:
        rc = main(argv)
    except SystemExit as done:  # argparse and jsonargparse end --help with SystemExit(0)
        rc = int(done.code or 0)
    out, err = capsys.readouterr()
    return rc, out, err


# -- help and version --------------------------------------------------------------------------------------------
def test_version(capsys: pytest.CaptureFixture) -> None:
    import stability

    assert run_cli(["--version"], capsys) == (0, f"stability {stability.__version__}\n", "")


@pytest.mark.parametrize("argv", [[name, "--help"] for name in COMMANDS] + [["bench", "sweep", "--help"],
                                                                            ["bench", "model", "--help"]])
def test_every_command_has_help(argv: list[str], capsys: pytest.CaptureFixture, tmp_path: Path,
                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # nothing may be written: an empty folder shows it
    rc, out, err = run_cli(argv, capsys)
    assert rc == 0, err
    assert out.startswith(f"usage: stability {' '.join(a for a in argv if a != '--help')}"), out[:200]
    assert list(tmp_path.iterdir()) == []


def test_demo_help_describes_the_demo(capsys: pytest.CaptureFixture) -> None:
    _, out, _ = run_cli(["demo", "--help"], capsys)
    runs, cost = readme_grids()["digits.yaml"]
    assert "ablations/digits.yaml" in out and "[out]" in out
    assert f"{runs} runs, {cost}" in " ".join(out.split())  # the grid header's figures, as the README quotes them


# -- loggers the Lightning way -----------------------------------------------------------------------------------
def test_a_csv_logger_writes_beside_the_tensorboard_events(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    run_dir, csv_dir = tmp_path / "run", tmp_path / "csv"
    rc, out, err = run_cli(["fit", *TINY_FIT, "--run_dir", str(run_dir), "--trainer.logger", "CSVLogger",
                            "--trainer.logger.save_dir", str(csv_dir)], capsys)
    assert rc == 0, err
    assert out.startswith((f"completed: {run_dir}", f"collapsed: {run_dir}"))  # a few steps may stay at chance
    rows = list(csv.DictReader((csv_dir / "lightning_logs" / "version_0" / "metrics.csv").open()))
    losses = [float(r["train/loss"]) for r in rows if r.get("train/loss")]
    assert len(losses) == 3 and all(0 < loss < 10 for loss in losses)
    final = [r for r in rows if r.get("hp/test_acc")]  # the run's result reaches every logger
    assert final and 0 <= float(final[-1]["hp/test_acc"]) <= 1
    assert list(run_dir.glob("events.out.tfevents.*"))  # the project's own TensorBoard logger is still there
    status = RunSummary.from_dict(json.loads((run_dir / "summary.json").read_text())).status
    assert status in (COMPLETED, COLLAPSED)
    marked = any(float(r.get("Stability/collapsed") or 0) == 1.0 for r in rows)
    assert marked == (status == COLLAPSED)  # a collapse is marked in the user's loggers too, and only then


def test_logger_false_means_no_logger_at_all(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    rc, _, err = run_cli(["fit", *TINY_FIT, "--run_dir", str(tmp_path / "run"), "--trainer.logger", "false"], capsys)
    assert rc == 0, err
    assert (tmp_path / "run" / "summary.json").is_file()
    assert not list((tmp_path / "run").glob("events.out.tfevents.*"))


@pytest.mark.parametrize("argv, expected", [
    (["--trainer.logger", "CSVLogger"],
     "error: trainer.logger: CSVLogger cannot be built: the following arguments are required: save_dir (e.g. "
     "--trainer.logger CSVLogger --trainer.logger.save_dir runs/csv)"),
    (["--trainer.logger", "NoSuchLogger"], "error: trainer.logger: got 'NoSuchLogger'; give a Lightning logger class"),
])
def test_a_logger_that_cannot_be_built_is_one_line(argv: list[str], expected: str, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture) -> None:
    rc, out, err = run_cli(["fit", *TINY_FIT, "--run_dir", str(tmp_path / "run"), *argv], capsys)
    assert rc == 2 and out == ""
    assert last_line(err).startswith(expected)
    assert not (tmp_path / "run").exists()  # nothing written


def last_line(err: str) -> str:
    """The error line (in-process, Lightning's log handlers may print their own complaints before it)."""
    lines = err.strip().splitlines()
    assert not any(line.startswith("error:") for line in lines[:-1]), err
    return lines[-1]


def test_a_logger_whose_package_is_missing_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    try:
        import wandb  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("wandb is installed here")
    rc, _, err = run_cli(["fit", *TINY_FIT, "--run_dir", str(tmp_path / "run"), "--trainer.logger", "WandbLogger"],
                         capsys)
    assert rc == 2 and last_line(err).startswith("error: trainer.logger: WandbLogger cannot be built: Requirement "
                                                 "'wandb")


# -- the dry run ------------------------------------------------------------------------------------------------
def cifar_grid(folder: Path) -> Path:
    """Two CIFAR-10 cells of a tiny ViT, their data folder absent."""
    return write_grid(folder, "tinycifar", {
        "overrides": TINY | {"model.vit.img_size": 32, "model.vit.in_chans": 3, "model.vit.patch_size": 8,
                             "data": {"class_path": "stability.data.CIFAR10DataModule",
                                      # fabricated files are not the official ones: opt in to them
                                      "init_args": {"data_dir": str(folder / "no-data"), "num_workers": 0,
                                                    "allow_unverified": True}}},
        "axes": {"model.vit.norm": ["layernorm", "centernorm"]},
    })


def test_dry_run_plans_without_the_data_and_says_so(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    grid, out = cifar_grid(tmp_path), tmp_path / "out"
    rc, text, err = run_cli(["sweep", str(grid), "--dry-run", "--out", str(out)], capsys)
    assert rc == 0, err
    lines = text.splitlines()
    planned = [line.split()[-1] for line in lines if re.match(r"\s*\d+\s+pending\s", line)]
    assert any(line.startswith("data: missing: data.data_dir: ") and "no-data" in line for line in lines)
    cost = next(line for line in lines if line.startswith("cost: "))
    assert re.match(r"cost: about [\dhms]+ for 2 runs on \d workers?, .* \(estimated: [\d.e+-]+ TFLOP at [\d.]+ "
                    r"GFLOP/s", cost), cost
    assert not out.exists()
    # once the data is there, the real plan has the very same runs: ids hash the resolved config, not the data
    fabricate_cifar10(tmp_path / "no-data")
    assert planned == [r.run_name for r in make_plan(load_grid(grid))]


def test_dry_run_cost_from_runs_completed_earlier(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    grid = write_grid(tmp_path, "four", {"overrides": TINY, "axes": {"model.lr": [1e-3, 2e-3, 3e-3, 4e-3]}})
    out = tmp_path / "out"
    runs = make_plan(load_grid(grid))
    for run, wall in zip(runs[:2], (10.0, 14.0)):
        RunSummary(status=COMPLETED, run_name=run.run_name, run_id=run.run_id, wall_time_s=wall).write(
            out / run.run_name)
    rc, text, _ = run_cli(["sweep", str(grid), "--dry-run", "--out", str(out), "--workers", "2"], capsys)
    assert rc == 0
    assert "cost: about 12s for the 2 runs left on 2 workers (measured: the 2 runs completed here took 12.0 s each)" \
        in text


@pytest.mark.slow
def test_dry_run_of_the_cifar10_grid_without_its_data(capsys: pytest.CaptureFixture, tmp_path: Path) -> None:
    rc, text, err = run_cli(["sweep", str(ROOT / "ablations" / "cifar10.yaml"), "--dry-run", "--out",
                             str(tmp_path / "out"), "--set", f"data.init_args.data_dir={tmp_path / 'none'}"], capsys)
    assert rc == 0, err
    assert "32 runs -> " in text and "data: missing: data.data_dir: " in text
    assert re.search(r"cost: about \d+d\d\dh for 32 runs", text)  # days on this machine's CPUs


# -- one cost per grid -------------------------------------------------------------------------------------------
def readme_grids() -> dict[str, tuple[str, str]]:
    """`name.yaml` -> (runs, cost) from the README's table of grids."""
    rows = {}
    for line in (ROOT / "README.md").read_text().splitlines():
        match = re.match(r"\| `(?P<grid>[\w-]+\.yaml)` \|[^|]*\| (?P<runs>[^|]+) \| (?P<cost>[^|]+) \|$", line)
        if match:
            rows[match["grid"]] = (match["runs"].strip(), match["cost"].strip())
    return rows


@pytest.mark.parametrize("grid", sorted(p.name for p in (ROOT / "ablations").glob("*.yaml")))
def test_each_grid_states_one_cost_and_the_readme_table_agrees(grid: str) -> None:
    facts = header_facts(ROOT / "ablations" / grid)
    assert facts, f"{grid}: the header needs 'Runs: N' and 'Cost: <figure> (measured|estimated ...'"
    runs, cost = facts
    assert runs == len(expand(load_grid(ROOT / "ablations" / grid)))
    assert readme_grids()[grid] == (str(runs), cost)


def test_summary_json_values_are_typed(smoke_sweep: SweepResult) -> None:
    for path in smoke_sweep.out.glob("*/summary.json"):
        record = json.loads(path.read_text())
        assert record["hparams"]["gradient_clip_val"] is None  # null, not "None"
        assert isinstance(record["hparams"]["lr"], float) and isinstance(record["hparams"]["seed"], int)
        assert record["toggles"]["warmup"] is True


@pytest.mark.parametrize("argv", [["report", "--no-such-option", "x"], ["bench", "--nope"], ["demo", "a", "b"],
                                  ["sweep", "--no-such-option"]])
def test_a_bad_option_of_any_subcommand_is_one_error_line(argv: list[str], capsys: pytest.CaptureFixture) -> None:
    rc, out, err = run_cli(argv, capsys)
    lines = err.strip().splitlines()
    assert rc == 2 and out == "" and len(lines) == 1 and lines[0].startswith(f"error: stability {argv[0]}: "), err


def test_the_demo_points_at_files_that_exist(smoke_sweep: SweepResult, tmp_path: Path,
                                             capsys: pytest.CaptureFixture) -> None:
    from stability.demo import where_to_look

    report_dir = tmp_path / "report"
    rc, _, err = run_cli(["report", str(smoke_sweep.out), "--out", str(report_dir)], capsys)
    assert rc == 0, err
    for line in where_to_look(smoke_sweep.out, report_dir):
        label, _, rest = line.partition(":")
        # "a/b/*.md, *.csv" -> a/b/*.md and a/b/*.csv; "--logdir a/b" -> a/b; "<run>" -> any run folder
        words = [w.strip("(),;") for w in rest.replace("<run>", "*").split()]
        paths = [w for w in words if "/" in w]
        folder = Path(paths[0]).parent
        paths += [str(folder / w) for w in words if w.startswith("*.")]
        assert paths, line
        for text in paths:
            assert glob.glob(text), f"{label}: {text} does not exist"
