"""Dynamic Tanh: a normalisation-free replacement for every token norm (a ``norm`` toggle value).

Zhu, Chen, He, LeCun, Liu 2025, "Transformers without Normalization" (CVPR), the DyT layer:

    DyT(x) = gamma * tanh(alpha * x) + beta

alpha a learnable SCALAR (one per layer), gamma and beta per-channel vectors. The paper's observation: trained
LayerNorms map their inputs through S-shaped, tanh-like curves, so an element-wise squashing with a
learned input scale does the job of the statistics without computing any; its extreme values are squashed
rather than divided away.

Official code (``jiachenzhu/DyT``, ``dynamic_tanh.py``: ``DynamicTanh``, ``convert_ln_to_dyt``):
- ``alpha = ones(1) * alpha_init_value`` with ``alpha_init_value = 0.5``, the default for ViT / ConvNeXt and
  every non-LLM model in the paper (the paper studies alpha_0: LLMs need smaller, width-dependent values);
- ``weight`` (gamma) ones and ``bias`` (beta) zeros over the normalised shape, applied after the tanh;
- ``convert_ln_to_dyt`` replaces every ``nn.LayerNorm`` of the timm ViT, the final one included: the same set
  of layers the ``norm`` toggle builds here (norm1, norm2, final norm / fc_norm);
- its optimiser groups put every 1-D parameter in the no-weight-decay group, alpha (shape (1,)) included, as
  :func:`stability.training.module.parameter_groups` does.
"""

from __future__ import annotations

from collections.abc import Callable
from types import SimpleNamespace
from typing import TYPE_CHECKING

import torch
from torch import nn

from stability.model.norms import CustomNorm

if TYPE_CHECKING:
    from stability.model.config import ViTConfig

ALPHA_INIT = 0.5  # official alpha_init_value for ViT (and every non-LLM model of the paper)


class DyT(CustomNorm):
    """DyT(x) = gamma * tanh(alpha * x) + beta over the last dim (``embed_dim`` channels).

    Built as ``DyT(cfg)``: reads ``cfg.embed_dim`` and ``cfg.dyt_alpha_init`` (default 0.5 when the config has
    no such field); ``DyT.plain(dim, alpha_init)`` builds one without a config. A :class:`CustomNorm`, so the
    init schemes treat it as a norm (``weight`` <- 1, ``bias`` <- 0; they do not touch ``alpha``).

    Element-wise, its Jacobian is diag(gamma * alpha * (1 - tanh^2(alpha x))), so its l2 Lipschitz constant is
    |alpha| * max|gamma| (reached at x = 0): unlike LayerNorm, it has a global bound.
    """

    def __init__(self, cfg: ViTConfig) -> None:
        super().__init__()
        self.dim = int(cfg.embed_dim)
        self.alpha_init = float(getattr(cfg, "dyt_alpha_init", ALPHA_INIT))
        self.alpha = nn.Parameter(torch.full((1,), self.alpha_init))  # scalar, shape (1,) as in the official code
        self.weight = nn.Parameter(torch.ones(self.dim))  # gamma
        self.bias = nn.Parameter(torch.zeros(self.dim))  # beta

    @classmethod
    def plain(cls, dim: int, alpha_init: float = ALPHA_INIT) -> DyT:
        """A DyT over ``dim`` channels without a ViT config (tests, other models)."""
        return cls(SimpleNamespace(embed_dim=dim, dyt_alpha_init=alpha_init))  # type: ignore[arg-type]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # beta + tanh(alpha x) * gamma, the affine part in one fused kernel
        return torch.addcmul(self.bias, torch.tanh(self.alpha * x), self.weight)  # (..., D)

    def lipschitz(self) -> float:
        """l2 Lipschitz constant per token: |alpha| * max|gamma| (same interface as ``CenterNorm.lipschitz``)."""
        return float(self.lipschitz_constant().detach())

    def lipschitz_constant(self) -> torch.Tensor:
        """|alpha| * max|gamma| as a tensor (differentiable, for a bound that is trained through)."""
        return self.alpha.abs().squeeze(0) * self.weight.abs().max()

    def extra_repr(self) -> str:
        return f"{self.dim}, alpha_init={self.alpha_init:g}"


# The ``norm`` toggle's value ``dyt`` (merged after norms.NORMS by the registry; norms.py must not import this file,
# which imports it).
DYT_NORMS: dict[str, Callable[[ViTConfig], nn.Module]] = {"dyt": DyT}
