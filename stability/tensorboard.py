"""What TensorBoard shows for a run: the logger every run writes its events with, and its HParams columns."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lightning.pytorch.loggers import TensorBoardLogger

from stability.identity import hparams_of, toggles_of


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


def tensorboard_hparams(config: dict[str, Any]) -> dict[str, Any]:
    """The HParams tab's columns: ``toggle/<name>`` then the headline hyperparameters. TensorBoard takes
    only numbers, strings and booleans: booleans and None are written as text."""
    hp = {f"toggle/{k}": (str(v) if isinstance(v, bool) else v) for k, v in toggles_of(config).items()}
    hp.update(hparams_of(config))
    return {k: ("None" if v is None else v) for k, v in hp.items()}
