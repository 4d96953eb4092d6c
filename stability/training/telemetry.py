"""Stability telemetry: Lightning callbacks that watch a run and write what they see to TensorBoard.

- :class:`DivergenceDetector` stops a run whose loss becomes non-finite or explodes, and keeps the step and
  the reason: divergence is a result, not a crash.
- :class:`StabilityTelemetry` logs the global gradient norm (before clipping) every step, and every
  ``every_n_steps`` steps the per-block gradient norms, update-to-weight ratios and, per attention layer,
  the maximum attention logit and the attention entropy (Wortsman et al. 2023, sec. 3.1: attention logit
  growth precedes divergence). The expensive probes run on sampled steps only, so the fast attention
  path is used on every other step. It also writes the run's ``progress.json`` about once a second
  (:mod:`stability.sweep.progress`: what a sweep shows of its running cells).

**The failing step is always probed.** A run that diverges at step 2 would otherwise keep only its step-0
probe, its initialisation, and be compared as if that were its attention at the failure. So before each
optimiser step the telemetry applies the detector's rule (:meth:`DivergenceDetector.reason_for`) to the loss
the module stashed (``ViTClassifier.step_values``); when it fires, that step gets the full probe whatever
``every_n_steps`` says: per-block gradient norms now, a weight snapshot for the update ratio, and, unless the
step was a sampled probe step anyway, one extra no-grad forward on the step's batch with attention stats on,
with the random state the step's own forward started from and the model's buffers put back afterwards: the
attention of the weights that produced the diverging loss. It is written to TensorBoard at that step under
the usual tags, counts in the run's ``max_attn_logit``, and becomes the summary's ``failure`` record
(:meth:`StabilityTelemetry.failure_at`), with the last :data:`WINDOW` steps' cheap values and the last
:data:`WINDOW` probes. Steps the rule does not fire on run exactly as before: no extra forward, no random
draws, the same numbers.

Besides their own tags (``train/*``, ``grad_norm/*``, ``attn/*``), both write the ``Stability/`` group:
``loss`` and ``grad_norm`` every step, ``max_attn_logit`` (over layers) on probe steps, and the event
markers: ``Stability/diverged`` is 1.0 at the step the run was stopped, with a text event
(``Stability/events``) saying why. (Its sibling ``Stability/collapsed`` is decided after training, from the
run's whole record, so the run's logger writes it with the results: :mod:`stability.training.tensorboard`.)
TensorBoard's Time Series sorts groups by name and opens the first two; capitals sort first, so this group
is what it opens on, whatever else the run logs.
"""

from __future__ import annotations

import math
import time
from collections import deque
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback

from stability.errors import ConfigError
from stability.record.progress import WRITE_EVERY_S, RunProgress, write_progress
from stability.training.failure_record import (
    PROBE_KEYS,
    RngState,
    batch_images,
    json_values,
    probe_record,
    replayed_rng,
    rng_state,
    step_values_at,
)
from stability.training.tensorboard import LEAD, RunLogger, mark

# How many of the last steps' cheap values (loss, gradient norm, log Z, lr) and of the last probes the
# failure record keeps: enough to see the run leave its course, small enough to read.
WINDOW = 8


def mark_event(trainer: L.Trainer, step: int, kind: str, reason: str) -> None:
    """Mark an event (``diverged``) at the step it happened in every logger
    (:func:`stability.training.tensorboard.mark`: scalar ``Stability/<kind>`` = 1.0, and a text event in the
    TensorBoard ones)."""
    for logger in trainer.loggers:
        mark(logger, step, kind, reason)


class DivergenceDetector(Callback):
    """Stop the run at the first step whose training loss is non-finite or above ``loss_factor`` x the initial loss.

    Args:
        loss_factor: a step loss above ``loss_factor`` times the step-0 loss counts as divergence; 0 turns the
            explosion test off (non-finite losses are always divergence).
    """

    def __init__(self, loss_factor: float = 5.0) -> None:
        if not loss_factor >= 0:
            raise ConfigError(f"divergence.loss_factor: got {loss_factor}; it must be >= 0 (0 disables it)")
        self.loss_factor = loss_factor
        self.initial_loss: float | None = None
        self.diverged_step: int | None = None
        self.reason: str | None = None

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any,
                           batch: Any, batch_idx: int) -> None:
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        value = float(loss.detach())
        step = trainer.global_step - 1  # the optimiser step this loss belongs to (global_step is already advanced)
        if self.initial_loss is None and math.isfinite(value):
            self.initial_loss = value
        reason = self.reason_for(value, step)
        if reason is not None:
            self._diverge(trainer, step, reason)

    def reason_for(self, value: float, step: int) -> str | None:
        """Why a step whose training loss is ``value`` is a divergence; None when it is not.

        The detector's one rule, also asked by the telemetry before the optimiser step (when the first loss is
        not yet the initial loss, it is treated as it will be), so the failing step is probed before its
        weights change.
        """
        initial = self.initial_loss
        if initial is None and math.isfinite(value):
            initial = value
        if not math.isfinite(value):
            return f"non-finite training loss ({value}) at step {step}"
        if self.loss_factor and initial and value > self.loss_factor * initial:
            return (f"training loss {value:.4g} > {self.loss_factor:g} x initial loss {initial:.4g} "
                    f"at step {step}")
        return None

    def _diverge(self, trainer: L.Trainer, step: int, reason: str) -> None:
        if self.diverged_step is None:
            self.diverged_step, self.reason = step, reason
            mark_event(trainer, step, "diverged", reason)
        # Lightning checks should_stop after this hook: the run ends here, mid-epoch, and its curves stay.
        trainer.should_stop = True

    @property
    def diverged(self) -> bool:
        return self.diverged_step is not None

    def state_dict(self) -> dict[str, Any]:
        return {"initial_loss": self.initial_loss, "diverged_step": self.diverged_step, "reason": self.reason}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.initial_loss = state_dict.get("initial_loss")
        self.diverged_step = state_dict.get("diverged_step")
        self.reason = state_dict.get("reason")


class StabilityTelemetry(Callback):
    """Per-step gradient norm; every ``every_n_steps`` steps, and at the step the run diverges, the block-level
    and attention probes (see the module docstring).

    Args:
        every_n_steps: period of the sampled probes (per-block gradient norm and update/weight ratio,
            max attention logit and entropy per layer). 0 disables them; the per-step gradient norm and the
            probe of the failing step stay.
    """

    def __init__(self, every_n_steps: int = 10) -> None:
        if every_n_steps < 0:
            raise ConfigError(f"telemetry.every_n_steps: got {every_n_steps}; it must be >= 0 (0 disables)")
        self.every_n_steps = every_n_steps
        self.max_grad_norm: float | None = None  # None until a finite gradient norm was seen
        self.max_attn_logit: float | None = None
        self.train_time_s = 0.0
        self.train_images = 0
        self._probe = False
        self._weights_before: list[list[torch.Tensor]] | None = None
        self._probe_metrics: dict[str, float] = {}
        self._params: list[torch.nn.Parameter] = []
        self._block_params: list[list[torch.nn.Parameter]] = []
        self._t0: float | None = None
        self._progress_dir: Path | None = None
        self._progress_at = -math.inf
        self._total_steps: int | None = None
        self._last_loss: torch.Tensor | None = None
        # the failing step's probe (module docstring)
        self._detector: DivergenceDetector | None = None
        self._batch: Any = None  # this step's batch and the random state its forward started from: for a replay
        self._rng: RngState | None = None
        self._replayed_step: int | None = None
        self._steps: deque[dict[str, Any]] = deque(maxlen=WINDOW)  # the last steps' cheap values
        self._probes: deque[dict[str, Any]] = deque(maxlen=WINDOW)  # the last probes

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Parameter lists are built once: walking the module tree every step costs more than the norms.
        self._params = [p for p in pl_module.parameters() if p.requires_grad]
        self._block_params = [[p for p in block.parameters() if p.requires_grad] for block in pl_module.model.blocks]
        # progress.json goes to the run folder, which the run's own logger knows (none: no progress file)
        ours = [logger for logger in trainer.loggers if isinstance(logger, RunLogger)]
        self._progress_dir = ours[0].run_dir if ours and trainer.is_global_zero else None
        self._detector = next((c for c in trainer.callbacks if isinstance(c, DivergenceDetector)), None)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        total = trainer.estimated_stepping_batches
        self._total_steps = int(total) if math.isfinite(total) else None

    # -- timing: train_time_s is the time spent inside the training loop, summed over resumes ---------------
    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._t0 = time.perf_counter()

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._stop_clock()

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._stop_clock()
        self._write_progress(trainer, self._last_loss, force=True)

    def _stop_clock(self) -> None:
        if self._t0 is not None:
            self.train_time_s += time.perf_counter() - self._t0
            self._t0 = None

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Validation inside an epoch (val_check_interval) is not training time.
        if self._t0 is not None and trainer.training is False:
            self._stop_clock()

    # -- probes ------------------------------------------------------------------------------------------
    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any,
                             batch_idx: int) -> None:
        self._probe = self.every_n_steps > 0 and trainer.global_step % self.every_n_steps == 0
        if self._probe:
            pl_module.model.set_attention_stats(True)
        self._batch, self._rng = batch, rng_state(pl_module.device)  # references and a copy: nothing drawn
        if self._t0 is None:
            self._t0 = time.perf_counter()

    def on_before_optimizer_step(self, trainer: L.Trainer, pl_module: L.LightningModule,
                                 optimizer: torch.optim.Optimizer) -> None:
        # Lightning calls this hook before gradient clipping: the norm logged is the raw one.
        grads = [p.grad for p in self._params if p.grad is not None]
        total = float(torch.nn.utils.get_total_norm(grads, norm_type=2.0)) if grads else None
        step = trainer.global_step
        self._steps.append(step_values_at(pl_module, step, total))
        if self._diverges_now(trainer, pl_module, step) and not self._probe:
            self._probe = True  # the failing step is probed whatever every_n_steps says
            self._replay_with_attention_stats(trainer, pl_module, step)
        if total is None:
            return
        if math.isfinite(total):
            self.max_grad_norm = total if self.max_grad_norm is None else max(self.max_grad_norm, total)
        pl_module.log("train/grad_norm", total, on_step=True, on_epoch=False)
        pl_module.log(f"{LEAD}/grad_norm", total, on_step=True, on_epoch=False)
        if self._probe:
            blocks = self._block_params
            for i, params in enumerate(blocks):
                block_grads = [p.grad for p in params if p.grad is not None]
                if block_grads:
                    self._probe_metrics[f"grad_norm/block_{i}"] = float(torch.nn.utils.get_total_norm(block_grads))
            self._weights_before = [[p.detach().clone() for p in params] for params in blocks]

    def _diverges_now(self, trainer: L.Trainer, pl_module: L.LightningModule, step: int) -> bool:
        """Whether the divergence detector will stop the run at this step: its own rule, on the loss the module
        stashed, scaled as Lightning hands it to the detector (divided by the accumulated batches)."""
        loss = getattr(pl_module, "step_values", {}).get("loss")
        if self._detector is None or self._detector.diverged or not isinstance(loss, torch.Tensor):
            return False
        accumulated = trainer.accumulate_grad_batches
        value = float(loss / accumulated if accumulated != 1 else loss)  # the sync the grad norm made already
        return self._detector.reason_for(value, step) is not None

    def _replay_with_attention_stats(self, trainer: L.Trainer, pl_module: L.LightningModule, step: int) -> None:
        """Run the step's forward again, without gradients, with attention stats on: the attention of the weights
        that produced the diverging loss, read in ``on_train_batch_end`` like a sampled probe's.

        It starts from the random state the step's own forward started from (the same dropout and drop-path
        draws) and leaves the run's generators and the model's buffers (BatchNorm's running statistics, which
        a training-mode forward updates) as they were.
        """
        images = batch_images(self._batch)
        if images is None or self._rng is None:
            return
        model = pl_module.model
        saved = [(buffer, buffer.clone()) for buffer in model.buffers()]
        model.set_attention_stats(True)
        with torch.no_grad(), replayed_rng(self._rng), trainer.precision_plugin.forward_context():
            model(images)
        for buffer, value in saved:
            buffer.copy_(value)
        self._replayed_step = step

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any,
                           batch: Any, batch_idx: int) -> None:
        self.train_images += _batch_size(batch)
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        if loss is not None:
            loss = loss.detach()
            pl_module.log(f"{LEAD}/loss", loss, on_step=True, on_epoch=False)
            self._last_loss = loss
            self._write_progress(trainer, loss)
        self._batch = None
        if not self._probe:
            return
        self._probe = False
        step = trainer.global_step - 1  # the step the probe ran on (global_step has advanced by one since)
        metrics = self._finish_probe(pl_module)
        self._probes.append(probe_record(step, metrics, len(self._block_params), len(pl_module.model.blocks)))
        # Written straight to the loggers (not self.log, which re-emits a key's last value on later steps),
        # against the step the probe ran on.
        for logger in trainer.loggers if metrics else ():
            logger.log_metrics(metrics, step=step)

    def _finish_probe(self, pl_module: L.LightningModule) -> dict[str, float]:
        """The probe's TensorBoard metrics: block gradient norms, update ratios, attention stats per layer."""
        metrics, self._probe_metrics = self._probe_metrics, {}
        if self._weights_before is not None:
            # ||W_after - W_before|| / ||W_before|| per block: the relative size of one update.
            for i, (params, before) in enumerate(zip(self._block_params, self._weights_before)):
                delta = torch.nn.utils.get_total_norm([p.detach() - b for p, b in zip(params, before)])
                norm = torch.nn.utils.get_total_norm(before)
                metrics[f"update_ratio/block_{i}"] = float(delta / norm.clamp_min(1e-12))
            self._weights_before = None
        logits = []
        for i, stats in enumerate(pl_module.model.attention_stats()):
            metrics[f"attn/max_logit/layer_{i}"] = stats["max_logit"]
            metrics[f"attn/entropy/layer_{i}"] = stats["entropy"]
            logits.append(stats["max_logit"])
            if math.isfinite(stats["max_logit"]):
                self.max_attn_logit = max(self.max_attn_logit or -math.inf, stats["max_logit"])
        if logits:
            metrics[f"{LEAD}/max_attn_logit"] = max(logits)
        pl_module.model.set_attention_stats(False)
        return metrics

    def failure_at(self, step: int | None) -> dict[str, Any] | None:
        """The summary's ``failure`` record of a run the detector stopped at ``step`` (None: no divergence).

        Keys: ``step``; ``probe``: how its attention was measured (``"replayed"``: one extra no-grad forward on
        the step's batch; ``"sampled"``: the step was a sampled probe step; None: not probed, e.g. when the
        rule fired on a micro-batch of an accumulated step, which has no optimiser step of its own); the step's
        ``loss``, ``log_z``, ``lr``, ``grad_norm`` (global, before clipping); the probe's ``max_attn_logit``
        (over layers), ``attn_max_logit`` and ``attn_entropy`` (per layer), ``grad_norm_blocks`` and
        ``update_ratio_blocks`` (per block); ``window``: the last :data:`WINDOW` steps' ``step``, ``loss``,
        ``grad_norm``, ``log_z``, ``lr``; ``probes``: the last :data:`WINDOW` probes' ``step`` and the probe
        keys above; both lists oldest first, ending at the failing step. None is a value not measured; a
        measured value that is NaN or infinite is None too (JSON has no such numbers), and its key is listed in
        the same object's ``non_finite``. Built from the windows when asked: the run stops at that step, so
        they end there.
        """
        if step is None:
            return None
        steps = [json_values(entry) for entry in self._steps]
        probes = [json_values(probe) for probe in self._probes]
        now = next((entry for entry in steps if entry["step"] == step), {})
        probe = next((p for p in probes if p["step"] == step), {})
        how = None if not probe else "replayed" if self._replayed_step == step else "sampled"
        record = {"step": step, "probe": how, **{key: now.get(key) for key in ("loss", "log_z", "lr", "grad_norm")},
                  **{key: probe.get(key) for key in PROBE_KEYS}}
        non_finite = [key for key in (*now.get("non_finite", ()), *probe.get("non_finite", ())) if key in record]
        if non_finite:
            record["non_finite"] = non_finite
        record["window"], record["probes"] = steps, probes
        return record

    def _write_progress(self, trainer: L.Trainer, loss: torch.Tensor | None, force: bool = False) -> None:
        """Rewrite progress.json at most every WRITE_EVERY_S seconds (the loss read costs a device sync)."""
        now = time.perf_counter()
        if self._progress_dir is None or (not force and now - self._progress_at < WRITE_EVERY_S):
            return
        self._progress_at = now
        trained = self.train_time_s + (now - self._t0 if self._t0 is not None else 0.0)
        steps = trainer.global_step
        write_progress(self._progress_dir, RunProgress(
            step=steps, total_steps=self._total_steps, epoch=trainer.current_epoch,
            max_epochs=trainer.max_epochs if trainer.max_epochs and trainer.max_epochs > 0 else None,
            loss=None if loss is None else float(loss), step_time_s=trained / steps if steps else None,
            updated=time.time()))

    def state_dict(self) -> dict[str, Any]:
        return {"max_grad_norm": self.max_grad_norm, "max_attn_logit": self.max_attn_logit,
                "train_time_s": self.train_time_s, "train_images": self.train_images}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.max_grad_norm = state_dict.get("max_grad_norm")
        self.max_attn_logit = state_dict.get("max_attn_logit")
        self.train_time_s = state_dict.get("train_time_s", 0.0)
        self.train_images = state_dict.get("train_images", 0)


def _batch_size(batch: Any) -> int:
    images = batch_images(batch)
    return 0 if images is None else int(images.shape[0])
