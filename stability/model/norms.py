"""Token normalisation layers: ``norm`` toggle.

``NORMS`` maps each value to a builder ``cfg -> module`` of one token norm over ``embed_dim`` channels. Every
norm owns a ``weight`` (gamma) vector, and a ``bias`` (beta) vector unless its definition has none, so the
state-dict keys are the same whichever is chosen (up to the bias).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import torch
from torch import nn
from torch.nn.modules.batchnorm import _NormBase

if TYPE_CHECKING:
    from stability.model.config import ViTConfig


class CustomNorm(nn.Module):
    """Base of the norm layers written here rather than derived from a torch norm: subclassing it is how such
    a layer declares itself a norm (see :func:`is_norm_layer`), so the init schemes treat it as one."""


# torch's normalisation layers: LayerNorm, RMSNorm, GroupNorm, and through their common base _NormBase every
# BatchNorm*d, SyncBatchNorm and InstanceNorm*d (lazy variants included). Subclasses are found by isinstance.
TORCH_NORMS: tuple[type[nn.Module], ...] = (nn.LayerNorm, nn.RMSNorm, nn.GroupNorm, _NormBase)


def is_norm_layer(module: nn.Module) -> bool:
    """Whether ``module`` is a normalisation layer: a torch norm (or a subclass) or a :class:`CustomNorm`.

    The init schemes use this instead of a hand-kept list of classes, so a norm added to ``NORMS`` (or used
    inside any component) is found as long as it derives from a torch norm or from ``CustomNorm``.
    """
    return isinstance(module, (*TORCH_NORMS, CustomNorm))


class LayerNorm(nn.LayerNorm):
    """LayerNorm with timm's ViT epsilon (1e-6), so the baseline matches timm to float precision."""

    def __init__(self, dim: int, eps: float = 1e-6) -> None:
        super().__init__(dim, eps=eps)


class RMSNorm(nn.RMSNorm):
    """RMSNorm (Zhang & Sennrich 2019, "Root Mean Square Layer Normalization", Eq. 4), torch's implementation
    with the ViT epsilon 1e-6:

        RMSNorm(x) = x / RMS(x) * g,    RMS(x) = sqrt(mean(x^2) + eps)    (mean over the D channels)

    LayerNorm without the re-centring (the paper's hypothesis: re-scaling invariance is what matters) and
    without a bias, so it owns ``weight`` only.
    """

    def __init__(self, dim: int, eps: float = 1e-6) -> None:
        super().__init__(dim, eps=eps)


class CenterNorm(CustomNorm):
    """LipsFormer CenterNorm (Qi et al. 2023, Sec. 3 "CenterNorm"; official code class ``CenterNorm``).

        CN(x) = gamma * D/(D-1) * (x - mean(x)) + beta

    It centres but never divides by the standard deviation (no epsilon), so it is affine in x and globally
    Lipschitz with constant D/(D-1) * max|gamma| (the centring matrix is a projection of norm 1), whereas
    LayerNorm's 1/sigma blows up as sigma -> 0.
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dim = dim
        self.scale = dim / (dim - 1) if dim > 1 else 1.0  # fixed D/(D-1), not learnable
        self.weight = nn.Parameter(torch.ones(dim))
        self.bias = nn.Parameter(torch.zeros(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        centred = x - x.mean(dim=-1, keepdim=True)  # (..., D)
        # beta + D/(D-1) * centred * gamma, one fused kernel
        return torch.addcmul(self.bias, centred, self.weight, value=self.scale)

    def lipschitz(self) -> float:
        """l2 Lipschitz constant of the map x -> CN(x) per token: D/(D-1) * max|gamma|."""
        return self.scale * self.weight.detach().abs().max().item()

    def extra_repr(self) -> str:
        return f"{self.dim}"


NORMS: dict[str, Callable[[ViTConfig], nn.Module]] = {
    "layernorm": lambda cfg: LayerNorm(cfg.embed_dim),
    "centernorm": lambda cfg: CenterNorm(cfg.embed_dim),
    "rmsnorm": lambda cfg: RMSNorm(cfg.embed_dim),
}
