"""What Lightning logs while a config is checked is held back, and dropped if the check fails.

Checking a config (:func:`stability.training.cli.parse`) builds the model, the data and a throwaway Trainer,
which log as they go; a bad input must cost one ``error:`` line, not a screenful that buries it.
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Iterator

LIGHTNING_LOGGERS = ("lightning", "lightning.pytorch", "lightning.fabric")


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
