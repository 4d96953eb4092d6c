"""``report.html``: the whole report as one self-contained page, for a browser or a printer.

The same content in the same order as ``report.md`` (:func:`stability.report.markdown.render_markdown`):
the header with the sweep's counts, notes and definitions, then every formatted table of ``Report.text``
(the claims first), the gaps and the plots. What the Markdown cannot do: verdicts styled as supported /
contradicted / inconclusive, numbers right-aligned, tables sorted by clicking a header, and the PNGs that
:func:`stability.report.figures.write_figures` drew embedded as ``data:`` URIs, so that the one file can be
mailed or archived and still shows everything. Nothing is linked: the CSS and the sort script are inline,
and there is no timestamp, so the same sweep gives the same bytes.

The page is a jinja2 template (``report.html.jinja``, next to this module); each table is rendered by pandas'
:class:`~pandas.io.formats.style.Styler`, which escapes the cells and puts the classes on them.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jinja2
import pandas as pd
from markupsafe import Markup, escape

from stability.analysis.verdicts import VERDICTS
from stability.report.configs import format_cell
from stability.report.failures import FIGURE_STEM, count_line, failed_names
from stability.report.formatting import TITLES
from stability.report.markdown import definitions, split_figures

if TYPE_CHECKING:
    from stability.report.build import Report

TEMPLATE = "report.html.jinja"
# Navigation labels: the tables' titles are sentences, too long for a row of links.
SHORT_TITLES = {
    "claims": "Claims",
    "edges": "Edges",
    "robust": "Robust",
    "failure_map": "Failure map",
    "failures": "Failures",
    "configurations": "Configurations",
    "lipschitz": "Lipschitz",
    "effects": "Effects",
    "lr_sensitivity": "LR sensitivity",
    "divergence": "Divergence",
    "edf": "EDF",
    "spikes": "Spikes",
    "runs": "Runs",
}
CAPTIONS = {
    "failure_map": "Runs failed (diverged or collapsed) of runs, by configuration and learning rate.",
    "lr_curves": "Metrics against the learning rate.",
    "edf": "Error distribution functions.",
    "curves_all": "Training loss of every run.",
    "certified_accuracy": "Certified accuracy against the l2 radius.",
}
LONG_CELL = 40  # characters: a column with a longer cell wraps its text (class "long"); others stay on one line
# A cell that reads as a number: once the parts in brackets are gone ("(n=1)", "[+0.01, +0.07]", "[2/3 reached]"),
# only numbers, signs and "±", "/", "x", "%" are left: "0.912 ± 0.004", "2/3", "1.52x", "1e-3"; not "lr 0.003",
# "3/3 at lr 0.003", "0a1b2c" or "lr=0.01".
_BRACKETS = re.compile(r"\([^()]*\)|\[[^\[\]]*\]")
_NUMERIC = re.compile(r"^[\d.eE+\-−±/x%\s]*\d[\d.eE+\-−±/x%\s]*$")


def render_html(report: Report, figures: Sequence[Path] = ()) -> str:
    """The whole report as one HTML document (a string); ``figures``: the files ``write_figures`` wrote.

    Only the PNGs among ``figures`` are shown (embedded); the failures' telemetry in the failures section (after
    its count line and table), the others in "Plots" (none, no "Plots" section).
    """
    sweep = report.sweep
    counts = sweep.runs["status"].value_counts()
    own, pngs = split_figures(figures)
    sections, styles = [], []
    for name, table in report.text.items():
        style, html = _split_style(table_html(table, name)) if not table.empty else ("", None)
        styles.append(style)
        section = {"id": name, "title": TITLES.get(name, name), "short": SHORT_TITLES.get(name, name),
                   "table": html, "lead": None, "lead_class": "", "figures": [_figure(f) for f in own.get(name, [])]}
        if name == "failures":  # a count line first (the whole section when none failed), its figures after
            failed = failed_names(sweep.runs)
            section.update(lead=count_line(sweep.runs), lead_class="failed" if failed else "none-failed",
                           short=f"Failures ({len(failed)})")
        sections.append(section)
    return _template().render(
        title=f"Report: {sweep.path.name}",
        sweep_path=str(sweep.path),
        counts=f"{len(sweep.runs)} runs (" + ", ".join(f"{n} {s}" for s, n in counts.items()) + ")",
        notes=report.notes,
        definitions=_inline_markdown(" ".join(definitions())),
        sections=sections,
        table_styles=Markup("\n".join(s for s in styles if s)),
        gaps=report.gaps,
        figures=[_figure(f) for f in pngs],
    )


def _figure(path: Path) -> dict[str, str]:
    """What the template shows of one PNG: its name, caption and bytes."""
    return {"name": path.stem, "caption": figure_caption(path.stem), "uri": data_uri(path)}


def table_html(table: pd.DataFrame, name: str) -> Markup:
    """One formatted table as an HTML ``<table>`` (with its scoped ``<style>``): cells escaped, no index.

    Columns whose cells read as numbers are right-aligned (header included); columns of long text (a claim,
    why, a run name, an error) get the class ``long`` and wrap, every other cell stays on one line, so that a
    wide table scrolls rather than breaking "2 from 0.003 to 0.03" over three lines. The claims' verdict
    cells get the classes ``verdict <verdict>``, which the page's CSS colours.
    """
    text = table.map(_cell_text)
    text.columns = [str(c) for c in text.columns]
    numeric = [is_numeric_column(text[c]) for c in text.columns]
    classes = pd.DataFrame("", index=text.index, columns=text.columns)
    for i, c in enumerate(text.columns):
        if numeric[i]:
            classes[c] = "num"
        elif text[c].str.len().max() > LONG_CELL:
            classes[c] = "long"
    if name == "claims" and "verdict" in text:
        classes["verdict"] = [f"verdict {v.lower()}" if v.lower() in VERDICTS else "verdict"
                              for v in text["verdict"]]
    styler = (text.style.hide(axis="index").set_uuid(name).set_td_classes(classes)
              .format(escape="html").format_index(escape="html", axis=1)
              .set_table_styles([{"selector": f"th.col{i}", "props": "text-align: right"}
                                 for i, num in enumerate(numeric) if num]))
    return Markup(styler.to_html(table_attributes='class="report-table"', cell_ids=False))


def is_numeric_column(cells: pd.Series) -> bool:
    """True when every cell of a column that holds a number reads as one (then the column is right-aligned).

    Cells without a digit outside brackets ("–", "no pairs", "never", "too few runs (4)") hold no value and
    do not decide: a column of effects with a few "no pairs" is still a column of numbers. A column with no
    number at all is text.
    """
    values = [v for v in (_BRACKETS.sub("", c) for c in cells) if any(ch.isdigit() for ch in v)]
    return bool(values) and all(_NUMERIC.match(v) for v in values)


def data_uri(path: Path) -> str:
    """A PNG file as a ``data:image/png;base64,...`` URI: the image travels inside the page."""
    return "data:image/png;base64," + base64.b64encode(Path(path).read_bytes()).decode("ascii")


def figure_caption(stem: str) -> str:
    """What a figure of :func:`stability.report.figures.write_figures` shows, from its file name."""
    if stem in CAPTIONS:
        return CAPTIONS[stem]
    if stem == FIGURE_STEM or stem.startswith(FIGURE_STEM + "_"):
        return ("Loss, gradient norm and max attention logit of each failed run before it stopped (dashed: the "
                "step it stopped at).")
    if stem.startswith("curves_"):
        return f"Training loss by {stem.removeprefix('curves_')}."
    return stem


def _template() -> jinja2.Template:
    source = resources.files("stability.report").joinpath(TEMPLATE).read_text(encoding="utf-8")
    env = jinja2.Environment(autoescape=True, trim_blocks=True, lstrip_blocks=True,
                             undefined=jinja2.StrictUndefined)
    return env.from_string(source)


def _split_style(table: Markup) -> tuple[str, Markup]:
    """Styler's output, ``<style>rules</style><table>...``, as (rules, table): the page gathers the rules in
    its ``<head>``, where a ``<style>`` element belongs."""
    head, sep, rest = str(table).partition("</style>")
    if not sep or not head.lstrip().startswith("<style"):
        return "", table
    return head.split(">", 1)[1].strip(), Markup(rest.strip())


def _cell_text(v: Any) -> str:
    """A formatted table's cell as text: most are strings already; counts and steps are numbers."""
    return v if isinstance(v, str) else format_cell(v)


def _inline_markdown(text: str) -> Markup:
    """The definitions' Markdown emphasis (``*term*``) and code (```name```) as HTML, everything else escaped."""
    html = str(escape(text))
    html = re.sub(r"\*([^*]+)\*", r"<em>\1</em>", html)
    html = re.sub(r"`([^`]+)`", r"<code>\1</code>", html)
    return Markup(html)
