"""Weight initialisation schemes: ``init`` toggle. Each is a function applied to the whole model once, after
construction. The class token and the position embedding are initialised where they are created
(``vit.py``, ``position.py``) and neither scheme touches them (LipsFormer keeps the PE's own init too).

One rule for every component, built-in or a user's (:mod:`stability.model.registry`): a scheme initialises the
Linear, conv and norm layers it finds anywhere in the model, inside a user's component as inside a built-in one;
but a component that defines ``init_weights(self, scheme: str)`` is handed the scheme's name instead, in its
place in the walk, and the scheme leaves everything inside it alone (:func:`scheme_modules`). No built-in
component defines it, so the built-in schemes do exactly what they did before the rule.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch
from timm.layers import trunc_normal_
from torch import nn

from stability.model.norms import is_norm_layer


def scheme_modules(model: nn.Module, scheme: str) -> Iterator[nn.Module]:
    """``model.modules()`` (same order: depth first, each module once) for scheme ``scheme``, except that a
    module below the root with an ``init_weights`` method is handed ``init_weights(scheme)`` when the walk
    reaches it, and neither it nor its submodules are yielded: it initialises itself."""
    seen: set[int] = set()

    def walk(module: nn.Module, root: bool) -> Iterator[nn.Module]:
        if id(module) in seen:
            return
        seen.add(id(module))
        own = getattr(module, "init_weights", None)
        if not root and callable(own):
            own(scheme)
            return
        yield module
        for child in module.children():
            yield from walk(child, False)

    yield from walk(model, True)


@torch.no_grad()
def timm_init(model: nn.Module) -> None:
    """timm's ViT init (``init_weights_vit_timm``, the default mode): every Linear trunc-normal std 0.02
    with zero bias; convs and norms keep PyTorch's defaults."""
    for m in scheme_modules(model, "default"):
        if isinstance(m, nn.Linear):
            trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


def spectral_norm_of(weight: torch.Tensor) -> torch.Tensor:
    """Largest singular value of a Linear weight, or of a conv kernel reshaped to (out, in * kh * kw)."""
    return torch.linalg.matrix_norm(weight.reshape(weight.shape[0], -1), ord=2)


@torch.no_grad()
def spectral_init(model: nn.Module) -> None:
    """LipsFormer spectral init (Qi et al. 2023, Sec. 3; official code ``_spectral_init``), every module,
    head included: xavier-normal, then W / sigma_max(W) so each Linear (and each reshaped conv kernel) has
    spectral norm exactly 1, giving Lipschitz factors of 1 at init. Linear biases 0 (conv biases keep their
    default, as in the code); every norm layer (:func:`~stability.model.norms.is_norm_layer`) weight 1 and
    bias 0, where it has them (RMSNorm has no bias; a non-affine norm has neither). An init only: nothing
    constrains W later.
    """
    for m in scheme_modules(model, "spectral"):
        if isinstance(m, (nn.Linear, nn.Conv2d)):
            nn.init.xavier_normal_(m.weight)
            m.weight.div_(spectral_norm_of(m.weight))
            if isinstance(m, nn.Linear) and m.bias is not None:
                nn.init.zeros_(m.bias)
        elif is_norm_layer(m):
            if getattr(m, "weight", None) is not None:
                nn.init.ones_(m.weight)  # gamma, (C,) or the normalised shape
            if getattr(m, "bias", None) is not None:
                nn.init.zeros_(m.bias)  # beta


@torch.no_grad()
def orthogonal_init(model: nn.Module) -> None:
    """LipShiFT's init (Menon et al. 2025, official code ``_init_weights``): every Linear and conv weight
    (semi-)orthogonal (Saxe et al. 2014; a conv kernel as its (out, in * kh * kw) matrix), every bias 0, every
    norm layer weight 1 and bias 0. Orthogonal rows or columns make each weight matrix an isometry or a
    projection, so its spectral norm is exactly 1 at init.
    """
    for m in scheme_modules(model, "orthogonal"):
        if isinstance(m, (nn.Linear, nn.Conv2d)):
            nn.init.orthogonal_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif is_norm_layer(m):
            if getattr(m, "weight", None) is not None:
                nn.init.ones_(m.weight)
            if getattr(m, "bias", None) is not None:
                nn.init.zeros_(m.bias)


INITS: dict[str, Callable[[nn.Module], None]] = {"default": timm_init, "spectral": spectral_init,
                                                 "orthogonal": orthogonal_init}


def no_reparam(model: nn.Module) -> None:
    """The ``reparam`` toggle's baseline, ``none``: every weight is used as it is stored."""


# The ``reparam`` toggle (stability.model.registry): a function of the built and initialised model, run after the
# ``init`` scheme; ``sigma`` (sigma_reparam.SIGMA_REPARAMS) is merged after this table.
REPARAMS: dict[str, Callable[[nn.Module], None]] = {"none": no_reparam}
