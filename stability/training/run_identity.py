"""A run's identity, computed once from its resolved config: its id, its toggles and its hyperparameters.

The definitions are :mod:`stability.record.identity`'s; this holds their values for one run, so the run's
folder check and its summary read the same ones and nothing hashes the config twice.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from stability.record.identity import config_hash, hparams_of, toggles_of


@dataclass(frozen=True)
class RunIdentity:
    """The run id (:func:`~stability.record.identity.config_hash`), toggle values and headline hyperparameters."""

    run_id: str
    toggles: dict[str, Any]
    hparams: dict[str, Any]

    @classmethod
    def of(cls, config: Mapping[str, Any], run_id: str | None = None) -> RunIdentity:
        """The identity of the resolved ``config``.

        ``run_id`` is the id when it is known already: a sweep's plan computed it with the same
        :func:`~stability.record.identity.config_hash` over the same resolved config (the plan stores the config
        the parser resolved, and the run resolves it again to the same dump), so it is taken as given, not
        hashed again to be checked. None: hash ``config`` here.
        """
        return cls(run_id if run_id is not None else config_hash(config), toggles_of(config), hparams_of(config))
