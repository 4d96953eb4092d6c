"""Each component against its formula, computed independently here (plain tensor algebra, no model code)."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
import torch.nn.functional as F

from stability.model import MODEL_TOGGLES, VisionTransformer, ViTConfig, registry
from stability.model.attention import CosineAttention
from stability.model.init import spectral_init
from stability.model.norms import CenterNorm, RMSNorm
from stability.model.position import sincos_2d_table

SMALL = dict(img_size=8, patch_size=2, in_chans=1, num_classes=5, embed_dim=32, depth=3, num_heads=4)


def randomise_(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Give every parameter (norm gains and biases too) a random value, so no identity hides a mistake."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(p + 0.3 * torch.randn(p.shape, generator=g))
    return model


def explicit_attention(h: torch.Tensor, attn: torch.nn.Module, kind: str = "dot", tau: float = 10.0):
    """softmax(s q k^T) v from the raw weights: no SDPA, no module forward."""
    B, N, D = h.shape
    H = attn.num_heads
    d = D // H
    q, k, v = (h @ attn.qkv.weight.T + attn.qkv.bias).reshape(B, N, 3, H, d).permute(2, 0, 3, 1, 4)
    if kind == "cosine":
        q, k = (t / torch.sqrt((t * t).sum(-1, keepdim=True) + 1e-6) for t in (q, k))
        logits = tau * q @ k.transpose(-1, -2)
    else:
        logits = q @ k.transpose(-1, -2) / math.sqrt(d)
    out = (logits.softmax(-1) @ v).transpose(1, 2).reshape(B, N, D)
    return out @ attn.proj.weight.T + attn.proj.bias, logits


def explicit_mlp(h: torch.Tensor, mlp: torch.nn.Module) -> torch.Tensor:
    return F.gelu(h @ mlp.fc1.weight.T + mlp.fc1.bias) @ mlp.fc2.weight.T + mlp.fc2.bias


def layer_norm(x: torch.Tensor, norm: torch.nn.Module, eps: float = 1e-6) -> torch.Tensor:
    mu = x.mean(-1, keepdim=True)
    var = ((x - mu) ** 2).mean(-1, keepdim=True)
    return (x - mu) / torch.sqrt(var + eps) * norm.weight + norm.bias


def center_norm(x: torch.Tensor, norm: torch.nn.Module) -> torch.Tensor:
    D = x.shape[-1]
    return norm.weight * D / (D - 1) * (x - x.mean(-1, keepdim=True)) + norm.bias


def rms_norm(x: torch.Tensor, norm: torch.nn.Module, eps: float = 1e-6) -> torch.Tensor:
    """Zhang & Sennrich 2019, Eq. 4: x / RMS(x) * g, RMS(x) = sqrt(mean(x^2) + eps)."""
    return x / torch.sqrt((x * x).mean(-1, keepdim=True) + eps) * norm.weight


def dyt(x: torch.Tensor, norm: torch.nn.Module) -> torch.Tensor:
    """Zhu et al. 2025, DyT: gamma * tanh(alpha x) + beta, alpha a scalar."""
    return norm.weight * torch.tanh(norm.alpha * x) + norm.bias


# reference formula of every value of the norm toggle
NORM_FORMULAS = {"layernorm": layer_norm, "centernorm": center_norm, "rmsnorm": rms_norm, "dyt": dyt}


def test_every_norm_has_a_reference_formula() -> None:
    assert tuple(NORM_FORMULAS) == MODEL_TOGGLES["norm"]


# ---------------------------------------------------------------- CenterNorm
def test_centernorm_formula() -> None:
    D = 12
    cn = randomise_(CenterNorm(D))
    x = torch.randn(3, 5, D) * 4 + 2
    expected = cn.weight * D / (D - 1) * (x - x.mean(-1, keepdim=True)) + cn.bias
    assert torch.allclose(cn(x), expected, atol=1e-6)
    # no division by the standard deviation: CN is affine, CN(c x) - beta = c (CN(x) - beta)
    assert torch.allclose(cn(7 * x) - cn.bias, 7 * (cn(x) - cn.bias), atol=1e-4)
    # and a constant token (zero variance) maps to beta, without any eps
    assert torch.equal(cn(torch.full((D,), 3.0)), cn.bias.detach() + 0 * cn.bias.detach())
    assert cn.lipschitz() == pytest.approx(D / (D - 1) * cn.weight.abs().max().item())


def test_centernorm_replaces_every_token_norm() -> None:
    for pool, final in (("token", "norm"), ("avg", "fc_norm")):
        model = VisionTransformer(ViTConfig(norm="centernorm", attention="qknorm", pos_embed="lape",
                                            global_pool=pool))
        assert isinstance(getattr(model, final), CenterNorm)
        for blk in model.blocks:
            assert isinstance(blk.norm1, CenterNorm) and isinstance(blk.norm2, CenterNorm)
            # LaPE's PE norm and qk-layernorm are LayerNorms by definition
            assert type(blk.pe_norm).__mro__[1] is torch.nn.LayerNorm
            assert type(blk.attn.q_norm) is torch.nn.LayerNorm


# ---------------------------------------------------------------- RMSNorm
def test_rmsnorm_formula_no_centring_no_bias() -> None:
    D = 12
    rms = randomise_(RMSNorm(D))
    assert rms.eps == 1e-6 and [name for name, _ in rms.named_parameters()] == ["weight"]
    x = torch.randn(3, 5, D) * 4 + 2
    assert torch.allclose(rms(x), rms_norm(x, rms), atol=1e-6)
    with torch.no_grad():
        # re-scaling invariant (Zhang & Sennrich 2019, Sec. 4), but not re-centring invariant: no mean removed
        assert torch.allclose(rms(7 * x), rms(x), atol=1e-5)
        assert not torch.allclose(rms(x + 3), rms(x), atol=1e-2)


def test_rmsnorm_replaces_every_token_norm_and_drops_their_biases() -> None:
    for pool, final in (("token", "norm"), ("avg", "fc_norm")):
        model = VisionTransformer(ViTConfig(norm="rmsnorm", global_pool=pool))
        base = VisionTransformer(ViTConfig(global_pool=pool))
        assert isinstance(getattr(model, final), torch.nn.RMSNorm)
        assert all(isinstance(blk.norm1, torch.nn.RMSNorm) and isinstance(blk.norm2, torch.nn.RMSNorm)
                   for blk in model.blocks)
        token_norm_biases = {k for k in base.state_dict() if k.endswith(("norm1.bias", "norm2.bias"))
                             or k == f"{final}.bias"}
        assert len(token_norm_biases) == 2 * len(base.blocks) + 1
        assert list(model.state_dict()) == [k for k in base.state_dict() if k not in token_norm_biases]


# ---------------------------------------------------------------- cosine attention
def test_cosine_attention_formula_bound_and_scale_invariance() -> None:
    torch.manual_seed(0)
    attn = randomise_(CosineAttention(32, num_heads=4, tau=10.0))
    h = torch.randn(2, 9, 32)
    expected, logits = explicit_attention(h, attn, "cosine", tau=10.0)
    with torch.no_grad():
        assert torch.allclose(attn(h), expected, atol=1e-5)
        assert logits.abs().max() <= 10.0

        # logits bounded by tau however large q and k get; output invariant to scaling q or k
        big = CosineAttention(32, num_heads=4, tau=10.0)
        big.load_state_dict(attn.state_dict())
        big.qkv.weight[:32] *= 50.0  # q rows
        big.qkv.bias[:32] *= 50.0
        big.qkv.weight[32:64] *= 0.2  # k rows
        big.qkv.bias[32:64] *= 0.2
        assert torch.allclose(big(h), attn(h), atol=1e-4)
        big.set_stats_recording(True)
        big(h * 1000)
        assert big.stats()["max_logit"] <= 10.0
        big.set_stats_recording(False)  # off, and the last stats forgotten
        assert not big.record_stats and math.isnan(big.stats()["max_logit"])


def test_cosine_tau_is_fixed_and_used() -> None:
    model = VisionTransformer(ViTConfig(attention="cosine", cosine_tau=3.0))
    assert all(blk.attn.scale == 3.0 for blk in model.blocks)
    assert not any("tau" in name or "scale" in name for name, _ in model.named_parameters())


# ---------------------------------------------------------------- LaPE
def test_lape_pe_never_enters_the_residual_stream() -> None:
    """With every attention output zeroed, the PE can act only through the residual stream: the logits
    must then ignore it under LaPE (and depend on it by default, which shows the test can fail)."""
    x = torch.randn(2, 1, 8, 8)
    for mode, pe_matters in (("lape", False), ("default", True)):
        model = randomise_(VisionTransformer(ViTConfig(pos_embed=mode, **SMALL))).eval()
        with torch.no_grad():
            for blk in model.blocks:
                blk.attn.proj.weight.zero_()
                blk.attn.proj.bias.zero_()
            before = model(x)
            model.pos_embed.add_(torch.randn_like(model.pos_embed))
            changed = not torch.allclose(model(x), before, atol=1e-6)
        assert changed == pe_matters, mode


def test_lape_block_zero_sees_tokens_without_pe() -> None:
    model = randomise_(VisionTransformer(ViTConfig(pos_embed="lape", **SMALL))).eval()
    seen = {}
    model.blocks[0].register_forward_pre_hook(lambda m, args: seen.update(x=args[0]))
    x = torch.randn(2, 1, 8, 8)
    with torch.no_grad():
        model(x)
        tokens = model.patch_embed.proj(x).flatten(2).transpose(1, 2)
        expected = torch.cat([model.cls_token.expand(2, -1, -1), tokens], dim=1)
    assert torch.equal(seen["x"], expected)


def test_lape_one_pe_layernorm_per_block() -> None:
    base = VisionTransformer(ViTConfig(**SMALL))
    lape = VisionTransformer(ViTConfig(pos_embed="lape", **SMALL))
    norms = [blk.pe_norm for blk in lape.blocks]
    assert len(norms) == SMALL["depth"] and len({id(n) for n in norms}) == SMALL["depth"]
    assert all(isinstance(n, torch.nn.LayerNorm) and n.eps == 1e-6 for n in norms)
    n_params = sum(p.numel() for p in lape.parameters()) - sum(p.numel() for p in base.parameters())
    assert n_params == 2 * SMALL["embed_dim"] * SMALL["depth"]
    assert not any("pe_norm" in k for k in base.state_dict())


@pytest.mark.parametrize("placement", ["pre", "post"])
def test_lape_pe_is_normalised_progressively(placement: str) -> None:
    """Block l's attention input is N_1(x_l) + pe_l (pre) or x_l + pe_l (post), with
    pe_l = LN_l(LN_{l-1}(... LN_0(pe)))."""
    model = randomise_(VisionTransformer(ViTConfig(pos_embed="lape", norm_placement=placement, **SMALL))).eval()
    block_in, attn_in = [], []
    for blk in model.blocks:
        blk.register_forward_pre_hook(lambda m, args: block_in.append(args[0]))
        blk.attn.register_forward_pre_hook(lambda m, args: attn_in.append(args[0]))
    with torch.no_grad():
        model(torch.randn(2, 1, 8, 8))
        pe = model.pos_embed
        for blk, x, h in zip(model.blocks, block_in, attn_in, strict=True):
            pe = layer_norm(pe, blk.pe_norm)  # independent LayerNorm of the previous block's PE
            tokens = layer_norm(x, blk.norm1) if placement == "pre" else x
            assert torch.allclose(h, tokens + pe, atol=1e-5)


def test_lape_sincos_keeps_the_class_token_without_pe() -> None:
    """sincos has a zero class-token row ("no position"): under LaPE it stays zero in every block, and the
    gradients stay of normal size (a LayerNorm of the constant row would amplify them ~1000x per block)."""
    model = VisionTransformer(ViTConfig(pos_embed="lape", pos_embed_type="sincos"))
    pes = []
    for blk in model.blocks:
        blk.pe_norm.register_forward_hook(lambda m, args, out: pes.append(out[1]))
    x, y = torch.randn(8, 1, 8, 8), torch.randint(0, 10, (8,))
    F.cross_entropy(model(x), y).backward()
    assert all(torch.equal(pe[0, 0], torch.zeros(64)) for pe in pes)
    assert all(pe[0, 1:].std() > 0.5 for pe in pes)
    grad_norm = torch.sqrt(sum((p.grad**2).sum() for p in model.parameters() if p.grad is not None))
    assert grad_norm < 100


def test_sincos_table() -> None:
    grid, dim = 4, 16
    table = sincos_2d_table(grid, dim)
    assert table.shape == (1 + grid * grid, dim)
    assert torch.equal(table[0], torch.zeros(dim))
    r, c = 2, 3  # token at row 2, column 3
    token = table[1 + r * grid + c]
    w = [10000 ** (-2 * j / (dim // 2)) for j in range(dim // 4)]
    expected_x = [f(c * wj) for wj in w for f in (math.sin, math.cos)]
    expected_y = [f(r * wj) for wj in w for f in (math.sin, math.cos)]
    assert torch.allclose(token, torch.tensor(expected_x + expected_y), atol=1e-6)
    model = VisionTransformer(ViTConfig(pos_embed_type="sincos"))
    assert not model.pos_embed.requires_grad
    assert torch.equal(model.pos_embed[0], sincos_2d_table(4, 64))


# ---------------------------------------------------------------- residual and placement
def test_weighted_residual_pre_norm_block_formula() -> None:
    model = randomise_(VisionTransformer(ViTConfig(residual="weighted", **SMALL))).eval()
    blk = model.blocks[1]
    x = torch.randn(2, 17, 32)
    with torch.no_grad():
        a1, a2 = blk.ls1.gamma, blk.ls2.gamma
        y = x + a1 * explicit_attention(layer_norm(x, blk.norm1), blk.attn)[0]
        expected = y + a2 * explicit_mlp(layer_norm(y, blk.norm2), blk.mlp)
        assert torch.allclose(blk(x, None)[0], expected, atol=1e-5)


@pytest.mark.parametrize("norm", MODEL_TOGGLES["norm"])
def test_post_norm_block_formula(norm: str) -> None:
    """LipsFormer code order: x = N_1(x + a_1 Attn(x)); x = N_2(x + a_2 MLP(x))."""
    model = randomise_(VisionTransformer(ViTConfig(norm_placement="post", residual="weighted", norm=norm,
                                                   **SMALL))).eval()
    blk = model.blocks[2]
    n = NORM_FORMULAS[norm]
    x = torch.randn(2, 17, 32)
    with torch.no_grad():
        y = n(x + blk.ls1.gamma * explicit_attention(x, blk.attn)[0], blk.norm1)
        expected = n(y + blk.ls2.gamma * explicit_mlp(y, blk.mlp), blk.norm2)
        assert torch.allclose(blk(x, None)[0], expected, atol=1e-5)


# ---------------------------------------------------------------- spectral init
def test_spectral_init_unit_spectral_norm_everywhere() -> None:
    torch.manual_seed(0)
    model = VisionTransformer(ViTConfig(init="spectral", stem="conv", attention="qknorm", pos_embed="lape",
                                        residual="weighted", img_size=16, patch_size=4))
    n_checked = 0
    for name, m in model.named_modules():
        if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d)):
            w = m.weight.detach().reshape(m.weight.shape[0], -1)
            sigma_max = torch.linalg.svdvals(w)[0].item()
            assert sigma_max == pytest.approx(1.0, abs=1e-5), name
            if isinstance(m, torch.nn.Linear):
                assert torch.equal(m.bias, torch.zeros_like(m.bias)), name
            n_checked += 1
        elif hasattr(m, "weight") and hasattr(m, "bias") and not isinstance(m, torch.nn.Conv2d) \
                and name.split(".")[-1] not in ("ls1", "ls2"):
            if m.weight is not None and m.weight.ndim == 1:  # LayerNorm, CenterNorm, BatchNorm
                assert torch.equal(m.weight, torch.ones_like(m.weight)), name
                assert torch.equal(m.bias, torch.zeros_like(m.bias)), name
    assert n_checked == 2 + 1 + 5 * 4 + 1  # two 3x3 convs, 1x1 proj, 4 Linears per block, head
    # the other parameters keep their own init
    assert torch.allclose(model.blocks[0].ls1.gamma, torch.full((64,), 1 / 5))
    assert 0.01 < model.pos_embed.std().item() < 0.03


def _assert_reset(norm: torch.nn.Module, where: str) -> None:
    """weight 1 and bias 0, for the parameters the norm has."""
    weight, bias = getattr(norm, "weight", None), getattr(norm, "bias", None)
    assert weight is not None, f"{where}: {type(norm).__name__} has no weight"
    assert torch.equal(weight, torch.ones_like(weight)), f"{where}: {type(norm).__name__} weight not reset to 1"
    if bias is not None:
        assert torch.equal(bias, torch.zeros_like(bias)), f"{where}: {type(norm).__name__} bias not reset to 0"


@pytest.mark.parametrize("norm", MODEL_TOGGLES["norm"])
def test_spectral_init_resets_every_norm_the_toggle_builds(norm: str) -> None:
    """Whatever ``NORMS[norm]`` builds is reset by spectral init (weight 1, bias 0 where it has one), alone and
    inside a model, together with the norms inside components (conv-stem BatchNorm, LaPE's and qk-layernorm's
    LayerNorms); other per-channel parameters (the weighted residual's alpha) keep their values. Parameters
    are randomised first, so a norm that spectral init skipped would show."""
    cfg = ViTConfig(norm=norm, stem="conv", attention="qknorm", pos_embed="lape", residual="weighted",
                    img_size=16, patch_size=4, depth=3)
    build = registry.resolve("norm", norm)  # the built-in builder, from whichever file's table holds it
    alone = randomise_(torch.nn.Sequential(build(cfg)))
    spectral_init(alone)
    _assert_reset(alone[0], f"NORMS[{norm!r}] alone")

    for pool, final in (("token", "norm"), ("avg", "fc_norm")):
        cfg = dataclasses.replace(cfg, global_pool=pool)
        model = randomise_(VisionTransformer(cfg))
        alpha = model.blocks[0].ls1.gamma.detach().clone()
        spectral_init(model)
        where = {final: getattr(model, final), "patch_embed.stem.1": model.patch_embed.stem[1]}
        for i, blk in enumerate(model.blocks):
            where |= {f"blocks.{i}.{name}": blk.get_submodule(name)
                      for name in ("norm1", "norm2", "pe_norm", "attn.q_norm", "attn.k_norm")}
        assert isinstance(where[final], type(build(cfg))) and type(where["blocks.0.norm1"]) is type(where[final])
        for name, module in where.items():
            _assert_reset(module, f"norm={norm}, global_pool={pool}: {name}")
        assert torch.equal(model.blocks[0].ls1.gamma, alpha), f"norm={norm}: spectral init changed ls1.gamma"


def test_default_init_is_timms() -> None:
    torch.manual_seed(0)
    model = VisionTransformer(ViTConfig(embed_dim=128, num_heads=4))
    w = model.blocks[0].mlp.fc1.weight
    assert w.std().item() == pytest.approx(0.02, rel=0.05)  # timm: trunc-normal std 0.02 (cut at +-2)
    assert torch.equal(model.blocks[0].attn.qkv.bias, torch.zeros(3 * 128))  # q, k, v biases
    assert model.cls_token.abs().max() < 1e-4
    assert model.pos_embed.std().item() == pytest.approx(0.02, rel=0.1)


# ---------------------------------------------------------------- conv stem
@pytest.mark.parametrize(("img_size", "patch_size", "embed_dim"), [(8, 2, 16), (32, 4, 32), (32, 8, 32), (64, 16, 64)])
def test_conv_stem_token_grid_equals_patchify(img_size: int, patch_size: int, embed_dim: int) -> None:
    dims = dict(img_size=img_size, patch_size=patch_size, in_chans=3, embed_dim=embed_dim, num_heads=2)
    patchify = VisionTransformer(ViTConfig(**dims)).patch_embed
    conv = VisionTransformer(ViTConfig(stem="conv", **dims)).patch_embed
    x = torch.randn(2, 3, img_size, img_size)
    assert conv(x).shape == patchify(x).shape == (2, (img_size // patch_size) ** 2, embed_dim)
    convs = [m for m in conv.stem if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) == int(math.log2(patch_size))
    assert all(c.kernel_size == (3, 3) and c.stride == (2, 2) and c.bias is None for c in convs)
    widths = [c.out_channels for c in convs]
    assert widths[-1] == embed_dim and all(b == 2 * a for a, b in zip(widths, widths[1:]))
    assert [type(m).__name__ for m in conv.stem][:3] == ["Conv2d", "BatchNorm2d", "ReLU"]
    assert conv.proj.kernel_size == (1, 1)


def test_conv_stem_keeps_spatial_layout() -> None:
    """Token i of the conv stem depends only on its own image region's neighbourhood (row-major order,
    like patchify): perturbing the bottom-right corner leaves the top-left token unchanged."""
    conv = VisionTransformer(ViTConfig(stem="conv", img_size=16, patch_size=4)).patch_embed.eval()
    x = torch.randn(1, 1, 16, 16)
    y = x.clone()
    y[..., 12:, 12:] += 1.0
    with torch.no_grad():
        a, b = conv(x), conv(y)
    assert torch.equal(a[0, 0], b[0, 0]) and not torch.equal(a[0, -1], b[0, -1])


def test_l2_normalize_hand_written_backward_is_the_true_gradient() -> None:
    from stability.model.attention import L2Normalize

    norm = L2Normalize(8, eps=1e-3)
    v = torch.randn(3, 5, 8, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(norm, (v,))
    expected = v / torch.sqrt((v * v).sum(-1, keepdim=True) + 1e-3)
    assert torch.allclose(norm(v), expected)
    # near v = 0 the smoothed form stays bounded (F.normalize would return a unit vector)
    tiny = torch.full((8,), 1e-6, dtype=torch.float64)
    assert norm(tiny).norm() < 1e-4


# ---------------------------------------------------------------- LipShiFT's components
def explicit_shift(x: torch.Tensor, grid: int, group: int) -> torch.Tensor:
    """Token (i, j) of group 0 takes (i, j + 1), group 1 (i, j - 1), group 2 (i + 1, j), group 3 (i - 1, j);
    outside the grid: 0; the other channels stay. Loops, row-major tokens."""
    B, N, C = x.shape
    out = x.clone()
    offsets = [(0, 1), (0, -1), (1, 0), (-1, 0)]
    for gi, (di, dj) in enumerate(offsets):
        channels = slice(gi * group, (gi + 1) * group)
        for i in range(grid):
            for j in range(grid):
                si, sj = i + di, j + dj
                inside = 0 <= si < grid and 0 <= sj < grid
                out[:, i * grid + j, channels] = x[:, si * grid + sj, channels] if inside else 0.0
    return out


def test_shift_formula() -> None:
    from stability.model.shift import Shift

    x = torch.randn(2, 16, 26)
    shift = Shift(grid_size=4, dim=26, shift_div=6)  # groups of 4 channels; channels 16..25 stay
    assert torch.equal(shift(x), explicit_shift(x, 4, 4))
    assert not list(shift.parameters())


def test_minmax_formula_and_gradient_norm() -> None:
    from stability.model.mlp import MinMax

    x = torch.randn(3, 5, 8, requires_grad=True)
    a, b = x[..., :4], x[..., 4:]
    expected = torch.cat([torch.where(a > b, a, b), torch.where(a > b, b, a)], dim=-1)
    y = MinMax()(x)
    assert torch.equal(y, expected)
    g = torch.randn_like(y)
    (grad,) = torch.autograd.grad(y, x, g)
    assert torch.allclose(grad.norm(), g.norm())  # a permutation per pair: gradient norm preserved


def test_lln_head_uses_unit_rows() -> None:
    from stability.model.heads import LLNHead

    head = LLNHead(8, 4)
    with torch.no_grad():
        head.weight.mul_(torch.tensor([1.0, 5.0, 0.1, 3.0])[:, None])
        head.bias.normal_()
    z = torch.randn(6, 8)
    rows = head.weight / head.weight.norm(dim=1, keepdim=True)
    assert torch.allclose(head(z), z @ rows.T + head.bias, atol=1e-6)
    assert torch.allclose(head.effective_weight().norm(dim=1), torch.ones(4))
    model = VisionTransformer(ViTConfig(head="lln"))
    assert isinstance(model.head, LLNHead) and set(dict(model.head.named_parameters())) == {"weight", "bias"}


def test_orthogonal_init() -> None:
    torch.manual_seed(0)
    model = randomise_(VisionTransformer(ViTConfig(init="orthogonal", stem="conv", mlp="liresconv",
                                                   norm="centernorm", img_size=16, patch_size=4)))
    from stability.model.init import orthogonal_init

    orthogonal_init(model)
    checked = 0
    for name, m in model.named_modules():
        if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d)):
            w = m.weight.detach().reshape(m.weight.shape[0], -1)
            gram = w @ w.T if w.shape[0] <= w.shape[1] else w.T @ w  # orthonormal rows or columns
            assert torch.allclose(gram, torch.eye(gram.shape[0]), atol=1e-5), name
            if m.bias is not None:
                assert torch.equal(m.bias, torch.zeros_like(m.bias)), name
            checked += 1
        elif isinstance(m, (CenterNorm, torch.nn.BatchNorm2d)):
            _assert_reset(m, name)
    assert checked == 2 + 1 + 5 * 3 + 1  # stem convs, 1x1 proj, qkv/proj/LiResConv conv per block, head


def test_liresconv_formula_and_class_token() -> None:
    from stability.model.mlp import LiResConv, MinMax

    torch.manual_seed(0)
    mixer = randomise_(LiResConv(6, grid_size=3, num_prefix_tokens=1, act=MinMax()))
    x = torch.randn(2, 10, 6)
    grid = x[:, 1:].transpose(1, 2).reshape(2, 6, 3, 3)
    conv = F.conv2d(grid, mixer.conv.weight, mixer.conv.bias, padding=1).flatten(2).transpose(1, 2)
    conv = torch.cat([torch.zeros(2, 1, 6), conv], dim=1)  # the class token gets no conv term
    a, b = (x + mixer.scale.gamma * conv).chunk(2, dim=-1)
    expected = torch.cat([torch.maximum(a, b), torch.minimum(a, b)], dim=-1)
    with torch.no_grad():
        assert torch.allclose(mixer(x), expected, atol=1e-6)
    assert torch.allclose(LiResConv(6, 3, 0).scale.gamma, torch.full((6,), 0.2))  # LipShiFT's alpha_c init


def test_paper_cosine_attention_normalises_v_and_scales_by_nu() -> None:
    from stability.model.attention import PaperCosineAttention

    torch.manual_seed(0)
    attn = randomise_(PaperCosineAttention(32, num_heads=4, tau=10.0, nu=2.5))
    h = torch.randn(2, 9, 32)
    B, N, D, H, d = 2, 9, 32, 4, 8
    q, k, v = (h @ attn.qkv.weight.T + attn.qkv.bias).reshape(B, N, 3, H, d).permute(2, 0, 3, 1, 4)
    q, k, v = (t / torch.sqrt((t * t).sum(-1, keepdim=True) + 1e-6) for t in (q, k, v))
    out = (2.5 * (10.0 * q @ k.transpose(-1, -2)).softmax(-1) @ v).transpose(1, 2).reshape(B, N, D)
    with torch.no_grad():
        assert torch.allclose(attn(h), out @ attn.proj.weight.T + attn.proj.bias, atol=1e-5)
        # bounded output: however large the input, each head's value is a convex mix of vectors of norm < nu
        huge = attn(1e4 * h) - attn.proj.bias
        assert huge.norm(dim=-1).max() <= 2.5 * math.sqrt(H) * torch.linalg.matrix_norm(attn.proj.weight, 2) + 1e-3
    assert not any("nu" in name for name, _ in attn.named_parameters())  # nu is fixed


def test_lipshift_block_is_the_composition_of_toggles() -> None:
    """attention=shift, norm=centernorm, residual=weighted (0.2), mlp=liresconv, activation=minmax:
    x = Shift(x); x = x + alpha_b * MinMax(h + alpha_c * Conv3x3(h)), h = CN(x) (LipShiFT's block)."""
    cfg = ViTConfig(img_size=8, patch_size=2, embed_dim=24, depth=2, num_heads=2, attention="shift",
                    global_pool="avg", norm="centernorm", residual="weighted", residual_init=0.2,
                    mlp="liresconv", activation="minmax", init="orthogonal", head="lln", shift_div=6)
    model = randomise_(VisionTransformer(cfg)).eval()
    blk = model.blocks[1]
    assert isinstance(blk.norm1, torch.nn.Identity) and isinstance(blk.ls1, torch.nn.Identity)
    x = torch.randn(2, 16, 24)
    with torch.no_grad():
        s = explicit_shift(x, 4, 4)
        h = center_norm(s, blk.norm2)
        grid = h.transpose(1, 2).reshape(2, 24, 4, 4)
        conv = F.conv2d(grid, blk.mlp.conv.weight, blk.mlp.conv.bias, padding=1).flatten(2).transpose(1, 2)
        a, b = (h + blk.mlp.scale.gamma * conv).chunk(2, dim=-1)
        expected = s + blk.ls2.gamma * torch.cat([torch.maximum(a, b), torch.minimum(a, b)], dim=-1)
        assert torch.allclose(blk(x, None)[0], expected, atol=1e-5)
    # no class token anywhere: 16 tokens, a 16-row position embedding, average pooling
    keys = model.state_dict()
    assert "cls_token" not in keys and keys["pos_embed"].shape == (1, 16, 24)
    sincos = VisionTransformer(dataclasses.replace(cfg, pos_embed_type="sincos"))
    assert torch.equal(sincos.pos_embed[0], sincos_2d_table(4, 24)[1:])
