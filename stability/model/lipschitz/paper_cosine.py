"""The global l2 bound of LipsFormer's paper-variant cosine attention (the only attention with one here).

:class:`~stability.model.lipschitz.bounds.LipschitzBound` calls it for every
:class:`~stability.model.attention.PaperCosineAttention`, passing its warm-started spectral-norm meter.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from stability.model.attention import PaperCosineAttention
from stability.model.lipschitz.constants import applied_weight

# (key, weight, iters, differentiable) -> ||weight||_2: LipschitzBound.linear_norm (warm-started power iteration)
LinearNorm = Callable[[str, torch.Tensor, int, bool], torch.Tensor]


def paper_cosine_bound(linear_norm: LinearNorm, name: str, attn: PaperCosineAttention, num_tokens: int,
                       iters: int, differentiable: bool) -> torch.Tensor:
    """Global l2 bound of LipsFormer's paper-variant attention, Y = nu softmax(tau Q_hat K_hat^T) V_hat W_O.

    Per head, with rows smoothly normalised (n(v) = v / sqrt(|v|^2 + eps), Lipschitz eps^(-1/2), |n(v)| < 1,
    so ||Q_hat||_2, ||K_hat||_2, ||V_hat||_2 <= sqrt(N)), a row-stochastic P (||P||_2 <= sqrt(N)) and
    softmax's Jacobian of norm <= 1/2 (Nair, "Softmax is 1/2-Lipschitz"):

        ||dY_h|| <= nu ||dP V_hat|| + nu ||P dV_hat||
               <= nu eps^(-1/2) [ (tau N / 2) (||W_Q^h|| + ||W_K^h||) + sqrt(N) ||W_V^h|| ] ||dX||

    and over heads ||W_O|| sqrt(sum_h L_h^2). This is LipsFormer's Thm. 1 (as quoted by Nair, Eq. 6 / Thm. 2:
    N^2 nu tau eps^(-1/2) ||W_K|| + N nu tau eps^(-1/2) ||W_Q|| + 2 N nu eps^(-1/2) ||W_V||) tightened term
    by term; the eps^(-1/2) = 1000 factors make it huge, but it is the only global bound attention has here.

    ``linear_norm`` measures ||W||_2 of a weight under a key (:meth:`LipschitzBound.linear_norm
    <stability.model.lipschitz.bounds.LipschitzBound.linear_norm>`).
    """
    D, H, d = attn.qkv.in_features, attn.num_heads, attn.head_dim
    W = applied_weight(attn.qkv)  # (3D, D): rows [q heads | k heads | v heads], as applied (sigma-Reparam: W_hat)
    eps, nu, tau = attn.q_norm.eps, attn.nu, float(attn.scale)
    n = float(num_tokens)
    per_head = []
    for h in range(H):
        rows = slice(h * d, (h + 1) * d)
        sq = linear_norm(f"{name}.q{h}", W[rows], iters, differentiable)
        sk = linear_norm(f"{name}.k{h}", W[D:][rows], iters, differentiable)
        sv = linear_norm(f"{name}.v{h}", W[2 * D:][rows], iters, differentiable)
        per_head.append(nu / math.sqrt(eps) * (tau * n / 2 * (sq + sk) + math.sqrt(n) * sv))
    proj = linear_norm(f"{name}.proj", applied_weight(attn.proj), iters, differentiable)
    return proj * torch.stack(per_head).square().sum().sqrt()
