"""The user's own loggers beside the run's: ``--trainer.logger CSVLogger`` (or W&B, MLflow, ...) adds to the
run's TensorBoard logger instead of replacing it, and a logger that cannot be built is one ``error:`` line.
"""

from __future__ import annotations

import re
from typing import Any


def with_user_loggers(ours: Any, configured: Any) -> Any:
    """Lightning's ``Trainer(logger=...)``: the project's logger first, then those given as ``trainer.logger``.

    ``True`` or unset: ours alone; ``False``: no logger at all, as in Lightning (the run keeps its
    ``summary.json``, but has no curves and no TensorBoard view); a logger or a list: ours and theirs.
    Ours comes first because ``trainer.logger`` (what Lightning and the telemetry use) is the first one.
    """
    if configured is False:
        return False
    if configured is None or configured is True:
        return [ours]
    extra = list(configured) if isinstance(configured, (list, tuple)) else [configured]
    return [ours, *extra]


_CLASS_PATH = re.compile(r"Problem with given class_path '(?P<path>[^']+)'")
_IMPORT_PATH = re.compile(r"Expected a dot import path string: (?P<name>\S+)")
LOGGER_EXAMPLE = "--trainer.logger CSVLogger --trainer.logger.save_dir runs/csv"


def logger_error(error: BaseException) -> str | None:
    """One line for a ``--trainer.logger`` that cannot be built, from jsonargparse's multi-line error chain
    (the logger, what went wrong, an example); None when ``error`` is about something else."""
    chain, seen = [], set()
    cause: BaseException | None = error
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        chain.append(cause)
        cause = cause.__cause__ or cause.__context__
    text = "\n".join(str(e) for e in chain)
    if "lightning.pytorch.loggers.logger.Logger" not in text and "trainer.logger" not in text:
        return None
    deepest = next((line.strip() for line in str(chain[-1]).splitlines() if line.strip()), "")
    path = _CLASS_PATH.search(text)
    if path:
        name = path["path"].rsplit(".", 1)[-1]
        return f"trainer.logger: {name} cannot be built: {deepest} (e.g. {LOGGER_EXAMPLE})"
    unknown = _IMPORT_PATH.search(text)
    if unknown:
        return (f"trainer.logger: got {unknown['name']!r}; give a Lightning logger class (CSVLogger, "
                f"TensorBoardLogger, WandbLogger, MLFlowLogger, ...) or its import path, e.g. {LOGGER_EXAMPLE}")
    return f"trainer.logger: {deepest}; give a logger class first, e.g. {LOGGER_EXAMPLE}"
