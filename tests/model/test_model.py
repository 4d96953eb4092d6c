"""The configurable ViT as a whole: timm equivalence at baseline, every toggle combination, config errors,
telemetry, FLOPs, YAML construction."""

from __future__ import annotations

import dataclasses
import itertools
import math
import time

import pytest
import torch
import torch.nn.functional as F
from timm.models.vision_transformer import VisionTransformer as TimmViT

from stability.errors import ConfigError
from stability.model import MODEL_TOGGLES, VisionTransformer, ViTConfig, count_flops
from stability.model.attention import ATTENTIONS
from stability.model.config import REQUIRED_SETTINGS, with_requirements
from stability.model.dyt import DYT_NORMS
from stability.model.heads import HEADS
from stability.model.init import INITS, REPARAMS
from stability.model.layerscale import LAYERSCALE_RESIDUALS
from stability.model.mlp import ACTIVATIONS, MLPS
from stability.model.norms import NORMS
from stability.model.peri_ln import PERI_BLOCKS
from stability.model.position import BLOCK_PE, CLS_HAS_PE, INPUT_PE, PE_TYPES
from stability.model.residual import RESIDUALS
from stability.model.sigma_reparam import SIGMA_REPARAMS
from stability.model.softcap import SOFTCAP_ATTENTIONS
from stability.model.stems import STEMS
from stability.model.vit import BLOCKS

DIMS = dict(img_size=16, patch_size=4, in_chans=3, num_classes=7, embed_dim=48, depth=3, num_heads=3,
            mlp_ratio=2.0)
TINY = dict(img_size=8, patch_size=4, in_chans=1, num_classes=3, embed_dim=16, depth=2, num_heads=2,
            mlp_ratio=2.0)


def timm_vit(global_pool: str = "token", **kwargs) -> TimmViT:
    return TimmViT(global_pool=global_pool, **DIMS, **kwargs)


def images(cfg: ViTConfig, batch: int = 2, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, cfg.in_chans, cfg.img_size, cfg.img_size, generator=g)


# the built-in tables, a trick in a file of its own merged after its kind's core table (as the registry does)
NORM_TABLE, ATTENTION_TABLE = NORMS | DYT_NORMS, ATTENTIONS | SOFTCAP_ATTENTIONS
RESIDUAL_TABLE = RESIDUALS | LAYERSCALE_RESIDUALS
MAPS = {"stem": STEMS, "norm": NORM_TABLE, "norm_placement": BLOCKS | PERI_BLOCKS, "attention": ATTENTION_TABLE,
        "pos_embed": INPUT_PE, "pos_embed_type": PE_TYPES, "residual": RESIDUAL_TABLE, "init": INITS,
        "reparam": REPARAMS | SIGMA_REPARAMS, "activation": ACTIVATIONS, "mlp": MLPS, "head": HEADS}
# maps of built components: each value is a builder cfg -> module (or parameter) that reads its own settings
BUILDERS = {"stem": [STEMS], "norm": [NORM_TABLE], "attention": [ATTENTION_TABLE], "pos_embed": [INPUT_PE, BLOCK_PE],
            "pos_embed_type": [PE_TYPES], "residual": [RESIDUAL_TABLE], "activation": [ACTIVATIONS], "mlp": [MLPS],
            "head": [HEADS]}
# The pairs of toggle values the config rejects (each with a one-line ConfigError naming both keys).
INVALID_PAIRS = {frozenset({("attention", "shift"), ("pos_embed", "lape")})}


def test_every_toggle_value_has_exactly_one_component() -> None:
    assert set(MAPS) == set(MODEL_TOGGLES)
    for name, valid in MODEL_TOGGLES.items():
        assert tuple(MAPS[name]) == valid, name
    assert tuple(BLOCK_PE) == MODEL_TOGGLES["pos_embed"]
    assert tuple(CLS_HAS_PE) == MODEL_TOGGLES["pos_embed_type"]


@pytest.mark.parametrize("toggle", list(BUILDERS))
def test_component_builders_take_the_config(toggle: str) -> None:
    """Each map entry builds its component from the whole config (no per-component arguments from vit.py)."""
    for value in MODEL_TOGGLES[toggle]:
        cfg = ViTConfig(**TINY, **with_requirements({toggle: value}))
        for builders in BUILDERS[toggle]:
            built = builders[value](cfg)
            assert isinstance(built, torch.nn.Module | torch.nn.Parameter), f"{toggle}={value}: {built!r}"


def test_default_config_is_the_baseline() -> None:
    cfg = ViTConfig()
    assert cfg.toggles() == {name: valid[0] for name, valid in MODEL_TOGGLES.items()}


# ---------------------------------------------------------------- 1. exactly timm at baseline
@pytest.mark.parametrize("global_pool", ["token", "avg"])
def test_baseline_is_exactly_timm(global_pool: str) -> None:
    torch.manual_seed(0)
    ref = timm_vit(global_pool).eval()
    ours = VisionTransformer(ViTConfig(global_pool=global_pool, **DIMS)).eval()
    ref_sd, our_sd = ref.state_dict(), ours.state_dict()
    assert list(our_sd) == list(ref_sd)  # same keys, same order
    assert {k: v.shape for k, v in our_sd.items()} == {k: v.shape for k, v in ref_sd.items()}
    assert ("fc_norm.weight" in our_sd) == (global_pool == "avg")
    assert ("norm.weight" in our_sd) == (global_pool == "token")

    ours.load_state_dict(ref_sd, strict=True)
    x = images(ours.cfg, batch=4)
    with torch.no_grad():
        diff = (ours(x) - ref(x)).abs().max().item()
    assert diff < 1e-5
    # and the other way round: our weights (our own init) run identically in timm
    fresh = VisionTransformer(ViTConfig(global_pool=global_pool, **DIMS)).eval()
    ref.load_state_dict(fresh.state_dict(), strict=True)
    with torch.no_grad():
        assert (fresh(x) - ref(x)).abs().max().item() < 1e-5


def test_qknorm_loads_timm_qk_norm() -> None:
    """attention="qknorm" is timm's qk_norm=True: same names (attn.q_norm / attn.k_norm), same outputs."""
    torch.manual_seed(1)
    ref = timm_vit(qk_norm=True).eval()
    for blk in ref.blocks:  # non-trivial norm parameters, so a wrong placement would show
        for norm in (blk.attn.q_norm, blk.attn.k_norm):
            torch.nn.init.normal_(norm.weight, 1.0, 0.3)
            torch.nn.init.normal_(norm.bias, 0.0, 0.3)
    ours = VisionTransformer(ViTConfig(attention="qknorm", **DIMS)).eval()
    ours.load_state_dict(ref.state_dict(), strict=True)
    x = images(ours.cfg)
    with torch.no_grad():
        assert (ours(x) - ref(x)).abs().max().item() < 1e-5


def test_weighted_residual_loads_timm_layerscale() -> None:
    """residual="weighted" has the form (and names, ls1/ls2.gamma) of timm's LayerScale."""
    torch.manual_seed(2)
    ref = timm_vit(init_values=0.3).eval()
    for blk in ref.blocks:
        torch.nn.init.normal_(blk.ls1.gamma, 0.5, 0.2)
        torch.nn.init.normal_(blk.ls2.gamma, 0.5, 0.2)
    ours = VisionTransformer(ViTConfig(residual="weighted", **DIMS)).eval()
    ours.load_state_dict(ref.state_dict(), strict=True)
    x = images(ours.cfg)
    with torch.no_grad():
        assert (ours(x) - ref(x)).abs().max().item() < 1e-5


# ---------------------------------------------------------------- 2. every combination works
def _config(values: dict[str, str], **dims) -> ViTConfig:
    """TINY (or ``dims``) with these toggle values and what they need (the shift mixer: avg pooling)."""
    return ViTConfig(**{**TINY, **dims}, **with_requirements(values))


def _check_rejection(values: dict[str, str]) -> None:
    """A combination holding an invalid pair is rejected with one line naming both keys."""
    bad = [pair for pair in INVALID_PAIRS if pair <= set(values.items())]
    assert bad, f"valid-looking combination rejected: {values}"
    with pytest.raises(ConfigError) as err:
        _config(values)
    message = str(err.value)
    assert "\n" not in message
    for key, value in bad[0]:
        assert f"{key}={value!r}" in message, message


def _check_forward_backward(cfg: ViTConfig, x: torch.Tensor, y: torch.Tensor) -> None:
    model = VisionTransformer(cfg)
    logits = model(x)
    assert logits.shape == (x.shape[0], cfg.num_classes), cfg
    assert torch.isfinite(logits).all(), cfg
    F.cross_entropy(logits, y).backward()
    for name, p in model.named_parameters():
        if p.requires_grad:
            assert p.grad is not None, (name, cfg.toggles())
            assert torch.isfinite(p.grad).all(), (name, cfg.toggles())
        else:
            assert name == "pos_embed" and cfg.pos_embed_type == "sincos"


def _is_invalid(values: dict[str, str]) -> bool:
    return any(pair <= set(values.items()) for pair in INVALID_PAIRS)


@pytest.mark.slow
def test_every_combination_builds_runs_and_trains() -> None:
    """The full product of toggle values (every value of every toggle with every value of the others):
    forward finite, every trainable parameter gets a finite gradient; the combinations holding an invalid
    pair are rejected with one clear line. (~12,000 combinations, ~2-3 min: the pairwise test below is the
    fast version.)"""
    torch.manual_seed(0)
    x, y = torch.randn(2, 1, 8, 8), torch.tensor([0, 2])
    start = time.perf_counter()
    combos = list(itertools.product(*MODEL_TOGGLES.values()))
    rejected = 0
    for combo in combos:
        values = dict(zip(MODEL_TOGGLES, combo))
        if _is_invalid(values):
            _check_rejection(values)
            rejected += 1
        else:
            _check_forward_backward(_config(values), x, y)
    elapsed = time.perf_counter() - start
    print(f"{len(combos)} combinations ({rejected} rejected), forward + backward: {elapsed:.2f} s")
    assert len(combos) == math.prod(len(values) for values in MODEL_TOGGLES.values())


def _gain(chosen: dict[str, str], name: str, value: str, uncovered: set) -> int:
    """How many uncovered pairs setting ``name=value`` next to ``chosen`` covers (-1: an invalid pair)."""
    if _is_invalid({**chosen, name: value}):
        return -1
    return sum(frozenset({(name, value), item}) in uncovered for item in chosen.items())


def pairwise_combinations() -> list[dict[str, str]]:
    """A small set of valid combinations holding every valid pair of values of two toggles (a greedy
    covering array, deterministic): bugs that need two toggles together show here at ~1/300 of the cost of
    the full product."""
    names = list(MODEL_TOGGLES)
    pairs = {frozenset({(a, va), (b, vb)}) for i, a in enumerate(names) for b in names[i + 1:]
             for va in MODEL_TOGGLES[a] for vb in MODEL_TOGGLES[b]}
    uncovered = {pair for pair in pairs if pair not in INVALID_PAIRS}
    combos = []
    while uncovered:
        first = sorted(uncovered, key=lambda pair: sorted(pair))[0]
        chosen = dict(first)
        for name in names:
            if name not in chosen:
                chosen[name] = max(MODEL_TOGGLES[name], key=lambda v, n=name, c=dict(chosen): _gain(c, n, v, uncovered))
        combos.append(chosen)
        uncovered -= {frozenset({a, b}) for a in chosen.items() for b in chosen.items() if a != b}
    return combos


def test_every_pair_of_values_builds_runs_and_trains() -> None:
    """Every pair of values of two toggles, in a covering set of combinations: forward finite, every
    trainable parameter gets a finite gradient; every invalid pair is rejected with one clear line."""
    torch.manual_seed(0)
    x, y = torch.randn(2, 1, 8, 8), torch.tensor([0, 2])
    combos = pairwise_combinations()
    covered = {frozenset({a, b}) for c in combos for a in c.items() for b in c.items() if a != b}
    for a, b in itertools.combinations(MODEL_TOGGLES, 2):
        for va, vb in itertools.product(MODEL_TOGGLES[a], MODEL_TOGGLES[b]):
            pair = frozenset({(a, va), (b, vb)})
            assert pair in covered or pair in INVALID_PAIRS, pair
    for values in combos:
        _check_forward_backward(_config(values), x, y)
    for pair in INVALID_PAIRS:
        _check_rejection(dict(pair))
    assert len(combos) < 40


def test_required_settings_are_what_the_values_need() -> None:
    """Each value in REQUIRED_SETTINGS is rejected without its requirement and accepted with it."""
    for (toggle, value), needed in REQUIRED_SETTINGS.items():
        with pytest.raises(ConfigError) as err:
            ViTConfig(**{toggle: value})
        assert all(key in str(err.value) for key in (toggle, *needed))
        ViTConfig(**with_requirements({toggle: value}))


@pytest.mark.parametrize("toggle", list(MODEL_TOGGLES))
def test_each_toggle_with_avg_pooling_and_drop_path(toggle: str) -> None:
    """The settings the product leaves at default: global_pool="avg", drop_path_rate > 0, patch 2."""
    torch.manual_seed(0)
    dims = {**TINY, "patch_size": 2}
    x, y = torch.randn(2, 1, 8, 8), torch.tensor([0, 2])
    for value in MODEL_TOGGLES[toggle][1:]:
        cfg = ViTConfig(**dims, global_pool="avg", drop_path_rate=0.2, **{toggle: value})
        _check_forward_backward(cfg, x, y)
        if toggle == "attention" and value == "shift":  # no class token: nothing the readout cannot reach
            assert VisionTransformer(cfg).cls_token is None


# ---------------------------------------------------------------- 4. clear errors
@pytest.mark.parametrize("toggle", list(MODEL_TOGGLES) + ["global_pool"])
def test_unknown_toggle_value_names_toggle_value_and_choices(toggle: str) -> None:
    with pytest.raises(ConfigError) as err:
        ViTConfig(**{toggle: "bogus"})
    msg = str(err.value)
    assert toggle in msg and "'bogus'" in msg and "\n" not in msg
    valid = MODEL_TOGGLES.get(toggle, ("token", "avg"))
    assert all(v in msg for v in valid)


def test_validation_runs_however_the_config_is_built() -> None:
    with pytest.raises(ConfigError, match="norm='CenterNorm'"):
        dataclasses.replace(ViTConfig(), norm="CenterNorm")


@pytest.mark.parametrize(
    ("kwargs", "reason"),
    [
        (dict(embed_dim=64, num_heads=5), "embed_dim=64 is not divisible by num_heads=5"),
        (dict(img_size=10, patch_size=4), "img_size=10 is not divisible by patch_size=4"),
        (dict(img_size=12, patch_size=3, stem="conv"), "patch_size=3 with stem='conv'.*power of two"),
        (dict(img_size=12, patch_size=6, stem="conv"), "patch_size=6 with stem='conv'.*power of two"),
        (dict(patch_size=1, stem="conv"), "patch_size=1 with stem='conv'.*reduces to .*patchify"),
        (dict(img_size=32, patch_size=8, embed_dim=18, num_heads=3, stem="conv"),
         "embed_dim=18 with stem='conv'.*divisible by 4"),
        (dict(depth=1, stem="conv"), "depth=1 with stem='conv'.*leave none"),
        (dict(embed_dim=18, num_heads=3, pos_embed_type="sincos"), "embed_dim=18 with pos_embed_type='sincos'"),
        (dict(depth=0), "depth=0 .*positive integer"),
        (dict(embed_dim=64.0), "embed_dim=64.0 .*positive integer"),
        (dict(drop_path_rate=1.0), r"drop_path_rate=1.0 .*\[0, 1\)"),
        (dict(cosine_tau=0.0), "cosine_tau=0.0 .*positive"),
        (dict(residual_init=float("nan")), "residual_init=nan"),
        (dict(conv_stem_remove_block="yes"), "conv_stem_remove_block='yes'"),
    ],
)
def test_impossible_dimensions_are_rejected_with_the_reason(kwargs: dict, reason: str) -> None:
    with pytest.raises(ConfigError, match=reason):
        ViTConfig(**kwargs)


def test_possible_edge_dimensions_are_accepted() -> None:
    ViTConfig(depth=1, stem="conv", conv_stem_remove_block=False)
    ViTConfig(patch_size=1, img_size=4)
    ViTConfig(img_size=32, patch_size=16, embed_dim=64, stem="conv")


def test_config_from_yaml_via_jsonargparse() -> None:
    """LightningCLI builds the model from YAML (jsonargparse reads the dataclass fields)."""
    from jsonargparse import ArgumentParser

    parser = ArgumentParser(exit_on_error=False)
    parser.add_argument("--vit", type=ViTConfig, default=ViTConfig())
    cfg = parser.parse_string("vit:\n  norm: centernorm\n  attention: cosine\n  residual_init: 0.2\n"
                              "  embed_dim: 32\n")
    vit = parser.instantiate_classes(cfg).vit
    assert isinstance(vit, ViTConfig)
    assert (vit.norm, vit.attention, vit.residual_init, vit.embed_dim) == ("centernorm", "cosine", 0.2, 32)
    VisionTransformer(vit)
    with pytest.raises(Exception, match="centrenorm"):
        parser.parse_string("vit:\n  norm: centrenorm\n")


# ---------------------------------------------------------------- structure
def test_conv_stem_removes_one_block_by_default() -> None:
    assert len(VisionTransformer(ViTConfig(stem="conv")).blocks) == 5
    assert len(VisionTransformer(ViTConfig(stem="conv", conv_stem_remove_block=False)).blocks) == 6
    assert len(VisionTransformer(ViTConfig()).blocks) == 6


def test_weighted_residual_alpha_init() -> None:
    model = VisionTransformer(ViTConfig(residual="weighted", stem="conv"))  # 5 blocks
    for blk in model.blocks:
        for ls in (blk.ls1, blk.ls2):
            assert ls.gamma.shape == (64,) and ls.gamma.requires_grad
            assert torch.allclose(ls.gamma, torch.full((64,), 1 / 5))
    model = VisionTransformer(ViTConfig(residual="weighted", residual_init=0.2))
    assert torch.allclose(model.blocks[3].ls2.gamma, torch.full((64,), 0.2))


# ---------------------------------------------------------------- 5. telemetry and FLOPs
@pytest.mark.parametrize("attention", [a for a in MODEL_TOGGLES["attention"] if a != "shift"])
def test_attention_stats_match_explicit_logits(attention: str) -> None:
    torch.manual_seed(0)
    cfg = ViTConfig(attention=attention, **DIMS)
    model = VisionTransformer(cfg).eval()
    x = images(cfg)
    captured = {}
    model.blocks[0].attn.register_forward_pre_hook(lambda m, args: captured.update(h=args[0]))
    with torch.no_grad():
        plain = model(x)
        assert all(math.isnan(s["max_logit"]) for s in model.attention_stats())
        model.set_attention_stats(True)
        with_stats = model(x)
    assert torch.equal(plain, with_stats)  # telemetry does not change the output
    stats = model.attention_stats()
    capped = {"max_logit_capped"} if attention == "softcap" else set()  # its raw max is "max_logit"
    assert len(stats) == len(model.blocks) and set(stats[0]) == {"max_logit", "entropy"} | capped

    # independent computation for layer 0
    attn, h = model.blocks[0].attn, captured["h"]
    B, N, D = h.shape
    H, d = cfg.num_heads, D // cfg.num_heads
    q, k, _ = (h @ attn.qkv.weight.T + attn.qkv.bias).reshape(B, N, 3, H, d).permute(2, 0, 3, 1, 4)
    if attention in ("cosine", "cosine_paper"):
        q, k = (t / torch.sqrt((t * t).sum(-1, keepdim=True) + 1e-6) for t in (q, k))
        logits = cfg.cosine_tau * q @ k.transpose(-1, -2)
    else:
        if attention == "qknorm":
            q, k = F.layer_norm(q, (d,), eps=1e-6), F.layer_norm(k, (d,), eps=1e-6)
        logits = q @ k.transpose(-1, -2) / math.sqrt(d)
    p = (cfg.softcap * torch.tanh(logits / cfg.softcap) if capped else logits).softmax(-1)
    assert stats[0]["max_logit"] == pytest.approx(logits.max().item(), rel=1e-4)
    assert stats[0]["entropy"] == pytest.approx(-(p * p.log()).sum(-1).mean().item(), rel=1e-4)
    assert 0 <= stats[0]["entropy"] <= math.log(N)

    model.set_attention_stats(False)
    assert not any(blk.attn.record_stats for blk in model.blocks)
    assert math.isnan(model.attention_stats()[0]["entropy"])


def test_shift_has_no_attention_stats() -> None:
    """The shift mixer has no logits: its stats are NaN (the telemetry skips them), with stats on or off."""
    model = VisionTransformer(ViTConfig(**with_requirements({"attention": "shift"})))
    model.set_attention_stats(True)
    model(torch.randn(2, 1, 8, 8))
    assert all(math.isnan(v) for stats in model.attention_stats() for v in stats.values())


def test_count_flops_matches_the_analytic_count() -> None:
    cfg = ViTConfig()  # digits model
    N, D, L, p, C = 1 + cfg.grid_size**2, cfg.embed_dim, cfg.depth, cfg.patch_size, cfg.in_chans
    hidden = int(cfg.mlp_ratio * D)
    stem = 2 * (N - 1) * D * C * p * p
    block = 2 * N * (3 * D * D + D * D + 2 * D * hidden) + 2 * 2 * N * N * D  # linears + q k^T and A v
    head = 2 * D * cfg.num_classes
    model = VisionTransformer(cfg)
    assert count_flops(model) == stem + L * block + head
    assert count_flops(model, batch=3) == count_flops(model)
    assert model.training  # mode restored


def test_wrong_image_size_is_a_clear_error() -> None:
    model = VisionTransformer(ViTConfig())
    with pytest.raises(ConfigError, match="img_size=8 does not match the input images, which are 32x32"):
        model(torch.zeros(1, 1, 32, 32))


def test_bench_model_runs_and_prints_the_table(capsys: pytest.CaptureFixture[str]) -> None:
    from stability.bench.cli import main

    argv = ["model", "--reps", "2", "--steps", "1", "--warmup", "1", "--embed", "16", "--depth", "2",
            "--heads", "2", "--batch", "2"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "matmul rate" in out and "timm VisionTransformer" in out and "ours, baseline" in out
    for name, values in MODEL_TOGGLES.items():
        for value in values[1:]:
            assert f"{name}={value}" in out
