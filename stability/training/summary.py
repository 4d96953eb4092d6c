"""A run's summary: built in one place from what the run's parts measured, then written to ``summary.json``
and reported to the run's loggers (the run record's last step)."""

from __future__ import annotations

import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import lightning as L
import torch

import stability
from stability.model import count_flops
from stability.record.files import COLLAPSED, FAILED, RunSummary
from stability.training.lipschitz_monitor import LipschitzMonitor
from stability.training.module import ViTClassifier
from stability.training.run_folder import out_of_space
from stability.training.run_identity import RunIdentity
from stability.training.telemetry import DivergenceDetector, StabilityTelemetry
from stability.training.tensorboard import RunLogger, mark, result_metrics
from stability.training.tracker import RunTracker, finite_or_none


def build_summary(identity: RunIdentity, run_name: str, trainer: L.Trainer, model: ViTClassifier,
                  tracker: RunTracker, divergence: DivergenceDetector, telemetry: StabilityTelemetry,
                  lipschitz: LipschitzMonitor, *, status: str, error: str | None, collapse: str | None,
                  test_metrics: Mapping[str, Any], started: float) -> RunSummary:
    """The run's :class:`~stability.record.files.RunSummary`.

    Args:
        run_name: the run folder's name.
        status, error, collapse: how the run ended (the error of a failed run, the rule a collapsed run met).
        test_metrics: the test loop's metrics ({} when the test did not run).
        started: ``time.perf_counter()`` when the run started (its wall time ends now).
    """
    return RunSummary(
        status=status,
        run_name=run_name,
        run_id=identity.run_id,
        toggles=identity.toggles,
        hparams=identity.hparams,
        diverged_step=divergence.diverged_step,
        divergence_reason=divergence.reason,
        collapse_reason=collapse,
        error=error,
        steps=trainer.global_step,
        epochs=trainer.current_epoch,
        wall_time_s=round(time.perf_counter() - started, 3),
        train_time_s=round(telemetry.train_time_s, 3),
        images_per_s=round(telemetry.train_images / telemetry.train_time_s, 1) if telemetry.train_time_s else None,
        params=sum(p.numel() for p in model.parameters()),
        flops_per_image=count_flops(model.model),
        initial_loss=divergence.initial_loss,
        final_train_loss=finite_or_none(tracker.final_train_loss),
        final_val_acc=tracker.final_val_acc,
        best_val_acc=tracker.best_val_acc,
        final_val_loss=tracker.final_val_loss,
        best_val_loss=tracker.best_val_loss,
        test_acc=finite_or_none(test_metrics.get("test/acc")),
        test_loss=finite_or_none(test_metrics.get("test/loss")),
        max_grad_norm=telemetry.max_grad_norm,
        max_attn_logit=telemetry.max_attn_logit,
        max_log_z=tracker.max_log_z,
        failure=telemetry.failure_at(divergence.diverged_step),
        train_loss_history=[round(v, 6) for v in tracker.train_loss_history],
        val_acc_history=[round(v, 6) for v in tracker.val_acc_history],
        threads=torch.get_num_threads(),
        **lipschitz.summary_fields(),
        versions=_versions(),
    )


def write_summary(trainer: L.Trainer, summary: RunSummary, run_dir: Path) -> None:
    """Report the result to the run's loggers and write ``summary.json`` (on the global-zero process only);
    a full disk raises :class:`~stability.errors.OutOfSpace`."""
    if trainer.is_global_zero:
        with out_of_space(run_dir, "writing the run's record"):
            _log_final_hparams(trainer, summary)
            summary.write(run_dir)


def _log_final_hparams(trainer: L.Trainer, summary: RunSummary) -> None:
    """The run's result in its loggers: HParams metrics and session end in TensorBoard, the metrics in the others.

    A run without an accuracy counts at chance there, so the loggers need the model's class count.
    """
    num_classes = trainer.lightning_module.vit_config.num_classes  # fit() attached the model before anything ran
    for logger in trainer.loggers:
        if isinstance(logger, RunLogger):
            logger.log_result(summary, trainer.global_step, num_classes)
        else:
            logger.log_metrics(result_metrics(summary, num_classes), step=trainer.global_step)
            if summary.status == COLLAPSED:  # the run's own logger marks it in log_result
                mark(logger, max(trainer.global_step - 1, 0), "collapsed", summary.collapse_reason or "")
        logger.finalize("failed" if summary.status == FAILED else "success")


def _versions() -> dict[str, str]:
    """The versions of the package and the libraries that decide a run's numbers."""
    import lightning
    import timm

    return {"stability": stability.__version__, "torch": torch.__version__, "lightning": lightning.__version__,
            "timm": timm.__version__, "python": sys.version.split()[0]}
