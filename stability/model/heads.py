"""Classifier heads: ``head`` toggle. ``HEADS`` maps each value to a builder ``cfg -> module`` of the
(B, D) -> (B, num_classes) classifier. Every head owns ``weight`` and ``bias`` (nn.Linear's names), and
``effective_weight()`` is the matrix it actually applies (what a Lipschitz certificate must use).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

if TYPE_CHECKING:
    from stability.model.config import ViTConfig


class LinearHead(nn.Linear):
    """timm's plain Linear head."""

    def effective_weight(self) -> torch.Tensor:
        return self.weight  # (K, D)


class LLNHead(nn.Linear):
    """Last-layer normalisation (Singla, Singla & Feizi 2022, "Improved deterministic l2 robustness on
    CIFAR-10 and CIFAR-100", Sec. 5; LipShiFT's head): logits = W_hat x + b with every row
    w_hat_i = w_i / ||w_i||.

    The margin between classes i and j then changes by at most ||w_hat_i - w_hat_j|| <= 2 per unit change of
    the features, whatever the scale the training gave W: the pairwise certificate uses exactly these rows.
    """

    def effective_weight(self) -> torch.Tensor:
        return F.normalize(self.weight, dim=1, eps=1e-12)  # (K, D), unit rows

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.effective_weight(), self.bias)


HEADS: dict[str, Callable[[ViTConfig], nn.Linear]] = {
    "linear": lambda cfg: LinearHead(cfg.embed_dim, cfg.num_classes),
    "lln": lambda cfg: LLNHead(cfg.embed_dim, cfg.num_classes),
}
