"""The Lipschitz monitor: bounds, lower bound and certified accuracy of a run, in TensorBoard and its record.

- Every ``every_n_steps`` training steps (off by default): the bound of every layer, the network and
  backbone bounds (a few warm-started power iterations) and the margin-gradient lower bound on the batch.
- At the end of training (every run, diverged ones included, unless ``at_end`` is off): the same with
  :data:`~stability.model.lipschitz.bounds.FINAL_ITERS` iterations, the refined lower bound on (up to 32 images of) the
  last training batch, and a local estimate for each layer that has no global bound (on 16 of them). Those
  images travel in the checkpoint: a run killed after its last epoch and resumed has no epoch left to run and
  measures at its test instead, on the same images, so its record holds the same numbers.
- During the test: certified robust accuracy at each radius (head-aware and sqrt(2) forms), from the bound
  measured at the end of training.

Everything is for the model in evaluation mode and inputs in [0, 1] pixel space (see
:mod:`stability.model.lipschitz`). Measuring never changes training: the model goes back to its mode, no
parameter gradient is touched, the attention telemetry's switches are restored, and the power iteration
draws from its own generator.
"""

from __future__ import annotations

import math
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback

from stability.errors import ConfigError
from stability.model.lipschitz import (
    DEFAULT_RADII,
    FINAL_ITERS,
    STEP_ITERS,
    Bounds,
    LipschitzBound,
    certified_mask,
    certified_mask_sqrt2,
    input_normalization,
    input_scale,
    local_estimates,
    lower_bound,
    pixel_model,
)

LOWER_BATCH = 32  # images the lower bound starts from (the margin gradients)
LOCAL_BATCH = 16  # images the local estimates of unbounded layers use (each costs ~2 backward passes per iteration)
LOCAL_ITERS = 8


def radius_key(radius: float) -> str:
    """How a radius is written in summary.json and TensorBoard tags: 4 significant digits (36/255: 0.1412)."""
    return f"{radius:.4g}"


class LipschitzMonitor(Callback):
    """Lipschitz upper and lower bounds and certified robust accuracy, logged and kept for the run record.

    Args:
        every_n_steps: period of the in-training measurement (per-layer bounds, network bound, lower bound);
            0 (default) turns it off.
        at_end: measure at the end of training and certify during the test (default on).
        radii: l2 radii in [0, 1] pixel space for certified accuracy (LipShiFT's is 36/255 ~ 0.1412).
        iters: power iterations of the final bound (LipShiFT: 100).
        step_iters: power iterations of each in-training measurement (warm-started).
        lower_steps: gradient-ascent steps refining the final lower bound.
    """

    def __init__(self, every_n_steps: int = 0, at_end: bool = True, radii: list[float] | None = None,
                 iters: int = FINAL_ITERS, step_iters: int = STEP_ITERS, lower_steps: int = 10) -> None:
        for key, value in (("every_n_steps", every_n_steps), ("iters", iters), ("step_iters", step_iters),
                           ("lower_steps", lower_steps)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ConfigError(f"lipschitz.{key}: got {value!r}; it must be an integer >= 0")
        radii = list(DEFAULT_RADII) if radii is None else list(radii)
        if not radii or not all(isinstance(r, (int, float)) and math.isfinite(r) and r >= 0 for r in radii):
            raise ConfigError(f"lipschitz.radii: got {radii!r}; give a non-empty list of numbers >= 0 "
                              "(l2 radii in [0, 1] pixel space, e.g. [0, 0.1412])")
        self.every_n_steps, self.at_end, self.radii = every_n_steps, at_end, sorted(set(map(float, radii)))
        self.iters, self.step_iters, self.lower_steps = iters, step_iters, lower_steps
        # what the run record gets (None until measured)
        self.upper: float | None = None  # network, pixels -> logits
        self.backbone: float | None = None  # pixels -> head input (what the certificate uses)
        self.unbounded: str | None = None  # the layers without a global bound, and why
        self.lower: float | None = None
        self.certified_acc: dict[str, float] | None = None
        self.certified_acc_sqrt2: dict[str, float] | None = None
        self._bound: LipschitzBound | None = None
        self._final: Bounds | None = None
        self._mean = self._std = torch.zeros(0)
        self._last_images: torch.Tensor | None = None
        self._counts: torch.Tensor | None = None  # (2, R + 1): certified per radius (two forms), then total

    # ------------------------------------------------------------------ setup
    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if self._bound is None:
            self._mean, self._std = input_normalization(trainer.datamodule)
            self._bound = LipschitzBound(pl_module.model, input_scale(self._std))

    # ------------------------------------------------------------------ during training
    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        self._last_images = batch[0].detach()[:LOWER_BATCH]
        step = trainer.global_step - 1  # the optimiser step this batch belongs to
        if self.every_n_steps and step % self.every_n_steps == 0:
            with _measuring(pl_module):
                bounds = self._bound.compute(self.step_iters)  # type: ignore[union-attr]
                lower = self._lower(pl_module, self._last_images, steps=0)
            self._log(trainer, bounds, lower, {}, step)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.at_end:
            self._measure_final(trainer, pl_module)

    # ------------------------------------------------------------------ the checkpoint
    # A resumed run whose checkpoint holds its last epoch trains no batch (Lightning skips the fit loop, and
    # on_train_end with it), so the images the final lower bound starts from must come from the checkpoint.
    def state_dict(self) -> dict[str, Any]:
        # a copy of the slice alone: a view would save the whole batch's storage
        images = None if self._last_images is None else self._last_images.detach().cpu().clone()
        return {"last_images": images}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        images = state_dict.get("last_images")
        self._last_images = images if isinstance(images, torch.Tensor) else None

    def _measure_final(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        with _measuring(pl_module):
            bounds = self._bound.compute(self.iters)  # type: ignore[union-attr]
            lower = local = None
            if self._last_images is not None:
                images = self._last_images.to(pl_module.device)  # a checkpoint's images are on the CPU
                lower = self._lower(pl_module, images, steps=self.lower_steps)
                if bounds.unbounded:
                    inputs = images[:LOCAL_BATCH].to(next(pl_module.parameters()))
                    local = local_estimates(pl_module.model, inputs, [layer.name for layer in bounds.unbounded],
                                            iters=LOCAL_ITERS)
        self._final = bounds
        self.upper, self.backbone = _finite(bounds.network), _finite(bounds.backbone)
        self.unbounded, self.lower = bounds.unbounded_text(), lower
        self._log(trainer, bounds, lower, local or {}, trainer.global_step)

    def _lower(self, pl_module: L.LightningModule, images: torch.Tensor, steps: int) -> float | None:
        mean, std = self._mean.to(images), self._std.to(images)
        value = lower_bound(pixel_model(pl_module.model, mean, std), images * std + mean, steps=steps)
        return value if math.isfinite(value) else None

    def _log(self, trainer: L.Trainer, bounds: Bounds, lower: float | None, local: dict[str, float],
             step: int) -> None:
        if trainer.logger is None:
            return
        metrics: dict[str, float] = {"lipschitz/bounded": float(bounds.backbone is not None)}
        for name, value in (("upper", bounds.network), ("backbone", bounds.backbone)):
            if _finite(value) is not None:
                metrics[f"lipschitz/{name}"] = _finite(value)  # type: ignore[assignment]
        if lower is not None:
            metrics["lipschitz/lower"] = lower
        for name, value in bounds.as_floats().items():
            if value is not None:
                metrics[f"lipschitz/layer/{name}"] = value
        metrics.update({f"lipschitz/local/{name}": value for name, value in local.items() if math.isfinite(value)})
        trainer.logger.log_metrics(metrics, step=step)

    # ------------------------------------------------------------------ test: certified accuracy
    def on_test_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self.at_end:
            return
        if self._final is None:  # no training in this process (a resumed run with no epoch left, or a test alone):
            # measure now, outside inference mode, on the last training batch the checkpoint kept
            with torch.inference_mode(False):
                self._measure_final(trainer, pl_module)
        self._counts = torch.zeros(2, len(self.radii) + 1, dtype=torch.float64)

    def on_test_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                          batch_idx: int, dataloader_idx: int = 0) -> None:
        if self._counts is None or self._final is None:
            return
        images, labels = batch[0], batch[1]
        logits = pl_module(images)  # (B, K); the model is in evaluation mode during the test
        weight = self._final.head_weight.detach()
        for i, radius in enumerate(self.radii):
            self._counts[0, i] += float(certified_mask(logits, labels, self.backbone, weight, radius).sum())
            self._counts[1, i] += float(certified_mask_sqrt2(logits, labels, self.upper, radius).sum())
        self._counts[:, -1] += len(labels)

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._counts is None:
            return
        counts = trainer.strategy.reduce(self._counts.to(pl_module.device), reduce_op="sum").cpu()
        self._counts = None
        total = float(counts[0, -1])
        if total == 0:
            return
        self.certified_acc = {radius_key(r): float(counts[0, i]) / total for i, r in enumerate(self.radii)}
        self.certified_acc_sqrt2 = {radius_key(r): float(counts[1, i]) / total for i, r in enumerate(self.radii)}
        if trainer.logger is not None:
            metrics = {f"certified_acc/r={key}": value for key, value in self.certified_acc.items()}
            metrics |= {f"certified_acc_sqrt2/r={key}": value for key, value in self.certified_acc_sqrt2.items()}
            trainer.logger.log_metrics(metrics, step=trainer.global_step)

    def summary_fields(self) -> dict[str, Any]:
        """The run record's Lipschitz fields (see :class:`stability.record.files.RunSummary`)."""
        return {"lipschitz_upper": self.upper, "lipschitz_backbone": self.backbone,
                "lipschitz_unbounded": self.unbounded, "lipschitz_lower": self.lower,
                "certified_acc": self.certified_acc, "certified_acc_sqrt2": self.certified_acc_sqrt2}


def _finite(value: torch.Tensor | float | None) -> float | None:
    if value is None:
        return None
    number = float(value.detach()) if isinstance(value, torch.Tensor) else float(value)
    return number if math.isfinite(number) else None


class _measuring:
    """Evaluation mode and no attention telemetry for the duration of a measurement, then as before."""

    def __init__(self, pl_module: L.LightningModule) -> None:
        self.module = pl_module

    def __enter__(self) -> None:
        model = self.module.model
        self.training = model.training
        self.recording = [getattr(block.attn, "record_stats", False) for block in model.blocks]
        for block in model.blocks:
            if hasattr(block.attn, "record_stats"):
                block.attn.record_stats = False
        model.eval()

    def __exit__(self, *exc: object) -> None:
        model = self.module.model
        model.train(self.training)
        for block, recording in zip(model.blocks, self.recording):
            if hasattr(block.attn, "record_stats"):
                block.attn.record_stats = recording
