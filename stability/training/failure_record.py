"""The pieces of a diverged run's ``failure`` record: one step's cheap values, one probe's values, JSON-safe
numbers, and replaying a step's forward with the random state it started from.

:class:`stability.training.telemetry.StabilityTelemetry` keeps the windows and decides when to probe; this
module holds what it records and how it replays, so the callback reads as the order of events in a step.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from typing import Any

import lightning as L
import torch

PROBE_KEYS = ("max_attn_logit", "attn_max_logit", "attn_entropy", "grad_norm_blocks", "update_ratio_blocks")


def step_values_at(pl_module: L.LightningModule, step: int, grad_norm: float | None) -> dict[str, Any]:
    """One step's cheap values for the window; the module's tensors are kept as they are (no device sync)."""
    values = getattr(pl_module, "step_values", {})
    return {"step": step, "loss": values.get("loss"), "grad_norm": grad_norm, "log_z": values.get("log_z"),
            "lr": values.get("lr")}


def probe_record(step: int, metrics: dict[str, float], blocks: int, layers: int) -> dict[str, Any]:
    """A probe's values (its TensorBoard metrics) as the failure record keeps them: lists per block and layer,
    None where a block or layer was not measured."""
    def per(prefix: str, n: int) -> list[float | None]:
        return [metrics.get(f"{prefix}_{i}") for i in range(n)]

    attn = per("attn/max_logit/layer", layers)
    finite = [v for v in attn if v is not None and math.isfinite(v)]
    return {"step": step, "max_attn_logit": max(finite, default=None), "attn_max_logit": attn,
            "attn_entropy": per("attn/entropy/layer", layers), "grad_norm_blocks": per("grad_norm/block", blocks),
            "update_ratio_blocks": per("update_ratio/block", blocks)}


def json_values(values: dict[str, Any]) -> dict[str, Any]:
    """``values`` with tensors read as floats and non-finite numbers as None; the keys of non-finite scalars are
    listed under ``non_finite`` (when there are any), so a NaN loss does not read as one never measured."""
    out: dict[str, Any] = {}
    non_finite = []
    for key, value in values.items():
        if isinstance(value, list):
            out[key] = [finite_or_none(v) for v in value]
            continue
        out[key] = finite_or_none(value)
        if value is not None and out[key] is None:
            non_finite.append(key)
    if non_finite:
        out["non_finite"] = non_finite
    return out


def finite_or_none(value: Any) -> Any:
    """A number as a finite float (int for the step), None for NaN, infinities and None."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, int):
        return value
    value = float(value)
    return value if math.isfinite(value) else None


# -- replaying a step's forward ---------------------------------------------------------------------------------
RngState = tuple[torch.Tensor, torch.Tensor | None, torch.device]  # CPU, CUDA (None off CUDA), device


def rng_state(device: torch.device) -> RngState:
    """The random generators' state before a step's forward: a copy, nothing drawn."""
    cuda = torch.cuda.get_rng_state(device) if device.type == "cuda" else None
    return torch.get_rng_state(), cuda, device


@contextlib.contextmanager
def replayed_rng(state: RngState) -> Iterator[None]:
    """Draws inside are the ones made from ``state``; the generators are put back afterwards (torch's fork_rng)."""
    cpu, cuda, device = state
    with torch.random.fork_rng(devices=[device] if cuda is not None else []):
        torch.set_rng_state(cpu)
        if cuda is not None:
            torch.cuda.set_rng_state(cuda, device)
        yield


def batch_images(batch: Any) -> torch.Tensor | None:
    """The images of an ``(images, labels)`` batch; None for anything else."""
    if isinstance(batch, (tuple, list)) and batch and isinstance(batch[0], torch.Tensor):
        return batch[0]
    return None
