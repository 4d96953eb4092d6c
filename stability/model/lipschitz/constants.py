"""What the bound walker (:mod:`stability.model.lipschitz.bounds`) knows without measuring: the constants of the
activations, why a layer has no global bound, and which weight a layer really applies.

Kept apart from the walker so both it and :mod:`~stability.model.lipschitz.paper_cosine` read a layer's weight
the same way (a reparametrised layer's stored ``weight`` is not what it applies).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from stability.model.attention import Attention, CosineAttention, QKNormAttention
from stability.model.mlp import MinMax
from stability.model.softcap import SoftcapAttention


def _gelu_lipschitz() -> float:
    """max_x GELU'(x) = Phi(x) + x phi(x), reached at x = sqrt(2) (where phi(x) (2 - x^2) = 0): ~1.1289."""
    return 0.5 * (1.0 + math.erf(1.0)) + math.exp(-1.0) / math.sqrt(math.pi)


GELU_LIPSCHITZ = _gelu_lipschitz()
ACTIVATION_LIPSCHITZ: dict[type[nn.Module], float] = {nn.GELU: GELU_LIPSCHITZ, MinMax: 1.0, nn.ReLU: 1.0,
                                                      nn.Identity: 1.0}

# Why a layer has no global bound, by exact class (the toggle value that builds it in brackets).
UNBOUNDED: dict[type[nn.Module], str] = {
    nn.LayerNorm: "LayerNorm divides by the token's standard deviation, unbounded as it goes to 0 (norm='layernorm')",
    nn.RMSNorm: "RMSNorm divides by the token's RMS, unbounded as it goes to 0 (norm='rmsnorm')",
    Attention: "dot-product attention is not globally Lipschitz, Kim et al. 2021 (attention='dot')",
    QKNormAttention: "qk-LayerNorm attention: LayerNorm and an unnormalised v, no global bound (attention='qknorm')",
    CosineAttention: "the LipsFormer code's cosine attention leaves v unnormalised, no global bound "
                     "(attention='cosine'; 'cosine_paper' has one)",
    # The cap bounds the logits, not their slope: where the logits stay inside the cap (tanh ~ identity), e.g.
    # along inputs whose q and k are orthogonal, the Jacobian of softmax(P(x)) x W_v grows like ||x||^2 exactly
    # as dot attention's does (Kim et al. 2021); only the softmax weights themselves are tamed.
    SoftcapAttention: "soft-capping bounds the logits but not their slope: softmax attention's Jacobian still grows "
                      "with the input's norm where the logits stay inside the cap, as for dot attention, Kim et al. "
                      "2021 (attention='softcap')",
}


def applied_weight(layer: nn.Module) -> torch.Tensor:
    """The weight ``layer`` (a Linear or conv) applies: its ``effective_weight()`` where it has one (sigma-Reparam:
    gamma / sigma * W, as its evaluation forward computes it, differentiable), else its ``weight``."""
    effective = getattr(layer, "effective_weight", None)
    return effective() if callable(effective) else layer.weight
