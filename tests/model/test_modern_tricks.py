"""The field's current stability tricks, each checked against its paper's formula on fixed tensors:
sigma-Reparam, DyT, attention-logit soft-capping, LayerScale / ReZero presets and the Peri-LN block."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from stability.errors import ConfigError
from stability.model import VisionTransformer, ViTConfig
from stability.model.attention import Attention
from stability.model.dyt import DyT
from stability.model.layerscale import LayerScale, ReZero, layerscale_init
from stability.model.norms import is_norm_layer
from stability.model.peri_ln import PeriNormBlock
from stability.model.sigma_reparam import (
    SigmaReparamConv2d,
    SigmaReparamLinear,
    apply_sigma_reparam,
    sigma_reparam_init,
    sigma_reparam_layers,
)
from stability.model.softcap import SoftcapAttention, softcap


def spectrum_matrix(out: int, inp: int, singular: list[float], seed: int = 0) -> torch.Tensor:
    """A fixed (out, inp) matrix with the given singular values (orthonormal factors from a seeded QR)."""
    g = torch.Generator().manual_seed(seed)
    left, _ = torch.linalg.qr(torch.randn(out, out, generator=g))
    right, _ = torch.linalg.qr(torch.randn(inp, inp, generator=g))
    k = len(singular)
    return left[:, :k] @ torch.diag(torch.tensor(singular)) @ right[:, :k].T


def train_steps(layer: nn.Module, x: torch.Tensor, n: int) -> None:
    layer.train()
    with torch.no_grad():
        for _ in range(n):
            layer(x)


# ------------------------------------------------------------------------------------------ sigma-Reparam
def test_sigma_reparam_forward_is_gamma_over_sigma_times_w() -> None:
    w = spectrum_matrix(6, 5, [3.0, 1.5, 0.5])
    layer = SigmaReparamLinear(5, 6)
    with torch.no_grad():
        layer.weight.copy_(w)
        layer.bias.copy_(torch.arange(6.0))
    layer.reset_sigma()
    assert layer.gamma.item() == pytest.approx(3.0, rel=1e-5)  # official init: gamma = sigma(W_0), so W_hat = W
    with torch.no_grad():
        layer.gamma.fill_(0.7)
    x = torch.randn(4, 5, generator=torch.Generator().manual_seed(1))
    train_steps(layer, x, 20)
    sigma = torch.linalg.matrix_norm(w, 2)
    expected = x @ (0.7 / sigma * w).T + torch.arange(6.0)
    torch.testing.assert_close(layer(x), expected, rtol=1e-5, atol=1e-5)
    assert layer.sigma.item() == pytest.approx(sigma.item(), rel=1e-5)


def test_power_iteration_converges_to_the_largest_singular_value() -> None:
    w = spectrum_matrix(8, 7, [2.0, 1.6, 0.3, 0.1])
    layer = SigmaReparamLinear(7, 8, bias=False)
    with torch.no_grad():
        layer.weight.copy_(w)
    layer.reset_sigma()
    with torch.no_grad():  # a poor start: a vector far from the top singular vector
        layer.u.copy_(F.normalize(torch.ones(7), dim=0))
    x = torch.randn(2, 7)
    estimates = []
    for _ in range(60):
        train_steps(layer, x, 1)
        estimates.append(layer.sigma.item())
    assert estimates[0] < 2.0 - 1e-3  # a Rayleigh quotient: below sigma_max until converged
    assert all(e <= 2.0 + 1e-5 for e in estimates)
    assert estimates[-1] == pytest.approx(torch.linalg.matrix_norm(w, 2).item(), rel=1e-5)


def test_sigma_reparam_gradients_reach_w_and_gamma_but_not_u() -> None:
    layer = SigmaReparamLinear(5, 4)
    x = torch.randn(3, 5)
    layer(x).square().sum().backward()
    assert layer.weight.grad is not None and layer.weight.grad.abs().sum() > 0
    assert layer.gamma.grad is not None and layer.gamma.grad.abs() > 0
    assert not layer.u.requires_grad and not layer.v.requires_grad
    assert {n for n, _ in layer.named_parameters()} == {"weight", "bias", "gamma"}


def test_sigma_reparam_eval_does_not_update_u() -> None:
    layer = SigmaReparamLinear(5, 4)
    with torch.no_grad():
        layer.u.copy_(F.normalize(torch.ones(5), dim=0))
        layer.weight.add_(0.5)  # W moved since u was computed
    before = (layer.u.clone(), layer.v.clone(), layer.sigma.clone())
    layer.eval()
    x = torch.randn(3, 5)
    first = layer(x)
    for buffer, old in zip((layer.u, layer.v, layer.sigma), before):
        assert torch.equal(buffer, old)
    torch.testing.assert_close(layer(x), first, rtol=0, atol=0)  # eval is a pure function of (W, u)
    layer.train()
    layer(x)
    assert not torch.equal(layer.u, before[0])  # a training forward does move it


def test_sigma_reparam_lipschitz_constant_is_abs_gamma_and_bounds_the_layer() -> None:
    w = spectrum_matrix(6, 6, [2.5, 2.0, 1.0])
    layer = SigmaReparamLinear(6, 6)
    with torch.no_grad():
        layer.weight.copy_(w)
        layer.u.copy_(F.normalize(torch.ones(6), dim=0))
        layer.gamma.fill_(-1.7)
    assert torch.equal(layer.lipschitz_constant(), layer.gamma.abs())
    train_steps(layer, torch.randn(1, 6), 80)
    layer.eval()
    g = torch.Generator().manual_seed(3)
    x, y = torch.randn(500, 6, generator=g), torch.randn(500, 6, generator=g)
    with torch.no_grad():
        ratio = (layer(x) - layer(y)).norm(dim=-1) / (x - y).norm(dim=-1)
        w_hat = layer.effective_weight()
    lip = layer.lipschitz_constant().item()
    assert lip == pytest.approx(1.7)
    assert ratio.max().item() <= lip * (1 + 1e-5)
    assert ratio.max().item() > 0.8 * lip  # the bound is tight, not vacuous
    assert torch.linalg.matrix_norm(w_hat, 2).item() == pytest.approx(lip, rel=1e-5)


def test_sigma_reparam_conv_matches_the_reshaped_kernel_and_its_bound() -> None:
    conv = nn.Conv2d(2, 4, kernel_size=2, stride=2)  # patchify: patches do not overlap
    sn = SigmaReparamConv2d.from_conv(conv)
    x = torch.randn(3, 2, 6, 6)
    torch.testing.assert_close(sn(x), conv(x), rtol=1e-5, atol=1e-6)  # gamma = sigma(W_0): unchanged at init
    with torch.no_grad():
        sn.gamma.fill_(0.5)
    sigma = torch.linalg.matrix_norm(conv.weight.reshape(4, -1), 2)
    torch.testing.assert_close(sn(x), F.conv2d(x, 0.5 / sigma * conv.weight, conv.bias, stride=2),
                               rtol=1e-5, atol=1e-6)
    assert sn.overlap() == 1 and sn.lipschitz_constant().item() == pytest.approx(0.5)
    y = torch.randn(3, 2, 6, 6)
    with torch.no_grad():
        ratio = ((sn(x) - sn(y)).flatten(1).norm(dim=1) / (x - y).flatten(1).norm(dim=1)).max()
    assert ratio.item() <= 0.5 * (1 + 1e-5)
    overlapping = SigmaReparamConv2d(2, 4, kernel_size=3, stride=2, padding=1)
    assert overlapping.overlap() == 4  # ceil(3 / 2) = 2 patches per axis share a pixel
    assert overlapping.lipschitz_constant().item() == pytest.approx(overlapping.gamma.abs().item() * 2)


def test_apply_sigma_reparam_swaps_every_linear_and_conv_keeping_the_function() -> None:
    torch.manual_seed(0)
    model = VisionTransformer(ViTConfig(embed_dim=16, depth=2, num_heads=2)).eval()
    images = torch.randn(2, 1, 8, 8)
    before = model(images)
    n_linear = sum(type(m) is nn.Linear for m in model.modules())
    apply_sigma_reparam(model)
    layers = sigma_reparam_layers(model)
    assert len(layers) == n_linear + 1  # + the patchify conv
    assert not any(type(m) in (nn.Linear, nn.Conv2d) for m in model.modules())
    torch.testing.assert_close(model(images), before, rtol=1e-4, atol=1e-5)
    assert isinstance(model.patch_embed.proj, SigmaReparamConv2d)
    model.train()
    model(images).sum().backward()
    assert all(layer.gamma.grad is not None for layer in layers)


def test_sigma_reparam_init_redraws_weights_at_std_0_02() -> None:
    torch.manual_seed(0)
    model = VisionTransformer(ViTConfig(embed_dim=32, depth=1, num_heads=2, init="orthogonal"))  # std ~ 0.09
    sigma_reparam_init(model)
    fc1, proj = model.blocks[0].mlp.fc1, model.patch_embed.proj
    assert isinstance(fc1, SigmaReparamLinear) and isinstance(proj, SigmaReparamConv2d)
    assert fc1.weight.std().item() == pytest.approx(0.02, rel=0.1)  # timm's cut-offs are +-2 absolute: ~no cut
    assert proj.weight.std().item() == pytest.approx(0.02, rel=0.2)
    assert fc1.gamma.item() == pytest.approx(torch.linalg.matrix_norm(fc1.weight.detach(), 2).item(), rel=1e-5)


# --------------------------------------------------------------------------------------------------- DyT
def test_dyt_is_gamma_tanh_alpha_x_plus_beta() -> None:
    norm = DyT(ViTConfig(embed_dim=4, num_heads=2))
    assert norm.alpha.shape == (1,) and norm.alpha.item() == 0.5  # official alpha_init_value for ViT
    assert torch.equal(norm.weight, torch.ones(4)) and torch.equal(norm.bias, torch.zeros(4))
    assert is_norm_layer(norm)
    with torch.no_grad():
        norm.alpha.fill_(0.8)
        norm.weight.copy_(torch.tensor([1.0, -2.0, 0.5, 3.0]))
        norm.bias.copy_(torch.tensor([0.1, 0.2, -0.3, 0.0]))
    x = torch.tensor([[[-3.0, 0.0, 1.0, 10.0]], [[0.5, -0.5, 2.0, -10.0]]])  # (2, 1, 4)
    gamma, beta = norm.weight.detach(), norm.bias.detach()
    expected = gamma * torch.tanh(0.8 * x) + beta
    torch.testing.assert_close(norm(x), expected)
    assert norm(x)[0, 0, 1].item() == pytest.approx(0.2)  # tanh(0) = 0: beta alone
    assert norm.lipschitz() == pytest.approx(0.8 * 3.0)


def test_dyt_reads_alpha_from_the_config_and_trains_every_parameter() -> None:
    norm = DyT.plain(3, alpha_init=0.2)
    assert norm.alpha.item() == pytest.approx(0.2)
    norm(torch.randn(2, 5, 3)).square().sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in norm.parameters())


# ----------------------------------------------------------------------------------------------- softcap
def test_softcap_is_c_tanh_l_over_c_and_stays_below_c() -> None:
    logits = torch.tensor([-1000.0, -60.0, -5.0, 0.0, 0.3, 49.0, 50.0, 1e6])
    capped = softcap(logits, 50.0)
    torch.testing.assert_close(capped, 50.0 * torch.tanh(logits / 50.0))
    assert capped.abs().max().item() <= 50.0
    # strictly below the cap (float32 tanh rounds to 1 only past |l / c| ~ 9: the two extreme logits)
    assert (capped[1:-1].abs() < 50.0).all()
    assert capped[4].item() == pytest.approx(0.3, rel=1e-4)  # ~identity for |l| << c


def test_softcap_attention_equals_dot_attention_when_the_cap_is_huge() -> None:
    torch.manual_seed(0)
    dot = Attention(8, 2)
    capped = SoftcapAttention.plain(8, 2, cap=1e6)
    capped.load_state_dict(dot.state_dict())  # same parameter names
    x = torch.randn(3, 5, 8)
    torch.testing.assert_close(capped(x), dot(x), rtol=1e-5, atol=1e-6)


def test_softcap_attention_caps_the_logits_and_records_the_raw_max() -> None:
    torch.manual_seed(0)
    attn = SoftcapAttention(ViTConfig(embed_dim=8, num_heads=2))
    assert attn.cap == 50.0  # Gemma 2's value, the default without a config field
    attn = SoftcapAttention.plain(8, 2, cap=2.0)
    with torch.no_grad():
        attn.qkv.weight.mul_(40.0)  # logits far above the cap
    x = torch.randn(2, 6, 8)
    attn.set_stats_recording(True)
    out = attn(x)
    q, k, v = attn.qkv(x).reshape(2, 6, 3, 2, 4).permute(2, 0, 3, 1, 4)  # each (B, H, N, d)
    raw = q @ k.transpose(-2, -1) / 2.0  # 1/sqrt(d), d = 4
    expected = attn.proj(((2.0 * torch.tanh(raw / 2.0)).softmax(-1) @ v).transpose(1, 2).reshape(2, 6, 8))
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)
    stats = attn.stats()
    assert stats["max_logit"] == pytest.approx(raw.max().item(), rel=1e-5)  # raw, before the cap
    assert stats["max_logit"] > 2.0 >= stats["max_logit_capped"]
    assert 0.0 <= stats["entropy"] <= math.log(6)
    with pytest.raises(ConfigError, match="softcap"):
        SoftcapAttention.plain(8, 2, cap=0.0)


# ------------------------------------------------------------------------------------ LayerScale, ReZero
@pytest.mark.parametrize(("depth", "eps"), [(1, 0.1), (12, 0.1), (18, 0.1), (19, 1e-5), (24, 1e-5),
                                            (25, 1e-6), (36, 1e-6), (48, 1e-6)])
def test_layerscale_init_follows_the_cait_table(depth: int, eps: float) -> None:
    assert layerscale_init(depth) == eps


def test_layerscale_and_rezero_presets() -> None:
    ls = LayerScale(ViTConfig(embed_dim=8, depth=24, num_heads=2))
    assert ls.gamma.shape == (8,) and torch.equal(ls.gamma, torch.full((8,), 1e-5))
    assert LayerScale(ViTConfig(embed_dim=8, depth=6, num_heads=2)).gamma[0].item() == pytest.approx(0.1)
    assert LayerScale(ViTConfig(embed_dim=8, num_heads=2, residual_init=0.3)).gamma[0].item() == pytest.approx(0.3)
    x = torch.randn(2, 3, 8)
    torch.testing.assert_close(ls(x), x * 1e-5)
    rz = ReZero(ViTConfig(embed_dim=8, num_heads=2))
    assert rz.gamma.shape == (1,) and rz.gamma.item() == 0.0  # one scalar, the identity block at init
    assert torch.equal(rz(x), torch.zeros_like(x))
    rz(x).sum().backward()
    assert rz.gamma.grad is not None and rz.gamma.grad.item() == pytest.approx(x.sum().item(), rel=1e-5)
    assert ReZero.plain(0.25)(x).sub(0.25 * x).abs().max() == 0
    with pytest.raises(ConfigError, match="depth"):
        layerscale_init(0)


# ------------------------------------------------------------------------------------------------ Peri-LN
def test_peri_ln_block_is_x_plus_norm_out_of_f_of_norm_in() -> None:
    torch.manual_seed(0)
    cfg = ViTConfig(embed_dim=8, num_heads=2, residual="weighted", residual_init=0.5)
    block = PeriNormBlock(cfg).eval()
    names = {n for n, _ in block.named_parameters()}
    assert {"norm1.weight", "attn.qkv.weight", "ls1.gamma", "norm2.weight", "mlp.fc1.weight",
            "post_norm1.weight", "post_norm1.bias", "post_norm2.weight"} <= names
    assert block.post_norm1 is not block.norm1 and type(block.post_norm1) is type(block.norm1)
    with torch.no_grad():  # distinct affine parameters, so a swapped norm would show
        for i, p in enumerate(block.parameters()):
            p.add_(0.01 * (i + 1) * torch.randn_like(p))
    x = torch.randn(2, 5, 8)
    out, pe = block(x, None)
    b = block
    h = x + b.ls1(b.post_norm1(b.attn(b.norm1(x))))
    expected = h + b.ls2(b.post_norm2(b.mlp(b.norm2(h))))
    torch.testing.assert_close(out, expected)
    assert pe is None
    ln = F.layer_norm  # and the output norm is a real LayerNorm of the branch output
    branch = b.attn(b.norm1(x))
    torch.testing.assert_close(b.post_norm1(branch), ln(branch, (8,), b.post_norm1.weight, b.post_norm1.bias, 1e-6))


def test_peri_ln_block_takes_the_norm_toggles_norm_and_builds_a_model() -> None:
    cfg = ViTConfig(embed_dim=8, depth=2, num_heads=2, norm="rmsnorm")
    block = PeriNormBlock(cfg, drop_path=0.1)
    assert isinstance(block.post_norm2, nn.RMSNorm) and is_norm_layer(block.post_norm2)
    model = VisionTransformer(ViTConfig(embed_dim=8, depth=2, num_heads=2))
    model.blocks = nn.ModuleList([PeriNormBlock(model.cfg) for _ in range(2)])
    model(torch.randn(2, 1, 8, 8)).sum().backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


# ------------------------------------------------------------------ through the registry, by class path
@pytest.mark.parametrize(("key", "value", "where"), [
    ("norm", "stability.model.dyt.DyT", "norm1"),
    ("attention", "stability.model.softcap.SoftcapAttention", "attn"),
    ("residual", "stability.model.layerscale.LayerScale", "ls1"),
    ("residual", "stability.model.layerscale.ReZero", "ls2"),
    ("norm_placement", "stability.model.peri_ln.PeriNormBlock", None),
])
def test_each_trick_builds_a_model_from_its_class_path(key: str, value: str, where: str | None) -> None:
    torch.manual_seed(0)
    model = VisionTransformer(ViTConfig(embed_dim=16, depth=2, num_heads=2, **{key: value}))
    block = model.blocks[0]
    built = block if where is None else getattr(block, where)
    assert f"{type(built).__module__}.{type(built).__name__}" == value
    logits = model(torch.randn(4, 1, 8, 8))
    assert logits.shape == (4, 10) and torch.isfinite(logits).all()
    logits.logsumexp(-1).sum().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    # ReZero's alpha = 0 stops the gradient into the branch's own weights at init, by design
    assert not missing or value.endswith("ReZero")
