"""The summary's ``failure`` record: written for diverged runs only, read back whole, absent from older records."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from stability.record.files import RecordError, RunSummary, load_summary

FAILURE = {"step": 2, "probe": "replayed", "loss": 24.8, "log_z": 9.6, "lr": 1.0, "grad_norm": 32.9,
           "max_attn_logit": 13.2, "attn_max_logit": [4.1, 13.2], "attn_entropy": [2.7, 0.4],
           "grad_norm_blocks": [20.1, 11.0], "update_ratio_blocks": [0.6, 0.5],
           "window": [{"step": 1, "loss": 9.1, "grad_norm": 18.8, "log_z": 3.8, "lr": 1.0},
                      {"step": 2, "loss": 24.8, "grad_norm": 32.9, "log_z": 9.6, "lr": 1.0}],
           "probes": [{"step": 2, "max_attn_logit": 13.2}]}


def test_a_diverged_run_writes_its_failure_record_and_reads_it_back(tmp_path: Path) -> None:
    summary = RunSummary(status="diverged", run_name="r", run_id="abc", diverged_step=2, failure=FAILURE)
    summary.write(tmp_path)
    data = json.loads((tmp_path / "summary.json").read_text())
    assert data["failure"] == FAILURE
    assert load_summary(tmp_path) == summary


def test_a_run_without_a_failure_writes_no_failure_key(tmp_path: Path) -> None:
    """Records of runs that did not diverge stay byte for byte what they were before the field existed."""
    summary = RunSummary(status="collapsed", run_name="r", run_id="abc", max_grad_norm=1.4)
    summary.write(tmp_path)
    text = (tmp_path / "summary.json").read_text()
    assert "failure" not in json.loads(text)
    assert load_summary(tmp_path) == summary and load_summary(tmp_path).failure is None
    assert "extra" not in json.loads(text)


def test_an_older_record_without_the_field_still_loads(tmp_path: Path) -> None:
    (tmp_path / "summary.json").write_text(json.dumps({"status": "diverged", "run_name": "r", "run_id": "abc",
                                                       "diverged_step": 3, "max_grad_norm": 0.0}))
    summary = load_summary(tmp_path)
    assert summary.failure is None and summary.diverged_step == 3 and not summary.extra


def test_a_failure_that_is_not_an_object_is_a_record_error(tmp_path: Path) -> None:
    (tmp_path / "summary.json").write_text('{"status": "diverged", "failure": [1, 2]}')
    with pytest.raises(RecordError, match="failure must be an object"):
        load_summary(tmp_path)
