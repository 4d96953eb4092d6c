"""Claims as data, verdicts as output: a paper's claim, checked over independent seeds.

A grid file may state the claims its runs test (``claims:``), each in a small vocabulary::

    claims:
      - claim: LaPE raises accuracy at convergence      # what the paper says, in words
        source: Yu et al. 2023 (LaPE), Tables 2-4        # where it says it
        treatment: {pos_embed: lape}                     # the runs that have the trick (a bundle: several keys)
        control: {}                                      # the runs compared with: the same keys at the values
                                                         #   given here, else at their baselines
        metric: final_val_acc                            # one of METRICS
        direction: increase                              # increase | decrease (what the claim predicts)
        min_effect: 0.01                                 # the smallest effect that matters, in the metric's units
        equivalence_margin: 0.01                         # optional: "no effect" is a finding when the effect is
                                                         #   shown to lie within +-this (two one-sided tests)
        where: {lr: 0.003}                               # optional: only runs with these values (a list: any of)
        pool: false                                      # true: one verdict over every lr (averaged per seed)

Keys are toggle names (:data:`stability.record.identity.TOGGLES`) or headline hyperparameters
(:data:`stability.record.identity.HPARAM_KEYS`: ``lr``, ``weight_decay``, ``optimizer``, ...); dotted config keys
(``model.vit.pos_embed``, ``model.lr``) are accepted and mapped to them.

Each metric has a kind (:data:`KINDS`: continuous, binary, ordinal) that decides its statistic. How a claim becomes
a verdict is :mod:`stability.analysis.verdicts`. Plain Python: a grid file's claims are checked
when the grid is loaded, before anything runs, and ``stability sweep`` then checks that each selects runs of the
grid that pair (:mod:`stability.sweep.claim_check`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from stability.errors import ConfigError
from stability.record.identity import HPARAM_KEYS, TOGGLES

DIRECTIONS = ("increase", "decrease")
# What a metric's numbers are, which decides its statistic (stability.analysis.intervals): a real number per run
# or seed, a 0/1 outcome per run, or a point of the lr grid.
KINDS = ("continuous", "binary", "ordinal")
CLAIM_KEYS = ("claim", "source", "treatment", "control", "metric", "direction", "min_effect", "equivalence_margin",
              "where", "pool")


@dataclass(frozen=True)
class Metric:
    """A quantity a claim can be about."""

    name: str
    description: str
    unit: str  # how the effect reads: "accuracy", "nats", "decades", "fraction of runs"
    per: str = "run"  # "run": one value per run; "grid": one value per seed over the lr grid
    at_convergence: bool = True  # the verdict needs a converged control
    kind: str = "continuous"  # one of KINDS: continuous (t-interval), binary (Newcombe), ordinal (median)


METRICS: dict[str, Metric] = {m.name: m for m in (
    Metric("final_val_acc", "validation accuracy after the last epoch", "accuracy"),
    Metric("test_acc", "test accuracy of the final model", "accuracy"),
    Metric("best_val_acc", "best validation accuracy over epochs (optimistic on a small validation set)",
           "accuracy"),
    Metric("final_val_loss", "validation loss after the last epoch", "nats"),
    Metric("final_train_loss", "training loss of the last step", "nats"),
    Metric("max_attn_logit", "largest attention logit during training, log10", "decades", at_convergence=False),
    Metric("max_log_z", "largest mean log-partition log Z of the output logits during training", "nats",
           at_convergence=False),
    # rates: each run is one Bernoulli trial (0 or 1), so they are compared as proportions, not averaged per seed
    Metric("failure_rate", "fraction of runs that diverged or collapsed", "fraction of runs",
           at_convergence=False, kind="binary"),
    Metric("divergence_rate", "fraction of runs that diverged", "fraction of runs", at_convergence=False,
           kind="binary"),
    Metric("collapse_rate", "fraction of runs that collapsed (trained, but stayed at chance)", "fraction of runs",
           at_convergence=False, kind="binary"),
    # relative to each configuration's own best loss, so it needs a control that trained well at its best lr
    Metric("lr_sensitivity", "Wortsman et al. 2023 LR sensitivity: mean over the lr grid of min(final val "
           "loss, initial loss) minus the best", "nats", per="grid"),
    Metric("largest_stable_lr", "largest lr of the grid whose run neither diverged nor collapsed, log10",
           "decades", per="grid", at_convergence=False, kind="ordinal"),
)}


@dataclass(frozen=True)
class Claim:
    """One hypothesis a sweep tests (see the module docstring for each field)."""

    claim: str
    treatment: dict[str, Any]
    control: dict[str, Any]
    metric: str
    direction: str
    min_effect: float
    where: dict[str, list[Any]] = field(default_factory=dict)
    pool: bool = False
    source: str = ""
    equivalence_margin: float | None = None  # > 0: the verdict may be "equivalent" (stability.analysis.decisions)


def _column(key: str) -> str | None:
    """The run-table column a claim key names (a toggle, a headline hparam, or their dotted config keys)."""
    if key in TOGGLES or key in HPARAM_KEYS:
        return key
    for name, toggle in TOGGLES.items():
        if toggle.key == key:
            return name
    for name, dotted in HPARAM_KEYS.items():
        if dotted == key:
            return name
    return None


def parse_claims(raw: Any, where: str) -> list[Claim]:
    """Validate a grid file's ``claims:`` list; a mistake is one ConfigError line naming ``where`` and the key."""
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise ConfigError(f"{where}: claims: expected a list of claims, got {type(raw).__name__}")
    return [_parse_claim(entry, f"{where}: claims[{i}]") for i, entry in enumerate(raw)]


def _parse_claim(entry: Any, at: str) -> Claim:
    if not isinstance(entry, Mapping):
        raise ConfigError(f"{at}: expected a mapping with keys {', '.join(CLAIM_KEYS)}")
    unknown = [k for k in entry if k not in CLAIM_KEYS]
    if unknown:
        raise ConfigError(f"{at}: unknown key {unknown[0]!r}; valid keys: {', '.join(CLAIM_KEYS)}")
    for key in ("claim", "treatment", "metric", "direction", "min_effect"):
        if key not in entry:
            raise ConfigError(f"{at}: {key} is missing")
    if not isinstance(entry["claim"], str) or not entry["claim"].strip():
        raise ConfigError(f"{at}.claim: give the claim in words, e.g. 'LaPE raises accuracy'")
    if entry["metric"] not in METRICS:
        raise ConfigError(f"{at}.metric: got {entry['metric']!r}; valid values: {', '.join(METRICS)}")
    if entry["direction"] not in DIRECTIONS:
        raise ConfigError(f"{at}.direction: got {entry['direction']!r}; valid values: {', '.join(DIRECTIONS)}")
    m = entry["min_effect"]
    if isinstance(m, bool) or not isinstance(m, (int, float)) or not math.isfinite(m) or m < 0:
        raise ConfigError(f"{at}.min_effect: got {m!r}; it must be a number >= 0 in the metric's units "
                          f"({METRICS[entry['metric']].unit})")
    margin = entry.get("equivalence_margin")
    if margin is not None and (isinstance(margin, bool) or not isinstance(margin, (int, float))
                               or not math.isfinite(margin) or margin <= 0):
        raise ConfigError(f"{at}.equivalence_margin: got {margin!r}; it must be a number > 0 in the metric's "
                          f"units ({METRICS[entry['metric']].unit}), or absent")
    treatment = _selector(entry["treatment"], f"{at}.treatment", allow_empty=False)
    control = _selector(entry.get("control") or {}, f"{at}.control", allow_empty=True)
    extra = [k for k in control if k not in treatment]
    if extra:
        raise ConfigError(f"{at}.control: {extra[0]!r} is not a treatment key; the control differs from the "
                          f"treatment in the treatment's keys only ({', '.join(treatment)})")
    for key in treatment:
        if key not in control:
            if key not in TOGGLES:
                raise ConfigError(f"{at}.control: give the control's {key} (only toggles have a baseline)")
            control[key] = TOGGLES[key].baseline
    if all(treatment[k] == control[k] for k in treatment):
        raise ConfigError(f"{at}: treatment and control are the same runs ({treatment}); change a value")
    where_raw = _selector(entry.get("where") or {}, f"{at}.where", allow_empty=True, lists=True)
    pool = entry.get("pool", False)
    if not isinstance(pool, bool):
        raise ConfigError(f"{at}.pool: got {pool!r}; valid values: true, false")
    return Claim(claim=entry["claim"].strip(), treatment=treatment, control=control, metric=entry["metric"],
                 direction=entry["direction"], min_effect=float(m), where=where_raw, pool=pool,
                 source=str(entry.get("source") or ""),
                 equivalence_margin=None if margin is None else float(margin))


def _selector(raw: Any, at: str, allow_empty: bool, lists: bool = False) -> dict[str, Any]:
    if not isinstance(raw, Mapping) or (not raw and not allow_empty):
        raise ConfigError(f"{at}: expected a mapping of toggles or hyperparameters to values, e.g. "
                          "{pos_embed: lape}")
    out: dict[str, Any] = {}
    for key, value in raw.items():
        column = _column(str(key))
        if column is None:
            raise ConfigError(f"{at}: unknown key {key!r}; valid keys: the toggles ({', '.join(TOGGLES)}) and "
                              f"{', '.join(HPARAM_KEYS)}")
        values = list(value) if lists and isinstance(value, list) else [value]
        if column in TOGGLES:
            bad = [v for v in values if not TOGGLES[column].accepts(v)]
            if bad:
                own = ", an entry point or a class path package.module.Class" if TOGGLES[column].component else ""
                raise ConfigError(f"{at}.{key}: got {bad[0]!r}; valid values: "
                                  f"{', '.join(map(str, TOGGLES[column].values))}{own}")
        out[column] = values if lists else value
    return out
