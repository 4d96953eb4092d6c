"""Config files: the YAML reader and the merge rule shared by `stability fit` callers and the sweep.

Plain Python and PyYAML only (no lightning import), so a grid can be expanded and checked in milliseconds.
Files merge left to right, later values winning, nested mappings merged key by key: the rule of
``stability fit --config a.yaml --config b.yaml``. Dotted keys (``model.vit.norm``) address one value of a
nested config, with LightningCLI's ``class_path`` shorthand.

The reader is strict where PyYAML is lenient, because a config file silently read wrong runs the wrong
experiment: a key given twice is an error (PyYAML keeps the last), a file must be UTF-8 text, and size is
bounded twice: the file (:data:`MAX_YAML_BYTES`) and the values it expands to through aliases
(:data:`MAX_YAML_VALUES`; nine nested aliases of nine items make a few hundred bytes expand to 10^9 values).
"""

from __future__ import annotations

import copy
import importlib.resources
import os
import re
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from stability.errors import ConfigError, special_file

MAX_YAML_BYTES = 1 << 20  # 1 MiB: the largest shipped grid is 3 KB
MAX_YAML_VALUES = 100_000  # scalars, lists and mappings after alias expansion; a config has ~100
MERGE_TAG = "tag:yaml.org,2002:merge"
# ``stability:digits.yaml`` names a base config shipped inside the package (stability/configs/, copies of
# ablations/base/ kept byte-identical by a test), so a grid or a command outside the checkout can use it.
SHIPPED_PREFIX = "stability:"


class ConfigLoader(yaml.SafeLoader):
    """SafeLoader that also reads ``1e-3`` as a float and rejects a key given twice in one mapping.

    PyYAML follows YAML 1.1, where a float needs a dot (``1.0e-3``); ``1e-3`` would silently be the string
    "1e-3", which hashes and names differently from ``0.001``. Learning rates are written that way, so
    the loader accepts the YAML 1.2 float forms too. YAML forbids duplicate keys, but PyYAML keeps the
    last one: in a grid, ``model.lr`` listed twice under ``axes`` would silently drop the first axis.
    Merge keys (``<<: *defaults``) may still be overridden: that is what they are for.
    """

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        if isinstance(node, yaml.MappingNode):
            seen: dict[Any, yaml.Node] = {}
            for key_node, _ in node.value:
                if key_node.tag == MERGE_TAG:
                    continue
                key = self.construct_object(key_node, deep=True)
                try:
                    first = seen.setdefault(key, key_node)
                except TypeError:
                    continue  # an unhashable key: SafeLoader's own error names it
                if first is not key_node:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"key {key!r} is given twice (first at line {first.start_mark.line + 1})",
                        key_node.start_mark)
        return super().construct_mapping(node, deep=deep)


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
    """Parse one YAML file; every problem is a one-line :class:`ConfigError` naming the file (and the line).

    Beyond PyYAML's syntax errors: a folder, a FIFO or a device (refused by its mode before it is opened:
    opening a FIFO blocks until a writer comes, and ``/dev/zero`` never ends) or an unreadable file, a file
    over :data:`MAX_YAML_BYTES`, bytes that are not UTF-8 text, a key given twice, aliases that expand past
    :data:`MAX_YAML_VALUES` values or into themselves, and nesting too deep to parse. The bytes are decoded as
    UTF-8 whatever the locale says, so a file reads the same under ``LC_ALL=C``.
    """
    path = Path(path)
    try:
        mode = os.stat(path).st_mode
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the file ({exc.strerror})") from None
    if stat.S_ISDIR(mode):
        raise ConfigError(f"{path}: is a folder; expected a YAML file")
    _refuse_special(path, mode)
    try:
        # O_NONBLOCK: should the path become a FIFO after the check above, opening it still returns at once
        with open(os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0)), "rb") as file:
            _refuse_special(path, os.fstat(file.fileno()).st_mode)
            data = file.read(MAX_YAML_BYTES + 1)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the file ({exc.strerror})") from None
    if len(data) > MAX_YAML_BYTES:
        raise ConfigError(f"{path}: larger than {MAX_YAML_BYTES >> 20} MiB; config and grid files are small YAML "
                          "text files (is this the right file?)")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise ConfigError(f"{path}: not UTF-8 text (byte 0x{data[exc.start]:02x} at line {line}); config and grid "
                          "files are YAML text in UTF-8") from None
    try:
        loader = ConfigLoader(text)  # checks the characters first
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: YAML error: {_problem(exc)}") from None
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _check_expansion(path, node)
        return loader.construct_document(node)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: YAML error{_position(exc)}: {_problem(exc)}") from None
    except RecursionError:
        raise ConfigError(f"{path}: nested too deeply to read; config and grid files are a few levels deep") from None
    finally:
        loader.dispose()


def _refuse_special(path: Path, mode: int) -> None:
    kind = special_file(mode)
    if kind is not None:
        raise ConfigError(f"{path}: is {kind}, not a regular file; expected a YAML file")


# The `stability fit` options whose value may be a YAML file: LightningCLI's --config and its group options.
CONFIG_OPTIONS = ("--config", "-c", "--model", "--data", "--trainer")


def config_file_arguments(argv: list[str]) -> list[tuple[str, str]]:
    """(option, value) for each :data:`CONFIG_OPTIONS` in ``argv``, as ``--model F`` or ``--model=F``."""
    found = []
    for i, arg in enumerate(argv):
        option, sep, value = arg.partition("=")
        if option not in CONFIG_OPTIONS:
            continue
        if not sep:
            if i + 1 == len(argv):
                continue
            value = argv[i + 1]
        found.append((option, value))
    return found


def check_config_arguments(argv: list[str]) -> None:
    """Read every config file ``stability fit`` is given with :func:`read_yaml`, before jsonargparse does.

    jsonargparse reads ``--config F`` and the group files (``--model F``, ``--data F``, ``--trainer F``) with
    PyYAML's lenient rules: a key given twice silently keeps the last, aliases expand without bound, a binary
    file ends in a traceback, and a FIFO blocks forever. Reading them here first turns each of those into the
    strict reader's one-line error naming the file. A value that is not an existing path is an inline YAML
    value or a class name (``--data DigitsDataModule``), left to jsonargparse; a missing ``--config`` file is
    left for ``stability fit`` to report.

    A shipped config named ``--config stability:<name>`` is checked as the file it names; the caller passes
    :func:`expand_config_arguments`'s list on to the command.
    """
    for _, value in config_file_arguments(argv):
        path = Path(value)
        if value and not value.startswith("-") and path.exists():
            read_yaml(path)


def _position(exc: yaml.YAMLError) -> str:
    mark = getattr(exc, "problem_mark", None)
    if mark is not None:
        return f" at line {mark.line + 1}, column {mark.column + 1}"
    return ""


def _problem(exc: yaml.YAMLError) -> str:
    """The error's own words, without PyYAML's 'in "<unicode string>", line N' position lines."""
    problem = getattr(exc, "problem", None)
    if problem:
        context = getattr(exc, "context", None)
        return f"{context} {problem}" if context and str(problem).startswith("but ") else str(problem)
    if isinstance(exc, yaml.reader.ReaderError):  # a control character: name it and where it is
        return f"control character {exc.character:#04x} at position {exc.position} is not allowed in YAML text"
    lines = [line for line in str(exc).splitlines() if line.strip() and "<unicode string>" not in line]
    return lines[0].strip() if lines else type(exc).__name__


def _check_expansion(path: Path, root: yaml.Node) -> None:
    """Count the values ``root`` expands to, an alias counting as a copy of what it names.

    PyYAML builds an alias as a shared reference, so loading a billion-laughs file is cheap; the cost comes
    later, when the config is copied, merged or written out value by value. Counting on the node graph
    (each node's expanded size computed once) is linear in the file, whatever the expansion.
    """
    sizes: dict[int, int] = {}
    active: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, children_done = stack.pop()
        key = id(node)
        if key in sizes:
            continue
        children: list[yaml.Node] = []
        if isinstance(node, yaml.SequenceNode):
            children = list(node.value)
        elif isinstance(node, yaml.MappingNode):
            children = [item for pair in node.value for item in pair]
        if children_done:
            active.discard(key)
            sizes[key] = 1 + sum(sizes[id(child)] for child in children)
            if sizes[key] > MAX_YAML_VALUES:
                raise ConfigError(f"{path}: expands to more than {MAX_YAML_VALUES:,} values (aliases, line "
                                  f"{node.start_mark.line + 1}); config and grid files are small")
            continue
        if key in active:
            raise ConfigError(f"{path}: an alias at line {node.start_mark.line + 1} contains itself; a config "
                              "cannot be infinitely deep")
        active.add(key)
        stack.append((node, True))
        stack.extend((child, False) for child in children if id(child) not in sizes)


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
        if not path.exists():
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


def shipped_configs() -> list[str]:
    """The base configs shipped with the package, by the names ``stability:<name>`` accepts."""
    folder = importlib.resources.files("stability") / "configs"
    return sorted(entry.name for entry in folder.iterdir() if entry.name.endswith(".yaml"))


def resolve_config_name(name: str, relative_to: Path, what: str = "base") -> Path:
    """``stability:<name>`` -> the shipped config of that name (in the installed package, wheel or editable
    install alike); any other name is a path relative to ``relative_to``. Raises ConfigError (naming
    ``what``) for a shipped name that does not exist, listing those that do."""
    if not name.startswith(SHIPPED_PREFIX):
        return relative_to / name
    shipped = name.removeprefix(SHIPPED_PREFIX)
    valid = shipped_configs()
    if shipped not in valid:
        raise ConfigError(f"{what}: {name} is not a shipped config; valid: "
                          f"{', '.join(SHIPPED_PREFIX + v for v in valid)}")
    return Path(str(importlib.resources.files("stability") / "configs" / shipped))


def expand_config_arguments(argv: list[str]) -> list[str]:
    """``argv`` with every ``--config stability:<name>`` (or ``--config=stability:<name>``) replaced by the
    shipped file's path, for ``stability fit`` (jsonargparse reads ``--config`` values as paths)."""
    out: list[str] = []
    for i, arg in enumerate(argv):
        for option in ("--config", "-c"):
            if arg.startswith(f"{option}={SHIPPED_PREFIX}"):
                arg = f"{option}={resolve_config_name(arg.removeprefix(option + '='), Path(), option)}"
            elif i > 0 and argv[i - 1] == option and arg.startswith(SHIPPED_PREFIX):
                arg = str(resolve_config_name(arg, Path(), option))
        out.append(arg)
    return out
