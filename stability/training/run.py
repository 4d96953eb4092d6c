"""One training run, start to finish: config -> model + data -> fit -> test -> run record.

The config is LightningCLI's (jsonargparse): typed, validated, composable from several YAML files. The same
entry point serves ``stability fit`` (argv) and the sweep (a nested dict per cell), so a sweep cell is
exactly what ``stability fit --config <run>/config.yaml`` would run.

A run folder holds ``config.yaml`` (written first), TensorBoard events, ``checkpoints/last.ckpt`` and
``summary.json`` (written atomically, last). Re-running on the same folder resumes from ``last.ckpt``, and
measures at its test what a kill after the last epoch cut off (the Lipschitz bounds: the checkpoint holds the
images they start from). ``config.yaml`` records the torch thread count the run used (``threads``, not part of
the run's id), which ``stability fit --config <run>/config.yaml`` applies: the run's numbers, bit for bit.

The parts: parsing and checking the config (:mod:`stability.training.cli`), the run's identity, computed once
(:mod:`stability.training.run_identity`), its folder (:mod:`stability.training.run_folder`), what its epochs
leave for the record (:mod:`stability.training.tracker`) and the record itself (:mod:`stability.training.summary`).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import lightning as L
import torch
import yaml

from stability.errors import ConfigError, OutOfSpace, RunFailed, full_disk_error
from stability.record.files import COLLAPSED, COMPLETED, DIVERGED, FAILED, FINISHED, SUMMARY, RunSummary, read_summary
from stability.training.cli import StabilityCLI, parse
from stability.training.collapse import collapse_reason
from stability.training.run_folder import (
    check_run_folder,
    checkpoint_to_resume,
    identity_config,
    out_of_space,
    prepare_run_dir,
    remove_stale_temp_files,
    resolve_run_dir,
)
from stability.training.run_identity import RunIdentity
from stability.training.summary import build_summary, write_summary
from stability.training.tracker import RunTracker


def run_cli(cli: StabilityCLI, run_dir: str | Path | None = None,
            extra_callbacks: list[L.Callback] | tuple[L.Callback, ...] = (),
            run_id: str | None = None) -> RunSummary:
    """Fit and test a parsed config into its run folder; return the summary (see module docstring).

    ``extra_callbacks`` are added to the trainer (for programmatic use: profiling, fault injection).
    ``run_id``: the config's id when it is known already (see :meth:`RunIdentity.of`); None: hashed here.

    Raises:
        ConfigError: the folder holds another run, or cannot be written (nothing was written).
        OutOfSpace: the disk filled up; no record is written, so the run stays resumable.
        RunFailed: the run raised; its record says ``failed``.
    """
    return _run_in_folder(cli, run_dir, extra_callbacks, run_id)[0]


def _run_in_folder(cli: StabilityCLI, run_dir: str | Path | None,
                   extra_callbacks: list[L.Callback] | tuple[L.Callback, ...] = (),
                   run_id: str | None = None) -> tuple[RunSummary, Path]:
    """:func:`run_cli`, also returning the run folder it resolved."""
    config = cli.config_dump_dict()
    identity = RunIdentity.of(identity_config(config), run_id)
    run_dir = resolve_run_dir(config, run_dir, identity.run_id)
    config["run_dir"] = str(run_dir)
    config["threads"] = torch.get_num_threads()  # what the run computes with (the config's, or the sweep's)
    config_text = yaml.safe_dump(config, sort_keys=False)
    check_run_folder(run_dir, identity.run_id)
    summary = read_summary(run_dir)
    if summary is not None and summary.status in FINISHED:
        return summary, run_dir  # finished runs are results; re-running them changes nothing
    prepare_run_dir(run_dir, config_text)
    with out_of_space(run_dir, "starting the run"):
        remove_stale_temp_files(run_dir)
        if summary is not None:  # a failed run being retried: its old record goes, the new one replaces it
            (run_dir / SUMMARY).unlink()
        ckpt_path = checkpoint_to_resume(run_dir)

    trainer = cli.make_trainer(run_dir, config)
    tracker = RunTracker()
    trainer.callbacks.extend([tracker, *extra_callbacks])
    model, data = cli.model, cli.datamodule
    divergence, telemetry = cli.divergence, cli.telemetry
    started = time.perf_counter()
    status, error, test_metrics, collapse = COMPLETED, None, {}, None
    try:
        trainer.fit(model, datamodule=data, ckpt_path=ckpt_path, weights_only=True)
        if trainer.interrupted:
            raise KeyboardInterrupt  # Ctrl-C: the run is cut off, not finished; no summary, resumable
        if divergence.diverged:
            status = DIVERGED
        else:
            test_metrics = trainer.test(model, datamodule=data, verbose=False)[0]
            collapse = collapse_reason(tracker.train_loss_history, divergence.initial_loss, tracker.final_val_acc,
                                       model.vit_config.num_classes)
            if collapse is not None:
                status = COLLAPSED
    except (KeyboardInterrupt, ConfigError):
        raise
    except Exception as exc:  # noqa: BLE001 - a run that raises is a result too: "failed"
        full = full_disk_error(exc)
        if full is not None:  # not the config's fault: leave the run resumable, record nothing
            raise OutOfSpace(full.filename or run_dir, "training") from None
        status, error = FAILED, (" ".join(f"{type(exc).__name__}: {exc}".split()) or type(exc).__name__)[:500]
        failure = exc
    summary = build_summary(identity, run_dir.name, trainer, model, tracker, divergence, telemetry, cli.lipschitz,
                            status=status, error=error, collapse=collapse, test_metrics=test_metrics,
                            started=started)
    write_summary(trainer, summary, run_dir)
    if status == FAILED:
        raise RunFailed(f"{run_dir.name}: {error}") from failure
    return summary, run_dir


def run(config: dict[str, Any], run_dir: str | Path, threads: int | None = None,
        run_id: str | None = None) -> RunSummary:
    """Run one sweep cell in-process (see :func:`run_cli`).

    Args:
        threads: torch intra-op threads for the run (None: leave the process's setting). The last digits of
            the numbers depend on it, so a sweep fixes it in its plan; the summary records it either way.
        run_id: the cell's id from the sweep's plan, which computed it with the same
            :func:`~stability.record.identity.config_hash` over the same resolved config (``config`` must be
            that config, unchanged); it is recorded as given, not hashed again. None: hashed here.
    """
    cli = parse(config)
    if threads is not None:
        torch.set_num_threads(threads)
    return run_cli(cli, run_dir, run_id=run_id)


def fit_main(argv: list[str]) -> int:
    """``stability fit``: exit 0 for completed, diverged or collapsed runs (results), 1 for a failed run, 2 for
    bad input, 3 when the disk filled up (the run resumes when the same command runs again)."""
    summary, run_dir = _run_in_folder(parse(argv), None)
    line = f"{summary.status}: {run_dir}"
    if summary.status == DIVERGED:
        line += f"\n  diverged at step {summary.diverged_step}: {summary.divergence_reason}"
    elif summary.status == COLLAPSED:
        line += f"\n  collapsed: {summary.collapse_reason}"
    else:
        line += (f"\n  test acc {summary.test_acc:.4f}, best val acc {summary.best_val_acc:.4f}, "
                 f"{summary.steps} steps, {summary.train_time_s:.1f} s training")
    print(line)
    print(f"  TensorBoard: tensorboard --logdir {run_dir.parent}")
    return 0


__all__ = ["fit_main", "run", "run_cli"]
