"""Empirical lower bounds: how steep the network and its unbounded layers actually are on data.

- :func:`lower_bound`: an empirical lower bound of the network's constant (largest margin gradient over a
  batch, refined by gradient ascent on ||f(x) - f(x')|| / ||x - x'||);
- :func:`local_estimates`: for layers without a global bound (see
  :data:`~stability.model.lipschitz.bounds.UNBOUNDED`), the spectral norm of the layer's Jacobian where
  the data are: a local figure, not a bound.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

import torch
from torch import nn


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
