"""Shared pytest fixtures. Expensive things (a real sweep) run once per session and are shared."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from sweep_helpers import SMOKE, SweepResult, run_sweep


@pytest.fixture(scope="session", autouse=True)
def one_thread() -> Iterator[None]:
    """Tests use tiny tensors: one thread is fastest, and on a busy machine OpenMP's spin-waiting threads
    make two threads up to 25x slower. (Sweep workers are separate processes with their own setting.)
    Session-wide, before any other fixture: runs compared for bit-identical numbers must use the same thread
    count (a different count changes the order of floating-point reductions)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def smoke_sweep(tmp_path_factory: pytest.TempPathFactory) -> SweepResult:
    """``stability sweep ablations/smoke.yaml`` run once: 4 tiny runs (stem x norm) with real workers.

    The result's ``out`` is a finished sweep folder (plan.json + 4 run folders); treat it as read-only.
    """
    out: Path = tmp_path_factory.mktemp("smoke_sweep") / "smoke"
    return run_sweep([str(SMOKE)], out)
