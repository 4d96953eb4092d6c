"""The analysis: run records -> pandas, then the statistics and the verdicts (pure functions on DataFrames).

Nothing here draws or writes: the report (:mod:`stability.report`) formats what these functions compute,
and a notebook can call them on a sweep folder directly.

Modules, in the order data flows through them:
- :mod:`~stability.analysis.claims`: the claims a grid states, as data (parsed and checked at load);
- :mod:`~stability.analysis.results`: run folders (records, configs, TensorBoard events) -> DataFrames;
- :mod:`~stability.analysis.metrics`: loss-curve statistics, LR sensitivity, toggle effects and intervals;
- :mod:`~stability.analysis.intervals`: each metric kind's interval (t, Newcombe's for rates, the median's);
- :mod:`~stability.analysis.verdicts`: each claim checked over seeds: supported, contradicted, inconclusive.
"""
