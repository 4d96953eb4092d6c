"""stability: which training-stability tricks make Vision Transformers train reliably.

Data flows one way: config -> model + data -> one training run -> run record -> results table -> report.
The package shows that flow as wings, one subpackage each, listed here from the bottom up. A wing imports only
from wings above it in this list (lazy and type-only imports included); ``tests/front/test_imports.py``
checks it, and :data:`WINGS` is the same list as data.

- ``stability.errors``    the one-line errors and exit codes every wing raises (no imports of its own);
- ``stability.model``     the configurable ViT: its config, one module per component kind, and
  ``model.lipschitz``: upper and lower Lipschitz bounds, certificates;
- ``stability.data``      LightningDataModules: digits (embedded), Fashion-MNIST, CIFAR-10/100, image folders;
- ``stability.record``    a run folder's files without torch: summary, statuses, identity, progress, configs;
- ``stability.analysis``  run records -> pandas; metrics, claims and verdicts (pure functions);
- ``stability.training``  one run: the LightningModule, its callbacks, the run folder, ``stability fit``;
- ``stability.sweep``     grids -> plans -> executors (local pool, SLURM), the cost model, ``stability sweep``;
- ``stability.report``    tables, figures, report.html, comparisons, ``stability report``;
- ``stability.bench``     ``stability bench``: the model against timm and the machine's matmul rate;
- the front door: ``stability.cli`` (the ``stability`` command), ``stability.demo``, ``stability.docs``.
"""

__version__ = "0.1.0"

# The wings, lowest first: each may import from the ones before it (see the docstring).
WINGS = ("errors", "model", "data", "record", "analysis", "training", "sweep", "report", "bench")
# The front door's modules: they may import any wing, and no wing imports them.
FRONT_DOOR = ("cli", "demo", "docs")
