"""What TensorBoard shows of a run and of a sweep, written with TensorBoard's own summary formats.

TensorBoard builds its views from the event files alone, by rules read in its source (2.21) and checked
with a real server and browser (``tests/test_tensorboard_view.py``):

- **HParams.** The table's columns come from one *experiment* summary; when several runs carry one,
  an arbitrary one wins. Which columns it shows without a click is decided by two sorts and a count:
  the server orders the experiment's hyperparameters by ``(not differs, name)``
  (``plugins/hparams/backend_context.py``, ``_sort_and_reduce_to_hparams_limit``), the HParams
  dashboard re-sorts them, stably, by ``differs`` alone and ticks the first ``min(5, n)``
  (``_computeHParams`` in the bundled ``webfiles.zip``); the metrics are ticked in the experiment's order,
  the first five (``_computeMetrics``). ``differs`` is the only lever (names are fixed: they key every
  run's values); TensorBoard uses it for nothing else but a "differs" label in the column picker of the
  Time Series runs table. So the experiment sets ``differs`` on the columns that should be shown (at most
  :data:`VISIBLE_COLUMNS`), not on every column that varies: lr and seed first whenever they vary, then
  the varied toggles that set the most runs apart from the baseline, then any other varied key; a varied
  key beyond the fifth is written with ``differs`` unset and listed, unticked, in the filter panel. Within
  the shown columns the server's name order reads well (``toggle/<name>`` before ``trial/lr`` before
  ``trial/seed``; display names drop the prefixes). A sweep writes this experiment once, at its folder's
  root (TensorBoard's run ``.``), with the keys its cells vary, and lr and seed even when constant; each
  run writes only its session: its values at the start, its results and status at the end. A run outside
  a sweep writes an experiment of its own, with its non-baseline toggles, lr and seed as the shown columns.
  The metrics start with the failure flags: ``diverged``, ``collapsed``. Every run writes every metric
  (:data:`HPARAMS_METRICS` says what each means for a run that diverged, collapsed or failed): the
  parallel-coordinates and scatter views draw only the runs that have them all
  (``_build_session_groups``: a session without a metric is left out of the plots).
- **Custom scalars.** Each run writes a layout (TensorBoard merges the runs' layouts and drops repeated
  charts): loss and the failure markers, then the max attention logit and the gradient norm per layer.
- **Time Series** shows groups of tags sorted by name and opens the first two: the ``Stability/`` group
  (:mod:`stability.training.telemetry`: loss, gradient norm, max attention logit, the failure markers) sorts first
  because capitals sort before lower case.
- **Markers.** A failure is marked at the step it was decided: ``Stability/<kind>`` = 1.0 and a text event
  (``Stability/events``) saying why. ``diverged`` is written by the divergence detector at the step the run
  was stopped; ``collapsed`` (:mod:`stability.training.collapse`) by :class:`RunLogger` with the run's results, at
  its last optimiser step: where its curves end, since the rule reads the last epoch's training loss and
  the final validation accuracy.

Only TensorBoard's summary protos are imported at module level: the sweep parent writes the sweep's
experiment without importing Lightning (seconds); :class:`RunLogger` is built on first use.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path
from typing import Any

from tensorboard.compat.proto import event_pb2, summary_pb2, tensor_pb2, tensor_shape_pb2, types_pb2
from tensorboard.plugins.custom_scalar import layout_pb2
from tensorboard.plugins.custom_scalar import metadata as custom_scalar_metadata
from tensorboard.plugins.hparams import api_pb2, plugin_data_pb2, summary_v2
from tensorboard.plugins.hparams import metadata as hparams_metadata
from tensorboard.summary.writer.record_writer import RecordWriter

from stability.record.files import COLLAPSED, DIVERGED, FAILED, PLAN, RunSummary, atomic_file
from stability.record.identity import HPARAM_KEYS, LR, SEED, TOGGLES, hparams_of, toggles_of

TOGGLE_PREFIX = "toggle/"
TRIAL_PREFIX = "trial/"
HEADLINE_HPARAMS = (TRIAL_PREFIX + LR, TRIAL_PREFIX + SEED)  # shown first whenever they vary
VISIBLE_COLUMNS = 5  # TensorBoard's HParams table shows this many hyperparameters and metrics without a click
LEAD = "Stability"  # the tag group TensorBoard's Time Series shows first (see the module docstring)
# The sweep's experiment, at the sweep folder's root; a fixed name and fixed bytes, so that re-running a
# sweep rewrites nothing (TensorBoard reads every file whose name contains "tfevents").
SWEEP_EVENTS = "events.out.tfevents.0.stability-sweep"


@dataclass(frozen=True)
class HParamsMetric:
    """An HParams metric: the scalar tag the run logs at its end, and how the table names it."""

    tag: str
    display_name: str
    description: str


# In reading order: the table shows the first VISIBLE_COLUMNS. Every run writes every one of them, because
# TensorBoard's parallel-coordinates view draws only runs that have them all; so each says what a run that
# diverged, collapsed or failed scores, by the rules the verdicts use (stability.analysis.verdicts.run_values:
# a failure counts at chance accuracy and at its initial loss), or by a value no measurement can take.
HPARAMS_METRICS = (
    HParamsMetric("hp/diverged", "diverged",
                  "1 if the run was stopped as diverged (training loss non-finite or above "
                  "divergence.loss_factor x its initial loss), else 0"),
    HParamsMetric("hp/collapsed", "collapsed",
                  "1 if the run trained to the end but stayed near chance (last epoch's "
                  "training loss >= 0.9 x its initial loss, or validation accuracy "
                  "< 1.5 x chance), else 0"),
    HParamsMetric("hp/steps_survived", "steps survived",
                  "optimiser steps trained before the divergence: a diverged run's divergence step; every other "
                  "run's steps taken (0 for a run that failed before its first step)"),
    HParamsMetric("hp/test_acc", "test acc",
                  "accuracy of the final model on the test split; chance (1 / classes) for a run without one "
                  "(diverged, or failed before its test), as the verdicts score failures"),
    HParamsMetric("hp/best_val_acc", "best val acc",
                  "best validation accuracy over epochs (optimistic); chance (1 / classes) where none was "
                  "measured (a run that diverged or failed before its first validation)"),
    HParamsMetric("hp/final_val_acc", "final val acc",
                  "validation accuracy after the last epoch; chance (1 / classes) where none was measured"),
    HParamsMetric("hp/final_train_loss", "final train loss",
                  "training loss of the last step; a diverged run counts at min(that loss, its initial loss), "
                  "as the verdicts score it, and a run without a finite one at its initial loss (ln classes "
                  "when it has none)"),
    HParamsMetric("hp/max_attn_logit", "max attention logit",
                  "largest attention logit seen by the sampled probes and the probe of a diverged run's "
                  "failing step; -1 where none was measured (no probe ran, or the attention has no logits)"),
    HParamsMetric("hp/max_grad_norm", "max grad norm",
                  "largest finite global gradient norm (before clipping); -1 where no gradient norm was finite"),
)
NOT_MEASURED = -1.0  # hp/max_attn_logit and hp/max_grad_norm of a run that never measured them (see above)


# -- values --------------------------------------------------------------------------------------------------
def _display_name(name: str) -> str:
    return name.split("/", 1)[1] if name.startswith((TOGGLE_PREFIX, TRIAL_PREFIX)) else name


def hparam_values(config: Mapping[str, Any]) -> dict[str, bool | int | float | str]:
    """One run's HParams values: ``toggle/<name>`` for each toggle, ``trial/<column>`` for the headline
    hyperparameters (:data:`stability.record.identity.HPARAM_KEYS`).

    Booleans are written as text (``True``/``False``) like the other toggle values; unset values (None)
    are left out, so the table shows them blank instead of turning a number column into text.
    """
    values: dict[str, bool | int | float | str] = {}
    items = [(TOGGLE_PREFIX + k, v) for k, v in toggles_of(config).items()]
    items += [(TRIAL_PREFIX + k, v) for k, v in hparams_of(config).items()]
    for name, value in items:
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            value = str(value)
        values[name] = value
    return values


def _order(names: Iterable[str], differs: set[str]) -> list[str]:
    """TensorBoard's own order for HParams columns: those that differ first, then by name."""
    return sorted(names, key=lambda name: (name not in differs, name))


def _off_baseline(name: str, values: Sequence[Any]) -> int:
    """How many runs a toggle column sets apart from the baseline (0 for other columns)."""
    toggle = TOGGLES.get(name.removeprefix(TOGGLE_PREFIX)) if name.startswith(TOGGLE_PREFIX) else None
    return 0 if toggle is None else sum(v not in (toggle.baseline, str(toggle.baseline)) for v in values)


def _shown(columns: Mapping[str, Sequence[Any]], varied: Iterable[str]) -> set[str]:
    """The columns to mark ``differs``, which TensorBoard shows without a click (module docstring): at most
    VISIBLE_COLUMNS of ``varied``, lr and seed first, then toggles by how many runs they set apart from the
    baseline (ties in TOGGLES order), then the other headline keys in HPARAM_KEYS order."""
    toggle_rank = {TOGGLE_PREFIX + name: i for i, name in enumerate(TOGGLES)}
    key_rank = {TRIAL_PREFIX + name: i for i, name in enumerate(HPARAM_KEYS)}

    def priority(name: str) -> tuple[int, int, int]:
        if name in HEADLINE_HPARAMS:
            return (0, 0, HEADLINE_HPARAMS.index(name))
        if name in toggle_rank:
            return (1, -_off_baseline(name, columns[name]), toggle_rank[name])
        return (2, 0, key_rank.get(name, len(key_rank)))

    return set(sorted(varied, key=priority)[:VISIBLE_COLUMNS])


def _data_type(values: Sequence[Any]) -> int:
    if all(isinstance(v, bool) for v in values):
        return api_pb2.DATA_TYPE_BOOL
    if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
        return api_pb2.DATA_TYPE_FLOAT64
    return api_pb2.DATA_TYPE_STRING


def _hparam_info(name: str, values: Sequence[Any], differs: bool, with_domain: bool) -> api_pb2.HParamInfo:
    kind = _data_type(values)
    info = api_pb2.HParamInfo(name=name, display_name=_display_name(name), type=kind, differs=differs)
    if with_domain and kind == api_pb2.DATA_TYPE_FLOAT64:
        summary_v2.RealInterval(float(min(values)), float(max(values))).update_hparam_info(info)
    elif with_domain and kind == api_pb2.DATA_TYPE_STRING and all(isinstance(v, str) for v in values):
        # A discrete domain becomes the table's filter check boxes; it must hold every value of every run.
        summary_v2.Discrete(sorted(set(values))).update_hparam_info(info)
    return info


def _summary(tag: str, plugin_data: plugin_data_pb2.HParamsPluginData) -> summary_pb2.Summary:
    value = summary_pb2.Summary.Value(tag=tag, metadata=hparams_metadata.create_summary_metadata(plugin_data),
                                      tensor=hparams_metadata.NULL_TENSOR)
    return summary_pb2.Summary(value=[value])


def _experiment(infos: list[api_pb2.HParamInfo]) -> summary_pb2.Summary:
    metrics = [summary_v2.Metric(m.tag, display_name=m.display_name, description=m.description).as_proto()
               for m in HPARAMS_METRICS]
    experiment = api_pb2.Experiment(hparam_infos=infos, metric_infos=metrics)
    return _summary(hparams_metadata.EXPERIMENT_TAG, plugin_data_pb2.HParamsPluginData(experiment=experiment))


def sweep_experiment(runs: Sequence[Mapping[str, Any]]) -> summary_pb2.Summary:
    """The experiment of a sweep whose runs have these HParams values (:func:`hparam_values`).

    Its columns are the keys whose value varies between cells (the varied toggles, lr, seed and any other
    key the grid varies), then lr and seed even when constant; keys every cell shares are left out, since
    the table would show them in the first five columns when fewer than five keys vary. (Every run's
    session still holds all its values, for readers of the event files.) ``differs`` marks the varied
    columns shown without a click: lr and seed first (see :func:`_shown` and the module docstring).
    """
    columns: dict[str, list[Any]] = {}
    for values in runs:
        for name, value in values.items():
            columns.setdefault(name, []).append(value)
    varied = [name for name, values in columns.items() if len(set(values)) > 1]
    listed = set(varied) | (set(HEADLINE_HPARAMS) & set(columns))
    shown = _shown(columns, varied)
    return _experiment([_hparam_info(n, columns[n], n in shown, True) for n in _order(listed, shown)])


def run_experiment(values: Mapping[str, Any]) -> summary_pb2.Summary:
    """The experiment of a run outside a sweep: lr, seed and its non-baseline toggles shown first (at most
    VISIBLE_COLUMNS of them, lr and seed always); no value domains, since other runs in the same
    TensorBoard may hold other values and must not be filtered out."""
    columns = {name: [value] for name, value in values.items()}
    candidates = [n for n in columns if n in HEADLINE_HPARAMS or _off_baseline(n, columns[n])]
    shown = _shown(columns, candidates)
    return _experiment([_hparam_info(n, columns[n], n in shown, False) for n in _order(values, shown)])


def session_start(values: Mapping[str, Any], run_name: str) -> summary_pb2.Summary:
    """The start of one run's session: its values, grouped under its run name."""
    return summary_v2.hparams_pb(dict(values), trial_id=run_name)


def session_end(status: str) -> summary_pb2.Summary:
    """The end of a session: failed runs are TensorBoard failures; completed and diverged runs, results."""
    info = plugin_data_pb2.SessionEndInfo(
        status=api_pb2.STATUS_FAILURE if status == FAILED else api_pb2.STATUS_SUCCESS, end_time_secs=time.time())
    return _summary(hparams_metadata.SESSION_END_INFO_TAG, plugin_data_pb2.HParamsPluginData(session_end_info=info))


def result_metrics(summary: RunSummary, num_classes: int) -> dict[str, float]:
    """The HParams metrics of a finished run, from its record: every metric of :data:`HPARAMS_METRICS`, for every
    run, unknown values scored as the metric says (chance accuracy is ``1 / num_classes``)."""
    chance = 1.0 / num_classes
    initial = summary.initial_loss if summary.initial_loss is not None else math.log(num_classes)
    loss = summary.final_train_loss
    if loss is None:
        loss = initial
    elif summary.status == DIVERGED:
        loss = min(loss, initial)
    values = {
        "hp/diverged": float(summary.status == DIVERGED), "hp/collapsed": float(summary.status == COLLAPSED),
        "hp/steps_survived": summary.diverged_step if summary.diverged_step is not None else summary.steps or 0,
        "hp/test_acc": _or(summary.test_acc, chance), "hp/best_val_acc": _or(summary.best_val_acc, chance),
        "hp/final_val_acc": _or(summary.final_val_acc, chance), "hp/final_train_loss": loss,
        "hp/max_attn_logit": _or(summary.max_attn_logit, NOT_MEASURED),
        "hp/max_grad_norm": _or(summary.max_grad_norm, NOT_MEASURED),
    }
    return {tag: float(value) for tag, value in values.items()}


def _or(value: float | None, default: float) -> float:
    """``value`` where it is a finite number, else ``default``."""
    return default if value is None or not math.isfinite(value) else value


# -- custom scalars ------------------------------------------------------------------------------------------
def _chart(title: str, *patterns: str) -> layout_pb2.Chart:
    return layout_pb2.Chart(title=title, multiline=layout_pb2.MultilineChartContent(tag=list(patterns)))


def layout(blocks: int) -> layout_pb2.Layout:
    """The custom-scalars layout for a ViT with ``blocks`` transformer blocks (tag names are regexes)."""
    return layout_pb2.Layout(category=[
        layout_pb2.Category(title="loss and failures", chart=[
            _chart("training loss (train/loss)", r"^train/loss$"),
            _chart("failure markers: 1 at the step the run diverged or was found collapsed (Stability/diverged, "
                   "Stability/collapsed)", r"^Stability/diverged$", r"^Stability/collapsed$"),
            _chart("validation loss (val/loss)", r"^val/loss$"),
            _chart("validation accuracy (val/acc)", r"^val/acc$"),
        ]),
        layout_pb2.Category(title="max attention logit per layer (attn/max_logit)", chart=[
            _chart(f"layer {i}", rf"^attn/max_logit/layer_{i}$") for i in range(blocks)]),
        layout_pb2.Category(title="gradient norm per block, before clipping (grad_norm)", chart=[
            _chart("all parameters (train/grad_norm)", r"^train/grad_norm$"),
            *[_chart(f"block {i}", rf"^grad_norm/block_{i}$") for i in range(blocks)]]),
    ])


def layout_summary(blocks: int) -> summary_pb2.Summary:
    tensor = tensor_pb2.TensorProto(dtype=types_pb2.DT_STRING, string_val=[layout(blocks).SerializeToString()],
                                    tensor_shape=tensor_shape_pb2.TensorShapeProto())
    value = summary_pb2.Summary.Value(tag=custom_scalar_metadata.CONFIG_SUMMARY_TAG, tensor=tensor,
                                      metadata=custom_scalar_metadata.create_summary_metadata())
    return summary_pb2.Summary(value=[value])


# -- the sweep's file ----------------------------------------------------------------------------------------
def _event_file(summaries: Iterable[summary_pb2.Summary]) -> bytes:
    """An event file's bytes: the version record, then one event per summary (wall time 0: fixed bytes)."""
    buffer = BytesIO()
    writer = RecordWriter(buffer)
    writer.write(event_pb2.Event(wall_time=0.0, file_version="brain.Event:2").SerializeToString())
    for summary in summaries:
        writer.write(event_pb2.Event(wall_time=0.0, step=0, summary=summary).SerializeToString())
    return buffer.getvalue()


def write_sweep_view(sweep_dir: Path, configs: Iterable[Mapping[str, Any]]) -> Path:
    """Write the sweep's HParams experiment to ``<sweep_dir>/SWEEP_EVENTS`` from its cells' resolved configs.

    Rewritten only when its content changes (a changed grid), so re-running a finished sweep changes no file.
    """
    data = _event_file([sweep_experiment([hparam_values(c) for c in configs])])
    path = Path(sweep_dir) / SWEEP_EVENTS
    if path.is_file() and path.read_bytes() == data:
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(path) as file:  # whole or not at all, and readable by whom the umask says (a shared sweep)
        file.write(data)
    return path


def in_sweep(run_dir: Path) -> bool:
    """Whether a run folder belongs to a sweep (whose root holds the shared experiment): its parent has a plan."""
    return (Path(run_dir).parent / PLAN).is_file()


# -- markers ------------------------------------------------------------------------------------------------
def mark(logger: Any, step: int, kind: str, reason: str) -> None:
    """Mark an event (``diverged``, ``collapsed``) in one Lightning logger at the step it was decided:
    scalar ``Stability/<kind>`` = 1.0, and in a TensorBoard logger a text event saying why."""
    from lightning.pytorch.loggers import TensorBoardLogger  # only training processes mark: Lightning is loaded
    from tensorboard.plugins.text.summary_v2 import text_pb

    logger.log_metrics({f"{LEAD}/{kind}": 1.0}, step=step)
    if isinstance(logger, TensorBoardLogger):  # TensorBoard's text summary, under the tag as given
        text = text_pb(f"{LEAD}/events", f"**{kind}** at step {step}: {reason}")
        logger.experiment._get_file_writer().add_summary(text, step)


# -- the run's logger ----------------------------------------------------------------------------------------
def _run_logger_class() -> type:
    from lightning.pytorch.loggers import TensorBoardLogger
    from lightning.pytorch.utilities import rank_zero_only

    class RunLogger(TensorBoardLogger):
        """TensorBoard logger of one run: events in the run folder, the run's HParams session (values at
        the start, real metrics and status at the end) and its custom-scalars layout.

        Lightning logs the module's nested hparams at fit start; this logger writes the flat
        :func:`hparam_values` instead (and, outside a sweep, an experiment: see the module docstring).
        """

        def __init__(self, run_dir: Path, config: Mapping[str, Any], blocks: int = 0) -> None:
            super().__init__(save_dir=str(Path(run_dir).parent), name="", version=Path(run_dir).name,
                             default_hp_metric=False)
            self.run_dir = Path(run_dir)
            self.values = hparam_values(config)
            self.blocks = blocks or int(config.get("model", {}).get("vit", {}).get("depth", 0))
            self._session_started = False

        @rank_zero_only
        def log_hyperparams(self, params: Any, metrics: dict[str, Any] | None = None,
                            step: int | None = None) -> None:
            if self._session_started:  # Lightning calls this again before testing: one session per process
                return
            self._session_started = True
            self.hparams.update(self.values)  # what Lightning saves as hparams.yaml
            summaries = [] if in_sweep(self.run_dir) else [run_experiment(self.values)]
            summaries += [session_start(self.values, self.run_dir.name), layout_summary(self.blocks)]
            writer = self.experiment._get_file_writer()  # as Lightning's own log_hyperparams does
            for summary in summaries:
                writer.add_summary(summary, 0)

        @rank_zero_only
        def log_result(self, summary: RunSummary, step: int, num_classes: int) -> None:
            """The run's HParams metrics (:func:`result_metrics`) and the end of its session; a collapse marker
            at its last optimiser step (``step - 1``: where its curves end) when the run was found collapsed."""
            if summary.status == COLLAPSED:
                mark(self, max(step - 1, 0), COLLAPSED, summary.collapse_reason or "")
            self.log_metrics(result_metrics(summary, num_classes), step)
            self.experiment._get_file_writer().add_summary(session_end(summary.status), step)

    return RunLogger


def __getattr__(name: str) -> Any:
    # RunLogger subclasses Lightning's TensorBoardLogger; building it on first use keeps `import lightning`
    # (seconds) out of the processes that only write the sweep's view.
    if name == "RunLogger":
        cls = _run_logger_class()
        globals()["RunLogger"] = cls
        return cls
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
