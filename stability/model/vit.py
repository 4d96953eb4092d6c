"""The configurable Vision Transformer (Dosovitskiy et al. 2021), every stability trick a toggle.

Each component is built by the registry (:func:`stability.model.registry.build`) from the value its toggle
holds: a built-in name (the small name -> builder maps of stems, norms, attention, position, residual, mlp,
head; init is a name -> function map), an installed entry point or a user's class path, all the same way. A
builder takes the whole config and reads the fields its component needs, so this file holds no per-component
settings. A disabled trick is the baseline class (often ``nn.Identity``), not an ``if``. With every toggle at its
first value, parameter names, shapes and outputs are those of ``timm.models.vision_transformer.VisionTransformer``
of the same size.

Notation: B batch, N = P + (img_size / patch_size)^2 tokens (P = 1 class token first, or none with the
shift mixer), D embed_dim.
"""

from __future__ import annotations

from functools import partial

import torch
from timm.layers import DropPath
from torch import nn

from stability.model import registry
from stability.model.config import ViTConfig


class Block(nn.Module):
    """Pre-norm transformer block (Dosovitskiy et al. 2021, Eqs. 2-3; timm ``Block``):

        x = x + alpha_1 * Attn(N_1(x) [+ LaPE pe_l])
        x = x + alpha_2 * MLP(N_2(x))

    with alpha = 1 (``nn.Identity``) unless residual="weighted", and DropPath on each branch.
    ``forward`` takes and returns the LaPE position embedding, None unless pos_embed="lape".

    A mixer that acts on the stream (``attn.on_stream``: the shift of ShiftViT and LipShiFT) replaces the
    whole first line by x = Shift(x): no norm, no residual around it (``norm1``, ``ls1`` are identities).
    With mlp="liresconv", norm="centernorm", residual="weighted" (init 0.2) and activation="minmax" this
    block *is* LipShiFT's block: x = Shift(x); x = x + alpha_b * MinMax(h + alpha_c * Conv3x3(h)), h = CN(x).
    """

    def __init__(self, cfg: ViTConfig, drop_path: float = 0.0) -> None:
        super().__init__()
        attn = registry.build("attention", cfg)
        self.attn_on_stream = bool(getattr(attn, "on_stream", False))
        branch = not self.attn_on_stream  # attention is a residual branch (timm's module order below)
        self.norm1 = registry.build("norm", cfg) if branch else nn.Identity()
        self.pe_norm = registry.build("pos_embed", cfg)
        self.attn = attn
        self.ls1 = registry.build("residual", cfg) if branch else nn.Identity()
        self.drop_path1 = DropPath(drop_path) if drop_path > 0 and branch else nn.Identity()
        self.norm2 = registry.build("norm", cfg)
        self.mlp = registry.build("mlp", cfg)
        self.ls2 = registry.build("residual", cfg)
        self.drop_path2 = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: torch.Tensor, pe: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
        if self.attn_on_stream:
            x = self.attn(x)  # (B, N, D): shift the stream itself
        else:
            h, pe = self.pe_norm(self.norm1(x), pe)  # (B, N, D): N_1(x), plus LN_l(pe) under LaPE (Eq. 9)
            x = x + self.drop_path1(self.ls1(self.attn(h)))  # (B, N, D)
        x = x + self.drop_path2(self.ls2(self.mlp(self.norm2(x))))  # (B, N, D)
        return x, pe


class PostNormBlock(Block):
    """Post-norm block, the placement of the official LipsFormer code (``SwinTransformerBlock.forward``):

        x = N_1(x + alpha_1 * Attn(x [+ LaPE pe_l]))
        x = N_2(x + alpha_2 * MLP(x))

    Same modules and names as :class:`Block`; only the order differs (a stream mixer: x = Shift(x) first).
    """

    def forward(self, x: torch.Tensor, pe: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
        if self.attn_on_stream:
            x = self.attn(x)  # (B, N, D)
        else:
            h, pe = self.pe_norm(x, pe)  # (B, N, D): the raw stream, plus LN_l(pe) under LaPE
            x = self.norm1(x + self.drop_path1(self.ls1(self.attn(h))))  # (B, N, D)
        x = self.norm2(x + self.drop_path2(self.ls2(self.mlp(x))))  # (B, N, D)
        return x, pe


BLOCKS: dict[str, type[Block]] = {"pre": Block, "post": PostNormBlock}


def pool_token(x: torch.Tensor, num_prefix_tokens: int = 1) -> torch.Tensor:
    """Class-token readout (Dosovitskiy et al. 2021, Eq. 4): (B, N, D) -> (B, D)."""
    return x[:, 0]


def pool_avg(x: torch.Tensor, num_prefix_tokens: int = 1) -> torch.Tensor:
    """Mean of the patch tokens, class token excluded (timm global_pool="avg"): (B, N, D) -> (B, D)."""
    return x[:, num_prefix_tokens:].mean(dim=1)


POOLS = {"token": pool_token, "avg": pool_avg}
NO_STATS = {"max_logit": float("nan"), "entropy": float("nan")}  # a mixer that records no attention stats


class VisionTransformer(nn.Module):
    """ViT classifier built from a :class:`ViTConfig`: images (B, C, H, W) -> logits (B, num_classes).

    The final norm is ``norm`` (before the class-token readout) for global_pool="token" and ``fc_norm``
    (after averaging) for "avg", as in timm; it is kept with post-norm placement (the LipsFormer code also
    ends with a norm before its head) and is the ``norm`` toggle's layer, like every token norm.
    """

    def __init__(self, cfg: ViTConfig | None = None) -> None:
        super().__init__()
        cfg = cfg if cfg is not None else ViTConfig()
        self.cfg = cfg
        dim = cfg.embed_dim
        self.patch_embed = registry.build("stem", cfg)
        if cfg.num_prefix_tokens:
            self.cls_token = nn.Parameter(torch.empty(1, 1, dim))
            nn.init.normal_(self.cls_token, std=1e-6)  # timm's init
        else:  # the shift mixer never reaches a class token (timm: class_token=False)
            self.register_parameter("cls_token", None)
        self.pos_embed = registry.build("pos_embed_type", cfg)  # (1, N, D)
        self.pos_input = registry.build("pos_embed", cfg, role="input")
        rates = torch.linspace(0, cfg.drop_path_rate, cfg.num_blocks).tolist()  # stochastic depth rule
        self.blocks = nn.ModuleList([registry.build("norm_placement", cfg, rate) for rate in rates])
        self.norm = registry.build("norm", cfg) if cfg.global_pool == "token" else nn.Identity()
        self.pool = partial(POOLS[cfg.global_pool], num_prefix_tokens=cfg.num_prefix_tokens)
        self.fc_norm = registry.build("norm", cfg) if cfg.global_pool == "avg" else nn.Identity()
        self.head = registry.build("head", cfg)
        registry.resolve("init", cfg.init)(self)  # init is a function of the built model, not a module
        registry.resolve("reparam", cfg.reparam)(self)  # after the init: it reparametrises the initial weights

    def forward_features(self, images: torch.Tensor) -> torch.Tensor:
        """Images (B, C, H, W) -> final tokens (B, N, D)."""
        x = self.patch_embed(images)  # (B, N-P, D)
        if self.cls_token is not None:
            x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)  # (B, N, D)
        x, pe = self.pos_input(x, self.pos_embed)  # default: x + E_pos, pe None; LaPE: x, pe = E_pos
        for block in self.blocks:
            x, pe = block(x, pe)  # (B, N, D)
        return self.norm(x)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.forward_features(images))  # (B, D)
        return self.head(self.fc_norm(x))  # (B, num_classes)

    # ---------------------------------------------------------------- attention telemetry
    def set_attention_stats(self, enabled: bool) -> None:
        """Make every attention layer also compute its explicit logits on the following forwards (costly:
        an extra (B, H, N, N) product per layer), or return to the plain fused path. Clears old stats.
        A user's mixer without ``set_stats_recording`` is skipped (its stats read NaN)."""
        for block in self.blocks:
            if hasattr(block.attn, "set_stats_recording"):
                block.attn.set_stats_recording(enabled)

    def attention_stats(self) -> list[dict[str, float]]:
        """Per layer {"max_logit", "entropy"} of the last forward with stats on (NaN where none ran)."""
        return [block.attn.stats() if hasattr(block.attn, "stats") else dict(NO_STATS) for block in self.blocks]

    @torch.jit.ignore
    def no_weight_decay(self) -> set[str]:
        """Parameter names timm exempts from weight decay."""
        return {"pos_embed", "cls_token"}
