"""Position embeddings: the ``pos_embed_type`` toggle (what the PE is) and the ``pos_embed`` toggle (where it
goes).

The PE has shape (1, P + N, D), P = ``num_prefix_tokens`` rows for the class token (1, as timm and the LaPE
code; 0 for a model without class token), and is the model's ``pos_embed`` parameter (frozen for sincos),
so the state-dict keys never change.

Where it goes is split in two small modules: one at the input (``INPUT_PE``), one in every block
(``BLOCK_PE``, attribute ``pe_norm``). Both have the signature (tokens, pe) -> (tokens, pe), so the model's
forward is the same for both settings.

Each map (``PE_TYPES``, ``INPUT_PE``, ``BLOCK_PE``) holds builders ``cfg -> parameter or module`` that read the
config fields they need.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING

import torch
from timm.layers import trunc_normal_
from torch import nn

if TYPE_CHECKING:
    from stability.model.config import ViTConfig


# ---------------------------------------------------------------- what the PE is (pos_embed_type)
def learned_pos_embed(grid: int, dim: int, prefix: int = 1) -> nn.Parameter:
    """Learned absolute PE, trunc-normal std 0.02 (timm / DeiT init), (1, prefix + grid^2, dim)."""
    pe = torch.empty(1, prefix + grid * grid, dim)
    trunc_normal_(pe, std=0.02)
    return nn.Parameter(pe)


def sincos_2d_table(grid: int, dim: int) -> torch.Tensor:
    """2-D sine-cosine table, (1 + grid^2, dim), class-token row zero.

    LaPE code's "2D_sin" (Yu et al. 2023, Sec. 4 / Table 7): the first dim/2 channels encode the column x,
    the last dim/2 the row y; within each half, channel 2j is sin(pos * w_j) and 2j+1 is cos(pos * w_j),
    with w_j = 10000^(-2j / (dim/2)) (the Vaswani et al. 2017 Sec. 3.5 frequencies per axis).
    Token order is row-major, as the stem's flatten of the (H, W) grid.
    """
    half = dim // 2
    freqs = torch.exp(torch.arange(0, half, 2, dtype=torch.float64) * (-math.log(10000.0) / half))  # (dim/4,)
    pos = torch.arange(grid, dtype=torch.float64)[:, None] * freqs  # (grid, dim/4)
    axis = torch.stack([pos.sin(), pos.cos()], dim=-1).flatten(1)  # (grid, dim/2): sin, cos interleaved
    y, x = torch.meshgrid(torch.arange(grid), torch.arange(grid), indexing="ij")
    table = torch.cat([axis[x.flatten()], axis[y.flatten()]], dim=1)  # (grid^2, dim)
    return torch.cat([torch.zeros(1, dim, dtype=table.dtype), table]).float()


def sincos_pos_embed(grid: int, dim: int, prefix: int = 1) -> nn.Parameter:
    """Frozen 2-D sine-cosine PE (a parameter with requires_grad=False, so its key matches timm's), with a
    zero class-token row when ``prefix`` is 1."""
    table = sincos_2d_table(grid, dim)[1 - prefix:]  # (prefix + grid^2, dim)
    return nn.Parameter(table[None], requires_grad=False)


PE_TYPES: dict[str, Callable[[ViTConfig], nn.Parameter]] = {
    "learned": lambda cfg: learned_pos_embed(cfg.grid_size, cfg.embed_dim, cfg.num_prefix_tokens),
    "sincos": lambda cfg: sincos_pos_embed(cfg.grid_size, cfg.embed_dim, cfg.num_prefix_tokens),
}
# Whether the class token has a position embedding of its own (sincos: its row is a frozen zero); a user's PE type
# is taken to have one.
CLS_HAS_PE = {"learned": True, "sincos": False}


# ---------------------------------------------------------------- where the PE goes (pos_embed)
class AddOnce(nn.Module):
    """Default ViT (Dosovitskiy et al. 2021, Eq. 1): z_0 = [cls; x E] + E_pos, once; blocks see no PE."""

    def forward(self, x: torch.Tensor, pe: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        return x + pe, None  # (B, 1+N, D)


class KeepApart(nn.Module):
    """LaPE (Yu et al. 2023, Eq. 8): x_0 = [cls; x E]; the PE is never added to the residual stream but
    handed to the blocks."""

    def forward(self, x: torch.Tensor, pe: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        return x, pe


class NoBlockPE(nn.Module):
    """Default: a block adds no PE to its attention input."""

    def forward(self, h: torch.Tensor, pe: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
        return h, pe


class LaPENorm(nn.LayerNorm):
    """LaPE's per-block PE LayerNorm (Yu et al. 2023, Eqs. 9-10; code ``Block.pe_norm``, eps 1e-6).

        pe_l = LN_l(pe_{l-1})          (pe_{-1} = the raw PE: progressive, each block normalises the last)
        attention input = h + pe_l     (h = the block's normalised tokens)

    It returns pe_l for the next block. The PE reaches Q, K and V through the attention input only, never the
    residual stream or the MLP.

    Class-token row: with a learned PE it is normalised like the others (LaPE code). With ``cls_pe=False``
    (the sincos PE, whose cls row is zero: "no position") it is kept at zero in every block. The LaPE code
    normalises that zero row too, but a LayerNorm of a constant row has zero variance, so its Jacobian is
    1/sqrt(eps) = 1000 and the progressive chain multiplies the gradients of earlier blocks' biases by
    ~1000 per block (a gradient norm near 1e12 at init for depth 6): a numerical artefact, not LaPE.
    """

    def __init__(self, dim: int, num_tokens: int, cls_pe: bool = True) -> None:
        super().__init__(dim, eps=1e-6)
        keep = torch.ones(1, num_tokens, 1)
        keep[:, 0] = float(cls_pe)
        self.register_buffer("keep", keep, persistent=False)  # (1, N, 1): which rows carry a PE

    def forward(self, h: torch.Tensor, pe: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
        pe = super().forward(pe) * self.keep  # (1, N, D)
        return h + pe, pe


INPUT_PE: dict[str, Callable[[ViTConfig], nn.Module]] = {
    "default": lambda cfg: AddOnce(),
    "lape": lambda cfg: KeepApart(),
}
BLOCK_PE: dict[str, Callable[[ViTConfig], nn.Module]] = {
    "default": lambda cfg: NoBlockPE(),
    "lape": lambda cfg: LaPENorm(cfg.embed_dim, cfg.num_tokens, cls_pe=CLS_HAS_PE.get(cfg.pos_embed_type, True)),
}
