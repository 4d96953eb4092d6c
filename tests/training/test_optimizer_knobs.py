"""The optimiser knobs: independent weight decay, AdamW epsilon, adaptive gradient clipping, Lion and Muon.

Each knob is checked where it acts (the optimiser's param_groups, the step it takes on known numbers, the
gradients after clipping) and in a real one-step fit.
"""

from __future__ import annotations

import math
from pathlib import Path
from types import SimpleNamespace

import lightning as L
import pytest
import torch
from test_train import TRAINED, tiny_config
from timm.optim import Lion
from torch import nn

from stability.errors import ConfigError
from stability.model import ViTConfig
from stability.training import run as train
from stability.training.module import ViTClassifier, parameter_groups
from stability.training.optimizers import MuonWithAdamW, build_optimizer, muon_split

TINY = {"embed_dim": 16, "depth": 2, "num_heads": 2}


def optimizer_of(**hparams: object) -> tuple[ViTClassifier, torch.optim.Optimizer]:
    """The optimiser the module builds for ``hparams`` (what configure_optimizers hands Lightning)."""
    module = ViTClassifier(ViTConfig(**TINY), **hparams)
    return module, build_optimizer(module.model, parameter_groups(module.model, module.hparams.weight_decay),
                                   module.hparams)


def test_the_default_optimizer_is_adamw_as_before() -> None:
    _, optimizer = optimizer_of()
    assert type(optimizer) is torch.optim.AdamW
    decay, no_decay = optimizer.param_groups
    assert decay["weight_decay"] == 0.05 and no_decay["weight_decay"] == 0.0
    for group in optimizer.param_groups:
        assert group["lr"] == 1e-3 and group["betas"] == (0.9, 0.999) and group["eps"] == 1e-8


def test_adam_eps_reaches_adamw() -> None:
    _, optimizer = optimizer_of(adam_eps=1e-15)
    assert [group["eps"] for group in optimizer.param_groups] == [1e-15, 1e-15]


def test_independent_weight_decay_is_not_multiplied_by_the_learning_rate() -> None:
    """Wortsman et al. 2023: theta <- theta - s_t * lambda * theta. AdamW gets lambda / lr, and with a zero
    gradient (a zero Adam update) one step at the schedule's peak shrinks every decayed weight by lambda."""
    module, optimizer = optimizer_of(lr=2e-3, weight_decay=1e-4, independent_wd=True)
    decay, no_decay = optimizer.param_groups
    assert decay["weight_decay"] == pytest.approx(1e-4 / 2e-3) and no_decay["weight_decay"] == 0.0
    before = [p.detach().clone() for p in decay["params"]]
    for param in module.model.parameters():
        param.grad = torch.zeros_like(param)
    optimizer.step()
    for old, new in zip(before, decay["params"], strict=True):
        assert torch.allclose(new, old * (1 - 1e-4), rtol=0, atol=1e-9)
    # half-way down the schedule (lr halved), the decay is halved too: it follows the schedule's shape
    for group in optimizer.param_groups:
        group["lr"] = 1e-3
    before = [p.detach().clone() for p in decay["params"]]
    optimizer.step()
    for old, new in zip(before, decay["params"], strict=True):
        assert torch.allclose(new, old * (1 - 0.5e-4), rtol=0, atol=1e-9)


def test_independent_weight_decay_needs_a_decoupled_optimizer() -> None:
    with pytest.raises(ConfigError) as err:
        ViTClassifier(ViTConfig(**TINY), optimizer="sgd", independent_wd=True)
    assert str(err.value).startswith("model.independent_wd: ") and "'sgd'" in str(err.value)


@pytest.mark.parametrize(("key", "value"), [("adam_eps", 0.0), ("adam_eps", math.inf), ("agc_clip_factor", -1.0),
                                            ("agc", "yes"), ("independent_wd", 1)])
def test_bad_knob_values_are_one_line_errors(key: str, value: object) -> None:
    with pytest.raises(ConfigError) as err:
        ViTClassifier(ViTConfig(**TINY), **{key: value})
    assert str(err.value).startswith(f"model.{key}: ") and "\n" not in str(err.value)


def test_lion_builds_timm_lion_with_the_given_hyperparameters() -> None:
    _, optimizer = optimizer_of(optimizer="lion", lr=3e-4, weight_decay=0.5, betas=(0.9, 0.99))
    assert type(optimizer) is Lion
    decay, no_decay = optimizer.param_groups
    assert decay["weight_decay"] == 0.5 and no_decay["weight_decay"] == 0.0
    assert all(group["lr"] == 3e-4 and group["betas"] == (0.9, 0.99) for group in optimizer.param_groups)


def test_lion_steps_by_the_sign_update() -> None:
    """Chen et al. 2023: c = b1 m + (1 - b1) g; theta <- theta (1 - lr wd) - lr sign(c); m <- b2 m + (1 - b2) g."""
    layer = nn.Linear(3, 2, bias=False)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[0.5, -1.0, 2.0], [0.0, 0.25, -0.75]]))
    hp = SimpleNamespace(optimizer="lion", lr=0.1, weight_decay=0.2, independent_wd=False, betas=(0.9, 0.99))
    optimizer = build_optimizer(layer, parameter_groups(layer, hp.weight_decay), hp)
    theta, m = layer.weight.detach().clone(), torch.zeros(2, 3)
    grads = [torch.tensor([[1.0, -2.0, 0.5], [-0.1, 3.0, 0.0]]), torch.tensor([[-3.0, 0.1, 0.2], [0.2, -4.0, 1.0]])]
    for g in grads:
        layer.weight.grad = g.clone()
        optimizer.step()
        c = 0.9 * m + 0.1 * g
        theta = theta * (1 - 0.1 * 0.2) - 0.1 * torch.sign(c)
        m = 0.99 * m + 0.01 * g
        assert torch.allclose(layer.weight.detach(), theta, atol=1e-7)


def test_muon_takes_the_hidden_matrices_and_adamw_the_rest() -> None:
    module, optimizer = optimizer_of(optimizer="muon", lr=2e-3, weight_decay=0.1, adam_eps=1e-12)
    assert isinstance(optimizer, MuonWithAdamW)
    muon, adamw = optimizer.parts
    assert type(muon) is torch.optim.Muon and type(adamw) is torch.optim.AdamW
    names = {id(p): n for n, p in module.model.named_parameters()}
    in_muon = {names[id(p)] for group in muon.param_groups for p in group["params"]}
    in_adamw = {names[id(p)] for group in adamw.param_groups for p in group["params"]}
    assert in_muon == {n for n, p in module.model.named_parameters() if p.ndim == 2 and not n.startswith("head.")}
    assert {"blocks.0.attn.qkv.weight", "blocks.1.mlp.fc2.weight"} <= in_muon
    assert {"head.weight", "patch_embed.proj.weight", "pos_embed", "blocks.0.norm1.weight"} <= in_adamw
    assert in_muon.isdisjoint(in_adamw) and len(in_muon | in_adamw) == len(list(module.model.parameters()))
    assert muon_split(module.model)[0] == muon.param_groups[0]["params"]
    (muon_group,) = muon.param_groups
    assert muon_group["lr"] == 2e-3 and muon_group["weight_decay"] == 0.1
    assert muon_group["adjust_lr_fn"] == "match_rms_adamw"
    assert [g["weight_decay"] for g in adamw.param_groups] == [0.1, 0.0]
    assert all(g["eps"] == 1e-12 and g["lr"] == 2e-3 for g in adamw.param_groups)
    # the wrapper's groups are the two optimisers' own: a schedule that sets lr reaches both
    assert optimizer.param_groups == [*muon.param_groups, *adamw.param_groups]
    assert all(a is b for a, b in zip(optimizer.param_groups, [*muon.param_groups, *adamw.param_groups],
                                      strict=True))


def test_muon_steps_every_parameter_and_its_state_round_trips() -> None:
    module, optimizer = optimizer_of(optimizer="muon")
    images, labels = torch.randn(4, 1, 8, 8), torch.randint(0, 10, (4,))
    before = {n: p.detach().clone() for n, p in module.model.named_parameters()}

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = nn.functional.cross_entropy(module(images), labels)
        loss.backward()
        return loss

    loss = optimizer.step(closure)
    assert torch.isfinite(loss)
    assert all(not torch.equal(before[n], p) for n, p in module.model.named_parameters())
    state = optimizer.state_dict()
    _, fresh = optimizer_of(optimizer="muon")
    fresh.load_state_dict(state)
    muon_buffers = [s["momentum_buffer"] for s in fresh.parts[0].state.values()]
    assert len(muon_buffers) == len(optimizer.parts[0].param_groups[0]["params"])
    assert all(torch.equal(a, b) for a, b in zip(
        muon_buffers, [s["momentum_buffer"] for s in optimizer.parts[0].state.values()], strict=True))


def unitwise_norm(x: torch.Tensor) -> torch.Tensor:
    """The norm of each output unit (a row of a matrix, a filter of a conv); a 1-D tensor is one unit."""
    if x.ndim <= 1:
        return x.norm()
    return x.flatten(1).norm(dim=1)


def test_agc_clips_a_planted_huge_gradient_to_its_bound() -> None:
    """NFNets: per unit, ||g|| <= clip * max(||w||, 1e-3); small gradients and the head are left alone."""
    module = ViTClassifier(ViTConfig(**TINY), agc=True, agc_clip_factor=0.02)
    module.trainer = L.Trainer(logger=False, enable_checkpointing=False, enable_progress_bar=False,
                               enable_model_summary=False)
    generator = torch.Generator().manual_seed(0)
    for name, param in module.model.named_parameters():
        scale = 1e-9 if name == "blocks.1.mlp.fc1.bias" else 1e4  # one gradient far below its bound
        param.grad = scale * torch.randn(param.shape, generator=generator)
    planted = {n: p.grad.clone() for n, p in module.model.named_parameters()}
    optimizer = torch.optim.AdamW(module.parameters())
    module.configure_gradient_clipping(optimizer)
    for name, param in module.model.named_parameters():
        if name.startswith("head."):
            assert torch.equal(param.grad, planted[name])  # not clipped, as NFNets and timm leave the head
            continue
        if name == "blocks.1.mlp.fc1.bias":
            assert torch.equal(param.grad, planted[name])
            continue
        bound = 0.02 * unitwise_norm(param.detach()).clamp(min=1e-3)
        norms = unitwise_norm(param.grad)
        assert bool((norms <= bound * (1 + 1e-5)).all()), name
        assert torch.allclose(norms, bound, rtol=1e-4), name  # huge: clipped exactly to the bound
        # clipping rescales: each unit keeps its direction
        cosine = nn.functional.cosine_similarity(param.grad.reshape(norms.numel(), -1),
                                                 planted[name].reshape(norms.numel(), -1), dim=1)
        assert torch.allclose(cosine, torch.ones_like(cosine), atol=1e-5)


def test_without_agc_gradients_are_untouched() -> None:
    module = ViTClassifier(ViTConfig(**TINY))
    module.trainer = L.Trainer(logger=False, enable_checkpointing=False, enable_progress_bar=False,
                               enable_model_summary=False)
    for param in module.model.parameters():
        param.grad = 1e4 * torch.ones_like(param)
    module.configure_gradient_clipping(torch.optim.AdamW(module.parameters()))
    assert all(torch.equal(p.grad, 1e4 * torch.ones_like(p)) for p in module.model.parameters())


# knobs -> what the optimiser state in the run's checkpoint (loaded as the resume loads it) must show
ONE_STEP_FITS = {
    "independent_wd": ({"independent_wd": True, "weight_decay": 1e-4},
                       lambda state: state["param_groups"][0]["weight_decay"] == pytest.approx(1e-4 / 3e-3)),
    "adam_eps": ({"adam_eps": 1e-15}, lambda state: state["param_groups"][0]["eps"] == 1e-15),
    "agc": ({"agc": True}, lambda state: "exp_avg_sq" in state["state"][0]),
    "lion": ({"optimizer": "lion", "lr": 3e-4, "weight_decay": 0.5},
             lambda state: set(state["state"][0]) == {"exp_avg"}),  # Lion keeps one moment, no step count
    "muon": ({"optimizer": "muon", "lr": 3e-3},
             lambda state: set(state["parts"][0]["state"][0]) == {"momentum_buffer"}
             and "exp_avg_sq" in state["parts"][1]["state"][0]),
}


@pytest.mark.parametrize("name", list(ONE_STEP_FITS))
def test_one_step_fit_with_each_knob(tmp_path: Path, name: str) -> None:
    knobs, check = ONE_STEP_FITS[name]
    config = tiny_config(**knobs)  # digits base: lr 3e-3
    config["trainer"].update(max_epochs=1, limit_train_batches=1, limit_val_batches=1, limit_test_batches=1)
    summary = train.run(config, tmp_path / "run")
    assert summary.status in TRAINED and summary.steps == 1
    assert math.isfinite(summary.initial_loss) and summary.max_grad_norm > 0
    checkpoint = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=True)
    assert check(checkpoint["optimizer_states"][0])
    assert {key: checkpoint["hyper_parameters"][key] for key in knobs} == knobs
