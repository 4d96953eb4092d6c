"""Ablation sweeps: grid files -> planned runs -> executors (a local process pool, or SLURM via submitit).

Modules, in the order data flows through them:
- :mod:`~stability.sweep.grid`: grid YAML -> checked :class:`GridSpec` -> cells (resolved configs);
- :mod:`~stability.sweep.plan`: validate every cell, name it (:mod:`stability.record.identity`), write ``plan.json``;
- :mod:`~stability.sweep.store`: ``plan.json``, and the record of a run that died (run folders, statuses and
  locks are :mod:`stability.record.files` and :mod:`stability.record.status`, shared with training and the report);
- :mod:`~stability.sweep.runner`: run one cell under its lock (idempotent; shared by the executors);
- :mod:`~stability.sweep.local`, :mod:`~stability.sweep.slurm`: the executors;
- :mod:`~stability.sweep.cli`: ``stability sweep``; :mod:`~stability.bench.sweep`: ``stability bench sweep``.
"""

from stability.sweep.grid import Cell, GridSpec, expand, load_grid

__all__ = ["Cell", "GridSpec", "expand", "load_grid"]
