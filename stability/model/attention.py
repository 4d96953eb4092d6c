"""Token mixers: ``attention`` toggle.

The attention variants share one forward (timm's layout: a fused ``qkv`` Linear, per-head transforms
``q_norm``, ``k_norm`` and ``v_norm``, PyTorch's fused ``scaled_dot_product_attention``, an output ``proj``);
they differ only in what those transforms do and in the logit scale. So a variant is a subclass that sets
them, and the baseline is the class with ``nn.Identity`` transforms and the 1/sqrt(d) scale.

"shift" is no attention at all (:class:`stability.model.shift.Shift`): a parameter-free mixer that acts on
the residual stream instead of a normalised copy of it (``on_stream``).

``ATTENTIONS`` maps each value to a builder ``cfg -> module`` that reads the config fields its class needs.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from stability.model.shift import Shift

if TYPE_CHECKING:
    from stability.model.config import ViTConfig

COSINE_EPS = 1e-6  # smoothing epsilon of the l2 normalisation (see L2Normalize)


class _SmoothL2Normalize(torch.autograd.Function):
    """v / sqrt(|v|^2 + eps) over the last dim, with a hand-written backward.

    Autograd of the composite (pow, sum, add, rsqrt, mul) records ~5 nodes and runs ~10 small kernels
    backwards; with r = (|v|^2 + eps)^(-1/2) and u = v r the gradient is simply r (g - u (u . g)).
    """

    @staticmethod
    def forward(ctx, v: torch.Tensor, eps: float) -> torch.Tensor:
        r = torch.linalg.vector_norm(v, dim=-1, keepdim=True).square_().add_(eps).rsqrt_()  # (..., 1)
        u = v * r
        ctx.save_for_backward(u, r)
        return u

    @staticmethod
    def backward(ctx, g: torch.Tensor) -> tuple[torch.Tensor, None]:
        u, r = ctx.saved_tensors
        u_dot_g = torch.linalg.vecdot(u, g, dim=-1).unsqueeze(-1)  # (..., 1)
        return torch.addcmul(g, u, u_dot_g, value=-1.0).mul_(r), None


class L2Normalize(nn.Module):
    """eps-smoothed l2 normalisation over the last dim, times a fixed scale: scale * v / sqrt(|v|^2 + eps).

    LipsFormer's scaled cosine attention (Qi et al. 2023, Sec. 3, Thm. 1) bounds its Lipschitz constant with
    eps^(-1/2) factors, i.e. it assumes this smoothed form, whose Jacobian stays bounded near v = 0
    (F.normalize's max(|v|, 1e-12) does not): its l2 Lipschitz constant is exactly scale / sqrt(eps).
    """

    def __init__(self, dim: int, eps: float = COSINE_EPS, scale: float = 1.0) -> None:
        super().__init__()
        self.dim, self.eps, self.scale = dim, eps, float(scale)

    def forward(self, v: torch.Tensor) -> torch.Tensor:
        u = _SmoothL2Normalize.apply(v, self.eps)
        return u if self.scale == 1.0 else u * self.scale

    def extra_repr(self) -> str:
        return f"{self.dim}, eps={self.eps}" + (f", scale={self.scale:g}" if self.scale != 1.0 else "")


class Attention(nn.Module):
    """Dot-product attention, softmax(q k^T / sqrt(d)) v (Vaswani et al. 2017, Eq. 1); timm's names."""

    on_stream = False  # a residual branch on a normalised copy of the stream (see Shift for the other kind)

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.q_norm, self.k_norm = self.make_qk_norms()
        self.v_norm = self.make_v_norm()
        self.proj = nn.Linear(dim, dim)
        self.scale: float | None = None  # multiplier of q k^T; None: SDPA's default 1/sqrt(head_dim)
        self.record_stats = False  # telemetry switch, see set_stats_recording
        self._stats: tuple[torch.Tensor, torch.Tensor] | None = None

    def make_qk_norms(self) -> tuple[nn.Module, nn.Module]:
        """Per-head transforms applied to q and k before the logits (baseline: none)."""
        return nn.Identity(), nn.Identity()

    def make_v_norm(self) -> nn.Module:
        """Per-head transform applied to v (baseline: none; it has no parameters in any variant, so the
        state-dict keys stay timm's)."""
        return nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, N, C = x.shape
        q, k, v = self.qkv(x).reshape(B, N, 3, self.num_heads, self.head_dim).unbind(2)  # each (B, N, H, d)
        # per-head q/k transforms on the (B, N, H, d) views, whose (H, d) rows are contiguous: cheaper than on
        # the head-major layout (and timm's permute-first layout is slower on the CPU for small tokens)
        q, k, v = self.q_norm(q).transpose(1, 2), self.k_norm(k).transpose(1, 2), self.v_norm(v).transpose(1, 2)
        if self.record_stats:
            self._record(q, k)  # each (B, H, N, d)
        x = F.scaled_dot_product_attention(q, k, v, scale=self.scale)  # (B, H, N, d)
        return self.proj(x.transpose(1, 2).reshape(B, N, C))  # (B, N, C)

    def set_stats_recording(self, enabled: bool) -> None:
        """Also compute the explicit logits on the following forwards (costly: an extra (B, H, N, N)
        product), or return to the plain fused path; either way forget the last recorded stats."""
        self.record_stats = enabled
        self._stats = None

    @torch.no_grad()
    def _record(self, q: torch.Tensor, k: torch.Tensor) -> None:
        """Pre-softmax logits made explicit (SDPA never shows them): max logit and softmax entropy.

        The max attention logit is the early-warning signal of Wortsman et al. 2023 (Sec. 3.1.1, attention
        logit growth); entropy collapse is its consequence. Kept as tensors: no device sync here.
        """
        scale = self.scale if self.scale is not None else self.head_dim**-0.5
        logits = (q @ k.transpose(-2, -1)).float() * scale  # (B, H, N, N)
        log_p = logits.log_softmax(dim=-1)
        entropy = -(log_p.exp() * log_p).sum(dim=-1).mean()  # nats, mean over batch, heads, queries
        self._stats = (logits.max(), entropy)

    def stats(self) -> dict[str, float]:
        """Last recorded {"max_logit", "entropy"}; NaN if none was recorded since stats were enabled."""
        if self._stats is None:
            return {"max_logit": float("nan"), "entropy": float("nan")}
        return {"max_logit": self._stats[0].item(), "entropy": self._stats[1].item()}


class CosineAttention(Attention):
    """LipsFormer scaled cosine-similarity attention (Qi et al. 2023, Sec. 3 "CSA"; official code
    ``WindowAttention``): softmax(tau * q_hat k_hat^T) v with q_hat = q / sqrt(|q|^2 + eps) per head.

    tau is fixed (10 in the LipsFormer-Swin code), there is no 1/sqrt(d), and v is not normalised (the
    code's variant). The logits lie in [-tau, tau] whatever the weights, removing the logit growth of
    dot-product attention (Kim et al. 2021 show dot-product attention is not Lipschitz).
    """

    def __init__(self, dim: int, num_heads: int, tau: float = 10.0) -> None:
        super().__init__(dim, num_heads)
        self.scale = float(tau)  # tau replaces 1/sqrt(d)

    def make_qk_norms(self) -> tuple[nn.Module, nn.Module]:
        return L2Normalize(self.head_dim), L2Normalize(self.head_dim)


class PaperCosineAttention(CosineAttention):
    """LipsFormer scaled cosine-similarity attention as written in the paper (Qi et al. 2023, Sec. 3 and
    Thm. 1; the form quoted by Nair, "Softmax is 1/2-Lipschitz", Eq. 6):

        SCSA(X) = nu * softmax(tau * q_hat k_hat^T) v_hat,    v_hat = v / sqrt(|v|^2 + eps) per head

    The code variant (:class:`CosineAttention`) leaves v unnormalised, so its output grows with the input
    and it has no global Lipschitz bound; normalising v as well bounds every factor, which is what gives
    this variant (and only this one) a finite bound (see ``stability.model.lipschitz.paper_cosine``).
    """

    def __init__(self, dim: int, num_heads: int, tau: float = 10.0, nu: float = 1.0) -> None:
        self.nu = float(nu)
        super().__init__(dim, num_heads, tau=tau)

    def make_v_norm(self) -> nn.Module:
        return L2Normalize(self.head_dim, scale=self.nu)


class QKNormAttention(Attention):
    """qk-layernorm: a LayerNorm over each head's q and k before the logits (Dehghani et al. 2023, ViT-22B,
    Sec. 3.2; Wortsman et al. 2023, Sec. 3.1.2). It bounds the logits' growth with the parameter norm.

    Names and parameters as timm's ``Attention(qk_norm=True)`` (``q_norm``/``k_norm``, LayerNorm with bias,
    eps 1e-6), so timm checkpoints load; Wortsman et al. use no bias.
    """

    def make_qk_norms(self) -> tuple[nn.Module, nn.Module]:
        return nn.LayerNorm(self.head_dim, eps=1e-6), nn.LayerNorm(self.head_dim, eps=1e-6)


ATTENTIONS: dict[str, Callable[[ViTConfig], nn.Module]] = {
    "dot": lambda cfg: Attention(cfg.embed_dim, cfg.num_heads),
    "cosine": lambda cfg: CosineAttention(cfg.embed_dim, cfg.num_heads, tau=cfg.cosine_tau),
    "qknorm": lambda cfg: QKNormAttention(cfg.embed_dim, cfg.num_heads),
    "shift": lambda cfg: Shift(cfg.grid_size, cfg.embed_dim, cfg.shift_div),
    "cosine_paper": lambda cfg: PaperCosineAttention(cfg.embed_dim, cfg.num_heads, tau=cfg.cosine_tau,
                                                     nu=cfg.cosine_nu),
}
