"""From a checked grid to the plan: every cell validated, resolved, named, and written down.

Validation parses each cell exactly as the run will (:func:`stability.training.cli.parse`, ~70 ms a cell), so a
value the model rejects in cell 27 stops the sweep before cell 1 starts. The plan stores each cell's
*resolved* config (every default filled in by the parser): that is what the workers run, what the run id
hashes, and what makes ``plan.json`` enough to reproduce any cell.
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stability.errors import ConfigError
from stability.record.config_files import get_dotted
from stability.record.identity import config_hash, run_name
from stability.sweep.cells import Cell, base_config, expand
from stability.sweep.grid import GridSpec
from stability.sweep.store import PLAN_FORMAT


@dataclass
class PlannedRun:
    """One run of the plan: its id, folder name, the grid values that define it and its resolved config."""

    run_id: str
    run_name: str
    params: dict[str, Any]
    config: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {"run_id": self.run_id, "run_name": self.run_name, "params": self.params,
                "config": self.config}


@contextlib.contextmanager
def quiet_parsing() -> Iterator[None]:
    """Silence what parsing a config dict says each time, which would otherwise repeat once per cell.

    Lightning logs "Seed set to N", and LightningCLI warns that ``args`` was given while ``sys.argv`` holds
    the sweep's own arguments (harmless here: the dict is the whole config).
    """
    logger = logging.getLogger("lightning.fabric.utilities.seed")
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r".*LightningCLI's args parameter is intended")
            yield
    finally:
        logger.setLevel(level)


def _describe(params: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in params.items()) or "(no axis values)"


def resolve(config: dict[str, Any]) -> dict[str, Any]:
    """Parse ``config`` like the run will and return it with every default filled in (raises ConfigError)."""
    from stability.training.cli import parse  # lazy: imports lightning

    with quiet_parsing():
        return parse(config).config_dump_dict()


# (resolved config, run id, None) for a valid cell; (None, None, the one-line error) for an invalid one.
Resolved = tuple[dict[str, Any] | None, str | None, str | None]


def resolve_batch(configs: list[dict[str, Any]]) -> list[Resolved]:
    """Resolve many cells; errors are returned, not raised, so a batch can cross a process boundary.

    The run id is :func:`stability.record.identity.config_hash` of the resolved config: the same hash the run
    records in ``summary.json``, so the folder suffix, the plan and the record agree.
    """

    out: list[Resolved] = []
    for config in configs:
        try:
            resolved = resolve(config)
        except ConfigError as error:
            out.append((None, None, str(error)))
        else:
            out.append((resolved, config_hash(resolved), None))
    return out


def make_plan(spec: GridSpec, smoke: bool = False,
              resolve_many: Callable[[list[dict[str, Any]]], list[Resolved]] = resolve_batch,
              extra: Sequence[Cell] = ()) -> list[PlannedRun]:
    """Expand, validate and name every cell; two cells with the same resolved config are one run.

    Args:
        resolve_many: resolves the cells (in this process by default; the local executor passes its
            workers' :meth:`~stability.sweep.local.LocalExecutor.resolve`). The first invalid cell, in grid
            order, is reported.
        extra: cells beyond the grid's, planned after them (the seeds ``--settle`` adds).
    """
    product = spec.product_keys()
    include_only = [k for k in spec.varying_keys() if k not in product]
    base = base_config(spec, smoke)
    cells = [*expand(spec, smoke), *extra]
    runs: dict[str, PlannedRun] = {}
    for cell, (config, rid, error) in zip(cells, resolve_many([c.config for c in cells]), strict=True):
        if error is not None or config is None or rid is None:
            raise ConfigError(f"{spec.path}: run {_describe(cell.params)}: {error}")
        # Keys only an include sets are named where they differ from the base, not in every other cell.
        named = product + [k for k in include_only
                           if get_dotted(config, k, None) != get_dotted(base, k, None)]
        if rid not in runs:
            runs[rid] = PlannedRun(rid, run_name(config, named, rid), cell.params, config)
    if not runs:
        raise ConfigError(f"{spec.path}: the grid has no runs left (every cell is excluded)")
    return list(runs.values())


def plan_document(spec: GridSpec, runs: list[PlannedRun], smoke: bool, threads: int | None = None) -> dict[str, Any]:
    """The content of ``plan.json``: deterministic (no timestamps), so re-runs rewrite identical bytes.

    ``threads`` is the torch thread count of every run: part of the plan, not of a run's identity, so the
    whole sweep (and any re-run of it, with any number of workers) computes with the same count.
    """
    # A quick study (no grid file) records how it was defined instead: base, axes, seeds and the command.
    source = ({"grid": None, "quick": {**spec.quick, "seeds": spec.seeds}} if spec.quick
              else {"grid": str(spec.path)})
    return {
        "format": PLAN_FORMAT,
        **source,
        "name": spec.name,
        "description": spec.description,
        "smoke": smoke,
        "threads": threads,
        "base": [str(p) for p in spec.base],
        "varying": spec.varying_keys(),
        "claims": spec.claims,
        "n_runs": len(runs),
        "runs": [r.to_dict() for r in runs],
    }


def shard(runs: list[PlannedRun], index: int, count: int) -> list[PlannedRun]:
    """Runs ``index, index + count, ...``: striding mixes cheap and costly cells into every shard."""
    return runs[index::count]


def parse_shard(text: str) -> tuple[int, int]:
    """``"I/N"`` (0 <= I < N) -> (I, N)."""
    try:
        index, count = (int(x) for x in text.split("/"))
    except ValueError:
        raise ConfigError(f"--shard: got {text!r}; give I/N with 0 <= I < N, e.g. --shard 0/4") from None
    if not 0 <= index < count:
        raise ConfigError(f"--shard: got {text!r}; give I/N with 0 <= I < N, e.g. --shard 0/4")
    return index, count


def default_out(spec: GridSpec, smoke: bool) -> Path:
    return Path("runs") / (spec.name + ("-smoke" if smoke else ""))
