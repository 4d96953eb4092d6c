"""One colour per toggle value, the same in every figure of every sweep.

A reader who has learnt that ``attention=cosine`` is purple in the loss curves must find it purple in the
learning-rate curves and the EDF of any other sweep, so colours come from the toggles themselves
(:data:`stability.record.identity.TOGGLES`), never from the order in which a figure happens to meet the values.

The rules:

- **Baseline values are neutral.** Every toggle's baseline (its first value: ``patchify``, ``layernorm``,
  ``dot``, warmup on, ...) is :data:`NEUTRAL` grey: "no trick" looks the same everywhere.
- **Every other value has its own look.** The non-baseline built-in values of all toggles are ranked
  round-robin, toggle by toggle in ``TOGGLES`` order: first each toggle's first alternative (``stem=conv``,
  ``norm=centernorm``, ..., ``warmup=False``), then each toggle's second one (``norm=rmsnorm``,
  ``attention=qknorm``, ...), and so on; the k-th value in that ranking takes ``COLOURS[k % len(COLOURS)]``
  in its ``k // len(COLOURS)``-th line style (:func:`look`). The strong colours thus go to each toggle's main
  alternative; while the ranking is shorter than ``COLOURS`` (19 colours, 17 non-baseline values today) no two
  values share a colour, and past it the colours cycle with the next line style and marker, so any number of
  values stay apart. A value ``TOGGLES`` does not list (a researcher's own component, ``norm=mylab.norms.DyT``,
  or an older sweep's value) gets a colour from a stable hash of ``toggle=value``: the same in every figure and
  sweep, and where it meets another value's colour in one figure, the later one takes the next line style and
  marker (:func:`value_styles`, :func:`config_styles`).
- **Configurations (several toggles at once) take the colour of their first non-baseline toggle value**, in
  ``TOGGLES`` order, among the toggles the figure distinguishes (those that vary in it and do not name its
  facet): ``stem=conv,warmup=False`` is coloured as ``stem=conv``, ``warmup=False`` alone as warmup=False,
  the all-baseline configuration neutral. Configurations that share a colour in one figure differ by line
  style and marker, handed out in the order they appear (:func:`config_styles`); only the colour keeps its
  meaning from one figure to the next, the legend names every line.
- **Individual runs** (telemetry of a few diverged runs) are not toggle values: they take evenly spaced
  colours of a sequential map (:func:`run_colours`), so that they are not read as toggle colours.

Plain Python (no matplotlib import), so the palette can be checked without drawing anything.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from stability.record.identity import TOGGLES

NEUTRAL = "#505050"  # every baseline value
# Distinguishable on white and in greyscale-ish print: matplotlib's tab10 without its grey (kept for the
# baselines), then the dark tab20b tones, then a few light tab20 tones.
COLOURS: tuple[str, ...] = (
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#bcbd22", "#17becf",
    "#393b79", "#637939", "#8c6d31", "#843c39", "#7b4173",
    "#aec7e8", "#ffbb78", "#98df8a", "#ff9896", "#c5b0d5",
)
LINESTYLES: tuple[str, ...] = ("-", "--", ":", "-.")
MARKERS: tuple[str, ...] = ("o", "s", "^", "D", "v", "P", "X", "*")
RUN_CMAP = "viridis"


def value_key(value: Any) -> str:
    """A toggle value as the palette compares it: ``True``, ``np.True_`` and ``"True"`` are one value."""
    if hasattr(value, "item") and not isinstance(value, str):
        value = value.item()  # numpy scalars -> Python
    return str(value)


def _ranking() -> dict[tuple[str, str], tuple[str, int]]:
    """(toggle, value key) -> (colour, line-style index) for every non-baseline value of ``TOGGLES``
    (module docstring)."""
    alternatives = [toggle.values[1:] for toggle in TOGGLES.values()]
    ranked: list[tuple[str, str]] = []
    for rank in range(max((len(a) for a in alternatives), default=0)):
        for name, values in zip(TOGGLES, alternatives, strict=True):
            if rank < len(values):
                ranked.append((name, value_key(values[rank])))
    looks: dict[tuple[str, str], tuple[str, int]] = {}
    used: dict[str, set[str]] = {}
    i = 0
    for pair in ranked:  # the next colour in turn, skipping those the same toggle has while some are left
        mine = used.setdefault(pair[0], set())
        for _ in range(len(COLOURS)):
            if COLOURS[i % len(COLOURS)] not in mine or len(mine) >= len(COLOURS):
                break
            i += 1
        looks[pair] = (COLOURS[i % len(COLOURS)], i // len(COLOURS))
        mine.add(COLOURS[i % len(COLOURS)])
        i += 1
    return looks


_LOOK_OF = _ranking()


def is_baseline(toggle: str, value: Any) -> bool:
    """Whether ``value`` is ``toggle``'s baseline; False for toggles ``TOGGLES`` does not know."""
    known = TOGGLES.get(toggle)
    return known is not None and value_key(value) == value_key(known.baseline)


def look(toggle: str, value: Any) -> tuple[str, int]:
    """(colour, line-style index) of ``toggle=value`` in every figure: neutral and solid for the baseline, the
    ranked built-in values' own, a stable hash's colour (solid) for any other value (module docstring)."""
    if is_baseline(toggle, value):
        return NEUTRAL, 0
    key = (toggle, value_key(value))
    if key in _LOOK_OF:
        return _LOOK_OF[key]
    digest = hashlib.sha256(f"{key[0]}={key[1]}".encode()).digest()
    return COLOURS[digest[0] % len(COLOURS)], 0


def colour(toggle: str, value: Any) -> str:
    """The colour of ``toggle=value`` in every figure: neutral for the baseline (module docstring)."""
    return look(toggle, value)[0]


@dataclass(frozen=True)
class Style:
    """How one configuration's line is drawn; ``key`` says which toggle value gave the colour."""

    colour: str
    linestyle: str
    marker: str
    key: str  # "stem=conv", or "baseline" when every distinguished toggle is at its baseline

    @property
    def line(self) -> dict[str, str]:
        """Matplotlib's keywords for a line in this style's colour and line style."""
        return {"color": self.colour, "ls": self.linestyle}


def colour_key(config: Mapping[str, Any], toggles: Sequence[str]) -> tuple[str, str]:
    """(``"toggle=value"`` or ``"baseline"``, colour) of a configuration: its first non-baseline value among
    ``toggles``, taken in ``TOGGLES`` order (unknown toggles after, in the order given)."""
    order = {name: i for i, name in enumerate(TOGGLES)}
    for name in sorted(toggles, key=lambda t: order.get(t, len(order))):
        if name in config and not is_baseline(name, config[name]):
            return f"{name}={value_key(config[name])}", colour(name, config[name])
    return "baseline", NEUTRAL


def _style(colour_: str, start: int, key: str, used: set[tuple[str, int]]) -> Style:
    """The first look of ``colour_`` from line style ``start`` on that no earlier line of the figure has."""
    i = start
    while (colour_, i) in used:
        i += 1
    used.add((colour_, i))
    return Style(colour_, LINESTYLES[i % len(LINESTYLES)], MARKERS[i % len(MARKERS)], key)


def value_styles(toggle: str | None, values: Sequence[Any]) -> dict[str, Style]:
    """Value key -> :class:`Style` for the values of one toggle drawn together: each its own :func:`look`,
    and a value whose look an earlier one already has (two hashed colours that meet) the next free style.
    Without a toggle (one group of runs), neutral."""
    used: set[tuple[str, int]] = set()
    styles: dict[str, Style] = {}
    for value in values:
        colour_, start = look(toggle, value) if toggle else (NEUTRAL, 0)
        styles[value_key(value)] = _style(colour_, start, f"{toggle}={value_key(value)}", used)
    return styles


def config_styles(configs: Mapping[str, Mapping[str, Any]], toggles: Sequence[str]) -> dict[str, Style]:
    """Label -> :class:`Style` for configurations drawn together (module docstring): no two lines of the figure
    share colour and line style, however many configurations share a colour.

    Args:
        configs: label -> {toggle: value}, in drawing order.
        toggles: the toggles the figure tells apart by colour (those that vary among ``configs``, less any
            toggle a facet already names).
    """
    styles: dict[str, Style] = {}
    used: set[tuple[str, int]] = set()
    for label, config in configs.items():
        key, col = colour_key(config, toggles)
        start = look(*key.split("=", 1))[1] if key != "baseline" else 0
        styles[label] = _style(col, start, key, used)
    return styles


def run_colours(n: int) -> list[tuple[float, float, float, float]]:
    """``n`` evenly spaced colours of a sequential map, for individual runs (not toggle values)."""
    from matplotlib import colormaps

    cmap = colormaps[RUN_CMAP]
    return [cmap(0.85 * i / max(n - 1, 1)) for i in range(n)]
