"""Attention-logit soft-capping (an ``attention`` toggle value).

Gemma Team 2024, "Gemma 2: Improving Open Language Models at a Practical Size", Sec. 2 ("Logit soft-capping"):
the logits of every attention layer (and of the final layer) are squashed into (-cap, cap),

    logits <- cap * tanh(logits / cap),

with cap = 50 for self-attention and 30 for the final layer. The official Gemma PyTorch code
(``google/gemma_pytorch``, ``gemma/model.py``, ``GemmaAttention.forward``) applies it to the scaled scores
(q already multiplied by ``query_pre_attn_scalar ** -0.5``), before the mask and a float32 softmax;
``gemma/config.py`` sets ``attn_logit_softcapping=50.0`` for Gemma 2. tanh is the identity to first order,
so small logits are untouched and only the tail that grows without bound is bent.

Default cap for the small ViT here: 50, Gemma's. The cap acts on logits already divided by sqrt(head_dim),
whose size does not depend on the width, so the same number means the same thing for a 16-wide head as for a
256-wide one; on healthy runs of the digits ViT the logits stay well inside it (tanh(x/50) differs from x/50
by under 1% for |x| < 8.7) and the cap only bends logits that are already running away, as in Gemma 2, where
it is a guard rather than a regulariser. A cap that binds earlier is a different experiment: set the config
field ``softcap`` (e.g. 10, the logit range cosine attention gets from ``cosine_tau``). Kimi K2's report
(QK-clip) argues that a soft cap alone lets q.k keep growing underneath it; :mod:`stability.training.qk_clip`
is the weight-side alternative.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from types import SimpleNamespace
from typing import TYPE_CHECKING

import torch
from torch import nn

from stability.errors import ConfigError
from stability.model.attention import Attention

if TYPE_CHECKING:
    from stability.model.config import ViTConfig

DEFAULT_CAP = 50.0  # Gemma 2's attn_logit_softcapping


def softcap(logits: torch.Tensor, cap: float) -> torch.Tensor:
    """cap * tanh(logits / cap): a smooth clamp to (-cap, cap), ~identity for |logits| << cap."""
    return torch.tanh(logits / cap) * cap


class SoftcapAttention(Attention):
    """Dot-product attention with soft-capped logits: softmax(cap * tanh(q k^T / (cap sqrt(d)))) v.

    Built as ``SoftcapAttention(cfg)`` (reads ``embed_dim``, ``num_heads``, and ``softcap``, default 50 when the
    config has no such field); ``SoftcapAttention.plain(dim, num_heads, cap)`` without a config. Same
    parameters and names as :class:`Attention` (``qkv``, ``proj``), so dot-attention weights load into it.

    The fused SDPA kernel cannot apply a non-linearity to the logits, so this forward makes them explicit
    (one (B, H, N, N) tensor per layer, as the telemetry's path does). Telemetry (``set_stats_recording``,
    ``stats``): ``max_logit`` is the RAW logit, before capping, so the early-warning signal keeps its meaning
    (and a capped run's curve is comparable with the baseline's; the capped one can never exceed ``cap``);
    ``max_logit_capped`` is after capping; ``entropy`` is that of the attention actually used (capped).
    """

    def __init__(self, cfg: ViTConfig) -> None:
        super().__init__(cfg.embed_dim, cfg.num_heads)
        self.cap = float(getattr(cfg, "softcap", DEFAULT_CAP))
        if not (math.isfinite(self.cap) and self.cap > 0):
            raise ConfigError(f"softcap={self.cap!r} is not valid; it must be a positive finite number")
        self._capped_max: torch.Tensor | None = None

    @classmethod
    def plain(cls, dim: int, num_heads: int, cap: float = DEFAULT_CAP) -> SoftcapAttention:
        """A soft-capped attention layer without a ViT config."""
        return cls(SimpleNamespace(embed_dim=dim, num_heads=num_heads, softcap=cap))  # type: ignore[arg-type]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, N, C = x.shape
        q, k, v = self.qkv(x).reshape(B, N, 3, self.num_heads, self.head_dim).unbind(2)  # each (B, N, H, d)
        q, k, v = self.q_norm(q).transpose(1, 2), self.k_norm(k).transpose(1, 2), self.v_norm(v).transpose(1, 2)
        scale = self.scale if self.scale is not None else self.head_dim**-0.5
        raw = (q @ k.transpose(-2, -1)) * scale  # (B, H, N, N)
        capped = softcap(raw, self.cap)
        attn = capped.float().softmax(dim=-1).type_as(v)  # float32 softmax, as Gemma's code
        if self.record_stats:
            self._record_logits(raw, capped, attn)
        x = attn @ v  # (B, H, N, d)
        return self.proj(x.transpose(1, 2).reshape(B, N, C))  # (B, N, C)

    @torch.no_grad()
    def _record_logits(self, raw: torch.Tensor, capped: torch.Tensor, attn: torch.Tensor) -> None:
        log_p = capped.float().log_softmax(dim=-1)
        entropy = -(attn.float() * log_p).sum(dim=-1).mean()  # nats, mean over batch, heads, queries
        self._stats = (raw.max().float(), entropy)
        self._capped_max = capped.max().float()

    def set_stats_recording(self, enabled: bool) -> None:
        super().set_stats_recording(enabled)
        self._capped_max = None

    def stats(self) -> dict[str, float]:
        """Last recorded {"max_logit" (raw), "entropy", "max_logit_capped"}; NaN where none was recorded."""
        out = super().stats()
        out["max_logit_capped"] = float("nan") if self._capped_max is None else self._capped_max.item()
        return out

    def extra_repr(self) -> str:
        return f"cap={self.cap:g}"


# The ``attention`` toggle's value ``softcap`` (merged after attention.ATTENTIONS by the registry).
SOFTCAP_ATTENTIONS: dict[str, Callable[[ViTConfig], nn.Module]] = {"softcap": SoftcapAttention}
