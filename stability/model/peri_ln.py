"""Peri-LN block: a norm on both the input and the output of each sub-layer (``norm_placement: peri``).

Kim et al. 2025, "Peri-LN: Revisiting Layer Normalization in the Transformer Architecture" (ICML 2025): the
paper's third placement, beside Pre-LN (x + f(N(x))) and Post-LN (N(x + f(x))),

    y = x + N_out(f(N_in(x)))

Their analysis: under Pre-LN nothing bounds what a branch adds to the stream, so the hidden-state variance
can grow exponentially with depth ("massive activations"); Post-LN bounds the stream but shrinks the
gradient through deep stacks. Normalising the branch OUTPUT keeps each block's addition of order one, so the
variance grows about linearly with depth while the identity path stays clean. The placement is what
Gemma 2 and OLMo 2 ship with (the paper's "silently adopted" models; Gemma 2's ``post_attention_layernorm``).
No official code accompanies the paper.
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING

import torch

from stability.model.vit import Block

if TYPE_CHECKING:
    from stability.model.config import ViTConfig


class PeriNormBlock(Block):
    """Peri-LN transformer block:

        x = x + alpha_1 * N_1out(Attn(N_1(x) [+ LaPE pe_l]))
        x = x + alpha_2 * N_2out(MLP(N_2(x)))

    A :class:`Block` (same modules and names, so a pre-norm checkpoint loads with ``strict=False``) plus
    ``post_norm1`` and ``post_norm2``: fresh copies, made at construction, of the block's own input norms, so
    they are whatever the ``norm`` toggle builds (LayerNorm, CenterNorm, RMSNorm, DyT, ...) and every init
    scheme treats them as norms. The residual scale alpha (``ls1``/``ls2``) multiplies the normalised output,
    so LayerScale or ReZero still start the block at (or near) the identity. A mixer that acts on the stream
    (the shift of ShiftViT) has no norms around it, as in :class:`Block`: ``post_norm1`` is an identity then.

    ``PeriNormBlock(cfg, drop_path)``, the constructor of every block class.
    """

    def __init__(self, cfg: ViTConfig, drop_path: float = 0.0) -> None:
        super().__init__(cfg, drop_path)
        self.post_norm1 = copy.deepcopy(self.norm1)  # N_1out: an nn.Identity when norm1 is one
        self.post_norm2 = copy.deepcopy(self.norm2)  # N_2out

    def forward(self, x: torch.Tensor, pe: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
        if self.attn_on_stream:
            x = self.attn(x)  # (B, N, D): shift the stream itself
        else:
            h, pe = self.pe_norm(self.norm1(x), pe)  # (B, N, D): N_1(x), plus LN_l(pe) under LaPE
            x = x + self.drop_path1(self.ls1(self.post_norm1(self.attn(h))))  # (B, N, D)
        x = x + self.drop_path2(self.ls2(self.post_norm2(self.mlp(self.norm2(x)))))  # (B, N, D)
        return x, pe


# The ``norm_placement`` toggle's value ``peri`` (merged after vit.BLOCKS by the registry; vit.py must not import
# this file, which imports it).
PERI_BLOCKS: dict[str, type[Block]] = {"peri": PeriNormBlock}
