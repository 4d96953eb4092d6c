"""Claims that can select nothing, found when the grid loads rather than after the whole sweep has run.

:func:`stability.analysis.claims.parse_claims` checks each claim on its own (keys, values a toggle can take);
only the grid knows which values its cells produce. A claim whose treatment, control or ``where`` names a value
no cell has, or whose treatment and control runs never pair (same seed, same other settings), would run the
whole sweep and then report "no pairs". :func:`check_claims` expands the grid (milliseconds) and compares each
claim with the toggles and headline hyperparameters of its cells (:func:`stability.record.identity.toggles_of`,
:func:`~stability.record.identity.hparams_of`), numbers compared as
:func:`stability.analysis.metrics.same_value` compares them, so ``3.0e-3`` selects ``0.003``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from stability.analysis.claims import METRICS, Claim, parse_claims
from stability.analysis.metrics import key_text, same_value
from stability.errors import ConfigError
from stability.record.identity import LR, SEED, hparams_of, toggles_of
from stability.sweep.cells import Cell, expand
from stability.sweep.grid import GridSpec


def check_claims(spec: GridSpec, cells: Sequence[Cell] | None = None) -> None:
    """Raise a one-line ConfigError for the first claim of ``spec`` that can select no run or no pair.

    ``cells``: the grid's cells if already expanded (default: :func:`stability.sweep.cells.expand`)."""
    claims = parse_claims(spec.claims, str(spec.path))
    if not claims:
        return
    rows = [{**hparams_of(cell.config), **toggles_of(cell.config)} for cell in (cells or expand(spec))]
    for i, claim in enumerate(claims):
        at = f"{spec.path}: claims[{i}] (\"{' '.join(claim.claim.split())}\")"
        _check_values(at, claim, rows)
        _check_pairs(at, claim, rows)


def _check_values(at: str, claim: Claim, rows: Sequence[Mapping[str, Any]]) -> None:
    """Every value the claim names is a value some cell has."""
    for part, selector in (("treatment", claim.treatment), ("control", claim.control), ("where", claim.where)):
        for key, value in selector.items():
            have = _distinct(row.get(key) for row in rows)
            for want in value if isinstance(value, list) else [value]:
                if not any(same_value(h, want) for h in have):
                    raise ConfigError(f"{at}: {part} {key}={want!r} selects no run; the grid's {key} values: "
                                      f"{', '.join(map(_text, have))}")


def _check_pairs(at: str, claim: Claim, rows: Sequence[Mapping[str, Any]]) -> None:
    """Some treatment cell has a control cell with the same seed and the same other settings (within ``where``),
    the pairing :func:`stability.analysis.verdicts.evaluate` makes."""
    inside = [row for row in rows if selects(row, claim.where)]
    treat = [row for row in inside if selects(row, claim.treatment)]
    ctrl = [row for row in inside if selects(row, claim.control)]
    for part, side, selector in (("treatment", treat, claim.treatment), ("control", ctrl, claim.control)):
        if not side:
            where = f" with where {_pairs(claim.where)}" if claim.where else ""
            raise ConfigError(f"{at}: no cell has the {part} {_pairs(selector)}{where}; no run to compare")
    grid_metric = claim.metric in METRICS and METRICS[claim.metric].per == "grid"
    ignore = {*claim.treatment, SEED, *([LR] if grid_metric else [])}
    varying = [k for k in rows[0] if k not in ignore and len(_distinct(row.get(k) for row in rows)) > 1]

    def cell(row: Mapping[str, Any]) -> tuple[str, ...]:
        return tuple(key_text(row.get(k)) for k in (SEED, *varying))

    if not {cell(row) for row in treat} & {cell(row) for row in ctrl}:
        raise ConfigError(f"{at}: no treatment cell ({_pairs(claim.treatment)}) has a control cell "
                          f"({_pairs(claim.control)}) with the same seed and the same "
                          f"{', '.join(varying) or 'settings'}; nothing pairs, so no verdict could be reached")


def selects(row: Mapping[str, Any], selector: Mapping[str, Any]) -> bool:
    """The cell matches every key of the selector (a list: any of its values)."""
    for key, value in selector.items():
        options = value if isinstance(value, list) else [value]
        if not any(same_value(row.get(key), v) for v in options):
            return False
    return True


def _distinct(values: Any) -> list[Any]:
    """The distinct values, in first-seen order (1 and 1.0 are one value)."""
    seen: dict[str, Any] = {}
    for v in values:
        seen.setdefault(key_text(v), v)
    return list(seen.values())


def _text(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def _pairs(selector: Mapping[str, Any]) -> str:
    """``attention=cosine, lr=0.03``: a selector as the one line reads it."""
    return ", ".join(f"{k}={'|'.join(map(_text, v)) if isinstance(v, list) else _text(v)}"
                     for k, v in selector.items())
