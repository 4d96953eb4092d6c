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


# ------------------------------------------------------------------ the run option `qk_clip.tau`
def tiny_run_config(**top: object) -> dict:
    """The shipped digits base config, shrunk to a few steps, plus top-level option groups."""
    from pathlib import Path

    from stability.record.config_files import load_config_files

    config = load_config_files([Path(__file__).resolve().parents[2] / "ablations" / "base" / "digits.yaml"])
    config["model"]["vit"].update(embed_dim=16, depth=2, num_heads=2)
    config["model"].update(warmup=False)
    config["trainer"].update(max_epochs=1, limit_train_batches=3, limit_val_batches=1, limit_test_batches=1,
                             enable_progress_bar=False)
    return {**config, **top}


def test_qk_clip_is_off_by_default_and_left_out_of_the_resolved_config() -> None:
    from stability.record.identity import config_hash, hparams_of
    from stability.training.cli import parse

    off = parse(tiny_run_config())
    assert off.qk_clip.tau is None
    resolved = off.config_dump_dict()
    assert "qk_clip" not in resolved  # run ids of sweeps from before the option stay
    assert not {"reparam", "softcap", "dyt_alpha_init"} & set(resolved["model"]["vit"])  # same for the model's
    assert hparams_of(resolved)["qk_clip"] is None
    on = parse(tiny_run_config(qk_clip={"tau": 30}))
    kept = on.config_dump_dict()
    assert kept["qk_clip"] == {"tau": 30.0} and hparams_of(kept)["qk_clip"] == 30.0
    assert config_hash(kept) != config_hash(resolved)
    explicit_null = parse(tiny_run_config(qk_clip={"tau": None})).config_dump_dict()
    assert config_hash(explicit_null) == config_hash(resolved)  # null written out is the default: the same run


def test_later_defaults_drop_the_new_model_keys_and_the_qk_clip_group_only_at_their_defaults() -> None:
    from stability.training.cli import drop_later_defaults

    config = {"model": {"lr": 0.1, "vit": {"depth": 2, "reparam": "none", "softcap": 50.0, "dyt_alpha_init": 0.5}},
              "qk_clip": {"tau": None}}
    assert drop_later_defaults(config) == {"model": {"lr": 0.1, "vit": {"depth": 2}}}
    config = {"model": {"vit": {"reparam": "sigma", "softcap": 30.0, "dyt_alpha_init": 0.5}}, "qk_clip": {"tau": 30.0}}
    assert drop_later_defaults(config) == {"model": {"vit": {"reparam": "sigma", "softcap": 30.0}},
                                           "qk_clip": {"tau": 30.0}}
    assert drop_later_defaults({"model": {"vit": {"softcap": 50}}}) == {"model": {"vit": {"softcap": 50}}}  # an int


@pytest.mark.parametrize(("group", "message"), [
    ({"tau": 0}, "qk_clip.tau: got 0.0; it must be a positive finite number (Kimi K2: 100), or null"),
    ({"tau": -5.0}, "qk_clip.tau: got -5.0; it must be a positive finite number"),
    (7, "qk_clip: got 7; expected a mapping"),
])
def test_a_bad_qk_clip_option_is_one_line(group: object, message: str) -> None:
    from stability.training.cli import parse

    with pytest.raises(ConfigError) as err:
        parse(tiny_run_config(qk_clip=group))
    assert message in str(err.value) and "\n" not in str(err.value)


def test_qk_clip_on_a_model_it_cannot_act_on_is_refused_before_the_run_folder_exists(tmp_path) -> None:
    from stability.training import run as train

    config = tiny_run_config(qk_clip={"tau": 30})
    config["model"]["vit"]["attention"] = "cosine"
    with pytest.raises(ConfigError, match=r"qk_clip: the model has no attention layer QK-clip can act on"):
        train.run(config, tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_a_run_with_the_option_clips_and_logs_the_clipped_heads(tmp_path) -> None:
    """A real in-process run: qk_clip.tau far below the heads' logits clips them, and the count is logged."""
    from tbparse import SummaryReader

    from stability.training import run as train

    summary = train.run(tiny_run_config(qk_clip={"tau": 1e-3}), tmp_path / "run")
    assert summary.hparams["qk_clip"] == 1e-3
    frame = SummaryReader(str(tmp_path / "run")).scalars
    heads = frame[frame["tag"] == "train/qk_clip_heads"]["value"]
    # one value per step; at the first, all 2 layers x 2 heads (later, a head just clipped to tau may sit below it)
    assert len(heads) == 3 and heads.iloc[0] == 4.0 and (heads >= 1).all()


def test_claims_can_select_runs_by_the_qk_clip_threshold() -> None:
    from stability.analysis.claims import parse_claims

    claim = {"claim": "QK-clip keeps large-lr runs alive", "treatment": {"qk_clip": 30}, "control": {"qk_clip": None},
             "metric": "final_val_acc", "direction": "increase", "min_effect": 0.01}
    (parsed,) = parse_claims([claim], "grid.yaml")
    assert parsed.treatment == {"qk_clip": 30} and parsed.control == {"qk_clip": None}
    (dotted,) = parse_claims([{**claim, "treatment": {"qk_clip.tau": 30}, "control": {"qk_clip.tau": None}}], "g")
    assert dotted.treatment == {"qk_clip": 30}
