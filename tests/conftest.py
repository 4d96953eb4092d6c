"""Shared pytest fixtures. Expensive things (a real sweep) run once per session and are shared."""

from __future__ import annotations

from pathlib import Path

import pytest
from sweep_helpers import SMOKE, SweepResult, run_sweep


@pytest.fixture(scope="session")
def smoke_sweep(tmp_path_factory: pytest.TempPathFactory) -> SweepResult:
    """``stability sweep ablations/smoke.yaml`` run once: 4 tiny runs (stem x norm) with real workers.

    The result's ``out`` is a finished sweep folder (plan.json + 4 run folders); treat it as read-only.
    """
    out: Path = tmp_path_factory.mktemp("smoke_sweep") / "smoke"
    return run_sweep([str(SMOKE)], out)
