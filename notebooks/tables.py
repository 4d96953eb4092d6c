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
# # Comparison tables from a sweep folder
#
# Regenerates every table of `stability report` from the run records of one sweep (`summary.json`,
# `config.yaml`, TensorBoard events) and writes them to `out_dir` (Markdown for reading, CSV for the
# numbers). Nothing is computed here: the notebook calls `stability.report`, so the numbers are the ones
# the CLI prints and the unit tests check. Run it with papermill to point it at another sweep (the README
# has the commands; jupytext turns this file into the notebook papermill reads):
#
#     jupytext --to ipynb -o - notebooks/tables.py | papermill - runs/digits/report/notebooks/tables.ipynb \
#         -p sweep_dir runs/digits -p out_dir runs/digits/report/notebooks/tables

# %%
from IPython.display import Markdown, display

from stability.report import TITLES, build_report, render_markdown, to_markdown, write_report

# %% tags=["parameters"]
sweep_dir = "runs/smoke"  # the folder `stability sweep` wrote (one sub-folder per run)
out_dir = "runs/smoke/report/notebooks/tables"  # where the tables go
formats = "md,csv"  # any of md, csv, tex

# %%
report = build_report(sweep_dir)
written = write_report(report, out_dir, formats.split(","), plots=False)
counts = report.sweep.runs["status"].value_counts()
display(Markdown(f"**{len(report.sweep.runs)} runs**: " + ", ".join(f"{n} {s}" for s, n in counts.items())
                 + "  \n" + "  \n".join(report.notes)))
print(f"wrote {len(written)} files to {out_dir}")

# %% [markdown]
# ## Claims and verdicts
# Each claim the grid file states, checked over independent seeds: the effect (treatment − control) is the
# mean over seeds of each seed's paired difference, with a 95% t-interval; the verdict says whether the whole
# interval clears the claim's minimal effect (stability.analysis.verdicts has the rules).

# %%
if "claims" in report.text:
    display(Markdown(to_markdown(report.text["claims"])))
else:
    display(Markdown("This sweep's grid file states no claims."))

# %% [markdown]
# ## Per configuration
# Mean ± std over seeds; `(n=1)` marks a cell with one run; `k/n` diverged (collapsed) counts the finished runs.

# %%
display(Markdown(to_markdown(report.text.get("configurations", report.text["runs"]))))

# %% [markdown]
# ## Does each trick help?
# "on − off" per learning rate over runs that differ in that toggle alone (same seed, same other axes): each
# seed's pairs are averaged, and the 95% t-interval is over the seeds; failures (diverged or collapsed) are
# counted over the same pairs.

# %%
if "effects" in report.text:
    display(Markdown(to_markdown(report.text["effects"])))

# %% [markdown]
# ## Learning-rate sensitivity, divergence, error distribution, spikes

# %%
for name in ("lr_sensitivity", "divergence", "edf", "spikes"):
    if name in report.text:
        display(Markdown(f"### {TITLES[name]}\n\n" + to_markdown(report.text[name])))

# %% [markdown]
# ## Gaps
# What this sweep cannot tell yet (runs not finished, comparisons without pairs, ...).

# %%
display(Markdown("\n".join(f"- {g}" for g in report.gaps) or "None."))

# %%
# The whole report as one document, as `stability report` writes it.
(report_md := render_markdown(report))[:300]
