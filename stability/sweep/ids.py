"""Readable run names (the run *id* is computed where configs are resolved: :mod:`stability.sweep.plan`).

A run's id is a hash of its fully resolved config (:func:`stability.train.config_hash`, the same hash
``summary.json`` records as ``run_id``), so the id *is* the experiment: the same cell reached from two
grid files, or from a re-run, lands in the same folder, and any change to the config makes a new run.

The name is for people and for TensorBoard's run filter: the toggles that differ from the baseline,
then any other key the grid varies, then lr and seed, then the id's first characters, e.g.
``stem=conv,warmup=off,lr=0.01,seed=0-3f2a9c1e``. Sorting or grepping names shows a cell at a glance;
the id suffix keeps two cells apart even when their readable part is the same.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

from stability.sweep.grid import SEED_KEY, get_dotted

LR_KEY = "model.lr"
WARMUP_KEY = "model.warmup"
# Short labels for keys grids often vary; any other key is labelled by its last component.
LABELS = {"model.weight_decay": "wd", "data.batch_size": "bs", "data.init_args.batch_size": "bs",
          "trainer.gradient_clip_val": "clip", "trainer.max_epochs": "epochs"}
MAX_NAME = 180  # stay well below the 255-byte file-name limit; the hash suffix keeps names unique


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
    """The readable part of a run name (without the hash suffix).

    Args:
        config: the cell's resolved config.
        varying: dotted keys the grid varies besides the toggles, lr and seed (they are named always, so
            the cells of one sweep line up column by column).
    """
    from stability.model import TOGGLES  # lazy: the package imports torch

    toggle_keys = {f"model.vit.{name}": name for name in TOGGLES} | {WARMUP_KEY: "warmup"}
    parts = []
    for key, name in toggle_keys.items():
        value = get_dotted(config, key, None)
        if name == "warmup":
            if value is False:
                parts.append("warmup=off")
        elif value is not None and value != TOGGLES[name][0]:
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


def run_name(config: Mapping[str, Any], rid: str, varying: Iterable[str] = ()) -> str:
    """``<readable part>-<run id>``: the run's folder name inside the sweep folder."""
    readable = readable_name(config, varying)
    if len(readable) > MAX_NAME:
        readable = readable[:MAX_NAME].rstrip(",")
    return f"{readable}-{rid}"
