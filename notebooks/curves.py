# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Divergence curves
#
# Which runs failed (diverged, collapsed or raised), when, and what the telemetry did just before: training loss
# per toggle and learning rate, then loss, gradient norm and maximum attention logit before each failure, the
# same figures as the report's failures section (Wortsman et al. 2023 saw attention-logit growth precede
# divergence). All loading and plotting is in
# `stability.analysis.results` and `stability.report.plots`; this notebook only chooses what to look at. The README has
# the papermill command that runs it on a sweep and keeps the executed notebook next to its figures.

#
# Figures are `matplotlib.figure.Figure` objects built without pyplot, which Jupyter does not display by
# itself: each cell shows the PNG it saved (`show`), so the executed notebook holds the same images as
# `out_dir`.

# %%
from pathlib import Path

from IPython.display import Image, Markdown, display

from stability.analysis.results import load_curves
from stability.report import build_report, plots, to_markdown
from stability.report.failures import count_line
from stability.report.figures import failure_telemetry

# %% tags=["parameters"]
sweep_dir = "runs/smoke"  # the folder `stability sweep` wrote
out_dir = "runs/smoke/report/notebooks/curves"  # figures and the failed-runs table go here
tags = ["train/loss", "train/grad_norm", "attn/max_logit/*"]  # tag names or shell patterns
window = 200  # steps shown before (and after) a failure

# %%
out = Path(out_dir)
out.mkdir(parents=True, exist_ok=True)


def show(fig, name: str) -> None:
    """Save ``fig`` as ``out/name.png`` and ``.pdf`` and display the PNG."""
    png, _ = plots.save(fig, out / name)
    display(Image(filename=str(png)))


report = build_report(sweep_dir)
sweep = report.sweep
curves = load_curves(sweep, tags=tags)
print(f"{len(sweep.runs)} runs, {curves['run'].nunique()} with curves")
print("tags:", ", ".join(sorted(curves["tag"].unique())))

# %% [markdown]
# ## Failed runs (the report's failures section)

# %%
failed = report.tables["failures"]
failed.to_csv(out / "failed_runs.csv", index=False)
display(Markdown(count_line(sweep.runs) + ("\n\n" + to_markdown(report.text["failures"]) if len(failed) else "")))

# %% [markdown]
# ## Training loss, coloured by each toggle that varies (one panel per learning rate)

# %%
finished = report.runs.loc[sweep.finished.index]
varying = [t for t in sweep.toggles if finished[t].astype(str).nunique() > 1] or [None]
for toggle in varying:
    show(plots.divergence_curves(finished, curves, toggle, title=sweep.path.name), f"loss_by_{toggle or 'run'}")

# %% [markdown]
# ## Telemetry before each failure (dashed line: the step the run stopped at)
# The report's figures (`plots.run_telemetry` through `failure_telemetry`): at most `plot_layout.MAX_LINES` runs
# per figure, `failure_telemetry.png`, then `failure_telemetry_2.png`, ...

# %%
for stem, fig in failure_telemetry(report, window=window):
    show(fig, stem)

# %% [markdown]
# ## Loss spikes (the steps behind the spike counts of the tables)

# %%
display(Markdown(to_markdown(report.text["spikes"]) if "spikes" in report.text else "No finished run."))
