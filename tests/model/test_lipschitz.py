"""Lipschitz bounds, the lower bound, certified accuracy and margin training, against exact computations:
explicit operator matrices and their SVD, attaining inputs, random pairs, and real (tiny) Lightning runs."""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from tbparse import SummaryReader

from stability.errors import ConfigError
from stability.model import MODEL_TOGGLES, VisionTransformer, ViTConfig
from stability.model.config import with_requirements
from stability.model.lipschitz import (
    LipschitzBound,
    certified_mask,
    certified_mask_sqrt2,
    emma_logits,
    input_normalization,
    input_scale,
    local_estimates,
    lower_bound,
    margin_radius,
    pixel_model,
)
from stability.model.lipschitz.bounds import GELU_LIPSCHITZ, centernorm_matrix
from stability.model.lipschitz.certify import pairwise_distances
from stability.model.mlp import MinMax
from stability.model.norms import CenterNorm
from stability.model.shift import Shift
from stability.record.config_files import load_config_files
from stability.training import run as train
from stability.training.lipschitz_monitor import LipschitzMonitor, radius_key
from stability.training.module import ViTClassifier

ROOT = Path(__file__).resolve().parents[2]
TINY = dict(img_size=8, patch_size=2, in_chans=1, num_classes=5, embed_dim=16, depth=2, num_heads=2,
            mlp_ratio=2.0)
# toggle values that make a model globally Lipschitz: every other toggle is free
BOUNDED = {"norm": ("centernorm",), "attention": ("shift", "cosine_paper")}


def randomise_(model: torch.nn.Module, scale: float = 0.3, seed: int = 0) -> torch.nn.Module:
    """Perturb every parameter (norm gains, alphas, BatchNorm statistics too), so no identity hides a mistake."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g))
        for name, b in model.named_buffers():
            if name.endswith("running_var"):
                b.copy_(0.5 + torch.rand(b.shape, generator=g))
    return model


def operator_matrix(apply, shape: tuple[int, ...]) -> torch.Tensor:
    """The explicit matrix of a linear map on inputs of ``shape``: its columns are the images of the basis."""
    n = math.prod(shape)
    basis = torch.eye(n, dtype=torch.float64).reshape(n, *shape)
    return torch.stack([apply(e).flatten() for e in basis], dim=1)


# ---------------------------------------------------------------- operators: power iteration vs exact SVD
@pytest.mark.parametrize("shape", [(7, 5), (5, 12), (1, 9)])
def test_power_iteration_matches_exact_svd_of_a_linear(shape: tuple[int, int]) -> None:
    w = torch.randn(*shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    bound = LipschitzBound(VisionTransformer(ViTConfig(**TINY)))
    sigma = bound.linear_norm("w", w, iters=200, differentiable=False)
    exact = torch.linalg.svdvals(w)[0]
    assert float(sigma) == pytest.approx(float(exact), rel=1e-6)
    # warm start: a second call with one iteration is already there
    assert float(bound.linear_norm("w", w, iters=1, differentiable=False)) == pytest.approx(float(exact), rel=1e-6)


@pytest.mark.parametrize(
    ("conv", "in_shape"),
    [
        (dict(in_channels=3, out_channels=4, kernel_size=3, padding=1), (3, 5, 5)),  # LiResConv-like
        (dict(in_channels=2, out_channels=3, kernel_size=3, stride=2, padding=1), (2, 6, 6)),  # conv stem
        (dict(in_channels=2, out_channels=3, kernel_size=3, stride=2, padding=1), (2, 7, 5)),  # odd sizes
        (dict(in_channels=1, out_channels=6, kernel_size=2, stride=2), (1, 4, 4)),  # patchify
        (dict(in_channels=4, out_channels=4, kernel_size=3, padding=1, groups=4), (4, 4, 4)),  # depthwise
        (dict(in_channels=2, out_channels=2, kernel_size=3, padding=2, dilation=2), (2, 5, 5)),
    ],
)
def test_power_iteration_matches_exact_svd_of_a_conv_operator(conv: dict, in_shape: tuple[int, int, int]) -> None:
    """The true zero-padded convolution operator (not the reshaped kernel), from its explicit matrix."""
    torch.manual_seed(0)
    layer = torch.nn.Conv2d(**conv).double()
    bound = LipschitzBound(VisionTransformer(ViTConfig(**TINY)))
    sigma = float(bound.conv_norm("conv", layer, in_shape, iters=300, differentiable=False))
    with torch.no_grad():
        matrix = operator_matrix(lambda e: F.conv2d(e[None], layer.weight, None, layer.stride, layer.padding,
                                                    layer.dilation, layer.groups)[0], in_shape)
    exact = float(torch.linalg.svdvals(matrix)[0])
    assert sigma == pytest.approx(exact, rel=2e-4)  # the first case's top two singular values are 5e-4 apart
    assert sigma <= exact * (1 + 1e-9)  # power iteration approaches sigma_max from below
    reshaped = float(torch.linalg.svdvals(layer.weight.detach().reshape(layer.out_channels, -1))[0])
    if conv.get("kernel_size") == 3 and conv.get("padding") == 1 and "stride" not in conv and "groups" not in conv:
        assert abs(reshaped - exact) > 1e-3  # the reshaped kernel's norm is a different number


def test_differentiable_bound_has_the_gradient_of_sigma_max() -> None:
    """d sigma_max / dW = u v^T (top singular vectors): what margin training differentiates."""
    w = torch.randn(6, 4, generator=torch.Generator().manual_seed(2), dtype=torch.float64, requires_grad=True)
    bound = LipschitzBound(VisionTransformer(ViTConfig(**TINY)))
    bound.linear_norm("w", w, iters=300, differentiable=False)
    sigma = bound.linear_norm("w", w, iters=1, differentiable=True)
    (grad,) = torch.autograd.grad(sigma, w)
    u, _, vh = torch.linalg.svd(w.detach())
    expected = torch.outer(u[:, 0], vh[0])
    assert torch.allclose(grad.abs(), expected.abs(), atol=1e-6)


# ---------------------------------------------------------------- components' constants
def test_centernorm_bound_is_exact_and_attained() -> None:
    norm = CenterNorm(8)
    with torch.no_grad():
        norm.weight.copy_(torch.tensor([0.5, -2.0, 1.0, 0.3, 1.5, -0.7, 0.9, 1.2]))
        norm.bias.normal_()
    model = VisionTransformer(ViTConfig(**TINY))
    value = LipschitzBound(model).linear_norm("cn", centernorm_matrix(norm), 300, False)
    assert float(value) <= norm.lipschitz() + 1e-6  # never above LipShiFT's D/(D-1) max|gamma|
    # attained: the top right singular vector of the linear part, from an independent SVD
    matrix = (8 / 7) * torch.diag(norm.weight.detach()) @ (torch.eye(8) - 1 / 8)
    _, s, vh = torch.linalg.svd(matrix)
    x = torch.randn(3, 8)
    with torch.no_grad():
        ratio = (norm(x + vh[0]) - norm(x)).norm(dim=-1)
    assert float(value) == pytest.approx(float(s[0]), rel=1e-5)
    assert torch.allclose(ratio, torch.full((3,), float(s[0])), rtol=1e-5)
    # with gamma constant the bound is LipShiFT's D/(D-1) |gamma|, attained by any centred direction
    flat = CenterNorm(8)
    assert float(LipschitzBound(model).linear_norm("flat", centernorm_matrix(flat), 300, False)) \
        == pytest.approx(8 / 7, rel=1e-6)


@pytest.mark.parametrize("mixer", ["minmax", "shift"])
def test_minmax_and_shift_are_exactly_one_lipschitz(mixer: str) -> None:
    g = torch.Generator().manual_seed(0)
    module = MinMax() if mixer == "minmax" else Shift(grid_size=4, dim=24, shift_div=8)
    x = torch.randn(500, 16, 24, generator=g)
    y = x + torch.randn(500, 16, 24, generator=g) * torch.rand(500, 1, 1, generator=g)
    ratio = (module(x) - module(y)).flatten(1).norm(dim=1) / (x - y).flatten(1).norm(dim=1)
    assert float(ratio.max()) <= 1.0 + 1e-6  # never exceeded by random pairs
    # ... and attained: MinMax by a pair that keeps every max/min order, shift by a change of the channels
    # that stay (group 4 on) anywhere, or of a shifted group away from the edge it leaves through
    delta = torch.zeros(1, 16, 24)
    if mixer == "minmax":
        x0 = torch.cat([torch.ones(1, 16, 12), -torch.ones(1, 16, 12)], dim=-1)
        delta = 0.1 * torch.randn(1, 16, 24, generator=g)
    else:
        x0 = torch.randn(1, 16, 24, generator=g)
        delta[0, :, 12:] = torch.randn(16, 12, generator=g)
    attained = (module(x0 + delta) - module(x0)).norm() / delta.norm()
    assert float(attained) == pytest.approx(1.0, abs=1e-6)


def test_gelu_constant_is_its_largest_slope() -> None:
    x = torch.linspace(-6, 6, 200001, dtype=torch.float64, requires_grad=True)
    (slope,) = torch.autograd.grad(F.gelu(x).sum(), x)
    assert float(slope.max()) == pytest.approx(GELU_LIPSCHITZ, rel=1e-8)


# ---------------------------------------------------------------- the network: bounded or not
def bounded_combinations() -> list[dict[str, str]]:
    """For each bounded attention, three combinations that between them give every free toggle each of its
    values (case k takes value k mod n of every toggle): every value meets both bounded attentions, and
    many toggles change at once. The full product is the slow test below."""
    free = [name for name in MODEL_TOGGLES if name not in BOUNDED]
    combos = []
    for attention in BOUNDED["attention"]:
        for k in range(max(len(MODEL_TOGGLES[name]) for name in free)):
            values = {"norm": "centernorm", "attention": attention}
            values |= {name: MODEL_TOGGLES[name][(k + i) % len(MODEL_TOGGLES[name])] for i, name in enumerate(free)}
            if attention == "shift" and values["pos_embed"] == "lape":
                values["pos_embed"] = "default"  # rejected by the config
            combos.append(values)
    for name in free:  # every value is covered (with lape for cosine_paper only)
        for value in MODEL_TOGGLES[name]:
            assert any(c[name] == value for c in combos), (name, value)
    return combos


@pytest.mark.parametrize("values", bounded_combinations(), ids=lambda v: ",".join(v.values()))
def test_upper_bound_is_above_the_lower_bound_and_every_local_slope(values: dict[str, str]) -> None:
    """On random small models with a bound: upper >= the empirical lower bound (pixel space, normalisation
    folded in), and every bounded part's bound >= the largest local Jacobian norm found at random inputs."""
    torch.manual_seed(0)
    cfg = ViTConfig(**TINY, **with_requirements(values))
    model = randomise_(VisionTransformer(cfg)).eval()
    mean, std = torch.tensor(0.3).reshape(1, 1, 1), torch.tensor(0.4).reshape(1, 1, 1)
    # power iteration approaches each sigma_max from below: converged (FINAL_ITERS), as the local slopes are
    # compared with each part's value alone, without the slack of the product
    bounds = LipschitzBound(model, input_scale(std)).compute(iters=100)
    assert bounds.backbone is not None and not bounds.unbounded
    pixels = torch.rand(8, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    lower = lower_bound(pixel_model(model, mean, std), pixels, steps=5)
    assert 0 < lower <= float(bounds.network) * (1 + 1e-4)
    parts = [layer for layer in bounds.layers if not layer.factor and layer.name.startswith("blocks.")]
    inputs = (pixels - mean) / std
    local = local_estimates(model, inputs, [layer.name for layer in parts], iters=10)
    for layer in parts:
        assert local[layer.name] <= float(layer.value) * (1 + 1e-4) + 1e-6, layer.name


@pytest.mark.slow
def test_upper_bound_is_above_the_lower_bound_for_the_full_bounded_product() -> None:
    """The product of every free toggle's values, for both bounded attentions (~1,150 models, ~5 min)."""
    free = [name for name in MODEL_TOGGLES if name not in BOUNDED]
    pixels = torch.rand(8, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    for attention in BOUNDED["attention"]:
        for combo in itertools.product(*(MODEL_TOGGLES[name] for name in free)):
            values = {"norm": "centernorm", "attention": attention, **dict(zip(free, combo))}
            if attention == "shift" and values["pos_embed"] == "lape":
                continue
            model = randomise_(VisionTransformer(ViTConfig(**TINY, **with_requirements(values)))).eval()
            bounds = LipschitzBound(model).compute(iters=30)
            assert bounds.network is not None, values
            assert lower_bound(model, pixels, steps=2) <= float(bounds.network) * (1 + 1e-4), values


@pytest.mark.parametrize(("values", "toggle"), [({"attention": "dot", "norm": "centernorm"}, "attention='dot'"),
                                                ({"attention": "shift"}, "norm='layernorm'"),
                                                ({"norm": "rmsnorm", "attention": "cosine_paper"}, "norm='rmsnorm'"),
                                                ({"norm": "centernorm", "attention": "cosine"}, "attention='cosine'"),
                                                ({"norm": "centernorm", "attention": "qknorm"}, "attention='qknorm'")])
def test_configurations_without_a_global_bound_report_unbounded(values: dict, toggle: str) -> None:
    model = VisionTransformer(ViTConfig(**TINY, **with_requirements(values))).eval()
    bounds = LipschitzBound(model).compute(iters=5)
    assert bounds.backbone is None and bounds.network is None
    assert toggle in bounds.unbounded_text()
    assert all(layer.value is None for layer in bounds.unbounded)
    # a local estimate instead: finite, positive, one per unbounded layer
    local = local_estimates(model, torch.randn(4, 1, 8, 8), [layer.name for layer in bounds.unbounded], iters=3)
    assert set(local) == {layer.name for layer in bounds.unbounded}
    assert all(math.isfinite(v) and v > 0 for v in local.values())


def test_dropout_and_drop_path_count_as_identity() -> None:
    """No keep-probability factors: the bound does not depend on drop_path_rate."""
    values = with_requirements({"attention": "shift", "norm": "centernorm", "residual": "weighted"})
    a = randomise_(VisionTransformer(ViTConfig(**TINY, **values)))
    b = VisionTransformer(ViTConfig(**TINY, **values, drop_path_rate=0.5))
    b.load_state_dict(a.state_dict())
    assert float(LipschitzBound(a).compute(100).backbone) == pytest.approx(
        float(LipschitzBound(b).compute(100).backbone), rel=1e-6)


def test_normalisation_is_folded_into_the_bound() -> None:
    values = with_requirements({"attention": "shift", "norm": "centernorm"})
    model = VisionTransformer(ViTConfig(**TINY, **values))
    raw = float(LipschitzBound(model, 1.0).compute(100).backbone)
    assert float(LipschitzBound(model, 1 / 0.25).compute(100).backbone) == pytest.approx(4 * raw, rel=1e-5)

    class Data:
        normalize, mean, std = True, 0.3, 0.25

    class Cifar:
        mean, std = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)

    mean, std = input_normalization(Data())
    assert input_scale(std) == pytest.approx(4.0) and mean.shape == (1, 1, 1)
    Data.normalize = False
    assert input_scale(input_normalization(Data())[1]) == 1.0
    assert input_scale(input_normalization(Cifar())[1]) == pytest.approx(5.0)  # the smallest std counts
    assert input_normalization(None)[1].item() == 1.0


# ---------------------------------------------------------------- certificates and the margin loss
def test_certified_accuracy_is_clean_accuracy_at_radius_zero_and_zero_at_a_huge_radius() -> None:
    g = torch.Generator().manual_seed(0)
    logits, labels = torch.randn(200, 6, generator=g), torch.randint(0, 6, (200,), generator=g)
    head = F.normalize(torch.randn(6, 16, generator=g), dim=1)
    correct = logits.argmax(1) == labels
    assert torch.equal(certified_mask(logits, labels, 3.0, head, 0.0), correct)
    assert torch.equal(certified_mask_sqrt2(logits, labels, 3.0, 0.0), correct)
    assert not certified_mask(logits, labels, 3.0, head, 1e6).any()
    assert not certified_mask_sqrt2(logits, labels, 3.0, 1e6).any()
    assert not certified_mask(logits, labels, None, head, 0.01).any()  # no bound, nothing certified
    assert torch.equal(certified_mask(logits, labels, None, head, 0.0), correct)
    # monotone in the radius; the head-aware certificate never certifies less than the sqrt(2) one
    # (||w_y - w_i|| <= ||W||_2 sqrt(2) for the network bound L ||W||_2)
    network = 3.0 * float(torch.linalg.matrix_norm(head, 2))
    previous = correct
    for radius in (0.01, 0.05, 0.1, 0.3):
        now = certified_mask(logits, labels, 3.0, head, radius)
        assert not (now & ~previous).any()
        assert not (certified_mask_sqrt2(logits, labels, network, radius) & ~now).any()
        previous = now


def test_certificate_matches_its_definition() -> None:
    """Correct and f_y - f_i > radius L ||w_y - w_i|| for every i != y, computed by loops."""
    g = torch.Generator().manual_seed(3)
    logits, labels = 3 * torch.randn(50, 4, generator=g), torch.randint(0, 4, (50,), generator=g)
    head = torch.randn(4, 8, generator=g)
    mask = certified_mask(logits, labels, 2.0, head, 0.2)
    for b in range(50):
        y = int(labels[b])
        ok = all(float(logits[b, y] - logits[b, i]) > 0.2 * 2.0 * float((head[y] - head[i]).norm())
                 for i in range(4) if i != y)
        assert bool(mask[b]) == ok
    d = pairwise_distances(head)
    assert torch.allclose(d, torch.cdist(head, head), atol=1e-5) and torch.equal(d.diagonal(), torch.zeros(4))


def test_margin_loss_is_cross_entropy_at_radius_zero_and_emma_above() -> None:
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(32, 5, generator=g, requires_grad=True)
    labels = torch.randint(0, 5, (32,), generator=g)
    head = F.normalize(torch.randn(5, 8, generator=g), dim=1)
    bound = torch.tensor(2.0, requires_grad=True)
    ce = F.cross_entropy(logits, labels)
    assert torch.equal(F.cross_entropy(emma_logits(logits, labels, bound, head, 0.0), labels), ce)
    adjusted = emma_logits(logits, labels, bound, head, 0.1)
    # the formula: each wrong logit raised by clip(gap / cap, 0.01, 1) * cap, the true one unchanged
    cap = 0.1 * 2.0 * torch.cdist(head, head)[labels]
    gap = logits.gather(1, labels[:, None]) - logits
    expected = logits + (gap / cap.clamp_min(1e-12)).clamp(0.01, 1.0) * cap
    expected[torch.arange(32), labels] = logits[torch.arange(32), labels]
    assert torch.allclose(adjusted, expected, atol=1e-6)
    loss = F.cross_entropy(adjusted, labels)
    assert loss > ce
    (grad_bound,) = torch.autograd.grad(loss, bound)
    assert grad_bound > 0  # the loss pushes the bound down


def test_margin_radius_ramp() -> None:
    assert margin_radius(0.1, (1.0, 2.0), 0.0) == pytest.approx(0.1)
    assert margin_radius(0.1, (1.0, 2.0), 1 / 3) == pytest.approx(0.15)
    assert margin_radius(0.1, (1.0, 2.0), 2 / 3) == pytest.approx(0.2)
    assert margin_radius(0.1, (1.0, 2.0), 1.0) == pytest.approx(0.2)


def test_margin_training_needs_a_bounded_model() -> None:
    with pytest.raises(ConfigError) as err:
        ViTClassifier(ViTConfig(**TINY), margin_eps=0.1)
    message = str(err.value)
    assert "\n" not in message and "model.margin_eps=0.1" in message and "attention='dot'" in message
    module = ViTClassifier(ViTConfig(**TINY, **with_requirements({"attention": "shift", "norm": "centernorm"})),
                           margin_eps=0.1, margin_ramp=(0.0, 0.0))
    x, y = torch.randn(8, 1, 8, 8), torch.randint(0, 5, (8,))
    logits = module(x)
    assert torch.equal(module._loss(logits, y, 0.0), F.cross_entropy(logits, y))  # radius 0: plain CE


# ---------------------------------------------------------------- real runs: TensorBoard and the record
def tiny_config(**model: object) -> dict:
    config = load_config_files([ROOT / "ablations" / "base" / "lipshift.yaml"])
    config["model"]["vit"].update(embed_dim=16, depth=2, num_heads=2)
    config["model"].update(model)
    config["trainer"].update(max_epochs=1, limit_train_batches=4, limit_val_batches=1, limit_test_batches=3,
                             enable_progress_bar=False)
    config["lipschitz"] = {"every_n_steps": 2, "radii": [0.0, 0.1412, 1000.0]}
    return config


def tags_of(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    frame = SummaryReader(str(run_dir)).scalars
    return {tag: sorted(zip(g["step"], g["value"])) for tag, g in frame.groupby("tag")}


@pytest.fixture(scope="module")
def margin_run(tmp_path_factory: pytest.TempPathFactory):
    run_dir = tmp_path_factory.mktemp("runs") / "margin"
    return run_dir, train.run(tiny_config(margin_eps=0.1412), run_dir)


def test_run_record_and_tensorboard_have_the_lipschitz_measurements(margin_run) -> None:
    run_dir, summary = margin_run
    assert summary.status in ("completed", "collapsed")  # a few steps may stay at chance
    assert summary.lipschitz_unbounded is None
    assert 0 < summary.lipschitz_lower <= summary.lipschitz_upper
    assert summary.lipschitz_backbone > 0
    keys = [radius_key(r) for r in (0.0, 0.1412, 1000.0)]
    assert list(summary.certified_acc) == keys == ["0", "0.1412", "1000"]
    assert summary.certified_acc["1000"] == 0.0
    assert summary.certified_acc["0"] == pytest.approx(summary.test_acc, abs=1e-6)  # both: fraction right
    assert summary.certified_acc["0"] >= summary.certified_acc["0.1412"] >= summary.certified_acc_sqrt2["0.1412"]
    tags = tags_of(run_dir)
    for tag in ("lipschitz/upper", "lipschitz/backbone", "lipschitz/lower", "lipschitz/layer/blocks.0",
                "lipschitz/layer/blocks.1.mlp", "lipschitz/layer/patch_embed", "lipschitz/layer/input"):
        assert [step for step, _ in tags[tag]] == [0, 2, 4], tag  # every 2 steps, and at the end (step 4)
    assert tags["lipschitz/upper"][-1][1] == pytest.approx(summary.lipschitz_upper, rel=1e-5)
    assert tags["certified_acc/r=0.1412"][-1][1] == pytest.approx(summary.certified_acc["0.1412"])
    assert "train/margin_radius" in tags and "train/lipschitz_backbone" in tags
    assert not any(tag.startswith("lipschitz/local/") for tag in tags)  # only unbounded layers get those


def test_unbounded_run_records_no_number_and_certifies_nothing(tmp_path: Path) -> None:
    config = tiny_config()
    config["model"]["vit"].update(attention="dot", global_pool="token", norm="layernorm")
    config["lipschitz"] = {"every_n_steps": 0}
    summary = train.run(config, tmp_path / "dot")
    assert summary.lipschitz_upper is None and summary.lipschitz_backbone is None
    assert "attention='dot'" in summary.lipschitz_unbounded and "norm='layernorm'" in summary.lipschitz_unbounded
    assert summary.lipschitz_lower > 0
    assert summary.certified_acc[radius_key(36 / 255)] == 0.0
    tags = tags_of(tmp_path / "dot")
    assert "lipschitz/upper" not in tags and tags["lipschitz/bounded"][-1][1] == 0.0
    assert "lipschitz/local/blocks.0.attn" in tags and "lipschitz/local/blocks.1.norm2" in tags


def test_measuring_does_not_change_training(tmp_path: Path) -> None:
    """Every-step measurements (eval-mode forwards, power iterations, input gradients) leave the run's
    numbers bit-identical: no RNG drawn, no parameter gradient touched, train mode restored."""
    a = tiny_config()
    a["lipschitz"] = {"every_n_steps": 1}
    b = tiny_config()
    b["lipschitz"] = {"every_n_steps": 0, "at_end": False}
    first, second = train.run(a, tmp_path / "a"), train.run(b, tmp_path / "b")
    assert first.final_train_loss == second.final_train_loss and first.test_acc == second.test_acc
    assert second.lipschitz_upper is None and second.certified_acc is None


def test_monitor_options_are_checked() -> None:
    with pytest.raises(ConfigError, match="lipschitz.every_n_steps"):
        LipschitzMonitor(every_n_steps=-1)
    with pytest.raises(ConfigError, match="lipschitz.radii"):
        LipschitzMonitor(radii=[-0.1])
    assert LipschitzMonitor(radii=[0.2, 0.0, 0.2]).radii == [0.0, 0.2]
