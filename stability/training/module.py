"""The LightningModule: one configurable ViT, its loss, optimiser and learning-rate schedule.

LightningCLI reads the typed ``__init__`` below, so every argument is a config key:
``model.vit.*`` are the model's dimensions and toggles (:class:`stability.model.ViTConfig`), the rest
are ``model.lr``, ``model.warmup`` and so on. The optimisers themselves are built in
:mod:`stability.training.optimizers`.

Targets: class indices (B,), or (B, K) probabilities when the data mixes images (mixup/cutmix, which the data
module applies: see :mod:`stability.data.cifar`). Both go through torch's cross-entropy, which takes either
and applies the same label smoothing to both.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any, Literal

import lightning as L
import torch
import torch.nn.functional as F
from timm.utils import adaptive_clip_grad
from torch import nn
from torchmetrics.classification import MulticlassAccuracy

from stability.errors import ConfigError
from stability.model import VisionTransformer, ViTConfig
from stability.model.lipschitz import (
    STEP_ITERS,
    LipschitzBound,
    emma_logits,
    input_normalization,
    input_scale,
    margin_radius,
)
from stability.training.optimizers import DECOUPLED, HEAD_PREFIX, OPTIMIZERS, build_optimizer, muon_available

# Parameters that must not be decayed although they are not 1-D: decaying the position embedding or the
# class token pulls them to zero, which Xiao et al. (2021, sec. 4) and timm's no_weight_decay() avoid.
NO_DECAY_NAMES = ("pos_embed", "cls_token")


def warmup_cosine(step: int, warmup_steps: int, total_steps: int, min_lr_ratio: float = 0.0) -> float:
    """LR multiplier: linear warmup from 0 to 1 over ``warmup_steps``, then half-cosine decay to ``min_lr_ratio``.

    The multiplier at ``step`` is the one applied to the optimiser step number ``step`` (0-based).
    """
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    decay_steps = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / decay_steps)
    return min_lr_ratio + (1.0 - min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def parameter_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Split parameters into decayed and non-decayed groups.

    No weight decay on norm gains/biases, all biases, the position embedding, the class token and the
    weighted-residual alphas (all 1-D, or named in ``NO_DECAY_NAMES``): Xiao et al. 2021 (App. E) report
    that decaying norm gains and biases "can dramatically reduce top-1 accuracy" for small models.
    """
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        if param.ndim <= 1 or name.split(".")[-1] in NO_DECAY_NAMES:
            no_decay.append(param)
        else:
            decay.append(param)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def z_loss(logits: torch.Tensor) -> torch.Tensor:
    """Mean squared log partition function, log^2 Z (Wortsman et al. 2023, sec. 3.2, "output logit divergence").

    logits: (B, K). Pulls log Z = logsumexp(logits) towards 0 so the logits cannot drift without bound.
    """
    return torch.logsumexp(logits.float(), dim=-1).pow(2).mean()


def _check_range(key: str, value: float, valid: str, ok: Callable[[float], bool]) -> None:
    """One line naming the key, the value and the valid range (NaN and infinities are never valid)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or not ok(value):
        raise ConfigError(f"model.{key}: got {value!r}; give {valid}")


class ViTClassifier(L.LightningModule):
    """Image classification with the configurable ViT.

    Args:
        vit: the model's dimensions and stability toggles (``model.vit.*``).
        optimizer: ``adamw`` (the papers' default) or ``sgd`` with Nesterov-free momentum (Xiao et al. compare
            the two: the AdamW-SGD gap is their "optimizer stability" metric); ``lion`` (timm's Lion, Chen et al.
            2023: a sign update, so its lr should be 3-10x smaller and its weight decay 3-10x larger than
            AdamW's for the same effective decay, and the paper's betas are (0.9, 0.99): set them, the
            defaults here are AdamW's); ``muon`` (torch's Muon on the hidden 2-D weights, AdamW on the rest,
            one lr and weight decay for both: :mod:`stability.training.optimizers`).
        lr: peak learning rate (reached at the end of warmup).
        weight_decay: decoupled weight decay for weight matrices (see ``parameter_groups``): the optimiser
            applies ``lr(t) * weight_decay`` per step; with ``independent_wd``, ``weight_decay`` per step at the
            peak, following the schedule's shape.
        independent_wd: weight decay independent of the learning rate (Wortsman et al. 2023, sec. 3.2.2):
            the optimiser gets ``weight_decay / lr``, so the per-step decay is ``s_t * weight_decay`` with s_t
            the schedule's multiplier, not ``lr * s_t * weight_decay``. They use 1e-4 with it (0.1 without).
            AdamW, Lion and Muon only (SGD's decay is an L2 term in the gradient).
        betas: AdamW betas (and Lion's).
        adam_eps: AdamW epsilon (Wortsman et al. 2023, sec. 3.4: at small gradient RMS the default 1e-8
            shrinks the updates; they find 1e-15 better). Also the AdamW half of ``muon``.
        momentum: SGD momentum.
        agc: adaptive gradient clipping (Brock et al. 2021, NFNets; timm's ``adaptive_clip_grad``): each unit's
            gradient (a row of a weight matrix) is scaled down to at most ``agc_clip_factor`` times the
            unit's weight norm (floored at 1e-3). Not on the classifier head, as NFNets and timm do. Applied
            after the telemetry has read the gradients and before ``trainer.gradient_clip_val``'s clipping.
        agc_clip_factor: AGC's lambda (NFNets: 0.01 at their large batch sizes; larger for smaller batches).
        warmup: the ``warmup`` toggle: linear warmup before the cosine decay (on), or cosine from step 0 (off).
        warmup_epochs: warmup length in epochs (fractions allowed); ignored when ``warmup`` is off.
        min_lr_ratio: the cosine decays to ``lr * min_lr_ratio``.
        label_smoothing: cross-entropy label smoothing.
        z_loss: coefficient of the z-loss on the classifier logits (Wortsman et al. use 1e-4); 0 disables it.
        margin_eps: margin training (LipShiFT's EMMA loss, see ``stability.model.lipschitz.certify.emma_logits``):
            the l2 radius in [0, 1] pixel space the margins are trained for (LipShiFT: 36/255 ~ 0.1412), with the
            Lipschitz bound computed and differentiated every step; 0 (default) is plain cross-entropy.
            Needs a model with a global Lipschitz bound.
        margin_ramp: the training radius grows from ``margin_ramp[0]`` to ``margin_ramp[1]`` x ``margin_eps``
            over the first two thirds of training (LipShiFT on CIFAR-10: 1 -> 2).
    """

    def __init__(
        self,
        vit: ViTConfig = ViTConfig(),  # noqa: B008 - a frozen-by-convention dataclass default, read-only
        optimizer: Literal["adamw", "sgd", "lion", "muon"] = "adamw",
        lr: float = 1e-3,
        weight_decay: float = 0.05,
        independent_wd: bool = False,
        betas: tuple[float, float] = (0.9, 0.999),
        adam_eps: float = 1e-8,
        momentum: float = 0.9,
        agc: bool = False,
        agc_clip_factor: float = 0.01,
        warmup: bool = True,
        warmup_epochs: float = 2.0,
        min_lr_ratio: float = 0.0,
        label_smoothing: float = 0.0,
        z_loss: float = 0.0,
        margin_eps: float = 0.0,
        margin_ramp: tuple[float, float] = (1.0, 2.0),
    ) -> None:
        super().__init__()
        if isinstance(vit, dict):  # from a checkpoint's hyper_parameters
            vit = ViTConfig(**vit)
        _check_range("lr", lr, "a finite number > 0", lambda v: v > 0)
        _check_range("weight_decay", weight_decay, "a finite number >= 0", lambda v: v >= 0)
        _check_range("warmup_epochs", warmup_epochs, "a finite number >= 0", lambda v: v >= 0)
        _check_range("min_lr_ratio", min_lr_ratio, "a number in [0, 1]", lambda v: 0 <= v <= 1)
        # smoothing 1 turns every target into the uniform distribution: nothing left to learn
        _check_range("label_smoothing", label_smoothing, "a number in [0, 1)", lambda v: 0 <= v < 1)
        _check_range("z_loss", z_loss, "a finite number >= 0 (0 disables it)", lambda v: v >= 0)
        _check_range("momentum", momentum, "a number in [0, 1)", lambda v: 0 <= v < 1)
        for i, beta in enumerate(betas):
            _check_range(f"betas[{i}]", beta, "a number in [0, 1)", lambda v: 0 <= v < 1)
        _check_range("margin_eps", margin_eps, "a finite number >= 0 (0 disables margin training)", lambda v: v >= 0)
        for i, ramp in enumerate(margin_ramp):
            _check_range(f"margin_ramp[{i}]", ramp, "a finite number >= 0", lambda v: v >= 0)
        _check_range("adam_eps", adam_eps, "a finite number > 0", lambda v: v > 0)
        _check_range("agc_clip_factor", agc_clip_factor, "a finite number > 0", lambda v: v > 0)
        valid = OPTIMIZERS if muon_available() else tuple(o for o in OPTIMIZERS if o != "muon")
        if optimizer not in valid:
            lacks = "" if muon_available() else f" (muon needs torch.optim.Muon, which torch {torch.__version__} lacks)"
            raise ConfigError(f"model.optimizer: got {optimizer!r}; valid values: "
                              f"{', '.join(repr(o) for o in valid)}{lacks}")
        for key, flag in (("independent_wd", independent_wd), ("agc", agc)):
            if not isinstance(flag, bool):
                raise ConfigError(f"model.{key}: got {flag!r}; give true or false")
        if independent_wd and optimizer not in DECOUPLED:
            raise ConfigError(f"model.independent_wd: true needs an optimizer with decoupled weight decay "
                              f"({', '.join(DECOUPLED)}); model.optimizer is {optimizer!r}")
        # The dataclass is stored as a plain dict so checkpoints load with torch.load(weights_only=True).
        self.save_hyperparameters(ignore=["vit"])
        self.hparams["vit"] = dataclasses.asdict(vit)
        self.vit_config = vit
        self.model = VisionTransformer(vit)
        self.lipschitz: LipschitzBound | None = None  # the bound margin training differentiates
        if margin_eps > 0:
            self.lipschitz = LipschitzBound(self.model)
            unbounded = self.lipschitz.compute(iters=1).unbounded
            if unbounded:
                raise ConfigError(f"model.margin_eps={margin_eps} needs a model with a global Lipschitz bound; this "
                                  f"one has none at {unbounded[0].name}: {unbounded[0].why}")
        # Top-1 accuracy, the fraction of images classified right, as the papers report it. torchmetrics
        # averages per class by default ("macro"), which differs from it whenever classes are unbalanced.
        self.val_acc = MulticlassAccuracy(num_classes=vit.num_classes, average="micro")
        self.test_acc = MulticlassAccuracy(num_classes=vit.num_classes, average="micro")
        # The last training step's loss (as returned, detached), log Z and lr: see training_step.
        self.step_values: dict[str, torch.Tensor | float] = {}

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model(images)

    def setup(self, stage: str) -> None:
        self.check_data(self.trainer.datamodule if self._trainer is not None else None)

    def check_data(self, data: L.LightningDataModule | None) -> None:
        """Raise ConfigError if the model's input or output size does not match ``data``.

        The model's dimensions are part of its config (so a config file says everything); the data modules
        know theirs right after ``__init__``, so this runs before a run folder exists (and again in ``setup``
        for data plugged in from Python).
        """
        if data is None:
            return
        # Every mismatch in one line: a user's first folder of images is often off in channels, size and
        # classes at once, and one error per attempt would take as many attempts to fix.
        wrong = [(key, getattr(self.vit_config, key), getattr(data, key, None))
                 for key in ("in_chans", "img_size", "num_classes")]
        wrong = [(key, have, want) for key, have, want in wrong if want is not None and have != want]
        if len(wrong) == 1:
            ((key, have, want),) = wrong
            raise ConfigError(f"model.vit.{key}: got {have}, but the data ({type(data).__name__}) has "
                              f"{key}={want}; set --model.vit.{key} {want}")
        if wrong:
            raise ConfigError(
                f"model.vit: got {', '.join(f'{k}={h}' for k, h, _ in wrong)}, but the data "
                f"({type(data).__name__}) has {', '.join(f'{k}={w}' for k, _, w in wrong)}; set "
                + " ".join(f"--model.vit.{k} {w}" for k, _, w in wrong))
        if self.lipschitz is not None and getattr(data, "soft_targets", False):
            raise ConfigError(f"model.margin_eps={self.hparams.margin_eps} needs class labels, but the data "
                              f"({type(data).__name__}) mixes images into soft targets: set data.mixup and "
                              "data.cutmix to 0, or model.margin_eps to 0")
        if self.lipschitz is not None:  # the margin radius is in pixel space: fold the data normalisation in
            self.lipschitz.input_scale = input_scale(input_normalization(data)[1])

    # -- steps -------------------------------------------------------------------------------------------
    def _loss(self, logits: torch.Tensor, labels: torch.Tensor, smoothing: float) -> torch.Tensor:
        """Cross-entropy against class indices (B,) or probabilities (B, K); smoothing mixes either target
        with the uniform distribution, so mixup + smoothing gives timm's smoothed mixed targets."""
        if self.lipschitz is not None and self.training:  # check_data keeps soft targets away from it
            logits = self._margin_logits(logits, labels)
        return F.cross_entropy(logits, labels, label_smoothing=smoothing)

    def _margin_logits(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """EMMA logits at this step's radius, the bound recomputed (warm-started) and differentiated."""
        hp = self.hparams
        progress = 0.0
        if self._trainer is not None and self.trainer.estimated_stepping_batches:
            progress = self.global_step / max(1.0, float(self.trainer.estimated_stepping_batches))
        radius = margin_radius(hp.margin_eps, tuple(hp.margin_ramp), progress)
        bounds = self.lipschitz.compute(iters=STEP_ITERS, differentiable=True)  # type: ignore[union-attr]
        if self._trainer is not None:
            self.log_dict({"train/margin_radius": radius, "train/lipschitz_backbone": bounds.backbone.detach()},
                          on_step=True, on_epoch=False, batch_size=labels.shape[0])
        return emma_logits(logits, labels, bounds.backbone, bounds.head_weight, radius)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        """One step's loss. No training accuracy is logged: with mixup a mixed image has no one right class
        (the argmax of its target names only the larger part), and the held-out accuracy says what it
        would say without that ambiguity."""
        images, labels = batch  # labels: (B,) class indices, or (B, K) probabilities from mixup/cutmix
        logits = self(images)  # (B, K)
        loss = self._loss(logits, labels, self.hparams.label_smoothing)
        log_z = torch.logsumexp(logits.detach().float(), dim=-1).mean()
        if self.hparams.z_loss > 0:
            loss = loss + self.hparams.z_loss * z_loss(logits)
        lr = self.trainer.optimizers[0].param_groups[0]["lr"] if self._trainer is not None else float("nan")
        # Kept for the telemetry, which must know before the optimiser step whether this loss diverges (to
        # measure the weights that produced it) and keeps the last steps' values; tensors: no device sync here.
        self.step_values = {"loss": loss.detach(), "log_z": log_z, "lr": lr}
        self.log_dict({"train/loss": self.step_values["loss"], "train/log_z": log_z, "train/lr": lr},
                      on_step=True, on_epoch=False, batch_size=labels.shape[0])
        return loss

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        self._evaluate(batch, "val", self.val_acc)

    def test_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        self._evaluate(batch, "test", self.test_acc)

    def _evaluate(self, batch: tuple[torch.Tensor, torch.Tensor], split: str, acc: MulticlassAccuracy) -> None:
        images, labels = batch
        logits = self(images)
        loss = F.cross_entropy(logits, labels)  # unsmoothed: comparable across label_smoothing settings
        acc(logits, labels)
        self.log_dict({f"{split}/loss": loss, f"{split}/acc": acc}, on_step=False, on_epoch=True,
                      batch_size=labels.shape[0], sync_dist=True)

    # -- optimisation ------------------------------------------------------------------------------------
    def configure_gradient_clipping(self, optimizer: torch.optim.Optimizer, gradient_clip_val: float | None = None,
                                    gradient_clip_algorithm: str | None = None) -> None:
        """AGC (``agc``) first, then the trainer's own clipping (``trainer.gradient_clip_val``), if set.

        Lightning calls this after the callbacks' ``on_before_optimizer_step``, so the telemetry's gradient
        norm is the unclipped one whichever clipping is on.
        """
        if self.hparams.agc:
            params = [p for name, p in self.model.named_parameters() if not name.startswith(HEAD_PREFIX)]
            adaptive_clip_grad(params, clip_factor=self.hparams.agc_clip_factor)
        self.clip_gradients(optimizer, gradient_clip_val, gradient_clip_algorithm)

    def configure_optimizers(self) -> dict[str, Any]:
        hp = self.hparams
        optimizer = build_optimizer(self.model, parameter_groups(self.model, hp.weight_decay), hp)
        total = max(1, int(self.trainer.estimated_stepping_batches))
        steps_per_epoch = total / max(1, self.trainer.max_epochs or 1)
        warmup_steps = int(round(hp.warmup_epochs * steps_per_epoch)) if hp.warmup else 0
        warmup_steps = min(warmup_steps, total)
        schedule = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: warmup_cosine(step, warmup_steps, total, hp.min_lr_ratio)
        )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}
