"""One training run, start to finish: config -> model + data -> fit -> test -> run record.

The config is LightningCLI's (jsonargparse): typed, validated, composable from several YAML files. The same
entry point serves ``stability fit`` (argv) and the sweep (a nested dict per cell), so a sweep cell is
exactly what ``stability fit --config <run>/config.yaml`` would run.

A run folder holds ``config.yaml`` (written first), TensorBoard events, ``checkpoints/last.ckpt`` and
``summary.json`` (written atomically, last). Re-running on the same folder resumes from ``last.ckpt``.
"""

from __future__ import annotations

import contextlib
import math
import re
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import lightning as L
import torch
import yaml
from jsonargparse import ArgumentError
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI
from lightning.pytorch.loggers import TensorBoardLogger

import stability
from stability.config_files import load_config_files
from stability.errors import ConfigError
from stability.identity import config_hash, hparams_of, run_name, toggles_of
from stability.lipschitz_callback import LipschitzMonitor
from stability.model import count_flops
from stability.module import ViTClassifier
from stability.records import (
    COMPLETED,
    CONFIG,
    DIVERGED,
    FAILED,
    FINISHED,
    LAST_CKPT,
    SUMMARY,
    RunSummary,
    read_summary,
    write_atomic,
)
from stability.telemetry import DivergenceDetector, StabilityTelemetry

# Defaults that differ from Lightning's: per-step curves need log_every_n_steps=1; ablation runs need no
# model summary or sanity check; ``deterministic`` makes a seed reproduce its numbers.
TRAINER_DEFAULTS: dict[str, Any] = {
    "max_epochs": 20,
    "log_every_n_steps": 1,
    "num_sanity_val_steps": 0,
    "enable_model_summary": False,
    "deterministic": True,
    "accelerator": "auto",
    "devices": 1,
}


class RunFailed(RuntimeError):
    """A run raised inside training; its record says ``failed`` with the error message."""


class RunLogger(TensorBoardLogger):
    """TensorBoard logger whose HParams session holds the toggles as columns and real metrics.

    Lightning logs the module's nested hparams without metrics at fit start; this logger replaces that with
    a flat dict of toggles and hyperparameters, and declares the ``hp/*`` metrics (placeholder -1, replaced
    by the final values at the end of the run) so the HParams tab shows accuracy and divergence.
    """

    HP_METRICS = ("hp/best_val_acc", "hp/final_val_acc", "hp/test_acc", "hp/diverged", "hp/diverged_step")

    def __init__(self, run_dir: Path, config: dict[str, Any]) -> None:
        super().__init__(save_dir=str(run_dir.parent), name="", version=run_dir.name, default_hp_metric=False)
        self._flat_hparams = tensorboard_hparams(config)

    def log_hyperparams(self, params: Any, metrics: dict[str, Any] | None = None, step: int | None = None) -> None:
        super().log_hyperparams(self._flat_hparams, dict.fromkeys(self.HP_METRICS, -1.0), step=0)


class StabilityCLI(LightningCLI):
    """LightningCLI for ``ViTClassifier`` + any LightningDataModule, plus the telemetry callbacks' options.

    The trainer is built later, by :meth:`make_trainer`, because it needs the run folder.
    """

    def __init__(self, args: list[str] | dict[str, Any] | None) -> None:
        super().__init__(
            ViTClassifier,
            L.LightningDataModule,
            subclass_mode_data=True,
            save_config_callback=None,
            trainer_defaults=TRAINER_DEFAULTS,
            seed_everything_default=0,
            parser_kwargs={"exit_on_error": False, "prog": "stability fit",
                           "description": "Train one ViT configuration and write its run record."},
            args=args,
            run=False,
            auto_configure_optimizers=False,
            load_from_checkpoint_support=False,
        )

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_argument("--run_dir", type=str | None, default=None,
                            help="Run folder (default: runs/fit/<toggles>-<config hash>). Re-running resumes.")
        parser.add_lightning_class_args(DivergenceDetector, "divergence")
        parser.add_lightning_class_args(StabilityTelemetry, "telemetry")
        parser.add_lightning_class_args(LipschitzMonitor, "lipschitz")
        parser.set_defaults({"data": {"class_path": "stability.data.DigitsDataModule"}})
        parser.set_defaults({f"trainer.{k}": v for k, v in TRAINER_DEFAULTS.items()})

    def parse_arguments(self, parser: LightningArgumentParser, args: Any) -> None:
        # As LightningCLI's, minus its warning about sys.argv: a sweep worker passes dicts on purpose.
        self.config = parser.parse_object(args) if isinstance(args, dict) else parser.parse_args(args)

    def instantiate_trainer(self, **kwargs: Any) -> None:  # type: ignore[override]
        return None  # deferred to make_trainer()

    def make_trainer(self, run_dir: Path) -> L.Trainer:
        # One rolling checkpoint, overwritten at every epoch end: what a resumed run continues from.
        checkpoint = ModelCheckpoint(dirpath=run_dir / "checkpoints", filename=LAST_CKPT.stem, save_top_k=1,
                                     every_n_epochs=1, enable_version_counter=False)
        configured = self.config_init["trainer"].get("callbacks") or []
        logger = RunLogger(run_dir, self.config_dump_dict())
        return super().instantiate_trainer(logger=logger, callbacks=[*configured, checkpoint])

    def config_dump_dict(self) -> dict[str, Any]:
        """The fully resolved config as plain YAML-able data (what ``config.yaml`` holds)."""
        return yaml.safe_load(self.parser.dump(self.config, skip_none=False))

    @property
    def divergence(self) -> DivergenceDetector:
        return self.config_init["divergence"]

    @property
    def telemetry(self) -> StabilityTelemetry:
        return self.config_init["telemetry"]

    @property
    def lipschitz(self) -> LipschitzMonitor:
        return self.config_init["lipschitz"]


@contextlib.contextmanager
def user_errors() -> Iterator[None]:
    """Turn jsonargparse's parse errors into a one-line ConfigError (its messages list every union member)."""
    try:
        yield
    except (ArgumentError, ValueError) as error:
        # jsonargparse wraps a ConfigError raised by a class's __init__ (e.g. a missing data folder) in a
        # multi-line error; the ConfigError itself, somewhere down the chain, is the message the user needs.
        cause: BaseException | None = error
        while cause is not None:
            if isinstance(cause, ConfigError):
                raise ConfigError(str(cause)) from None
            cause = cause.__cause__ or cause.__context__
        if not isinstance(error, ArgumentError):
            raise
        raise ConfigError(_one_line(str(error))) from None


_LITERAL_ERROR = re.compile(r'Parser key "(?P<key>[^"]+)":\s*Expected a typing\.Literal\[(?P<valid>[^\]]*)\]\. '
                            r"Got value: (?P<value>.*)")


def _one_line(message: str) -> str:
    """jsonargparse's message, shortened to one line; a bad toggle value reads 'key: got X; valid values: ...'."""
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    match = _LITERAL_ERROR.search(" ".join(lines))
    if match:
        valid = ", ".join(v.strip().strip("'\"") for v in match["valid"].split(","))
        return f"{match['key']}: got {match['value']!r}; valid values: {valid}"
    return " ".join(lines[:3])


def parse(args: list[str] | dict[str, Any] | None) -> StabilityCLI:
    """Parse and validate a config; build model and data (cheap), not the trainer."""
    with user_errors():
        return StabilityCLI(args)


def validate(config: dict[str, Any]) -> None:
    """Raise ConfigError if ``config`` would not run (unknown keys or values, impossible dimensions)."""
    parse(config)


def tensorboard_hparams(config: dict[str, Any]) -> dict[str, Any]:
    """The HParams tab's columns: ``toggle/<name>`` then the headline hyperparameters. TensorBoard takes
    only numbers, strings and booleans: booleans and None are written as text."""
    hp = {f"toggle/{k}": (str(v) if isinstance(v, bool) else v) for k, v in toggles_of(config).items()}
    hp.update(hparams_of(config))
    return {k: ("None" if v is None else v) for k, v in hp.items()}


# -- the run record ----------------------------------------------------------------------------------------
def _versions() -> dict[str, str]:
    import lightning
    import timm

    return {"stability": stability.__version__, "torch": torch.__version__, "lightning": lightning.__version__,
            "timm": timm.__version__, "python": sys.version.split()[0]}


def _finite_or_none(value: Any) -> float | None:
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def _same_config(path: Path, config: dict[str, Any]) -> bool:
    """Whether ``path`` holds ``config``; where the folder lives (``run_dir``) does not count, so a moved
    sweep folder still resumes."""
    try:
        stored = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError:
        return False
    return config_hash(stored) == config_hash(config)


def _prepare_run_dir(run_dir: Path, config_text: str) -> None:
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        probe = run_dir / ".write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as error:
        raise ConfigError(f"run_dir: cannot write to {run_dir} ({error.strerror}); choose a writable folder") from None
    if not (run_dir / CONFIG).is_file():
        write_atomic(run_dir / CONFIG, config_text)


def _checkpoint_to_resume(run_dir: Path) -> Path | None:
    path = run_dir / LAST_CKPT
    if not path.is_file():
        return None
    try:
        torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - any unreadable checkpoint gets the same advice
        raise ConfigError(f"checkpoint {path}: cannot be read ({type(error).__name__}: "
                          f"{str(error).splitlines()[0][:120]}); delete it to restart this run from scratch") from None
    return path


class _Tracker(L.Callback):
    """Best and last validation metrics, kept in the checkpoint so a resumed run knows its history."""

    def __init__(self) -> None:
        self.best_val_acc: float | None = None
        self.best_val_loss: float | None = None
        self.final_val_acc: float | None = None
        self.final_val_loss: float | None = None
        self.final_train_loss: float | None = None

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        self.final_train_loss = float(loss.detach())

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        acc = _finite_or_none(trainer.callback_metrics.get("val/acc"))
        loss = _finite_or_none(trainer.callback_metrics.get("val/loss"))
        self.final_val_acc, self.final_val_loss = acc, loss
        if acc is not None and (self.best_val_acc is None or acc > self.best_val_acc):
            self.best_val_acc = acc
        if loss is not None and (self.best_val_loss is None or loss < self.best_val_loss):
            self.best_val_loss = loss

    KEYS = ("best_val_acc", "best_val_loss", "final_val_acc", "final_val_loss", "final_train_loss")

    def state_dict(self) -> dict[str, Any]:
        return {key: getattr(self, key) for key in self.KEYS}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        for key in self.KEYS:
            setattr(self, key, state_dict.get(key))


def resolve_run_dir(config: dict[str, Any], run_dir: str | Path | None = None) -> Path:
    """The explicit folder, else ``run_dir`` from the config, else ``runs/fit/<run name>``."""
    return Path(run_dir or config.get("run_dir") or Path("runs") / "fit" / run_name(config))


def run_cli(cli: StabilityCLI, run_dir: str | Path | None = None,
            extra_callbacks: list[L.Callback] | tuple[L.Callback, ...] = ()) -> RunSummary:
    """Fit and test a parsed config into its run folder; return the summary (see module docstring).

    ``extra_callbacks`` are added to the trainer (for programmatic use: profiling, fault injection).
    """
    config = cli.config_dump_dict()
    run_dir = resolve_run_dir(config, run_dir)
    config["run_dir"] = str(run_dir)
    config_text = yaml.safe_dump(config, sort_keys=False)
    existing = run_dir / CONFIG
    if existing.is_file() and not _same_config(existing, config):
        raise ConfigError(f"run_dir: {run_dir} holds a run with a different config.yaml; "
                          "choose another --run_dir (or delete that folder to start over)")
    summary = read_summary(run_dir)
    if summary is not None and summary.status in FINISHED:
        return summary  # finished runs are results; re-running them changes nothing
    _prepare_run_dir(run_dir, config_text)
    if summary is not None:  # a failed run being retried: its old record goes, the new one replaces it
        (run_dir / SUMMARY).unlink()
    ckpt_path = _checkpoint_to_resume(run_dir)

    trainer = cli.make_trainer(run_dir)
    tracker = _Tracker()
    trainer.callbacks.extend([tracker, *extra_callbacks])
    model, data = cli.model, cli.datamodule
    divergence, telemetry = cli.divergence, cli.telemetry
    started = time.perf_counter()
    status, error, test_metrics = COMPLETED, None, {}
    try:
        trainer.fit(model, datamodule=data, ckpt_path=ckpt_path, weights_only=True)
        if trainer.interrupted:
            raise KeyboardInterrupt  # Ctrl-C: the run is cut off, not finished; no summary, resumable
        if divergence.diverged:
            status = DIVERGED
        else:
            test_metrics = trainer.test(model, datamodule=data, verbose=False)[0]
    except (KeyboardInterrupt, ConfigError):
        raise
    except Exception as exc:  # noqa: BLE001 - a run that raises is a result too: "failed"
        status, error = FAILED, f"{type(exc).__name__}: {exc}".splitlines()[0][:500]
        failure = exc
    summary = RunSummary(
        status=status,
        run_name=run_dir.name,
        run_id=config_hash(config),
        toggles=toggles_of(config),
        hparams=hparams_of(config),
        diverged_step=divergence.diverged_step,
        divergence_reason=divergence.reason,
        error=error,
        steps=trainer.global_step,
        epochs=trainer.current_epoch,
        wall_time_s=round(time.perf_counter() - started, 3),
        train_time_s=round(telemetry.train_time_s, 3),
        images_per_s=round(telemetry.train_images / telemetry.train_time_s, 1) if telemetry.train_time_s else None,
        params=sum(p.numel() for p in model.parameters()),
        flops_per_image=count_flops(model.model),
        initial_loss=divergence.initial_loss,
        final_train_loss=_finite_or_none(tracker.final_train_loss),
        final_val_acc=tracker.final_val_acc,
        best_val_acc=tracker.best_val_acc,
        final_val_loss=tracker.final_val_loss,
        best_val_loss=tracker.best_val_loss,
        test_acc=_finite_or_none(test_metrics.get("test/acc")),
        test_loss=_finite_or_none(test_metrics.get("test/loss")),
        max_grad_norm=telemetry.max_grad_norm,
        max_attn_logit=telemetry.max_attn_logit,
        **cli.lipschitz.summary_fields(),
        versions=_versions(),
    )
    if trainer.is_global_zero:
        _log_final_hparams(trainer, summary)
        summary.write(run_dir)
    if status == FAILED:
        raise RunFailed(f"{run_dir.name}: {error}") from failure
    return summary


def _log_final_hparams(trainer: L.Trainer, summary: RunSummary) -> None:
    if trainer.logger is None:
        return
    values = {
        "hp/best_val_acc": summary.best_val_acc, "hp/final_val_acc": summary.final_val_acc,
        "hp/test_acc": summary.test_acc, "hp/diverged": float(summary.status == DIVERGED),
        "hp/diverged_step": -1 if summary.diverged_step is None else summary.diverged_step,
    }
    trainer.logger.log_metrics({k: float("nan") if v is None else float(v) for k, v in values.items()},
                               step=trainer.global_step)
    trainer.logger.finalize("success")


def run(config: dict[str, Any], run_dir: str | Path) -> RunSummary:
    """Run one sweep cell in-process (see :func:`run_cli`)."""
    return run_cli(parse(config), run_dir)


def fit_main(argv: list[str]) -> int:
    """``stability fit``: exit 0 for completed or diverged runs, 1 for a failed run, 2 for bad input."""
    cli = parse(argv)
    run_dir = resolve_run_dir(cli.config_dump_dict())
    summary = run_cli(cli, run_dir)
    line = f"{summary.status}: {run_dir}"
    if summary.status == DIVERGED:
        line += f"\n  diverged at step {summary.diverged_step}: {summary.divergence_reason}"
    else:
        line += (f"\n  test acc {summary.test_acc:.4f}, best val acc {summary.best_val_acc:.4f}, "
                 f"{summary.steps} steps, {summary.train_time_s:.1f} s training")
    print(line)
    print(f"  TensorBoard: tensorboard --logdir {run_dir.parent}")
    return 0


__all__ = ["RunFailed", "StabilityCLI", "run", "run_cli", "validate", "load_config_files", "fit_main",
           "read_summary", "resolve_run_dir"]
