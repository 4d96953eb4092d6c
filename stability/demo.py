"""``stability demo`` (what ``make demo`` runs): the default grid on digits, then its report.

Re-running it resumes: finished runs are kept, so a second ``make demo`` only rebuilds the report.
"""

from __future__ import annotations

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
    print(f"run records:  {out}/<run>/summary.json, config.yaml")
    print(f"tables:       {report_dir}/*.md, *.csv, *.tex")
    print(f"plots:        {report_dir}/*.png, *.pdf")
    print(f"TensorBoard:  tensorboard --logdir {out}")
    return status or report_status
