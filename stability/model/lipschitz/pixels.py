"""Pixel space: the data normalisation a model sees, its Lipschitz factor, and the model as a function of pixels.

Every bound of this package is for inputs in pixel space [0, 1]: the data normalisation x = (p - mean) / std
is folded in as a first factor 1 / min(std) (:func:`input_scale`). The statistics are read from the data
module's own ``mean``/``std`` attributes, so this wing never imports the data wing.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn


def input_normalization(datamodule: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean, std), each (C, 1, 1), such that the model sees (p - mean) / std for pixels p in [0, 1].

    Read from the data module's ``mean``/``std``. Digits: set by ``setup`` when ``normalize`` is on (with it
    off, pixels as they are); CIFAR: its per-channel statistics; ImageFolder: the ImageNet statistics it
    normalises with. Anything else (no ``mean``/``std``, or None) is taken to feed pixels as they are.
    """
    if datamodule is None or getattr(datamodule, "normalize", True) is False:
        return torch.zeros(1, 1, 1), torch.ones(1, 1, 1)
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
