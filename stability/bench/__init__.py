"""Benchmarks (``stability bench``): how fast the model trains, and what telemetry, Lipschitz measurements and
the sweep layer cost.

Modules, in the order data flows through them:
- :mod:`~stability.bench.cli`: ``stability bench WHAT [options]``: parses the options, runs one bench;
- :mod:`~stability.bench.model`: ``bench model``: a training step of our ViT against timm's and of each toggle
  against our baseline, and the machine's matmul rate (steps timed with
  :class:`stability.sweep.cost.StepTimer`, shared with the sweep's cost estimate);
- :mod:`~stability.bench.telemetry`: ``bench telemetry``: a digits run's step time with and without the
  default telemetry;
- :mod:`~stability.bench.lipschitz`: ``bench lipschitz``: the Lipschitz measurements' cost per run and per step;
- :mod:`~stability.bench.sweep`: ``bench sweep``: the sweep layer's overhead and parallel efficiency, from
  sweeps run as subprocesses.
"""
