"""sigma-Reparam: every Linear (and conv) weight reparametrised by its spectral norm and a learnable scalar.

Zhai et al. 2023, "Stabilizing Transformer Training by Preventing Attention Entropy Collapse" (ICML), the
reparametrisation the paper defines:

    W_hat = gamma / sigma(W) * W

with sigma(W) the largest singular value of W, estimated by ONE power iteration per training step, and gamma
a learnable scalar. The paper's theorem bounds each attention head's entropy from below by a function decreasing
exponentially in ||W_q^T W_k||_2; sigma-Reparam decouples that spectral norm from the weight's growth (it is
then gamma_q * gamma_k at most), which is how it prevents entropy collapse.

Facts from the official code (``apple/ml-sigma-reparam``, ``vision/layers.py``: ``SpectralNormedWeight``,
``SNLinear``, ``SNConv2d``, ``convert_to_sn``) that this module follows:

- the power-iteration vector u (length in_features) is seeded by an SVD of the initial weight: u = the top right
  singular vector, so the first estimate is exact;
- one iteration per forward: v = normalise(W u), u = normalise(W^T v), sigma = v^T W u; u and v carry no
  gradient (computed under ``no_grad``), sigma does (through W): d sigma / dW = v u^T;
- u is written back only in training mode; in eval mode the same single iteration runs from the stored u but
  nothing is stored, so evaluation is a pure function of (W, u) and does not move the estimate;
- gamma (called ``sigma`` there) is a learnable scalar initialised to sigma(W_0), the spectral norm of the
  initial weight, so W_hat = W at init: the reparametrisation does not change the network's function then;
- a conv kernel is treated as the (out, in * kh * kw) matrix of its reshaped weight;
- ``convert_to_sn`` swaps every ``nn.Linear`` and ``nn.Conv2d`` of a timm ViT (head included), and the vision
  recipe then removes every normalisation layer (``remove_all_normalization_layers``); here the norms are the
  ``norm`` toggle's business, not this module's.

Deliberate differences: the official converter builds NEW layers whose weights are re-drawn trunc-normal(0.02
x init gain); :func:`apply_sigma_reparam` keeps the model's weights (so it composes with any ``init`` scheme),
and :func:`sigma_reparam_init` is the official recipe (re-draw, then swap). gamma is a 0-d parameter (the code's
is shape (1,)); both count as 1-D for weight decay, which the training module does not apply to them.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TypeVar

import torch
import torch.nn.functional as F
from timm.layers import trunc_normal_
from torch import nn

INIT_STD = 0.02  # official SNLinear / SNConv2d weight init: trunc-normal, std 0.02 x init gain (gain 1 for ViT-B)


class _SigmaReparam:
    """The reparametrisation shared by the Linear and the conv: buffers ``u``, ``v``, ``sigma``, parameter
    ``gamma``. ``weight`` is the raw parameter W; the layer applies W_hat."""

    weight: nn.Parameter
    u: torch.Tensor
    v: torch.Tensor
    sigma: torch.Tensor
    gamma: nn.Parameter
    training: bool

    def _matrix(self, weight: torch.Tensor) -> torch.Tensor:
        return weight.reshape(weight.shape[0], -1)  # (out, in * kh * kw) for a conv kernel

    def _setup_reparam(self) -> None:
        for name in ("u", "v", "sigma"):  # filled by reset_sigma
            self.register_buffer(name, torch.empty(0, device=self.weight.device))  # type: ignore[attr-defined]
        self.gamma = nn.Parameter(torch.empty((), dtype=self.weight.dtype, device=self.weight.device))
        self.reset_sigma()

    @torch.no_grad()
    def reset_sigma(self) -> None:
        """Seed u, v by an SVD of the current W and set gamma = sigma(W), so W_hat = W (official init).

        Call it after re-initialising ``weight`` in place (an ``init`` scheme run after the swap), else gamma
        and u describe the old weight."""
        w = self._matrix(self.weight.detach()).float()
        left, s, right_h = torch.linalg.svd(w, full_matrices=False)
        dtype = self.weight.dtype
        self.u = right_h[0].to(dtype).clone()  # (in,): top right singular vector
        self.v = left[:, 0].to(dtype).clone()  # (out,): top left singular vector
        self.sigma = s[0].to(dtype).clone()
        self.gamma.copy_(s[0])

    def estimate_sigma(self, update: bool) -> torch.Tensor:
        """One power iteration from the stored u: v = normalise(W u), u' = normalise(W^T v), sigma = v^T W u',
        differentiable in W only (gradient v u'^T, as the official code's).

        Computed with two matrix-vector products, not three: with t = W^T v, u' = t / ||t||, so
        v^T W u' = t . t / ||t|| = ||t||; and d||t|| / dW = v t^T / ||t|| = v u'^T, the same gradient.
        ``update``: store the new u, v and sigma (training forwards); otherwise leave the buffers as they are."""
        w = self._matrix(self.weight)
        with torch.no_grad():
            v = F.normalize(w @ self.u, dim=0)  # (out,)
        t = w.t() @ v  # (in,), through W
        sigma = torch.linalg.vector_norm(t)  # ()
        if update:
            with torch.no_grad():
                self.u.copy_(t / sigma.clamp_min(1e-12))  # u' = normalise(W^T v)
                self.v.copy_(v)
                self.sigma.copy_(sigma)
        return sigma

    def effective_weight(self) -> torch.Tensor:
        """W_hat = gamma / sigma * W as the eval forward uses it (one iteration from the stored u, nothing stored):
        what a Lipschitz bound of the layer should read instead of ``weight``."""
        return self.weight * (self.gamma / self.estimate_sigma(update=False))

    def _weight_hat(self) -> torch.Tensor:
        """W_hat for the forward: the same numbers as :meth:`effective_weight`, as one autograd node
        (:class:`_ReparamWeight`); a training forward stores the new u, v and sigma."""
        w_hat, sigma, v, u = _ReparamWeight.apply(self.weight, self.gamma, self.u)
        if self.training:  # in place: DDP and the state dict hold these very tensors
            with torch.no_grad():
                self.u.copy_(u)
                self.v.copy_(v)
                self.sigma.copy_(sigma)
        return w_hat


class _ReparamWeight(torch.autograd.Function):
    """(W, gamma, u) -> W_hat = gamma / sigma * W, sigma = ||W^T v||, v = normalise(W u); also sigma, v and the new
    u = W^T v / sigma (no gradient).

    Why a node of its own: written as tensor operations (:meth:`_SigmaReparam.effective_weight`), the gradient
    takes about ten weight-sized passes and as many small autograd nodes per layer and step, which on a small
    model costs as much as the matmuls. Its closed form, with G = dL/dW_hat, s = gamma / sigma and k = <G, W>:

        dL/dgamma = k / sigma,    dL/dW = s G - (s k / sigma) v u^T    (d sigma / dW = v u^T)

    is one reduction and two weight-sized passes. Differentiable once (what training and margin training need).
    """

    @staticmethod
    def forward(ctx: torch.autograd.function.FunctionCtx, weight: torch.Tensor, gamma: torch.Tensor,
                u: torch.Tensor) -> tuple[torch.Tensor, ...]:
        w = weight.reshape(weight.shape[0], -1)  # (out, in * kh * kw) for a conv kernel
        v = torch.mv(w, u)
        v = v / torch.linalg.vector_norm(v).clamp_min(1e-12)  # (out,), F.normalize in fewer steps
        t = torch.mv(w.t(), v)  # (in,)
        sigma = torch.linalg.vector_norm(t)  # (): v^T W u_new
        inverse = 1.0 / sigma.clamp_min(1e-12)
        scale = gamma * inverse
        u_new = t * inverse
        ctx.save_for_backward(weight, v, u_new, scale, inverse)
        ctx.mark_non_differentiable(sigma, v, u_new)
        return weight * scale, sigma, v, u_new

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: torch.autograd.function.FunctionCtx, grad: torch.Tensor,
                 *unused: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, None]:
        weight, v, u, scale, inverse = ctx.saved_tensors  # type: ignore[attr-defined]
        g = grad.reshape(grad.shape[0], -1)  # (out, in * kh * kw), as W
        k = torch.dot(g.reshape(-1), weight.reshape(-1)) * inverse  # <G, W> / sigma = dL/dgamma
        rank_one = v * (-scale * k)  # (out,): the coefficient of v u^T
        grad_w = torch.addcmul(g * scale, rank_one[:, None], u[None, :])  # s G - (s k / sigma) v u^T, one pass
        return grad_w.reshape(weight.shape), k, None


class SigmaReparamLinear(_SigmaReparam, nn.Linear):
    """nn.Linear computing x W_hat^T + b, W_hat = gamma / sigma(W) * W (Zhai et al. 2023; official
    ``SNLinear``). Same constructor as ``nn.Linear``; ``weight`` and ``bias`` keep their names (a state dict of
    the plain layer loads with ``strict=False``), plus ``gamma`` and the buffers ``u``, ``v``, ``sigma``.

    The layer's l2 Lipschitz constant is ||W_hat||_2 = |gamma| ||W||_2 / sigma_est. The estimate is a Rayleigh
    quotient, so sigma_est <= ||W||_2 and the constant is |gamma| exactly once the power iteration has
    converged (after a few steps of slowly changing W), and slightly above |gamma| before.
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True, device: torch.device | None = None,
                 dtype: torch.dtype | None = None) -> None:
        super().__init__(in_features, out_features, bias=bias, device=device, dtype=dtype)
        self._setup_reparam()

    @classmethod
    def from_linear(cls, linear: nn.Linear) -> SigmaReparamLinear:
        """The reparametrised copy of ``linear``, its weight and bias kept; gamma = sigma(W), so same outputs."""
        new = cls(linear.in_features, linear.out_features, bias=linear.bias is not None,
                  device=linear.weight.device, dtype=linear.weight.dtype)
        _copy_parameters(linear, new)
        return new

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self._weight_hat(), self.bias)  # (..., out)

    def lipschitz_constant(self) -> torch.Tensor:
        """|gamma|: the layer's l2 Lipschitz constant once sigma has converged (see the class docstring)."""
        return self.gamma.abs()


class SigmaReparamConv2d(_SigmaReparam, nn.Conv2d):
    """nn.Conv2d with kernel W_hat = gamma / sigma(W) * W, sigma of the (out, in/groups * kh * kw) reshaped kernel
    (official ``SNConv2d``). Same constructor and names as ``nn.Conv2d``, plus ``gamma``, ``u``, ``v``, ``sigma``.

    The matrix norm is the conv's Lipschitz constant only when patches do not overlap (kernel == stride, the ViT
    patchify stem); otherwise each input pixel enters at most prod_i ceil(k_eff_i / s_i) patches, which
    multiplies the bound by the square root of that count (see :meth:`lipschitz_constant`).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int | tuple[int, int],
                 stride: int | tuple[int, int] = 1, padding: int | tuple[int, int] | str = 0,
                 dilation: int | tuple[int, int] = 1, groups: int = 1, bias: bool = True, padding_mode: str = "zeros",
                 device: torch.device | None = None, dtype: torch.dtype | None = None) -> None:
        super().__init__(in_channels, out_channels, kernel_size, stride=stride, padding=padding, dilation=dilation,
                         groups=groups, bias=bias, padding_mode=padding_mode, device=device, dtype=dtype)
        self._setup_reparam()

    @classmethod
    def from_conv(cls, conv: nn.Conv2d) -> SigmaReparamConv2d:
        """The reparametrised copy of ``conv``, every setting and its weights kept."""
        new = cls(conv.in_channels, conv.out_channels, conv.kernel_size, stride=conv.stride,
                  padding=conv.padding, dilation=conv.dilation, groups=conv.groups,
                  bias=conv.bias is not None, padding_mode=conv.padding_mode,
                  device=conv.weight.device, dtype=conv.weight.dtype)
        _copy_parameters(conv, new)
        return new

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(x, self._weight_hat(), self.bias)  # (B, out, H', W')

    def overlap(self) -> int:
        """Most output positions one input pixel contributes to: prod over axes of min(k, ceil(k_eff / s)),
        k_eff = (k - 1) * dilation + 1 the kernel's span."""
        count = 1
        for k, s, d in zip(self.kernel_size, self.stride, self.dilation):
            count *= min(k, math.ceil(((k - 1) * d + 1) / s))
        return count

    def lipschitz_constant(self) -> torch.Tensor:
        """|gamma| * sqrt(overlap): exact for non-overlapping patches (the patchify stem, overlap 1), an upper
        bound otherwise, once sigma has converged. Each output patch is W_hat applied to a patch vector and the
        patches cover every pixel at most ``overlap`` times, so ||conv(x)||^2 <= ||W_hat||^2 overlap ||x||^2."""
        return self.gamma.abs() * math.sqrt(self.overlap())


@torch.no_grad()
def _copy_parameters(old: nn.Module, new: _SigmaReparam) -> None:
    new.weight.copy_(old.weight)
    if getattr(old, "bias", None) is not None:
        new.bias.copy_(old.bias)  # type: ignore[attr-defined]
    new.reset_sigma()


M = TypeVar("M", bound=nn.Module)


def apply_sigma_reparam(model: M, convs: bool = True) -> M:
    """Swap every ``nn.Linear`` (and, with ``convs``, every ``nn.Conv2d``) in ``model`` for its sigma-Reparam
    version, in place, keeping its weights; returns ``model``. At init the outputs are unchanged (gamma = sigma).

    Only layers whose type is exactly ``nn.Linear`` / ``nn.Conv2d`` are swapped: a subclass (a normalised head,
    ``nn.MultiheadAttention``'s ``out_proj``) has its own forward or is read by weight elsewhere, and a swap
    would silently change what it computes. Run it after the model's ``init`` scheme: an init that rewrites
    ``weight`` afterwards leaves gamma and u stale (call ``reset_sigma`` on each layer then).
    """
    for name, child in list(model.named_children()):
        if type(child) is nn.Linear:
            setattr(model, name, SigmaReparamLinear.from_linear(child))
        elif convs and type(child) is nn.Conv2d:
            setattr(model, name, SigmaReparamConv2d.from_conv(child))
        else:
            apply_sigma_reparam(child, convs=convs)
    return model


@torch.no_grad()
def sigma_reparam_init(model: nn.Module) -> None:
    """The official ViT recipe as an init scheme: every Linear and Conv2d weight re-drawn trunc-normal(std 0.02)
    as ``SNLinear`` / ``SNConv2d`` do (biases keep the model's own init), then :func:`apply_sigma_reparam`."""
    for m in model.modules():
        if type(m) in (nn.Linear, nn.Conv2d):
            trunc_normal_(m.weight, std=INIT_STD)
    apply_sigma_reparam(model)


def sigma_reparam_layers(model: nn.Module) -> list[nn.Module]:
    """The reparametrised layers of ``model``, in module order (for telemetry: their ``sigma`` and ``gamma``)."""
    return [m for m in model.modules() if isinstance(m, _SigmaReparam)]


def sigma_reparam(model: nn.Module) -> None:
    """The ``reparam`` toggle's value ``sigma``: :func:`apply_sigma_reparam` on the whole model, every Linear and
    conv (the official converter's set), applied by ``VisionTransformer.__init__`` after the ``init`` scheme, so
    gamma and u describe the initialised weights and W_hat = W at the start.

    The classifier too, as the official converter does: the plain head is an ``nn.Linear`` subclass (for its
    ``effective_weight``) that computes exactly what ``nn.Linear`` does, so it is swapped like one (the
    reparametrised layer has an ``effective_weight`` too). A head with its own forward (LLN's unit rows, which
    would undo gamma / sigma anyway) is left as it is."""
    apply_sigma_reparam(model, convs=True)
    head = getattr(model, "head", None)
    if isinstance(head, nn.Linear) and not isinstance(head, _SigmaReparam) and type(head).forward is nn.Linear.forward:
        model.head = SigmaReparamLinear.from_linear(head)


# merged after init.REPARAMS (the baseline, ``none``) by the registry
SIGMA_REPARAMS: dict[str, Callable[[nn.Module], None]] = {"sigma": sigma_reparam}
