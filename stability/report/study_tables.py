"""The tables a study's claims get: verdicts (or, after ``--settle``, their sequential verdicts), the stability
edges an ``--edge-search`` found, and robust summaries over many configurations.

Each reads what the sweep folder holds besides its runs: ``settle.json`` (:mod:`stability.sweep.settle`) and
``edges.json`` (:mod:`stability.sweep.edge_search`); an unreadable one is a gap, and the plain verdicts stand.
"""

from __future__ import annotations

import pandas as pd

from stability.analysis.results import Sweep
from stability.analysis.sequential import settled_table
from stability.analysis.verdicts import claims_table
from stability.record.files import RecordError
from stability.report.claims_text import format_claims
from stability.report.robust_table import format_robust, robust_table
from stability.report.tables import ReportOptions
from stability.sweep.edge_search import EDGE_METRIC, EDGES, edge_table, read_edges
from stability.sweep.settle import load_rows


def study_tables(sweep: Sweep, finished: pd.DataFrame, options: ReportOptions,
                 gaps: list[str]) -> tuple[dict[str, pd.DataFrame], dict[str, pd.DataFrame]]:
    """(numeric tables, their text) for ``claims``, ``edges`` and ``robust``, where the sweep has them."""
    tables: dict[str, pd.DataFrame] = {}
    if sweep.claims:
        settled = None
        try:
            settled = load_rows(sweep.path, sweep.claims, finished, sweep.config_columns)
        except RecordError as error:
            gaps.append(f"settled verdicts: {error}; the claims table shows the fixed-seed verdicts")
        tables["claims"] = settled_table(settled, 1 - options.confidence) if settled else \
            claims_table(sweep.claims, finished, sweep.config_columns, options.confidence)
    if (sweep.path / EDGES).exists():
        try:
            state = read_edges(sweep.path)
        except RecordError as error:
            gaps.append(f"stability edges: {error}")
        else:
            searched = [c for c in sweep.claims if c.claim in state.get("claims", []) and c.metric == EDGE_METRIC]
            tables["edges"] = edge_table(searched, finished, state)
    robust = robust_table(sweep)
    if robust is not None:
        tables["robust"] = robust
    text = {"claims": format_claims(tables["claims"])} if "claims" in tables else {}
    if "edges" in tables:
        text["edges"] = tables["edges"]
    if "robust" in tables:
        text["robust"] = format_robust(tables["robust"])
    return tables, text
