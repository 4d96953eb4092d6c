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
# Which runs diverged, when, and what the telemetry did just before: training loss per toggle and
# learning rate, then loss, gradient norm and maximum attention logit around each divergence step
# (Wortsman et al. 2023 saw attention-logit growth precede divergence). All loading and plotting is in
# `stability.results` and `stability.plots`; this notebook only chooses what to look at.

# %%
from pathlib import Path

from IPython.display import Markdown, display

from stability import plots
from stability.report import build_report, to_markdown
from stability.results import load_curves

# %% tags=["parameters"]
sweep_dir = "runs/smoke"  # the folder `stability sweep` wrote
out_dir = "reports/smoke/curves"  # figures and the diverged-runs table go here
tags = ["train/loss", "train/grad_norm", "attn/max_logit/*"]  # tag names or shell patterns
window = 200  # steps shown before (and after) a divergence

# %%
out = Path(out_dir)
out.mkdir(parents=True, exist_ok=True)
report = build_report(sweep_dir)
sweep = report.sweep
curves = load_curves(sweep, tags=tags)
print(f"{len(sweep.runs)} runs, {curves['run'].nunique()} with curves")
print("tags:", ", ".join(sorted(curves["tag"].unique())))

# %% [markdown]
# ## Diverged runs

# %%
columns = [c for c in ["run", "status", *sweep.config_columns, "seed", "diverged_step", "divergence_reason"]
           if c in report.runs]
diverged = report.runs.loc[report.runs["diverged"].astype(bool), columns]
diverged.to_csv(out / "diverged_runs.csv", index=False)
display(Markdown(to_markdown(diverged.astype(str)) if len(diverged) else "No run diverged."))

# %% [markdown]
# ## Training loss, coloured by each toggle that varies (one panel per learning rate)

# %%
finished = report.runs.loc[sweep.finished.index]
varying = [t for t in sweep.toggles if finished[t].astype(str).nunique() > 1] or [None]
for toggle in varying:
    fig = plots.divergence_curves(finished, curves, toggle, title=sweep.path.name)
    plots.save(fig, out / f"loss_by_{toggle or 'run'}")
    display(fig)

# %% [markdown]
# ## Telemetry around each divergence (dashed line: the divergence step)

# %%
if len(diverged):
    marks = {name: float(step) for name, step in diverged["diverged_step"].items()}
    fig = plots.run_telemetry(curves, list(diverged.index), mark=marks, window=window)
    plots.save(fig, out / "telemetry_diverged")
    display(fig)

# %% [markdown]
# ## Loss spikes (the steps behind the spike counts of the tables)

# %%
display(Markdown(to_markdown(report.text["spikes"]) if "spikes" in report.text else "No finished run."))
