"""The failures section (stability.report.failures) on fabricated sweeps in the real record format.

The sweep: norm {layernorm, centernorm} x lr {1e-3, 1e-2} x seed {0, 1}, of which five runs fail in every way a
run can: two diverge at step 20 (one with the newer summary's ``failure`` record, one without: an older record),
one collapses (its failure marker at step 37), one raises after logging 40 steps and one raises before logging
anything. Every failed run must be listed in report.md and report.html with its step and reason, in
configuration, lr, seed order, and the telemetry figure must be written and shown inside the section.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import fabricate as fab
import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure
from test_report_html import NORM_CLAIM, Page

from stability.record.files import COLLAPSED, RunSummary, load_summary
from stability.report import Report, build_report, main
from stability.report.failures import PROBES, count_line, failure_record, failures_table, window_curves
from stability.report.formatting import NOT_MEASURED, TITLES, fmt_measured, format_runs

COLLAPSE_REASON = "last epoch's mean training loss 2.290 is still >= 0.9 x the initial loss 2.303 (fabricated)"
ERROR = "RuntimeError: CUDA out of memory (fabricated)"
# The newer summary's failure record (stability.training.telemetry.StabilityTelemetry.failure_at): the failing
# step's own values, non-finite ones null and listed, and a window of the last steps and probes.
FAILURE = {
    "step": 20, "probe": "replayed", "loss": None, "log_z": 9.5, "lr": 0.01, "grad_norm": 55.0,
    "max_attn_logit": 41.5, "attn_max_logit": [41.5, 30.0], "non_finite": ["loss"],
    "window": [{"step": s, "loss": 2.0 * (s - 16), "grad_norm": 5.0 * (s - 16), "log_z": 1.0, "lr": 0.01}
               for s in range(17, 20)] + [{"step": 20, "loss": None, "grad_norm": 55.0, "non_finite": ["loss"]}],
    "probes": [{"step": 15, "max_attn_logit": 12.0}, {"step": 20, "max_attn_logit": 41.5}],
}


def write_failures_sweep(root: Path) -> Path:
    """The sweep of the module docstring, with the claim of test_report_html (so claims come first)."""
    kinds = {("layernorm", 1e-2, 0): "diverged", ("layernorm", 1e-2, 1): "diverged",
             ("centernorm", 1e-2, 1): "collapsed", ("layernorm", 1e-3, 1): "failed",
             ("centernorm", 1e-3, 0): "failed_silent"}
    for i, (norm, lr, seed) in enumerate(fab.FINISHED):
        kind = kinds.get((norm, lr, seed), "completed")
        run_dir = fab.write_run(root, norm, lr, seed, {"collapsed": "completed", "failed_silent": "failed"}
                                .get(kind, kind), f"{i:06x}")
        summary = load_summary(run_dir)
        assert summary is not None
        if kind == "collapsed":
            rewrite(run_dir, summary, status=COLLAPSED, collapse_reason=COLLAPSE_REASON)
            marker(run_dir, "Stability/collapsed", 37)
        if (norm, lr, seed) == ("layernorm", 1e-2, 0):
            rewrite(run_dir, summary, failure=FAILURE)
        if kind == "failed_silent":  # raised before its first step was logged
            for events in run_dir.glob("events.out.tfevents.*"):
                events.unlink()
            rewrite(run_dir, summary, steps=None)
    fab.write_claims(root, [NORM_CLAIM])
    return root


def rewrite(run_dir: Path, summary: RunSummary, **fields: object) -> None:
    RunSummary.from_dict({**summary.to_dict(), **fields}).write(run_dir)


def marker(run_dir: Path, tag: str, step: int) -> None:
    """A failure marker as the run's logger writes it: the scalar 1.0 at the step it was decided."""
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(str(run_dir))
    writer.add_scalar(tag, 1.0, step, walltime=1.8e9)
    writer.close()


def run_of(report: Report, norm: str, lr: float, seed: int) -> str:
    runs = report.sweep.runs
    hit = runs[(runs["norm"] == norm) & np.isclose(runs["lr"], lr) & (runs["seed"] == seed)]
    assert len(hit) == 1
    return str(hit.index[0])


@pytest.fixture(scope="module")
def sweep_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_failures_sweep(tmp_path_factory.mktemp("failures"))


@pytest.fixture(scope="module")
def report(sweep_dir: Path) -> Report:
    return build_report(sweep_dir)


@pytest.fixture(scope="module")
def out(sweep_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("report")
    assert main([str(sweep_dir), "--out", str(out), "--format", "md,html,csv"]) == 0
    return out


# The failed runs in the order the section lists them (configuration, baseline first; lr; seed), with the step
# each stopped at and its reason.
EXPECTED = [
    (("layernorm", 1e-3, 1), "failed", "39", ERROR),
    (("layernorm", 1e-2, 0), "diverged", "20", "non-finite training loss (nan) at step 20"),
    (("layernorm", 1e-2, 1), "diverged", "20", "non-finite training loss (nan) at step 20"),
    (("centernorm", 1e-3, 0), "failed", "unknown", ERROR),
    (("centernorm", 1e-2, 1), "collapsed", "37", COLLAPSE_REASON),
]


def md_section(md: str, title: str) -> str:
    """The text of one ``## title`` section of report.md, up to the next heading."""
    start = md.index(f"## {title}\n")
    end = md.find("\n## ", start + 3)
    return md[start:end if end > 0 else len(md)]


def md_rows(section: str) -> list[dict[str, str]]:
    """A Markdown table's rows as header -> cell."""
    lines = [line for line in section.splitlines() if line.startswith("|")]
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    return [dict(zip(header, (c.strip() for c in line.strip("|").split("|")), strict=True)) for line in lines[2:]]


# ------------------------------------------------------------------------------------------------ report.md
def test_report_md_lists_every_failed_run_right_after_the_claims(report: Report, out: Path) -> None:
    md = (out / "report.md").read_text()
    headings = [line[3:] for line in md.splitlines() if line.startswith("## ")]
    assert headings[:4] == [TITLES["claims"], TITLES["failures"], TITLES["failure_map"], TITLES["configurations"]]
    section = md_section(md, TITLES["failures"])
    assert section.splitlines()[2] == "5 of 8 runs failed (2 diverged, 1 collapsed, 2 raised an error)."
    rows = md_rows(section)
    assert [(r["run"], r["status"], r["stopped at step"], r["why"]) for r in rows] == [
        (run_of(report, *key), status, step, why) for key, status, step, why in EXPECTED]
    assert [(r["configuration"], r["lr"], r["seed"]) for r in rows] == [
        ("baseline", "0.001", "1"), ("baseline", "0.01", "0"), ("baseline", "0.01", "1"),
        ("norm=centernorm", "0.001", "0"), ("norm=centernorm", "0.01", "1")]
    # the pattern: both layernorm runs at lr 0.01 failed, one of two elsewhere
    assert [r["failed in cell"] for r in rows] == ["1/2", "2/2", "2/2", "1/2", "1/2"]
    assert "![failure_telemetry](plots/failure_telemetry.png)" in section
    assert "failure_telemetry" not in md_section(md, "Plots")  # shown once, in its section
    assert (out / "failures.csv").exists()


def test_stability_report_prints_the_failures_after_the_claims(sweep_dir: Path, tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    assert main([str(sweep_dir), "--out", str(tmp_path), "--format", "md", "--no-plots"]) == 0
    printed = capsys.readouterr().out
    at = printed.index(f"# {TITLES['failures']}\n\n5 of 8 runs failed (2 diverged, 1 collapsed, 2 raised an error).")
    end = printed.index(f"# {TITLES['configurations']}")
    assert printed.index(f"# {TITLES['claims']}") < at < end
    assert printed[at:end].count("| diverged ") == 2 and COLLAPSE_REASON in printed[at:end]


def test_the_last_telemetry_comes_from_the_failure_record_else_the_curves(report: Report) -> None:
    text = report.text["failures"].set_index("run")
    with_record = text.loc[run_of(report, "layernorm", 1e-2, 0)]
    # the record's failing step: loss non-finite, gradient norm and attention measured at the step itself
    assert (with_record["last loss"], with_record["last grad norm"], with_record["last max attn logit"]) == \
        ("non-finite", "55.0", "41.5")
    # an older record: the curves, whose last step (the diverging one) logged NaN everywhere
    older = text.loc[run_of(report, "layernorm", 1e-2, 1)]
    assert (older["last loss"], older["last grad norm"], older["last max attn logit"]) == ("non-finite",) * 3
    # a run that raised at step 39: attention sampled every 5 steps, so its last one is older, and says so
    raised = text.loc[run_of(report, "layernorm", 1e-3, 1)]
    assert raised["last max attn logit"].endswith("(step 35)") and "(step" not in raised["last loss"]
    assert float(raised["last loss"]) == pytest.approx(fab.loss_curve("layernorm", 1e-3, 1)[39], abs=1e-3)
    # one that raised before logging anything: never measured, and the gaps name it
    silent = run_of(report, "centernorm", 1e-3, 0)
    assert (text.loc[silent, "last loss"], text.loc[silent, "last grad norm"],
            text.loc[silent, "last max attn logit"]) == (NOT_MEASURED,) * 3
    assert any(g.startswith("failure telemetry: 1 of 5 failed run(s)") and silent in g for g in report.gaps)


def test_a_sweep_without_failures_says_so_in_one_line(tmp_path: Path) -> None:
    for i, (norm, lr, seed) in enumerate(list(fab.FINISHED)[:4]):  # the four runs at lr 1e-3: all completed
        fab.write_run(tmp_path / "ok", norm, lr, seed, "completed", f"{i:06x}")
    out = tmp_path / "report"
    assert main([str(tmp_path / "ok"), "--out", str(out), "--format", "md,html,csv"]) == 0
    section = md_section((out / "report.md").read_text(), TITLES["failures"])
    lines = [line for line in section.splitlines()[1:] if line]
    assert lines == ["No run failed: none of the 4 runs that ended diverged, collapsed or raised."]
    page = Page((out / "report.html").read_text(encoding="utf-8"))
    assert page.errors == [] and page.sections[0] == "failures" and "failures" not in [t.section for t in page.tables]
    html = (out / "report.html").read_text(encoding="utf-8")
    assert '<p class="count none-failed">No run failed: none of the 4 runs' in html
    assert "(empty)" not in html[html.index('<section id="failures">'):html.index('<section id="configurations">')]
    assert not list((out / "plots").glob("failure_telemetry*"))


def test_count_line_counts_the_runs_that_ended() -> None:
    runs = pd.DataFrame({"status": ["completed", "diverged", "collapsed", "failed", "running", "pending"]})
    assert count_line(runs) == "3 of 4 runs failed (1 diverged, 1 collapsed, 1 raised an error); 2 more have not ended."
    assert count_line(runs.iloc[:1]) == "No run failed: none of the 1 runs that ended diverged, collapsed or raised."
    assert count_line(runs.iloc[4:]) == "No run has ended yet (2 not ended), so none has failed."


# ---------------------------------------------------------------------------------------------- report.html
def test_report_html_shows_the_section_its_count_and_its_figure(report: Report, out: Path) -> None:
    html = (out / "report.html").read_text(encoding="utf-8")
    page = Page(html)
    assert page.errors == [] and page.sections[:4] == ["claims", "failures", "failure_map", "configurations"]
    table = page.table("failures")
    assert table.header == list(report.text["failures"].columns)
    assert [[cell for cell, _ in row] for row in table.rows] == report.text["failures"].astype(str).values.tolist()
    assert [row[table.header.index("stopped at step")][0] for row in table.rows] == [e[2] for e in EXPECTED]
    assert '<p class="count failed">5 of 8 runs failed (2 diverged, 1 collapsed, 2 raised an error).</p>' in html
    assert '<a href="#failures" class="bad">Failures (5)</a>' in html
    section = html[html.index('<section id="failures">'):html.index('<section id="failure_map">')]
    assert section.count("<img ") == 1 and 'alt="failure_telemetry"' in section
    section = html[html.index('<section id="failure_map">'):html.index('<section id="configurations">')]
    assert section.count("<img ") == 1 and 'alt="failure_map"' in section
    assert 'alt="failure_telemetry"' not in html[html.index('<section id="plots">'):]


# ---------------------------------------------------------------------------------------------- the figure
def lines_with(fig: Figure, gid: str) -> list:
    return [line for ax in fig.axes for line in ax.lines if line.get_gid() == gid]


def test_the_figure_marks_each_failure_and_the_non_finite_values(report: Report, out: Path) -> None:
    from stability.report.figures import failure_telemetry

    assert (out / "plots" / "failure_telemetry.png").stat().st_size > 10_000
    [(stem, fig)] = failure_telemetry(report)
    assert stem == "failure_telemetry"
    assert [ax.get_title() for ax in fig.axes] == [p.title for p in PROBES]
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    drawn = [f"{c}, lr {lr}, seed {s}: {st}" + (f" at step {step}" if step != "unknown" else "") for (c, lr, s), (_,
             st, step, _) in zip([("baseline", "0.001", "1"), ("baseline", "0.01", "0"), ("baseline", "0.01", "1"),
                                  ("norm=centernorm", "0.01", "1")], [e for e in EXPECTED if e[2] != "unknown"],
                                 strict=True)]
    assert sorted(label for label in labels if "lr " in label) == sorted(drawn)  # the silent run: nothing to draw
    steps = {float(line.get_xdata()[0]) for line in lines_with(fig, "failure-step")}
    assert steps == {39.0, 20.0, 37.0}
    assert len(lines_with(fig, "failure-step")) == 3 * 4  # each run's step, in each panel
    loss_panel = fig.axes[0]
    non_finite = [line for line in loss_panel.lines if line.get_gid() == "non-finite"]
    assert sorted(float(x) for line in non_finite for x in line.get_xdata()) == [20.0, 20.0]  # both divergences
    assert loss_panel.get_yscale() == "log"  # the exploding loss spans decades


def test_the_failure_window_stands_in_for_events_that_stop_short(tmp_path: Path) -> None:
    sweep = write_failures_sweep(tmp_path / "sweep")
    run = next(d for d in sweep.iterdir() if d.is_dir() and load_summary(d) and load_summary(d).failure)
    for events in run.glob("events.out.tfevents.*"):
        events.unlink()  # the crash lost the events, the summary's window survives
    report = build_report(sweep)
    mine = report.telemetry[report.telemetry["run"] == run.name]
    assert sorted(set(mine["tag"])) == ["failure/grad_norm", "failure/loss", "failure/max_attn_logit"]
    loss = mine[mine["tag"] == "failure/loss"].sort_values("step")
    assert loss["step"].tolist() == [17, 18, 19, 20] and math.isnan(loss["value"].iloc[-1])  # non-finite: NaN
    text = report.text["failures"].set_index("run").loc[run.name]
    assert (text["stopped at step"], text["last grad norm"]) == ("20", "55.0")
    assert not [g for g in report.gaps if g.startswith("failure telemetry") and run.name in g]


def test_failure_record_is_read_back_from_the_flattened_runs_table() -> None:
    row = pd.Series({"status": "diverged", "failure.step": 20.0, "failure.loss": None, "failure.grad_norm": 55.0,
                     "failure.non_finite": '["loss"]', "failure.window": json.dumps(FAILURE["window"]),
                     "failure.probes": json.dumps(FAILURE["probes"]), "other": 1})
    record = failure_record(row)
    assert record is not None and record["step"] == 20.0 and record["non_finite"] == ["loss"]
    assert record["probes"] == FAILURE["probes"] and "loss" not in record
    assert failure_record(pd.Series({"status": "diverged", "failure": None})) is None  # an older record
    curves = window_curves("r", record)
    logits = curves[curves["tag"] == "failure/max_attn_logit"]
    assert logits["step"].tolist() == [15, 20] and logits["value"].tolist() == [12.0, 41.5]


def test_more_failed_runs_than_a_figure_holds_are_faceted(tmp_path: Path) -> None:
    from stability.report.figures import failure_telemetry

    for i, (norm, seed) in enumerate((n, s) for n in ("layernorm", "centernorm") for s in range(5)):
        fab.write_run(tmp_path, norm, 1e-3, seed, "failed", f"{i:06x}")
    report = build_report(tmp_path)
    assert len(report.tables["failures"]) == 10
    figures = failure_telemetry(report)
    assert [stem for stem, _ in figures] == ["failure_telemetry", "failure_telemetry_2"]
    titles = [fig.get_suptitle() for _, fig in figures]
    assert [t.rsplit("(", 1)[-1] for t in titles] == ["norm=layernorm)", "norm=centernorm)"]
    per_figure = [len([t for t in fig.legends[0].get_texts() if "seed" in t.get_text()]) for _, fig in figures]
    assert per_figure == [5, 5]


def test_failures_table_of_a_sweep_without_failures_is_empty(tmp_path: Path) -> None:
    fab.write_run(tmp_path, "layernorm", 1e-3, 0, "completed", "000001")
    report = build_report(tmp_path)
    assert report.tables["failures"].empty and report.text["failures"].empty and report.telemetry.empty
    assert failures_table(report.sweep, report.runs, report.telemetry).columns[0] == "run"


# ------------------------------------------------------------------------------------------ "not measured"
def test_never_measured_telemetry_reads_not_measured(tmp_path: Path) -> None:
    for seed in range(2):  # layernorm measured its attention logits, centernorm never did (no probe step ran)
        fab.write_record(tmp_path, seed, max_attn_logit=12.0 + seed, max_grad_norm=3.0)
        fab.write_record(tmp_path, seed, norm="centernorm", max_attn_logit=None, max_grad_norm=None)
    report = build_report(tmp_path)
    cfg = report.text["configurations"].set_index("norm")
    assert cfg.loc["layernorm", "max attn logit"] == "12.5 ± 0.7"
    assert cfg.loc["centernorm", "max attn logit"] == NOT_MEASURED
    runs = format_runs(pd.DataFrame({"max_grad_norm": [3.0, math.nan], "max_attn_logit": [None, 0.0]}))
    assert runs["max_grad_norm"].tolist() == ["3.0", NOT_MEASURED]
    assert runs["max_attn_logit"].tolist() == [NOT_MEASURED, "0.0"]  # a measured 0 stays 0
    assert [fmt_measured(v, 1) for v in (math.nan, None, math.inf, 12.04, 3.2e7, "x")] == [
        NOT_MEASURED, NOT_MEASURED, "inf", "12.0", "3.2e+07", NOT_MEASURED]
    assert not re.search(r"\bnan\b", report.text["configurations"].to_string())
