"""A researcher's own trick, from their own module: the README's worked example run exactly as written, a user
module with a norm and an attention in a real 2-worker sweep, the one-line error for an unknown name, and an
entry point declared by a real (fabricated) installed distribution.

The commands run in this process through ``stability.cli.main``; a sweep's workers are real processes, which
find the user's module through ``PYTHONPATH`` (set here as a shell's ``PYTHONPATH=.`` would) and the working
directory, as they would for the user.
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from stability.cli import main
from stability.model import VisionTransformer, ViTConfig, registry
from stability.record.identity import TOGGLES

ROOT = Path(__file__).resolve().parents[2]
SECTION = "## Test your own trick"
BASE = ROOT / "ablations" / "base" / "digits.yaml"
TINY = ["--model.vit.embed_dim", "16", "--model.vit.depth", "1", "--model.vit.num_heads", "2",
        "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "2", "--trainer.limit_val_batches", "1",
        "--trainer.limit_test_batches", "1"]


@pytest.fixture
def user_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty folder of the user's, the working directory, on ``PYTHONPATH`` and ``sys.path`` (as
    ``PYTHONPATH=.`` makes it); the user's modules are forgotten afterwards."""
    folder = tmp_path / "mytrick"
    folder.mkdir()
    monkeypatch.chdir(folder)
    monkeypatch.setenv("PYTHONPATH", str(folder))
    monkeypatch.syspath_prepend(str(folder))
    before = set(sys.modules)
    yield folder
    for name in set(sys.modules) - before:
        if name.split(".")[0] in ("mylab", "ourlab", "eplab"):
            del sys.modules[name]


def readme_blocks() -> list[tuple[str, str]]:
    """(language, code) of every fenced block of the README's section on one's own trick, in order."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert SECTION in text, f"README.md has no section {SECTION!r}"
    section = text.split(SECTION, 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```(\w+)\n(.*?)```", section, flags=re.DOTALL)


def run_line(line: str, folder: Path) -> int:
    """One README shell line: ``[PYTHONPATH=.] stability ...`` in this process, anything else in a shell."""
    words = shlex.split(line, comments=True)
    if words and words[0] == "PYTHONPATH=.":
        words = words[1:]  # the fixture put the folder on PYTHONPATH and sys.path
    if words and words[0] == "stability":
        return main(words[1:])
    return subprocess.run(line, shell=True, cwd=folder, env={"PATH": "/usr/bin:/bin", "STABILITY": str(ROOT)},
                          check=False).returncode


def test_readme_example_runs_as_written(user_folder: Path, capsys: pytest.CaptureFixture[str]) -> None:
    blocks = readme_blocks()
    assert [lang for lang, _ in blocks] == ["python", "yaml", "bash"]
    for _, code in blocks[:2]:  # each file's block starts with a comment naming it: "# mylab/norms.py"
        path = code.splitlines()[0].removeprefix("# ").split()[0]
        assert not Path(path).is_absolute() and ".." not in path
        (user_folder / path).parent.mkdir(parents=True, exist_ok=True)
        (user_folder / path).write_text(code, encoding="utf-8")
    module = blocks[0][1]
    assert 10 <= len([line for line in module.splitlines() if line.strip()]) <= 15, "keep the example short"
    commands = [line for line in blocks[2][1].splitlines() if line.strip()]
    assert any(" sweep " in c and "--workers 2" in c for c in commands)
    for line in commands:
        assert run_line(line, user_folder) == 0, (line, capsys.readouterr().err[-2000:])

    fit = json.loads((user_folder / "runs" / "dyt-fit" / "summary.json").read_text())
    assert fit["toggles"]["norm"] == "mylab.norms.DyT" and fit["status"] != "failed"
    sweep = user_folder / "runs" / "dyt"
    names = sorted(p.parent.name for p in sweep.glob("*/summary.json"))
    assert len(names) == 2 and names[1].startswith("norm=mylab.norms.DyT,")  # the run named by the class path
    assert all(json.loads((sweep / n / "summary.json").read_text())["status"] != "failed" for n in names)
    report = (sweep / "report" / "report.md").read_text(encoding="utf-8")
    assert "norm=mylab.norms.DyT" in report and "mylab.norms.DyT − layernorm" in report  # its effect row
    assert "norm=mylab.norms.DyT" in (sweep / "report" / "report.html").read_text(encoding="utf-8")


OUR_PARTS = '''
import torch
from torch import nn


class ScaleNorm(nn.Module):
    """Nguyen & Salazar 2019: g * sqrt(D) * x / ||x||, one learnable scalar g."""

    def __init__(self, cfg):
        super().__init__()
        self.g = nn.Parameter(torch.tensor(1.0))
        self.scale = cfg.embed_dim ** 0.5

    def forward(self, x):
        return self.g * self.scale * x / x.norm(dim=-1, keepdim=True).clamp_min(1e-6)


class MeanMix(nn.Module):
    """Every token gets a Linear map of the tokens' mean (no attention, no telemetry methods)."""

    def __init__(self, cfg):
        super().__init__()
        self.proj = nn.Linear(cfg.embed_dim, cfg.embed_dim)

    def forward(self, x):
        return self.proj(x.mean(dim=1, keepdim=True)).expand_as(x)
'''

OUR_GRID = f'''
base: [{BASE}]
overrides:
  model.vit.embed_dim: 16
  model.vit.depth: 1
  model.vit.num_heads: 2
  model.vit.attention: ourlab.parts.MeanMix
  trainer.max_epochs: 1
  trainer.limit_train_batches: 2
  trainer.limit_val_batches: 1
  trainer.limit_test_batches: 1
axes:
  model.vit.norm: [layernorm, ourlab.parts.ScaleNorm]
seeds: [0]
claims:
  - claim: ScaleNorm raises accuracy
    treatment: {{norm: ourlab.parts.ScaleNorm}}
    metric: final_val_acc
    direction: increase
    min_effect: 0.01
'''


def test_a_users_norm_and_attention_run_in_a_two_worker_sweep_and_the_report_names_them(
        user_folder: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (user_folder / "ourlab").mkdir()
    (user_folder / "ourlab" / "__init__.py").write_text("")
    (user_folder / "ourlab" / "parts.py").write_text(OUR_PARTS)
    (user_folder / "grid.yaml").write_text(OUR_GRID)
    assert main(["sweep", "grid.yaml", "--workers", "2", "--out", "runs/ours"]) == 0, capsys.readouterr().err
    out = user_folder / "runs" / "ours"
    summaries = {p.parent.name: json.loads(p.read_text()) for p in out.glob("*/summary.json")}
    assert len(summaries) == 2 and all(s["status"] != "failed" for s in summaries.values())
    assert {s["toggles"]["attention"] for s in summaries.values()} == {"ourlab.parts.MeanMix"}
    assert {s["toggles"]["norm"] for s in summaries.values()} == {"layernorm", "ourlab.parts.ScaleNorm"}
    assert main(["report", "runs/ours"]) == 0, capsys.readouterr().err
    report = (out / "report" / "report.md").read_text(encoding="utf-8")
    assert "ourlab.parts.ScaleNorm" in report and "ourlab.parts.MeanMix" in report
    assert "ScaleNorm raises accuracy" in report  # the claim on a class-path value got its verdict line


@pytest.mark.parametrize(("argv", "expected"), [
    (["fit", "--model.vit.norm", "bogus"],
     [r"^error: model\.vit\.norm: got 'bogus'; valid values: layernorm, centernorm, rmsnorm, dyt \(built-in\), "
      r"an entry "
      r"point norm\.<name> of group stability\.components \(none installed\), or a class path package\.module\.Class"]),
    (["fit", "--model.vit.attention", "nolab.mixers.Mix"],
     [r"^error: model\.vit\.attention: got 'nolab\.mixers\.Mix', a class path, but importing nolab\.mixers failed: "
      r"ModuleNotFoundError: No module named 'nolab' \(sys\.path searched: .*mytrick", "valid values: dot, cosine"]),
])
def test_an_unknown_name_is_one_error_line_listing_what_is_valid_and_where_it_looked(
        argv: list[str], expected: list[str], user_folder: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    for pattern in expected:
        assert re.search(pattern, err), err
    assert not list(user_folder.iterdir())  # nothing written before the check


def test_an_unknown_name_in_a_grid_is_one_error_line_before_anything_runs(
        user_folder: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (user_folder / "grid.yaml").write_text(f"base: [{BASE}]\naxes:\n  model.vit.norm: [layernorm, nolab.norms.X]\n")
    assert main(["sweep", "grid.yaml", "--out", "runs/bad"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and "No module named 'nolab'" in err, err
    assert not (user_folder / "runs").exists()


def fabricate_distribution(site: Path) -> None:
    """An installed distribution as importlib.metadata finds it on sys.path: the package, and a
    ``*.dist-info`` folder with its METADATA and entry_points.txt (the real on-disk format)."""
    (site / "eplab").mkdir(parents=True)
    (site / "eplab" / "__init__.py").write_text("")
    (site / "eplab" / "norms.py").write_text(
        "import torch\nfrom torch import nn\n\n\n"
        "class DyT(nn.Module):\n"
        "    def __init__(self, cfg):\n"
        "        super().__init__()\n"
        "        self.alpha = nn.Parameter(torch.tensor(0.5))\n"
        "        self.weight = nn.Parameter(torch.ones(cfg.embed_dim))\n\n"
        "    def forward(self, x):\n"
        "        return self.weight * torch.tanh(self.alpha * x)\n")
    info = site / "eplab-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: eplab\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[stability.components]\nnorm.eptanh = eplab.norms:DyT\n")


def test_an_entry_point_of_an_installed_distribution_is_a_short_name(
        user_folder: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(ValueError, match="none installed"):
        ViTConfig(norm="eptanh")
    site = user_folder.parent / "site"
    fabricate_distribution(site)
    monkeypatch.syspath_prepend(str(site))
    assert registry.source("norm", "eptanh") == "entry point eplab.norms:DyT"
    assert TOGGLES["norm"].accepts("eptanh") and not TOGGLES["attention"].accepts("eptanh")
    model = VisionTransformer(ViTConfig(norm="eptanh", embed_dim=16, depth=1, num_heads=2))
    assert type(model.blocks[0].norm1).__name__ == "DyT" and type(model.norm).__module__ == "eplab.norms"
    listed = r"norm\.<name> of group stability\.components \(eptanh \(eplab\.norms:DyT\)\)"
    with pytest.raises(ValueError, match=listed):
        ViTConfig(norm="dyx")  # the error lists the entry points found

    assert main(["fit", "--model.vit.norm", "eptanh", *TINY, "--run_dir", "runs/ep"]) == 0, capsys.readouterr().err
    summary = json.loads((user_folder / "runs" / "ep" / "summary.json").read_text())
    assert summary["toggles"]["norm"] == "eptanh" and summary["status"] != "failed"
