"""One training run, start to finish: config -> model + data -> fit -> test -> run record.

The config is LightningCLI's (jsonargparse): typed, validated, composable from several YAML files. The same
entry point serves ``stability fit`` (argv) and the sweep (a nested dict per cell), so a sweep cell is
exactly what ``stability fit --config <run>/config.yaml`` would run.

A run folder holds ``config.yaml`` (written first), TensorBoard events, ``checkpoints/last.ckpt`` and
``summary.json`` (written atomically, last). Re-running on the same folder resumes from ``last.ckpt``.

Everything a run would reject is checked before its folder exists (:meth:`StabilityCLI.check`): the
config's values and ranges, the model against the data, the data files themselves, and the Trainer's own
settings (a throwaway Trainer is built). A bad input thus costs one ``error:`` line and leaves nothing
behind; what Lightning logs while that is checked is held back and dropped if the check fails.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import math
import re
import sys
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Union

import lightning as L
import torch
import yaml
from jsonargparse import ArgumentError, Namespace
from lightning.fabric.plugins import CheckpointIO, TorchCheckpointIO
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI

import stability
from stability.errors import ConfigError, OutOfSpace, RunFailed, full_disk_error
from stability.model import count_flops
from stability.record.config_files import load_config_files, read_yaml
from stability.record.files import (
    COLLAPSED,
    COMPLETED,
    CONFIG,
    DIVERGED,
    FAILED,
    FINISHED,
    LAST_CKPT,
    SUMMARY,
    UNREADABLE_CKPT,
    RunSummary,
    atomic_file,
    read_summary,
    write_atomic,
)
from stability.record.identity import config_hash, hparams_of, run_name, toggles_of
from stability.training.collapse import collapse_reason
from stability.training.lipschitz_monitor import LipschitzMonitor
from stability.training.module import ViTClassifier
from stability.training.telemetry import DivergenceDetector, StabilityTelemetry
from stability.training.tensorboard import RunLogger, mark, result_metrics, with_user_loggers

# Defaults that differ from Lightning's: per-step curves need log_every_n_steps=1; ablation runs need no
# model summary or sanity check; ``deterministic`` makes a seed reproduce its numbers.
TRAINER_DEFAULTS: dict[str, Any] = {
    "max_epochs": 20,
    "log_every_n_steps": 1,
    "num_sanity_val_steps": 0,
    "enable_model_summary": False,
    "deterministic": True,
    "accelerator": "auto",
    "devices": 1,
}
# Trainer arguments where an int counts batches and a float is a fraction: 1 is one batch, 1.0 all of them.
COUNT_OR_FRACTION = ("limit_train_batches", "limit_val_batches", "limit_test_batches", "limit_predict_batches",
                     "overfit_batches")
LIGHTNING_LOGGERS = ("lightning", "lightning.pytorch", "lightning.fabric")


class StabilityCLI(LightningCLI):
    """LightningCLI for ``ViTClassifier`` + any LightningDataModule, plus the telemetry callbacks' options.

    The trainer is built later, by :meth:`make_trainer`, because it needs the run folder.
    """

    def __init__(self, args: list[str] | dict[str, Any] | None) -> None:
        super().__init__(
            ViTClassifier,
            L.LightningDataModule,
            subclass_mode_data=True,
            save_config_callback=None,
            trainer_defaults=TRAINER_DEFAULTS,
            seed_everything_default=0,
            parser_kwargs={"exit_on_error": False, "prog": "stability fit",
                           "description": "Train one ViT configuration and write its run record."},
            args=args,
            run=False,
            auto_configure_optimizers=False,
            load_from_checkpoint_support=False,
        )

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_argument("--run_dir", type=str | None, default=None,
                            help="Run folder (default: runs/fit/<toggles>-<config hash>). Re-running resumes.")
        parser.add_lightning_class_args(DivergenceDetector, "divergence")
        parser.add_lightning_class_args(StabilityTelemetry, "telemetry")
        parser.add_lightning_class_args(LipschitzMonitor, "lipschitz")
        parser.set_defaults({"data": {"class_path": "stability.data.DigitsDataModule"}})
        parser.set_defaults({f"trainer.{k}": v for k, v in TRAINER_DEFAULTS.items()})
        _count_before_fraction(parser)

    def parse_arguments(self, parser: LightningArgumentParser, args: Any) -> None:
        # As LightningCLI's, minus its warning about sys.argv: a sweep worker passes dicts on purpose.
        self.config = parser.parse_object(args) if isinstance(args, dict) else parser.parse_args(args)
        _check_parsed(self.config)

    def instantiate_trainer(self, **kwargs: Any) -> None:  # type: ignore[override]
        return None  # deferred to make_trainer()

    def make_trainer(self, run_dir: Path) -> L.Trainer:
        # One rolling checkpoint, overwritten at every epoch end: what a resumed run continues from.
        checkpoint = ModelCheckpoint(dirpath=run_dir / "checkpoints", filename=LAST_CKPT.stem, save_top_k=1,
                                     every_n_epochs=1, enable_version_counter=False)
        configured = self.config_init["trainer"].get("callbacks") or []
        # The run's TensorBoard logger first, then any `--trainer.logger` the user gave (CSV, W&B, MLflow...).
        ours = RunLogger(run_dir, self.config_dump_dict(), blocks=len(self.model.model.blocks))
        loggers = with_user_loggers(ours, self.config_init["trainer"].get("logger"))
        return super().instantiate_trainer(logger=loggers, callbacks=[*configured, checkpoint],
                                           plugins=self._plugins())

    def _plugins(self) -> list[Any]:
        """The configured plugins plus :class:`AtomicCheckpointIO`, unless the config brings its own I/O."""
        plugins = self.config_init["trainer"].get("plugins") or []
        plugins = list(plugins) if isinstance(plugins, (list, tuple)) else [plugins]
        if not any(isinstance(plugin, CheckpointIO) for plugin in plugins):
            plugins.append(AtomicCheckpointIO())
        return plugins

    def check(self) -> None:
        """Raise ConfigError for anything the run would reject, before anything is written.

        The values' ranges (here and in the model's and data's own ``__init__``), the model against the
        data, and the Trainer's settings: a Trainer is built and dropped (it writes nothing; the run folder
        is created later), so an unavailable accelerator or a bad strategy is an error now, not a failed run.
        """
        _check_trainer_values(self.config["trainer"])
        self.model.check_data(self.datamodule)
        configured = self.config_init["trainer"].get("callbacks") or []
        try:
            super().instantiate_trainer(logger=False, callbacks=list(configured), plugins=self._plugins())
        except ConfigError:
            raise
        except Exception as error:  # noqa: BLE001 - whatever the Trainer rejects is a config error
            raise ConfigError(_trainer_error(self.config["trainer"], error)) from None

    def config_dump_dict(self) -> dict[str, Any]:
        """The fully resolved config as plain YAML-able data (what ``config.yaml`` holds)."""
        return yaml.safe_load(self.parser.dump(self.config, skip_none=False))

    @property
    def divergence(self) -> DivergenceDetector:
        return self.config_init["divergence"]

    @property
    def telemetry(self) -> StabilityTelemetry:
        return self.config_init["telemetry"]

    @property
    def lipschitz(self) -> LipschitzMonitor:
        return self.config_init["lipschitz"]


@contextlib.contextmanager
def user_errors() -> Iterator[None]:
    """Turn jsonargparse's parse errors into a one-line ConfigError (its messages list every union member)."""
    try:
        yield
    except (ArgumentError, ValueError) as error:
        # jsonargparse wraps a ConfigError raised by a class's __init__ (e.g. a missing data folder) in a
        # multi-line error; the ConfigError itself, somewhere down the chain, is the message the user needs.
        cause: BaseException | None = error
        while cause is not None:
            if isinstance(cause, ConfigError):
                raise ConfigError(str(cause)) from None
            cause = cause.__cause__ or cause.__context__
        if not isinstance(error, ArgumentError):
            raise
        raise ConfigError(_one_line(str(error))) from None
    except (MemoryError, RuntimeError) as error:
        # building the model allocates its weights: a model larger than the machine fails here
        if not isinstance(error, MemoryError) and "can't allocate memory" not in str(error):
            raise
        wanted = re.search(r"allocate (\d+) bytes", str(error))
        size = f" (one tensor of {int(wanted.group(1)) / 2**30:,.0f} GiB)" if wanted else ""
        raise ConfigError(f"model.vit: the model does not fit in this machine's memory{size}; make it smaller "
                          "(embed_dim, depth, mlp_ratio)") from None


_LITERAL_ERROR = re.compile(r'Parser key "(?P<key>[^"]+)":\s*Expected a typing\.Literal\[(?P<valid>[^\]]*)\]\. '
                            r"Got value: (?P<value>.*)")
_KEY = re.compile(r'Parser key "([^"]+)"')
_GIVEN = re.compile(r"(?:Given value|Got value): (.*)")
_NESTED_VALUE = re.compile(r"NestedArg\(key='[^']*', val=(.*)\)$")
_CLASS_PATH = re.compile(r"Problem with given class_path '([^']+)'")
_TYPE = re.compile(r"<class '([^']+)'>|typing\.Literal\[([^\]]*)\]|\b(list|dict|tuple)\[")
_TYPE_WORDS = {"float": "a number", "int": "an integer", "bool": "true or false", "NoneType": "null",
               "str": "a string", "datetime.timedelta": "a duration", "list": "a list", "dict": "a mapping",
               "tuple": "a list"}


def _one_line(message: str) -> str:
    """jsonargparse's message as one line: 'key: got VALUE; expected WHAT' where it can tell.

    Its union errors ('Does not validate against any of the Union subtypes') list every member's failure over
    a dozen lines; the key, the value given and the accepted types are all the user needs.
    """
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    flat = " ".join(lines)
    match = _LITERAL_ERROR.search(flat)
    if match:
        valid = ", ".join(v.strip().strip("'\"") for v in match["valid"].split(","))
        return f"{match['key']}: got {match['value']!r}; valid values: {valid}"
    if flat.startswith("unrecognized arguments:"):
        return f"{flat}; `stability fit --help` lists the options"
    keys = _KEY.findall(flat)
    key = ".".join(dict.fromkeys(keys)) if keys else "config"
    given = next((m.group(1).strip() for line in reversed(lines) if (m := _GIVEN.search(line))), None)
    if given is not None and (nested := _NESTED_VALUE.match(given)):
        given = nested.group(1).strip("'\"")
    class_path = _CLASS_PATH.search(flat)
    if class_path:  # an init argument of the class: the inner error is the one to report
        inner = flat[class_path.end():].split(" - Expected a <class 'NoneType'>")[0]
        got = re.search(r'Parser key "([^"]+)": Expected a (.+?)\. Got value: (.*)$', inner.strip())
        if got:
            types = [m for m in _TYPE.finditer(got.group(2)) if m.group(0)]
            if types:
                return f"{keys[0]}.{got.group(1)}: got {got.group(3)!r}; expected {_describe_types(types)}"
    if "No module named" in flat or "does not correspond to a subclass" in flat:
        path = class_path.group(1) if class_path else given
        imported = re.search(r"Import path (\S+) does not correspond to a subclass of (\w+)", flat)
        if imported:
            return f"{key}.class_path: {imported.group(1)!r} is not a {imported.group(2)} subclass"
        missing = re.search(r"No module named '([^']+)'", flat)
        return f"{key}.class_path: {path!r} cannot be imported (no module named {missing.group(1)!r})"
    unknown = re.search(r"Option '([^']+)' is not accepted", flat)
    if unknown and class_path:
        options = _init_options(class_path.group(1))
        return (f"{key}.{unknown.group(1)}: not an option of {class_path.group(1)}"
                + (f"; its options: {', '.join(options)}" if options else ""))
    unloadable = re.search(r"Unable to load config '([^']*)'", flat)
    if unloadable:
        return f"{key}: got {unloadable.group(1)!r}; expected a mapping of its keys or a YAML file"
    expected = [m for m in _TYPE.finditer(flat.split("Errors:")[0]) if m.group(0)]
    if expected and given is not None:
        return f"{key}: got {given!r}; expected {_describe_types(expected)}"
    return " ".join(lines[:3])


def _describe_types(found: list[re.Match]) -> str:
    words: list[str] = []
    literals: list[str] = []
    for match in found:
        name, literal, generic = match.groups()
        if literal is not None:
            literals += [v.strip().strip("'\"") for v in literal.split(",")]
        elif generic is not None:
            words.append(_TYPE_WORDS[generic])
        else:
            words.append(_TYPE_WORDS.get(name, f"a {name.rsplit('.', 1)[-1]} (class_path and init_args)"))
    if literals:
        words.insert(0, "one of " + ", ".join(dict.fromkeys(literals)))
    return " or ".join(dict.fromkeys(words))


def _init_options(class_path: str) -> list[str]:
    """The keyword arguments of ``class_path``'s ``__init__`` (for 'not an option' errors); [] if unknown."""
    module, _, name = class_path.rpartition(".")
    try:
        cls = getattr(sys.modules.get(module) or __import__(module, fromlist=[name]), name)
        params = inspect.signature(cls.__init__).parameters
    except (ImportError, AttributeError, TypeError, ValueError):
        return []
    return [p for p in params if p != "self" and params[p].kind not in (params[p].VAR_POSITIONAL,
                                                                            params[p].VAR_KEYWORD)]


def _count_before_fraction(parser: LightningArgumentParser) -> None:
    """Make ``limit_val_batches: 1`` mean one batch, as in Lightning, not 1.0 (all batches).

    Lightning annotates these ``Optional[Union[int, float]]``, but ``typing`` caches unions by equality, and
    ``Union[int, float]`` equals ``Union[float, int]``: once any imported library has written the latter,
    the Trainer's annotation *is* float-first and jsonargparse turns the integer 1 into 1.0 (100% of the
    batches). A fresh union with int first restores what the user wrote.
    """
    for action in parser._actions:
        if action.dest in {f"trainer.{key}" for key in COUNT_OR_FRACTION} and hasattr(action, "_typehint"):
            action._typehint = Union[int, float, None]  # noqa: UP007 - typing.Union builds the fresh object


# Groups of keys: jsonargparse lets a config replace one by a scalar or a list ("model: 5"), and then either
# fails with a TypeError deep in instantiation or silently builds the defaults.
GROUPS = ("model", "model.vit", "trainer", "divergence", "telemetry")
MAX_SEED = 2**32 - 1  # numpy's seeds are 32-bit unsigned


def _check_parsed(config: Any) -> None:
    """What jsonargparse accepts but cannot build (or builds wrong): checked before anything is built."""
    for key in GROUPS:
        value = config.get(key)
        if value is not None and not isinstance(value, (Namespace, dict)):
            raise ConfigError(f"{key}: got {value!r}; expected a mapping of its keys ({key}: {{key: value, ...}})")
    seed = config.get("seed_everything")
    if isinstance(seed, int) and not isinstance(seed, bool) and not 0 <= seed <= MAX_SEED:
        raise ConfigError(f"seed_everything: got {seed}; give an integer from 0 to {MAX_SEED} (or true for a "
                          "random seed)")


def _check_trainer_values(trainer: Any) -> None:
    """Ranges the Trainer checks only once fit starts (after the run folder exists)."""
    max_epochs, max_steps = trainer.get("max_epochs"), trainer.get("max_steps", -1)
    if max_epochs is not None and max_epochs < 1 and not (max_epochs == -1 and max_steps and max_steps > 0):
        raise ConfigError(f"trainer.max_epochs: got {max_epochs}; give an integer >= 1 (or -1, unlimited, with "
                          "trainer.max_steps >= 1)")
    if max_steps is not None and max_steps != -1 and max_steps < 1:
        raise ConfigError(f"trainer.max_steps: got {max_steps}; give an integer >= 1, or -1 for no step limit")
    min_epochs = trainer.get("min_epochs")
    if min_epochs is not None and (min_epochs < 0 or (max_epochs and max_epochs > 0 and min_epochs > max_epochs)):
        raise ConfigError(f"trainer.min_epochs: got {min_epochs}; give an integer between 0 and trainer.max_epochs "
                          f"({max_epochs})")


def _trainer_error(trainer: Any, error: Exception) -> str:
    """One line for an exception the Trainer raised while being built from the config."""
    text = " ".join(str(error).split()) or type(error).__name__
    accelerator = trainer.get("accelerator")
    if isinstance(accelerator, str):
        available = _available_accelerators()
        if accelerator not in ("auto", *available) and available:
            return (f"trainer.accelerator: {accelerator!r} is not usable on this machine ({text[:200]}); "
                    f"usable here: auto, {', '.join(available)}")
    return f"trainer: these settings are rejected by Lightning's Trainer: {text[:300]}"


def _available_accelerators() -> list[str]:
    from lightning.pytorch.accelerators import AcceleratorRegistry

    usable = []
    for name in AcceleratorRegistry.available_accelerators():
        try:
            if AcceleratorRegistry[name]["accelerator"].is_available():
                usable.append(name)
        except Exception:  # noqa: BLE001,S112 - a backend that cannot even be probed is not usable
            continue
    return usable


@contextlib.contextmanager
def held_output() -> Iterator[None]:
    """Hold back what Lightning logs and warns while a config is checked; drop it if the check fails.

    Parsing seeds the RNGs ("Seed set to 0") and building a Trainer reports the hardware; printed before
    an ``error:`` line, they bury it. On success the warnings are shown (each once per process: a sweep
    checks many cells) and the info lines dropped (the run's own Trainer prints them again when it starts).
    """
    held: list[tuple[logging.Logger, list[logging.Handler], bool, _Holder]] = []
    for name in LIGHTNING_LOGGERS:
        logger = logging.getLogger(name)
        holder = _Holder()
        held.append((logger, logger.handlers, logger.propagate, holder))
        logger.handlers, logger.propagate = [holder], False
    ok = False
    try:
        with warnings.catch_warnings(record=True) as caught:
            yield
        ok = True
    finally:
        for logger, handlers, propagate, _ in held:
            logger.handlers, logger.propagate = handlers, propagate
    if ok:
        for logger, _, _, holder in held:
            for record in holder.records:
                if record.levelno >= logging.WARNING:
                    logger.handle(record)  # through the logger's own handlers again
        for warning in caught:
            key = (warning.category, str(warning.message), warning.filename, warning.lineno)
            if key not in _SHOWN_WARNINGS:
                _SHOWN_WARNINGS.add(key)
                warnings.showwarning(warning.message, warning.category, warning.filename, warning.lineno)


_SHOWN_WARNINGS: set[tuple] = set()


class _Holder(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def parse(args: list[str] | dict[str, Any] | None) -> StabilityCLI:
    """Parse and validate a config; build model and data (cheap) and check everything the run would reject
    (:meth:`StabilityCLI.check`). Writes nothing."""
    with held_output(), user_errors():
        if isinstance(args, list):
            _check_config_files(args)
        cli = StabilityCLI(args)
        cli.check()
        return cli


def _check_config_files(argv: list[str]) -> None:
    """Read every ``--config FILE`` with the strict reader first (jsonargparse's would accept a key given
    twice, name a YAML error's file "<unicode string>" and fail on a binary file with a traceback)."""
    for i, arg in enumerate(argv):
        if arg == "--config" and i + 1 < len(argv):
            value = argv[i + 1]
        elif arg.startswith("--config="):
            value = arg.split("=", 1)[1]
        else:
            continue
        if "\n" in value or value.lstrip().startswith("{"):
            continue  # an inline YAML mapping, which jsonargparse also accepts
        path = Path(value)
        if not path.exists():
            raise ConfigError(f"--config {value}: no such file")
        data = read_yaml(path)
        if data is not None and not isinstance(data, dict):
            raise ConfigError(f"--config {value}: expected a mapping of config keys at the top level, "
                              f"got {type(data).__name__}")


def validate(config: dict[str, Any]) -> None:
    """Raise ConfigError if ``config`` would not run (unknown keys or values, impossible dimensions)."""
    parse(config)


# -- the run record ----------------------------------------------------------------------------------------
def _versions() -> dict[str, str]:
    import lightning
    import timm

    return {"stability": stability.__version__, "torch": torch.__version__, "lightning": lightning.__version__,
            "timm": timm.__version__, "python": sys.version.split()[0]}


def _finite_or_none(value: Any) -> float | None:
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def _check_run_folder(run_dir: Path, config: dict[str, Any]) -> None:
    """Raise ConfigError unless ``run_dir`` is new or holds ``config`` (where the folder lives, ``run_dir``,
    does not count, so a moved sweep folder still resumes) and nothing stands where its checkpoint goes."""
    if run_dir.exists() and not run_dir.is_dir():
        raise ConfigError(f"run_dir: {run_dir} is a file; give a folder (it is created if missing)")
    for path, kind in ((run_dir / LAST_CKPT.parent, "folder"), (run_dir / LAST_CKPT, "file")):
        if path.exists() and not (path.is_dir() if kind == "folder" else path.is_file()):
            raise ConfigError(f"run_dir: {path} is in the way of the run's checkpoint (it must be a {kind}); "
                              "move it away")
    path = run_dir / CONFIG
    if not path.exists():
        return
    advice = "choose another --run_dir (or delete that folder to start over)"
    try:
        stored = read_yaml(path)
    except ConfigError as error:
        raise ConfigError(f"run_dir: {run_dir} holds a config.yaml this program did not write ({error}); "
                          f"{advice}") from None
    if not isinstance(stored, dict):
        raise ConfigError(f"run_dir: {path} holds a {type(stored).__name__}, not a run's config; {advice}")
    if config_hash(stored) != config_hash(config):
        raise ConfigError(f"run_dir: {run_dir} holds a run with a different config.yaml; {advice}")


def _prepare_run_dir(run_dir: Path, config_text: str) -> None:
    """Create the run folder and write ``config.yaml``; on failure remove the folders this call created."""
    created = [folder for folder in (run_dir, *run_dir.parents) if not folder.exists()]
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        if not (run_dir / CONFIG).is_file():
            write_atomic(run_dir / CONFIG, config_text)
    except OSError as error:
        for folder in created:  # deepest first; only the empty ones we made
            with contextlib.suppress(OSError):
                folder.rmdir()
        if full_disk_error(error):
            raise OutOfSpace(run_dir, "creating the run folder") from None
        raise ConfigError(f"run_dir: cannot write to {run_dir} ({error.strerror}); choose a writable folder") from None


def _checkpoint_to_resume(run_dir: Path) -> Path | None:
    """``last.ckpt`` if it can be read; an unreadable one (a copy cut short by hand, a disk error) is moved
    aside, not deleted, and the run starts again from step 0."""
    path = run_dir / LAST_CKPT
    if not path.is_file():
        return None
    try:
        torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - whatever makes it unreadable, it cannot be resumed from
        n = 1
        while (run_dir / UNREADABLE_CKPT.format(n=n)).exists():
            n += 1
        aside = run_dir / UNREADABLE_CKPT.format(n=n)
        path.rename(aside)
        reason = " ".join(str(error).split())[:120] or "empty or cut short"
        print(f"note: {path} cannot be read ({type(error).__name__}: {reason}); moved to {aside.name}, "
              "and the run starts again from step 0", file=sys.stderr, flush=True)
        return None
    return path


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint I/O, writing each checkpoint atomically in its own folder.

    Lightning writes ``last.ckpt`` through fsspec, whose local "transaction" writes a temporary file in the
    system's temp folder and *copies* it over when that is another file system: a full disk or a kill
    during the copy leaves a cut-off ``last.ckpt`` that no resume can read. Here the bytes go to a
    temporary file beside the target, are fsync'ed and renamed over it (:func:`stability.record.files.atomic_file`):
    ``last.ckpt`` is always the previous complete checkpoint or the new one.
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} takes no storage_options")
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        with atomic_file(target) as file:
            torch.save(checkpoint, file)


class _Tracker(L.Callback):
    """Best and last validation metrics and per-epoch histories, kept in the checkpoint so a resumed run knows
    its history (the histories feed the collapse rule and the claims' convergence check)."""

    def __init__(self) -> None:
        self.best_val_acc: float | None = None
        self.best_val_loss: float | None = None
        self.final_val_acc: float | None = None
        self.final_val_loss: float | None = None
        self.final_train_loss: float | None = None
        self.max_log_z: float | None = None
        self.train_loss_history: list[float] = []
        self.val_acc_history: list[float] = []
        self._epoch_loss, self._epoch_steps = 0.0, 0

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._epoch_loss, self._epoch_steps = 0.0, 0

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        self.final_train_loss = float(loss.detach())
        self._epoch_loss += self.final_train_loss
        self._epoch_steps += 1
        log_z = _finite_or_none(trainer.callback_metrics.get("train/log_z"))
        if log_z is not None and (self.max_log_z is None or log_z > self.max_log_z):
            self.max_log_z = log_z

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._epoch_steps:
            self.train_loss_history.append(self._epoch_loss / self._epoch_steps)

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        acc = _finite_or_none(trainer.callback_metrics.get("val/acc"))
        loss = _finite_or_none(trainer.callback_metrics.get("val/loss"))
        self.final_val_acc, self.final_val_loss = acc, loss
        if acc is not None:
            self.val_acc_history.append(acc)
        if acc is not None and (self.best_val_acc is None or acc > self.best_val_acc):
            self.best_val_acc = acc
        if loss is not None and (self.best_val_loss is None or loss < self.best_val_loss):
            self.best_val_loss = loss

    KEYS = ("best_val_acc", "best_val_loss", "final_val_acc", "final_val_loss", "final_train_loss", "max_log_z",
            "train_loss_history", "val_acc_history")

    def state_dict(self) -> dict[str, Any]:
        return {key: getattr(self, key) for key in self.KEYS}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        for key in self.KEYS:
            default = [] if key.endswith("_history") else None
            setattr(self, key, state_dict.get(key, default))


def resolve_run_dir(config: dict[str, Any], run_dir: str | Path | None = None) -> Path:
    """The explicit folder, else ``run_dir`` from the config, else ``runs/fit/<run name>``."""
    return Path(run_dir or config.get("run_dir") or Path("runs") / "fit" / run_name(config))


def run_cli(cli: StabilityCLI, run_dir: str | Path | None = None,
            extra_callbacks: list[L.Callback] | tuple[L.Callback, ...] = ()) -> RunSummary:
    """Fit and test a parsed config into its run folder; return the summary (see module docstring).

    ``extra_callbacks`` are added to the trainer (for programmatic use: profiling, fault injection).

    Raises:
        ConfigError: the folder holds another run, or cannot be written (nothing was written).
        OutOfSpace: the disk filled up; no record is written, so the run stays resumable.
        RunFailed: the run raised; its record says ``failed``.
    """
    config = cli.config_dump_dict()
    run_dir = resolve_run_dir(config, run_dir)
    config["run_dir"] = str(run_dir)
    config_text = yaml.safe_dump(config, sort_keys=False)
    _check_run_folder(run_dir, config)
    summary = read_summary(run_dir)
    if summary is not None and summary.status in FINISHED:
        return summary  # finished runs are results; re-running them changes nothing
    _prepare_run_dir(run_dir, config_text)
    with _out_of_space(run_dir, "starting the run"):
        if summary is not None:  # a failed run being retried: its old record goes, the new one replaces it
            (run_dir / SUMMARY).unlink()
        ckpt_path = _checkpoint_to_resume(run_dir)

    trainer = cli.make_trainer(run_dir)
    tracker = _Tracker()
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
    summary = RunSummary(
        status=status,
        run_name=run_dir.name,
        run_id=config_hash(config),
        toggles=toggles_of(config),
        hparams=hparams_of(config),
        diverged_step=divergence.diverged_step,
        divergence_reason=divergence.reason,
        collapse_reason=collapse,
        error=error,
        steps=trainer.global_step,
        epochs=trainer.current_epoch,
        wall_time_s=round(time.perf_counter() - started, 3),
        train_time_s=round(telemetry.train_time_s, 3),
        images_per_s=round(telemetry.train_images / telemetry.train_time_s, 1) if telemetry.train_time_s else None,
        params=sum(p.numel() for p in model.parameters()),
        flops_per_image=count_flops(model.model),
        initial_loss=divergence.initial_loss,
        final_train_loss=_finite_or_none(tracker.final_train_loss),
        final_val_acc=tracker.final_val_acc,
        best_val_acc=tracker.best_val_acc,
        final_val_loss=tracker.final_val_loss,
        best_val_loss=tracker.best_val_loss,
        test_acc=_finite_or_none(test_metrics.get("test/acc")),
        test_loss=_finite_or_none(test_metrics.get("test/loss")),
        max_grad_norm=telemetry.max_grad_norm,
        max_attn_logit=telemetry.max_attn_logit,
        max_log_z=tracker.max_log_z,
        train_loss_history=[round(v, 6) for v in tracker.train_loss_history],
        val_acc_history=[round(v, 6) for v in tracker.val_acc_history],
        threads=torch.get_num_threads(),
        **cli.lipschitz.summary_fields(),
        versions=_versions(),
    )
    if trainer.is_global_zero:
        with _out_of_space(run_dir, "writing the run's record"):
            _log_final_hparams(trainer, summary)
            summary.write(run_dir)
    if status == FAILED:
        raise RunFailed(f"{run_dir.name}: {error}") from failure
    return summary


@contextlib.contextmanager
def _out_of_space(run_dir: Path, during: str) -> Iterator[None]:
    """Turn a full-disk OSError (also one wrapped by Lightning or TensorBoard) into :class:`OutOfSpace`."""
    try:
        yield
    except Exception as exc:
        full = full_disk_error(exc)
        if full is None:
            raise
        raise OutOfSpace(full.filename or run_dir, during) from None


def _log_final_hparams(trainer: L.Trainer, summary: RunSummary) -> None:
    """The run's result in its loggers: HParams metrics and session end in TensorBoard, the metrics in the others."""
    for logger in trainer.loggers:
        if isinstance(logger, RunLogger):
            logger.log_result(summary, trainer.global_step)
        else:
            logger.log_metrics(result_metrics(summary), step=trainer.global_step)
            if summary.status == COLLAPSED:  # the run's own logger marks it in log_result
                mark(logger, max(trainer.global_step - 1, 0), "collapsed", summary.collapse_reason or "")
        logger.finalize("failed" if summary.status == FAILED else "success")


def run(config: dict[str, Any], run_dir: str | Path, threads: int | None = None) -> RunSummary:
    """Run one sweep cell in-process (see :func:`run_cli`).

    Args:
        threads: torch intra-op threads for the run (None: leave the process's setting). The last digits of
            the numbers depend on it, so a sweep fixes it in its plan; the summary records it either way.
    """
    cli = parse(config)
    if threads is not None:
        torch.set_num_threads(threads)
    return run_cli(cli, run_dir)


def fit_main(argv: list[str]) -> int:
    """``stability fit``: exit 0 for completed, diverged or collapsed runs (results), 1 for a failed run, 2 for
    bad input, 3 when the disk filled up (the run resumes when the same command runs again)."""
    cli = parse(argv)
    run_dir = resolve_run_dir(cli.config_dump_dict())
    summary = run_cli(cli, run_dir)
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


__all__ = ["RunFailed", "StabilityCLI", "run", "run_cli", "validate", "load_config_files", "fit_main",
           "read_summary", "resolve_run_dir"]
