"""The channel-mixing sub-block (``mlp`` toggle) and its activation (``activation`` toggle).

``MLPS`` maps each ``mlp`` value to a builder ``cfg -> module`` of one block's channel mixer, and
``ACTIVATIONS`` each ``activation`` value to a builder of the (parameter-free) nonlinearity it uses.
Every module here maps (B, N, D) tokens to (B, N, D).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import torch
from torch import nn

from stability.model.residual import ResidualScale

if TYPE_CHECKING:
    from stability.model.config import ViTConfig

LIRESCONV_ALPHA_INIT = 0.2  # LipShiFT's ScaleLayer init of the conv branch alpha_c


class MinMax(nn.Module):
    """MinMax / GroupSort-2 activation (Anil et al. 2019, "Sorting out Lipschitz function approximation",
    Sec. 4; LipShiFT's ``MinMax``): split the channels in halves a, b and return [max(a, b), min(a, b)].

    Per pair of channels it is a permutation of its inputs, so it is 1-Lipschitz in l2 and its Jacobian is
    orthogonal almost everywhere (gradient-norm preserving), unlike ReLU/GELU, which lose gradient norm.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = x.chunk(2, dim=-1)  # (..., C/2) each
        return torch.cat([torch.maximum(a, b), torch.minimum(a, b)], dim=-1)


ACTIVATIONS: dict[str, Callable[[ViTConfig], nn.Module]] = {
    "gelu": lambda cfg: nn.GELU(),
    "minmax": lambda cfg: MinMax(),
}


class Mlp(nn.Module):
    """Transformer MLP (Dosovitskiy et al. 2021, Eq. 3): fc2(act(fc1(x))); timm's names."""

    def __init__(self, dim: int, hidden: int, act: nn.Module | None = None) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = act if act is not None else nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class LiResConv(nn.Module):
    """LipShiFT's channel mixer (Menon et al. 2025, ``LiResConv``; from LiResNet, Hu et al. 2023, Sec. 4):

        LiResConv(h) = act(h + alpha_c * Conv3x3(h))

    a dense 3x3 convolution (padding 1, with bias) over the 2-D token grid inside its own weighted residual,
    alpha_c per channel, learnable, initialised to 0.2. Its l2 Lipschitz constant is at most
    Lip(act) * (1 + max|alpha_c| * ||Conv3x3||), the conv's true operator norm on the grid.

    A class token, if there is one, is not on the grid: its conv term is zero, so it gets act(h).
    """

    def __init__(self, dim: int, grid_size: int, num_prefix_tokens: int, act: nn.Module | None = None,
                 alpha_init: float = LIRESCONV_ALPHA_INIT) -> None:
        super().__init__()
        self.grid_size, self.num_prefix_tokens = grid_size, num_prefix_tokens
        self.conv = nn.Conv2d(dim, dim, kernel_size=3, padding=1)
        self.scale = ResidualScale(dim, alpha_init)  # alpha_c, parameter scale.gamma
        self.act = act if act is not None else MinMax()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, N, D = x.shape
        p, g = self.num_prefix_tokens, self.grid_size
        grid = x[:, p:].transpose(1, 2).reshape(B, D, g, g)  # (B, D, g, g): patch tokens, row-major
        y = self.conv(grid).flatten(2).transpose(1, 2)  # (B, g*g, D)
        if p:
            y = torch.cat([y.new_zeros(B, p, D), y], dim=1)  # (B, N, D): no conv term for the class token
        return self.act(x + self.scale(y))

    def input_shape(self) -> tuple[int, int, int]:
        """(D, g, g): the shape the convolution acts on, for its operator norm."""
        return (self.conv.in_channels, self.grid_size, self.grid_size)


MLPS: dict[str, Callable[[ViTConfig], nn.Module]] = {
    "mlp": lambda cfg: Mlp(cfg.embed_dim, int(cfg.embed_dim * cfg.mlp_ratio), ACTIVATIONS[cfg.activation](cfg)),
    "liresconv": lambda cfg: LiResConv(cfg.embed_dim, cfg.grid_size, cfg.num_prefix_tokens,
                                       ACTIVATIONS[cfg.activation](cfg)),
}
