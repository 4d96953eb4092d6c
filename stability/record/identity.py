"""A run's identity, from its resolved config alone: its toggles, its hyperparameters, its id and its name.

Plain Python (no torch, no Lightning), so the training run that writes ``summary.json``, the sweep parent
that names run folders, the results loader and the tests all use the same definitions:

- ``TOGGLES``: every toggle, where it lives in the config and its built-in values, baseline first. The model
  toggles come from the component registry (:data:`stability.model.registry.KINDS`, their one source of
  truth), which also accepts a user's own component by entry point or class path: :meth:`Toggle.accepts`
  says whether a value is valid, ``values`` lists only the built-in ones. ``warmup`` is the training recipe's
  toggle (``ViTClassifier(warmup=...)``): on in the baseline, because the papers' claim is that their tricks
  make it unnecessary.
- :func:`config_hash`: the run id, a hash of the resolved config. The id *is* the experiment: the same cell
  reached from two grid files, or from a re-run, lands in the same folder; any change makes a new run.
- :func:`run_name`: for people and TensorBoard's run filter: the toggles that differ from the baseline, any
  other key the grid varies, lr and seed, then the id, e.g. ``stem=conv,warmup=off,lr=0.01,seed=0-3f2a9c1e``.
  Names are labels only: values are always read from records, never parsed back out of a name.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from stability.model import registry
from stability.record.config_files import get_dotted

SEED_KEY = "seed_everything"
LR_KEY = "model.lr"
# The run table's names for the two hyperparameters every sweep varies (columns, hparams, claim keys).
LR = "lr"
SEED = "seed"


@dataclass(frozen=True)
class Toggle:
    """One stability toggle: its name, its dotted key in the resolved config, its built-in values (baseline
    first), and whether it is a model component kind that also takes a user's own component."""

    name: str
    key: str
    values: tuple[Any, ...]
    component: bool = False  # a registry kind: entry points and class paths are valid values too

    @property
    def baseline(self) -> Any:
        """The value of the control (timm's ViT with the usual recipe)."""
        return self.values[0]

    def accepts(self, value: Any) -> bool:
        """Whether ``value`` is valid: a built-in value, or for a component toggle an installed entry point or
        an importable class path (:func:`stability.model.registry.accepts`; a class path is imported)."""
        return value in self.values or (self.component and registry.accepts(self.name, value))


def _all_toggles() -> dict[str, Toggle]:
    toggles = {name: Toggle(name, f"model.vit.{name}", kind.builtins, component=True)
               for name, kind in registry.KINDS.items()}
    toggles["warmup"] = Toggle("warmup", "model.warmup", (True, False))
    return toggles


TOGGLES: dict[str, Toggle] = _all_toggles()


def baselines() -> dict[str, Any]:
    """toggle name -> its baseline value."""
    return {name: toggle.baseline for name, toggle in TOGGLES.items()}


def toggles_of(config: Mapping[str, Any]) -> dict[str, Any]:
    """The toggle values of a resolved config, in ``TOGGLES`` order; a toggle the config lacks is at its baseline
    (a resolved config leaves out options added later while they hold their defaults, and every toggle's
    default is its baseline)."""
    return {name: get_dotted(config, toggle.key, toggle.baseline) for name, toggle in TOGGLES.items()}


# Headline hyperparameters: summary.json's ``hparams`` and the HParams tab's columns besides the toggles.
# column -> dotted key in the resolved config
HPARAM_KEYS: dict[str, str] = {
    LR: LR_KEY,
    "weight_decay": "model.weight_decay",
    "optimizer": "model.optimizer",
    "warmup_epochs": "model.warmup_epochs",
    "label_smoothing": "model.label_smoothing",
    "z_loss": "model.z_loss",
    "margin_eps": "model.margin_eps",  # margin training (certified robustness): a different experiment
    "qk_clip": "qk_clip.tau",  # QK-clip's logit threshold (Kimi K2); None: off (the group is left out then)
    "independent_wd": "model.independent_wd",  # weight decay independent of the lr (Wortsman et al. 2023)
    "adam_eps": "model.adam_eps",
    "agc": "model.agc",  # adaptive gradient clipping (Brock et al. 2021)
    SEED: SEED_KEY,
    "batch_size": "data.batch_size",
    "max_epochs": "trainer.max_epochs",
    "gradient_clip_val": "trainer.gradient_clip_val",
    "data": "data.class_path",
    "embed_dim": "model.vit.embed_dim",
    "depth": "model.vit.depth",
    "num_heads": "model.vit.num_heads",
    "patch_size": "model.vit.patch_size",
    "img_size": "model.vit.img_size",
    "num_classes": "model.vit.num_classes",
}


def hparams_of(config: Mapping[str, Any]) -> dict[str, Any]:
    """The headline hyperparameters of a resolved config, typed as in the config (None where unset; a key left out
    at its default reads as that default: :func:`later_default`); the data module is named by its class name."""
    hparams = {column: get_dotted(config, key, later_default(key)) for column, key in HPARAM_KEYS.items()}
    if hparams["data"] is not None:
        hparams["data"] = str(hparams["data"]).rsplit(".", 1)[-1]
    return hparams


def config_hash(config: Mapping[str, Any]) -> str:
    """Short stable hash of a resolved config: the run id. Where the run folder is (``run_dir``) does not
    count, so a moved sweep folder still resumes; nor does the torch thread count a run's ``config.yaml``
    records (``threads``): how a run computes, not what it is."""
    identity = {k: v for k, v in config.items() if k not in ("run_dir", "threads")}
    return hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()[:8]


# -- names -------------------------------------------------------------------------------------------------
# Short labels for keys grids often vary; any other key is labelled by its last component.
LABELS = {"model.weight_decay": "wd", "data.batch_size": "bs", "data.init_args.batch_size": "bs",
          "trainer.gradient_clip_val": "clip", "trainer.max_epochs": "epochs", "qk_clip.tau": "qk_clip"}
MAX_NAME = 180  # stay well below the 255-byte file-name limit; the id suffix keeps names unique


def format_value(value: Any) -> str:
    """A config value as it reads in a run name: ``0.001``, ``on``/``off``, a class's short name."""
    if isinstance(value, bool):
        text = "on" if value else "off"
    elif isinstance(value, float):
        text = f"{value:.4g}"
    elif isinstance(value, Mapping) and "class_path" in value:
        text = str(value["class_path"]).rsplit(".", 1)[-1]
    elif isinstance(value, (list, tuple)):
        text = "_".join(format_value(v) for v in value)
    else:
        text = str(value)
    return re.sub(r"[^A-Za-z0-9.+\-_]", "_", text)  # no '/', ',' or '=' inside a value


def labels_for(keys: Iterable[str]) -> dict[str, str]:
    """Short labels for dotted keys: a known alias, else the last component; the full key if those clash."""
    keys = list(keys)
    short = {k: LABELS.get(k, k.rsplit(".", 1)[-1]) for k in keys}
    counts: dict[str, int] = {}
    for label in short.values():
        counts[label] = counts.get(label, 0) + 1
    return {k: (label if counts[label] == 1 else k) for k, label in short.items()}


def readable_name(config: Mapping[str, Any], varying: Iterable[str] = ()) -> str:
    """The readable part of a run name (without the id suffix).

    Args:
        config: the run's resolved config.
        varying: dotted keys a grid varies besides the toggles, lr and seed (they are named always, so the
            cells of one sweep line up column by column).
    """
    parts = []
    toggle_keys = {toggle.key for toggle in TOGGLES.values()}
    for name, toggle in TOGGLES.items():
        value = get_dotted(config, toggle.key, None)
        if value is not None and value != toggle.baseline:
            parts.append(f"{name}={format_value(value)}")
    extra = [k for k in varying if k not in toggle_keys and k not in (LR_KEY, SEED_KEY)]
    for key, label in labels_for(extra).items():
        parts.append(f"{label}={format_value(get_dotted(config, key, None))}")
    lr = get_dotted(config, LR_KEY, None)
    if lr is not None:
        parts.append(f"lr={format_value(lr)}")
    seed = config.get(SEED_KEY)
    if seed is not None:
        parts.append(f"seed={format_value(seed)}")
    return ",".join(parts) or "baseline"


def run_name(config: Mapping[str, Any], varying: Iterable[str] = (), run_id: str | None = None) -> str:
    """``<readable part>-<run id>``: the run's folder name (the id defaults to :func:`config_hash`)."""
    readable = readable_name(config, varying)
    if len(readable) > MAX_NAME:
        readable = readable[:MAX_NAME].rstrip(",")
    return f"{readable}-{run_id or config_hash(config)}"


# Options added after sweeps had run: left out of a resolved config while they hold these defaults, so the
# run id (:func:`config_hash` of the resolved config) of every earlier run stays what it was,
# and its sweep still resumes. A config that sets one to another value records it (and is a new run). A config
# without the key parses back to the same default, so dropping it loses nothing.
# A default that is itself a mapping stands for a group of keys below that one (``model.vit``'s).
LATER_DEFAULTS: dict[str, dict[str, Any]] = {
    "model": {"independent_wd": False, "adam_eps": 1e-8, "agc": False, "agc_clip_factor": 0.01,
              "vit": {"reparam": "none", "softcap": 50.0, "dyt_alpha_init": 0.5}},
    "data.init_args": {"randaugment": None, "random_erasing": 0.0, "mixup": 0.0, "cutmix": 0.0,
                       "mixup_off_epoch": None},
}
# Top-level option groups added after sweeps had run: left out whole while every key holds its default.
LATER_GROUPS: dict[str, dict[str, Any]] = {"qk_clip": {"tau": None}}


def drop_later_defaults(config: dict[str, Any]) -> dict[str, Any]:
    """``config`` without the :data:`LATER_DEFAULTS` keys that hold their default, and without the
    :data:`LATER_GROUPS` that hold nothing else (in place; returned)."""
    for where, defaults in LATER_DEFAULTS.items():
        node: Any = config
        for part in where.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        _drop_defaults(node, defaults)
    for group, defaults in LATER_GROUPS.items():
        if isinstance(config.get(group), dict) and not _drop_defaults(dict(config[group]), defaults):
            del config[group]
    return config


def _drop_defaults(node: Any, defaults: dict[str, Any]) -> dict[str, Any]:
    """``node`` without the keys holding their ``defaults`` (a mapping default: the same below that key)."""
    if not isinstance(node, dict):
        return {}
    for key, default in defaults.items():
        if isinstance(default, dict):
            _drop_defaults(node.get(key), default)
        elif key in node and node[key] == default and type(node[key]) is type(default):
            del node[key]
    return node


def later_default(key: str) -> Any:
    """The default a resolved config leaves out for the dotted ``key`` (:data:`LATER_DEFAULTS`,
    :data:`LATER_GROUPS`), or None when it has none: reading a dropped key back gives its default."""
    tables: dict[str, Any] = {**LATER_DEFAULTS, **LATER_GROUPS}
    for where, defaults in tables.items():
        if key.startswith(where + "."):
            node: Any = defaults
            for part in key[len(where) + 1:].split("."):
                node = node.get(part) if isinstance(node, dict) else None
            return None if isinstance(node, dict) else node
    return None
