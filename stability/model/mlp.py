"""The channel-mixing sub-block (``mlp`` toggle) and its activation (``activation`` toggle).

``MLPS`` maps each ``mlp`` value to a builder ``cfg -> module`` of one block's channel mixer, and
``ACTIVATIONS`` each ``activation`` value to a builder of the (parameter-free) nonlinearity it uses; the
built-in mixers take their activation through the registry, so a user's activation class works in them too.
Every module here maps (B, N, D) tokens to (B, N, D).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import torch
from torch import nn

from stability.model import registry
from stability.model.residual import ResidualScale

if TYPE_CHECKING:
    from stability.model.config import ViTConfig

LIRESCONV_ALPHA_INIT = 0.2  # LipShiFT's ScaleLayer init of the conv branch alpha_c


class _MinMaxFunction(torch.autograd.Function):
    """[max(a, b), min(a, b)] with its backward written as the permutation it is.

    Why not autograd of ``torch.maximum``/``torch.minimum`` and ``cat``: on a CPU that backward runs a comparison,
    a ``where`` (slow there: a bool mask blocks vectorisation), a tie split and a masked fill per op, then sums
    and concatenates, about 10x this one. Here the forward writes both halves in place into one output (no
    ``cat``) and keeps the mask a >= b as 0/1 floats (a float ``ge`` vectorises; a bool one does not); the
    backward is two ``lerp``s: grad_a = g_max where a >= b else g_min, grad_b the other one, exact for finite
    gradients (lerp with weight 0 or 1 returns an end point). The outputs are the same bits as before; only at
    an exact tie (a == b, measure zero) does the gradient differ: the whole of each half's gradient goes to one
    input (a permutation, so the gradient norm is kept) instead of half of each to both. Written with
    differentiable ops, the backward can itself be differentiated (double backward, as the local Lipschitz
    estimates use).
    """

    @staticmethod
    def forward(ctx: torch.autograd.function.FunctionCtx, x: torch.Tensor) -> torch.Tensor:
        a, b = x.chunk(2, dim=-1)  # (..., C/2) each, views
        half = a.shape[-1]
        out = torch.empty_like(x)
        torch.maximum(a, b, out=out[..., :half])
        torch.minimum(a, b, out=out[..., half:])
        if ctx.needs_input_grad[0]:
            mask = torch.empty_like(a, memory_format=torch.contiguous_format)
            ctx.save_for_backward(torch.ge(a, b, out=mask))  # 1.0 where a holds the max
        return out

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx, grad: torch.Tensor) -> torch.Tensor:
        (mask,) = ctx.saved_tensors  # type: ignore[attr-defined]
        g_max, g_min = grad.chunk(2, dim=-1)
        if torch.is_grad_enabled() and grad.requires_grad:  # a backward being differentiated: no out= there
            return torch.cat([torch.lerp(g_min, g_max, mask), torch.lerp(g_max, g_min, mask)], dim=-1)
        half = g_max.shape[-1]
        out = torch.empty_like(grad)
        torch.lerp(g_min, g_max, mask, out=out[..., :half])  # to a: g_max where a >= b, else g_min
        torch.lerp(g_max, g_min, mask, out=out[..., half:])  # to b: the other one
        return out


class MinMax(nn.Module):
    """MinMax / GroupSort-2 activation (Anil et al. 2019, "Sorting out Lipschitz function approximation",
    Sec. 4; LipShiFT's ``MinMax``): split the channels in halves a, b and return [max(a, b), min(a, b)].

    Per pair of channels it is a permutation of its inputs, so it is 1-Lipschitz in l2 and its Jacobian is
    orthogonal almost everywhere (gradient-norm preserving), unlike ReLU/GELU, which lose gradient norm.
    Computed by :class:`_MinMaxFunction`, about as fast as GELU on a CPU.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _MinMaxFunction.apply(x)  # (..., C) -> (..., C)


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
    "mlp": lambda cfg: Mlp(cfg.embed_dim, int(cfg.embed_dim * cfg.mlp_ratio), registry.build("activation", cfg)),
    "liresconv": lambda cfg: LiResConv(cfg.embed_dim, cfg.grid_size, cfg.num_prefix_tokens,
                                       registry.build("activation", cfg)),
}
