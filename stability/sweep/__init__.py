"""Ablation sweeps: grid files -> planned runs -> executors (a local process pool, or SLURM via submitit).

Modules, in the order data flows through them:
- :mod:`~stability.sweep.grid`: grid YAML -> checked :class:`GridSpec`;
- :mod:`~stability.sweep.cells`: a grid -> its cells (resolved configs, seeded);
- :mod:`~stability.sweep.claim_check`: each claim of the grid selects runs that pair (checked at load);
- :mod:`~stability.sweep.plan`: validate every cell, name it (:mod:`stability.record.identity`), write ``plan.json``;
- :mod:`~stability.sweep.store`: ``plan.json``, and the record of a run that died (run folders, statuses and
  locks are :mod:`stability.record.files` and :mod:`stability.record.status`, shared with training and the report);
- :mod:`~stability.sweep.runner`: run one cell under its lock (idempotent; shared by the executors);
- :mod:`~stability.sweep.local`, :mod:`~stability.sweep.slurm`: the executors;
- :mod:`~stability.sweep.workers`: a local sweep's workers, torch threads per run and GPUs;
- :mod:`~stability.sweep.drive`: run the plan on an executor, then the closing lines and the exit status;
- :mod:`~stability.sweep.settle`: ``--settle``: seeds added in rounds to the cells of inconclusive claims;
- :mod:`~stability.sweep.edge_search`: ``--edge-search``: each configuration's stability edge by bisection;
- :mod:`~stability.sweep.dry_run`: ``--dry-run``: the plan and what it will cost, from
  :mod:`~stability.sweep.cost` (a run's FLOPs and the rate a training step reaches on this machine);
- :mod:`~stability.sweep.cli`: ``stability sweep`` (its options); :mod:`~stability.bench.sweep`:
  ``stability bench sweep``.

Run a sweep with ``stability sweep GRID`` (or ``python -m stability.cli sweep GRID``): the dispatcher in
:mod:`stability.cli` turns its errors into one line and an exit code.
"""

from stability.sweep.cells import Cell, expand
from stability.sweep.grid import GridSpec, load_grid

__all__ = ["Cell", "GridSpec", "expand", "load_grid"]
