"""Lipschitz bounds of the configurable ViT, an empirical lower bound, and certified robust accuracy.

Two of the seed papers argue through Lipschitz continuity: LipsFormer (Qi et al. 2023) bounds the Lipschitz
constant of its blocks, and LipShiFT (Menon et al. 2025) turns a network bound into certified robustness.
This module measures both for any configuration of :class:`stability.model.VisionTransformer`.

Everything holds for the model in evaluation mode (dropout and drop-path are the identity: no keep-probability
factors, unlike LipShiFT's evaluation code; BatchNorm uses its running statistics) and for inputs in pixel space
[0, 1]: the data normalisation x = (p - mean) / std is folded in as a first factor 1 / min(std). Norms are l2
over the whole token sequence (per-token maps keep their per-token constant).

- :class:`LipschitzBound`: an upper bound per layer, the product along the forward pass for the backbone
  (pixels -> head input) and times ||W_head||_2 for the network (pixels -> logits). Linear and convolution
  operators by power iteration on the true operator (warm-started across calls), CenterNorm exactly (the
  spectral norm of its linear part), weighted residuals as 1 + alpha * Lip(branch), MinMax, shift and pooling
  by their constants, LipsFormer's paper-variant cosine attention by its bound (:func:`paper_cosine_bound`).
  LayerNorm, RMSNorm and the dot-product, qk-norm and code-variant cosine attentions have no global bound:
  their layers are reported as unbounded (value None), never as a number, and :func:`local_estimates` gives
  a local estimate instead.
- :func:`lower_bound`: an empirical lower bound of the network's constant (largest margin gradient over a
  batch, refined by gradient ascent on ||f(x) - f(x')|| / ||x - x'||).
- :func:`certified_mask`: certified robust accuracy at an l2 radius, head-aware (LipShiFT's pairwise
  certificate) and in the plain sqrt(2) * L form; :func:`emma_logits`: the margin-training loss's logits.

Power iteration approaches sigma_max from below; with warm starts and :data:`FINAL_ITERS` iterations the
gap is far below the other slack of a product bound, and the tests check it against an exact SVD.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from stability.model.attention import Attention, CosineAttention, PaperCosineAttention, QKNormAttention
from stability.model.mlp import LiResConv, MinMax, Mlp
from stability.model.norms import CenterNorm
from stability.model.residual import ResidualScale
from stability.model.shift import Shift
from stability.model.stems import ConvStem, PatchEmbed
from stability.model.vit import PostNormBlock, VisionTransformer

FINAL_ITERS = 100  # power iterations at the end of a run (LipShiFT evaluates with 100)
STEP_ITERS = 5  # per periodic measurement or margin-training step, warm-started (LipShiFT trains with 10)
DEFAULT_RADIUS = 36 / 255  # LipShiFT's evaluation radius, l2 in [0, 1] pixel space
DEFAULT_RADII = (0.0, 18 / 255, 36 / 255, 72 / 255, 108 / 255)


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
}


@dataclass
class LayerBound:
    """One bounded piece of the network.

    Attributes:
        name: its path in the model (``blocks.0.mlp``), or ``input`` for the folded data normalisation.
        kind: what it is (``CenterNorm``, ``Mlp(GELU)``, ``block``...).
        value: its l2 Lipschitz bound, a 0-d tensor (differentiable when asked); None: no global bound.
        why: for a None value, why there is none.
        factor: whether it is one of the factors whose product is the backbone bound (the input
            normalisation, the stem, each block, the final norm and the pooling); else a part of one.
    """

    name: str
    kind: str
    value: torch.Tensor | None
    why: str = ""
    factor: bool = False


@dataclass
class Bounds:
    """A model's bounds at one moment (see :meth:`LipschitzBound.compute`)."""

    layers: list[LayerBound]
    backbone: torch.Tensor | None  # pixels -> head input; None when some layer has no bound
    head_norm: torch.Tensor  # ||W_head||_2 of the effective head weight
    head_weight: torch.Tensor  # (K, D): the rows the head applies (unit rows for the LLN head)

    @property
    def network(self) -> torch.Tensor | None:
        """pixels -> logits: backbone * ||W_head||_2 (None when unbounded)."""
        return None if self.backbone is None else self.backbone * self.head_norm

    @property
    def unbounded(self) -> list[LayerBound]:
        """The parts without a global bound (innermost ones: not the blocks that hold them)."""
        return [layer for layer in self.layers if layer.value is None and layer.why]

    def unbounded_text(self) -> str | None:
        """One line naming the unbounded layers and why (None when the network is bounded)."""
        if not self.unbounded:
            return None
        whys: dict[str, list[str]] = {}
        for layer in self.unbounded:
            whys.setdefault(layer.why, []).append(layer.name)
        parts = []
        for why, names in whys.items():
            shown = ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
            parts.append(f"{shown}: {why}")
        return "; ".join(parts)

    def as_floats(self) -> dict[str, float | None]:
        """name -> bound (None where unbounded), every layer and part."""
        return {layer.name: _float(layer.value) for layer in self.layers}


def _float(value: torch.Tensor | None) -> float | None:
    if value is None:
        return None
    number = float(value.detach())
    return number if math.isfinite(number) else None


def _product(*values: torch.Tensor | float | None) -> torch.Tensor | float | None:
    out: torch.Tensor | float = 1.0
    for value in values:
        if value is None:
            return None
        out = out * value
    return out


def _one_plus(scale: torch.Tensor | float | None, branch: torch.Tensor | float | None) -> torch.Tensor | None:
    """1 + scale * branch: the bound of x + scale * branch(x); None if either is unbounded."""
    inner = _product(scale, branch)
    return None if inner is None else 1.0 + inner  # type: ignore[return-value]


def _conv_output(size: int, conv: nn.Conv2d, axis: int) -> int:
    k, s, p, d = conv.kernel_size[axis], conv.stride[axis], conv.padding[axis], conv.dilation[axis]  # type: ignore[index]
    return (size + 2 * p - d * (k - 1) - 1) // s + 1


class LipschitzBound:
    """Upper bounds of one model's Lipschitz constant, per layer and for the network, in pixel space.

    Keeps the power-iteration vectors between calls (warm starts: a few iterations per training step
    track the slowly changing weights), drawn from its own generator so measuring never changes the
    training's random numbers.

    Args:
        model: the ViT.
        input_scale: 1 / min(std) of the data normalisation (1 for pixels fed as they are).
        seed: seed of the power-iteration start vectors.
    """

    def __init__(self, model: VisionTransformer, input_scale: float = 1.0, seed: int = 0) -> None:
        self.model = model
        self.input_scale = float(input_scale)
        self._vectors: dict[str, torch.Tensor] = {}
        self._generator = torch.Generator().manual_seed(seed)

    # ------------------------------------------------------------------ operators
    def operator_norm(self, key: str, apply: Callable[[torch.Tensor], torch.Tensor],
                      adjoint: Callable[[torch.Tensor], torch.Tensor], shape: tuple[int, ...], like: torch.Tensor,
                      iters: int, differentiable: bool) -> torch.Tensor:
        """sigma_max of the linear map ``apply`` (its adjoint ``adjoint``) on inputs of ``shape``, by ``iters``
        power iterations on A^T A started from the last vector kept under ``key``.

        The iterations run without autograd; the returned ||A v|| (v the final unit vector) is differentiable
        in the weights when ``differentiable``, as in LipShiFT's training.
        """
        v = self._vectors.get(key)
        if v is None or v.shape != shape or not torch.isfinite(v).all():
            v = torch.randn(shape, generator=self._generator).to(like)
            v = v / v.norm()
        with torch.no_grad():
            for _ in range(iters):
                w = adjoint(apply(v))
                norm = w.norm()
                if not torch.isfinite(norm) or norm == 0:
                    break
                v = w / norm
        self._vectors[key] = v.detach()
        with torch.set_grad_enabled(differentiable and torch.is_grad_enabled()):
            return apply(v).norm()

    def linear_norm(self, key: str, weight: torch.Tensor, iters: int, differentiable: bool) -> torch.Tensor:
        """||W||_2 of a (out, in) matrix (a Linear applied to every token has the same constant)."""
        return self.operator_norm(key, lambda v: weight @ v, lambda u: weight.detach().T @ u, (weight.shape[1],),
                                  weight, iters, differentiable)

    def conv_norm(self, key: str, conv: nn.Conv2d, in_shape: tuple[int, int, int], iters: int,
                  differentiable: bool) -> torch.Tensor:
        """The true operator norm of a convolution (zero padding, stride, groups as configured; bias left
        out) on inputs of shape (C, H, W): not the norm of the reshaped kernel, which can be smaller or
        larger."""
        w = conv.weight
        out_hw = [_conv_output(in_shape[1 + axis], conv, axis) for axis in (0, 1)]
        # conv_transpose2d is the adjoint when its output_padding restores the input size exactly
        extra = [in_shape[1 + axis] - ((out_hw[axis] - 1) * conv.stride[axis] - 2 * conv.padding[axis]  # type: ignore[index]
                                       + conv.dilation[axis] * (conv.kernel_size[axis] - 1) + 1) for axis in (0, 1)]

        def apply(v: torch.Tensor) -> torch.Tensor:
            return F.conv2d(v[None], w, None, conv.stride, conv.padding, conv.dilation, conv.groups)[0]

        def adjoint(u: torch.Tensor) -> torch.Tensor:
            return F.conv_transpose2d(u[None], w.detach(), None, conv.stride, conv.padding, tuple(extra),
                                      conv.groups, conv.dilation)[0]

        return self.operator_norm(key, apply, adjoint, in_shape, w, iters, differentiable)

    # ------------------------------------------------------------------ the walk
    def compute(self, iters: int = FINAL_ITERS, differentiable: bool = False) -> Bounds:
        """Every layer's bound and the backbone/network bounds, walking the model in forward order:

            L_backbone = (1 / min std) * Lip(stem) * prod_blocks Lip(block) * Lip(final norm) * Lip(pool)

        The class token and the position embedding add constants (no factor); LaPE adds a normalised
        constant to the attention input (no factor either).
        """
        model, cfg = self.model, self.model.cfg
        layers: list[LayerBound] = []
        like = next(model.parameters())
        ctx = torch.enable_grad() if differentiable else torch.no_grad()
        with ctx:
            layers.append(LayerBound("input", "1 / min(std)", like.new_tensor(self.input_scale), factor=True))
            stem = self._stem(model.patch_embed, layers, iters, differentiable)
            layers.append(LayerBound("patch_embed", type(model.patch_embed).__name__, stem, factor=True))
            for i, block in enumerate(model.blocks):
                value = self._block(f"blocks.{i}", block, layers, iters, differentiable)
                layers.append(LayerBound(f"blocks.{i}", "block", value, factor=True))
            for name in ("norm", "fc_norm"):
                value, why = self._norm(name, getattr(model, name), iters, differentiable)
                layers.append(LayerBound(name, type(getattr(model, name)).__name__, value, why, factor=True))
            if cfg.global_pool == "avg":  # mean of n vectors: ||mean(dx)|| <= ||dx|| / sqrt(n)
                pool = like.new_tensor(1.0 / math.sqrt(cfg.grid_size**2))
                layers.append(LayerBound("pool", f"average of {cfg.grid_size**2} tokens", pool, factor=True))
            else:
                layers.append(LayerBound("pool", "class token", like.new_tensor(1.0), factor=True))
            head_weight = head_rows(model.head)
            head_norm = self.linear_norm("head", head_weight, iters, differentiable)
            layers.append(LayerBound("head", type(model.head).__name__, head_norm))
        factors = [layer.value for layer in layers if layer.factor]
        backbone = _product(*factors)
        return Bounds(layers, backbone, head_norm, head_weight)  # type: ignore[arg-type]

    def _stem(self, stem: nn.Module, layers: list[LayerBound], iters: int, diff: bool) -> torch.Tensor | None:
        cfg = self.model.cfg
        shape = (cfg.in_chans, cfg.img_size, cfg.img_size)
        if isinstance(stem, PatchEmbed):
            return self.conv_norm("patch_embed.proj", stem.proj, shape, iters, diff)
        if isinstance(stem, ConvStem):  # [conv -> BatchNorm (eval: affine) -> ReLU] x n, then the 1x1 proj
            value: torch.Tensor | None = stem.proj.weight.new_tensor(1.0)
            modules = [*((f"patch_embed.stem.{i}", m) for i, m in enumerate(stem.stem)),
                       ("patch_embed.proj", stem.proj)]
            for name, m in modules:
                part: torch.Tensor | None
                why = ""
                if isinstance(m, nn.Conv2d):
                    part = self.conv_norm(name, m, shape, iters, diff)
                    shape = (m.out_channels, _conv_output(shape[1], m, 0), _conv_output(shape[2], m, 1))
                elif isinstance(m, nn.BatchNorm2d):
                    part = (m.weight.abs() / torch.sqrt(m.running_var + m.eps)).max()
                else:
                    lip = ACTIVATION_LIPSCHITZ.get(type(m))
                    part = None if lip is None else stem.proj.weight.new_tensor(lip)
                    why = "" if lip is not None else f"no bound known for {type(m).__name__}"
                layers.append(LayerBound(name, type(m).__name__, part, why))
                value = _product(value, part)  # type: ignore[assignment]
            return value
        layers.append(LayerBound("patch_embed", type(stem).__name__, None, f"no bound known for {type(stem).__name__}"))
        return None

    def _norm(self, name: str, norm: nn.Module, iters: int, diff: bool) -> tuple[torch.Tensor | None, str]:
        if isinstance(norm, nn.Identity):
            return _like(self.model).new_tensor(1.0), ""
        if isinstance(norm, CenterNorm):
            return self.linear_norm(name, centernorm_matrix(norm), iters, diff), ""
        why = UNBOUNDED.get(type(norm)) or next((w for cls, w in UNBOUNDED.items() if isinstance(norm, cls)), None)
        return None, why or f"no bound known for {type(norm).__name__}"

    def _attention(self, name: str, attn: nn.Module, iters: int, diff: bool) -> tuple[torch.Tensor | None, str]:
        if isinstance(attn, Shift):
            return _like(self.model).new_tensor(attn.lipschitz()), ""
        if isinstance(attn, PaperCosineAttention):
            return paper_cosine_bound(self, name, attn, self.model.cfg.num_tokens, iters, diff), ""
        why = UNBOUNDED.get(type(attn))
        return None, why or f"no bound known for {type(attn).__name__}"

    def _mlp(self, name: str, mlp: nn.Module, iters: int, diff: bool) -> tuple[torch.Tensor | None, str, str]:
        act = ACTIVATION_LIPSCHITZ.get(type(getattr(mlp, "act", nn.Identity())))
        act_name = type(getattr(mlp, "act", nn.Identity())).__name__
        if act is None:
            return None, f"{type(mlp).__name__}({act_name})", f"no bound known for the activation {act_name}"
        if isinstance(mlp, Mlp):  # ||fc2|| * Lip(act) * ||fc1||
            fc1 = self.linear_norm(f"{name}.fc1", mlp.fc1.weight, iters, diff)
            fc2 = self.linear_norm(f"{name}.fc2", mlp.fc2.weight, iters, diff)
            return fc2 * act * fc1, f"Mlp({act_name})", ""
        if isinstance(mlp, LiResConv):  # Lip(act) * (1 + max|alpha_c| * ||Conv3x3||)
            conv = self.conv_norm(f"{name}.conv", mlp.conv, mlp.input_shape(), iters, diff)
            return act * (1.0 + mlp.scale.gamma.abs().max() * conv), f"LiResConv({act_name})", ""
        return None, type(mlp).__name__, f"no bound known for {type(mlp).__name__}"

    def _scale(self, module: nn.Module) -> torch.Tensor | float | None:
        if isinstance(module, nn.Identity):
            return 1.0
        if isinstance(module, ResidualScale):
            return module.gamma.abs().max()
        return None

    def _block(self, name: str, block: nn.Module, layers: list[LayerBound], iters: int,
               diff: bool) -> torch.Tensor | None:
        """Pre-norm: (1 + |a1| Lip(attn) Lip(N1)) (1 + |a2| Lip(mlp) Lip(N2)); post-norm:
        Lip(N1) (1 + |a1| Lip(attn)) * Lip(N2) (1 + |a2| Lip(mlp)); a stream mixer (shift) replaces the
        first factor by its own constant. Drop-path is the identity at evaluation."""
        post = isinstance(block, PostNormBlock)
        attn, why = self._attention(f"{name}.attn", block.attn, iters, diff)
        layers.append(LayerBound(f"{name}.attn", type(block.attn).__name__, attn, why))
        if block.attn_on_stream:
            first = attn
        else:
            n1, why1 = self._norm(f"{name}.norm1", block.norm1, iters, diff)
            layers.append(LayerBound(f"{name}.norm1", type(block.norm1).__name__, n1, why1))
            s1 = self._scale(block.ls1)
            first = _product(n1, _one_plus(s1, attn)) if post else _one_plus(s1, _product(attn, n1))
        mlp, kind, why = self._mlp(f"{name}.mlp", block.mlp, iters, diff)
        layers.append(LayerBound(f"{name}.mlp", kind, mlp, why))
        n2, why2 = self._norm(f"{name}.norm2", block.norm2, iters, diff)
        layers.append(LayerBound(f"{name}.norm2", type(block.norm2).__name__, n2, why2))
        s2 = self._scale(block.ls2)
        second = _product(n2, _one_plus(s2, mlp)) if post else _one_plus(s2, _product(mlp, n2))
        return _product(first, second)  # type: ignore[return-value]


def centernorm_matrix(norm: CenterNorm) -> torch.Tensor:
    """(D, D): the linear part of CenterNorm, D/(D-1) diag(gamma) (I - 1 1^T / D). Its spectral norm is
    CenterNorm's exact Lipschitz constant, at most D/(D-1) max|gamma| (LipShiFT's and LipsFormer's value,
    reached when gamma is constant)."""
    D = norm.weight.shape[0]
    centring = torch.eye(D, dtype=norm.weight.dtype, device=norm.weight.device) - 1.0 / D
    return norm.scale * norm.weight[:, None] * centring


def _like(model: nn.Module) -> torch.Tensor:
    """A tensor with the model's device and dtype (for constants)."""
    return next(model.parameters())


def head_rows(head: nn.Module) -> torch.Tensor:
    """(K, D): the weight the head actually applies (unit rows for the LLN head)."""
    if hasattr(head, "effective_weight"):
        return head.effective_weight()
    if isinstance(head, nn.Linear):
        return head.weight
    raise TypeError(f"no certificate for a head of type {type(head).__name__}")


def paper_cosine_bound(bound: LipschitzBound, name: str, attn: PaperCosineAttention, num_tokens: int,
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
    """
    D, H, d = attn.qkv.in_features, attn.num_heads, attn.head_dim
    W = attn.qkv.weight  # (3D, D): rows [q heads | k heads | v heads]
    eps, nu, tau = attn.q_norm.eps, attn.nu, float(attn.scale)
    n = float(num_tokens)
    per_head = []
    for h in range(H):
        rows = slice(h * d, (h + 1) * d)
        sq = bound.linear_norm(f"{name}.q{h}", W[rows], iters, differentiable)
        sk = bound.linear_norm(f"{name}.k{h}", W[D:][rows], iters, differentiable)
        sv = bound.linear_norm(f"{name}.v{h}", W[2 * D:][rows], iters, differentiable)
        per_head.append(nu / math.sqrt(eps) * (tau * n / 2 * (sq + sk) + math.sqrt(n) * sv))
    proj = bound.linear_norm(f"{name}.proj", attn.proj.weight, iters, differentiable)
    return proj * torch.stack(per_head).square().sum().sqrt()


# ---------------------------------------------------------------------- data normalisation
def input_normalization(datamodule: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean, std), each (C, 1, 1), such that the model sees (p - mean) / std for pixels p in [0, 1].

    Digits: its ``mean``/``std`` when ``normalize`` is on (set by ``setup``); CIFAR: its ``mean``/``std``;
    ImageFolder: the ImageNet statistics it normalises with. Anything else is taken to feed pixels as they are.
    """
    from stability.data.modules import IMAGENET_MEAN, IMAGENET_STD, ImageFolderDataModule

    if datamodule is None or getattr(datamodule, "normalize", True) is False:
        return torch.zeros(1, 1, 1), torch.ones(1, 1, 1)
    if isinstance(datamodule, ImageFolderDataModule):
        mean, std = IMAGENET_MEAN, IMAGENET_STD
    else:
        mean, std = getattr(datamodule, "mean", None), getattr(datamodule, "std", None)
        if mean is None or std is None:
            return torch.zeros(1, 1, 1), torch.ones(1, 1, 1)
    mean_t = torch.as_tensor(mean, dtype=torch.float32).reshape(-1, 1, 1)
    std_t = torch.as_tensor(std, dtype=torch.float32).reshape(-1, 1, 1)
    return mean_t, std_t


def input_scale(std: torch.Tensor) -> float:
    """Lipschitz constant of p -> (p - mean) / std: 1 / min(std)."""
    return float(1.0 / std.min())


def pixel_model(model: nn.Module, mean: torch.Tensor, std: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
    """The network as a function of pixels in [0, 1]: p -> model((p - mean) / std)."""
    like = next(model.parameters())
    mean, std = mean.to(like), std.to(like)
    return lambda pixels: model((pixels - mean) / std)


# ---------------------------------------------------------------------- lower bound
def lower_bound(f: Callable[[torch.Tensor], torch.Tensor], pixels: torch.Tensor, steps: int = 10,
                samples: int = 4, step_size: float = 0.02, start_distance: float = 0.01) -> float:
    """An empirical lower bound of the l2 Lipschitz constant of ``f`` (pixels -> logits) on [0, 1].

    1. Margin gradients: for each image, m = f_a - f_b (top two logits); ||grad m|| <= ||J_f|| ||e_a - e_b||,
       so max ||grad m|| / sqrt(2) over the batch is a lower bound.
    2. Refinement on the ``samples`` images with the largest ones: ``steps`` normalised gradient-ascent
       steps on r(x, x') = ||f(x) - f(x')|| / ||x - x'|| over both points (kept in [0, 1]), x' starting at
       ``start_distance`` along the margin gradient. Any r is a lower bound; the largest seen is returned.

    Run it with the model in evaluation mode; parameter gradients are left untouched.
    """
    with torch.enable_grad():
        p = pixels.detach().clone().requires_grad_(True)
        logits = f(p)  # (B, K)
        top = logits.topk(2, dim=1).values
        (grad,) = torch.autograd.grad((top[:, 0] - top[:, 1]).sum(), p)
        norms = grad.flatten(1).norm(dim=1)  # (B,)
        best = float(norms.max()) / math.sqrt(2.0)
        if steps <= 0:
            return best
        idx = norms.argsort(descending=True)[:samples]
        direction = grad[idx] / norms[idx].clamp_min(1e-12).view(-1, *([1] * (grad.ndim - 1)))
        x = pixels[idx].detach().clone()
        x2 = (x + start_distance * direction).clamp(0.0, 1.0)
        for step in range(steps + 1):
            x.requires_grad_(True)
            x2.requires_grad_(True)
            gap = (x - x2).flatten(1).norm(dim=1)
            ratio = (f(x) - f(x2)).flatten(1).norm(dim=1) / gap.clamp_min(1e-12)  # (S,)
            ratio = torch.where(gap > 1e-6, ratio, torch.zeros_like(ratio))  # too close to trust float32
            best = max(best, float(ratio.detach().max()))
            if step == steps:
                break
            g1, g2 = torch.autograd.grad(ratio.sum(), (x, x2))
            with torch.no_grad():
                x = (x + step_size * _unit(g1)).clamp(0.0, 1.0)
                x2 = (x2 + step_size * _unit(g2)).clamp(0.0, 1.0)
    return best


def _unit(g: torch.Tensor) -> torch.Tensor:
    """Each sample's gradient scaled to unit l2 norm."""
    return g / g.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, *([1] * (g.ndim - 1)))


# ---------------------------------------------------------------------- local estimates
def local_estimates(model: nn.Module, inputs: torch.Tensor, names: Iterable[str], iters: int = 10) -> dict[str, float]:
    """For layers without a global bound: the largest spectral norm of the layer's Jacobian at the inputs it
    sees on this batch (power iteration per sample, J v by double backward), in the layer's own units.

    A local figure, not a bound: it says how steep the layer is where the data are, not how steep it can be.
    """
    from torch.nn.attention import SDPBackend, sdpa_kernel

    names = list(names)
    captured: dict[str, torch.Tensor] = {}
    hooks = [model.get_submodule(name).register_forward_pre_hook(
        lambda m, args, name=name: captured.__setitem__(name, args[0].detach())) for name in names]
    try:
        with torch.no_grad():
            model(inputs)
    finally:
        for hook in hooks:
            hook.remove()
    out: dict[str, float] = {}
    generator = torch.Generator().manual_seed(0)
    with torch.enable_grad(), sdpa_kernel(SDPBackend.MATH):  # the fused kernels have no double backward
        for name in names:
            x = captured[name].clone().requires_grad_(True)
            module = model.get_submodule(name)
            y = module(x)
            u = torch.zeros_like(y, requires_grad=True)
            (jt_u,) = torch.autograd.grad(y, x, u, create_graph=True)  # J^T u, linear in u
            v = _unit(torch.randn(x.shape, generator=generator).to(x))
            sigma = torch.zeros(x.shape[0], device=x.device)
            for _ in range(iters):
                (jv,) = torch.autograd.grad(jt_u, u, v, retain_graph=True)  # J v
                sigma = jv.flatten(1).norm(dim=1)
                (jtjv,) = torch.autograd.grad(y, x, jv, retain_graph=True)  # J^T J v
                v = _unit(jtjv)
            out[name] = float(sigma.max())
    return out


# ---------------------------------------------------------------------- certificates
def pairwise_distances(head_weight: torch.Tensor) -> torch.Tensor:
    """(K, K): ||w_i - w_j|| between head rows, with a zero diagonal and finite gradients everywhere."""
    diff = head_weight[:, None, :] - head_weight[None, :, :]  # (K, K, D)
    squared = diff.square().sum(-1)
    eye = torch.eye(head_weight.shape[0], dtype=torch.bool, device=head_weight.device)
    return torch.where(eye, torch.zeros_like(squared), squared.clamp_min(1e-24).sqrt())


def certified_mask(logits: torch.Tensor, labels: torch.Tensor, backbone: float | None,
                   head_weight: torch.Tensor, radius: float) -> torch.Tensor:
    """(B,) bool: correct and certified at l2 ``radius`` with LipShiFT's head-aware certificate.

    With L the backbone bound (pixels -> head input) and w_i the head rows, the margin f_y - f_i moves by at
    most L ||w_y - w_i|| per unit of input change, so the prediction y cannot change within the radius when
    f_y - f_i > radius * L * ||w_y - w_i|| for every i != y (LipShiFT ``trades_loss``; GloRo, Leino et al.
    2021). No bound: nothing is certified at a radius > 0. At radius 0 this is plain accuracy.
    """
    correct = logits.argmax(dim=1) == labels
    if radius == 0:
        need = torch.zeros_like(logits)
    elif backbone is None or not math.isfinite(backbone):
        return torch.zeros_like(correct)
    else:
        need = radius * backbone * pairwise_distances(head_weight.to(logits))[labels]  # (B, K)
    gap = logits.gather(1, labels[:, None]) - logits  # (B, K): f_y - f_i
    ok = gap > need
    ok[torch.arange(len(labels), device=labels.device), labels] = True
    return correct & ok.all(dim=1)


def certified_mask_sqrt2(logits: torch.Tensor, labels: torch.Tensor, network: float | None,
                         radius: float) -> torch.Tensor:
    """(B,) bool: the plain certificate f_y - max_{i != y} f_i > sqrt(2) L radius, with L the bound of the
    whole network (pixels -> logits): ||e_y - e_i|| = sqrt(2). Looser than :func:`certified_mask`."""
    correct = logits.argmax(dim=1) == labels
    if radius == 0:
        need = 0.0
    elif network is None or not math.isfinite(network):
        return torch.zeros_like(correct)
    else:
        need = math.sqrt(2.0) * network * radius
    others = logits.scatter(1, labels[:, None], float("-inf"))
    gap = logits.gather(1, labels[:, None])[:, 0] - others.max(dim=1).values
    return correct & (gap > need)


def emma_logits(logits: torch.Tensor, labels: torch.Tensor, backbone: torch.Tensor, head_weight: torch.Tensor,
                radius: float) -> torch.Tensor:
    """Logits of LipShiFT's margin-training loss (EMMA, Hu et al. 2023, "Unlocking deterministic robustness
    certification on ImageNet", Sec. 4; LipShiFT ``emma_loss``): every wrong class's logit raised by

        eps_yi * radius * L * ||w_y - w_i||,   eps_yi = clip((f_y - f_i) / (radius L ||w_y - w_i||), 0.01, 1)

    with eps_yi held constant (stop-gradient): an adaptive per-class radius, never more than the margin that
    class still lacks. ``backbone`` (L) and ``head_weight`` carry gradients, so the loss also pushes the
    bound down. Cross-entropy on these logits is plain cross-entropy at radius 0.
    """
    if radius == 0:
        return logits
    cap = radius * backbone * pairwise_distances(head_weight)[labels]  # (B, K), 0 at the true class
    gap = (logits.gather(1, labels[:, None]) - logits).detach()  # (B, K): f_y - f_i
    fraction = (gap / cap.detach().clamp_min(1e-12)).clamp(0.01, 1.0)
    return logits + fraction * cap


def margin_radius(base: float, ramp: tuple[float, float], progress: float) -> float:
    """LipShiFT's training radius at a fraction ``progress`` of training: base * (start + (end - start) *
    min(1.5 progress, 1)) (CIFAR-10: from 1x to 2x the evaluation radius over the first two thirds; LipShiFT
    steps it per epoch, this per optimiser step)."""
    start, end = ramp
    return base * (start + (end - start) * min(1.5 * max(progress, 0.0), 1.0))
