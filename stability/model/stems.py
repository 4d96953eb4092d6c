"""Token stems, image (B, C, H, W) -> tokens (B, N, D): ``stem`` toggle.

Both stems give the same (H/p) x (W/p) token grid in row-major order, and both end in a conv named ``proj``
that maps to embed_dim. ``STEMS`` maps each value to a builder ``cfg -> module``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import torch
from torch import nn

from stability.errors import ConfigError

if TYPE_CHECKING:
    from stability.model.config import ViTConfig


class _Stem(nn.Module):
    def __init__(self, img_size: int, patch_size: int) -> None:
        super().__init__()
        self.img_size, self.patch_size = img_size, patch_size
        self.grid_size = img_size // patch_size
        self.num_patches = self.grid_size**2

    def _check(self, x: torch.Tensor) -> None:
        if x.shape[-2] != self.img_size or x.shape[-1] != self.img_size:
            raise ConfigError(f"img_size={self.img_size} does not match the input images, which are "
                              f"{x.shape[-2]}x{x.shape[-1]}")


class PatchEmbed(_Stem):
    """ViT patchify (Dosovitskiy et al. 2021, Eq. 1): a p x p, stride-p conv, i.e. one linear map E applied
    to every flattened p x p patch. Names as timm (``patch_embed.proj``)."""

    def __init__(self, img_size: int, patch_size: int, in_chans: int, embed_dim: int) -> None:
        super().__init__(img_size, patch_size)
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check(x)
        return self.proj(x).flatten(2).transpose(1, 2)  # (B, C, H, W) -> (B, D, H/p, W/p) -> (B, N, D)


class ConvStem(_Stem):
    """Convolutional stem of ViT_C (Xiao et al. 2021, "Early Convolutions Help Transformers See Better",
    Sec. 3 and Table 1; pycls ``ViTStemConv``).

    log2(p) layers of [3x3 conv stride 2 (no bias, padding 1) -> BatchNorm -> ReLU], whose strides multiply
    to the patch size p; channels double with each stride-2 layer and end at embed_dim (e.g. ViTC-1GF:
    24, 48, 96, 192 for D = 192); then a 1x1 conv with bias to embed_dim, mirroring patchify's linear map.
    Only stride-2 layers are used (the paper's 18GF stem also has stride-1 ones).

    Init ``"pycls"`` (the paper's code, ``init_weights_vit``): every 3x3 conv N(0, sqrt(2 / out_channels)), the
    final 1x1 N(0, sqrt(1 / out_channels)) with zero bias. ``"pytorch"`` keeps PyTorch's default (Kaiming-uniform
    with a = sqrt(5)), which gives a smaller token scale: in training mode, on unit-variance images, the stem's
    output std is about 0.4 instead of 0.7.
    """

    def __init__(self, img_size: int, patch_size: int, in_chans: int, embed_dim: int, init: str = "pycls") -> None:
        super().__init__(img_size, patch_size)
        n = patch_size.bit_length() - 1  # log2(p) stride-2 layers
        widths = [embed_dim >> (n - 1 - i) for i in range(n)]  # ..., D/4, D/2, D
        layers: list[nn.Module] = []
        c_in = in_chans
        for width in widths:
            layers += [
                nn.Conv2d(c_in, width, kernel_size=3, stride=2, padding=1, bias=False),
                nn.BatchNorm2d(width),
                nn.ReLU(inplace=True),
            ]
            c_in = width
        self.stem = nn.Sequential(*layers)
        self.proj = nn.Conv2d(c_in, embed_dim, kernel_size=1)
        if init == "pycls":
            self._init_pycls()

    @torch.no_grad()
    def _init_pycls(self) -> None:
        for conv in self.stem:
            if isinstance(conv, nn.Conv2d):
                nn.init.normal_(conv.weight, std=(2.0 / conv.out_channels) ** 0.5)
        nn.init.normal_(self.proj.weight, std=(1.0 / self.proj.out_channels) ** 0.5)
        nn.init.zeros_(self.proj.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check(x)
        x = self.stem(x)  # (B, D, H/p, W/p): each stride-2 3x3 conv halves H and W exactly (even sizes)
        return self.proj(x).flatten(2).transpose(1, 2)  # (B, N, D)


STEMS: dict[str, Callable[[ViTConfig], _Stem]] = {
    "patchify": lambda cfg: PatchEmbed(cfg.img_size, cfg.patch_size, cfg.in_chans, cfg.embed_dim),
    "conv": lambda cfg: ConvStem(cfg.img_size, cfg.patch_size, cfg.in_chans, cfg.embed_dim, cfg.conv_stem_init),
}
