"""report.html (stability.report.html) on fabricated sweeps: structure, order, nothing external, plots inline,
verdicts styled, the same bytes for the same sweep; in a real headless browser when chromium is installed."""

from __future__ import annotations

import base64
import shutil
import subprocess
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path

import fabricate as fab
import pandas as pd
import pytest

from stability.report import Report, build_report, main
from stability.report.html import figure_caption, is_numeric_column, render_html, table_html

VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}
# The grid file's claim on the fabricated sweep (2 seeds: inconclusive, and the verdict says why).
NORM_CLAIM = {"claim": "CenterNorm raises accuracy", "treatment": {"norm": "centernorm"},
              "metric": "best_val_acc", "direction": "increase", "min_effect": 0.01}


@dataclass
class Table:
    section: str
    cls: str
    header: list[str]
    rows: list[list[tuple[str, str]]] = field(default_factory=list)  # per row, (text, class) per cell


class Page(HTMLParser):
    """What the tests read from a page: tags must nest and close (``errors`` says where not), the sections in
    order, each table's header row and cells (with their classes), every src/href, the list items."""

    def __init__(self, text: str) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.errors: list[str] = []
        self.sections: list[str] = []
        self.tables: list[Table] = []
        self.links: list[str] = []
        self.images: list[str] = []
        self.items: list[str] = []
        self.headings: list[str] = []
        self.tags: list[str] = []
        self._cell: list[str] | None = None
        self._cell_class = ""
        self._item: list[str] | None = None
        self.feed(text)
        self.close()
        if self.stack:
            self.errors.append(f"never closed: {self.stack}")

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        self.tags.append(tag)
        self.links += [v or "" for k, v in attrs if k in ("src", "href")]
        if tag == "img":
            self.images.append(a.get("src") or "")
        if tag == "section":
            self.sections.append(a.get("id") or "")
        if tag == "table":
            self.tables.append(Table(self.sections[-1] if self.sections else "", a.get("class") or "", []))
        if tag == "tr" and self.tables and "tbody" in self.stack:
            self.tables[-1].rows.append([])
        if tag in ("th", "td"):
            self._cell, self._cell_class = [], a.get("class") or ""
        if tag in ("li", "h2"):
            self._item = []
        if tag not in VOID:
            self.stack.append(tag)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.errors.append(f"self-closing <{tag}/>")

    def handle_endtag(self, tag: str) -> None:
        if tag in VOID:
            self.errors.append(f"end tag of a void element </{tag}>")
            return
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes {self.stack[-1] if self.stack else 'nothing'}")
            return
        self.stack.pop()
        if tag in ("th", "td") and self._cell is not None:
            text = "".join(self._cell).strip()
            if tag == "th" and "thead" in self.stack:
                self.tables[-1].header.append(text)
            elif tag == "td":
                self.tables[-1].rows[-1].append((text, self._cell_class))
            self._cell = None
        if tag in ("li", "h2") and self._item is not None:
            (self.items if tag == "li" else self.headings).append(" ".join("".join(self._item).split()))
            self._item = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)
        if self._item is not None:
            self._item.append(data)

    def table(self, section: str) -> Table:
        [hit] = [t for t in self.tables if t.section == section]
        return hit


@pytest.fixture(scope="module")
def sweep_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    sweep = fab.make_sweep(tmp_path_factory.mktemp("sweep"))
    fab.write_claims(sweep, [NORM_CLAIM])
    return sweep


@pytest.fixture(scope="module")
def out(sweep_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``stability report SWEEP --format md,html`` with its plots, once for the module."""
    out = tmp_path_factory.mktemp("report")
    assert main([str(sweep_dir), "--out", str(out), "--format", "md,html"]) == 0
    return out


@pytest.fixture(scope="module")
def report(sweep_dir: Path) -> Report:
    return build_report(sweep_dir)


@pytest.fixture(scope="module")
def page(out: Path) -> Page:
    return Page((out / "report.html").read_text(encoding="utf-8"))


def test_the_page_parses_and_every_tag_closes(page: Page) -> None:
    assert page.errors == []
    assert page.tags[:3] == ["html", "head", "meta"]
    # one <style>, in the head: the tables' own rules (right-aligned headers) are gathered there
    assert page.tags.count("style") == 1 and page.tags.index("style") < page.tags.index("body")
    assert Page("<p><b>x</p></b>").errors and Page("<div><p>x</p>").errors  # the check can fail


def test_same_tables_in_the_same_order_as_report_md_claims_first(report: Report, out: Path, page: Page) -> None:
    assert list(report.text)[0] == "claims"
    assert page.sections == [*report.text, "gaps", "plots"]
    assert [t.section for t in page.tables] == list(report.text)  # no empty table in this sweep
    md = (out / "report.md").read_text()
    md_order = [line.removeprefix("## ") for line in md.splitlines() if line.startswith("## ")]
    assert page.headings == md_order  # report.md's headings, in report.md's order
    for name, text in report.text.items():
        table = page.table(name)
        assert table.header == [str(c) for c in text.columns], name
        assert [[cell for cell, _ in row] for row in table.rows] == text.astype(str).values.tolist(), name


def test_header_notes_and_gaps_are_on_the_page(sweep_dir: Path, report: Report, page: Page, out: Path) -> None:
    html = (out / "report.html").read_text(encoding="utf-8")
    assert "<title>Report: " + sweep_dir.name + "</title>" in html
    assert f"<code>{sweep_dir}</code>: 12 runs (" in html
    assert report.notes and all(note in page.items for note in report.notes)
    assert len(report.gaps) >= 4 and all(" ".join(gap.split()) in page.items for gap in report.gaps)
    assert f'<a href="#gaps" class="warn">Gaps ({len(report.gaps)})</a>' in html
    assert "<em>loss AUC</em>" in html  # the definitions' Markdown emphasis, as HTML


def test_nothing_external_and_the_plots_are_inline(out: Path, page: Page) -> None:
    html = (out / "report.html").read_text(encoding="utf-8")
    assert "http://" not in html and "https://" not in html
    assert "link" not in page.tags and "iframe" not in page.tags
    assert not [u for u in page.links if not (u.startswith("#") or u.startswith("data:image/png;base64,"))]
    assert "<script src" not in html and "@import" not in html and "url(" not in html
    pngs = sorted((out / "plots").glob("*.png"))
    assert pngs, "the fabricated sweep has loss curves to plot"
    prefix = "data:image/png;base64,"
    assert len(page.images) == len(pngs) and all(src.startswith(prefix) for src in page.images)
    assert sorted(base64.b64decode(src[len(prefix):]) for src in page.images) == sorted(p.read_bytes() for p in pngs)


def test_no_plots_no_figures_and_the_same_sweep_gives_the_same_bytes(sweep_dir: Path, tmp_path: Path) -> None:
    for name in ("a", "b"):
        assert main([str(sweep_dir), "--out", str(tmp_path / name), "--format", "html", "--no-plots"]) == 0
    first = (tmp_path / "a" / "report.html").read_bytes()
    assert first == (tmp_path / "b" / "report.html").read_bytes()  # and the output folder is not in it
    page = Page(first.decode("utf-8"))
    assert page.errors == [] and page.images == [] and "plots" not in page.sections
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == [".stability-report.json", "report.html"]


def test_a_sweep_with_nothing_finished_still_gets_its_run_list(tmp_path: Path) -> None:
    sweep = fab.make_failed_sweep(tmp_path / "failed")
    assert main([str(sweep), "--format", "html"]) == 1
    page = Page((sweep / "report" / "report.html").read_text(encoding="utf-8"))
    assert page.errors == [] and page.sections == ["failures", "runs", "gaps"]
    assert len(page.table("runs").rows) == 3 and any("3 run(s) failed" in item for item in page.items)
    assert len(page.table("failures").rows) == 3 and len(page.images) == 1  # what they did before they raised


def test_verdicts_are_styled(tmp_path: Path) -> None:
    # three seeds, lape - control = +0.030, +0.035, +0.028: the 95% interval is about [+0.022, +0.040]
    for seed, gain in enumerate([0.030, 0.035, 0.028]):
        fab.write_record(tmp_path, seed, final_val_acc=0.90 + 0.01 * seed)
        fab.write_record(tmp_path, seed, pos_embed="lape", final_val_acc=0.90 + 0.01 * seed + gain)
    lape = {"treatment": {"pos_embed": "lape"}, "metric": "final_val_acc", "direction": "increase"}
    fab.write_claims(tmp_path, [{**lape, "claim": "beyond 0.01", "min_effect": 0.01},
                                {**lape, "claim": "spans 0.03", "min_effect": 0.03},
                                {**lape, "claim": "short of 0.1", "min_effect": 0.1}])
    page = Page(render_html(build_report(tmp_path)))
    claims = page.tables[0]
    assert page.errors == [] and claims.section == "claims"
    col = claims.header.index("verdict")
    verdicts = [(row[0][0], row[col][0], row[col][1].split()[-2:]) for row in claims.rows]
    assert verdicts == [("beyond 0.01", "SUPPORTED", ["verdict", "supported"]),
                        ("spans 0.03", "inconclusive", ["verdict", "inconclusive"]),
                        ("short of 0.1", "CONTRADICTED", ["verdict", "contradicted"])]


def test_numbers_are_right_aligned_text_is_not(page: Page) -> None:
    def right_aligned(table: Table, column: str) -> set[bool]:
        i = table.header.index(column)
        return {"num" in row[i][1].split() for row in table.rows}

    cfg, effects = page.table("configurations"), page.table("effects")
    assert right_aligned(cfg, "best val acc") == right_aligned(cfg, "lr") == right_aligned(cfg, "n") == {True}
    assert right_aligned(cfg, "norm") == right_aligned(effects, "toggle") == right_aligned(effects, "on − off") \
        == {False}
    assert right_aligned(effects, "best val acc") == {True}
    # "mean ± std", intervals, k/n, sizes and exponents read as numbers; words (or no digit) do not decide
    assert is_numeric_column(pd.Series(["0.912 ± 0.004", "0.91 (n=1)", "–", "no pairs", "too few runs (4)"]))
    assert is_numeric_column(pd.Series(["+0.028 [+0.014, +0.041]", "2/3", "1.52x", "1e-3", "1200 ± 300 [2/3 reached]"]))
    for text in ("lr 0.003", "3/3 at lr 0.003", "0a1b2c", "lr=0.01"):
        assert not is_numeric_column(pd.Series([text, "0.5"])), text
    assert not is_numeric_column(pd.Series(["no pairs", "–"]))  # no number at all: text


def test_cells_and_headers_are_escaped() -> None:
    html = str(table_html(pd.DataFrame({"a<b": ["x & <script>y</script>"], "n": [3]}), "t"))
    assert "a&lt;b" in html and "x &amp; &lt;script&gt;y&lt;/script&gt;" in html and "<script>" not in html
    page = Page(html)
    assert page.errors == [] and page.tables[0].header == ["a<b", "n"]
    assert page.tables[0].rows == [[("x & <script>y</script>", "data row0 col0"), ("3", "data row0 col1 num")]]
    assert figure_caption("curves_norm") == "Training loss by norm." and figure_caption("other") == "other"
    assert figure_caption("certified_accuracy") == "Certified accuracy against the l2 radius."


def test_bad_format_is_one_error_line_and_nothing_is_written(sweep_dir: Path, tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    assert main([str(sweep_dir), "--out", str(tmp_path / "r"), "--format", "html,pdf"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --format: got 'html,pdf'") and "md, csv, tex, html" in err
    assert err.count("\n") == 1 and not (tmp_path / "r").exists()


@pytest.mark.slow
def test_the_same_sweep_gives_the_same_page_with_its_plots(sweep_dir: Path, out: Path, tmp_path: Path) -> None:
    """The plots drawn again are the same PNG bytes, so the page with them inline is too (~6 s: matplotlib)."""
    assert main([str(sweep_dir), "--out", str(tmp_path), "--format", "html"]) == 0
    assert (tmp_path / "report.html").read_bytes() == (out / "report.html").read_bytes()


# ------------------------------------------------------------------------------------------ in a browser


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def _dom(html_file: Path) -> Page:
    """The page as headless chromium leaves it once its scripts have run (``--dump-dom``)."""
    done = subprocess.run([_chromium() or "chromium", "--headless", "--no-sandbox", "--disable-gpu", "--dump-dom",
                           html_file.as_uri()], capture_output=True, text=True, timeout=120, check=True)
    return Page(done.stdout)


@pytest.mark.slow
@pytest.mark.skipif(_chromium() is None, reason="needs chromium")
def test_in_chromium_the_tables_sort_by_a_clicked_header(out: Path, tmp_path: Path) -> None:
    html = (out / "report.html").read_text(encoding="utf-8")
    page = Page(html)
    cfg = page.table("configurations")
    col = cfg.header.index("best val acc")
    original = [row[col][0] for row in cfg.rows]
    lead = [float(v.split()[0]) for v in original]
    assert lead != sorted(lead) and lead != sorted(lead, reverse=True)  # else sorting would prove nothing
    as_loaded = _dom(out / "report.html")
    assert [t.section for t in as_loaded.tables] == [t.section for t in page.tables]
    # the script ran: it marks each table sortable (the file itself does not)
    assert all("sortable" not in t.cls.split() for t in page.tables)
    assert all("sortable" in t.cls.split() for t in as_loaded.tables)
    sorted_by: dict[int, list[str]] = {}
    for clicks in (1, 2, 3):
        script = ("<script>var th = document.querySelectorAll('#configurations thead th')"
                  f"[{col}]; for (var i = 0; i < {clicks}; i++) {{ th.click(); }}</script>")
        clicked = tmp_path / f"clicked{clicks}.html"
        clicked.write_text(html.replace("</body>", script + "\n</body>"), encoding="utf-8")
        sorted_by[clicks] = [row[col][0] for row in _dom(clicked).table("configurations").rows]
    assert [float(v.split()[0]) for v in sorted_by[1]] == sorted(lead)
    assert [float(v.split()[0]) for v in sorted_by[2]] == sorted(lead, reverse=True)
    assert sorted_by[3] == original  # the third click restores the report's order


@pytest.mark.slow
@pytest.mark.skipif(_chromium() is None, reason="needs chromium")
def test_in_chromium_the_page_renders(out: Path, tmp_path: Path) -> None:
    shot = tmp_path / "page.png"
    subprocess.run([_chromium() or "chromium", "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                    f"--screenshot={shot}", "--window-size=1400,3000", (out / "report.html").as_uri()],
                   capture_output=True, timeout=120, check=True)
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 20_000


# A tiny grid at lr 1 without warmup: every run's loss explodes within 3 steps (the divergence detector stops it).
FAILING = {"model.lr": 1.0, "model.warmup": False, "telemetry.every_n_steps": 1, "trainer.limit_train_batches": 4}
# Run once the page has loaded: each image's decoded width, and where the failures section and its figure sit.
MEASURE = """<script>window.addEventListener("load", function () {
  document.querySelectorAll("img").forEach(function (img) { img.setAttribute("data-width", img.naturalWidth); });
  var top = function (el) { return Math.round(el.getBoundingClientRect().top + window.scrollY); };
  document.body.setAttribute("data-failures-top", top(document.getElementById("failures")));
  document.body.setAttribute("data-count-top", top(document.querySelector("#failures p.count")));
});</script>"""
WINDOW = (1400, 1000)  # a laptop's browser window: what a reader sees before scrolling or clicking


@pytest.fixture(scope="module")
def failing_sweep(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``stability sweep`` of a grid that fails: norm {layernorm, centernorm} x seeds {0, 1} at lr 1, no warmup."""
    from sweep_helpers import TINY, run_sweep, write_grid

    folder = tmp_path_factory.mktemp("failing")
    grid = write_grid(folder, "fails", {"overrides": TINY | FAILING,
                                        "axes": {"model.vit.norm": ["layernorm", "centernorm"]}, "seeds": [0, 1]})
    result = run_sweep([str(grid)], folder / "out")
    assert result.rc == 0, result.stdout + result.stderr
    return result.out


def _keep(shot: Path) -> None:
    """Copy a screenshot to ``STABILITY_SCREENSHOTS`` when it is set (to look at it)."""
    import os

    if os.environ.get("STABILITY_SCREENSHOTS"):
        target = Path(os.environ["STABILITY_SCREENSHOTS"])
        target.mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, target / shot.name)


@pytest.mark.slow
@pytest.mark.skipif(_chromium() is None, reason="needs chromium")
def test_in_chromium_a_failing_sweep_shows_every_failure_without_a_click(failing_sweep: Path, tmp_path: Path) -> None:
    """The report of a real sweep that diverges, in a real browser: the failures section is on the first screen,
    lists every run with the step it stopped at (within 3), and its telemetry figure decodes (~40 s)."""
    import re

    from sweep_helpers import summaries

    records = summaries(failing_sweep)
    assert len(records) == 4 and {r["status"] for r in records.values()} <= {"diverged", "collapsed"}
    assert all(r["diverged_step"] <= 3 for r in records.values() if r["status"] == "diverged")
    out = tmp_path / "report"
    assert main([str(failing_sweep), "--out", str(out), "--format", "md,html"]) == 0
    html = (out / "report.html").read_text(encoding="utf-8")
    measured = tmp_path / "measured.html"
    measured.write_text(html.replace("</body>", MEASURE + "\n</body>"), encoding="utf-8")
    dom_text = subprocess.run([_chromium() or "chromium", "--headless", "--no-sandbox", "--disable-gpu", "--dump-dom",
                               f"--window-size={WINDOW[0]},{WINDOW[1]}", measured.as_uri()], capture_output=True,
                              text=True, timeout=120, check=True).stdout
    dom = Page(dom_text)
    assert dom.errors == [] and dom.sections[0] == "failures"  # no claims in this grid: failures come first
    table = dom.table("failures")
    col = {name: table.header.index(name) for name in ("run", "status", "stopped at step", "why")}
    listed = {row[col["run"]][0]: (row[col["status"]][0], int(row[col["stopped at step"]][0]), row[col["why"]][0])
              for row in table.rows}
    assert listed == {name: (r["status"], r["diverged_step"], r["divergence_reason"]) if r["status"] == "diverged"
                      else (r["status"], r["steps"] - 1, r["collapse_reason"]) for name, r in records.items()}
    assert f"{len(records)} of {len(records)} runs failed" in dom_text
    body = re.search(r'<body[^>]*data-failures-top="(\d+)"[^>]*data-count-top="(\d+)"', dom_text)
    assert body, "the measuring script did not run"
    assert int(body.group(2)) < WINDOW[1] - 100  # the count line is on the first screen
    widths = dict(re.findall(r'<img[^>]*alt="([^"]+)"[^>]*data-width="(\d+)"', dom_text))
    assert int(widths["failure_telemetry"]) > 1000  # decoded, not a broken image
    shot = tmp_path / "report_failures.png"
    subprocess.run([_chromium() or "chromium", "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                    f"--screenshot={shot}", "--window-size=1400,2200", (out / "report.html").as_uri()],
                   capture_output=True, timeout=120, check=True)
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 50_000
    _keep(shot)


def test_every_table_has_a_navigation_label() -> None:
    from stability.report.formatting import TITLES
    from stability.report.html import SHORT_TITLES

    assert set(SHORT_TITLES) == set(TITLES)
