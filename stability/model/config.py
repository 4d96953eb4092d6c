"""The ViT's typed config: the usual dimensions plus one field per stability trick (toggle).

Every toggle is a ``str``: a built-in value (its first is the baseline, timm's ViT, so the default config
*is* the control), an entry point or a class path of the user's own component
(:mod:`stability.model.registry`). ``MODEL_TOGGLES`` lists the built-in values, and ``__post_init__`` checks each
value against the registry: the config may be built from Python, YAML (LightningCLI / jsonargparse) or a sweep
grid, so the check has to live here. A ``Literal`` type would refuse a researcher's own class; the toggles'
types (``Norm``, ...) are ``str`` subclasses that jsonargparse checks against the same registry at parse time.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, get_args

from stability.errors import ConfigError
from stability.model import registry

GlobalPool = Literal["token", "avg"]
ConvStemInit = Literal["pycls", "pytorch"]

# toggle name -> built-in values, baseline first (the registry's kinds, in their order). Any other value a
# toggle accepts (an entry point, a class path) is the registry's to judge: registry.accepts / registry.check.
MODEL_TOGGLES: dict[str, tuple[str, ...]] = {name: kind.builtins for name, kind in registry.KINDS.items()}

# The toggles' annotations: str, checked against the registry by jsonargparse at parse time (registry.value_type).
Stem = registry.value_type("stem")
Norm = registry.value_type("norm")
NormPlacement = registry.value_type("norm_placement")
AttentionKind = registry.value_type("attention")
PosEmbed = registry.value_type("pos_embed")
PosEmbedType = registry.value_type("pos_embed_type")
Residual = registry.value_type("residual")
Init = registry.value_type("init")
Reparam = registry.value_type("reparam")
Activation = registry.value_type("activation")
MlpKind = registry.value_type("mlp")
Head = registry.value_type("head")

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
                                        "conv_stem_init": get_args(ConvStemInit)}
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
    # Each takes a built-in value listed in its comment, an entry point <toggle>.<name> of the group
    # "stability.components", or a class path "package.module.Class" (stability.model.registry).
    # Token stem. "conv": Xiao et al. 2021, "Early Convolutions Help Transformers See Better", Sec. 3:
    # 3x3 stride-2 conv-BN-ReLU layers (channels doubling) whose strides multiply to patch_size, then 1x1.
    stem: Stem = "patchify"  # patchify | conv
    # Xiao et al. remove one transformer block from ViT_C so it matches ViT_P's FLOPs (Sec. 3, Table 1).
    conv_stem_remove_block: bool = True
    # Init of the conv stem: "pycls", the paper's code (3x3 convs N(0, sqrt(2/out)), 1x1 N(0, sqrt(1/out)), zero
    # bias), or "pytorch", PyTorch's default (a smaller token scale).
    conv_stem_init: ConvStemInit = "pycls"
    # Normalisation layer for every token norm (norm1, norm2, final norm / fc_norm).
    # "centernorm": LipsFormer (Qi et al. 2023) CenterNorm, gamma * D/(D-1) * (x - mean(x)) + beta.
    # "rmsnorm": Zhang & Sennrich 2019 RMSNorm (Eq. 4), x / sqrt(mean(x^2) + eps) * g: no centring, no bias.
    # "dyt": Dynamic Tanh (Zhu et al. 2025, "Transformers without Normalization"), gamma * tanh(alpha x) + beta,
    # alpha one learnable scalar per layer: no statistics at all.
    norm: Norm = "layernorm"  # layernorm | centernorm | rmsnorm | dyt
    dyt_alpha_init: float = 0.5  # norm="dyt": initial alpha (the official alpha_init_value for ViT: 0.5)
    # "pre": x + f(N(x)) (timm); "post": N(x + f(x)), the placement of the LipsFormer code; "peri": Peri-LN
    # (Kim et al. 2025), x + N_out(f(N_in(x))): a second norm on each branch's output.
    norm_placement: NormPlacement = "pre"  # pre | post | peri
    # "dot": softmax(q k^T / sqrt(d)); "cosine": LipsFormer scaled cosine-similarity attention as in its
    # code, softmax(tau * q_hat k_hat^T) v; "qknorm": per-head LayerNorm on q and k (Wortsman et al. 2023;
    # Dehghani et al. 2023, ViT-22B); "shift": no attention, a parameter-free shift of channel groups by one
    # token on the 2-D grid, applied to the stream (ShiftViT, Wang et al. 2022; LipShiFT, Menon et al. 2025);
    # "cosine_paper": LipsFormer's paper form, nu * softmax(tau * q_hat k_hat^T) v_hat (v normalised too):
    # the only attention here with a global Lipschitz bound; "softcap": dot-product attention whose logits are
    # soft-capped, cap * tanh(logits / cap) (Gemma Team 2024, Gemma 2, Sec. 2).
    attention: AttentionKind = "dot"  # dot | cosine | qknorm | shift | cosine_paper | softcap
    softcap: float = 50.0  # attention="softcap": the cap on the logits q k^T / sqrt(d) (Gemma 2: 50)
    cosine_tau: float = 10.0  # fixed logit scale tau of cosine attention (LipsFormer-Swin code: 10)
    cosine_nu: float = 1.0  # output scale nu of attention="cosine_paper" (the paper's value is not known)
    shift_div: int = 12  # attention="shift": channels split in shift_div groups, 4 of them shifted (n_div)
    # "default": PE added once to the tokens; "lape": Yu et al. 2023, LaPE (ICCV) Eqs. 8-11: the PE stays
    # out of the residual stream and each block adds its own LayerNorm of it to the attention input.
    pos_embed: PosEmbed = "default"  # default | lape
    # "learned": trunc-normal(0.02) parameter (timm); "sincos": frozen 2-D sine-cosine table, cls row 0.
    pos_embed_type: PosEmbedType = "learned"  # learned | sincos
    # "plain": x + f(x); "weighted": x + alpha * f(x), alpha per channel and learnable (LipsFormer);
    # "layerscale": the same form with CaiT's start, alpha = 0.1 up to 18 blocks, 1e-5 to 24, 1e-6 beyond
    # (Touvron et al. 2021, "Going deeper with Image Transformers"); "rezero": one learnable scalar per branch,
    # starting at 0 (Bachlechner et al. 2021, ReZero; De & Smith 2020, SkipInit).
    residual: Residual = "plain"  # plain | weighted | layerscale | rezero
    # Initial alpha of the weighted residual; None = 1 / (number of blocks), the LipsFormer-Swin value (layerscale,
    # rezero: their papers' starts). Ignored when residual="plain".
    residual_init: float | None = None
    # "default": timm's ViT init; "spectral": LipsFormer spectral init (xavier-normal, then W / sigma_max);
    # "orthogonal": LipShiFT's init, (semi-)orthogonal Linear and conv weights, zero biases.
    init: Init = "default"  # default | spectral | orthogonal
    # Reparametrisation of the built, initialised model. "sigma": sigma-Reparam (Zhai et al. 2023, "Stabilizing
    # Transformer Training by Preventing Attention Entropy Collapse"): every Linear and conv weight used as
    # gamma / sigma(W) * W, sigma by one power iteration per step, gamma learnable and starting at sigma(W_0).
    reparam: Reparam = "none"  # none | sigma
    # Activation of the MLP (or of the LiResConv branch). "minmax": GroupSort-2 (Anil et al. 2019), the
    # channels in two halves a, b -> [max(a, b), min(a, b)]: 1-Lipschitz and gradient-norm preserving.
    activation: Activation = "gelu"  # gelu | minmax
    # The channel-mixing sub-block. "liresconv": LipShiFT's (from LiResNet, Hu et al. 2023)
    # act(h + alpha_c * Conv3x3(h)) on the token grid, alpha_c per channel, learnable, initialised to 0.2.
    mlp: MlpKind = "mlp"  # mlp | liresconv
    # Classifier. "lln": last-layer normalisation (Singla et al. 2022; LipShiFT): rows of W scaled to unit
    # l2 norm, so every pair of classes has a margin of Lipschitz constant <= ||w_i - w_j|| <= 2 per unit
    # of feature change.
    head: Head = "linear"  # linear | lln

    def __post_init__(self) -> None:
        for key, valid in _CHOICES.items():
            value = getattr(self, key)
            if value not in valid:
                raise ConfigError(f"{key}={value!r} is not valid; valid values: {', '.join(valid)}")
        for key in MODEL_TOGGLES:
            registry.check(key, getattr(self, key))
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
        self._check_real("softcap", self.softcap, "a positive number", lambda v: v > 0)
        self._check_real("dyt_alpha_init", self.dyt_alpha_init, "a finite number", lambda v: True)
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
        """The toggle values of this config, in MODEL_TOGGLES order (a class path as given)."""
        return {name: getattr(self, name) for name in MODEL_TOGGLES}

