"""Claims and verdicts on fabricated run records in the real format (config.yaml + summary.json, plan.json)."""

from __future__ import annotations

import math
from pathlib import Path

import fabricate as fab
import pytest

from stability.analysis.claims import parse_claims
from stability.analysis.results import load_sweep
from stability.analysis.verdicts import claims_table, converged
from stability.errors import ConfigError
from stability.report import build_report
from stability.training.collapse import collapse_reason

LAPE = {"claim": "LaPE raises accuracy", "treatment": {"pos_embed": "lape"}, "metric": "final_val_acc",
        "direction": "increase", "min_effect": 0.01}


def _verdicts(sweep_dir: Path, claims: list[dict]) -> list[dict]:
    fab.write_claims(sweep_dir, claims)
    sweep = load_sweep(sweep_dir)
    return claims_table(sweep.claims, sweep.finished, sweep.config_columns).to_dict("records")


def _lape_sweep(root: Path, gains: list[float], control_history: list[float] | None = None) -> Path:
    for seed, gain in enumerate(gains):
        base = 0.90 + 0.01 * seed
        fab.write_record(root, seed, final_val_acc=base, history=control_history)
        fab.write_record(root, seed, pos_embed="lape", final_val_acc=base + gain)
    return root


def test_supported_when_the_whole_interval_clears_the_minimal_effect(tmp_path: Path) -> None:
    [v] = _verdicts(_lape_sweep(tmp_path, [0.03, 0.035, 0.028]), [LAPE])
    assert v["verdict"] == "supported" and v["n_seeds"] == 3 and v["low"] > 0.01
    assert v["effect"] == pytest.approx(0.031, abs=1e-3) and v["seeds"] == "0, 1, 2"


def test_contradicted_when_the_whole_interval_falls_short(tmp_path: Path) -> None:
    [v] = _verdicts(_lape_sweep(tmp_path, [0.001, -0.001, 0.0]), [LAPE])
    assert v["verdict"] == "contradicted" and v["high"] < 0.01


def test_inconclusive_when_the_interval_spans_the_minimal_effect(tmp_path: Path) -> None:
    [v] = _verdicts(_lape_sweep(tmp_path, [0.10, -0.05, 0.02]), [LAPE])
    assert v["verdict"] == "inconclusive" and "spans" in v["why"]
    assert v["low"] < 0.01 < v["high"]


def test_inconclusive_with_fewer_than_three_seeds(tmp_path: Path) -> None:
    [v] = _verdicts(_lape_sweep(tmp_path, [0.05, 0.05]), [LAPE])
    assert v["verdict"] == "inconclusive" and "2 seed(s)" in v["why"]


def test_inconclusive_when_the_control_did_not_converge(tmp_path: Path) -> None:
    still_falling = [fab.L0 * (1 - i / 20) for i in range(16)]  # the loss drops steadily to the last epoch
    [v] = _verdicts(_lape_sweep(tmp_path, [0.05, 0.06, 0.05], control_history=still_falling), [LAPE])
    assert v["verdict"] == "inconclusive" and "did not converge" in v["why"] and v["control_converged"] == "0/3"


def test_convergence_rule() -> None:
    flat = [2.3, 1.0, 0.5, 0.3, 0.2, 0.1, 0.1, 0.1]
    assert converged(flat, 2.3, "completed")
    assert converged('[2.3, 1.0, 0.5, 0.3, 0.2, 0.1, 0.1, 0.1]', 2.3, "completed")  # as a run table holds it
    assert not converged([2.3, 2.0, 1.7, 1.4, 1.1, 0.8, 0.5, 0.2], 2.3, "completed")
    assert not converged(flat, 2.3, "diverged")


def test_pairs_of_one_seed_are_one_replicate_not_several(tmp_path: Path) -> None:
    """Two weight decays x one seed: two pairs, but they share the seed (and the data split), so n = 1."""
    for wd in (0.05, 0.1):
        fab.write_record(tmp_path, 0, weight_decay=wd, final_val_acc=0.90)
        fab.write_record(tmp_path, 0, weight_decay=wd, pos_embed="lape", final_val_acc=0.95)
    [v] = _verdicts(tmp_path, [LAPE])
    assert v["n_seeds"] == 1 and v["verdict"] == "inconclusive"
    assert v["effect"] == pytest.approx(0.05) and math.isnan(v["low"])


def test_a_bundle_is_never_charged_to_one_toggle(tmp_path: Path) -> None:
    """Baseline vs the LipsFormer-style bundle (centernorm + cosine): no run differs in attention alone."""
    for seed in range(3):
        fab.write_record(tmp_path, seed, final_val_acc=0.80)
        fab.write_record(tmp_path, seed, norm="centernorm", attention="cosine", final_val_acc=0.95 + 0.01 * seed)
    one = {"claim": "cosine helps", "treatment": {"attention": "cosine"}, "metric": "final_val_acc",
           "direction": "increase", "min_effect": 0.0}
    bundle = {**one, "claim": "the bundle helps", "treatment": {"norm": "centernorm", "attention": "cosine"}}
    v_one, v_bundle = _verdicts(tmp_path, [one, bundle])
    assert v_one["n_seeds"] == 0 and v_one["verdict"] == "inconclusive"
    assert v_bundle["n_seeds"] == 3 and v_bundle["verdict"] == "supported"
    # and the report's toggle-effect table does not pair them either: it names the gap instead
    report = build_report(tmp_path)
    effects = report.tables["effects"]
    assert (effects["n"] == 0).all()
    assert any("effect of attention=cosine" in g for g in report.gaps)


def test_effects_are_given_per_learning_rate_unless_pooled(tmp_path: Path) -> None:
    for seed, wobble in enumerate((0.0, 0.002, -0.002)):
        for lr, gain in ((1e-3, 0.0), (1e-2, 0.3)):
            fab.write_record(tmp_path, seed, lr=lr, final_val_acc=0.6 + 0.01 * seed)
            fab.write_record(tmp_path, seed, lr=lr, pos_embed="lape",
                             final_val_acc=0.6 + 0.01 * seed + gain + wobble)
    rows = _verdicts(tmp_path, [LAPE, {**LAPE, "pool": True}, {**LAPE, "where": {"lr": 1e-2}}])
    assert [(r["lr"], r["verdict"]) for r in rows[:2]] == [(1e-3, "contradicted"), (1e-2, "supported")]
    pooled, at = rows[2], rows[3]
    assert math.isnan(pooled["lr"]) and pooled["effect"] == pytest.approx(0.15) and pooled["n_seeds"] == 3
    assert at["lr"] == 1e-2 and at["verdict"] == "supported"
    assert [r["setting"] for r in rows] == ["lr 0.001", "lr 0.01", "every lr, pooled", "lr 0.01"]


def test_failures_score_chance_and_count_in_failure_rates(tmp_path: Path) -> None:
    for seed in range(3):
        fab.write_record(tmp_path, seed, lr=3e-2, warmup=False, status="diverged", final_val_acc=None)
        fab.write_record(tmp_path, seed, lr=3e-2, warmup=False, norm="centernorm", final_val_acc=0.89 + 0.01 * seed)
        fab.write_record(tmp_path, seed, lr=1e-3, warmup=False, final_val_acc=0.9)  # the control trains at 1e-3
    acc = {"claim": "centernorm trains without warmup", "treatment": {"norm": "centernorm"},
           "where": {"lr": 3e-2, "warmup": False}, "metric": "final_val_acc", "direction": "increase",
           "min_effect": 0.2}
    rate = {**acc, "metric": "failure_rate", "direction": "decrease", "min_effect": 0.1}
    v_acc, v_rate, v_big = _verdicts(tmp_path, [acc, rate, {**rate, "min_effect": 0.5}])
    assert v_acc["effect"] == pytest.approx(0.8) and v_acc["verdict"] == "supported"  # 0.9 - chance (0.1)
    assert v_acc["control_converged"] == "3/3 at lr 0.001"
    # 0/3 vs 3/3 failures: Newcombe's interval is [-1, -0.206], not the t-interval's [-1, -1]
    assert v_rate["effect"] == pytest.approx(-1.0) and v_rate["verdict"] == "supported"
    assert (v_rate["low"], v_rate["high"]) == pytest.approx((-1.0, -0.2059), abs=1e-4)
    assert v_big["verdict"] == "inconclusive" and "spans" in v_big["why"]


def test_grid_metrics_compare_each_seeds_lr_grid(tmp_path: Path) -> None:
    """largest_stable_lr: the conv stem survives one lr more than patchify in every seed (1e-2 vs 3e-3)."""
    lrs = (1e-3, 3e-3, 1e-2, 3e-2)
    for seed in range(3):
        for lr in lrs:
            fab.write_record(tmp_path, seed, lr=lr, status="diverged" if lr >= 1e-2 else "completed",
                             final_val_acc=None if lr >= 1e-2 else 0.9, final_val_loss=0.3 + 0.01 * seed)
            fab.write_record(tmp_path, seed, lr=lr, stem="conv", status="diverged" if lr >= 3e-2 else "completed",
                             final_val_acc=None if lr >= 3e-2 else 0.9, final_val_loss=0.3)
    claim = {"claim": "conv stem tolerates larger lr", "treatment": {"stem": "conv"},
             "metric": "largest_stable_lr", "direction": "increase", "min_effect": 0.1}
    sens = {**claim, "metric": "lr_sensitivity", "direction": "decrease", "min_effect": 0.05}
    v, v_sens = _verdicts(tmp_path, [claim, sens])
    assert v["effect"] == pytest.approx(math.log10(1e-2 / 3e-3))  # the median of the seeds' differences
    assert v["n_seeds"] == 3 and math.isnan(v["lr"]) and v["setting"] == "over the lr grid"
    assert v["verdict"] == "inconclusive" and "at most 75% confidence; 95% needs 6" in v["why"]
    assert v_sens["effect"] < 0 and v_sens["verdict"] == "supported"


@pytest.mark.parametrize(("claim", "message"), [
    ({**LAPE, "metric": "accuracy"}, "claims[0].metric: got 'accuracy'; valid values: final_val_acc"),
    ({**LAPE, "direction": "up"}, "claims[0].direction: got 'up'"),
    ({**LAPE, "min_effect": -1}, "claims[0].min_effect: got -1"),
    ({**LAPE, "treatment": {"pos_embed": "lapes"}}, "claims[0].treatment.pos_embed: got 'lapes'; valid values"),
    ({**LAPE, "treatment": {"posembed": "lape"}}, "claims[0].treatment: unknown key 'posembed'"),
    ({**LAPE, "control": {"pos_embed": "lape"}}, "treatment and control are the same runs"),
    ({**LAPE, "colour": 1}, "claims[0]: unknown key 'colour'"),
    ({k: v for k, v in LAPE.items() if k != "metric"}, "claims[0]: metric is missing"),
])
def test_bad_claims_are_one_line_errors(claim: dict, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_claims([claim], "grid.yaml")
    assert message in str(info.value) and "\n" not in str(info.value)
    assert str(info.value).startswith("grid.yaml: claims[0]")


def test_dotted_config_keys_name_the_same_columns() -> None:
    [claim] = parse_claims([{**LAPE, "treatment": {"model.vit.pos_embed": "lape"}, "where": {"model.lr": 1e-3}}],
                           "g.yaml")
    assert claim.treatment == {"pos_embed": "lape"} and claim.control == {"pos_embed": "default"}
    assert claim.where == {"lr": [1e-3]}


def test_collapse_rule_catches_a_stalled_run_not_a_slow_learner() -> None:
    stalled = [2.31, 2.30, 2.30, 2.31, 2.30, 2.30]
    slow = [2.31, 2.25, 2.15, 2.05, 1.95, 1.85]  # still learning, only slowly
    assert "still >= 0.9 x the initial loss" in collapse_reason(stalled, 2.31, 0.11, 10)
    assert collapse_reason(slow, 2.31, 0.35, 10) is None
    assert "below 1.5 x chance" in collapse_reason(slow, 2.31, 0.12, 10)


def test_a_grid_seed_draws_the_training_seed_and_the_data_split_together(tmp_path: Path) -> None:
    from sweep_helpers import write_grid

    from stability.sweep.cells import expand
    from stability.sweep.grid import load_grid

    grid = write_grid(tmp_path, "g", {"seeds": [0, 3]})
    cells = expand(load_grid(grid))
    assert [(c.config["seed_everything"], c.config["data"]["init_args"]["seed"]) for c in cells] == [(0, 0), (3, 3)]


@pytest.mark.parametrize("grid", ["digits.yaml", "digits_full.yaml"])
def test_the_logit_growth_claim_pairs_dot_product_runs_only(grid: str, tmp_path: Path) -> None:
    """Each cell of the shipped grid, fabricated: dot-product logits grow one decade per 10x lr, cosine and
    qk-norm logits stay at 10. The claim is about dot-product attention, so its effect is exactly the decades
    between its two lrs; a ``where`` that let cosine or qk-norm pairs in would average their zero growth into it."""
    from stability.record.identity import toggles_of
    from stability.sweep.cells import expand
    from stability.sweep.grid import load_grid

    spec = load_grid(Path(__file__).parents[2] / "ablations" / grid)
    for cell in expand(spec):
        toggles, hp = toggles_of(cell.config), cell.config["model"]
        lr, seed = float(hp["lr"]), int(cell.config["seed_everything"])
        logit = 10.0 if toggles["attention"] in ("cosine", "qknorm") else 10.0 * lr / 3e-3
        fab.write_record(tmp_path, seed, lr=lr, max_attn_logit=logit, max_epochs=cell.config["trainer"]["max_epochs"],
                         **{k: v for k, v in toggles.items() if k in fab.BASE_TOGGLES})
    claim = next(c for c in spec.claims if c["claim"] == "dot-product attention logits grow with the learning rate")
    [verdict] = _verdicts(tmp_path, [claim])
    assert verdict["n_seeds"] >= 3
    assert verdict["effect"] == pytest.approx(math.log10(claim["treatment"]["lr"] / claim["control"]["lr"]))
