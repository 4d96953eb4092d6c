"""A checked grid expanded into cells: one fully resolved training config per run, in a fixed order.

A cell's config is the base files deep-merged left to right, then the grid's ``overrides``, then the cell's
own values by dotted key; its seed sets both ``seed_everything`` and the data module's split seed. Plain
Python, like :mod:`stability.sweep.grid`: expanding a grid costs milliseconds.
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stability.record.config_files import deep_merge, get_dotted, load_config_files, set_dotted
from stability.record.identity import SEED_KEY
from stability.sweep.grid import DEFAULT_SMOKE, GridSpec


@dataclass
class Cell:
    """One run of the grid: the values that define it (dotted keys) and its fully resolved config."""

    params: dict[str, Any]
    config: dict[str, Any]


def _matches(config: Mapping, entry: Mapping[str, Any]) -> bool:
    """True if the cell agrees with every key of an ``exclude`` entry (a list value means any of them)."""
    for key, want in entry.items():
        have = get_dotted(config, key, None)
        options = want if isinstance(want, list) else [want]
        if have not in options:
            return False
    return True


def _entry_product(entry: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
    """An ``include`` entry is a small grid of its own: list values are axes, scalars are fixed."""
    keys = list(entry)
    options = [entry[k] if isinstance(entry[k], list) else [entry[k]] for k in keys]
    for combo in itertools.product(*options):
        yield dict(zip(keys, combo, strict=True))


def set_seed(config: dict, seed: int) -> None:
    """Seed a cell: ``seed_everything`` (init, dropout, shuffling) and the data module's ``seed`` (split)."""
    config[SEED_KEY] = seed
    data = config.get("data")
    if isinstance(data, dict):
        if "class_path" in data:
            data.setdefault("init_args", {})["seed"] = seed
        elif "seed" in data:
            data["seed"] = seed


def base_config(spec: GridSpec, smoke: bool = False,
                loader: Callable[[list[Path]], dict] | None = None) -> dict:
    """The config every cell starts from: base files, then ``overrides``, then (``smoke``) the smoke block."""
    config = copy.deepcopy((loader or load_config_files)(spec.base))
    deep_merge(config, spec.overrides)
    if smoke:
        deep_merge(config, DEFAULT_SMOKE if spec.smoke is None else spec.smoke)
    return config


def expand(spec: GridSpec, smoke: bool = False,
           loader: Callable[[list[Path]], dict] | None = None) -> list[Cell]:
    """All cells of the grid, in a fixed order, duplicates (same resolved config) removed.

    ``--smoke`` shrinks every cell (the grid's ``smoke:`` block, else :data:`DEFAULT_SMOKE`) but keeps
    the grid's shape, so a smoke run exercises exactly the cells the real run would.
    """
    base = base_config(spec, smoke, loader)
    sample_points = spec.samples.points() if spec.samples else [{}]
    seeds: list[int | None] = list(spec.seeds) if spec.seeds is not None else [None]

    def make(params: dict[str, Any], seed: int | None) -> Cell:
        config = copy.deepcopy(base)
        for key, value in params.items():
            if key == SEED_KEY:
                set_seed(config, value)
            else:
                set_dotted(config, key, value)
        if seed is not None:
            set_seed(config, seed)
            params = {**params, SEED_KEY: seed}
        if smoke:  # the smoke block wins over axes that set the same keys
            deep_merge(config, DEFAULT_SMOKE if spec.smoke is None else spec.smoke)
        return Cell(params=params, config=config)

    cells: list[Cell] = []
    keys = list(spec.axes)
    for seed in seeds:
        for combo in itertools.product(*(spec.axes[k] for k in keys)):
            for point in sample_points:
                cell = make({**dict(zip(keys, combo, strict=True)), **point}, seed)
                if not any(_matches(cell.config, e) for e in spec.exclude):
                    cells.append(cell)
        for entry in spec.include:
            for params in _entry_product(entry):
                cells.append(make(params, seed))
    return cells
