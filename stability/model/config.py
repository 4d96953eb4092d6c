"""The ViT's typed config: the usual dimensions plus one field per stability trick (toggle).

Every toggle is a ``Literal`` whose first value is the baseline (timm's ViT), so the default config *is*
the control. ``MODEL_TOGGLES`` is derived from those ``Literal`` types, and ``__post_init__`` validates the
values against it: dataclasses do not check ``Literal`` types themselves, and the config may be built
from Python, YAML (LightningCLI / jsonargparse) or a sweep grid, so the check has to live here.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, get_args

from stability.errors import ConfigError

GlobalPool = Literal["token", "avg"]
ConvStemInit = Literal["pycls", "pytorch"]
Stem = Literal["patchify", "conv"]
Norm = Literal["layernorm", "centernorm", "rmsnorm"]
NormPlacement = Literal["pre", "post"]
AttentionKind = Literal["dot", "cosine", "qknorm", "shift", "cosine_paper"]
PosEmbed = Literal["default", "lape"]
PosEmbedType = Literal["learned", "sincos"]
Residual = Literal["plain", "weighted"]
Init = Literal["default", "spectral", "orthogonal"]
Activation = Literal["gelu", "minmax"]
MlpKind = Literal["mlp", "liresconv"]
Head = Literal["linear", "lln"]

# toggle name -> valid values, baseline first (the order of the Literal types above).
MODEL_TOGGLES: dict[str, tuple[str, ...]] = {
    "stem": get_args(Stem),
    "norm": get_args(Norm),
    "norm_placement": get_args(NormPlacement),
    "attention": get_args(AttentionKind),
    "pos_embed": get_args(PosEmbed),
    "pos_embed_type": get_args(PosEmbedType),
    "residual": get_args(Residual),
    "init": get_args(Init),
    "activation": get_args(Activation),
    "mlp": get_args(MlpKind),
    "head": get_args(Head),
}

# Settings a toggle value cannot work without, besides itself (what the value needs is checked in
# ViTConfig.__post_init__; this is what to set to satisfy it, for code that switches one value on alone).
REQUIRED_SETTINGS: dict[tuple[str, str], dict[str, object]] = {
    # the shift mixer never reaches a class token, so the model has none and reads out by averaging
    ("attention", "shift"): {"global_pool": "avg"},
}


def with_requirements(settings: dict[str, object]) -> dict[str, object]:
    """``settings`` plus what their toggle values need (:data:`REQUIRED_SETTINGS`), explicit keys winning:
    ``{"attention": "shift"}`` -> ``{"global_pool": "avg", "attention": "shift"}``."""
    needed: dict[str, object] = {}
    for key, value in settings.items():
        needed.update(REQUIRED_SETTINGS.get((key, value), {}))  # type: ignore[arg-type]
    return {**needed, **settings}

_CHOICES: dict[str, tuple[str, ...]] = {"global_pool": get_args(GlobalPool),
                                        "conv_stem_init": get_args(ConvStemInit), **MODEL_TOGGLES}
_POSITIVE_INTS = ("img_size", "patch_size", "in_chans", "num_classes", "embed_dim", "depth", "num_heads",
                  "shift_div")


@dataclass
class ViTConfig:
    """Dimensions and stability toggles of :class:`stability.model.VisionTransformer`.

    Defaults are the digits-sized model (8x8 greyscale images, 10 classes) with every toggle at baseline.
    """

    # --- dimensions (Dosovitskiy et al. 2021, "An Image is Worth 16x16 Words", Sec. 3.1) ---
    img_size: int = 8  # input height = width, in pixels
    patch_size: int = 2  # side of one patch token: the token grid is (img_size / patch_size)^2
    in_chans: int = 1  # image channels (1 for digits, 3 for CIFAR / ImageNet)
    num_classes: int = 10  # width of the classifier head
    embed_dim: int = 64  # token width D
    depth: int = 6  # transformer blocks (one fewer with stem="conv" and conv_stem_remove_block)
    num_heads: int = 4  # attention heads; head_dim = embed_dim / num_heads
    mlp_ratio: float = 4.0  # MLP hidden width = mlp_ratio * embed_dim
    drop_path_rate: float = 0.0  # stochastic depth (Huang et al. 2016), linear 0 -> rate over blocks
    global_pool: GlobalPool = "token"  # "token": class token; "avg": mean of patch tokens (timm's fc_norm)

    # --- stability toggles (first value = baseline = timm's VisionTransformer) ---
    # Token stem. "conv": Xiao et al. 2021, "Early Convolutions Help Transformers See Better", Sec. 3:
    # 3x3 stride-2 conv-BN-ReLU layers (channels doubling) whose strides multiply to patch_size, then 1x1.
    stem: Stem = "patchify"
    # Xiao et al. remove one transformer block from ViT_C so it matches ViT_P's FLOPs (Sec. 3, Table 1).
    conv_stem_remove_block: bool = True
    # Init of the conv stem: "pycls", the paper's code (3x3 convs N(0, sqrt(2/out)), 1x1 N(0, sqrt(1/out)), zero
    # bias), or "pytorch", PyTorch's default (a smaller token scale).
    conv_stem_init: ConvStemInit = "pycls"
    # Normalisation layer for every token norm (norm1, norm2, final norm / fc_norm).
    # "centernorm": LipsFormer (Qi et al. 2023) CenterNorm, gamma * D/(D-1) * (x - mean(x)) + beta.
    # "rmsnorm": Zhang & Sennrich 2019 RMSNorm (Eq. 4), x / sqrt(mean(x^2) + eps) * g: no centring, no bias.
    norm: Norm = "layernorm"
    # "pre": x + f(N(x)) (timm); "post": N(x + f(x)), the placement of the LipsFormer code.
    norm_placement: NormPlacement = "pre"
    # "dot": softmax(q k^T / sqrt(d)); "cosine": LipsFormer scaled cosine-similarity attention as in its
    # code, softmax(tau * q_hat k_hat^T) v; "qknorm": per-head LayerNorm on q and k (Wortsman et al. 2023;
    # Dehghani et al. 2023, ViT-22B); "shift": no attention, a parameter-free shift of channel groups by one
    # token on the 2-D grid, applied to the stream (ShiftViT, Wang et al. 2022; LipShiFT, Menon et al. 2025);
    # "cosine_paper": LipsFormer's paper form, nu * softmax(tau * q_hat k_hat^T) v_hat (v normalised too):
    # the only attention here with a global Lipschitz bound.
    attention: AttentionKind = "dot"
    cosine_tau: float = 10.0  # fixed logit scale tau of cosine attention (LipsFormer-Swin code: 10)
    cosine_nu: float = 1.0  # output scale nu of attention="cosine_paper" (the paper's value is not known)
    shift_div: int = 12  # attention="shift": channels split in shift_div groups, 4 of them shifted (n_div)
    # "default": PE added once to the tokens; "lape": Yu et al. 2023, LaPE (ICCV) Eqs. 8-11: the PE stays
    # out of the residual stream and each block adds its own LayerNorm of it to the attention input.
    pos_embed: PosEmbed = "default"
    # "learned": trunc-normal(0.02) parameter (timm); "sincos": frozen 2-D sine-cosine table, cls row 0.
    pos_embed_type: PosEmbedType = "learned"
    # "plain": x + f(x); "weighted": x + alpha * f(x), alpha per channel and learnable (LipsFormer).
    residual: Residual = "plain"
    # Initial alpha of the weighted residual; None = 1 / (number of blocks), the LipsFormer-Swin value.
    # Ignored when residual="plain".
    residual_init: float | None = None
    # "default": timm's ViT init; "spectral": LipsFormer spectral init (xavier-normal, then W / sigma_max);
    # "orthogonal": LipShiFT's init, (semi-)orthogonal Linear and conv weights, zero biases.
    init: Init = "default"
    # Activation of the MLP (or of the LiResConv branch). "minmax": GroupSort-2 (Anil et al. 2019), the
    # channels in two halves a, b -> [max(a, b), min(a, b)]: 1-Lipschitz and gradient-norm preserving.
    activation: Activation = "gelu"
    # The channel-mixing sub-block. "liresconv": LipShiFT's (from LiResNet, Hu et al. 2023)
    # act(h + alpha_c * Conv3x3(h)) on the token grid, alpha_c per channel, learnable, initialised to 0.2.
    mlp: MlpKind = "mlp"
    # Classifier. "lln": last-layer normalisation (Singla et al. 2022; LipShiFT): rows of W scaled to unit
    # l2 norm, so every pair of classes has a margin of Lipschitz constant <= ||w_i - w_j|| <= 2 per unit
    # of feature change.
    head: Head = "linear"

    def __post_init__(self) -> None:
        for key, valid in _CHOICES.items():
            value = getattr(self, key)
            if value not in valid:
                raise ConfigError(f"{key}={value!r} is not valid; valid values: {', '.join(valid)}")
        for key in _POSITIVE_INTS:
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{key}={value!r} is not valid; it must be a positive integer")
        if not isinstance(self.conv_stem_remove_block, bool):
            raise ConfigError(f"conv_stem_remove_block={self.conv_stem_remove_block!r} is not valid; "
                              "valid values: true, false")
        self._check_real("mlp_ratio", self.mlp_ratio, "a positive number", lambda v: v > 0)
        self._check_real("drop_path_rate", self.drop_path_rate, "a number in [0, 1)", lambda v: 0 <= v < 1)
        self._check_real("cosine_tau", self.cosine_tau, "a positive number", lambda v: v > 0)
        self._check_real("cosine_nu", self.cosine_nu, "a positive number", lambda v: v > 0)
        if self.residual_init is not None:
            self._check_real("residual_init", self.residual_init, "null or a finite number", lambda v: True)

        if self.embed_dim % self.num_heads:
            raise ConfigError(f"embed_dim={self.embed_dim} is not divisible by num_heads={self.num_heads}: "
                              "every head needs embed_dim / num_heads channels")
        if self.img_size % self.patch_size:
            raise ConfigError(f"img_size={self.img_size} is not divisible by patch_size={self.patch_size}: "
                              "the patches must tile the image exactly")
        if self.pos_embed_type == "sincos" and self.embed_dim % 4:
            raise ConfigError(f"embed_dim={self.embed_dim} with pos_embed_type='sincos' is not valid: the 2-D "
                              "sine-cosine table needs sin and cos channels for x and y, so embed_dim must be "
                              "divisible by 4")
        if self.stem == "conv":
            self._check_conv_stem()
        if self.attention == "shift":
            self._check_shift()
        if self.activation == "minmax":
            width = self.embed_dim if self.mlp == "liresconv" else int(self.embed_dim * self.mlp_ratio)
            if width % 2:
                raise ConfigError(f"activation='minmax' with mlp={self.mlp!r} and embed_dim={self.embed_dim}, "
                                  f"mlp_ratio={self.mlp_ratio} is not valid: MinMax sorts pairs of channels, so "
                                  f"its input width ({width}) must be even")

    def _check_shift(self) -> None:
        if self.global_pool == "token":
            raise ConfigError("attention='shift' with global_pool='token' is not valid: the shift mixer moves "
                              "tokens on the 2-D patch grid only, so no class token would ever see the image "
                              "(the model has none); use global_pool='avg'")
        if self.pos_embed == "lape":
            raise ConfigError("attention='shift' with pos_embed='lape' is not valid: LaPE adds the position "
                              "embedding to the attention input, and the shift mixer has none (it acts on the "
                              "stream); use pos_embed='default'")
        if self.shift_div < 4:
            raise ConfigError(f"shift_div={self.shift_div} with attention='shift' is not valid: four channel groups "
                              "move (left, right, up, down), so shift_div must be at least 4")
        if self.embed_dim < self.shift_div:
            raise ConfigError(f"attention='shift' with embed_dim={self.embed_dim} and shift_div={self.shift_div} "
                              "is not valid: each shifted group has embed_dim // shift_div channels, which must "
                              "be at least 1")

    def _check_conv_stem(self) -> None:
        p = self.patch_size
        if p == 1:
            raise ConfigError("patch_size=1 with stem='conv' is not valid: the conv stem needs at least one "
                              "stride-2 3x3 conv (patch_size 2, 4, 8, ...); at patch_size 1 it reduces to a "
                              "1x1 conv, i.e. patchify")
        if p & (p - 1):
            raise ConfigError(f"patch_size={p} with stem='conv' is not valid: the conv stem's stride-2 convs "
                              "multiply to a power of two, so patch_size must be 2, 4, 8, 16, ...")
        halvings = self.conv_stem_layers - 1
        if self.embed_dim % (2**halvings):
            raise ConfigError(f"embed_dim={self.embed_dim} with stem='conv' and patch_size={p} is not valid: "
                              f"the stem's channels halve back from embed_dim over its "
                              f"{self.conv_stem_layers} stride-2 convs, so embed_dim must be divisible by "
                              f"{2**halvings}")
        if self.conv_stem_remove_block and self.depth < 2:
            raise ConfigError(f"depth={self.depth} with stem='conv' and conv_stem_remove_block=true is not "
                              "valid: removing a block would leave none; use depth >= 2 or "
                              "conv_stem_remove_block=false")

    @staticmethod
    def _check_real(key: str, value: object, what: str, ok: Callable[[float], bool]) -> None:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
                or not ok(value):
            raise ConfigError(f"{key}={value!r} is not valid; it must be {what}")

    # --- derived quantities (not fields: they never appear in YAML) ---
    @property
    def grid_size(self) -> int:
        """Tokens per side of the patch grid (the same for both stems)."""
        return self.img_size // self.patch_size

    @property
    def num_blocks(self) -> int:
        """Blocks actually built: Xiao et al. drop one to pay for the conv stem's FLOPs."""
        return self.depth - 1 if self.stem == "conv" and self.conv_stem_remove_block else self.depth

    @property
    def conv_stem_layers(self) -> int:
        """Number of stride-2 3x3 convs in the conv stem: log2(patch_size)."""
        return max(self.patch_size.bit_length() - 1, 0)

    @property
    def num_prefix_tokens(self) -> int:
        """Class tokens in front of the patch tokens: 1, or 0 with the shift mixer, which never reaches one
        (as in ShiftViT and LipShiFT, which read out by average pooling)."""
        return 0 if self.attention == "shift" else 1

    @property
    def num_tokens(self) -> int:
        """Tokens in the sequence the blocks see: class token (if any) + patch tokens."""
        return self.num_prefix_tokens + self.grid_size**2

    @property
    def alpha_init(self) -> float:
        """Initial weighted-residual alpha: residual_init, else LipsFormer-Swin's 1 / L_total."""
        return self.residual_init if self.residual_init is not None else 1.0 / self.num_blocks

    def toggles(self) -> dict[str, str]:
        """The toggle values of this config, in MODEL_TOGGLES order."""
        return {name: getattr(self, name) for name in MODEL_TOGGLES}

