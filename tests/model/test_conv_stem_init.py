"""The conv stem's init follows the paper's code (pycls) by default; PyTorch's default stays an option."""

from __future__ import annotations

import pytest
import torch

from stability.model import VisionTransformer, ViTConfig


def _stem(init: str) -> torch.nn.Module:
    torch.manual_seed(0)
    cfg = ViTConfig(stem="conv", img_size=32, patch_size=4, in_chans=3, embed_dim=64, conv_stem_init=init)
    return VisionTransformer(cfg).patch_embed


def test_pycls_init_is_the_default_and_has_the_papers_scales() -> None:
    assert ViTConfig().conv_stem_init == "pycls"
    stem = _stem("pycls")
    convs = [m for m in stem.stem if isinstance(m, torch.nn.Conv2d)]
    assert [c.out_channels for c in convs] == [32, 64]
    for conv in convs:  # N(0, sqrt(2 / out_channels)), within sampling error
        assert conv.weight.std().item() == pytest.approx((2 / conv.out_channels) ** 0.5, rel=0.1)
    assert stem.proj.weight.std().item() == pytest.approx((1 / 64) ** 0.5, rel=0.1)
    assert torch.equal(stem.proj.bias, torch.zeros(64))


def test_the_init_sets_the_token_scale() -> None:
    x = torch.randn(64, 3, 32, 32)
    pycls, pytorch = (_stem(init).train()(x).std().item() for init in ("pycls", "pytorch"))
    assert pycls == pytest.approx(0.7, abs=0.1) and pytorch == pytest.approx(0.4, abs=0.1)
