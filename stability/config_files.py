"""Config files: the YAML reader and the merge rule shared by `stability fit` callers and the sweep.

Plain Python and PyYAML only (no lightning import), so a grid can be expanded and checked in milliseconds.
Files merge left to right, later values winning, nested mappings merged key by key: the rule of
``stability fit --config a.yaml --config b.yaml``.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from stability.errors import ConfigError


class ConfigLoader(yaml.SafeLoader):
    """SafeLoader that also reads ``1e-3`` as a float.

    PyYAML follows YAML 1.1, where a float needs a dot (``1.0e-3``); ``1e-3`` would silently be the string
    "1e-3", which hashes and names differently from ``0.001``. Learning rates are written that way, so
    the loader accepts the YAML 1.2 float forms too.
    """


_FLOAT = re.compile(
    r"""^[-+]?(?:
        [0-9][0-9_]*\.[0-9_]*(?:[eE][-+]?[0-9]+)?   # 1.5, 1., 1.5e-3
      | \.[0-9_]+(?:[eE][-+]?[0-9]+)?               # .5, .5e-3
      | [0-9][0-9_]*[eE][-+]?[0-9]+                  # 1e-3 (the YAML 1.2 form PyYAML misses)
      | \.(?:inf|Inf|INF)
    )$|^\.(?:nan|NaN|NAN)$""",
    re.X,
)
ConfigLoader.yaml_implicit_resolvers = {
    k: [(tag, rx) for tag, rx in v if tag != "tag:yaml.org,2002:float"]
    for k, v in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
ConfigLoader.add_implicit_resolver("tag:yaml.org,2002:float", _FLOAT, list("-+0123456789."))


def read_yaml(path: Path) -> Any:
    """Parse one YAML file; a syntax error becomes a one-line :class:`ConfigError` with its position."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the file ({exc.strerror})") from None
    try:
        return yaml.load(text, Loader=ConfigLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"{path}: YAML error{where}: {problem}") from None


def merge_nested(into: dict, update: Mapping) -> dict:
    """Merge ``update`` into ``into`` in place, mapping by mapping (values are copied); returns ``into``."""
    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(into.get(key), dict):
            merge_nested(into[key], value)
        else:
            into[key] = copy.deepcopy(value)
    return into


def load_config_files(paths: list[str | Path] | list[Path]) -> dict[str, Any]:
    """Merge YAML config files left to right (later wins), as repeated ``--config`` flags do."""
    merged: dict[str, Any] = {}
    for path in paths:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file {path}: not found")
        data = read_yaml(path) or {}
        if not isinstance(data, Mapping):
            raise ConfigError(f"config file {path}: expected a mapping at the top level, got {type(data).__name__}")
        merge_nested(merged, data)
    return merged
