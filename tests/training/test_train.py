"""One training run end to end: real Lightning fits on digits, real run records, real TensorBoard events."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import lightning as L
import pytest
import torch
import yaml
from tbparse import SummaryReader

from stability.errors import ConfigError, RunFailed
from stability.record.config_files import load_config_files, merge_nested
from stability.record.files import RunSummary, load_summary
from stability.record.identity import TOGGLES, config_hash
from stability.training import run as train
from stability.training.cli import parse, validate

ROOT = Path(__file__).resolve().parents[2]
TRAINED = ("completed", "collapsed")  # runs of a few steps may not leave chance: the collapse rule says so
TIMING_KEYS = {"wall_time_s", "train_time_s", "images_per_s"}


def tiny_config(**model: object) -> dict:
    """The shipped digits base config, shrunk to a few steps (the same keys users write)."""
    config = load_config_files([ROOT / "ablations" / "base" / "digits.yaml"])
    config["model"]["vit"].update(embed_dim=16, depth=2, num_heads=2)
    config["model"].update(model)
    config["trainer"].update(max_epochs=2, limit_train_batches=4, limit_val_batches=2, limit_test_batches=2,
                             enable_progress_bar=False)
    config["telemetry"]["every_n_steps"] = 3
    return config


def scalars(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """tag -> [(step, value)] from the run's event files, latest write winning for a repeated step."""
    frame = SummaryReader(str(run_dir), extra_columns={"wall_time"}).scalars
    frame = frame.sort_values("wall_time").drop_duplicates(["tag", "step"], keep="last")
    return {tag: sorted(zip(g["step"], g["value"])) for tag, g in frame.groupby("tag")}


@pytest.fixture(scope="module")
def baseline_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, RunSummary]:
    run_dir = tmp_path_factory.mktemp("runs") / "baseline"
    return run_dir, train.run(tiny_config(), run_dir)


def test_run_writes_a_complete_record(baseline_run: tuple[Path, RunSummary]) -> None:
    run_dir, summary = baseline_run
    assert summary.status in TRAINED  # 8 steps: often still at chance, which the collapse rule records
    assert (summary.collapse_reason is not None) == (summary.status == "collapsed")
    assert len(summary.train_loss_history) == 2 and len(summary.val_acc_history) == 2 and summary.max_log_z
    assert summary.to_dict() == json.loads((run_dir / "summary.json").read_text())
    assert summary.steps == 8 and summary.epochs == 2
    assert summary.toggles == {"stem": "patchify", "norm": "layernorm", "norm_placement": "pre",
                                  "attention": "dot", "pos_embed": "default", "pos_embed_type": "learned",
                                  "residual": "plain", "init": "default", "activation": "gelu", "mlp": "mlp",
                                  "head": "linear", "reparam": "none", "warmup": True}
    assert summary.hparams["lr"] == 0.003 and summary.hparams["seed"] == 0
    for key in ("final_val_acc", "best_val_acc", "test_acc"):
        assert 0.0 <= getattr(summary, key) <= 1.0
    assert summary.best_val_acc >= summary.final_val_acc
    assert summary.initial_loss == pytest.approx(2.3, abs=0.5)  # ~ln(10) at init
    assert summary.params > 0 and summary.flops_per_image > 0
    assert summary.max_grad_norm > 0 and summary.max_attn_logit is not None
    assert summary.images_per_s > 0 and summary.train_time_s <= summary.wall_time_s
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()
    resolved = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert resolved["model"]["vit"]["embed_dim"] == 16 and resolved["run_dir"] == str(run_dir)
    # The resolved config alone reproduces the run's identity.
    assert config_hash(resolved) == summary.run_id


def test_telemetry_reaches_tensorboard(baseline_run: tuple[Path, RunSummary]) -> None:
    run_dir, summary = baseline_run
    tags = scalars(run_dir)
    for tag in ("train/loss", "train/lr", "train/grad_norm", "train/log_z"):
        assert [step for step, _ in tags[tag]] == list(range(8)), tag
    # Warmup: the LR rises over the first epoch (4 steps at warmup_epochs=2 -> 8 warmup steps).
    lrs = [value for _, value in tags["train/lr"]]
    assert lrs[0] < lrs[1] < lrs[2]
    # Sampled probes every 3 steps, one series per block / attention layer.
    for tag in ("grad_norm/block_0", "grad_norm/block_1", "update_ratio/block_1",
                "attn/max_logit/layer_0", "attn/entropy/layer_1"):
        assert [step for step, _ in tags[tag]] == [0, 3, 6], tag
    assert all(0 < v < torch.log(torch.tensor(17.0)) + 1e-4 for _, v in tags["attn/entropy/layer_0"])
    assert max(v for _, v in tags["train/grad_norm"]) == pytest.approx(summary.max_grad_norm, rel=1e-5)
    assert [step for step, _ in tags["val/acc"]] and [step for step, _ in tags["test/acc"]]
    assert tags["hp/best_val_acc"][-1][1] == pytest.approx(summary.best_val_acc)
    assert tags["hp/diverged"][-1][1] == 0.0


def test_hparams_tab_has_toggles_and_real_metrics(baseline_run: tuple[Path, RunSummary]) -> None:
    run_dir, _ = baseline_run
    hparams = SummaryReader(str(run_dir)).hparams
    values = dict(zip(hparams["tag"], hparams["value"]))
    assert values["toggle/norm"] == "layernorm" and values["toggle/warmup"] == "True"
    assert values["trial/lr"] == pytest.approx(0.003)
    assert "hp_metric" not in scalars(run_dir)  # no Lightning placeholder metric


def test_same_seed_same_numbers(baseline_run: tuple[Path, RunSummary], tmp_path: Path) -> None:
    _, first = baseline_run
    second = train.run(tiny_config(), tmp_path / "again")
    strip = lambda s: {k: v for k, v in s.to_dict().items() if k not in TIMING_KEYS | {"run_name"}}  # noqa: E731
    assert strip(first) == strip(second)


def test_finished_run_is_not_rerun(baseline_run: tuple[Path, RunSummary]) -> None:
    run_dir, summary = baseline_run
    before = (run_dir / "summary.json").read_bytes()
    assert train.run(tiny_config(), run_dir) == summary
    assert (run_dir / "summary.json").read_bytes() == before


class _InterruptAfter(L.Callback):
    """Simulates Ctrl-C (or a preemption) after ``steps`` optimiser steps."""

    def __init__(self, steps: int) -> None:
        self.steps = steps

    def on_train_batch_end(self, trainer: L.Trainer, *args: object) -> None:
        if trainer.global_step >= self.steps:
            raise KeyboardInterrupt


def test_resume_continues_from_last_checkpoint(tmp_path: Path) -> None:
    config = tiny_config()
    config["trainer"]["max_epochs"] = 3
    run_dir = tmp_path / "resumed"
    with pytest.raises(SystemExit):  # Lightning turns Ctrl-C into a graceful shutdown and exit(1)
        train.run_cli(parse(config), run_dir, extra_callbacks=[_InterruptAfter(6)])
    assert not (run_dir / "summary.json").exists()  # cut off: no result yet
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()  # saved at the end of epoch 1 (step 4)
    summary = train.run(config, run_dir)
    assert summary.status in TRAINED and summary.steps == 12 and summary.epochs == 3
    loss_steps = [step for step, _ in scalars(run_dir)["train/loss"]]
    assert loss_steps == list(range(12))  # steps 4-5 were logged twice; the reader keeps one of each
    # ... and the resumed run matches an uninterrupted one from the same seed.
    uninterrupted = train.run(config, tmp_path / "straight")
    # the per-epoch history survives the cut: the resumed run's equals an uninterrupted one's
    assert summary.train_loss_history == pytest.approx(uninterrupted.train_loss_history, rel=1e-5)
    assert summary.final_train_loss == pytest.approx(uninterrupted.final_train_loss, rel=1e-5)
    assert summary.test_acc == pytest.approx(uninterrupted.test_acc)


def test_divergence_is_a_result(tmp_path: Path) -> None:
    summary = train.run(tiny_config(lr=50.0, warmup=False), tmp_path / "diverged")
    assert summary.status == "diverged"
    assert summary.diverged_step is not None and summary.diverged_step < 8
    assert "initial loss" in summary.divergence_reason or "non-finite" in summary.divergence_reason
    assert summary.steps == summary.diverged_step + 1  # stopped right there
    assert summary.test_acc is None
    tags = scalars(tmp_path / "diverged")
    assert tags["hp/diverged"][-1][1] == 1.0
    assert tags["hp/steps_survived"][-1][1] == summary.diverged_step


def test_failed_run_is_recorded_and_raises(tmp_path: Path) -> None:
    # An image folder with one image cut short: its header passes the check before the run, but decoding it
    # fails inside training.
    import io

    import numpy as np
    from PIL import Image

    for split in ("train", "val"):
        for label in ("a", "b"):
            folder = tmp_path / "images" / split / label
            folder.mkdir(parents=True)
            for i in range(2):
                Image.new("RGB", (8, 8), (i * 40, 0, 0)).save(folder / f"{i}.png")
    noise = Image.fromarray(np.random.default_rng(0).integers(0, 255, (32, 32, 3), dtype=np.uint8))
    png = io.BytesIO()
    noise.save(png, "PNG")
    (tmp_path / "images" / "train" / "a" / "broken.png").write_bytes(png.getvalue()[: len(png.getvalue()) // 2])
    config = tiny_config()
    config["model"]["vit"].update(in_chans=3, num_classes=2)
    config["data"] = {"class_path": "stability.data.ImageFolderDataModule",
                      "init_args": {"data_dir": str(tmp_path / "images"), "img_size": 8, "batch_size": 5,
                                    "num_workers": 0}}
    with pytest.raises(RunFailed, match="broken.png|truncated|cannot"):
        train.run(config, tmp_path / "failed")
    summary = json.loads((tmp_path / "failed" / "summary.json").read_text())
    assert summary["status"] == "failed" and summary["error"]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"model": {"vit": {"norm": "centrenorm"}}},
         rf"^model\.vit\.norm: got 'centrenorm'; valid values: {', '.join(TOGGLES['norm'].values)}"),
        ({"model": {"vit": {"embed_dim": 15}}}, r"embed_dim=15 is not divisible by num_heads=2"),
        ({"model": {"lr": -1.0}}, r"model\.lr"),
        ({"model": {"learning_rate": 0.1}}, r"learning_rate"),
        ({"data": {"class_path": "stability.data.CIFAR10DataModule",
                   "init_args": {"data_dir": "/nonexistent/cifar"}}}, r"/nonexistent/cifar"),
    ],
)
def test_bad_config_is_one_clear_line(change: dict, message: str) -> None:
    config = merge_nested(tiny_config(), change)
    if "data" in change:
        config["data"] = change["data"]
    with pytest.raises(ConfigError, match=message) as error:
        validate(config)
    assert "\n" not in str(error.value)


def test_bad_run_folders(tmp_path: Path, baseline_run: tuple[Path, RunSummary]) -> None:
    (tmp_path / "a-file").write_text("")
    with pytest.raises(ConfigError, match="cannot write"):
        train.run(tiny_config(), tmp_path / "a-file" / "run")
    # A folder holding another config is not silently reused.
    with pytest.raises(ConfigError, match="different config"):
        train.run(tiny_config(lr=0.01), baseline_run[0])
    # A corrupt checkpoint does not block the run: it is set aside (kept, renamed) and the run starts over.
    run_dir = tmp_path / "corrupt"
    (run_dir / "checkpoints").mkdir(parents=True)
    (run_dir / "checkpoints" / "last.ckpt").write_bytes(b"\x00garbage")
    assert train.run(tiny_config(), run_dir).status in TRAINED
    assert (run_dir / "last.unreadable-1.ckpt").read_bytes() == b"\x00garbage"


def test_fit_command_line(tmp_path: Path) -> None:
    """`stability fit` as a user types it: config file + overrides; bad input exits 2 with one line."""
    config = tiny_config()
    config["trainer"].update(max_epochs=1, limit_train_batches=2)
    base = tmp_path / "tiny.yaml"
    base.write_text(yaml.safe_dump(config))
    run_dir = tmp_path / "cli-run"
    command = [sys.executable, "-m", "stability.cli", "fit", "--config", str(base),
               "--model.vit.norm", "centernorm", "--model.vit.attention", "cosine", "--run_dir", str(run_dir)]
    done = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.startswith(("completed: ", "collapsed: "))
    summary = load_summary(run_dir)
    assert summary.toggles["norm"] == "centernorm" and summary.toggles["attention"] == "cosine"

    bad = subprocess.run([*command[:-2], "--model.vit.stem", "patchyfy", "--run_dir", str(tmp_path / "bad")],
                         capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert bad.returncode == 2
    errors = [line for line in bad.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "patchyfy" in errors[0] and "patchify" in errors[0], bad.stderr[-2000:]
    assert not (tmp_path / "bad").exists()


def test_print_config_round_trips(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """Repeated --config files merge left to right, then flags win; --print_config shows the result."""
    trick = tmp_path / "cosine.yaml"
    trick.write_text("model:\n  vit:\n    attention: cosine\n    norm: centernorm\n  lr: 0.01\n")
    with pytest.raises(SystemExit) as done:
        parse(["--config", str(ROOT / "ablations" / "base" / "digits.yaml"), "--config", str(trick),
                     "--model.vit.norm", "layernorm", "--print_config"])
    assert done.value.code == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["model"]["vit"]["attention"] == "cosine" and printed["model"]["lr"] == 0.01
    assert printed["model"]["vit"]["norm"] == "layernorm"  # the flag after the files wins
    assert printed["model"]["vit"]["embed_dim"] == 64  # untouched keys come from the base file
    assert printed["data"]["class_path"] == "stability.data.DigitsDataModule"


@pytest.mark.slow
def test_ddp_two_cpu_processes(tmp_path: Path) -> None:
    """Lightning's strategies pass through: `stability fit` with DDP over two gloo CPU processes."""
    config = tiny_config()
    config["trainer"].update(max_epochs=1)
    base = tmp_path / "tiny.yaml"
    base.write_text(yaml.safe_dump(config))
    run_dir = tmp_path / "ddp"
    command = [sys.executable, "-m", "stability.cli", "fit", "--config", str(base), "--run_dir", str(run_dir),
               "--trainer.accelerator", "cpu", "--trainer.devices", "2", "--trainer.strategy", "ddp"]
    done = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = load_summary(run_dir)
    assert summary.status in TRAINED and summary.steps == 4  # limit_train_batches=4 per rank
