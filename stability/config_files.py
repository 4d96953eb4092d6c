"""Config files: the YAML reader and the merge rule shared by `stability fit` callers and the sweep.

Plain Python and PyYAML only (no lightning import), so a grid can be expanded and checked in milliseconds.
Files merge left to right, later values winning, nested mappings merged key by key: the rule of
``stability fit --config a.yaml --config b.yaml``. Dotted keys (``model.vit.norm``) address one value of a
nested config, with LightningCLI's ``class_path`` shorthand.
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


# -- dotted keys -----------------------------------------------------------------------------------------
def _step_into(node: dict, key: str, create: bool) -> dict | None:
    """The dict under ``node[key]``; for ``class_path`` nodes a plain key means ``init_args.key``.

    That is LightningCLI's own shorthand (``--data.batch_size`` for ``--data.init_args.batch_size``), so a
    grid can say ``data.batch_size`` whichever data module the base config names.
    """
    if "class_path" in node and key not in ("class_path", "init_args", "dict_kwargs"):
        node = node.setdefault("init_args", {}) if create else node.get("init_args", {})
        if node is None:
            return None
    return node


def set_dotted(config: dict, key: str, value: Any) -> None:
    """Set ``config[a][b][c] = value`` for ``key == "a.b.c"``, creating dicts; dict values are deep-merged."""
    parts = key.split(".")
    node = config
    for i, part in enumerate(parts[:-1]):
        node = _step_into(node, part, create=True)
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise ConfigError(
                f"{key}: '{'.'.join(parts[: i + 1])}' is {child!r} in the base config, not a mapping, "
                f"so it has no key '{parts[i + 1]}'"
            )
        node = child
    node = _step_into(node, parts[-1], create=True)
    last = parts[-1]
    if isinstance(value, Mapping) and isinstance(node.get(last), dict):
        deep_merge(node[last], value)
    else:
        node[last] = copy.deepcopy(value)


_MISSING = object()


def get_dotted(config: Mapping, key: str, default: Any = _MISSING) -> Any:
    """Read a dotted key with the same ``class_path`` shorthand as :func:`set_dotted`."""
    node: Any = config
    for part in key.split("."):
        if not isinstance(node, dict):
            node = None
            break
        inner = _step_into(node, part, create=False)
        node = inner.get(part) if isinstance(inner, dict) else None
        if node is None:
            break
    if node is None and default is not _MISSING:
        return default
    return node


def deep_merge(into: dict, update: Mapping) -> dict:
    """Merge ``update`` into ``into`` in place; keys of ``update`` may be dotted."""
    for key, value in update.items():
        if "." in str(key):
            set_dotted(into, str(key), value)
        elif isinstance(value, Mapping) and isinstance(into.get(key), dict):
            deep_merge(into[key], value)
        else:
            into[key] = copy.deepcopy(value)
    return into
