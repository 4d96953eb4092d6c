"""The shift token mixer: ``attention="shift"``.

ShiftViT (Wang et al. 2022, "When Shift Operation Meets Vision Transformer", Sec. 3.1) replaces attention
by a parameter-free shift, and LipShiFT (Menon et al. 2025, Sec. 3) keeps it because it is 1-Lipschitz.
Unlike attention it is not a residual branch on a normalised copy of the stream: the block applies it to
the stream itself, x <- shift(x) (``on_stream``), as both papers do.
"""

from __future__ import annotations

import math

import torch
from torch import nn


class Shift(nn.Module):
    """Move four groups of channels by one token left, right, up and down on the 2-D token grid, zero fill.

    The C channels are split in ``shift_div`` groups of g = C // shift_div; groups 0-3 move (left, right,
    up, down), the rest stay. Every input coordinate lands in at most one output coordinate, so the map is
    a partial permutation: l2 Lipschitz constant exactly 1 (attained by any change that stays on the grid).
    It only sees grid tokens, so a model using it has no class token (``ViTConfig.num_prefix_tokens``).
    """

    on_stream = True  # the block applies it to the stream: x <- shift(x), no norm, no residual around it

    def __init__(self, grid_size: int, dim: int, shift_div: int = 12) -> None:
        super().__init__()
        self.grid_size, self.dim, self.shift_div = grid_size, dim, shift_div
        self.group = dim // shift_div

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, N, C = x.shape  # N = grid_size^2 patch tokens, row-major
        g, c = self.grid_size, self.group
        grid = x.reshape(B, g, g, C)  # (B, rows, cols, C)
        out = torch.zeros_like(grid)
        out[:, :, :-1, 0 * c:1 * c] = grid[:, :, 1:, 0 * c:1 * c]  # left: column j takes column j + 1
        out[:, :, 1:, 1 * c:2 * c] = grid[:, :, :-1, 1 * c:2 * c]  # right
        out[:, :-1, :, 2 * c:3 * c] = grid[:, 1:, :, 2 * c:3 * c]  # up: row i takes row i + 1
        out[:, 1:, :, 3 * c:4 * c] = grid[:, :-1, :, 3 * c:4 * c]  # down
        out[..., 4 * c:] = grid[..., 4 * c:]  # the other groups stay
        return out.reshape(B, N, C)

    @staticmethod
    def lipschitz() -> float:
        """l2 Lipschitz constant (a partial permutation of the coordinates)."""
        return 1.0

    # The attention telemetry's interface: a shift has no logits, so its stats are NaN (skipped by the probes).
    def set_stats_recording(self, enabled: bool) -> None:
        pass

    def stats(self) -> dict[str, float]:
        return {"max_logit": math.nan, "entropy": math.nan}

    def extra_repr(self) -> str:
        return f"grid={self.grid_size}, dim={self.dim}, shift_div={self.shift_div}, group={self.group}"
