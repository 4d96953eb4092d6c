"""One training run, start to finish: config -> model + data -> fit -> test -> run record (``stability fit``).

The sweep runs each of its cells through :func:`stability.training.run.run`; ``stability fit`` runs one
config through :func:`stability.training.run.fit_main`. Both write the same run folder: ``config.yaml``
first, TensorBoard events while training, ``summary.json`` (atomically) last.

Modules, in the order data flows through them:
- :mod:`~stability.training.messages`, :mod:`~stability.training.held_output`: a bad config becomes one
  ``error:`` line, and what Lightning says while checking it is held back;
- :mod:`~stability.training.cli`: the LightningCLI subclass: parse, validate, build model, data and trainer;
- :mod:`~stability.training.module`: the LightningModule: loss, optimiser, warmup + cosine, z-loss, margin;
- :mod:`~stability.training.optimizers`: AdamW, SGD, Lion (timm), Muon with AdamW for the rest (torch),
  independent weight decay;
- :mod:`~stability.training.telemetry`: divergence detection, the per-step and sampled probes, and the probe
  of the step a run diverges on (the summary's ``failure`` record, its pieces in
  :mod:`~stability.training.failure_record`);
- :mod:`~stability.training.lipschitz_monitor`: Lipschitz bounds during and after training, certificates;
- :mod:`~stability.training.tensorboard`, :mod:`~stability.training.user_loggers`: what TensorBoard shows
  of a run and a sweep (HParams, custom scalars, failure markers), and the user's own loggers beside it;
- :mod:`~stability.training.run_identity`, :mod:`~stability.training.run_folder`: a run's id, toggles and
  hparams, computed once; its folder, resume and atomic checkpoints;
- :mod:`~stability.training.tracker`, :mod:`~stability.training.collapse`: the per-epoch history a run keeps,
  and the rule that calls a finished run collapsed;
- :mod:`~stability.training.summary`: the one place a run's ``summary.json`` is built and written;
- :mod:`~stability.training.run`: ``run``, ``run_cli``, ``fit_main``.
"""
