"""``stability demo`` (what ``make demo`` runs): the default grid on digits, then its report.

Re-running it resumes: finished runs are kept, so a second ``make demo`` only rebuilds the report.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

GRID = Path(__file__).resolve().parents[1] / "ablations" / "digits.yaml"


def main(argv: list[str]) -> int:
    from stability import report
    from stability.sweep import cli as sweep_cli

    out = Path(argv[0]) if argv else Path("runs") / "digits"
    status = sweep_cli.main([str(GRID), "--out", str(out)])
    report_dir = out / "report"
    report_status = report.main([str(out), "--out", str(report_dir)])
    print()
    print_verdicts(report_dir / "claims.csv")
    for line in where_to_look(out, report_dir):
        print(line)
    return status or report_status


def where_to_look(out: Path, report_dir: Path) -> list[str]:
    """Where the demo's outputs are, one line each (every path exists once the demo has run)."""
    return [f"report:       {report_dir / 'report.html'} (open it in a browser; {report_dir / 'report.md'} as text)",
            f"tables:       {report_dir}/*.md, *.csv, *.tex",
            f"plots:        {report_dir / 'plots'}/*.png, *.pdf",
            f"run records:  {out}/<run>/summary.json, config.yaml",
            f"TensorBoard:  tensorboard --logdir {out}"]


def print_verdicts(claims_csv: Path) -> None:
    """The verdicts again, one line each, last on the screen (the report's tables scroll them away)."""
    if not claims_csv.is_file():
        return
    with claims_csv.open() as f:
        rows = list(csv.DictReader(f))
    print("Verdicts (effect = treatment - control over seeds [95% interval]: a mean [t] for accuracies, losses and "
          "logits, a difference of rates [Newcombe] for failure rates, a median [order statistics] for the largest "
          "stable lr):")
    for r in rows:
        effect, low, high = (float(r[k]) if r[k] else math.nan for k in ("effect", "low", "high"))
        at = f" ({r['setting']})"
        interval = f"{effect:+.3f} [{low:+.3f}, {high:+.3f}] {r['unit']}" if math.isfinite(low) else \
            (f"{effect:+.3f} {r['unit']}" if math.isfinite(effect) else "no paired runs")
        print(f"  {r['verdict'].upper():<13} {r['claim']}{at}: {interval}, seeds {r['seeds'] or '-'}")
        if r["verdict"] == "inconclusive":
            needed = r.get("seeds_needed") or ""
            more = f"; about {float(needed):.0f} seeds would settle it" if needed not in ("", "nan", "inf") else ""
            print(f"  {'':<13} why: {r['why']}{more}")
        elif r.get("verdict_holm") == "inconclusive":  # decided alone, not with the study's other tests
            print(f"  {'':<13} held together with the study's other claims (Holm): inconclusive "
                  f"(adjusted p = {float(r['p_holm']):.2g})")
    print()
