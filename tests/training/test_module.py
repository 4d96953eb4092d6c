"""The LightningModule: LR schedule, weight-decay groups, z-loss, and the SGD, clipping and smoothing options."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from test_train import tiny_config

from stability.model import ViTConfig
from stability.training import run as train
from stability.training.module import ViTClassifier, parameter_groups, warmup_cosine, z_loss


def test_warmup_then_cosine() -> None:
    multipliers = [warmup_cosine(step, warmup_steps=4, total_steps=12) for step in range(12)]
    assert multipliers[:4] == [0.25, 0.5, 0.75, 1.0]  # linear warmup reaching the peak at its last step
    assert multipliers[4] == 1.0 and multipliers[8] == pytest.approx(0.5)  # half-cosine: 1 -> 0.5 -> ~0
    assert all(a > b for a, b in zip(multipliers[4:], multipliers[5:]))
    no_warmup = [warmup_cosine(step, 0, 10, min_lr_ratio=0.1) for step in range(11)]
    assert no_warmup[0] == 1.0 and no_warmup[-1] == pytest.approx(0.1)


def test_no_weight_decay_on_norms_biases_and_embeddings() -> None:
    model = ViTClassifier(ViTConfig(embed_dim=16, depth=2, num_heads=2, residual="weighted")).model
    decay, no_decay = parameter_groups(model, weight_decay=0.05)
    names = {id(p): n for n, p in model.named_parameters()}
    decayed = {names[id(p)] for p in decay["params"]}
    exempt = {names[id(p)] for p in no_decay["params"]}
    assert no_decay["weight_decay"] == 0.0 and decay["weight_decay"] == 0.05
    assert {"pos_embed", "cls_token", "blocks.0.norm1.weight", "blocks.0.attn.qkv.bias",
            "blocks.0.ls1.gamma", "head.bias"} <= exempt
    assert {"blocks.0.attn.qkv.weight", "blocks.1.mlp.fc2.weight", "head.weight",
            "patch_embed.proj.weight"} <= decayed
    assert decayed.isdisjoint(exempt) and len(decayed | exempt) == len(list(model.parameters()))


def test_accuracy_is_the_fraction_of_images_right() -> None:
    # Unbalanced labels: 9 of class 0 (all right), 1 of class 1 (wrong). Top-1 accuracy is 0.9; a per-class
    # average ("macro", torchmetrics' default) would say 0.5.
    module = ViTClassifier(ViTConfig(embed_dim=16, depth=1, num_heads=2, num_classes=2))
    target = torch.tensor([0] * 9 + [1])
    logits = torch.tensor([[1.0, 0.0]] * 10)
    for metric in (module.val_acc, module.test_acc):
        metric.update(logits, target)
        assert float(metric.compute()) == pytest.approx(0.9)


def test_z_loss_is_the_mean_squared_log_partition_function() -> None:
    logits = torch.tensor([[0.0, 0.0], [math.log(3.0), 0.0]])
    # log Z = log 2 and log 4 (Wortsman et al. 2023, sec. 3.2: z-loss = log^2 Z)
    assert float(z_loss(logits)) == pytest.approx((math.log(2) ** 2 + math.log(4) ** 2) / 2)


def test_sgd_with_clipping_smoothing_and_z_loss_trains(tmp_path: Path) -> None:
    config = tiny_config(optimizer="sgd", lr=0.05, label_smoothing=0.1, z_loss=1e-4)
    config["trainer"]["gradient_clip_val"] = 0.5
    summary = train.run(config, tmp_path / "sgd")
    assert summary.status in ("completed", "collapsed")  # a few steps: may still be at chance
    assert summary.hparams["optimizer"] == "sgd" and summary.hparams["gradient_clip_val"] == 0.5
    assert summary.hparams["label_smoothing"] == 0.1 and summary.hparams["z_loss"] == 1e-4
    assert summary.max_grad_norm > 0  # logged before clipping: may exceed the 0.5 clip value


def test_soft_targets_with_smoothing_give_timms_mixup_loss() -> None:
    """Mixup's (B, K) targets go through the same cross-entropy and smoothing as class indices: the loss is
    timm's SoftTargetCrossEntropy on timm's smoothed mixed targets (the recipe's training script)."""
    from timm.data.mixup import mixup_target
    from timm.loss import SoftTargetCrossEntropy

    module = ViTClassifier(ViTConfig(embed_dim=16, depth=1, num_heads=2))
    logits = torch.randn(6, 10, generator=torch.Generator().manual_seed(0))
    labels = torch.tensor([0, 3, 3, 9, 1, 4])
    lam = 0.7
    mixed = lam * F.one_hot(labels, 10).float() + (1 - lam) * F.one_hot(labels.flip(0), 10).float()
    expected = SoftTargetCrossEntropy()(logits, mixup_target(labels, 10, lam, smoothing=0.1))
    assert float(module._loss(logits, mixed, 0.1)) == pytest.approx(float(expected), rel=1e-6)
    # a one-hot soft target is the class index
    one_hot = F.one_hot(labels, 10).float()
    assert float(module._loss(logits, one_hot, 0.1)) == pytest.approx(float(module._loss(logits, labels, 0.1)))


def test_margin_training_refuses_data_that_mixes_labels(tmp_path: Path) -> None:
    from sweep_helpers import fabricate_cifar10

    from stability.data import CIFAR10DataModule
    from stability.errors import ConfigError
    from stability.model.config import with_requirements

    vit = ViTConfig(img_size=32, patch_size=8, in_chans=3, num_classes=10, embed_dim=16, depth=1, num_heads=2,
                    **with_requirements({"attention": "shift", "norm": "centernorm"}))
    module = ViTClassifier(vit, margin_eps=0.1)
    folder = fabricate_cifar10(tmp_path, per_file=2)
    module.check_data(CIFAR10DataModule(str(folder), batch_size=4, num_workers=0, allow_unverified=True))
    with pytest.raises(ConfigError) as err:
        module.check_data(CIFAR10DataModule(str(folder), batch_size=4, num_workers=0, allow_unverified=True,
                                             cutmix=1.0))
    assert str(err.value).startswith("model.margin_eps=0.1 needs class labels") and "\n" not in str(err.value)
