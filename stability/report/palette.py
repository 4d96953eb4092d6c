"""One colour per toggle value, the same in every figure of every sweep.

A reader who has learnt that ``attention=cosine`` is purple in the loss curves must find it purple in the
learning-rate curves and the EDF of any other sweep, so colours come from the toggles themselves
(:data:`stability.record.identity.TOGGLES`), never from the order in which a figure happens to meet the values.

The rules:

- **Baseline values are neutral.** Every toggle's baseline (its first value: ``patchify``, ``layernorm``,
  ``dot``, warmup on, ...) is :data:`NEUTRAL` grey: "no trick" looks the same everywhere.
- **Every other value has its own colour.** The non-baseline values of all toggles are ranked round-robin,
  toggle by toggle in ``TOGGLES`` order: first each toggle's first alternative (``stem=conv``,
  ``norm=centernorm``, ..., ``warmup=False``), then each toggle's second one (``norm=rmsnorm``,
  ``attention=qknorm``, ...), and so on; the k-th value in that ranking takes ``COLOURS[k]``. The strong
  colours thus go to each toggle's main alternative, and as long as ``COLOURS`` is longer than the ranking
  (19 colours, 17 non-baseline values today) no two values of any toggles share a colour. A value that
  ``TOGGLES`` does not list (an older sweep's value) gets a colour from a stable hash of ``toggle=value``.
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


def _ranking() -> dict[tuple[str, str], str]:
    """(toggle, value key) -> colour for every non-baseline value of ``TOGGLES`` (module docstring)."""
    alternatives = [toggle.values[1:] for toggle in TOGGLES.values()]
    ranked: list[tuple[str, str]] = []
    for rank in range(max((len(a) for a in alternatives), default=0)):
        for name, values in zip(TOGGLES, alternatives, strict=True):
            if rank < len(values):
                ranked.append((name, value_key(values[rank])))
    return {pair: COLOURS[i % len(COLOURS)] for i, pair in enumerate(ranked)}


_COLOUR_OF = _ranking()


def is_baseline(toggle: str, value: Any) -> bool:
    """Whether ``value`` is ``toggle``'s baseline; False for toggles ``TOGGLES`` does not know."""
    known = TOGGLES.get(toggle)
    return known is not None and value_key(value) == value_key(known.baseline)


def colour(toggle: str, value: Any) -> str:
    """The colour of ``toggle=value`` in every figure: neutral for the baseline (module docstring)."""
    if is_baseline(toggle, value):
        return NEUTRAL
    key = (toggle, value_key(value))
    if key in _COLOUR_OF:
        return _COLOUR_OF[key]
    digest = hashlib.sha256(f"{key[0]}={key[1]}".encode()).digest()
    return COLOURS[digest[0] % len(COLOURS)]


@dataclass(frozen=True)
class Style:
    """How one configuration's line is drawn; ``key`` says which toggle value gave the colour."""

    colour: str
    linestyle: str
    marker: str
    key: str  # "stem=conv", or "baseline" when every distinguished toggle is at its baseline


def colour_key(config: Mapping[str, Any], toggles: Sequence[str]) -> tuple[str, str]:
    """(``"toggle=value"`` or ``"baseline"``, colour) of a configuration: its first non-baseline value among
    ``toggles``, taken in ``TOGGLES`` order (unknown toggles after, in the order given)."""
    order = {name: i for i, name in enumerate(TOGGLES)}
    for name in sorted(toggles, key=lambda t: order.get(t, len(order))):
        if name in config and not is_baseline(name, config[name]):
            return f"{name}={value_key(config[name])}", colour(name, config[name])
    return "baseline", NEUTRAL


def config_styles(configs: Mapping[str, Mapping[str, Any]], toggles: Sequence[str]) -> dict[str, Style]:
    """Label -> :class:`Style` for configurations drawn together (module docstring).

    Args:
        configs: label -> {toggle: value}, in drawing order.
        toggles: the toggles the figure tells apart by colour (those that vary among ``configs``, less any
            toggle a facet already names).
    """
    styles: dict[str, Style] = {}
    used: dict[str, int] = {}
    for label, config in configs.items():
        key, col = colour_key(config, toggles)
        i = used.get(key, 0)
        used[key] = i + 1
        styles[label] = Style(col, LINESTYLES[i % len(LINESTYLES)], MARKERS[i % len(MARKERS)], key)
    return styles


def run_colours(n: int) -> list[tuple[float, float, float, float]]:
    """``n`` evenly spaced colours of a sequential map, for individual runs (not toggle values)."""
    from matplotlib import colormaps

    cmap = colormaps[RUN_CMAP]
    return [cmap(0.85 * i / max(n - 1, 1)) for i in range(n)]
