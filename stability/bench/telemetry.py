"""``stability bench telemetry``: what the default stability telemetry adds to a training step (target <= 5%).

A digits run with the telemetry (divergence check, per-step gradient norm, sampled block/attention probes) is
timed against the same run without it, in paired repetitions; the ratio is the median of the paired ratios.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch


class _TrainLoopClock:
    """Wall time of the training loop only (on_train_start -> on_train_end), for the telemetry bench."""

    def __init__(self) -> None:
        import lightning as L

        class Clock(L.Callback):
            def on_train_start(inner, trainer, pl_module) -> None:  # noqa: N805
                self.start = time.perf_counter()

            def on_train_end(inner, trainer, pl_module) -> None:  # noqa: N805
                self.seconds = time.perf_counter() - self.start

        self.callback, self.start, self.seconds = Clock(), 0.0, 0.0


def bench_telemetry(args: argparse.Namespace) -> int:
    """Step time of a digits training run with the default telemetry (divergence check, per-step gradient norm,
    sampled block/attention probes) against the same run without it; both log loss/LR to TensorBoard."""
    import tempfile

    import lightning as L
    from lightning.pytorch.loggers import TensorBoardLogger

    from stability.data import DigitsDataModule
    from stability.model import ViTConfig
    from stability.training.module import ViTClassifier
    from stability.training.telemetry import DivergenceDetector, StabilityTelemetry

    if args.threads:
        torch.set_num_threads(args.threads)

    def fit(with_telemetry: bool, folder: str) -> float:
        L.seed_everything(0, verbose=False)
        clock = _TrainLoopClock()
        callbacks = [clock.callback]
        if with_telemetry:
            callbacks += [DivergenceDetector(), StabilityTelemetry(every_n_steps=args.every)]
        trainer = L.Trainer(max_steps=args.steps, logger=TensorBoardLogger(folder, name="", version="v"),
                            callbacks=callbacks, log_every_n_steps=1, enable_checkpointing=False,
                            enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                            limit_val_batches=0, accelerator="cpu", devices=1)
        trainer.fit(ViTClassifier(ViTConfig()), datamodule=DigitsDataModule(batch_size=64))
        return clock.seconds / args.steps

    ratios, plain, watched = [], [], []
    with tempfile.TemporaryDirectory() as folder:
        fit(True, folder)  # warm-up: imports, allocator, first-call costs
        for rep in range(args.reps):
            a, b = fit(False, f"{folder}/a{rep}"), fit(True, f"{folder}/b{rep}")
            plain.append(a)
            watched.append(b)
            ratios.append(b / a)
    ratio = statistics.median(ratios)
    print(f"digits model, batch 64, {args.steps} steps per run, {args.reps} paired repetitions, "
          f"{torch.get_num_threads()} thread(s), probes every {args.every} steps")
    print(f"  without telemetry: {1e3 * statistics.median(plain):.1f} ms/step (median)")
    print(f"  with telemetry:    {1e3 * statistics.median(watched):.1f} ms/step (median)")
    print(f"  overhead: {100 * (ratio - 1):+.1f}% (median of paired ratios; target <= +5%)")
    return 0
