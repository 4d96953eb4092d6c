"""What a run's summary needs from its epochs: best and last validation metrics, the largest log Z, and the
per-epoch histories, kept in the checkpoint so that a resumed run still knows them."""

from __future__ import annotations

import math
from typing import Any

import lightning as L


def finite_or_none(value: Any) -> float | None:
    """``value`` as a float, or None where it is None, NaN or infinite."""
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


class RunTracker(L.Callback):
    """Best and last validation metrics and per-epoch histories, kept in the checkpoint so a resumed run knows
    its history (the histories feed the collapse rule and the claims' convergence check)."""

    def __init__(self) -> None:
        self.best_val_acc: float | None = None
        self.best_val_loss: float | None = None
        self.final_val_acc: float | None = None
        self.final_val_loss: float | None = None
        self.final_train_loss: float | None = None
        self.max_log_z: float | None = None
        self.train_loss_history: list[float] = []
        self.val_acc_history: list[float] = []
        self._epoch_loss, self._epoch_steps = 0.0, 0

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._epoch_loss, self._epoch_steps = 0.0, 0

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        self.final_train_loss = float(loss.detach())
        self._epoch_loss += self.final_train_loss
        self._epoch_steps += 1
        log_z = finite_or_none(trainer.callback_metrics.get("train/log_z"))
        if log_z is not None and (self.max_log_z is None or log_z > self.max_log_z):
            self.max_log_z = log_z

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._epoch_steps:
            self.train_loss_history.append(self._epoch_loss / self._epoch_steps)

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        acc = finite_or_none(trainer.callback_metrics.get("val/acc"))
        loss = finite_or_none(trainer.callback_metrics.get("val/loss"))
        self.final_val_acc, self.final_val_loss = acc, loss
        if acc is not None:
            self.val_acc_history.append(acc)
        if acc is not None and (self.best_val_acc is None or acc > self.best_val_acc):
            self.best_val_acc = acc
        if loss is not None and (self.best_val_loss is None or loss < self.best_val_loss):
            self.best_val_loss = loss

    @property
    def state_key(self) -> str:
        # The class was once called ``_Tracker``, Lightning's default key: checkpoints written then still resume.
        return "_Tracker"

    KEYS = ("best_val_acc", "best_val_loss", "final_val_acc", "final_val_loss", "final_train_loss", "max_log_z",
            "train_loss_history", "val_acc_history")

    def state_dict(self) -> dict[str, Any]:
        return {key: getattr(self, key) for key in self.KEYS}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        for key in self.KEYS:
            default = [] if key.endswith("_history") else None
            setattr(self, key, state_dict.get(key, default))
