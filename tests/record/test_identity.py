"""The record wing (identity, files, status, progress, config files): a run's identity and record, without torch."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from stability.model.config import MODEL_TOGGLES
from stability.record.files import RECORDED, STATUSES, RecordError, RunSummary, load_summary, read_summary
from stability.record.identity import TOGGLES, baselines, config_hash, hparams_of, run_name, toggles_of


def test_importing_every_module_of_the_record_wing_imports_neither_torch_nor_lightning() -> None:
    code = ("import importlib, pkgutil, sys, stability.record as r\n"
            "names = [m.name for m in pkgutil.iter_modules(r.__path__, 'stability.record.')]\n"
            "assert len(names) >= 5, names\n"
            "[importlib.import_module(n) for n in names]\n"
            "print(sorted(m for m in ('torch', 'lightning', 'timm', 'pandas') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_toggles_are_the_model_literals_plus_the_warmup_recipe_toggle() -> None:
    assert list(TOGGLES) == [*MODEL_TOGGLES, "warmup"]
    for name, values in MODEL_TOGGLES.items():
        assert TOGGLES[name].values == values and TOGGLES[name].key == f"model.vit.{name}"
    assert TOGGLES["warmup"].values == (True, False) and TOGGLES["warmup"].key == "model.warmup"
    assert baselines()["warmup"] is True and baselines()["norm"] == MODEL_TOGGLES["norm"][0]


def _config(**vit: object) -> dict:
    base = {name: t.baseline for name, t in TOGGLES.items() if name != "warmup"}
    return {"seed_everything": 2, "model": {"vit": {**base, **vit, "embed_dim": 16}, "lr": 0.01, "warmup": False,
                                            "weight_decay": 0.05},
            "data": {"class_path": "stability.data.DigitsDataModule", "init_args": {"batch_size": 32}},
            "trainer": {"max_epochs": 3, "gradient_clip_val": None}}


def test_toggles_hparams_and_name_of_a_config() -> None:
    config = _config(stem="conv", attention="cosine")
    toggles = toggles_of(config)
    assert toggles["stem"] == "conv" and toggles["warmup"] is False and toggles["norm"] == "layernorm"
    hp = hparams_of(config)
    assert (hp["lr"], hp["seed"], hp["batch_size"], hp["data"]) == (0.01, 2, 32, "DigitsDataModule")
    assert hp["gradient_clip_val"] is None  # typed: None stays None, not the string "None"
    name = run_name(config)
    assert name == f"stem=conv,attention=cosine,warmup=off,lr=0.01,seed=2-{config_hash(config)}"
    assert run_name(config, ["model.weight_decay"], run_id="abc").startswith("stem=conv,attention=cosine,"
                                                                              "warmup=off,wd=0.05,lr=0.01")


def test_config_hash_ignores_the_run_folder_only() -> None:
    config = _config()
    assert config_hash({**config, "run_dir": "/a"}) == config_hash({**config, "run_dir": "/b"}) == config_hash(config)
    assert config_hash(_config(norm="centernorm")) != config_hash(config)


def test_summary_round_trip_keeps_order_and_unknown_keys(tmp_path: Path) -> None:
    summary = RunSummary(status="completed", run_name="r", run_id="abc", toggles={"norm": "layernorm"},
                         final_val_acc=0.9, extra={"added_later": 1})
    summary.write(tmp_path)
    data = json.loads((tmp_path / "summary.json").read_text())
    assert list(data)[:3] == ["status", "run_name", "run_id"] and list(data)[-1] == "added_later"
    assert load_summary(tmp_path) == summary
    assert not list(tmp_path.glob(".summary.json.*"))  # the temporary file was renamed, not left


@pytest.mark.parametrize(("text", "why"), [
    ('{"status": "done"}', "status 'done'"),
    ('{"status": "completed", "toggles": 5}', "toggles must be an object"),
    ("[1, 2]", "expected a JSON object"),
    ('{"status": "compl', "not valid JSON"),
])
def test_a_bad_summary_is_a_record_error_naming_the_file(tmp_path: Path, text: str, why: str) -> None:
    (tmp_path / "summary.json").write_text(text)
    with pytest.raises(RecordError, match=why) as info:
        load_summary(tmp_path)
    assert str(tmp_path / "summary.json") in str(info.value)
    assert read_summary(tmp_path) is None  # the forgiving reader: not finished


def test_statuses_are_one_set() -> None:
    assert set(RECORDED) < set(STATUSES) and len(set(STATUSES)) == len(STATUSES)
