"""Presets of the weighted residual x + alpha * f(x): LayerScale and ReZero / SkipInit (``residual`` values).

:class:`stability.model.residual.ResidualScale` already is the form (alpha per channel, learnable, parameter
``gamma`` under ``ls1`` / ``ls2`` as timm names it); what the papers add is where alpha starts, and ReZero
makes it one scalar. These classes fix that so a grid or a claim can name the paper, not a number.

- LayerScale (Touvron et al. 2021, "Going deeper with Image Transformers", CaiT, Sec. 3):
  x <- x + diag(lambda) f(x), lambda initialised to eps = 0.1 up to depth 18, 1e-5 at depth 24 and 1e-6 for
  deeper networks. timm's ``cait.py`` mostly follows it (``init_values`` 1e-5 for the depth-24 models,
  1e-6 for S36, M36 and M48) but gives XXS36 1e-5; :func:`layerscale_init` follows the paper. timm's generic
  ``LayerScale`` defaults to 1e-5.
- ReZero (Bachlechner et al. 2021, "ReZero is All You Need: Fast Convergence at Large Depth"): x <- x + alpha f(x),
  alpha ONE scalar per residual connection,
  initialised to 0 (so every block is the identity at init), used without LayerNorm. The official code
  (``majumderb/rezero``, ``RZTXEncoderLayer``: ``resweight = Parameter(Tensor([0]))``) shares one alpha
  between a layer's attention and feed-forward branches; here each branch (``ls1``, ``ls2``) gets its own
  scalar, the paper's equation read per residual branch, which the block structure allows without a change.
- SkipInit (De & Smith 2020, "Batch Normalization Biases Residual Blocks Towards the Identity Function in
  Deep Networks"): the same learnable scalar at the end of each residual branch, initialised to 0 (or a small
  constant), proposed to replace normalisation; it is the ReZero preset here.

The depth in CaiT's rule is the number of self-attention blocks the model actually builds
(``cfg.num_blocks``). ``cfg.residual_init``, when set, overrides either preset's start value.
"""

from __future__ import annotations

from collections.abc import Callable
from types import SimpleNamespace
from typing import TYPE_CHECKING

from torch import nn

from stability.errors import ConfigError
from stability.model.residual import ResidualScale

if TYPE_CHECKING:
    from stability.model.config import ViTConfig

# CaiT, Sec. 3: (largest depth, eps) rows; beyond the last row, DEEP_EPS.
CAIT_TABLE: tuple[tuple[int, float], ...] = ((18, 0.1), (24, 1e-5))
DEEP_EPS = 1e-6


def layerscale_init(depth: int) -> float:
    """CaiT's initial LayerScale value for a network of ``depth`` blocks: 0.1 for depth <= 18, 1e-5 for
    depth <= 24, 1e-6 beyond. The deeper the network, the closer each block starts to the identity, so the
    sum of L branches stays of the order of one branch at init."""
    if isinstance(depth, bool) or not isinstance(depth, int) or depth < 1:
        raise ConfigError(f"depth={depth!r} is not valid; it must be a positive integer")
    for largest, eps in CAIT_TABLE:
        if depth <= largest:
            return eps
    return DEEP_EPS


class LayerScale(ResidualScale):
    """LayerScale (CaiT): per-channel diag(lambda) on a residual branch, lambda_0 = :func:`layerscale_init`.

    ``LayerScale(cfg)`` reads ``embed_dim``, ``num_blocks`` and ``residual_init`` (None: CaiT's table);
    ``LayerScale.plain(dim, init)`` without a config. Parameter ``gamma`` (D,), as timm's ``LayerScale``.
    """

    def __init__(self, cfg: ViTConfig) -> None:
        init = getattr(cfg, "residual_init", None)
        super().__init__(cfg.embed_dim, layerscale_init(cfg.num_blocks) if init is None else float(init))

    @classmethod
    def plain(cls, dim: int, init: float) -> LayerScale:
        return cls(SimpleNamespace(embed_dim=dim, num_blocks=1, residual_init=init))  # type: ignore[arg-type]


class ReZero(ResidualScale):
    """ReZero / SkipInit: one learnable scalar alpha on a residual branch, alpha_0 = 0 (``residual_init`` if set).

    ``ReZero(cfg)`` reads ``residual_init``; ``ReZero.plain(init)`` without a config. The parameter is
    ``gamma`` of shape (1,), broadcast over the channels, so the Lipschitz walker, which reads
    ``max|gamma|`` of a :class:`ResidualScale`, bounds it unchanged.
    """

    def __init__(self, cfg: ViTConfig) -> None:
        init = getattr(cfg, "residual_init", None)
        super().__init__(1, 0.0 if init is None else float(init))

    @classmethod
    def plain(cls, init: float = 0.0) -> ReZero:
        return cls(SimpleNamespace(residual_init=init))  # type: ignore[arg-type]


# The ``residual`` toggle's values ``layerscale`` and ``rezero`` (merged after residual.RESIDUALS by the registry).
LAYERSCALE_RESIDUALS: dict[str, Callable[[ViTConfig], nn.Module]] = {"layerscale": LayerScale, "rezero": ReZero}
