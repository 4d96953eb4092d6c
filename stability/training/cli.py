"""A run's config: parsed by LightningCLI (jsonargparse) and checked before anything is written.

Everything a run would reject is checked before its folder exists (:meth:`StabilityCLI.check`): the
config's values and ranges, the model against the data, the data files themselves, and the Trainer's own
settings (a throwaway Trainer is built). A bad input thus costs one ``error:`` line
(:mod:`stability.training.messages`) and leaves nothing behind; what Lightning logs while that is checked is
held back and dropped if the check fails (:mod:`stability.training.held_output`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Union

import lightning as L
import torch
import yaml
from jsonargparse import Namespace
from lightning.fabric.plugins import CheckpointIO
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI

from stability.errors import ConfigError
from stability.record.config_files import read_yaml
from stability.record.files import LAST_CKPT
from stability.record.identity import drop_later_defaults
from stability.training.held_output import held_output
from stability.training.lipschitz_monitor import LipschitzMonitor
from stability.training.messages import user_errors
from stability.training.module import ViTClassifier
from stability.training.qk_clip import QKClip
from stability.training.run_folder import AtomicCheckpointIO
from stability.training.telemetry import DivergenceDetector, StabilityTelemetry
from stability.training.tensorboard import RunLogger
from stability.training.user_loggers import with_user_loggers

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
        parser.add_argument("--threads", type=int | None, default=None,
                            help="torch intra-op threads (default: torch's). A run's config.yaml records the "
                                 "count it used, so `--config <run>/config.yaml` reproduces its numbers.")
        parser.add_lightning_class_args(DivergenceDetector, "divergence")
        parser.add_lightning_class_args(StabilityTelemetry, "telemetry")
        parser.add_lightning_class_args(LipschitzMonitor, "lipschitz")
        # QK-clip (Kimi K2) as an option of the run, so a grid can vary `qk_clip.tau: [null, 30]`; null is off
        parser.add_lightning_class_args(QKClip, "qk_clip")
        parser.set_defaults({"qk_clip.tau": None})
        parser.set_defaults({"data": {"class_path": "stability.data.DigitsDataModule"}})
        parser.set_defaults({f"trainer.{k}": v for k, v in TRAINER_DEFAULTS.items()})
        _count_before_fraction(parser)

    def parse_arguments(self, parser: LightningArgumentParser, args: Any) -> None:
        # As LightningCLI's, minus its warning about sys.argv: a sweep worker passes dicts on purpose.
        self.config = parser.parse_object(args) if isinstance(args, dict) else parser.parse_args(args)
        _check_parsed(self.config)

    def before_instantiate_classes(self) -> None:
        # Before the model exists: an initialiser with a matrix decomposition (spectral init) may split its
        # work by thread, so even the first weights' last digits depend on the count.
        threads = self.config.get("threads")
        if threads is not None:
            torch.set_num_threads(threads)

    def instantiate_trainer(self, **kwargs: Any) -> None:  # type: ignore[override]
        return None  # deferred to make_trainer()

    def make_trainer(self, run_dir: Path, config: dict[str, Any]) -> L.Trainer:
        """The run's Trainer, logging into ``run_dir``; ``config`` is the resolved config
        (:meth:`config_dump_dict`, dumped once by the run), whose values its HParams session shows."""
        # One rolling checkpoint, overwritten at every epoch end: what a resumed run continues from.
        checkpoint = ModelCheckpoint(dirpath=run_dir / "checkpoints", filename=LAST_CKPT.stem, save_top_k=1,
                                     every_n_epochs=1, enable_version_counter=False)
        configured = self.config_init["trainer"].get("callbacks") or []
        # The run's TensorBoard logger first, then any `--trainer.logger` the user gave (CSV, W&B, MLflow...).
        ours = RunLogger(run_dir, config, blocks=len(self.model.model.blocks))
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
        self.config_init["qk_clip"].check(self.model)  # QK-clip on a model it cannot act on
        configured = self.config_init["trainer"].get("callbacks") or []
        try:
            super().instantiate_trainer(logger=False, callbacks=list(configured), plugins=self._plugins())
        except ConfigError:
            raise
        except Exception as error:  # noqa: BLE001 - whatever the Trainer rejects is a config error
            raise ConfigError(_trainer_error(self.config["trainer"], error)) from None

    def config_dump_dict(self) -> dict[str, Any]:
        """The fully resolved config as plain YAML-able data (what ``config.yaml`` holds), without the options
        added after runs existed while they hold their defaults
        (:data:`stability.record.identity.LATER_DEFAULTS`).

        ``threads`` is left out where it is not set (a sweep's cells: the plan fixes their count), so the
        resolved configs and the plans of sweeps from before the key existed stay as they were; the run
        records the count it used in its ``config.yaml`` (:mod:`stability.training.run`).
        """
        config = yaml.safe_load(self.parser.dump(self.config, skip_none=False))
        if config.get("threads") is None:
            config.pop("threads", None)
        return drop_later_defaults(config)

    @property
    def divergence(self) -> DivergenceDetector:
        return self.config_init["divergence"]

    @property
    def telemetry(self) -> StabilityTelemetry:
        return self.config_init["telemetry"]

    @property
    def lipschitz(self) -> LipschitzMonitor:
        return self.config_init["lipschitz"]

    @property
    def qk_clip(self) -> QKClip:
        return self.config_init["qk_clip"]


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
GROUPS = ("model", "model.vit", "trainer", "divergence", "telemetry", "qk_clip")
MAX_SEED = 2**32 - 1  # numpy's seeds are 32-bit unsigned


def _check_parsed(config: Any) -> None:
    """What jsonargparse accepts but cannot build (or builds wrong): checked before anything is built."""
    for key in GROUPS:
        value = config.get(key)
        if value is not None and not isinstance(value, (Namespace, dict)):
            raise ConfigError(f"{key}: got {value!r}; expected a mapping of its keys ({key}: {{key: value, ...}})")
    threads = config.get("threads")
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
        raise ConfigError(f"threads: got {threads!r}; give an integer >= 1 (torch intra-op threads), or null for "
                          "torch's default")
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
