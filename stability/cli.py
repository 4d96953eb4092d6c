"""``stability``: the command-line entry point.

    stability fit    [LightningCLI options]     train one configuration, write its run record
    stability sweep  GRID [options]             run an ablation grid (resumable)
    stability report SWEEP [SWEEP ...] [opts]   tables and plots from run records; 2+ sweeps: compared
    stability bench  model|sweep [options]      speed against timm and the machine's matmul rate
    stability demo   [OUT]                      the default grid on digits, then its report
    stability --version

Each subcommand's module is imported only when used (``import lightning`` alone costs seconds), and each
parses its own options, so ``stability COMMAND --help`` is that command's help.

Every error is one line on stderr, never a traceback:
- exit 2, ``error: ...``: bad input (:class:`stability.errors.ConfigError`, or a path given that cannot be
  used: missing, a file where a folder is needed, not permitted); checked before anything is written;
- exit 3, ``error: ...``: the disk filled up (:class:`stability.errors.OutOfSpace`); nothing is corrupt and
  the same command resumes;
- exit 1, ``failed: ...``: a run raised (its record says why); ``error: ...`` for any other OS error;
- exit 130: interrupted (Ctrl-C); finished runs are kept.

Output never fails on its characters: under the C/POSIX locale (``LC_ALL=C``, no UTF-8 mode) Python would
write ASCII and stop with ``UnicodeEncodeError`` at a grid's first "—" or "é"; see :func:`readable_output`.
"""

from __future__ import annotations

import codecs
import errno
import importlib
import locale
import sys
from collections.abc import Callable

COMMANDS: dict[str, tuple[str, str, str]] = {
    # name: (module, function, one-line help)
    "fit": ("stability.training.run", "fit_main", "train one configuration and write its run record"),
    "sweep": ("stability.sweep.cli", "main", "run an ablation grid; re-running resumes it"),
    "report": ("stability.report", "main", "tables and plots from a sweep folder"),
    "bench": ("stability.bench.cli", "main", "speed benchmarks: `bench model`, `bench telemetry`, `bench sweep`"),
    "demo": ("stability.cli", "demo_main", "the default digits grid, then its report"),
}


def usage() -> str:
    lines = ["usage: stability {" + ",".join(COMMANDS) + "} ...", "       stability --version", ""]
    lines += [f"  {name:<7} {help_}" for name, (_, _, help_) in COMMANDS.items()]
    lines += ["", "`stability COMMAND --help` shows a command's options."]
    return "\n".join(lines)


def version() -> str:
    import stability

    return f"stability {stability.__version__}"


def demo_main(argv: list[str]) -> int:
    """``stability demo [OUT]``: parsed here, so that ``--help`` is help and not a folder name."""
    from stability.demo import GRID
    from stability.errors import ArgumentParser
    from stability.sweep.grid import header_facts

    facts = header_facts(GRID) if GRID.is_file() else None
    size = f": {facts[0]} runs, {facts[1]}" if facts else ""
    parser = ArgumentParser(
        prog="stability demo",
        description=f"Run the default study (ablations/digits.yaml{size}) into OUT, then build its report into "
                    "OUT/report and print each claim's verdict. Re-running resumes: finished runs are kept.")
    parser.add_argument("out", nargs="?", default="runs/digits", help="sweep folder (default: runs/digits)")
    args = parser.parse_args(argv)
    from stability import demo

    return demo.main([args.out])


READABLE = "stability.readable"  # the error handler of stdout and stderr, registered below


def _readable(error: UnicodeError) -> tuple[str | bytes, int]:
    """Encode what the stream's encoding cannot: a file name's undecodable byte (the surrogate ``os.fsdecode``
    left for it) as that byte, as ``ls`` prints it; anything else as a ``\\u`` escape."""
    if not isinstance(error, UnicodeEncodeError):
        raise error
    code = ord(error.object[error.start])
    if 0xDC80 <= code <= 0xDCFF:
        return bytes([code - 0xDC00]), error.start + 1
    return f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}", error.start + 1


codecs.register_error(READABLE, _readable)


def readable_output() -> None:
    """Make printing any text safe and readable, whatever the locale.

    Under the C/POSIX locale with UTF-8 mode off (``LC_ALL=C PYTHONUTF8=0``, as cron jobs, containers and
    minimal ssh sessions have), Python's streams and ``open`` default to ASCII: a grid whose header says
    "café" made ``stability sweep --dry-run`` crash, and files read by libraries without an explicit encoding
    (jsonargparse reads ``--config`` files so) failed on UTF-8 text. Python itself answers an ASCII C locale
    by switching to UTF-8 (PEP 538, PEP 540) unless told not to; this does the same for this process: the
    character type locale becomes C.UTF-8 where it exists, and stdout and stderr write UTF-8. Bytes of a file
    name that were not text in the file system's encoding are written back as those bytes (the terminal shows
    the name as ``ls`` does), and any other character a stream cannot encode as an escape, never an error.
    """
    try:
        ascii_locale = codecs.lookup(locale.getpreferredencoding(False)).name == "ascii"
    except LookupError:
        ascii_locale = False
    if ascii_locale:
        for name in ("C.UTF-8", "C.utf8", "UTF-8", "en_US.UTF-8"):
            try:
                locale.setlocale(locale.LC_CTYPE, name)
                break
            except locale.Error:
                continue
    for stream in (sys.stdout, sys.stderr):
        try:
            ascii_stream = codecs.lookup(getattr(stream, "encoding", None) or "ascii").name == "ascii"
            stream.reconfigure(**({"encoding": "utf-8"} if ascii_stream else {}), errors=READABLE)
        except (AttributeError, LookupError, ValueError, OSError):
            continue  # not a text stream that can be reconfigured (a test's replacement): left as it is


def main(argv: list[str] | None = None) -> int:
    readable_output()
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in ("-V", "--version"):
        print(version())
        return 0
    if not argv:
        print(f"error: give a command: {', '.join(COMMANDS)} (`stability --help` says what each does)",
              file=sys.stderr)
        return 2
    if argv[0] in ("-h", "--help"):
        print(usage())
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"error: unknown command {name!r}; valid commands: {', '.join(COMMANDS)}", file=sys.stderr)
        return 2
    from stability.errors import ConfigError, OutOfSpace, RunFailed, full_disk_error

    if name == "fit":  # before `import lightning`: a bad config file costs milliseconds
        from stability.record.config_files import check_config_arguments, expand_config_arguments

        try:
            rest = expand_config_arguments(rest)  # --config stability:<name>: the shipped file
            check_config_arguments(rest)
        except ConfigError as error:
            print(f"error: {error}", file=sys.stderr)
            return 2
    module, function, _ = COMMANDS[name]
    command: Callable[[list[str]], int] = getattr(importlib.import_module(module), function)

    try:
        return int(command(rest) or 0)
    except (ConfigError, ValueError) as error:
        # jsonargparse reports a `--trainer.logger` it cannot build as a long (sometimes multi-line) error
        from stability.record.files import RecordError
        from stability.training.user_loggers import logger_error

        line = logger_error(error)
        if line is None and not isinstance(error, (ConfigError, RecordError)):  # a record names its file
            raise
        print(f"error: {line or error}", file=sys.stderr)
        return 2
    except OutOfSpace as error:
        print(f"error: {error}", file=sys.stderr)
        return 3
    except KeyboardInterrupt:
        print("interrupted: finished runs are kept; run the same command again to resume", file=sys.stderr)
        return 130
    except RunFailed as error:
        print(f"failed: {error}", file=sys.stderr)
        return 1
    except OSError as error:
        if full_disk_error(error) is not None:
            print(f"error: {OutOfSpace(error.filename or '.')}", file=sys.stderr)
            return 3
        print(f"error: {_os_error(error)}", file=sys.stderr)
        return 2 if error.errno in PATH_ERRNOS else 1


# errno values that say a path the user gave cannot be used (bad input), rather than that the system failed
PATH_ERRNOS = (errno.ENOENT, errno.EEXIST, errno.ENOTDIR, errno.EISDIR, errno.EACCES, errno.EPERM, errno.EROFS,
               errno.ENAMETOOLONG, errno.ELOOP)


def _os_error(error: OSError) -> str:
    """``path: what is wrong`` in words for the common cases (``mkdir`` on a file says only "File exists")."""
    path = error.filename if error.filename is not None else "?"
    if error.errno in (errno.EEXIST, errno.ENOTDIR):
        return f"{path}: a file is in the way where a folder is needed"
    return f"{path}: {error.strerror or type(error).__name__}"


if __name__ == "__main__":
    sys.exit(main())
