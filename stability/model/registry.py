"""One registry per component kind: how a toggle value becomes a module, for the built-in tricks and for yours.

A toggle value (``ViTConfig.norm``, ``.attention``, ...) is one of three things, looked up in this order:

1. **a built-in short name** (``layernorm``); each kind's first built-in value is the baseline. The built-in
   modules keep their own tables, name -> builder ``cfg -> module`` (``NORMS`` in norms.py, ``ATTENTIONS`` in
   attention.py, ...); the registry reads those tables (:attr:`Kind.tables`), and ``vit.py`` builds every
   component through :func:`build`, never from a table directly: a user's value takes the same road.
2. **a short name an installed package declares** in the entry-point group ``stability.components``, named
   ``<kind>.<name>``, e.g. in the package's ``pyproject.toml``::

       [project.entry-points."stability.components"]
       "norm.dyt" = "mylab.norms:DyT"

   found with :func:`importlib.metadata.entry_points`. Entry points, and not a ``register()`` call, because an
   installed package's entry points are visible to *every* Python process that has it installed: sweep
   workers, SLURM jobs and notebooks are fresh processes, and a registration made in the parent would never
   reach them. A built-in name wins over an entry point of the same name.
3. **a class path** ``package.module.ClassName`` (any dotted name with at least one dot), importable in the
   process that builds the model. Sweep workers inherit the working directory and ``PYTHONPATH``, so
   ``PYTHONPATH=. stability sweep grid.yaml`` finds ``./mylab/norms.py`` in every worker.

Writing a component. A user class is built as ``Class(cfg)``, ``cfg`` the whole :class:`ViTConfig`, as the
built-in builders are (``Class()`` when its constructor needs no argument, e.g. ``torch.nn.SiLU`` as an
activation); what it must compute is :attr:`Kind.contract`. A norm, for instance::

    import torch
    from torch import nn

    class DyT(nn.Module):
        "Dynamic Tanh (Zhu et al. 2025): weight * tanh(alpha * x) + bias, a norm without statistics."
        def __init__(self, cfg):
            super().__init__()
            self.alpha = nn.Parameter(torch.tensor(0.5))
            self.weight = nn.Parameter(torch.ones(cfg.embed_dim))
            self.bias = nn.Parameter(torch.zeros(cfg.embed_dim))
        def forward(self, x):  # (B, N, D) -> (B, N, D)
            return self.weight * torch.tanh(self.alpha * x) + self.bias

Two optional methods tie it into the rest: ``lipschitz_constant(self)`` returns its l2 Lipschitz bound (a
float or 0-d tensor; None: it has none), which the bound walker (:mod:`stability.model.lipschitz.bounds`) uses;
without it, and unknown to the walker, the model is reported unbounded at that component. And the ``init``
scheme (:mod:`stability.model.init`) initialises the Linear, conv and norm layers inside any component as it
does the built-in ones, unless the component defines ``init_weights(self, scheme: str)``: then it is handed
the scheme's name and the scheme leaves its parameters alone.

Plain Python: importing this module never imports torch (the config, the run records and the report use it);
a built-in table or a user's module is imported only when a value is resolved.
"""

from __future__ import annotations

import importlib
import inspect
import os
import re
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import metadata
from typing import Any

from stability.errors import ConfigError

GROUP = "stability.components"  # the entry-point group a package declares its components in
MAIN = ""  # the role of the component itself (see Kind.tables)
_DOTTED = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)+$")


@dataclass(frozen=True)
class Kind:
    """One component kind: a model toggle.

    Attributes:
        name: the toggle (``ViTConfig`` field) it is chosen by.
        builtins: its built-in values, baseline first.
        tables: role -> ``"module:TABLE"`` (or a tuple of them, merged in order: a trick added in a file of its
            own brings its own table), the built-in tables of name -> builder. Role ``""`` is the component;
            ``pos_embed`` has a second role, ``input`` (what the model does with the PE before the blocks).
        contract: what a user's class or function must be (shown in docs and errors).
        user_roles: role -> the built-in value whose builder a user's value uses for that role.
    """

    name: str
    builtins: tuple[str, ...]
    tables: Mapping[str, str | tuple[str, ...]]
    contract: str
    user_roles: Mapping[str, str] = field(default_factory=dict)

    @property
    def baseline(self) -> str:
        return self.builtins[0]


KINDS: dict[str, Kind] = {kind.name: kind for kind in (
    Kind("stem", ("patchify", "conv"), {MAIN: "stability.model.stems:STEMS"},
         "Class(cfg): images (B, C, H, W) -> tokens (B, grid_size**2, D)"),
    Kind("norm", ("layernorm", "centernorm", "rmsnorm", "dyt"),
         {MAIN: ("stability.model.norms:NORMS", "stability.model.dyt:DYT_NORMS")},
         "Class(cfg): every token norm, (..., D) -> (..., D)"),
    Kind("norm_placement", ("pre", "post", "peri"),
         {MAIN: ("stability.model.vit:BLOCKS", "stability.model.peri_ln:PERI_BLOCKS")},
         "a subclass of stability.model.vit.Block, built as Class(cfg, drop_path); forward(x, pe) -> (x, pe)"),
    Kind("attention", ("dot", "cosine", "qknorm", "shift", "cosine_paper", "softcap"),
         {MAIN: ("stability.model.attention:ATTENTIONS", "stability.model.softcap:SOFTCAP_ATTENTIONS")},
         "Class(cfg): the token mixer, (B, N, D) -> (B, N, D), a residual branch on the normalised stream"),
    Kind("pos_embed", ("default", "lape"),
         {MAIN: "stability.model.position:BLOCK_PE", "input": "stability.model.position:INPUT_PE"},
         "Class(cfg): each block's PE module, forward(h, pe) -> (h with the PE added, pe for the next block); "
         "the PE is kept out of the stream, as with lape", user_roles={"input": "lape"}),
    Kind("pos_embed_type", ("learned", "sincos"), {MAIN: "stability.model.position:PE_TYPES"},
         "a callable cfg -> nn.Parameter of shape (1, num_tokens, D)"),
    Kind("residual", ("plain", "weighted", "layerscale", "rezero"),
         {MAIN: ("stability.model.residual:RESIDUALS", "stability.model.layerscale:LAYERSCALE_RESIDUALS")},
         "Class(cfg): the scale of one residual branch, (B, N, D) -> (B, N, D)"),
    Kind("init", ("default", "spectral", "orthogonal"), {MAIN: "stability.model.init:INITS"},
         "a function fn(model) -> None, applied once to the built model"),
    Kind("reparam", ("none", "sigma"),
         {MAIN: ("stability.model.init:REPARAMS", "stability.model.sigma_reparam:SIGMA_REPARAMS")},
         "a function fn(model) -> None, applied once to the built model after the init scheme (it may swap "
         "layers, e.g. every Linear for a reparametrised one)"),
    Kind("activation", ("gelu", "minmax"), {MAIN: "stability.model.mlp:ACTIVATIONS"},
         "Class(cfg) or Class(): the MLP's nonlinearity, (..., H) -> (..., H)"),
    Kind("mlp", ("mlp", "liresconv"), {MAIN: "stability.model.mlp:MLPS"},
         "Class(cfg): the channel mixer, (B, N, D) -> (B, N, D)"),
    Kind("head", ("linear", "lln"), {MAIN: "stability.model.heads:HEADS"},
         "Class(cfg): the classifier, (B, D) -> (B, num_classes)"),
)}


# ------------------------------------------------------------------------------------------------ lookup
def is_class_path(value: Any) -> bool:
    """Whether ``value`` reads as ``package.module.ClassName`` (a dotted name with at least one dot)."""
    return isinstance(value, str) and bool(_DOTTED.match(value))


@lru_cache(maxsize=8)
def _entry_points(path: tuple[str, ...]) -> dict[str, dict[str, metadata.EntryPoint]]:
    """kind -> short name -> entry point, for the distributions on ``path`` (the cache key: ``sys.path``)."""
    found: dict[str, dict[str, metadata.EntryPoint]] = {}
    for ep in metadata.entry_points(group=GROUP):
        kind, dot, name = ep.name.partition(".")
        if dot and name and kind in KINDS:
            found.setdefault(kind, {}).setdefault(name, ep)  # the first on sys.path wins, as for imports
    return found


def entry_points(kind: str) -> dict[str, metadata.EntryPoint]:
    """The short names installed packages declare for ``kind`` (group :data:`GROUP`, ``<kind>.<name>``)."""
    return dict(_entry_points(tuple(sys.path)).get(kind, {}))


@lru_cache(maxsize=64)
def _table(kind: str, role: str) -> dict[str, Callable[..., Any]]:
    """The built-in builders of ``kind`` for ``role``, read from the built-in modules' tables."""
    paths = KINDS[kind].tables[role]
    table: dict[str, Callable[..., Any]] = {}
    for path in (paths,) if isinstance(paths, str) else paths:
        module, _, name = path.partition(":")
        table.update(getattr(importlib.import_module(module), name))
    if tuple(table) != KINDS[kind].builtins:  # a programming error: the two lists must be the same
        raise RuntimeError(f"the tables {paths} hold {tuple(table)}, but the registry's built-in {kind} values are "
                           f"{KINDS[kind].builtins}: keep them the same, in the same order")
    return table


def _short_path() -> str:
    """``sys.path`` in a few words: the folders a user's module could be in, the library folders counted."""
    library = ("site-packages", "dist-packages", f"python{sys.version_info[0]}.{sys.version_info[1]}",
               f"python{sys.version_info[0]}{sys.version_info[1]}.zip")
    own = [p or os.getcwd() for p in sys.path if not any(part in p for part in library)]
    shown = ", ".join(dict.fromkeys(own[:5])) + (f" and {len(own) - 5} more" if len(own) > 5 else "")
    return f"{shown} (+{len(sys.path) - len(own)} library folders)"


def _import(value: str) -> Any:
    """The object a class path names; ConfigError-ready text if it cannot be imported."""
    module, _, attr = value.rpartition(".")
    try:
        imported = importlib.import_module(module)
    except Exception as error:  # noqa: BLE001 - any failure importing the user's module is reported in one line
        text = " ".join(str(error).split())
        hint = "; add the folder that holds it to PYTHONPATH" if isinstance(error, ModuleNotFoundError) else ""
        raise LookupError(f"importing {module} failed: {type(error).__name__}: {text} "
                          f"(sys.path searched: {_short_path()}{hint})") from None
    found = getattr(imported, attr, None)
    if found is None:
        raise LookupError(f"module {module} has no {attr!r}")
    if not callable(found):
        raise LookupError(f"{value} is a {type(found).__name__}, not a class or function")
    return found


def _unknown(kind: str, value: Any) -> str:
    """Why ``value`` is no ``kind`` value, or '' if it is one (the core of :func:`check`)."""
    if not isinstance(value, str):
        return f"got {value!r}; {_valid(kind)} ({kind}={value!r} is not a string)"
    if value in KINDS[kind].builtins or value in entry_points(kind):
        return ""
    if is_class_path(value):
        try:
            _import(value)
        except LookupError as error:
            return f"got {value!r}, a class path, but {error}; {_valid(kind)}"
        return ""
    return f"got {value!r}; {_valid(kind)} ({kind}={value!r} is none of these)"


def _valid(kind: str) -> str:
    eps = entry_points(kind)
    found = ", ".join(f"{name} ({ep.value})" for name, ep in eps.items()) or "none installed"
    return (f"valid values: {', '.join(KINDS[kind].builtins)} (built-in), an entry point {kind}.<name> of group "
            f"{GROUP} ({found}), or a class path package.module.Class")


def check(kind: str, value: Any) -> None:
    """Raise one ConfigError line if ``value`` is not a ``kind`` value: the built-in values, the entry points
    found, and that a class path is accepted; for a class path that fails to import, the error and the
    ``sys.path`` it searched."""
    problem = _unknown(kind, value)
    if problem:
        raise ConfigError(f"model.vit.{kind}: {problem}")


def accepts(kind: str, value: Any) -> bool:
    """Whether ``value`` is a valid ``kind`` value: built-in, an installed entry point, or an importable class
    path."""
    return kind in KINDS and not _unknown(kind, value)


def source(kind: str, value: str) -> str:
    """Where ``value`` comes from, in words: ``built-in``, ``entry point mylab.norms:DyT`` or ``class path``."""
    if value in KINDS[kind].builtins:
        return "built-in"
    ep = entry_points(kind).get(value)
    return f"entry point {ep.value}" if ep is not None else "class path"


def resolve(kind: str, value: str, role: str = MAIN) -> Callable[..., Any]:
    """The builder (built-in) or the class / function (entry point, class path) that ``value`` names."""
    if value in KINDS[kind].builtins:
        return _table(kind, role)[value]
    if role != MAIN:  # a user's value plays the component's own role; the others are the kind's fixed choice
        return _table(kind, role)[KINDS[kind].user_roles[role]]
    ep = entry_points(kind).get(value)
    if ep is not None:
        return ep.load()
    check(kind, value)
    return _import(value)


def build(kind: str, cfg: Any, *args: Any, role: str = MAIN) -> Any:
    """The ``kind`` component ``cfg`` chooses (``getattr(cfg, kind)``), built as the built-in builders are:
    ``thing(cfg, *args)``, or ``thing()`` for a user class whose constructor needs no argument."""
    value = getattr(cfg, kind)
    thing = resolve(kind, value, role)
    if value in KINDS[kind].builtins or role != MAIN or _takes_arguments(thing):
        return thing(cfg, *args)
    return thing()


# ------------------------------------------------------------------------------------------ config types
def value_type(kind: str) -> type[str]:
    """The annotation of the ``kind`` toggle in :class:`ViTConfig`: ``str``, checked by jsonargparse too.

    A ``Literal`` would refuse a user's class path; plain ``str`` would let a typo through the parse and fail
    only when the config is built. This ``str`` subclass is registered with jsonargparse (when it is installed)
    with :func:`check` as its parser, so LightningCLI rejects ``--model.vit.norm bogus`` at parse time with the
    registry's one line, and passes any valid value (built-in, entry point, class path) on as a plain ``str``.
    """
    # the name is what `stability fit --help` shows as the type: the choices, as a Literal's would be
    name = "|".join((*KINDS[kind].builtins, "<entry point>", "<package.module.Class>"))
    cls = type(name, (str,), {"__doc__": f"A {kind} value: {KINDS[kind].contract}.", "__module__": __name__})
    try:
        from jsonargparse.typing import register_type
    except ImportError:  # the config works without it; only the command line needs it
        return cls
    register_type(cls, serializer=str, deserializer=lambda value: _parsed(kind, value))
    return cls


def _parsed(kind: str, value: Any) -> str:
    check(kind, value)
    return str(value)


def _takes_arguments(thing: Callable[..., Any]) -> bool:
    try:
        params = inspect.signature(thing).parameters.values()
    except (TypeError, ValueError):  # a builtin without a signature: give it the config
        return True
    return any(p.default is p.empty and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.VAR_POSITIONAL)
               for p in params)
