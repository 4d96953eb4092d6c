"""Residual branch scaling: ``residual`` toggle.

"plain" is ``nn.Identity`` (x + f(x)); "weighted" multiplies the branch by a learnable per-channel alpha.
"""

from __future__ import annotations

import torch
from torch import nn


class ResidualScale(nn.Module):
    """LipsFormer weighted residual shortcut x + alpha * f(x) (Qi et al. 2023, Sec. 3; official code
    ``ScaleLayer``): alpha in R^D, learnable, initialised to 1/L_total in LipsFormer-Swin.

    A small alpha makes every block close to the identity at init, so the network's Lipschitz bound is a
    product of factors 1 + O(1/L) instead of growing with depth. Same form (and, deliberately, the same
    parameter name ``gamma`` under ``ls1``/``ls2``) as timm's LayerScale (Touvron et al. 2021, CaiT), so a
    timm ViT built with ``init_values`` loads into it.
    """

    def __init__(self, dim: int, init: float) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.full((dim,), float(init)))  # alpha of LipsFormer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma  # (B, N, D) * (D,)


# nn.Identity ignores its constructor arguments, so both take (dim, init).
RESIDUALS: dict[str, type[nn.Module]] = {"plain": nn.Identity, "weighted": ResidualScale}
