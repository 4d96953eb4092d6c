"""``stability sweep --base CONFIG --axis KEY=V1,V2 --seeds ...``: a study without a grid file, and the base
configs shipped with the package (``stability:digits.yaml``), usable from a folder outside the checkout."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml
from sweep_helpers import BASE, ROOT, TINY

from stability.sweep.cli import main

AXES = {"model.vit.norm": ["layernorm", "rmsnorm"], "model.lr": [1e-3, 3e-3]}
QUICK = ["--base", str(BASE), "--axis", "model.vit.norm=layernorm,rmsnorm", "--axis", "model.lr=1e-3,3e-3",
         "--seeds", "0,1"]
SETS = [arg for key, value in TINY.items() for arg in ("--set", f"{key}={value}")]


def listed_runs(text: str) -> list[str]:
    """The run names a ``--dry-run`` lists, in plan order (lines ``<index>  <status>  <run name>``)."""
    return re.findall(r"^\s*\d+\s+\S+\s+(\S+)$", text, re.M)


def error_line(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    from stability.cli import main as stability

    assert stability(["sweep", *argv]) == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    return lines[0]


def test_quick_study_lists_the_runs_of_the_same_grid_file(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    grid = tmp_path / "same.yaml"
    grid.write_text(yaml.safe_dump({"base": [str(BASE)], "axes": AXES, "seeds": [0, 1]}, sort_keys=False))
    assert main([str(grid), "--dry-run", "--out", str(tmp_path / "a"), *SETS]) == 0
    from_file = listed_runs(capsys.readouterr().out)
    monkeypatch.chdir(tmp_path)
    assert main([*QUICK, "--dry-run", *SETS]) == 0
    out = capsys.readouterr().out
    assert len(from_file) == 8 and listed_runs(out) == from_file
    assert "8 runs -> runs/quick-norm-lr:" in out  # named after its axes
    assert "# Quick study: stability sweep --base" in out
    assert not (tmp_path / "runs").exists()


def test_plan_records_how_the_quick_study_was_defined(tmp_path: Path) -> None:
    from stability.sweep.cli import build_parser, load_spec
    from stability.sweep.plan import make_plan, plan_document

    args = build_parser().parse_args(QUICK)
    spec = load_spec(args)
    spec.seeds = [0, 1]
    for key, value in TINY.items():
        spec.overrides[key] = value
    document = json.loads(json.dumps(plan_document(spec, make_plan(spec), smoke=False)))
    assert document["grid"] is None and document["name"] == "quick-norm-lr"
    assert document["quick"] == {"base": [str(BASE)], "axes": AXES, "seeds": [0, 1],
                                 "command": "stability sweep " + " ".join(QUICK)}
    assert document["n_runs"] == 8


@pytest.mark.parametrize(("argv", "match"), [
    (["--axis", "model.lr"], r"--axis: got 'model\.lr'; give KEY=V1,V2,\.\.\."),
    (["--axis", "model.lr="], r"--axis: got 'model\.lr='; give KEY=V1,V2"),
    (["--axis", "model.lr=1e-3,,3e-3"], r"--axis model\.lr: '1e-3,,3e-3' is not a comma-separated list of YAML values"),
    (["--axis", "model.lr=[1e-3"], r"--axis model\.lr: '\[1e-3' is not a comma-separated list of YAML values"),
    (["--axis", "model.lr=1,2", "--axis", "model.lr=3"], r"--axis model\.lr: given twice"),
    (["--axis", "model.vit.norm=layernorm,centrenorm"], r"model\.vit\.norm: got 'centrenorm'; valid values"),
    (["--axis", "run_dir=a,b"], r"axes\.run_dir: the sweep names each run's folder itself"),
])
def test_bad_axis_is_one_error_line(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                    argv: list[str], match: str) -> None:
    line = error_line(capsys, ["--base", str(BASE), *argv, "--dry-run", "--out", str(tmp_path / "o"), *SETS])
    assert re.search(match, line), line
    assert not (tmp_path / "o").exists()


def test_grid_and_base_together_or_neither(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    grid = tmp_path / "g.yaml"
    grid.write_text(yaml.safe_dump({"base": [str(BASE)], "axes": AXES}))
    both = error_line(capsys, [str(grid), "--base", str(BASE), "--dry-run"])
    assert "give a grid file or --base CONFIG" in both and "got both" in both
    assert "got neither" in error_line(capsys, ["--dry-run"])
    assert "--axis: only for a quick study" in error_line(capsys, [str(grid), "--axis", "model.lr=1", "--dry-run"])
    missing = error_line(capsys, ["--base", str(tmp_path / "nope.yaml"), "--axis", "model.lr=1", "--dry-run"])
    assert "base: " in missing and "nope.yaml does not exist" in missing


# -- shipped base configs -------------------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(p.name for p in (ROOT / "ablations" / "base").glob("*.yaml")))
def test_shipped_configs_are_the_ablation_bases(name: str) -> None:
    """stability/configs/ is what a wheel ships; ablations/base/ is what grids and docs name: the same bytes."""
    shipped = ROOT / "stability" / "configs" / name
    assert shipped.read_bytes() == (ROOT / "ablations" / "base" / name).read_bytes()


def test_grid_outside_the_checkout_names_a_shipped_base(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    assert ROOT not in tmp_path.parents
    monkeypatch.chdir(tmp_path)
    Path("mine.yaml").write_text("# my trick\nbase: [stability:digits.yaml]\n"
                                 f"overrides: {yaml.safe_dump(TINY, default_flow_style=True)}"
                                 "axes: {model.vit.norm: [layernorm, rmsnorm]}\nseeds: [0]\n")
    assert main(["mine.yaml", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "2 runs -> runs/mine:" in out and len(listed_runs(out)) == 2
    assert not Path("runs").exists()
    Path("typo.yaml").write_text("base: [stability:digit.yaml]\naxes: {model.lr: [0.1]}\n")
    line = error_line(capsys, ["typo.yaml", "--dry-run"])
    assert "base: stability:digit.yaml is not a shipped config; valid: stability:digits.yaml" in line
