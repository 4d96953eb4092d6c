"""Residual branch scaling: ``residual`` toggle.

"plain" is ``nn.Identity`` (x + f(x)); "weighted" multiplies the branch by a learnable per-channel alpha.
``RESIDUALS`` maps each value to a builder ``cfg -> module`` of the scaling applied to one residual branch.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import torch
from torch import nn

if TYPE_CHECKING:
    from stability.model.config import ViTConfig


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


RESIDUALS: dict[str, Callable[[ViTConfig], nn.Module]] = {
    "plain": lambda cfg: nn.Identity(),
    "weighted": lambda cfg: ResidualScale(cfg.embed_dim, cfg.alpha_init),
}
