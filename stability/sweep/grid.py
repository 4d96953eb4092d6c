"""Grid files: load and check a grid YAML into a typed :class:`GridSpec` (its cells: :mod:`stability.sweep.cells`).

A grid file names base config files and the axes to vary (format: the comment at the top of
``ablations/smoke.yaml``). A *cell* is one fully resolved training config, a nested dict in LightningCLI
form, made by deep-merging the base files, the grid's ``overrides`` and the cell's own values, which are
given by dotted key (``model.vit.norm``, ``model.lr``, ``seed_everything``).

Everything here is plain Python and YAML: loading and checking a grid costs milliseconds, so a malformed
file is reported before any worker process (and its ~5 s ``import lightning``) starts. Base config files
are read here only to be checked (a config, not a grid or a FIFO); they are merged later
(:mod:`stability.sweep.cells`) with the same rule as ``stability fit --config a.yaml --config b.yaml``.

The sweep names each run's folder itself (``<sweep folder>/<run name>``, ``--out`` choosing the sweep
folder), so a ``run_dir`` anywhere in a grid or its base files is refused rather than silently ignored.
"""

from __future__ import annotations

import math
import os
import random
import re
import stat
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from stability.analysis.claims import parse_claims
from stability.errors import ConfigError, special_file
from stability.record.config_files import read_yaml, resolve_config_name
from stability.record.identity import SEED_KEY

GRID_KEYS = ("base", "overrides", "axes", "seeds", "exclude", "include", "samples", "smoke", "claims")
DISTRIBUTIONS = ("log_uniform", "uniform", "choice")
# What ``--smoke`` applies when a grid names no ``smoke:`` block: one epoch of two batches per run.
DEFAULT_SMOKE = {
    "trainer.max_epochs": 1,
    "trainer.limit_train_batches": 2,
    "trainer.limit_val_batches": 1,
    "trainer.limit_test_batches": 1,
}
RUN_DIR_KEY = "run_dir"  # `stability fit`'s run folder: the sweep chooses it for every run
SAMPLE_DIGITS = 4  # sampled values are rounded to 4 significant digits: readable names, stable hashes
# Most cells a grid may have unless the user raises the bound (``stability sweep --max-cells``). Checked by
# arithmetic before any cell is built: 10^7 cells would take gigabytes of configs. At ~70 ms of validation
# per cell, 10,000 cells take ~12 CPU-minutes to plan; the largest shipped grid (digits_lr.yaml) has 147.
MAX_CELLS = 10_000


def leading_comment(path: Path) -> str:
    """The comment block a grid file starts with (what it asks, how many runs, what it costs)."""
    lines = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        if not line.startswith("#"):
            break
        lines.append(line[2:] if line.startswith("# ") else line[1:])
    return "\n".join(lines).strip()


def header_facts(path: Path) -> tuple[int, str] | None:
    """(runs, cost headline) from a grid header's ``Runs: N`` and ``Cost: <figure> (measured|estimated ...``
    lines, e.g. ``(30, "8 min on 2 CPU cores")``; None when the header lacks either. The README's table of
    grids and ``stability demo --help`` quote these, so a grid's cost is written in one place."""
    header = leading_comment(path)
    runs = re.search(r"^Runs: (\d+)", header, re.M)
    cost = re.search(r"^Cost: (?P<headline>[^(;\n]+?) \((?:measured|estimated)", header, re.M)
    return (int(runs[1]), cost["headline"]) if runs and cost else None


# -- the spec --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Distribution:
    """How one sampled key is drawn: ``log_uniform``/``uniform`` over [lo, hi], or ``choice`` of a list."""

    kind: str
    args: tuple

    def draw(self, rng: random.Random) -> Any:
        if self.kind == "choice":
            return self.args[rng.randrange(len(self.args))]
        lo, hi = self.args
        if self.kind == "log_uniform":  # Xiao et al. 2021 / Radosavovic et al. 2019 sample lr and wd this way
            value = math.exp(rng.uniform(math.log(lo), math.log(hi)))
        else:
            value = rng.uniform(lo, hi)
        return float(f"{value:.{SAMPLE_DIGITS}g}")


@dataclass(frozen=True)
class Samples:
    """``n`` random points, drawn with ``seed``, of the keys in ``params`` (one more axis of the grid)."""

    n: int
    seed: int
    params: dict[str, Distribution]

    def points(self) -> list[dict[str, Any]]:
        # One generator for all keys, keys drawn in file order: the same file gives the same points.
        rng = random.Random(self.seed)
        return [{key: dist.draw(rng) for key, dist in self.params.items()} for _ in range(self.n)]


@dataclass
class GridSpec:
    """A checked grid file. Expansion order: seeds (outermost), axes in file order, samples, then includes."""

    path: Path
    base: list[Path]
    overrides: dict[str, Any] = field(default_factory=dict)
    axes: dict[str, list] = field(default_factory=dict)
    seeds: list[int] | None = None
    exclude: list[dict[str, Any]] = field(default_factory=list)
    include: list[dict[str, Any]] = field(default_factory=list)
    samples: Samples | None = None
    smoke: dict[str, Any] | None = None
    description: str = ""
    claims: list[Any] = field(default_factory=list)  # the claims the grid tests, as written (stability.analysis.claims)
    # A quick study (``stability sweep --base ... --axis ...``) has no grid file: this is how it was defined
    # (base, axes as given), recorded in plan.json so that the study can be run again. None for a grid file.
    quick: dict[str, Any] | None = None

    @property
    def name(self) -> str:
        return self.path.stem

    def product_keys(self) -> list[str]:
        """Dotted keys every product cell sets (axes, then sampled keys), in file order."""
        keys = list(self.axes)
        if self.samples:
            keys += [k for k in self.samples.params if k not in keys]
        return keys

    def varying_keys(self) -> list[str]:
        """Dotted keys whose value differs between cells: the product keys, then keys only includes set."""
        keys = self.product_keys()
        for entry in self.include:
            keys += [k for k in entry if k not in keys]
        return keys


def _where(spec_path: Path, what: str) -> str:
    return f"{spec_path}: {what}"


def _yaml_text(value: Any) -> str:
    """``value`` as the grid file spells it (``false``, ``{a: 1}``), for error lines."""
    return yaml.safe_dump(value, default_flow_style=True, width=10**6).removesuffix("\n...\n").strip()


def _run_dir_error(path: Path, where: str) -> ConfigError:
    return ConfigError(_where(path, f"{where}: the sweep names each run's folder itself (<sweep folder>/<run "
                                    "name>); remove run_dir, and give --out to pick the sweep folder"))


def _is_run_dir(key: Any) -> bool:
    return str(key) == RUN_DIR_KEY or str(key).startswith(RUN_DIR_KEY + ".")


def check_run_dir(spec: GridSpec) -> None:
    """Refuse a ``run_dir`` among the keys a grid sets: the sweep would silently put the run elsewhere.

    Called by :func:`load_grid`; call it again after adding to ``spec.overrides`` (``stability sweep --set``).
    """
    named = [("overrides", spec.overrides), ("axes", spec.axes), ("smoke", spec.smoke or {})]
    named += [(f"{what}[{i}]", entry) for what, entries in (("include", spec.include), ("exclude", spec.exclude))
              for i, entry in enumerate(entries)]
    if spec.samples:
        named.append(("samples.params", spec.samples.params))
    for what, keys in named:
        for key in keys:
            if _is_run_dir(key):
                raise _run_dir_error(spec.path, f"{what}.{key}")


def _check_base(path: Path, base: Path) -> None:
    """A base must be a config file: not a folder, a FIFO or a device, not this grid or another grid, and
    without a ``run_dir`` (which the sweep would ignore)."""
    try:
        mode = os.stat(base).st_mode
    except FileNotFoundError:
        raise ConfigError(_where(path, f"base: {base} does not exist")) from None
    except OSError as error:
        raise ConfigError(_where(path, f"base: {base} cannot be read ({error.strerror})")) from None
    if stat.S_ISDIR(mode):
        raise ConfigError(_where(path, f"base: {base} is a folder; give a config file"))
    kind = special_file(mode)
    if kind is not None:
        raise ConfigError(_where(path, f"base: {base} is {kind}, not a regular file; give a config file"))
    if path.exists() and os.path.samefile(base, path):
        raise ConfigError(_where(path, f"base: {base} is this grid file itself (the grid names itself as its base); "
                                       "give a config file such as ablations/base/digits.yaml"))
    data = read_yaml(base)
    if isinstance(data, Mapping):
        grid_keys = [k for k in data if k in GRID_KEYS]
        if grid_keys:
            raise ConfigError(_where(path, f"base: {base} is a grid file (it has '{grid_keys[0]}:'), not a config "
                                           "file; give a config file such as ablations/base/digits.yaml"))
        if RUN_DIR_KEY in data:
            raise _run_dir_error(path, f"base: {base} sets run_dir")


def _mapping(value: Any, path: Path, what: str) -> dict:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ConfigError(_where(path, f"'{what}' must be a mapping of config keys to values, got {value!r}"))
    return dict(value)


def _parse_distribution(path: Path, key: str, value: Any) -> Distribution:
    if not (isinstance(value, Mapping) and len(value) == 1 and next(iter(value)) in DISTRIBUTIONS):
        raise ConfigError(_where(path, f"samples.params.{key}: got {value!r}; give exactly one of "
                                       f"{', '.join(DISTRIBUTIONS)}, e.g. {{log_uniform: [1e-4, 1e-2]}}"))
    kind, args = next(iter(value.items()))
    if kind == "choice":
        if not isinstance(args, list) or not args:
            raise ConfigError(_where(path, f"samples.params.{key}.choice: got {args!r}; "
                                           "give a non-empty list"))
        return Distribution(kind, tuple(args))
    ok = (isinstance(args, list) and len(args) == 2
          and all(isinstance(a, (int, float)) and not isinstance(a, bool) for a in args))
    if ok:
        lo, hi = (float(a) for a in args)
        ok = lo < hi and (kind != "log_uniform" or lo > 0)
    if not ok:
        rule = "0 < lo < hi" if kind == "log_uniform" else "lo < hi"
        raise ConfigError(_where(path, f"samples.params.{key}.{kind}: got {args!r}; "
                                       f"give [lo, hi] with {rule}"))
    return Distribution(kind, (lo, hi))


def _parse_samples(path: Path, raw: Any) -> Samples | None:
    if raw is None:
        return None
    raw = _mapping(raw, path, "samples")
    unknown = sorted(set(raw) - {"n", "seed", "params"})
    if unknown:
        raise ConfigError(_where(path, f"samples: unknown key '{unknown[0]}'; valid keys: n, seed, params"))
    n = raw.get("n")
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise ConfigError(_where(path, f"samples.n: got {n!r}; give the number of samples, an integer >= 1"))
    seed = raw.get("seed", 0)
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise ConfigError(_where(path, f"samples.seed: got {seed!r}; give an integer"))
    params = _mapping(raw.get("params"), path, "samples.params")
    if not params:
        raise ConfigError(_where(path, "samples.params: empty; name at least one key to sample, "
                                       "e.g. {model.lr: {log_uniform: [1e-4, 1e-2]}}"))
    return Samples(n, seed, {str(k): _parse_distribution(path, str(k), v) for k, v in params.items()})


def _parse_seeds(path: Path, raw: Any, max_cells: int) -> list[int] | None:
    if raw is None:
        return None
    if isinstance(raw, int) and not isinstance(raw, bool):
        if raw < 1:
            raise ConfigError(_where(path, f"seeds: got {raw}; give a count >= 1 or a list of integers"))
        if raw > max_cells:
            raise ConfigError(_where(path, f"seeds: got {raw:,} seeds, more than the {max_cells:,} cells a grid may "
                                           "have; give fewer, or raise --max-cells if you mean it"))
        return list(range(raw))
    if (not isinstance(raw, list) or not raw
            or not all(isinstance(s, int) and not isinstance(s, bool) for s in raw)):
        raise ConfigError(_where(path, f"seeds: got {raw!r}; give a non-empty list of integers or a count"))
    if len(set(raw)) != len(raw):
        raise ConfigError(_where(path, f"seeds: got {raw!r}; the seeds must be distinct"))
    return list(raw)


def _parse_entries(path: Path, raw: Any, what: str) -> list[dict[str, Any]]:
    if raw is None:
        return []
    if not isinstance(raw, list) or not all(isinstance(e, Mapping) and e for e in raw):
        raise ConfigError(_where(path, f"{what}: got {raw!r}; give a list of non-empty mappings "
                                       f"{{config.key: value, ...}}"))
    entries = [{str(k): v for k, v in e.items()} for e in raw]
    for i, entry in enumerate(entries):
        for key, value in entry.items():
            if isinstance(value, list) and not value:
                raise ConfigError(_where(path, f"{what}[{i}].{key}: empty list; give at least one value"))
    return entries


def load_grid(path: str | Path, max_cells: int = MAX_CELLS) -> GridSpec:
    """Read and check a grid file (no base config is read yet; see :func:`expand`).

    Args:
        max_cells: the most cells the grid may expand to (:func:`count_cells`, before exclusions).
    """
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"{path}: no such grid file")
    return grid_from_mapping(read_yaml(path), path, path.parent, max_cells, leading_comment(path))


def grid_from_mapping(raw: Any, path: Path, base_dir: Path, max_cells: int = MAX_CELLS,
                      description: str = "") -> GridSpec:
    """Check the content of a grid file, ``raw``, into a :class:`GridSpec`, with every check of
    :func:`load_grid`: a quick study built from command-line options goes through exactly these.

    Args:
        path: names the grid in error lines and, by its stem, the sweep (its file need not exist).
        base_dir: what relative ``base:`` paths are relative to (the grid file's folder; the cwd for a
            quick study).
    """
    if not isinstance(raw, Mapping):
        raise ConfigError(_where(path, f"a grid file is a mapping with keys {', '.join(GRID_KEYS)}; "
                                       f"got {type(raw).__name__}"))
    if RUN_DIR_KEY in raw:
        raise _run_dir_error(path, RUN_DIR_KEY)
    unknown = [k for k in raw if k not in GRID_KEYS]
    if unknown:
        raise ConfigError(_where(path, f"unknown key '{unknown[0]}'; valid keys: {', '.join(GRID_KEYS)}"))

    base_raw = raw.get("base")
    if isinstance(base_raw, str):
        base_raw = [base_raw]
    if not isinstance(base_raw, list) or not base_raw or not all(isinstance(b, str) for b in base_raw):
        raise ConfigError(_where(path, f"base: got {base_raw!r}; give a config file (or a list of them), "
                                       f"relative to the grid file, or shipped, e.g. base: [stability:digits.yaml]"))
    base = [resolve_config_name(b, base_dir, _where(path, 'base')) for b in base_raw]
    for b in base:
        _check_base(path, b)
    claims = raw.get("claims")
    if claims is not None and not isinstance(claims, list):
        raise ConfigError(_where(path, f"claims: must be a list of claims, got {_yaml_text(claims)}"))

    axes = _mapping(raw.get("axes"), path, "axes")
    for key, values in axes.items():
        if not isinstance(values, list):
            raise ConfigError(_where(path, f"axes.{key}: got {values!r}; an axis is a list of values"))
        if not values:
            raise ConfigError(_where(path, f"axes.{key}: empty list; give at least one value"))
    axes = {str(k): list(v) for k, v in axes.items()}

    spec = GridSpec(
        path=path,
        base=base,
        overrides=_mapping(raw.get("overrides"), path, "overrides"),
        axes=axes,
        seeds=_parse_seeds(path, raw.get("seeds"), max_cells),
        exclude=_parse_entries(path, raw.get("exclude"), "exclude"),
        include=_parse_entries(path, raw.get("include"), "include"),
        samples=_parse_samples(path, raw.get("samples")),
        smoke=_mapping(raw.get("smoke"), path, "smoke") if "smoke" in raw else None,
        description=description,
        claims=claims or [],
    )
    check_run_dir(spec)
    parse_claims(spec.claims, str(path))  # checked now, before anything runs; the report parses them again
    if SEED_KEY in spec.axes and spec.seeds is not None:
        raise ConfigError(_where(path, f"axes.{SEED_KEY} and seeds both set the seed; keep one"))
    for i, entry in enumerate(spec.exclude):
        unknown = [k for k in entry if k not in spec.axes and k != SEED_KEY]
        if unknown:
            raise ConfigError(_where(path, f"exclude[{i}].{unknown[0]}: not an axis of this grid; "
                                           f"axes: {', '.join(spec.axes) or '(none)'}"))
    if spec.samples:
        clash = [k for k in spec.samples.params if k in spec.axes]
        if clash:
            raise ConfigError(_where(path, f"{clash[0]}: both an axis and a sampled key; keep one"))
    _check_distinct_keys(path, spec.product_keys())
    _check_distinct_keys(path, list(spec.overrides))
    cells = count_cells(spec)
    if cells > max_cells:
        raise ConfigError(_where(path, f"the grid has {cells:,} cells ({_shape(spec)}), more than --max-cells "
                                       f"{max_cells:,}; shrink the grid, or raise --max-cells if you mean it"))
    return spec


def _canonical(key: str) -> str:
    """A dotted key without LightningCLI's ``init_args`` level: ``data.init_args.batch_size`` and
    ``data.batch_size`` address the same value (see :func:`stability.record.config_files.set_dotted`)."""
    return ".".join(part for part in key.split(".") if part != "init_args")


def _check_distinct_keys(path: Path, keys: list[str]) -> None:
    """Two axes (or an axis and a sampled key) that set the same config value: the later would silently win."""
    seen: dict[str, str] = {}
    for key in keys:
        other = seen.setdefault(_canonical(key), key)
        if other != key:
            raise ConfigError(_where(path, f"{key} and {other} set the same config value; keep one"))


def count_cells(spec: GridSpec) -> int:
    """How many cells the grid expands to before exclusions and de-duplication, by arithmetic alone."""
    seeds = len(spec.seeds) if spec.seeds is not None else 1
    product = math.prod(len(values) for values in spec.axes.values()) * (spec.samples.n if spec.samples else 1)
    included = sum(math.prod(len(v) if isinstance(v, list) else 1 for v in entry.values())
                   for entry in spec.include)
    return seeds * (product + included)


def _shape(spec: GridSpec) -> str:
    parts = [f"{len(spec.seeds)} seeds"] if spec.seeds is not None else []
    parts += [f"{len(values)} {key}" for key, values in spec.axes.items()]
    if spec.samples:
        parts.append(f"{spec.samples.n} samples")
    shape = " x ".join(parts) or "no axes"
    return shape + (f", plus {len(spec.include)} include entries" if spec.include else "")
