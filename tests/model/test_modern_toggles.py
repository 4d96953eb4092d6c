"""The field's current tricks as built-in toggle values: what each value builds, its config fields, its Lipschitz
bound, and the MinMax activation's fast form (same outputs, same constant)."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from stability.errors import ConfigError
from stability.model import VisionTransformer, ViTConfig
from stability.model.dyt import DyT
from stability.model.heads import LLNHead
from stability.model.layerscale import LayerScale, ReZero
from stability.model.lipschitz import LipschitzBound, lower_bound
from stability.model.lipschitz.bounds import ACTIVATION_LIPSCHITZ, GELU_LIPSCHITZ
from stability.model.lipschitz.constants import applied_weight
from stability.model.mlp import MinMax
from stability.model.peri_ln import PeriNormBlock
from stability.model.sigma_reparam import SigmaReparamConv2d, SigmaReparamLinear, sigma_reparam_layers
from stability.model.softcap import SoftcapAttention

TINY = dict(img_size=8, patch_size=2, in_chans=1, num_classes=5, embed_dim=16, depth=2, num_heads=2, mlp_ratio=2.0)
# a model with a global bound except for the part a test changes (centernorm, LipsFormer's paper attention)
BOUNDED = dict(TINY, norm="centernorm", attention="cosine_paper")


def converge(model: nn.Module, steps: int = 60) -> None:
    """Training-mode forwards without gradients: each sigma-Reparam layer's power iteration converges."""
    model.train()
    images = torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        for _ in range(steps):
            model(images)
    model.eval()


# ---------------------------------------------------------------------------------------- what each builds
@pytest.mark.parametrize(("settings", "where", "cls"), [
    ({"norm": "dyt", "dyt_alpha_init": 0.2}, "norm1", DyT),
    ({"attention": "softcap", "softcap": 7.0}, "attn", SoftcapAttention),
    ({"residual": "layerscale"}, "ls1", LayerScale),
    ({"residual": "rezero"}, "ls2", ReZero),
    ({"norm_placement": "peri"}, None, PeriNormBlock),
])
def test_each_new_value_builds_its_trick_with_the_config_fields(settings: dict, where: str | None, cls: type) -> None:
    model = VisionTransformer(ViTConfig(**TINY, **settings))
    built = model.blocks[1] if where is None else getattr(model.blocks[1], where)
    assert type(built) is cls
    if cls is DyT:
        assert built.alpha.item() == pytest.approx(0.2) and type(model.norm) is DyT  # the final norm too
    if cls is SoftcapAttention:
        assert built.cap == 7.0
    if cls is LayerScale:
        assert torch.equal(built.gamma, torch.full((16,), 0.1))  # CaiT: 0.1 up to depth 18
    if cls is ReZero:
        assert built.gamma.shape == (1,) and built.gamma.item() == 0.0


def test_sigma_reparam_swaps_every_linear_and_conv_after_the_init_and_keeps_the_function() -> None:
    for init in ("default", "orthogonal"):
        torch.manual_seed(0)
        plain = VisionTransformer(ViTConfig(**TINY, init=init, stem="conv")).eval()
        torch.manual_seed(0)
        sigma = VisionTransformer(ViTConfig(**TINY, init=init, stem="conv", reparam="sigma")).eval()
        assert not any(type(m) in (nn.Linear, nn.Conv2d) for m in sigma.modules())
        layers = sigma_reparam_layers(sigma)
        # + the head: a plain Linear head is swapped too, as the official converter does
        assert len(layers) == sum(type(m) in (nn.Linear, nn.Conv2d) for m in plain.modules()) + 1
        assert isinstance(sigma.head, SigmaReparamLinear)
        assert any(isinstance(m, SigmaReparamConv2d) for m in layers)
        for layer in layers:  # gamma = sigma(W) of the initialised weight: W_hat = W
            w = layer.weight.detach().reshape(layer.weight.shape[0], -1)
            assert layer.gamma.item() == pytest.approx(torch.linalg.matrix_norm(w, 2).item(), rel=1e-5)
        images = torch.randn(3, 1, 8, 8)
        torch.testing.assert_close(sigma(images), plain(images), rtol=1e-4, atol=1e-5)
    lln = VisionTransformer(ViTConfig(**TINY, head="lln", reparam="sigma"))
    assert type(lln.head) is LLNHead  # its unit rows would undo gamma / sigma: left alone
    names = {n for n, _ in sigma.named_parameters()}
    buffers = {n for n, _ in sigma.named_buffers()}
    assert "blocks.0.mlp.fc1.gamma" in names and "blocks.0.mlp.fc1.u" in buffers and "blocks.0.mlp.fc1.v" in buffers


@pytest.mark.parametrize(("key", "value", "what"), [
    ("softcap", 0.0, "a positive number"), ("softcap", -3.0, "a positive number"),
    ("softcap", float("inf"), "a positive number"), ("softcap", "50", "a positive number"),
    ("softcap", True, "a positive number"), ("dyt_alpha_init", float("nan"), "a finite number"),
    ("dyt_alpha_init", None, "a finite number"), ("reparam", "spectral", "valid values: none, sigma"),
])
def test_bad_new_config_values_are_one_line(key: str, value: object, what: str) -> None:
    with pytest.raises(ConfigError) as err:
        ViTConfig(**{key: value})
    assert key in str(err.value) and what in str(err.value) and "\n" not in str(err.value)


def test_new_config_fields_accept_what_their_papers_use() -> None:
    cfg = ViTConfig(softcap=30, dyt_alpha_init=-0.1)
    assert cfg.softcap == 30 and cfg.dyt_alpha_init == -0.1
    assert dataclasses.asdict(ViTConfig())["reparam"] == "none"


# ------------------------------------------------------------------------------------------- Lipschitz
def test_the_walker_bounds_a_sigma_reparam_layer_by_abs_gamma_once_converged() -> None:
    torch.manual_seed(0)
    model = VisionTransformer(ViTConfig(**BOUNDED, reparam="sigma"))
    fc1, fc2 = model.blocks[0].mlp.fc1, model.blocks[0].mlp.fc2
    with torch.no_grad():  # gammas away from sigma(W): the bound must follow gamma, not the raw weight
        fc1.gamma.fill_(-0.7)
        fc2.gamma.fill_(1.9)
        model.head.gamma.fill_(2.5)
        model.patch_embed.proj.gamma.fill_(0.4)
    converge(model)
    walker = LipschitzBound(model)
    assert walker.linear_norm("fc1", applied_weight(fc1), 200, False).item() == pytest.approx(0.7, rel=1e-4)
    bounds = walker.compute(iters=200)
    floats = bounds.as_floats()
    assert floats["blocks.0.mlp"] == pytest.approx(1.9 * GELU_LIPSCHITZ * 0.7, rel=1e-4)
    assert floats["patch_embed"] == pytest.approx(0.4, rel=1e-4)  # patchify: non-overlapping, exactly |gamma|
    assert floats["head"] == pytest.approx(2.5, rel=1e-4)
    raw = torch.linalg.matrix_norm(fc1.weight.detach(), 2).item()
    assert abs(raw - 0.7) > 0.1  # the raw weight's norm is another number: the walker did not read it


def test_a_sigma_reparam_models_upper_bound_is_above_its_empirical_lower_bound() -> None:
    torch.manual_seed(0)
    model = VisionTransformer(ViTConfig(**BOUNDED, reparam="sigma", residual="layerscale", residual_init=0.5))
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for layer in sigma_reparam_layers(model):
            layer.gamma.mul_(1 + torch.rand((), generator=g))
    converge(model, steps=5)  # not fully converged: the bound reads the weight the forward applies anyway
    bounds = LipschitzBound(model).compute(iters=100)
    assert bounds.network is not None and bounds.unbounded_text() is None
    lower = lower_bound(model, torch.rand(8, 1, 8, 8, generator=g), steps=5)
    assert 0 < lower <= float(bounds.network) * (1 + 1e-4)


def test_dyt_makes_the_norms_bounded_by_abs_alpha_max_abs_gamma() -> None:
    torch.manual_seed(0)
    model = VisionTransformer(ViTConfig(**dict(BOUNDED, norm="dyt"))).eval()
    with torch.no_grad():
        model.blocks[1].norm2.alpha.fill_(-1.5)
        model.blocks[1].norm2.weight[3] = 2.0
    bounds = LipschitzBound(model).compute(iters=50)
    assert bounds.network is not None  # DyT has a global bound, unlike LayerNorm
    assert bounds.as_floats()["blocks.1.norm2"] == pytest.approx(3.0)
    assert bounds.as_floats()["blocks.0.norm1"] == pytest.approx(0.5)  # alpha_0 = 0.5, gamma = 1


def test_peri_ln_multiplies_its_output_norms_into_each_branch() -> None:
    torch.manual_seed(0)
    model = VisionTransformer(ViTConfig(**BOUNDED, norm_placement="peri")).eval()
    g = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=g))
    f = LipschitzBound(model).compute(iters=200).as_floats()
    for i in range(2):
        b = f"blocks.{i}"
        first = 1 + f[f"{b}.post_norm1"] * f[f"{b}.attn"] * f[f"{b}.norm1"]
        second = 1 + f[f"{b}.post_norm2"] * f[f"{b}.mlp"] * f[f"{b}.norm2"]
        assert f[f"{b}.post_norm1"] > 0 and f[f"{b}.post_norm1"] != pytest.approx(1.0)
        assert f[b] == pytest.approx(first * second, rel=1e-5)


def test_rezero_blocks_start_as_the_identity_and_layerscale_scales_each_branch() -> None:
    rezero = VisionTransformer(ViTConfig(**BOUNDED, residual="rezero")).eval()
    f = LipschitzBound(rezero).compute(iters=30).as_floats()
    assert f["blocks.0"] == 1.0 and f["blocks.1"] == 1.0  # alpha = 0: x + 0 * f(x)
    torch.manual_seed(0)
    scaled = VisionTransformer(ViTConfig(**BOUNDED, residual="layerscale")).eval()
    with torch.no_grad():
        scaled.blocks[0].ls2.gamma[5] = -0.8
    f = LipschitzBound(scaled).compute(iters=200).as_floats()
    first = 1 + 0.1 * f["blocks.0.attn"] * f["blocks.0.norm1"]
    assert f["blocks.0"] == pytest.approx(first * (1 + 0.8 * f["blocks.0.mlp"] * f["blocks.0.norm2"]), rel=1e-5)


def test_softcap_attention_is_reported_unbounded_with_its_reason() -> None:
    model = VisionTransformer(ViTConfig(**dict(BOUNDED, attention="softcap"))).eval()
    bounds = LipschitzBound(model).compute(iters=5)
    assert bounds.network is None
    text = bounds.unbounded_text()
    assert text is not None and text.startswith("blocks.0.attn, blocks.1.attn: soft-capping bounds the logits")
    assert "(attention='softcap')" in text


# ---------------------------------------------------------------------------------------------- MinMax
def minmax_reference(x: torch.Tensor) -> torch.Tensor:
    """The activation as it was written before: torch.maximum / torch.minimum of the halves, concatenated."""
    a, b = x.chunk(2, dim=-1)
    return torch.cat([torch.maximum(a, b), torch.minimum(a, b)], dim=-1)


def test_minmax_is_bit_identical_to_its_definition_and_keeps_the_gradient() -> None:
    x = torch.randn(4, 9, 32, generator=torch.Generator().manual_seed(0))
    grad = torch.randn(4, 9, 32, generator=torch.Generator().manual_seed(1))
    ours, ref = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    out = MinMax()(ours)
    assert torch.equal(out, minmax_reference(ref))  # same bits
    out.backward(grad)
    minmax_reference(ref).backward(grad)
    assert torch.equal(ours.grad, ref.grad)  # no ties in random data: the same gradient too
    assert ours.grad.norm().item() == pytest.approx(grad.norm().item(), rel=1e-6)  # a permutation of grad
    with torch.no_grad():  # no gradient wanted: the same output
        assert torch.equal(MinMax()(x), out.detach())
    strided = x.transpose(0, 1)  # a non-contiguous input
    assert torch.equal(MinMax()(strided), minmax_reference(strided))


def test_minmax_is_1_lipschitz_and_sends_a_tied_pairs_gradient_to_one_input() -> None:
    assert ACTIVATION_LIPSCHITZ[MinMax] == 1.0
    g = torch.Generator().manual_seed(3)
    x, y = torch.randn(2000, 8, generator=g), torch.randn(2000, 8, generator=g)
    ratio = (MinMax()(x) - MinMax()(y)).norm(dim=1) / (x - y).norm(dim=1)
    assert ratio.max().item() <= 1 + 1e-6
    tied = torch.tensor([[1.0, -2.0, 1.0, 3.0]], requires_grad=True)  # pairs (1, 1) and (-2, 3)
    MinMax()(tied).backward(torch.tensor([[10.0, 20.0, 30.0, 40.0]]))
    assert tied.grad.tolist() == [[10.0, 40.0, 30.0, 20.0]]


def test_minmax_can_be_differentiated_twice() -> None:
    """The local Lipschitz estimates differentiate the backward (J v by double backward)."""
    x = torch.randn(3, 6, requires_grad=True)
    u = torch.zeros(3, 6, requires_grad=True)
    (jt_u,) = torch.autograd.grad(MinMax()(x), x, u, create_graph=True)
    v = torch.randn(3, 6)
    (jv,) = torch.autograd.grad(jt_u, u, v)
    (ref,) = torch.autograd.functional.jvp(minmax_reference, x.detach(), v)[1:]
    torch.testing.assert_close(jv, ref)
    assert F.mse_loss(jv, ref).item() == 0.0


@pytest.mark.parametrize("layer", [SigmaReparamLinear(6, 5), SigmaReparamConv2d(2, 3, kernel_size=3, padding=1)],
                         ids=["linear", "conv"])
def test_the_forwards_fused_sigma_reparam_node_has_the_gradient_of_its_formula(layer: nn.Module) -> None:
    """The training forward's W_hat (one autograd node, its gradient written out) against the same formula left
    to autograd (effective_weight): same values, same gradients for W and gamma."""
    torch.manual_seed(0)
    with torch.no_grad():
        layer.weight.add_(0.3 * torch.randn_like(layer.weight))  # W moved since u: not a converged estimate
        layer.gamma.fill_(-1.3)
    layer.eval()  # neither path stores anything
    fused = layer._weight_hat()
    plain = layer.effective_weight()
    torch.testing.assert_close(fused, plain, rtol=1e-6, atol=1e-7)  # the same formula, rounded alike
    probe = torch.randn(fused.shape, generator=torch.Generator().manual_seed(1))
    grads_fused = torch.autograd.grad((fused * probe).sum().sin(), (layer.weight, layer.gamma))
    grads_plain = torch.autograd.grad((plain * probe).sum().sin(), (layer.weight, layer.gamma))
    for a, b in zip(grads_fused, grads_plain):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    assert grads_fused[1].abs().item() > 0
