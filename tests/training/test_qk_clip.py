"""QK-clip (Kimi K2): a head whose max logit exceeded tau has its q and k weights scaled by sqrt(tau / S_max)."""

from __future__ import annotations

import math

import lightning as L
import pytest
import torch
from torch import nn

from stability.data import DigitsDataModule
from stability.errors import ConfigError
from stability.model import ViTConfig
from stability.model.attention import Attention, CosineAttention
from stability.model.sigma_reparam import apply_sigma_reparam
from stability.training.module import ViTClassifier
from stability.training.qk_clip import QKClip, head_max_logits


def per_head_max(attn: Attention, x: torch.Tensor) -> torch.Tensor:
    """Per-head max logit written out from the definition: max_{b,i,j} q_i . k_j / sqrt(d), (H,)."""
    B, N, C = x.shape
    H, d = attn.num_heads, attn.head_dim
    q, k, _ = attn.qkv(x).reshape(B, N, 3, H, d).permute(2, 0, 3, 1, 4)  # each (B, H, N, d)
    return torch.einsum("bhid,bhjd->bhij", q, k).amax(dim=(0, 2, 3)) / math.sqrt(d)


def planted_layer() -> tuple[Attention, torch.Tensor]:
    """A fixed 2-head layer whose head 0 has logits far above 100, head 1 small ones."""
    torch.manual_seed(0)
    attn = Attention(8, 2)
    with torch.no_grad():
        attn.qkv.weight[0:4].mul_(60.0)  # head 0's q rows
        attn.qkv.weight[8:12].mul_(60.0)  # head 0's k rows
        attn.qkv.bias.normal_(0.0, 0.5)
    x = torch.randn(3, 5, 8, generator=torch.Generator().manual_seed(1))
    return attn, x


def test_clip_brings_the_planted_heads_max_logit_to_tau_and_leaves_the_other_head() -> None:
    attn, x = planted_layer()
    before = per_head_max(attn, x).detach()
    assert before[0] > 100.0 > before[1]
    untouched = [attn.qkv.weight[4:8].clone(), attn.qkv.weight[12:24].clone(), attn.qkv.bias[4:8].clone()]
    clip = QKClip(tau=100.0)
    clip.attach(attn)
    attn.train()
    attn(x)  # the step's forward: the hook measures the per-head maxima
    torch.testing.assert_close(clip.pending_max_logits()[0], before, rtol=1e-5, atol=1e-4)
    assert clip.clip() == 1
    after = per_head_max(attn, x).detach()
    assert after[0].item() == pytest.approx(100.0, rel=1e-5)
    assert after[1].item() == before[1].item()
    for old, new in zip(untouched, [attn.qkv.weight[4:8], attn.qkv.weight[12:24], attn.qkv.bias[4:8]]):
        assert torch.equal(old, new)  # head 1's q and k, and every v row, untouched
    gamma = clip.last_gamma[0]
    assert gamma[0].item() == pytest.approx(100.0 / before[0].item(), rel=1e-6) and gamma[1].item() == 1.0
    assert clip.clip() == 0  # the maxima are forgotten after a clip: nothing measured, nothing clipped
    clip.detach()


def test_the_hook_measures_training_forwards_only_and_takes_the_max_over_them() -> None:
    attn, x = planted_layer()
    clip = QKClip(tau=100.0)
    clip.attach(attn)
    attn.eval()
    attn(x)
    assert clip.pending_max_logits() == [None]
    attn.train()
    attn(x[:1])
    attn(x)
    torch.testing.assert_close(clip.pending_max_logits()[0], per_head_max(attn, x).detach(), rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(head_max_logits(attn, attn.qkv(x)), per_head_max(attn, x).detach(), rtol=1e-5,
                               atol=1e-4)
    clip.detach()


def test_layers_qk_clip_cannot_act_on_are_refused() -> None:
    with pytest.raises(ConfigError, match="qk_clip"):
        QKClip().attach(CosineAttention(8, 2))
    with pytest.raises(ConfigError, match="sigma-Reparam"):
        QKClip().attach(apply_sigma_reparam(Attention(8, 2)))
    with pytest.raises(ConfigError, match="tau"):
        QKClip(tau=-1.0)


def fit_one_step(callbacks: list[L.Callback]) -> ViTClassifier:
    L.seed_everything(0, verbose=False)
    module = ViTClassifier(ViTConfig(embed_dim=16, depth=2, num_heads=2), lr=1e-3, warmup=False)
    trainer = L.Trainer(max_steps=1, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
                        callbacks=callbacks)
    trainer.fit(module, datamodule=DigitsDataModule(batch_size=32, seed=0))
    return module


def test_a_real_one_step_fit_clips_the_stepped_weights_by_sqrt_gamma() -> None:
    plain = fit_one_step([])
    clip = QKClip(tau=1e-3)  # below every head's max logit at init (~0.01-0.02): every head is clipped
    clipped = fit_one_step([clip])
    assert clip.clipped_heads == 4 and len(clip.last_gamma) == 2
    d, D = 8, 16
    for i, gamma in enumerate(clip.last_gamma):
        assert (gamma < 1).all()
        w_plain = plain.model.blocks[i].attn.qkv.weight.detach()
        w_clip = clipped.model.blocks[i].attn.qkv.weight.detach()
        for h in range(2):
            for rows in (slice(h * d, (h + 1) * d), slice(D + h * d, D + (h + 1) * d)):  # q, then k rows
                torch.testing.assert_close(w_clip[rows], gamma[h].sqrt() * w_plain[rows])
        torch.testing.assert_close(w_clip[2 * D:], w_plain[2 * D:], rtol=0, atol=0)  # v rows untouched
    assert not clip._handles  # hooks removed at the end of the fit


def test_a_fit_with_the_default_tau_leaves_a_healthy_model_alone() -> None:
    plain = fit_one_step([])
    clip = QKClip()
    clipped = fit_one_step([clip])
    assert clip.clipped_heads == 0 and all((g == 1).all() for g in clip.last_gamma)
    for a, b in zip(plain.model.parameters(), clipped.model.parameters()):
        assert torch.equal(a, b)
    assert isinstance(clipped.model.blocks[0].attn.qkv, nn.Linear)
