"""QK-clip: after each optimiser step, shrink W_q and W_k of every attention head whose logits ran past tau.

Kimi Team 2025, "Kimi K2: Open Agentic Intelligence" (technical report), Sec. 2.1, the "QK-Clip" part of
MuonClip. For each head h the forward of the step measures

    S_max^h = max over the batch, max_{i,j} q_i^h . k_j^h / sqrt(d)        (signed, the softmax's own logits)

and after the optimiser update, if S_max^h > tau,

    gamma_h = tau / S_max^h,    W_q^h <- sqrt(gamma_h) W_q^h,    W_k^h <- sqrt(gamma_h) W_k^h

(gamma_h = min(1, tau / S_max^h) otherwise 1: heads below the threshold are untouched). The logits are
bilinear in (W_q^h, W_k^h), so the same batch would now give exactly tau as its largest logit. Only heads
that exceed tau are touched, and forward and backward are unchanged: the clip acts on the weights, where a
soft cap (Gemma 2) acts on the logits and lets q.k keep growing underneath. K2 uses tau = 100.

Choices here:
- K2's attention is MLA, whose rotary parts get special rules (the per-head rotary query q^R scaled by
  gamma_h, the shared rotary key k^R left alone so one head's clip does not touch the others). This ViT has
  no rotary or shared parts: every head's q and k are its own rows of the fused ``qkv`` Linear, and those
  rows are what is scaled.
- K2's projections have no bias. Here the q and k biases are scaled with their rows: q = W_q x + b_q scaled by
  sqrt(gamma_h) in full is what keeps the logits exactly bilinear, so the clip still lands on tau.
- Optimiser state (Adam moments) is left as K2 leaves it: only the weights are rescaled.
- S_max^h is the max over the whole optimiser step's batch: over accumulated micro-batches, and over
  data-parallel ranks (an all-reduce of the per-head maxima, so every rank clips the same heads and the
  replicas stay identical).

The attention module records only the max over heads, and only on probe steps (``set_stats_recording``), so
this callback measures the per-head maxima itself: a forward hook on each eligible layer's ``qkv`` Linear
forms q k^T from its output (one (B, H, N, N) product per layer and training forward, under ``no_grad``).
Eligible layers are :class:`~stability.model.attention.Attention` modules whose logits are bilinear in
(W_q, W_k): identity ``q_norm``/``k_norm`` (``dot``, and ``softcap``, whose raw logits are the ones
measured) and a plain ``nn.Linear`` ``qkv``. Cosine and qk-norm attention normalise q and k, so rescaling
their weights changes no logit (their logits are bounded already); a sigma-Reparam ``qkv`` renormalises its
weight. A model with no eligible layer is a configuration error.
"""

from __future__ import annotations

import math
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from torch import nn

from stability.errors import ConfigError
from stability.model.attention import Attention

DEFAULT_TAU = 100.0  # Kimi K2's threshold


def clippable(attn: nn.Module) -> bool:
    """Whether ``attn``'s logits are bilinear in its q and k weights, so QK-clip sets their maximum exactly."""
    return (isinstance(attn, Attention) and isinstance(attn.q_norm, nn.Identity)
            and isinstance(attn.k_norm, nn.Identity) and type(attn.qkv) is nn.Linear)


def head_max_logits(attn: Attention, qkv_out: torch.Tensor) -> torch.Tensor:
    """Per-head max pre-softmax logit of one forward: (B, N, 3 D) output of ``attn.qkv`` -> (H,)."""
    B, N, _ = qkv_out.shape
    q, k, _v = qkv_out.detach().reshape(B, N, 3, attn.num_heads, attn.head_dim).unbind(2)  # each (B, N, H, d)
    scale = attn.scale if attn.scale is not None else attn.head_dim**-0.5
    logits = q.transpose(1, 2) @ k.permute(0, 2, 3, 1)  # (B, H, N, N)
    return logits.float().amax(dim=(0, 2, 3)) * scale  # (H,); scale > 0, so max(scale x) = scale max(x)


@torch.no_grad()
def clip_heads(attn: Attention, s_max: torch.Tensor, tau: float) -> torch.Tensor:
    """Rescale, in place, the q and k rows (and biases) of the heads with ``s_max > tau`` by sqrt(tau / s_max).

    Returns gamma per head (1 where untouched). Row layout of the fused ``qkv`` weight (3 D, D): q rows
    [0, D), k rows [D, 2 D), head h owning rows h d .. (h + 1) d - 1 of each (the forward's reshape)."""
    gamma = torch.where(s_max > tau, tau / s_max, torch.ones_like(s_max))  # (H,)
    factor = gamma.sqrt().repeat_interleave(attn.head_dim).to(attn.qkv.weight.dtype)  # (D,)
    dim = attn.num_heads * attn.head_dim
    attn.qkv.weight[: 2 * dim].mul_(factor.repeat(2)[:, None])  # q and k rows
    if attn.qkv.bias is not None:
        attn.qkv.bias[: 2 * dim].mul_(factor.repeat(2))
    return gamma


class QKClip(Callback):
    """QK-clip (Kimi K2's MuonClip, without Muon) as a Lightning callback; works with any optimiser.

    Args:
        tau: the logit threshold (K2: 100). A head whose max logit over the step's batch exceeded tau has its
            q and k rows scaled by sqrt(tau / S_max) after the optimiser step. None: off, the callback does
            nothing (the run option ``qk_clip.tau`` of ``stability fit``, whose default is null).

    After each step, ``last_gamma[i]`` holds layer i's per-head factors (1 = untouched) and
    ``last_max_logits[i]`` the per-head maxima they came from; ``clipped_heads`` counts every head clipped so
    far. The number clipped at each step is logged as ``train/qk_clip_heads``.
    """

    def __init__(self, tau: float | None = DEFAULT_TAU) -> None:
        if tau is not None and (isinstance(tau, bool) or not isinstance(tau, (int, float)) or not math.isfinite(tau)
                                or tau <= 0):
            raise ConfigError(f"qk_clip.tau: got {tau!r}; it must be a positive finite number (Kimi K2: 100), or "
                              "null for no QK-clip")
        self.tau = None if tau is None else float(tau)
        self.layers: list[Attention] = []
        self.last_gamma: list[torch.Tensor] = []
        self.last_max_logits: list[torch.Tensor] = []
        self.clipped_heads = 0
        self._max: list[torch.Tensor | None] = []
        self._handles: list[torch.utils.hooks.RemovableHandle] = []
        self._seen_step: int | None = None

    # -- the measurement ----------------------------------------------------------------------------------
    def check(self, model: nn.Module) -> None:
        """ConfigError (one line) if QK-clip is on and ``model`` has no layer it can act on: what ``stability fit``
        checks before the run folder exists."""
        if self.tau is not None and not any(clippable(m) for m in model.modules()):
            self.attach(model)  # raises the error, naming the model's attention layers

    def attach(self, model: nn.Module) -> None:
        """Hook every eligible attention layer of ``model`` (see the module docstring); ConfigError if none."""
        self.detach()
        self.layers = [m for m in model.modules() if clippable(m)]
        if not self.layers:
            kinds = sorted({type(m).__name__ for m in model.modules() if isinstance(m, Attention)}) or ["none"]
            raise ConfigError(f"qk_clip: the model has no attention layer QK-clip can act on (attention layers: "
                              f"{', '.join(kinds)}); it needs logits bilinear in W_q and W_k: attention 'dot' or "
                              "'softcap' without sigma-Reparam (cosine and qknorm normalise q and k, so scaling "
                              "their weights changes no logit)")
        self._max = [None] * len(self.layers)
        self._handles = [attn.qkv.register_forward_hook(self._hook(i)) for i, attn in enumerate(self.layers)]

    def detach(self) -> None:
        """Remove the hooks."""
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def _hook(self, index: int) -> Any:
        def hook(module: nn.Module, inputs: Any, output: torch.Tensor) -> None:
            if not module.training:  # validation and test forwards do not count
                return
            with torch.no_grad():
                s = head_max_logits(self.layers[index], output)
                prev = self._max[index]
                self._max[index] = s if prev is None else torch.maximum(prev, s)
        return hook

    def pending_max_logits(self) -> list[torch.Tensor | None]:
        """Per layer, the per-head maxima measured since the last clip (None: no training forward yet)."""
        return list(self._max)

    # -- the clip -----------------------------------------------------------------------------------------
    @torch.no_grad()
    def clip(self, reduce: Any = None) -> int:
        """Clip every layer from the maxima measured since the last clip, then forget them; returns the number
        of heads clipped. ``reduce``: a function (tensor) -> its max over data-parallel ranks (None: one rank)."""
        measured = [(i, s) for i, s in enumerate(self._max) if s is not None]
        self._max = [None] * len(self.layers)
        if not measured:
            return 0
        stacked = torch.stack([s for _, s in measured])  # (L, H)
        if reduce is not None:
            stacked = reduce(stacked)
        self.last_max_logits, self.last_gamma = [], []
        count = 0
        for (i, _), s_max in zip(measured, stacked):
            gamma = clip_heads(self.layers[i], s_max, self.tau)  # type: ignore[arg-type] - attached: tau is set
            self.last_max_logits.append(s_max)
            self.last_gamma.append(gamma)
            count += int((gamma < 1).sum())
        self.clipped_heads += count
        return count

    # -- Lightning hooks ----------------------------------------------------------------------------------
    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.tau is not None:  # off: no hooks, nothing measured, nothing logged
            self.attach(pl_module)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._seen_step = trainer.global_step

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        # global_step counts optimiser steps: unchanged while gradients accumulate (keep measuring), and it
        # does not advance when a step was skipped (e.g. an AMP overflow): nothing was updated to clip then.
        if self.tau is None or trainer.global_step == self._seen_step:
            return
        self._seen_step = trainer.global_step
        count = self.clip(reduce=lambda t: trainer.strategy.reduce(t, reduce_op="max"))
        pl_module.log("train/qk_clip_heads", float(count), on_step=True, on_epoch=False)

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.detach()

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        self.detach()
