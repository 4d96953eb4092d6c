"""The docs follow the code: the README's toggle table and the base config's toggle lines list exactly the
toggles of ``stability.record.identity.TOGGLES`` (the model's toggles plus the recipe toggle ``warmup``) with exactly
their values."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from stability.model import MODEL_TOGGLES
from stability.record.identity import TOGGLES as RUN_TOGGLES

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
BASE_CONFIG = ROOT / "ablations" / "base" / "digits.yaml"
SECTION = "## The toggles"


def _yaml_word(value: object) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


# Every toggle as the docs write its values (YAML words: true/false), baseline first; the recipe toggles are
# those that do not live in the model (warmup, in stability/training/module.py).
ALL_TOGGLES: dict[str, tuple[str, ...]] = {
    name: tuple(_yaml_word(v) for v in toggle.values) for name, toggle in RUN_TOGGLES.items()}
RECIPE_TOGGLES = {name: values for name, values in ALL_TOGGLES.items() if name not in MODEL_TOGGLES}
COLUMNS = ("toggle", "values", "source", "file")  # how the table's header cells start, in order


# ---------------------------------------------------------------- parsing
def _cells(line: str) -> list[str]:
    """'| a | b |' -> ['a', 'b']."""
    return [cell.strip() for cell in line.strip().strip("|").split("|")]


def _top_level_code(cell: str) -> list[str]:
    """The `code` spans of a cell outside parentheses: the names, not their explanations.

    '`conv` (3x3 ..., `conv_stem_remove_block`)' -> ['conv']; parentheses nest ('(N(x + f(x)), ...)').
    """
    depth, outside = 0, []
    for ch in cell:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth = max(depth - 1, 0)
        elif depth == 0:
            outside.append(ch)
    return re.findall(r"`([^`]+)`", "".join(outside))


def toggle_table() -> dict[str, dict[str, str]]:
    """README "## The toggles" table: toggle name -> {column: cell} (columns as in ``COLUMNS``)."""
    text = README.read_text(encoding="utf-8")
    assert SECTION in text, f"README.md has no section {SECTION!r}"
    section = text.split(SECTION, 1)[1].split("\n## ", 1)[0]
    lines = [line for line in section.splitlines() if line.startswith("|")]
    assert len(lines) >= 3, f"README.md {SECTION!r}: no Markdown table (header, separator, rows)"
    header = _cells(lines[0])
    assert len(header) == len(COLUMNS) and all(h.startswith(c) for h, c in zip(header, COLUMNS)), \
        f"README.md {SECTION!r}: table header is {header}, expected columns starting {list(COLUMNS)}"
    assert all(set(cell) <= set("-: ") for cell in _cells(lines[1])), "README.md toggle table: no separator row"

    rows: dict[str, dict[str, str]] = {}
    for line in lines[2:]:
        cells = _cells(line)
        assert len(cells) == len(COLUMNS), f"README.md toggle table: row {line!r} has {len(cells)} cells, " \
                                           f"expected {len(COLUMNS)}"
        names = _top_level_code(cells[0])
        assert len(names) == 1, f"README.md toggle table: row {line!r} names no single `toggle`"
        assert names[0] not in rows, f"README.md toggle table: toggle {names[0]!r} has two rows"
        rows[names[0]] = dict(zip(COLUMNS, cells))
    return rows


def yaml_lines(text: str) -> dict[str, tuple[str, str | None]]:
    """Every 'key: value  # comment' line of a block-style YAML file: dotted key path (from the indentation)
    -> (raw value, trailing comment or None). Enough for the base config; comments are invisible to yaml."""
    entries: dict[str, tuple[str, str | None]] = {}
    parents: list[tuple[int, str]] = []  # (indent, key) of the enclosing mappings
    for line in text.splitlines():
        match = re.match(r"^( *)([A-Za-z_][\w.]*):(.*)$", line)
        if not match:
            continue  # blank, comment-only or list lines
        indent, key, rest = len(match[1]), match[2], match[3]
        while parents and parents[-1][0] >= indent:
            parents.pop()
        value, hash_sign, comment = rest.partition("#")
        entries[".".join([k for _, k in parents] + [key])] = (value.strip(), comment.strip() if hash_sign else None)
        parents.append((indent, key))
    return entries


def _diff(listed: list[str] | tuple[str, ...], expected: tuple[str, ...]) -> str:
    missing = [v for v in expected if v not in listed]
    extra = [v for v in listed if v not in expected]
    return (f"lists {' | '.join(listed) or 'nothing'}, expected {' | '.join(expected)} (baseline first)"
            + (f"; missing: {', '.join(missing)}" if missing else "")
            + (f"; not valid: {', '.join(extra)}" if extra else "")
            + ("; wrong order" if not missing and not extra else ""))


# ---------------------------------------------------------------- README toggle table
def test_readme_table_lists_exactly_the_toggles() -> None:
    rows = toggle_table()
    missing = [name for name in ALL_TOGGLES if name not in rows]
    extra = [name for name in rows if name not in ALL_TOGGLES]
    problems = ([f"no row for: {', '.join(missing)}"] if missing else []) \
        + ([f"rows for unknown toggles: {', '.join(extra)}"] if extra else [])
    assert not problems, f"README.md toggle table has {'; '.join(problems)} (the toggles are those of " \
                         f"stability.model.MODEL_TOGGLES and the recipe's {', '.join(RECIPE_TOGGLES)})"


@pytest.mark.parametrize("toggle", list(ALL_TOGGLES))
def test_readme_table_lists_exactly_the_values_baseline_first(toggle: str) -> None:
    rows = toggle_table()
    assert toggle in rows, f"README.md toggle table has no row for {toggle!r}"
    listed = _top_level_code(rows[toggle]["values"])
    assert tuple(listed) == ALL_TOGGLES[toggle], f"README.md toggle table, {toggle!r}: " \
                                                 f"{_diff(listed, ALL_TOGGLES[toggle])}"


@pytest.mark.parametrize("toggle", list(ALL_TOGGLES))
def test_readme_table_names_an_existing_file(toggle: str) -> None:
    rows = toggle_table()
    assert toggle in rows, f"README.md toggle table has no row for {toggle!r}"
    files = _top_level_code(rows[toggle]["file"])
    assert len(files) == 1, f"README.md toggle table, {toggle!r}: the file column should name one `path`, " \
                            f"not {rows[toggle]['file']!r}"
    assert (ROOT / files[0]).is_file(), f"README.md toggle table, {toggle!r}: file {files[0]!r} does not exist"


# ---------------------------------------------------------------- ablations/base/digits.yaml
@pytest.mark.parametrize("toggle", list(MODEL_TOGGLES))
def test_base_config_sets_each_model_toggle_to_its_baseline_and_lists_its_values(toggle: str) -> None:
    text = BASE_CONFIG.read_text(encoding="utf-8")
    where = f"{BASE_CONFIG.relative_to(ROOT)}: model.vit.{toggle}"
    vit = (yaml.safe_load(text).get("model") or {}).get("vit") or {}
    assert toggle in vit, f"{where} is not set"
    baseline = MODEL_TOGGLES[toggle][0]
    assert vit[toggle] == baseline, f"{where} is {vit[toggle]!r}, not its baseline {baseline!r}"
    _, comment = yaml_lines(text)[f"model.vit.{toggle}"]
    assert comment is not None, f"{where} has no trailing comment listing its values " \
                                f"(# {' | '.join(MODEL_TOGGLES[toggle])})"
    listed = [value.strip() for value in comment.split("|")]
    assert tuple(listed) == MODEL_TOGGLES[toggle], f"{where}: the comment {_diff(listed, MODEL_TOGGLES[toggle])}"


@pytest.mark.parametrize("toggle", list(RECIPE_TOGGLES))
def test_base_config_sets_each_recipe_toggle_to_its_baseline(toggle: str) -> None:
    model = yaml.safe_load(BASE_CONFIG.read_text(encoding="utf-8")).get("model") or {}
    where = f"{BASE_CONFIG.relative_to(ROOT)}: model.{toggle}"
    assert toggle in model, f"{where} is not set"
    value = str(model[toggle]).lower() if isinstance(model[toggle], bool) else model[toggle]
    assert value == RECIPE_TOGGLES[toggle][0], f"{where} is {model[toggle]!r}, not its baseline " \
                                               f"{RECIPE_TOGGLES[toggle][0]!r}"


# ---------------------------------------------------------------- results quoted in the README
def test_readme_result_tables_equal_the_committed_report_files() -> None:
    from stability.docs import blocks, stale_blocks

    assert blocks(README.read_text(encoding="utf-8")), "README.md quotes no result table"
    assert stale_blocks(README) == [], "README.md quotes tables that differ from their files: run " \
                                       "`python -m stability.docs README.md` (make results does)"


def test_the_readme_names_exactly_the_verdicts_that_differ_between_the_two_seed_sets() -> None:
    """The committed replications of ablations/digits.yaml (seeds 0-5 and 6-11): exact numbers may differ and so
    may a borderline verdict; the README must say which verdicts differ, no more and no fewer."""
    import pandas as pd

    first, second = (pd.read_csv(ROOT / "notebooks" / "results" / name / "claims.csv")
                     for name in ("digits", "digits-seeds6-11"))
    assert list(first["claim"]) == list(second["claim"]) and list(first["setting"]) == list(second["setting"])
    differ = {claim for claim, a, b in zip(first["claim"], first["verdict"], second["verdict"], strict=True) if a != b}
    said = re.search(r"<!-- verdicts that differ between the two seed sets: (.*?) -->", README.read_text())
    assert said, "README.md does not say which verdicts differ between the two seed sets"
    listed = {c.strip() for c in said[1].split(";") if c.strip() and c.strip() != "none"}
    assert listed == differ, f"README lists {sorted(listed)}, the committed tables differ in {sorted(differ)}"
    words = " ".join(README.read_text()[said.end():].split("### ")[0].split())
    number = ["No", "One", "Two", "Three", "Four", "Five", "Six", "Seven", "Eight", "Nine", "Ten", "Eleven", "Twelve"]
    assert f"{number[len(first) - len(differ)]} of the {number[len(first)].lower()} verdicts agree" in words
    fmap = pd.read_csv(ROOT / "notebooks" / "results" / "digits-seeds6-11" / "failure_map.csv").set_index(
        ["configuration", "lr"])["failed"]
    assert f"{fmap[('warmup=False,max_epochs=12', 0.3)]} of 6 fail without warmup, " \
           f"{fmap[('baseline,max_epochs=12', 0.3)]} with it" in words
    lape = second.set_index("claim").loc[["LaPE raises accuracy at convergence",
                                          "LaPE raises accuracy at convergence (test split)"], "effect"]
    assert "LaPE's gain (+{:.0f} and +{:.0f} points)".format(*(100 * lape)) in words


def test_stale_blocks_sees_a_changed_table(tmp_path: Path) -> None:
    from stability.docs import stale_blocks, sync

    (tmp_path / "t.md").write_text("| a |\n|---|\n| 1 |\n")
    doc = tmp_path / "README.md"
    doc.write_text("x\n<!-- table: t.md -->\n| a |\n|---|\n| 2 |\n<!-- end table -->\ny\n")
    assert stale_blocks(doc) == ["t.md"]
    assert sync(doc) == 1 and stale_blocks(doc) == [] and doc.read_text().endswith("| 1 |\n<!-- end table -->\ny\n")


def test_the_readme_words_on_the_default_study_match_its_committed_tables() -> None:
    """The "In words" list under the verdicts restates numbers of notebooks/results/digits (failure counts,
    accuracies, attention logits, failing steps, gradient norms, intervals): each is recomputed from the
    committed tables and must read the same at the list's precision."""
    import pandas as pd

    results = ROOT / "notebooks" / "results" / "digits"
    text = README.read_text(encoding="utf-8")
    words = " ".join(text[text.index("In words:"):text.index("The telemetry before each failure")].split())
    fmap = pd.read_csv(results / "failure_map.csv")
    c = pd.read_csv(results / "configurations.csv")
    failures = pd.read_csv(results / "failures.csv")
    claims = pd.read_csv(results / "claims.csv").set_index("claim")
    ladder = c["max_epochs"] == 12
    base = ladder & (c["stem"] == "patchify") & (c["norm"] == "layernorm")
    dot, qk = base & (c["attention"] == "dot"), base & (c["attention"] == "qknorm")
    lipsformer = ladder & (c["norm"] == "centernorm")

    def failed(label: str, lr: float) -> int:
        row = fmap[(fmap["configuration"] == label) & (fmap["lr"] == lr)]
        assert len(row) == 1, (label, lr)
        return int(row["failed"].iloc[0])

    def one(mask: pd.Series, column: str) -> float:
        rows = c.loc[mask, column]
        assert len(rows) == 1, (column, len(rows))
        return float(rows.iloc[0])

    no_warmup, warmup = "warmup=False,max_epochs=12", "baseline,max_epochs=12"
    lf = [label for label in fmap["configuration"] if label.startswith("norm=centernorm")][0]
    assert [failed(no_warmup, lr) for lr in (0.03, 0.1, 0.3, 1.0)] == [
        int(x) for x in re.search(r"baseline fails in (\d), (\d) and (\d) of 6 seeds at lr 0.03, 0.1 and 0.3, and "
                                  r"in all 6 at 1.0", words).groups()] + [6]
    assert failed(warmup, 0.3) == 1 and failed(warmup, 1.0) == 6 and "with it, in 1 of 6 at 0.3" in words
    steps = failures[(failures["configuration"] == warmup) & (failures["lr"] == 1.0)]["step"]
    assert f"diverging at steps {steps.min():.0f}-{steps.max():.0f}" in words
    rate = claims.loc["warmup lowers the failure rate at a learning rate where the baseline without it fails"]
    assert f"lower by {-rate['effect']:.2f}" in words
    assert f"[−{-rate['low']:.2f}, +{rate['high']:.2f}]" in words and rate["verdict"] == "inconclusive"

    said = re.search(r"to ([\d.]+) and ([\d.]+) validation accuracy at lr 3e-3 and 0.03 after 12 epochs, where "
                     r"the baseline without warmup reaches ([\d.]+) and ([\d.]+)", words)
    assert said and [float(x) for x in said.groups()] == [
        round(one(lipsformer & (c["lr"] == lr), "final_val_acc_mean"), 2) for lr in (0.003, 0.03)] + [
        round(one(dot & ~c["warmup"] & (c["lr"] == lr), "final_val_acc_mean"), 2) for lr in (0.003, 0.03)]
    assert failed(lf, 0.1) == 6 and failed(no_warmup, 0.1) == 2
    lf_runs = failures[(failures["configuration"] == lf) & (failures["lr"] == 0.1)]
    assert f"diverging at steps {lf_runs['step'].min():.0f}-{lf_runs['step'].max():.0f}), where" in words
    assert f"reaches {lf_runs['grad_norm'].min():.0f}-{lf_runs['grad_norm'].max():,.0f}" in words
    assert lf_runs["max_attn_logit"].between(5, 10.5).all()  # "cosine attention's scale (about 10)"
    verdict = claims.loc["the LipsFormer parts make training without warmup more reliable at a high learning rate"]
    assert verdict["verdict"] == "contradicted"

    assert round(one(qk & (c["lr"] == 0.1), "max_attn_logit_mean")) == int(re.search(
        r"largest attention logit near (\d+) at lr 0.1", words)[1])
    assert f"reaches about {round(one(dot & ~c['warmup'] & (c['lr'] == 0.1), 'max_attn_logit_mean'), -2):,.0f}" \
        in words
    assert failed("attention=qknorm,warmup=False,max_epochs=12", 0.3) == failed(no_warmup, 0.3) == 4
    grow = re.search(r"grow from about (\d+) at lr 3e-3 to about ([\d,]+) at 0.1", words)
    assert int(grow[1]) == round(one(dot & c["warmup"] & (c["lr"] == 0.003), "max_attn_logit_mean"))
    assert int(grow[2].replace(",", "")) == round(one(dot & c["warmup"] & (c["lr"] == 0.1), "max_attn_logit_mean"), -2)
    assert failed("stem=conv,warmup=False,max_epochs=12", 0.3) == 6

    edges = claims[claims["metric"] == "largest_stable_lr"]
    assert (edges["verdict"] == "inconclusive").all() and ((edges["high"] - edges["low"]) > 1).all()
    lape = claims.loc[[name for name in claims.index if name.startswith("LaPE")]]
    assert (lape["verdict"] == "supported").all()
    assert int(re.search(r"LaPE\* raises accuracy at convergence by about (\d) points", words)[1]) == \
        round(100 * lape["effect"].mean())


def test_the_readme_words_on_the_fuller_study_match_its_committed_tables() -> None:
    """The paragraph under the accuracy study's claims table (ablations/digits_full.yaml, seeds 0-4): every
    verdict and interval it quotes, recomputed from the committed CSVs."""
    import pandas as pd

    results = ROOT / "notebooks" / "results"
    text = README.read_text(encoding="utf-8")
    full = pd.read_csv(results / "digits_full" / "claims.csv")
    start = text.index("<!-- table: notebooks/results/digits_full/claims.md -->")
    words = " ".join(text[text.index("<!-- end table -->", start):text.index("### The full factorial")].split())
    verdicts = full.set_index("claim")["verdict"]
    assert verdicts["LaPE raises accuracy at convergence (test split)"] == "supported"
    assert "supported on the test" in words
    assert verdicts["LaPE raises accuracy at convergence"] == "inconclusive" and "inconclusive on validation" in words

    def interval(mean: float, low: float, high: float) -> str:
        return f"{mean:+.3f} [{low:+.3f}, {high:+.3f}]"

    claims = full.set_index("claim")
    lape = claims.loc[[c for c in claims.index if c.startswith("LaPE")]]
    assert round(100 * lape["effect"].mean()) == int(re.search(r"about (\d+) points at lr 3e-3", words)[1])
    span = re.search(r"intervals span \+([\d.]+) to \+([\d.]+) points", words)
    assert float(span[1]) == round(100 * lape["low"].min(), 1) and float(span[2]) == round(100 * lape["high"].max(), 1)
    conv = claims.loc["the conv stem makes optimisation less sensitive to the learning rate"]
    assert f"{interval(conv['effect'], conv['low'], conv['high'])} nats" in words

    effects = pd.read_csv(results / "digits_full" / "effects.csv")
    effects = effects[effects["metric"] == "final_val_acc"].set_index(["value", "lr"])
    for value, lr, where in [("lape", 3e-3, "at lr 3e-3"), ("lape", 1e-2, "at 1e-2"), ("lape", 3e-2, "at 3e-2"),
                             ("cosine", 3e-3, "at lr 3e-3"), ("cosine", 3e-2, "at 3e-2")]:
        row = effects.loc[(value, lr)]
        assert f"{interval(row['mean'], row['low'], row['high'])} {where}" in words, (value, lr)


def test_the_readme_words_on_how_runs_fail_match_the_committed_tables() -> None:
    """The telemetry and "what changed" paragraphs: the baseline's logits and steps at lr 1, the gradient norms of
    the LipsFormer parts and of the baseline at their failures, and the accuracy study's LipsFormer interval."""
    import pandas as pd

    results = ROOT / "notebooks" / "results"
    text = " ".join(README.read_text(encoding="utf-8").split())
    words = text[text.index("The telemetry before each failure"):text.index("How a verdict is reached")]
    f = pd.read_csv(results / "digits" / "failures.csv")
    base = f[(f["configuration"] == "baseline,max_epochs=12") & (f["lr"] == 1.0)]
    lf = f[f["configuration"].str.startswith("norm=centernorm") & (f["lr"] == 0.1)]
    logits = f"{base['max_attn_logit'].min():,.0f}-{base['max_attn_logit'].max():,.0f}"
    assert f"reaches {logits} by the step the loss explodes (steps {base['step'].min():.0f}-{base['step'].max():.0f})" \
        in words
    assert f"{lf['grad_norm'].min():.0f}-{lf['grad_norm'].max():,.0f} against the baseline's " \
           f"{base['grad_norm'].min():.0f}-{base['grad_norm'].max():.0f} at lr 1" in words
    full = pd.read_csv(results / "digits_full" / "claims.csv")
    row = full[full["claim"].str.startswith("the LipsFormer parts")].iloc[0]
    assert f"{row['effect']:+.3f} [{row['low']:+.3f}, {row['high']:+.3f}]" in words and row["verdict"] == "supported"


def test_the_readme_words_on_verdicts_that_settle_match_the_committed_tables() -> None:
    """"Verdicts that settle": the held-together verdicts, the seeds-to-settle estimates and what --settle did,
    recomputed from notebooks/results/digits and notebooks/results/digits-settle."""
    import math

    import pandas as pd

    from stability.analysis.sequential import look_alphas

    text = README.read_text(encoding="utf-8")
    words = " ".join(text[text.index("### Verdicts that settle"):text.index("Exact numbers differ")].split())
    plain = pd.read_csv(ROOT / "notebooks" / "results" / "digits" / "claims.csv").set_index("claim")
    held = plain[plain["verdict_holm"] != "inconclusive"]
    assert sorted(held["verdict_holm"]) == ["contradicted", "supported", "supported"] and "three findings" in words
    lf = plain.loc["the LipsFormer parts make training without warmup more reliable at a high learning rate"]
    assert f"adjusted p = {lf['p_holm']:.2g})" in words
    lape = plain.loc[[c for c in plain.index if c.startswith("LaPE")]]
    assert (lape["verdict"] == "supported").all() and (lape["verdict_holm"] == "inconclusive").all()
    assert "(p = {:.2g} and {:.1g})".format(*lape["p_value"]) in words
    assert "(adjusted p = {:.2g} and {:.2g})".format(*lape["p_holm"]) in words
    need = plain["seeds_needed"]
    for claim, n in (("warmup lowers the failure rate at a learning rate where the baseline without it fails", 20),
                     ("the LipsFormer parts raise the largest stable learning rate without warmup", 25),
                     ("qk-norm raises the largest stable learning rate without warmup", 94),
                     ("the conv stem raises the largest stable learning rate without warmup", 94),
                     ("qk-norm lowers the failure rate without warmup at a learning rate where the baseline fails",
                      361)):
        assert need[claim] == n, (claim, need[claim])
    assert math.isinf(need["warmup raises the largest stable learning rate"])
    assert math.isnan(need["the conv stem makes optimisation less sensitive to the learning rate"])

    settled = pd.read_csv(ROOT / "notebooks" / "results" / "digits-settle" / "claims.csv").set_index("claim")
    runs = pd.read_csv(ROOT / "notebooks" / "results" / "digits-settle" / "runs.csv")
    assert f"{len(runs) - len(pd.read_csv(ROOT / 'notebooks' / 'results' / 'digits' / 'runs.csv'))} runs added" in words
    shares = look_alphas([6, 9, 12], 12, 0.05)
    assert "spending {:.1f}%, {:.1f}% and {:.2f}%".format(*(100 * a for a in shares)) in words
    val = settled.loc["LaPE raises accuracy at convergence"]
    assert val["verdict"] == "supported" and val["n_seeds"] == 9 and val["stopped"].startswith("settled at look 2")
    assert f"+{val['effect']:.3f} [+{val['low']:.3f}, +{val['high']:.3f}] at 99.0%" in words
    test = settled.loc["LaPE raises accuracy at convergence (test split)"]
    assert f"+{test['effect']:.3f} [+{test['low']:.3f}, +{test['high']:.3f}] at 96.9%" in words
    edge = settled.loc["the LipsFormer parts raise the largest stable learning rate without warmup"]
    assert edge["verdict"] == "contradicted" and edge["n_seeds"] == 12
    rate = settled.loc["warmup lowers the failure rate at a learning rate where the baseline without it fails"]
    assert f"(−{-rate['effect']:.2f} [−{-rate['low']:.2f}, −{-rate['high']:.2f}] at 99.1%)" in words
    open_edges = settled[(settled["metric"] == "largest_stable_lr") & settled["stopped"].str.startswith("budget")]
    qk_rate = settled.loc["qk-norm lowers the failure rate without warmup at a learning rate where the baseline fails"]
    assert len(open_edges) == 3 and rate["stopped"].startswith("budget") and qk_rate["stopped"].startswith("budget")
    # the simulated error rates quoted: the same seeded simulation the sequential tests run
    import importlib.util

    spec = importlib.util.spec_from_file_location("sim", ROOT / "tests" / "analysis" / "test_sequential.py")
    sim = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(sim)
    from stability.analysis import sequential

    looks = sequential.schedule(3, 2, 11)
    corrected = sim._wrong_share(sim._normal, looks, sequential.look_alphas(looks, 11, 0.05), 0.01, 2000)
    naive = sim._wrong_share(sim._normal, looks, [0.05] * len(looks), 0.01, 2000)
    assert f"errs {100 * corrected:.1f}% of the time and 95% at every look {100 * naive:.1f}%" in words


def test_the_readme_words_on_fashion_mnist_match_the_committed_tables() -> None:
    """The Fashion-MNIST section: failure counts, LaPE's gain and what holds on both data sets."""
    import pandas as pd

    text = README.read_text(encoding="utf-8")
    words = " ".join(text[text.index("### Beyond 8x8 digits"):text.index("### The accuracy study")].split())
    results = ROOT / "notebooks" / "results"
    fmap = pd.read_csv(results / "fashion" / "failure_map.csv").set_index(["configuration", "lr"])["failed"]
    lf = [c for c, _ in fmap.index if c.startswith("norm=centernorm")][0]
    assert fmap[(lf, 0.1)] == 3 and fmap[("warmup=False,max_epochs=6", 0.1)] == 0
    assert fmap[("warmup=False,max_epochs=6", 0.3)] == 0 and fmap[("baseline,max_epochs=6", 1.0)] == 3
    assert fmap[("warmup=False,max_epochs=6", 1.0)] == 3 and "(0 of 3 fail) and both fail at 1.0" in words
    claims = pd.read_csv(results / "fashion" / "claims.csv").set_index("claim")
    lape = claims.loc["LaPE raises accuracy at convergence"]
    assert f"(+{lape['effect']:.3f} [−{-lape['low']:.3f}, +{lape['high']:.3f}] validation accuracy" in words
    assert lape["verdict"] == "inconclusive" and f"about {lape['seeds_needed']:.0f} seeds" in words
    compared = pd.read_csv(results / "compare-datasets" / "compare_claims.csv")
    transfers = set(compared.loc[compared["transfer"] == "transfers", "claim"])
    assert transfers == {"the LipsFormer parts make training without warmup more reliable at a high learning rate",
                         "qk-norm keeps the attention logits bounded at a high learning rate",
                         "dot-product attention logits grow with the learning rate"}


def test_the_readme_words_on_the_modern_tricks_match_the_committed_tables() -> None:
    """The modern study's paragraph: logits bounded, failure counts, DyT's interval, the gated claim."""
    import pandas as pd

    text = README.read_text(encoding="utf-8")
    words = " ".join(text[text.index("### The field's current tricks"):text.index("### The accuracy study")].split())
    results = ROOT / "notebooks" / "results" / "modern"
    claims = pd.read_csv(results / "claims.csv").set_index("claim")
    sigma = claims.loc["sigma-Reparam keeps the attention logits from growing (the cause of entropy collapse)"]
    clip = claims.loc["QK-clip keeps the attention logits bounded without warmup at a high learning rate"]
    assert (sigma["verdict"], clip["verdict"]) == ("supported", "supported")
    assert (sigma["verdict_holm"], clip["verdict_holm"]) == ("supported", "supported")
    assert f"sigma-Reparam by {-sigma['effect']:.1f} decades at lr 0.1, QK-clip by {-clip['effect']:.1f}" in words
    fmap = pd.read_csv(results / "failure_map.csv")

    def failed(prefix: str, lr: float) -> int:
        row = fmap[fmap["configuration"].str.startswith(prefix) & (fmap["lr"] == lr)]
        assert len(row) == 1, (prefix, lr)
        return int(row["failed"].iloc[0])

    assert failed("warmup=False,weight_decay=0.05,qk_clip=30", 0.3) == 2
    assert failed("warmup=False,weight_decay=0.05,qk_clip=–,independent_wd=False", 0.3) == 2
    assert [failed("reparam=sigma", lr) for lr in (0.003, 0.1, 0.3, 1.0)] == [1, 3, 3, 3]
    assert failed("residual=layerscale", 0.3) == failed("norm_placement=peri", 0.3) == 2
    assert failed("attention=softcap", 0.3) == 3
    dyt = claims.loc["Dynamic Tanh matches LayerNorm's accuracy at convergence"]
    assert dyt["verdict"] == "inconclusive"
    assert f"(−{-dyt['effect']:.3f} [−{-dyt['low']:.3f}, +{dyt['high']:.3f}] validation accuracy)" in words
    wd = claims.loc["weight decay independent of the learning rate lowers LR sensitivity"]
    assert "did not converge" in wd["why"]


def test_make_demo_prints_the_held_together_verdict_and_the_seeds_to_settle(capsys: pytest.CaptureFixture[str]) -> None:
    """The demo's closing verdict lines (stability.demo.print_verdicts) on the committed default study."""
    import pandas as pd

    from stability.demo import print_verdicts

    claims_csv = ROOT / "notebooks" / "results" / "digits" / "claims.csv"
    print_verdicts(claims_csv)
    out = capsys.readouterr().out
    claims = pd.read_csv(claims_csv)
    changed = claims[(claims["verdict"] != "inconclusive") & (claims["verdict_holm"] == "inconclusive")]
    assert out.count("held together with the study's other claims (Holm): inconclusive") == len(changed) == 2
    assert "about 20 seeds would settle it" in out and "about 94 seeds would settle it" in out
