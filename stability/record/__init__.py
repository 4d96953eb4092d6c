"""The run record: what a run folder holds and what it means, in plain Python (no torch, no Lightning).

Training writes the record, the sweep reads it to decide what is left to run, and the analysis turns records
into tables; all three go through this wing, so the sweep parent and the report never load torch.

Modules, in the order data flows through them:
- :mod:`~stability.record.config_files`: the strict YAML reader and the merge rule of config files;
- :mod:`~stability.record.identity`: a run's identity from its resolved config: toggles, hparams, id, name;
- :mod:`~stability.record.checked_read`: reading record files without trusting the folder (regular files
  only, bounded, ``summary.json`` checked field by field);
- :mod:`~stability.record.files`: a run folder's file names, the statuses, ``summary.json`` as a typed
  record, atomic writes;
- :mod:`~stability.record.progress`: a running run's ``progress.json``;
- :mod:`~stability.record.status`: a run's status read from its folder, and the run lock.
"""
