"""Reading what a sweep folder holds without trusting it: record files are read only when they are regular
files inside the folder and of a bounded size, parsed as JSON, and ``summary.json`` is checked field by field.

A sweep folder is shared, copied, edited by hand and sometimes damaged, and both the report and the sweep's
resume logic read it. Left alone, a ``summary.json`` linked to ``/dev/zero`` is read until memory runs out, a
FIFO blocks the reader forever, a string where a number belongs surfaces as a pandas traceback far from its
cause, and NaN or 1e308 sits silently in a table. Here each of those is one :class:`RecordError` naming the
file, the field and what it held: the results loader lists it as a gap of the report, the sweep counts the
run as not finished and runs it again (:func:`stability.record.files.read_summary`).

What a real run writes is always accepted (:mod:`stability.training.summary`): in particular a diverged run's
``train_loss_history`` may hold NaN or an infinity for the epoch the loss blew up in (Python's ``json`` writes
them as ``NaN``/``Infinity``). :func:`implausible` names values that are valid but absurd (lr 1e300), for
the report only: the run did finish, and re-running it would write the same record again.
"""

from __future__ import annotations

import errno
import json
import math
import os
import stat
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any


class RecordError(ValueError):
    """A record file exists but does not hold a valid record (the message says which file and why)."""


# A real summary.json is a few KB (histories and the failure window included): 16 MiB is far beyond any, and
# still cheap to read and parse.
MAX_RECORD_BYTES = 16 << 20
# plan.json lists every cell with its resolved config (~3.5 KB each): 256 MiB holds some 70,000 cells, more than
# any grid ``stability sweep --max-cells`` lets through unless raised on purpose.
MAX_PLAN_BYTES = 256 << 20
MAX_DEPTH = 32  # nesting of a JSON value (a failure record is 4 deep); json.loads itself recurses per level
MAX_PLAUSIBLE_LR = 1e3  # no optimiser step with a larger learning rate is an experiment anyone means to run

_KINDS = ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISCHR, "a character device"),
          (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"), (stat.S_ISLNK, "a symbolic link"))


def kind_of(mode: int) -> str:
    """What a file of this ``st_mode`` is, in words ("a FIFO (named pipe)")."""
    return next((name for test, name in _KINDS if test(mode)), "not a regular file")


def _inside(path: str, roots: Iterable[Path]) -> bool:
    for root in roots:
        top = os.path.realpath(root)
        if path == top or path.startswith(top.rstrip(os.sep) + os.sep):
            return True
    return False


def regular_file(path: Path, roots: Iterable[Path] = ()) -> Path | None:
    """The real path of the regular file at ``path``; None when nothing is there.

    A symbolic link is followed only to a regular file inside ``path``'s own folder or one of ``roots`` (the
    sweep folder); a link elsewhere, a dangling link, a link loop, a folder, a FIFO, a device or a socket is a
    :class:`RecordError` naming the file and what it is. Nothing is opened here, so nothing can block.
    """
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return None
    except OSError as error:
        raise RecordError(f"{path}: cannot be read ({error.strerror})") from None
    real = str(path)
    if stat.S_ISLNK(info.st_mode):
        try:
            real = os.path.realpath(path, strict=True)
            info = os.stat(real)
        except OSError as error:
            what = ("a symbolic link loop" if error.errno == errno.ELOOP else "a symbolic link to nothing"
                    if isinstance(error, FileNotFoundError) else f"a link that cannot be followed ({error.strerror})")
            raise RecordError(f"{path}: {what}; refused (expected a regular file)") from None
        if not _inside(real, [path.parent, *roots]):
            raise RecordError(f"{path}: a symbolic link to {real}, outside the folder it belongs to; refused "
                              "(expected a regular file)")
    if not stat.S_ISREG(info.st_mode):
        raise RecordError(f"{path}: {kind_of(info.st_mode)}, not a regular file; refused")
    return Path(real)


def read_bounded(path: Path, roots: Iterable[Path] = (), limit: int = MAX_RECORD_BYTES) -> bytes | None:
    """The bytes of a record file (see :func:`regular_file`); None when there is none; at most ``limit`` bytes,
    else a :class:`RecordError` naming the file and its size.

    The file is opened without following a link and without blocking, and checked again once open, so a file
    swapped for a FIFO or a link after the check is refused too.
    """
    real = regular_file(path, roots)
    if real is None:
        return None
    try:
        fd = os.open(real, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        return None  # removed meanwhile (a re-run replacing its record): as if not written yet
    except OSError as error:
        raise RecordError(f"{path}: cannot be read ({error.strerror})") from None
    with os.fdopen(fd, "rb") as file:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise RecordError(f"{path}: {kind_of(info.st_mode)}, not a regular file; refused")
        if info.st_size > limit:
            raise RecordError(f"{path}: {info.st_size:,} bytes, more than the {limit:,} a record can be; refused")
        try:
            data = file.read(limit + 1)
        except OSError as error:
            raise RecordError(f"{path}: cannot be read ({error.strerror})") from None
    if len(data) > limit:
        raise RecordError(f"{path}: more than the {limit:,} bytes a record can be; refused")
    return data


def parse_json(data: bytes, path: Path | str) -> Any:
    """``data`` as JSON; NaN and infinities become floats for the field checks to judge (only where a run
    writes them are they valid); invalid or absurdly nested JSON is a :class:`RecordError`."""
    try:
        return json.loads(data, parse_constant=float)
    except RecursionError:
        raise RecordError(f"{path}: JSON nested too deeply to be a record") from None
    except ValueError as error:  # not UTF-8 text, not JSON
        raise RecordError(f"{path}: not valid JSON ({' '.join(str(error).split())[:100]})") from None


def read_json(path: Path, roots: Iterable[Path] = (), limit: int = MAX_RECORD_BYTES) -> Any:
    """:func:`read_bounded` then :func:`parse_json`; raises FileNotFoundError when there is no file."""
    data = read_bounded(path, roots, limit)
    if data is None:
        raise FileNotFoundError(errno.ENOENT, "no such file", str(path))
    return parse_json(data, path)


def regular_entries(folder: Path, pattern: Callable[[str], bool], roots: Iterable[Path] = ()) -> list[Path]:
    """The regular files directly in ``folder`` whose names ``pattern`` accepts, sorted; links, FIFOs and the
    rest (:func:`regular_file`) are left out, and an unreadable folder has none."""
    found = []
    for name in sorted(entry_names(folder)):
        if pattern(name):
            try:
                if regular_file(folder / name, roots) is not None:
                    found.append(folder / name)
            except RecordError:
                continue
    return found


def entry_names(folder: Path) -> Iterator[str]:
    """The names in ``folder``; none when it cannot be listed (missing, not a folder, no permission)."""
    try:
        with os.scandir(folder) as entries:
            names = [entry.name for entry in entries]
    except OSError:
        return iter(())
    return iter(names)


# -- summary.json, field by field -----------------------------------------------------------------------------
# A check takes a value and returns None when it is valid, else (where inside the value, what it holds there,
# what is expected). None is valid for every field: it means "not known" (see RunSummary).
Problem = tuple[str, Any, str]
Check = Callable[[Any], Problem | None]
MAX_COUNT = 2**63 - 1  # what a table's int64 column holds


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _finite(value: Any) -> bool:
    """A number that is finite as a float (JSON integers have no bound: 10**400 is none)."""
    try:
        return _number(value) and math.isfinite(value)
    except OverflowError:
        return False


def number(low: float = -math.inf, high: float = math.inf, what: str = "a finite number") -> Check:
    """A finite int or float (not a bool) in [low, high]."""
    def check(value: Any) -> Problem | None:
        if value is None or (_finite(value) and low <= value <= high):
            return None
        return "", value, what
    return check


def count(value: Any) -> Problem | None:
    """A whole number >= 0 (an integral float too: a count some library returned as float)."""
    if value is None or (_finite(value) and 0 <= value <= MAX_COUNT and float(value).is_integer()):
        return None
    return "", value, "a whole number >= 0 (below 2**63)"


def text(value: Any) -> Problem | None:
    return None if value is None or isinstance(value, str) else ("", value, "text")


def list_of(item: Check, allow_null: bool = False) -> Check:
    def check(value: Any) -> Problem | None:
        if value is None:
            return None
        if not isinstance(value, list):
            return "", value, "a list"
        for i, v in enumerate(value):
            problem = item(v) if v is not None else None if allow_null else ("", v, "a value, not null")
            if problem:
                return f"[{i}]{problem[0]}", problem[1], problem[2]
        return None
    return check


def object_of(item: Check, key: Callable[[str], bool] = lambda k: True, key_what: str = "") -> Check:
    def check(value: Any) -> Problem | None:
        if value is None:
            return None
        if not isinstance(value, dict):
            return "", value, "an object or null"
        for k, v in value.items():
            if not key(k):
                return f"[{k!r}]", k, key_what
            problem = item(v)
            if problem:
                return f".{k}{problem[0]}", problem[1], problem[2]
        return None
    return check


def any_json(value: Any, depth: int = 0) -> Problem | None:
    """Any JSON value whose numbers are finite, nested at most MAX_DEPTH deep (unknown keys, failure records)."""
    if depth > MAX_DEPTH:
        return "", "...", f"at most {MAX_DEPTH} levels of nesting"
    if _number(value) and not _finite(value):
        return "", value, "a finite number (or null)"
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for k, v in items:
        problem = any_json(v, depth + 1)
        if problem:
            return (f".{k}" if isinstance(k, str) else f"[{k}]") + problem[0], problem[1], problem[2]
    return None


def scalar(value: Any) -> Problem | None:
    """One table cell: text, a bool, a finite number or null."""
    if value is None or isinstance(value, (str, bool)) or _finite(value):
        return None
    return "", value, "text, true/false, a finite number or null"


def _radius(key: str) -> bool:
    try:
        return math.isfinite(float(key)) and float(key) >= 0
    except ValueError:
        return False


def any_number(value: Any) -> Problem | None:
    """An int or float, NaN and infinities included (a diverged epoch's mean loss)."""
    return None if _number(value) else ("", value, "a number")


FRACTION = number(0.0, 1.0, "a number in [0, 1]")
FINITE = number()
NON_NEGATIVE = number(0.0, what="a finite number >= 0")
LOSS_HISTORY = list_of(any_number, allow_null=True)
SCALARS = object_of(scalar)

# Every field RunSummary declares -> its check (the field's comment there says what it means).
SUMMARY_CHECKS: dict[str, Check] = {
    "run_name": text, "run_id": text, "toggles": SCALARS, "hparams": SCALARS,
    "diverged_step": count, "divergence_reason": text, "collapse_reason": text, "error": text,
    "steps": count, "epochs": count, "wall_time_s": NON_NEGATIVE, "train_time_s": NON_NEGATIVE,
    "images_per_s": NON_NEGATIVE, "params": count, "flops_per_image": count,
    "initial_loss": FINITE, "final_train_loss": FINITE,
    "final_val_acc": FRACTION, "best_val_acc": FRACTION, "final_val_loss": FINITE, "best_val_loss": FINITE,
    "test_acc": FRACTION, "test_loss": FINITE, "max_grad_norm": NON_NEGATIVE, "max_attn_logit": FINITE,
    "max_log_z": FINITE, "failure": object_of(any_json),
    # an epoch whose loss went non-finite has a non-finite mean: real diverged runs write NaN there
    "train_loss_history": LOSS_HISTORY, "val_acc_history": list_of(FRACTION),
    "lipschitz_upper": NON_NEGATIVE, "lipschitz_backbone": NON_NEGATIVE, "lipschitz_unbounded": text,
    "lipschitz_lower": NON_NEGATIVE,
    "certified_acc": object_of(FRACTION, _radius, "a radius (a number >= 0, as text)"),
    "certified_acc_sqrt2": object_of(FRACTION, _radius, "a radius (a number >= 0, as text)"),
    "threads": count, "versions": object_of(text),
}
# Names a toggle or an hparam may not take: each becomes a column of the run table beside these.
RESERVED_NAMES = frozenset({"status", "run", "run_dir", "diverged", "collapsed", "has_summary", *SUMMARY_CHECKS})


def shown(value: Any, width: int = 60) -> str:
    """A value as the error message quotes it: its JSON text, cut to ``width`` characters."""
    try:
        out = json.dumps(value, allow_nan=True)
    except (TypeError, ValueError):
        out = repr(value)
    return out if len(out) <= width else out[: width - 3] + "..."


def check_summary_fields(data: Mapping[str, Any], source: str) -> None:
    """Raise :class:`RecordError` for the first field of a parsed summary.json that is not what a run writes:
    ``<file>: <field>: got <value>; expected <what>``."""
    for name, value in data.items():
        check = SUMMARY_CHECKS.get(name, any_json)
        problem = check(value)
        if problem is None and name in ("toggles", "hparams") and value:
            bad = next((k for k in value if k in RESERVED_NAMES), None)
            problem = None if bad is None else (f"[{bad!r}]", bad, "a name that is not a summary field")
        if problem is None and name == "hparams" and isinstance(value, dict) and value.get("lr") is not None:
            lr = value["lr"]
            if not (_finite(lr) and lr > 0):
                problem = ".lr", lr, "a finite number > 0"
        if problem is not None:
            where, given, expected = problem
            raise RecordError(f"{source}: {name}{where}: got {shown(given)}; expected {expected}")


def implausible(hparams: Mapping[str, Any] | None) -> str | None:
    """What makes valid values absurd (``hparams.lr: 1e+300 ...``), or None. For the report only: such a run
    did finish, so the sweep keeps it rather than run it again."""
    lr = (hparams or {}).get("lr")
    if _number(lr) and lr > MAX_PLAUSIBLE_LR:
        return f"hparams.lr: got {shown(lr)}; a learning rate above {MAX_PLAUSIBLE_LR:g} is not plausible"
    return None
