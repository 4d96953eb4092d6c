"""The component registry: every toggle value, built-in or a user's own class, passes the same checks.

The user's components are real classes in a real module (``own_components.py`` beside this file, importable as
a user's folder is with ``PYTHONPATH=.``), named by class path exactly as a config or grid names them.
"""

from __future__ import annotations

import dataclasses
import importlib
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import yaml
from jsonargparse import ArgumentParser
from own_components import OWN

from stability.analysis.claims import parse_claims
from stability.errors import ConfigError
from stability.model import MODEL_TOGGLES, VisionTransformer, ViTConfig, registry
from stability.model.config import with_requirements
from stability.model.lipschitz import LipschitzBound
from stability.record.identity import TOGGLES, config_hash, run_name, toggles_of

TINY = dict(img_size=8, patch_size=4, in_chans=1, num_classes=3, embed_dim=16, depth=2, num_heads=2, mlp_ratio=2.0)
CASES = [(toggle, value) for toggle, values in MODEL_TOGGLES.items() for value in (*values, OWN[toggle])]


def test_every_toggle_is_a_registry_kind_with_a_user_example() -> None:
    assert list(registry.KINDS) == list(MODEL_TOGGLES) == list(OWN)
    assert all(kind.baseline == MODEL_TOGGLES[name][0] for name, kind in registry.KINDS.items())


@pytest.mark.parametrize(("toggle", "value"), CASES, ids=[f"{t}={v}" for t, v in CASES])
def test_every_value_builds_trains_and_round_trips(toggle: str, value: str, tmp_path: Path) -> None:
    """Output shape, finite logits, a finite gradient for every trainable parameter; the config survives
    YAML and jsonargparse unchanged, and the run id and name are stable and a valid folder name."""
    cfg = ViTConfig(**TINY, **with_requirements({toggle: value}))
    torch.manual_seed(0)
    model = VisionTransformer(cfg)
    x, y = torch.randn(2, 1, 8, 8), torch.tensor([0, 2])
    logits = model(x)
    assert logits.shape == (2, 3) and torch.isfinite(logits).all()
    F.cross_entropy(logits, y).backward()
    for name, p in model.named_parameters():
        if p.requires_grad:
            assert p.grad is not None and torch.isfinite(p.grad).all(), name
        else:
            assert name == "pos_embed" and cfg.pos_embed_type == "sincos"

    as_yaml = yaml.safe_dump({"vit": dataclasses.asdict(cfg)})
    assert ViTConfig(**yaml.safe_load(as_yaml)["vit"]) == cfg
    parser = ArgumentParser(exit_on_error=False)
    parser.add_argument("--vit", type=ViTConfig, default=ViTConfig())
    parsed = parser.instantiate_classes(parser.parse_string(as_yaml)).vit
    assert parsed == cfg and type(parsed.norm) is str  # a plain str, however jsonargparse checked it

    config = {"model": {"vit": dataclasses.asdict(cfg), "lr": 0.01}, "seed_everything": 0}
    reread = yaml.safe_load(yaml.safe_dump(config))
    assert config_hash(reread) == config_hash(config)
    assert toggles_of(reread)[toggle] == value and TOGGLES[toggle].accepts(value)
    name = run_name(reread)
    assert (f"{toggle}={value}," in name) == (value != MODEL_TOGGLES[toggle][0])
    (tmp_path / name).mkdir()  # a valid folder name, one level deep
    assert [p.name for p in tmp_path.iterdir()] == [name]


@pytest.mark.parametrize("toggle", list(MODEL_TOGGLES))
def test_built_in_values_come_from_their_modules_tables_through_the_registry(toggle: str) -> None:
    """One mechanism: the registry reads each built-in module's own table (no second list of builders)."""
    paths = registry.KINDS[toggle].tables[registry.MAIN]
    builders = {}
    for path in (paths,) if isinstance(paths, str) else paths:
        module, _, table = path.partition(":")
        builders.update(getattr(importlib.import_module(module), table))
    assert tuple(builders) == MODEL_TOGGLES[toggle]
    for value in MODEL_TOGGLES[toggle]:
        assert registry.resolve(toggle, value) is builders[value]
        assert registry.source(toggle, value) == "built-in"
    assert registry.source(toggle, OWN[toggle]) == "class path"


@pytest.mark.parametrize("toggle", list(MODEL_TOGGLES))
def test_an_unknown_value_is_one_line_saying_what_is_valid_and_where_it_looked(toggle: str) -> None:
    with pytest.raises(ConfigError) as err:
        ViTConfig(**{toggle: "bogus"})
    msg = str(err.value)
    assert "\n" not in msg and f"model.vit.{toggle}: got 'bogus'" in msg
    assert all(v in msg for v in MODEL_TOGGLES[toggle])
    assert registry.GROUP in msg and f"{toggle}.<name>" in msg and "class path package.module.Class" in msg

    with pytest.raises(ConfigError) as err:
        ViTConfig(**{toggle: "nolab.parts.Thing"})
    msg = str(err.value)
    assert "\n" not in msg and "No module named 'nolab'" in msg and "sys.path searched: " in msg
    assert str(Path(__file__).parent) in msg  # the folders a user's module could be in are named
    assert all(v in msg for v in MODEL_TOGGLES[toggle])


def test_class_path_mistakes_name_the_mistake(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "brokenlab.py").write_text("import torch\nraise RuntimeError('no GPU here,\\n sorry')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    cases = {"own_components.Nope": "module own_components has no 'Nope'",
             "own_components.OWN": "own_components.OWN is a dict, not a class or function",
             "brokenlab.Norm": "importing brokenlab failed: RuntimeError: no GPU here, sorry (sys.path searched: "}
    for value, expected in cases.items():
        with pytest.raises(ConfigError) as err:
            ViTConfig(norm=value)
        assert expected in str(err.value) and "\n" not in str(err.value), str(err.value)
        assert not registry.accepts("norm", value) and not TOGGLES["norm"].accepts(value)
    assert registry.accepts("norm", "own_components.DyT") and not registry.accepts("norm", 3)


def test_claims_accept_a_class_path_and_reject_what_cannot_be_imported() -> None:
    claim = {"claim": "DyT trains as well", "treatment": {"norm": "own_components.DyT"}, "metric": "final_val_acc",
             "direction": "increase", "min_effect": 0.01}
    (parsed,) = parse_claims([claim], "grid.yaml")
    assert parsed.treatment == {"norm": "own_components.DyT"} and parsed.control == {"norm": "layernorm"}
    with pytest.raises(ConfigError, match=r"treatment\.norm: got 'nolab\.X'; valid values: layernorm, centernorm, "
                                          r"rmsnorm, dyt, an entry point or a class path"):
        parse_claims([{**claim, "treatment": {"norm": "nolab.X"}}], "grid.yaml")
    with pytest.raises(ConfigError, match=r"treatment\.warmup: got 'maybe'; valid values: True, False$"):
        parse_claims([{**claim, "treatment": {"warmup": "maybe"}}], "grid.yaml")


# ---------------------------------------------------------------- init and Lipschitz protocols
@pytest.mark.parametrize("scheme", MODEL_TOGGLES["init"])
def test_a_component_with_init_weights_is_handed_the_scheme_and_left_alone(scheme: str) -> None:
    torch.manual_seed(0)
    model = VisionTransformer(ViTConfig(**TINY, norm="own_components.SelfInit", attention="own_components.MeanMix",
                                        init=scheme))
    norms = [m for m in model.modules() if type(m).__name__ == "SelfInit"]
    assert len(norms) == 2 * TINY["depth"] + 1
    for norm in norms:
        assert norm.schemes == [scheme]  # once, with the scheme's name
        assert torch.equal(norm.weight, torch.full_like(norm.weight, 3.0))
        assert torch.equal(norm.inner.weight, torch.eye(TINY["embed_dim"]))  # the scheme did not touch it
    mixer = model.blocks[0].attn.proj  # a Linear inside a user's component without init_weights: the scheme's
    if scheme == "default":
        assert 0.012 < mixer.weight.std().item() < 0.03  # timm's trunc-normal 0.02, not PyTorch's ~0.14
    else:
        assert torch.linalg.matrix_norm(mixer.weight, ord=2).item() == pytest.approx(1.0, abs=1e-4)
    assert torch.equal(mixer.bias, torch.zeros_like(mixer.bias))


def test_a_declared_lipschitz_constant_is_used_and_an_undeclared_component_is_named() -> None:
    torch.manual_seed(0)
    cfg = ViTConfig(**TINY, norm="own_components.DyT", attention="cosine_paper", residual="own_components.Gate")
    model = VisionTransformer(cfg).eval()
    bounds = LipschitzBound(model).compute(iters=30)
    assert bounds.network is not None and bounds.unbounded_text() is None
    norm = model.blocks[0].norm1
    declared = (norm.alpha.abs() * norm.weight.abs().max()).item()
    assert bounds.as_floats()["blocks.0.norm1"] == pytest.approx(declared)

    mixer = VisionTransformer(dataclasses.replace(cfg, attention="own_components.MeanMix")).eval()
    text = LipschitzBound(mixer).compute(iters=5).unbounded_text()
    assert text is not None and "no bound known for MeanMix (attention='own_components.MeanMix')" in text
    assert text.startswith("blocks.0.attn, blocks.1.attn: ")
