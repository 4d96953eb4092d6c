"""The analysis: run records -> pandas, then the statistics and the verdicts (pure functions on DataFrames).

Nothing here draws or writes: the report (:mod:`stability.report`) formats what these functions compute,
and a notebook can call them on a sweep folder directly.

Modules, in the order data flows through them:
- :mod:`~stability.analysis.claims`: the claims a grid states, as data (parsed and checked at load);
- :mod:`~stability.analysis.results`: run folders (records, configs, TensorBoard events) -> DataFrames;
- :mod:`~stability.analysis.metrics`: loss-curve statistics, LR sensitivity, toggle effects and intervals;
- :mod:`~stability.analysis.intervals`: each metric kind's interval (t, Newcombe's for rates, the median's);
- :mod:`~stability.analysis.grid_metrics`: a metric over the lr grid per seed (largest stable lr, LR sensitivity);
- :mod:`~stability.analysis.decisions`: p-values (the inverted interval), equivalence by two one-sided tests,
  seeds needed to settle a verdict, Holm's correction over a study;
- :mod:`~stability.analysis.verdicts`: each claim checked over seeds: supported, contradicted, equivalent,
  inconclusive, and the study's verdicts held together;
- :mod:`~stability.analysis.sequential`: verdicts looked at again as seeds are added (alpha spending);
- :mod:`~stability.analysis.robust`: interquartile means, stratified-bootstrap intervals, probability of
  improvement over many configurations.
"""
