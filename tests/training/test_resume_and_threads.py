"""A run cut off by a kill and resumed records what an uninterrupted run records, and a run's config.yaml
reproduces it: the kill leaves no temporary file behind, and the thread count travels with the config.

- killed after its last epoch, before its summary (``checkpoints/last.ckpt`` holds the final epoch): the
  resumed run has no epoch left to train, and still records the same Lipschitz lower bound (it used to be
  null: the bound is measured at the end of training, on images of the last training batch, and a resumed
  run without epochs never reaches either);
- temporary files of writes a kill cut off (``.last.ckpt.XXXXXXXX.tmp``) are removed when the run starts
  again, and nothing else is;
- ``config.yaml`` records ``threads``; ``stability fit --config <run>/config.yaml`` applies it before building
  anything, so it reproduces a sweep's one-thread run bit for bit, under the same run id.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from sweep_helpers import SweepResult

from stability.cli import main
from stability.errors import ConfigError
from stability.record.config_files import load_config_files
from stability.record.files import atomic_file
from stability.training import run as train
from stability.training.cli import parse

ROOT = Path(__file__).resolve().parents[2]
TIMINGS = {"wall_time_s", "train_time_s", "images_per_s"}


def tiny_config() -> dict[str, Any]:
    """The shipped digits base config, shrunk to 2 epochs of 4 steps (the keys users write)."""
    config = load_config_files([ROOT / "ablations" / "base" / "digits.yaml"])
    config["model"]["vit"].update(embed_dim=16, depth=2, num_heads=2)
    config["trainer"].update(max_epochs=2, limit_train_batches=4, limit_val_batches=2, limit_test_batches=2,
                             enable_progress_bar=False)
    return config


def without(summary: dict[str, Any], keys: set[str]) -> dict[str, Any]:
    return {k: v for k, v in summary.items() if k not in keys}


def test_a_run_killed_after_its_last_epoch_resumes_to_the_same_record(tmp_path: Path) -> None:
    """The state a kill between the last epoch's checkpoint and the summary leaves: every epoch trained and
    checkpointed, no summary.json, and the temporary files of writes the kill cut short."""
    config = tiny_config()
    straight = train.run(config, tmp_path / "straight").to_dict()
    assert straight["lipschitz_lower"] is not None and math.isfinite(straight["lipschitz_lower"])

    run_dir = tmp_path / "killed"
    train.run(config, run_dir)
    (run_dir / "summary.json").unlink()  # the kill came before the record
    assert torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)["epoch"] == 1  # the last epoch
    stale = [run_dir / "checkpoints" / ".last.ckpt.0badc0de.tmp", run_dir / ".summary.json.1234abcd.tmp"]
    for path in stale:
        path.write_bytes(b"cut off by a kill")
    kept = {run_dir / "checkpoints" / "notes.tmp": b"a user's", run_dir / ".last.ckpt.tmp": b"not our pattern",
            run_dir / ".summary.json.XYZ12345.tmp": b"not hex"}
    for path, data in kept.items():
        path.write_bytes(data)

    resumed = train.run(config, run_dir).to_dict()
    assert resumed["lipschitz_lower"] is not None and math.isfinite(resumed["lipschitz_lower"])
    assert resumed["lipschitz_lower"] == straight["lipschitz_lower"]
    # nothing else the kill cut off is missing either: the record is the uninterrupted run's, but for timings
    names = {"run_name", *TIMINGS}
    assert without(resumed, names) == without(straight, names)
    assert not any(path.exists() for path in stale)
    assert all(path.read_bytes() == data for path, data in kept.items())


def test_the_checkpoint_keeps_only_the_images_the_lower_bound_needs(tmp_path: Path) -> None:
    """The last batch's first 32 images (a slice saved alone, not the batch's whole storage)."""
    config = tiny_config()
    config["trainer"]["max_epochs"] = 1
    train.run(config, tmp_path / "run")
    state = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=True)["callbacks"]
    (images,) = [s["last_images"] for s in state.values() if "last_images" in s]
    assert images.shape[0] == 32 and images.untyped_storage().nbytes() == images.numel() * images.element_size()


def test_temporary_files_are_cleaned_only_in_the_run_folder_and_its_checkpoints(tmp_path: Path) -> None:
    """A real atomic write cut off half-way names its temporary file as the clean-up expects; one in a
    sub-folder the run does not write (or beside the run folder) is not the run's to remove."""
    from stability.training.run_folder import TEMP_NAME, remove_stale_temp_files

    run_dir = tmp_path / "run"
    (run_dir / "checkpoints").mkdir(parents=True)
    (run_dir / "other").mkdir()
    with pytest.raises(KeyboardInterrupt), atomic_file(run_dir / "checkpoints" / "last.ckpt") as file:
        file.write(b"half a checkpoint")
        (name,) = [path.name for path in (run_dir / "checkpoints").iterdir()]
        raise KeyboardInterrupt  # atomic_file removes its own file on any exception; a SIGKILL would not
    assert TEMP_NAME.fullmatch(name)
    (run_dir / "checkpoints" / name).write_bytes(b"what a SIGKILL leaves")
    elsewhere = [run_dir / "other" / ".x.0123abcd.tmp", tmp_path / ".run.0123abcd.tmp"]
    for path in elsewhere:
        path.write_bytes(b"keep")
    (run_dir / ".config.yaml.89abcdef.tmp").mkdir()  # a folder, whatever its name: never ours
    assert remove_stale_temp_files(run_dir) == [run_dir / "checkpoints" / name]
    assert all(path.exists() for path in elsewhere) and (run_dir / ".config.yaml.89abcdef.tmp").is_dir()


# -- threads ------------------------------------------------------------------------------------------------
def test_fit_on_a_sweep_runs_config_reproduces_it_bit_for_bit(smoke_sweep: SweepResult, tmp_path: Path) -> None:
    """The sweep ran each cell in a worker with the plan's thread count; this process starts with another
    count, and the config's ``threads`` must set it before the model is built."""
    assert smoke_sweep.rc == 0, smoke_sweep.stderr
    out = smoke_sweep.out
    threads = json.loads((out / "plan.json").read_text())["threads"]
    run_dir = sorted(p.parent for p in out.glob("*/summary.json"))[0]
    assert yaml.safe_load((run_dir / "config.yaml").read_text())["threads"] == threads
    swept = json.loads((run_dir / "summary.json").read_text())

    torch.set_num_threads(threads + 1)
    try:
        rc = main(["fit", "--config", str(run_dir / "config.yaml"), "--run_dir", str(tmp_path / "again")])
        used = torch.get_num_threads()
    finally:
        torch.set_num_threads(1)  # the test session's count (conftest.py)
    assert rc == 0 and used == threads
    again = json.loads((tmp_path / "again" / "summary.json").read_text())
    assert again["threads"] == threads and again["run_id"] == swept["run_id"]
    assert again["final_train_loss"] == swept["final_train_loss"] and again["test_loss"] == swept["test_loss"]
    assert without(again, {"run_name", *TIMINGS}) == without(swept, {"run_name", *TIMINGS})
    assert yaml.safe_load((tmp_path / "again" / "config.yaml").read_text())["threads"] == threads


def test_threads_is_recorded_but_not_part_of_the_run_id(tmp_path: Path) -> None:
    config = tiny_config()
    config["trainer"]["max_epochs"] = 1
    resolved = parse(config).config_dump_dict()
    assert "threads" not in resolved  # unset: a sweep's resolved cells and plans are as before the key existed
    try:
        two = parse({**config, "threads": 2}).config_dump_dict()
        summary = train.run(two, tmp_path / "run")
    finally:
        torch.set_num_threads(1)
    plain = train.run(resolved, tmp_path / "plain", threads=1)
    assert two["threads"] == 2 and summary.threads == 2 and summary.run_id == plain.run_id
    assert yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())["threads"] == 2


@pytest.mark.parametrize("value", [0, -1, True, "two"])
def test_a_bad_thread_count_is_one_line_naming_the_key(value: object, tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    config = tiny_config()
    config["threads"] = value
    with pytest.raises(ConfigError, match="threads"):
        parse(config)
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    capsys.readouterr()
    assert main(["fit", "--config", str(path), "--run_dir", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "threads" in err[0], err
    assert not (tmp_path / "run").exists()


def test_a_sweep_resumes_a_cut_off_cell_whose_config_records_threads(tmp_path: Path) -> None:
    """A cell cut off after its config.yaml was written (which records ``threads``) is still the plan's cell
    when the sweep runs again: the sweep's folder check hashes config.yaml like the plan, threads aside."""
    from sweep_helpers import TINY, write_grid

    from stability.sweep.drive import check_run_folders
    from stability.sweep.grid import load_grid
    from stability.sweep.plan import make_plan

    (cell,) = make_plan(load_grid(write_grid(tmp_path, "g", {"overrides": TINY, "seeds": [0]})))
    out = tmp_path / "out"
    train.run(cell.config, out / cell.run_name, threads=1, run_id=cell.run_id)
    (out / cell.run_name / "summary.json").unlink()  # cut off before its record
    assert yaml.safe_load((out / cell.run_name / "config.yaml").read_text())["threads"] == 1
    check_run_folders([cell], out)  # raises ConfigError if the folder no longer counts as the cell's
