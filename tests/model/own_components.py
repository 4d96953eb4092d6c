"""A researcher's own components, one per component kind, as a user would write them outside the package.

``tests/model/test_registry.py`` names them by class path (``own_components.DyT``): this folder is on
``sys.path`` while the tests run, as a user's folder is with ``PYTHONPATH=.``. Each follows the registry's
convention (:mod:`stability.model.registry`): built as ``Class(cfg)`` from the whole ViTConfig.
"""

from __future__ import annotations

import torch
from torch import nn

from stability.model.vit import Block


class DyT(nn.Module):
    """Dynamic Tanh (Zhu et al. 2025): weight * tanh(alpha * x) + bias; declares its Lipschitz constant."""

    def __init__(self, cfg) -> None:
        super().__init__()
        self.alpha = nn.Parameter(torch.tensor(0.5))
        self.weight = nn.Parameter(torch.ones(cfg.embed_dim))
        self.bias = nn.Parameter(torch.zeros(cfg.embed_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.weight * torch.tanh(self.alpha * x) + self.bias

    def lipschitz_constant(self) -> torch.Tensor:
        return self.alpha.abs() * self.weight.abs().max()  # tanh is 1-Lipschitz


class LinearStem(nn.Module):
    """Patches cut with unfold, then one Linear: patchify written without a conv."""

    def __init__(self, cfg) -> None:
        super().__init__()
        self.unfold = nn.Unfold(cfg.patch_size, stride=cfg.patch_size)
        self.proj = nn.Linear(cfg.in_chans * cfg.patch_size**2, cfg.embed_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(self.unfold(x).transpose(1, 2))  # (B, N, C p^2) -> (B, N, D)


class ParallelBlock(Block):
    """x = x + Attn(N1(x)) + MLP(N2(x)) (ViT-22B's parallel layout): a norm placement, built as Class(cfg, rate)."""

    def forward(self, x: torch.Tensor, pe: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
        h, pe = self.pe_norm(self.norm1(x), pe)
        return x + self.ls1(self.attn(h)) + self.ls2(self.mlp(self.norm2(x))), pe


class MeanMix(nn.Module):
    """A token mixer without attention: every token gets a Linear map of the tokens' mean. No telemetry
    methods and no Lipschitz constant: the model stays usable and is reported unbounded here."""

    def __init__(self, cfg) -> None:
        super().__init__()
        self.proj = nn.Linear(cfg.embed_dim, cfg.embed_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x.mean(dim=1, keepdim=True)).expand_as(x)


class ScaledPE(nn.Module):
    """Each block adds its own learnable multiple of the PE to the attention input (the PE kept out of the
    stream, as LaPE does)."""

    def __init__(self, cfg) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(()))

    def forward(self, h: torch.Tensor, pe: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
        return h + self.scale * pe, pe


def random_pos_embed(cfg) -> nn.Parameter:
    """A PE type: a learned table with a wider start than timm's."""
    return nn.Parameter(0.1 * torch.randn(1, cfg.num_tokens, cfg.embed_dim))


class Gate(nn.Module):
    """A residual scale: one learnable scalar gate tanh(g) for the whole branch."""

    def __init__(self, cfg) -> None:
        super().__init__()
        self.g = nn.Parameter(torch.tensor(0.5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.tanh(self.g)

    def lipschitz_constant(self) -> torch.Tensor:
        return torch.tanh(self.g).abs()


def small_init(model: nn.Module) -> None:
    """An init scheme: every Linear N(0, 0.01), biases zero (components with init_weights init themselves)."""
    from stability.model.init import scheme_modules

    with torch.no_grad():
        for m in scheme_modules(model, "own_components.small_init"):
            if isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, std=0.01)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)


def weight_norm_reparam(model: nn.Module) -> None:
    """A reparametrisation: weight normalisation (Salimans & Kingma 2016), w = g v / ||v|| per output row, on every
    Linear, through torch's own parametrisation (parameters ``original0`` (g) and ``original1`` (v))."""
    from torch.nn.utils.parametrizations import weight_norm

    for m in list(model.modules()):
        if type(m) is nn.Linear:
            weight_norm(m)


class GatedMlp(nn.Module):
    """A GLU channel mixer: fc2(act(fc1 x) * gate(x)), the activation from the config's ``activation``."""

    def __init__(self, cfg) -> None:
        super().__init__()
        from stability.model import registry

        hidden = int(cfg.embed_dim * cfg.mlp_ratio)
        self.fc1, self.gate = nn.Linear(cfg.embed_dim, hidden), nn.Linear(cfg.embed_dim, hidden)
        self.act = registry.build("activation", cfg)
        self.fc2 = nn.Linear(hidden, cfg.embed_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)) * self.gate(x))


class TemperatureHead(nn.Linear):
    """A Linear classifier with a learnable logit temperature."""

    def __init__(self, cfg) -> None:
        super().__init__(cfg.embed_dim, cfg.num_classes)
        self.log_t = nn.Parameter(torch.zeros(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x) * self.log_t.exp()


class SelfInit(nn.Module):
    """A norm that initialises itself: it records the scheme it was handed and sets its weight to 3."""

    def __init__(self, cfg) -> None:
        super().__init__()
        self.inner = nn.Linear(cfg.embed_dim, cfg.embed_dim)
        self.weight = nn.Parameter(torch.ones(cfg.embed_dim))
        self.schemes: list[str] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x) * self.weight

    @torch.no_grad()
    def init_weights(self, scheme: str) -> None:
        self.schemes.append(scheme)
        self.weight.fill_(3.0)
        nn.init.eye_(self.inner.weight)
        nn.init.zeros_(self.inner.bias)


# kind -> the class path of this module's component for it (activation: a torch class built as Class())
OWN: dict[str, str] = {
    "stem": "own_components.LinearStem",
    "norm": "own_components.DyT",
    "norm_placement": "own_components.ParallelBlock",
    "attention": "own_components.MeanMix",
    "pos_embed": "own_components.ScaledPE",
    "pos_embed_type": "own_components.random_pos_embed",
    "residual": "own_components.Gate",
    "init": "own_components.small_init",
    "reparam": "own_components.weight_norm_reparam",
    "activation": "torch.nn.SiLU",
    "mlp": "own_components.GatedMlp",
    "head": "own_components.TemperatureHead",
}
