"""``report.md``: the whole report as one Markdown document, and the definitions it (and ``report.html``) states.

Assembles what :func:`stability.report.build.build_report` computed (counts, notes, the formatted tables of
``Report.text`` under their :data:`~stability.report.formatting.TITLES`, gaps) and the plots' files. The failures
section (:mod:`stability.report.failures`) opens with its count line and holds its own telemetry figures, the
failure map (:mod:`stability.report.failure_map`) its heat map; every other figure goes under "Plots".
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from stability.report.build import Report
from stability.report.failures import FIGURE_STEM, count_line
from stability.report.formatting import TITLES, to_markdown

# The sections that show their own figures, by the figures' file stem (``failure_telemetry_2`` is the failures').
SECTION_FIGURES = {"failures": FIGURE_STEM, "failure_map": "failure_map"}


def render_markdown(report: Report, figures: Sequence[Path] = (), base: Path | None = None) -> str:
    """The whole report as one Markdown document: counts, notes, every table, gaps, plots."""
    sweep = report.sweep
    counts = sweep.runs["status"].value_counts()
    lines = [f"# Report: {sweep.path.name}", "",
             f"Sweep folder `{sweep.path}`: {len(sweep.runs)} runs ("
             + ", ".join(f"{n} {s}" for s, n in counts.items()) + ").", ""]
    lines += [f"- {n}" for n in report.notes]
    lines += ["", *definitions(), ""]
    own, plots = split_figures(figures)
    for name, table in report.text.items():
        if name == "failures":
            lines += [f"## {TITLES[name]}", "", count_line(sweep.runs), ""]
            lines += [to_markdown(table), ""] if not table.empty else []
        else:
            lines += [f"## {TITLES[name]}", "", to_markdown(table), ""]
        lines += [*(_image(f, base) for f in own.get(name, [])), ""] if own.get(name) else []
    lines += ["## Gaps", ""]
    lines += [f"- {g}" for g in report.gaps] or ["None: every run finished and every table is complete."]
    if plots:
        lines += ["", "## Plots", ""]
        lines += [_image(f, base) for f in plots]
    return "\n".join(lines) + "\n"


def split_figures(figures: Sequence[Path]) -> tuple[dict[str, list[Path]], list[Path]]:
    """The PNGs among ``figures``: (section -> the figures it shows itself (:data:`SECTION_FIGURES`), the rest
    for "Plots")."""
    pngs = [f for f in figures if f.suffix == ".png"]
    own = {name: [f for f in pngs if f.stem == stem or f.stem.startswith(stem + "_")]
           for name, stem in SECTION_FIGURES.items()}
    shown = {f for fs in own.values() for f in fs}
    return {k: v for k, v in own.items() if v}, [f for f in pngs if f not in shown]


def _image(path: Path, base: Path | None) -> str:
    rel = path.relative_to(base) if base is not None else path
    return f"![{path.stem}]({rel.as_posix()})"


def definitions() -> list[str]:
    return [
        "Definitions: accuracies are fractions; *final train loss* counts a diverged run at its initial "
        "loss; *loss AUC* = mean training loss over normalised steps (diverged runs at the initial loss "
        "after divergence); *steps to target* = first step where the smoothed loss ≤ the target; *spikes* = "
        "runs of steps where the loss exceeds its smoothed history by the spike factor, *max spike* = "
        "largest ratio; "
        "*final-min gap* = last minus minimum smoothed loss (stability.analysis.metrics has the formulas). "
        "A cell with one value says (n=1); effects are mean [95% t-interval] over seeds, each seed the mean of "
        "its pairs of runs that differ in that toggle alone; *failed* = diverged or collapsed, and its change "
        "is the difference of the failure rates, each run of the paired cells one trial, with Newcombe's 95% "
        "interval (a t-interval over seeds of 0/1 outcomes can leave [-1, 1] or have zero width). *LR "
        "sensitivity* needs a configuration run at 3 or more learning rates (else: too few runs).",
    ]
