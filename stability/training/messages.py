"""jsonargparse's and the model's errors as one ``error:`` line: a ConfigError the user can act on.

jsonargparse reports a bad value over a dozen lines (a union lists every member's failure); the key, the
value given and the accepted types are all the user needs. :func:`user_errors` wraps parsing and building
a config and turns what they raise into one line.
"""

from __future__ import annotations

import contextlib
import inspect
import re
import sys
from collections.abc import Iterator

from jsonargparse import ArgumentError

from stability.errors import ConfigError


@contextlib.contextmanager
def user_errors() -> Iterator[None]:
    """Turn jsonargparse's parse errors into a one-line ConfigError (its messages list every union member)."""
    try:
        yield
    except (ArgumentError, ValueError) as error:
        # jsonargparse wraps a ConfigError raised by a class's __init__ (e.g. a missing data folder) in a
        # multi-line error; the ConfigError itself, somewhere down the chain, is the message the user needs.
        cause: BaseException | None = error
        while cause is not None:
            if isinstance(cause, ConfigError):
                raise ConfigError(str(cause)) from None
            cause = cause.__cause__ or cause.__context__
        if not isinstance(error, ArgumentError):
            raise
        raise ConfigError(_one_line(str(error))) from None
    except (MemoryError, RuntimeError) as error:
        # building the model allocates its weights: a model larger than the machine fails here
        if not isinstance(error, MemoryError) and "can't allocate memory" not in str(error):
            raise
        wanted = re.search(r"allocate (\d+) bytes", str(error))
        size = f" (one tensor of {int(wanted.group(1)) / 2**30:,.0f} GiB)" if wanted else ""
        raise ConfigError(f"model.vit: the model does not fit in this machine's memory{size}; make it smaller "
                          "(embed_dim, depth, mlp_ratio)") from None


_LITERAL_ERROR = re.compile(r'Parser key "(?P<key>[^"]+)":\s*Expected a typing\.Literal\[(?P<valid>[^\]]*)\]\. '
                            r"Got value: (?P<value>.*)")
_KEY = re.compile(r'Parser key "([^"]+)"')
_GIVEN = re.compile(r"(?:Given value|Got value): (.*)")
_NESTED_VALUE = re.compile(r"NestedArg\(key='[^']*', val=(.*)\)$")
_CLASS_PATH = re.compile(r"Problem with given class_path '([^']+)'")
_TYPE = re.compile(r"<class '([^']+)'>|typing\.Literal\[([^\]]*)\]|\b(list|dict|tuple)\[")
_TYPE_WORDS = {"float": "a number", "int": "an integer", "bool": "true or false", "NoneType": "null",
               "str": "a string", "datetime.timedelta": "a duration", "list": "a list", "dict": "a mapping",
               "tuple": "a list"}


def _one_line(message: str) -> str:
    """jsonargparse's message as one line: 'key: got VALUE; expected WHAT' where it can tell.

    Its union errors ('Does not validate against any of the Union subtypes') list every member's failure over
    a dozen lines; the key, the value given and the accepted types are all the user needs.
    """
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    flat = " ".join(lines)
    match = _LITERAL_ERROR.search(flat)
    if match:
        valid = ", ".join(v.strip().strip("'\"") for v in match["valid"].split(","))
        return f"{match['key']}: got {match['value']!r}; valid values: {valid}"
    if flat.startswith("unrecognized arguments:"):
        return f"{flat}; `stability fit --help` lists the options"
    keys = _KEY.findall(flat)
    key = ".".join(dict.fromkeys(keys)) if keys else "config"
    given = next((m.group(1).strip() for line in reversed(lines) if (m := _GIVEN.search(line))), None)
    if given is not None and (nested := _NESTED_VALUE.match(given)):
        given = nested.group(1).strip("'\"")
    class_path = _CLASS_PATH.search(flat)
    if class_path:  # an init argument of the class: the inner error is the one to report
        inner = flat[class_path.end():].split(" - Expected a <class 'NoneType'>")[0]
        got = re.search(r'Parser key "([^"]+)": Expected a (.+?)\. Got value: (.*)$', inner.strip())
        if got:
            types = [m for m in _TYPE.finditer(got.group(2)) if m.group(0)]
            if types:
                return f"{keys[0]}.{got.group(1)}: got {got.group(3)!r}; expected {_describe_types(types)}"
    if "No module named" in flat or "does not correspond to a subclass" in flat:
        path = class_path.group(1) if class_path else given
        imported = re.search(r"Import path (\S+) does not correspond to a subclass of (\w+)", flat)
        if imported:
            return f"{key}.class_path: {imported.group(1)!r} is not a {imported.group(2)} subclass"
        missing = re.search(r"No module named '([^']+)'", flat)
        return f"{key}.class_path: {path!r} cannot be imported (no module named {missing.group(1)!r})"
    unknown = re.search(r"Option '([^']+)' is not accepted", flat)
    if unknown and class_path:
        options = _init_options(class_path.group(1))
        return (f"{key}.{unknown.group(1)}: not an option of {class_path.group(1)}"
                + (f"; its options: {', '.join(options)}" if options else ""))
    unloadable = re.search(r"Unable to load config '([^']*)'", flat)
    if unloadable:
        return f"{key}: got {unloadable.group(1)!r}; expected a mapping of its keys or a YAML file"
    expected = [m for m in _TYPE.finditer(flat.split("Errors:")[0]) if m.group(0)]
    if expected and given is not None:
        return f"{key}: got {given!r}; expected {_describe_types(expected)}"
    return " ".join(lines[:3])


def _describe_types(found: list[re.Match]) -> str:
    words: list[str] = []
    literals: list[str] = []
    for match in found:
        name, literal, generic = match.groups()
        if literal is not None:
            literals += [v.strip().strip("'\"") for v in literal.split(",")]
        elif generic is not None:
            words.append(_TYPE_WORDS[generic])
        else:
            words.append(_TYPE_WORDS.get(name, f"a {name.rsplit('.', 1)[-1]} (class_path and init_args)"))
    if literals:
        words.insert(0, "one of " + ", ".join(dict.fromkeys(literals)))
    return " or ".join(dict.fromkeys(words))


def _init_options(class_path: str) -> list[str]:
    """The keyword arguments of ``class_path``'s ``__init__`` (for 'not an option' errors); [] if unknown."""
    module, _, name = class_path.rpartition(".")
    try:
        cls = getattr(sys.modules.get(module) or __import__(module, fromlist=[name]), name)
        params = inspect.signature(cls.__init__).parameters
    except (ImportError, AttributeError, TypeError, ValueError):
        return []
    return [p for p in params if p != "self" and params[p].kind not in (params[p].VAR_POSITIONAL,
                                                                            params[p].VAR_KEYWORD)]
