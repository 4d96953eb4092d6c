"""Lipschitz bounds of the configurable ViT, an empirical lower bound, and certified robust accuracy.

Two of the seed papers argue through Lipschitz continuity: LipsFormer (Qi et al. 2023) bounds the Lipschitz
constant of its blocks, and LipShiFT (Menon et al. 2025) turns a network bound into certified robustness.
This package measures both for any configuration of :class:`stability.model.VisionTransformer`, in
evaluation mode and for inputs in pixel space [0, 1].

Modules, in the order data flows through them:
- :mod:`~stability.model.lipschitz.pixels`: the data normalisation (read from the data module), its factor
  1 / min(std), and the model as a function of pixels;
- :mod:`~stability.model.lipschitz.paper_cosine`: the global bound of LipsFormer's paper-variant attention;
- :mod:`~stability.model.lipschitz.bounds`: :class:`LipschitzBound`, an upper bound per layer, for the
  backbone (pixels -> head input) and for the network (pixels -> logits), or why a layer has none;
- :mod:`~stability.model.lipschitz.lower`: an empirical lower bound of the network's constant, and local
  estimates for the layers without a global bound;
- :mod:`~stability.model.lipschitz.certify`: certified robust accuracy at an l2 radius from the bound,
  and LipShiFT's margin training (EMMA logits, radius schedule).

The training-time monitor that runs all of this is :mod:`stability.training.lipschitz_monitor`.
"""

from stability.model.lipschitz.bounds import FINAL_ITERS, STEP_ITERS, Bounds, LipschitzBound
from stability.model.lipschitz.certify import (
    DEFAULT_RADII,
    DEFAULT_RADIUS,
    certified_mask,
    certified_mask_sqrt2,
    emma_logits,
    margin_radius,
)
from stability.model.lipschitz.lower import local_estimates, lower_bound
from stability.model.lipschitz.pixels import input_normalization, input_scale, pixel_model

__all__ = [
    "DEFAULT_RADII",
    "DEFAULT_RADIUS",
    "FINAL_ITERS",
    "STEP_ITERS",
    "Bounds",
    "LipschitzBound",
    "certified_mask",
    "certified_mask_sqrt2",
    "emma_logits",
    "input_normalization",
    "input_scale",
    "local_estimates",
    "lower_bound",
    "margin_radius",
    "pixel_model",
]
