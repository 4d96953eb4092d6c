"""``report.md``: the whole report as one Markdown document, and the definitions it (and ``report.html``) states.

Assembles what :func:`stability.report.build.build_report` computed (counts, notes, the formatted tables of
``Report.text`` under their :data:`~stability.report.formatting.TITLES`, gaps) and the plots' files.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from stability.report.build import Report
from stability.report.formatting import TITLES, to_markdown


def render_markdown(report: Report, figures: Sequence[Path] = (), base: Path | None = None) -> str:
    """The whole report as one Markdown document: counts, notes, every table, gaps, plots."""
    sweep = report.sweep
    counts = sweep.runs["status"].value_counts()
    lines = [f"# Report: {sweep.path.name}", "",
             f"Sweep folder `{sweep.path}`: {len(sweep.runs)} runs ("
             + ", ".join(f"{n} {s}" for s, n in counts.items()) + ").", ""]
    lines += [f"- {n}" for n in report.notes]
    lines += ["", *definitions(), ""]
    for name, table in report.text.items():
        lines += [f"## {TITLES[name]}", "", to_markdown(table), ""]
    lines += ["## Gaps", ""]
    lines += [f"- {g}" for g in report.gaps] or ["None: every run finished and every table is complete."]
    if figures:
        lines += ["", "## Plots", ""]
        for f in figures:
            if f.suffix == ".png":
                rel = f.relative_to(base) if base is not None else f
                lines.append(f"![{f.stem}]({rel.as_posix()})")
    return "\n".join(lines) + "\n"


def definitions() -> list[str]:
    return [
        "Definitions: accuracies are fractions; *final train loss* counts a diverged run at its initial "
        "loss; *loss AUC* = mean training loss over normalised steps (diverged runs at the initial loss "
        "after divergence); *steps to target* = first step where the smoothed loss ≤ the target; *spikes* = "
        "runs of steps where the loss exceeds its smoothed history by the spike factor, *max spike* = "
        "largest ratio; "
        "*final-min gap* = last minus minimum smoothed loss (stability.analysis.metrics has the formulas). "
        "A cell with one value says (n=1); effects are mean [95% t-interval] over seeds, each seed the mean of "
        "its pairs of runs that differ in that toggle alone; *failed* = diverged or collapsed.",
    ]
