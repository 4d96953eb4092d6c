"""``stability report``: parse the options, build the report, write its files, print a summary and the gaps.

With two or more sweep folders it compares them instead (:mod:`stability.report.compare`): one report per
sweep, lined up cell by cell and claim by claim, written as ``compare.md`` (+ csv, tex); sweeps without a
configuration in common (other data sets) are compared by their claims alone. With ``--curves FILE`` it writes
the sweep's TensorBoard scalar curves as one long table instead (:mod:`stability.report.curve_export`).

Exit codes: 0 a report (possibly partial) was written; 1 nothing to report (no run finished, e.g. all
failed; with ``--curves``: no run has events); 2 bad input (not a sweep folder, empty sweep, bad option,
sweeps with neither a configuration nor a claim in common);
3 the disk filled up while writing (:class:`~stability.errors.OutOfSpace`: one line naming the file; the
earlier report is left as it was, since a report is swapped in only once complete).
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Sequence
from pathlib import Path

from stability.analysis import metrics as M
from stability.analysis.results import Sweep
from stability.errors import ArgumentParser, ConfigError, folder_argument
from stability.report.build import Report, build_report
from stability.report.failures import count_line
from stability.report.formatting import TITLES, check_formats, to_markdown, write_tables, write_text
from stability.report.markdown import render_markdown
from stability.report.output_folder import (
    check_output_folder,
    own_names,
    place_of,
    previous_files,
    remove_stale_staging,
    staging_folder,
    swap_in,
)
from stability.report.tables import ReportOptions
from stability.report.writes import naming_full_disk

FORMATS = ("md", "csv", "tex", "html")


def main(argv: list[str]) -> int:
    """``stability report SWEEP [SWEEP ...] [--out DIR] [--format md,csv,tex,html] [--no-plots]``; returns the exit
    code. Two or more sweeps: their comparison (:func:`_compare`)."""
    parser = ArgumentParser(
        prog="stability report",
        description="Tables and plots from a sweep folder's run records: per-configuration results, toggle "
                    "effects, LR sensitivity, divergence, error distributions. Given two or more sweep folders, "
                    "compares them: claims and configurations side by side (compare.md).")
    parser.add_argument("sweeps", nargs="+", metavar="SWEEP",
                        help="sweep folder (one sub-folder per run); two or more: compare them, the first is A")
    parser.add_argument("--out", type=folder_argument,
                        help="output folder (default: SWEEP/report; comparing: FIRST/report/compare)")
    parser.add_argument("--format", default="md,csv,tex,html", help="comma-separated subset of md,csv,tex,html "
                        "(comparing sweeps: md,csv,tex)")
    parser.add_argument("--no-plots", action="store_true", help="skip the PNG/PDF plots")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace files under the report's names that no earlier report wrote (by default "
                             "the report refuses; it never removes a file it did not write)")
    parser.add_argument("--target-loss", type=float, default=None,
                        help="absolute loss for 'steps to target' (default: target-fraction x initial loss)")
    parser.add_argument("--target-fraction", type=float, default=0.25,
                        help="'steps to target' waits for this fraction of the initial loss (default 0.25)")
    parser.add_argument("--spike-factor", type=float, default=1.5,
                        help="a loss above this factor x its smoothed history is a spike")
    parser.add_argument("--curves", metavar="FILE",
                        help="instead of the report, write every run's TensorBoard scalar curves to FILE as one long "
                             "table, a row per run, tag and step: run, tag, step, value, wall_time, then the run's "
                             "toggles, hyperparameters and status (to group by). Parquet for .parquet (needs "
                             "pyarrow), CSV for .csv and .csv.gz. A diverged run's curves stop at its last logged "
                             "step; runs without event files (pending, or failed before logging) are absent")
    parser.add_argument("--curves-tags", metavar="TAG,TAG",
                        help="with --curves: only these tags, names or shell patterns (train/loss,attn/*); "
                             "default: every scalar tag")
    args = parser.parse_args(argv)
    try:
        if args.curves_tags is not None and args.curves is None:
            raise ConfigError("--curves-tags: only with --curves FILE (the tags of the curves to export)")
        if args.curves is not None:
            from stability.report.curve_export import export_curves  # tbparse only when curves are asked for

            return export_curves(args.sweeps, args.curves, args.curves_tags)
        formats = [f.strip() for f in args.format.split(",") if f.strip()]
        options = ReportOptions(curve=M.CurveOptions(target_loss=args.target_loss,
                                                     target_fraction=args.target_fraction,
                                                     spike_factor=args.spike_factor))
        bad = [f for f in formats if f not in FORMATS] or ([] if formats else [args.format])
        if bad:
            raise ConfigError(f"--format: got {args.format!r}; valid values: {', '.join(FORMATS)} "
                              f"(comma-separated)")
        if len(args.sweeps) > 1:
            return _compare(args.sweeps, args.out, formats, options)
        args.sweep = args.sweeps[0]
        report = build_report(args.sweep, options)
        out = Path(args.out) if args.out else Path(args.sweep) / "report"
        written = write_report(report, out, formats, plots=not args.no_plots, overwrite=args.overwrite)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if not report.has_results:
        print(f"error: nothing to report in {args.sweep}: {_why_nothing(report.sweep)}", file=sys.stderr)
        print(f"(the run list is in {out})", file=sys.stderr)
        return 1
    if "claims" in report.text:
        print(f"# {TITLES['claims']}\n")
        print(to_markdown(report.text["claims"]))
        print()
    print(f"# {TITLES['failures']}\n\n{count_line(report.sweep.runs)}\n")  # failures are results: on screen too
    if not report.text["failures"].empty:
        print(to_markdown(report.text["failures"].drop(columns="run")) + "\n")
    if "failure_map" in report.text and not report.text["failure_map"].empty:
        print(f"# {TITLES['failure_map']}\n\n{to_markdown(report.text['failure_map'])}\n")
    print(f"# {TITLES['configurations']}\n")
    print(to_markdown(report.text["configurations"]))
    print(f"\n# {TITLES['effects']}\n")
    print(to_markdown(report.text["effects"]) if not report.text["effects"].empty
          else "(no toggle varies in this sweep)")
    for gap in report.gaps:
        print(f"warning: {gap}", file=sys.stderr)
    print(f"\nwrote {len(written)} files to {out} (main: {out / 'report.md'})" if "md" in formats
          else f"\nwrote {len(written)} files to {out}")
    return 0


def _compare(sweeps: Sequence[str], out_arg: str | None, formats: Sequence[str], options: ReportOptions) -> int:
    """Two or more sweeps: every report is built (and every input checked) before anything is written; the
    claims comparison is printed first, then the configurations. Raises ConfigError on bad input."""
    from stability.report.compare import COMPARE_FORMATS, compare_reports, legend, sweep_gaps, write_comparison
    from stability.report.compare_text import TABLES

    skipped = [f for f in formats if f not in COMPARE_FORMATS]
    formats = [f for f in formats if f in COMPARE_FORMATS]
    if not formats:
        raise ConfigError(f"--format: a comparison writes {', '.join(COMPARE_FORMATS)}; got {','.join(skipped)}")
    reports = []
    for path in sweeps:
        report = build_report(path, options)
        if not report.has_results:
            print(f"error: nothing to compare in {path}: {_why_nothing(report.sweep)}", file=sys.stderr)
            return 1
        reports.append(report)
    comparison = compare_reports(reports)
    out = Path(out_arg) if out_arg else Path(sweeps[0]) / "report" / "compare"
    try:
        with naming_full_disk(out):  # a full disk: exit 3 naming the file (OutOfSpace), not a bad --out
            written = write_comparison(comparison, out, formats)
    except OSError as exc:
        raise ConfigError(f"--out: cannot write to {str(out)!r} ({exc.strerror or exc})") from exc
    print(to_markdown(legend(comparison)))
    print()
    for name, title in TABLES.items():
        table = comparison.text[name]
        if table.empty and name != "claims":
            continue
        print(f"# {title}\n")
        print(to_markdown(table) if not table.empty else "(no sweep states claims)")
        print()
    for line in comparison.summary:
        print(line)
    for note in comparison.notes:
        print(f"note: {note}", file=sys.stderr)
    for gap in sweep_gaps(comparison):
        print(f"warning: {gap}", file=sys.stderr)
    if skipped:
        print(f"note: --format {','.join(skipped)}: not written for a comparison", file=sys.stderr)
    main_file = f" (main: {out / 'compare.md'})" if "md" in formats else ""
    print(f"\nwrote {len(written)} files to {out}{main_file}")
    return 0


def _why_nothing(sweep: Sweep) -> str:
    runs = sweep.runs
    counts = runs["status"].value_counts()
    parts = ", ".join(f"{n} {s}" for s, n in counts.items())
    if (runs["status"] == "failed").all():
        errors = runs["error"].dropna().astype(str)
        first = errors.value_counts()
        detail = "; ".join(f"{n}x {e.splitlines()[0][:200]}" for e, n in first.head(3).items()) \
            if len(first) else "no error recorded"
        return f"all {len(runs)} runs failed ({detail})"
    return f"no run has finished yet ({parts})"


# -------------------------------------------------------------------------------------------- writing


def write_report(report: Report, out_dir: str | Path, formats: Sequence[str] = FORMATS,
                 plots: bool = True, overwrite: bool = False) -> list[Path]:
    """Write every table in every format (plus ``report.md``, ``report.html`` and, with ``plots``, ``plots/``).

    Returns the paths written. CSVs hold the numeric tables (``Report.tables``); Markdown and LaTeX the
    formatted ones (``Report.text``). Only files an earlier report wrote are replaced or removed
    (:mod:`stability.report.output_folder`); others under the report's names need ``overwrite``.

    The report is written into a staging folder and swapped in whole once complete, so a failure, a kill or
    a full disk leaves the earlier report as it was. A full disk raises
    :class:`~stability.errors.OutOfSpace` naming the file being written (:mod:`stability.report.writes`).
    """
    check_formats(formats, FORMATS)
    out = Path(out_dir)
    previous = previous_files(out, TITLES)
    check_output_folder(out, own_names(out, report.tables, formats), plots, previous, overwrite)
    created = not out.exists()
    try:
        with naming_full_disk(out, lambda path: place_of(out, path)):
            out.mkdir(parents=True, exist_ok=True)
            remove_stale_staging(out)
            with staging_folder(out) as stage:
                staged = _write_files(report, stage, formats, plots)
                return swap_in(out, stage, staged, previous)
    except BaseException:
        if created:  # a report that never got there leaves no empty folder behind
            with contextlib.suppress(OSError):
                out.rmdir()
        raise


def _write_files(report: Report, folder: Path, formats: Sequence[str], plots: bool) -> list[Path]:
    """Every file of the report, written into ``folder``; returns them."""
    written = write_tables(folder, report.tables, report.text, formats, TITLES)
    figures: list[Path] = []
    if plots and (report.has_results or not report.telemetry.empty):  # an all-failed sweep: its failures
        from stability.report.figures import write_figures  # matplotlib only when plots are asked for

        figures = write_figures(report, folder / "plots")
        written.extend(figures)
    if "md" in formats:
        written.append(write_text(folder / "report.md", render_markdown(report, figures, folder)))
    if "html" in formats:
        from stability.report.html import render_html  # jinja2 only when HTML is asked for

        written.append(write_text(folder / "report.html", render_html(report, figures)))
    return written
