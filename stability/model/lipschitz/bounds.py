"""Upper bounds of the configurable ViT's Lipschitz constant, per layer and for the network, in pixel space.

:class:`LipschitzBound` walks :class:`stability.model.VisionTransformer` in forward order and bounds each
layer; the product along the forward pass is the backbone bound (pixels -> head input), times ||W_head||_2
the network bound (pixels -> logits), as LipsFormer (Qi et al. 2023) bounds its blocks. Linear and
convolution operators by power iteration on the true operator (warm-started across calls), CenterNorm
exactly (the spectral norm of its linear part), weighted residuals as 1 + alpha * Lip(branch), MinMax, shift
and pooling by their constants, LipsFormer's paper-variant cosine attention by its bound
(:func:`~stability.model.lipschitz.paper_cosine.paper_cosine_bound`). LayerNorm, RMSNorm and the
dot-product, qk-norm and code-variant cosine attentions have no global bound: their layers are reported as
unbounded (value None), never as a number (:data:`UNBOUNDED` says why), and
:func:`~stability.model.lipschitz.lower.local_estimates` gives a local estimate instead.

Reparametrised layers (``reparam='sigma'``) are measured through the weight they apply, ``effective_weight()``
(:func:`~stability.model.lipschitz.constants.applied_weight`): ||W_hat||_2 = |gamma| once sigma has converged. DyT
declares |alpha| max|gamma|; LayerScale and ReZero are weighted residuals; a Peri-LN block multiplies its output
norms' constants into each branch; soft-capped attention is unbounded like dot attention (the cap bounds logits,
not the Jacobian).

A component may declare its own constant (the protocol of :mod:`stability.model.registry`): a method
``lipschitz_constant(self) -> float | torch.Tensor | None``, which the walk uses wherever it meets the
component (a stem, norm, token mixer, MLP, activation or residual scale); None declares that it has no global
bound. A component without it that the walk does not know makes the model unbounded, and the reason names the
component and the toggle value that built it (``no bound known for DyT (norm='mylab.norms.DyT')``).

Everything holds for the model in evaluation mode (dropout and drop-path are the identity: no keep-probability
factors, unlike LipShiFT's evaluation code; BatchNorm uses its running statistics) and for inputs in pixel space
[0, 1]: the data normalisation x = (p - mean) / std is folded in as a first factor 1 / min(std)
(:mod:`stability.model.lipschitz.pixels`). Norms are l2 over the whole token sequence (per-token maps keep
their per-token constant).

Power iteration approaches sigma_max from below; with warm starts and :data:`FINAL_ITERS` iterations the
gap is far below the other slack of a product bound, and the tests check it against an exact SVD.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from stability.model.attention import PaperCosineAttention
from stability.model.lipschitz.constants import (  # noqa: F401 - GELU_LIPSCHITZ, UNBOUNDED: read from here too
    ACTIVATION_LIPSCHITZ,
    GELU_LIPSCHITZ,
    UNBOUNDED,
    applied_weight,
)
from stability.model.lipschitz.paper_cosine import paper_cosine_bound
from stability.model.mlp import LiResConv, Mlp
from stability.model.norms import CenterNorm
from stability.model.peri_ln import PeriNormBlock
from stability.model.residual import ResidualScale
from stability.model.shift import Shift
from stability.model.stems import ConvStem, PatchEmbed
from stability.model.vit import PostNormBlock, VisionTransformer

FINAL_ITERS = 100  # power iterations at the end of a run (LipShiFT evaluates with 100)
STEP_ITERS = 5  # per periodic measurement or margin-training step, warm-started (LipShiFT trains with 10)


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

    # ------------------------------------------------------------------ declared constants
    def _declared(self, module: nn.Module, toggle: str) -> tuple[bool, torch.Tensor | None, str]:
        """(whether ``module`` declares its constant, the constant, why there is none): its own
        ``lipschitz_constant()`` (module docstring)."""
        declare = getattr(module, "lipschitz_constant", None)
        if not callable(declare):
            return False, None, ""
        value = declare()
        if value is None:
            return True, None, (f"{type(module).__name__}.lipschitz_constant() declares no global bound "
                                f"{self._built_by(toggle)}")
        return True, value if isinstance(value, torch.Tensor) else _like(self.model).new_tensor(float(value)), ""

    def _built_by(self, toggle: str) -> str:
        """``(norm='mylab.norms.DyT')``: the toggle value that built a component (the report reads it back)."""
        return f"({toggle}={getattr(self.model.cfg, toggle)!r})"

    def _no_bound(self, module: nn.Module, toggle: str) -> str:
        return f"no bound known for {type(module).__name__} {self._built_by(toggle)}"

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
        larger. A reparametrised conv is measured through the kernel it applies (:func:`applied_weight`)."""
        w = applied_weight(conv)
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
        declared, constant, why = self._declared(stem, "stem")
        if declared:
            if constant is None:
                layers.append(LayerBound("patch_embed", type(stem).__name__, None, why))
            return constant
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
        layers.append(LayerBound("patch_embed", type(stem).__name__, None, self._no_bound(stem, "stem")))
        return None

    def _norm(self, name: str, norm: nn.Module, iters: int, diff: bool) -> tuple[torch.Tensor | None, str]:
        declared, constant, why = self._declared(norm, "norm")
        if declared:
            return constant, why
        if isinstance(norm, nn.Identity):
            return _like(self.model).new_tensor(1.0), ""
        if isinstance(norm, CenterNorm):
            return self.linear_norm(name, centernorm_matrix(norm), iters, diff), ""
        why = UNBOUNDED.get(type(norm)) or next((w for cls, w in UNBOUNDED.items() if isinstance(norm, cls)), None)
        return None, why or self._no_bound(norm, "norm")

    def _attention(self, name: str, attn: nn.Module, iters: int, diff: bool) -> tuple[torch.Tensor | None, str]:
        declared, constant, why = self._declared(attn, "attention")
        if declared:
            return constant, why
        if isinstance(attn, Shift):
            return _like(self.model).new_tensor(attn.lipschitz()), ""
        if isinstance(attn, PaperCosineAttention):
            return paper_cosine_bound(self.linear_norm, name, attn, self.model.cfg.num_tokens, iters,
                                      diff), ""
        why = UNBOUNDED.get(type(attn))
        return None, why or self._no_bound(attn, "attention")

    def _mlp(self, name: str, mlp: nn.Module, iters: int, diff: bool) -> tuple[torch.Tensor | None, str, str]:
        declared, constant, why = self._declared(mlp, "mlp")
        if declared:
            return constant, type(mlp).__name__, why
        activation = getattr(mlp, "act", nn.Identity())
        act: torch.Tensor | float | None = ACTIVATION_LIPSCHITZ.get(type(activation))
        act_name = type(activation).__name__
        if act is None:
            declared, act, why = self._declared(activation, "activation")
            if act is None:
                return None, f"{type(mlp).__name__}({act_name})", why or (
                    f"no bound known for the activation {act_name} {self._built_by('activation')}")
        if isinstance(mlp, Mlp):  # ||fc2|| * Lip(act) * ||fc1||
            fc1 = self.linear_norm(f"{name}.fc1", applied_weight(mlp.fc1), iters, diff)
            fc2 = self.linear_norm(f"{name}.fc2", applied_weight(mlp.fc2), iters, diff)
            return fc2 * act * fc1, f"Mlp({act_name})", ""
        if isinstance(mlp, LiResConv):  # Lip(act) * (1 + max|alpha_c| * ||Conv3x3||)
            conv = self.conv_norm(f"{name}.conv", mlp.conv, mlp.input_shape(), iters, diff)
            return act * (1.0 + mlp.scale.gamma.abs().max() * conv), f"LiResConv({act_name})", ""
        return None, type(mlp).__name__, self._no_bound(mlp, "mlp")

    def _scale(self, name: str, module: nn.Module, layers: list[LayerBound]) -> torch.Tensor | float | None:
        """The bound of one residual branch's scale; an unknown one is recorded as a part without a bound."""
        declared, constant, why = self._declared(module, "residual")
        if not declared and isinstance(module, nn.Identity):
            return 1.0
        if not declared and isinstance(module, ResidualScale):
            return module.gamma.abs().max()
        if constant is None:
            layers.append(LayerBound(name, type(module).__name__, None, why or self._no_bound(module, "residual")))
        return constant

    def _block(self, name: str, block: nn.Module, layers: list[LayerBound], iters: int,
               diff: bool) -> torch.Tensor | None:
        """Pre-norm: (1 + |a1| Lip(attn) Lip(N1)) (1 + |a2| Lip(mlp) Lip(N2)); post-norm:
        Lip(N1) (1 + |a1| Lip(attn)) * Lip(N2) (1 + |a2| Lip(mlp)); Peri-LN: the pre-norm factors with each
        branch's output norm too, 1 + |a| Lip(N_out) Lip(f) Lip(N_in); a stream mixer (shift) replaces the
        first factor by its own constant. Drop-path is the identity at evaluation."""
        post = isinstance(block, PostNormBlock)
        out1, out2 = self._post_norms(name, block, layers, iters, diff)
        attn, why = self._attention(f"{name}.attn", block.attn, iters, diff)
        layers.append(LayerBound(f"{name}.attn", type(block.attn).__name__, attn, why))
        if block.attn_on_stream:
            first = attn
        else:
            n1, why1 = self._norm(f"{name}.norm1", block.norm1, iters, diff)
            layers.append(LayerBound(f"{name}.norm1", type(block.norm1).__name__, n1, why1))
            s1 = self._scale(f"{name}.ls1", block.ls1, layers)
            first = _product(n1, _one_plus(s1, attn)) if post else _one_plus(s1, _product(out1, attn, n1))
        mlp, kind, why = self._mlp(f"{name}.mlp", block.mlp, iters, diff)
        layers.append(LayerBound(f"{name}.mlp", kind, mlp, why))
        n2, why2 = self._norm(f"{name}.norm2", block.norm2, iters, diff)
        layers.append(LayerBound(f"{name}.norm2", type(block.norm2).__name__, n2, why2))
        s2 = self._scale(f"{name}.ls2", block.ls2, layers)
        second = _product(n2, _one_plus(s2, mlp)) if post else _one_plus(s2, _product(out2, mlp, n2))
        return _product(first, second)  # type: ignore[return-value]

    def _post_norms(self, name: str, block: nn.Module, layers: list[LayerBound], iters: int,
                    diff: bool) -> tuple[torch.Tensor | float | None, torch.Tensor | float | None]:
        """The constants of a Peri-LN block's branch-output norms (1, 1 for any other block), recorded as parts."""
        out: list[torch.Tensor | float | None] = [1.0, 1.0]
        for i, part in enumerate(("post_norm1", "post_norm2")):  # a stream mixer has no branch: post_norm1 unused
            if isinstance(block, PeriNormBlock) and not (i == 0 and block.attn_on_stream):
                out[i], why = self._norm(f"{name}.{part}", getattr(block, part), iters, diff)
                layers.append(LayerBound(f"{name}.{part}", type(getattr(block, part)).__name__, out[i], why))
        return out[0], out[1]


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
    raise TypeError(f"no certificate for a head of type {type(head).__name__}: give it an effective_weight() "
                    "method returning the (K, D) matrix it applies")
