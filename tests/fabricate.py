"""Fabricated sweep folders in the real run-record format, for the results/report/notebook tests.

Each run folder gets what ``stability.training.run.run`` writes: ``config.yaml`` (nested LightningCLI form),
TensorBoard event files written by ``torch.utils.tensorboard.SummaryWriter`` (scalars per step, per-epoch
validation scalars and an HParams session, as Lightning's TensorBoardLogger writes them) and, last,
``summary.json``. The numbers are chosen so the tables can be checked by hand (``EXPECTED``).

The default sweep (``make_sweep``): norm in {layernorm, centernorm} x lr in {1e-3, 1e-2} x seed in {0, 1}
= 8 finished runs, of which
  - ``lr=0.01,seed=1`` (layernorm) diverged at step 20 (NaN loss, null final accuracy and losses);
  - ``lr=0.01,seed=0`` (layernorm) was resumed: its second event file repeats steps 15..24 with later
    wall times and different values, and has a loss spike (x3) at step 30;
plus 4 runs that did not finish: seed 2 of centernorm/1e-2 is running (no summary, fresh events), of
layernorm/1e-3 cut off (old events), of layernorm/1e-2 failed (summary with an error), of
centernorm/1e-3 pending (config.yaml only).

Tests that only check invariants take any sweep folder; they also run on the real smoke sweep
(``smoke_sweep`` in conftest.py).
"""

from __future__ import annotations

import math
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from stability.record import files as records
from stability.record.identity import baselines, hparams_of, run_name, toggles_of

L0 = math.log(10)  # initial loss of a 10-class model (cross-entropy of the uniform prediction)
STEPS = 40
BASE_TOGGLES = baselines()
BASE_HPARAMS = {"lr": 1e-3, "weight_decay": 0.05, "optimizer": "adamw", "seed": 0, "batch_size": 64,
                "max_epochs": 2, "warmup_epochs": 1.0, "label_smoothing": 0.0, "z_loss": 0.0,
                "gradient_clip_val": 1.0, "embed_dim": 64, "depth": 2}

# (norm, lr, seed) -> best_val_acc, final_val_acc, final_val_loss
FINISHED = {
    ("layernorm", 1e-3, 0): (0.80, 0.78, 0.60),
    ("layernorm", 1e-3, 1): (0.82, 0.80, 0.62),
    ("centernorm", 1e-3, 0): (0.83, 0.81, 0.55),
    ("centernorm", 1e-3, 1): (0.84, 0.82, 0.57),
    ("layernorm", 1e-2, 0): (0.70, 0.60, 0.90),  # resumed, spike at step 30
    ("layernorm", 1e-2, 1): (0.30, None, None),  # diverged at step 20
    ("centernorm", 1e-2, 0): (0.75, 0.72, 0.70),
    ("centernorm", 1e-2, 1): (0.77, 0.74, 0.72),
}
DIVERGED = ("layernorm", 1e-2, 1)
RESUMED = ("layernorm", 1e-2, 0)
DIVERGED_STEP = 20
SPIKE_STEP = 30


def config_for(toggles: dict[str, Any], hparams: dict[str, Any]) -> dict[str, Any]:
    """A resolved config in LightningCLI's nested form."""
    vit = {k: v for k, v in toggles.items() if k != "warmup"}
    vit.update(embed_dim=hparams["embed_dim"], depth=hparams["depth"], num_heads=4, img_size=8, patch_size=2,
               in_chans=1, num_classes=10)
    return {
        "seed_everything": hparams["seed"],
        "model": {"vit": vit, "optimizer": hparams["optimizer"], "lr": hparams["lr"],
                  "weight_decay": hparams["weight_decay"], "warmup": toggles["warmup"],
                  "warmup_epochs": hparams["warmup_epochs"], "label_smoothing": hparams["label_smoothing"],
                  "z_loss": hparams["z_loss"]},
        "data": {"class_path": "stability.data.DigitsDataModule",
                 "init_args": {"batch_size": hparams["batch_size"], "seed": 0}},
        "trainer": {"max_epochs": hparams["max_epochs"], "gradient_clip_val": hparams["gradient_clip_val"]},
    }


def loss_curve(norm: str, lr: float, seed: int, steps: int = STEPS) -> np.ndarray:
    """Exponential decay from L0 to a floor, 2% multiplicative noise (never enough to look like a spike)."""
    rng = np.random.default_rng(1000 * seed + int(lr * 1e4) + (7 if norm == "centernorm" else 0))
    tau = {1e-3: 12.0, 1e-2: 6.0}[lr]
    floor = 0.15 if norm == "centernorm" else 0.2
    s = np.arange(steps)
    curve = (L0 - floor) * np.exp(-s / tau) + floor
    return curve * (1 + 0.02 * rng.standard_normal(steps))


def write_events(run_dir: Path, losses: dict[int, float], *, wall0: float, lrs: float,
                 val: dict[int, tuple[float, float]] | None = None,
                 hparams: dict[str, Any] | None = None) -> None:
    """One TensorBoard session: train/loss and train/lr per step, val/* per epoch, optional HParams."""
    from torch.utils.tensorboard import SummaryWriter
    from torch.utils.tensorboard.summary import hparams as hparams_summary

    writer = SummaryWriter(str(run_dir))
    if hparams is not None:
        exp, ssi, sei = hparams_summary(hparams, {"hp/best_val_acc": 0.0, "hp/diverged": 0.0})
        for summary in (exp, ssi, sei):
            writer.file_writer.add_summary(summary)
    for step, value in losses.items():
        writer.add_scalar("train/loss", value, step, walltime=wall0 + step)
        writer.add_scalar("train/lr", lrs, step, walltime=wall0 + step)
        writer.add_scalar("train/grad_norm", 1.0 + value, step, walltime=wall0 + step)
        if step % 5 == 0:  # the sampled probes: per-layer attention logits
            for layer in range(2):
                writer.add_scalar(f"attn/max_logit/layer_{layer}", 5.0 + layer + value, step,
                                  walltime=wall0 + step)
    for step, (acc, loss) in (val or {}).items():
        writer.add_scalar("val/acc", acc, step, walltime=wall0 + step)
        writer.add_scalar("val/loss", loss, step, walltime=wall0 + step)
    writer.close()


def summary_for(name: str, toggles: dict[str, Any], hparams: dict[str, Any], status: str,
                curve: np.ndarray, accs: tuple[float, float | None, float | None] | None,
                **extra: Any) -> records.RunSummary:
    best, final, val_loss = accs if accs is not None else (None, None, None)
    finite = curve[np.isfinite(curve)]
    config = config_for(toggles, hparams)
    fields = dict(
        status=status, run_name=name, run_id=name.rsplit("-", 1)[-1], toggles=toggles_of(config),
        hparams=hparams_of(config),
        steps=len(finite), epochs=2, wall_time_s=12.5, train_time_s=11.0, images_per_s=900.0,
        params=104_000, flops_per_image=3_000_000, initial_loss=L0,
        final_train_loss=float(finite[-1]) if status == records.COMPLETED else None,
        final_val_acc=final, best_val_acc=best, final_val_loss=val_loss, best_val_loss=val_loss, test_acc=final,
        test_loss=val_loss, max_grad_norm=3.0, max_attn_logit=12.0,
        versions={"torch": "2.14.1", "lightning": "2.6.6", "stability": "0.1.0", "timm": "1.0.15"},
    )
    return records.RunSummary.from_dict({**fields, **extra})


def write_run(sweep: Path, norm: str, lr: float, seed: int, kind: str, suffix: str) -> Path:
    """One run folder; ``kind`` in completed, diverged, resumed, running, incomplete, failed, pending."""
    toggles = {**BASE_TOGGLES, "norm": norm}
    hparams = {**BASE_HPARAMS, "lr": lr, "seed": seed}
    config = config_for(toggles, hparams)
    name = run_name(config, run_id=suffix)
    run_dir = sweep / name
    run_dir.mkdir(parents=True)
    (run_dir / records.CONFIG).write_text(yaml.safe_dump(config, sort_keys=False))
    if kind == "pending":
        return run_dir
    curve = loss_curve(norm, lr, seed)
    accs = FINISHED.get((norm, lr, seed))
    hp = {**{k: str(v) for k, v in toggles.items()}, "lr": lr, "seed": seed}
    wall0 = 1.7e9 + 1000 * seed
    if kind == "diverged":
        curve[15:DIVERGED_STEP] *= np.linspace(1.5, 4.0, DIVERGED_STEP - 15)  # blowing up, then NaN
        curve[DIVERGED_STEP] = math.nan
        curve = curve[:DIVERGED_STEP + 1]
    if kind == "resumed":
        curve[SPIKE_STEP] *= 3.0  # a spike the later history recovers from
        lost = {s: float(curve[s]) + 1.0 for s in range(0, 25)}  # steps 15..24 will be redone
        for s in range(15):
            lost[s] = float(curve[s])
        write_events(run_dir, lost, wall0=wall0, lrs=lr, val={19: (0.5, 1.2)}, hparams=hp)
        write_events(run_dir, {s: float(curve[s]) for s in range(15, STEPS)}, wall0=wall0 + 100, lrs=lr,
                     val={19: (0.55, 1.1), 39: (accs[1], accs[2])})
    else:
        steps = len(curve) if kind != "incomplete" and kind != "running" else 25
        val = {19: (0.5, 1.2)} if steps > 19 else {}
        if steps == STEPS and accs is not None and accs[1] is not None:
            val[39] = (accs[1], accs[2])
        write_events(run_dir, {s: float(curve[s]) for s in range(steps)}, wall0=wall0, lrs=lr, val=val,
                     hparams=hp)
    (run_dir / "checkpoints").mkdir()
    (run_dir / "checkpoints" / "last.ckpt").write_bytes(b"not a real checkpoint")
    if kind in ("completed", "resumed"):
        summary_for(name, toggles, hparams, records.COMPLETED, curve, accs).write(run_dir)
    elif kind == "diverged":
        summary_for(name, toggles, hparams, records.DIVERGED, curve, accs, diverged_step=DIVERGED_STEP,
                    divergence_reason=f"non-finite training loss (nan) at step {DIVERGED_STEP}").write(run_dir)
    elif kind == "failed":
        summary_for(name, toggles, hparams, records.FAILED, curve, None,
                    error="RuntimeError: CUDA out of memory (fabricated)").write(run_dir)
    elif kind == "incomplete":
        age(run_dir, 3600)
    return run_dir


def age(run_dir: Path, seconds: float) -> None:
    """Make every file of a run look ``seconds`` old (a run cut off long ago)."""
    then = time.time() - seconds
    for p in [run_dir, *run_dir.rglob("*")]:
        os.utime(p, (then, then))


def make_sweep(root: Path, *, unfinished: bool = True) -> Path:
    """The default fabricated sweep (module docstring) under ``root``; returns its folder."""
    sweep = root
    sweep.mkdir(parents=True, exist_ok=True)
    i = 0
    for (norm, lr, seed) in FINISHED:
        kind = "diverged" if (norm, lr, seed) == DIVERGED else "resumed" if (norm, lr, seed) == RESUMED \
            else "completed"
        write_run(sweep, norm, lr, seed, kind, f"{i:06x}")
        i += 1
    if unfinished:
        write_run(sweep, "centernorm", 1e-2, 2, "running", "a00001")
        write_run(sweep, "layernorm", 1e-3, 2, "incomplete", "a00002")
        write_run(sweep, "layernorm", 1e-2, 2, "failed", "a00003")
        pending = write_run(sweep, "centernorm", 1e-3, 2, "pending", "a00004")
        age(pending, 3600)
    return sweep


def make_failed_sweep(root: Path, n: int = 3) -> Path:
    """A sweep whose every run failed."""
    root.mkdir(parents=True, exist_ok=True)
    for seed in range(n):
        write_run(root, "layernorm", 1e-3, seed, "failed", f"f{seed:05x}")
    return root


# Hand-computed expectations for the default sweep (see FINISHED).
def _lr_sens(seed_losses: list[list[float]]) -> tuple[float, float]:
    per_seed = [np.mean(ls) - min(ls) for ls in seed_losses]
    return float(np.mean(per_seed)), float(np.std(per_seed, ddof=1))


EXPECTED = {
    "n_runs": 12,
    "n_finished": 8,
    "status": {"completed": 7, "diverged": 1, "running": 1, "incomplete": 1, "failed": 1, "pending": 1},
    # centernorm - layernorm best_val_acc pairs over (lr, seed): (1e-3,0) +.03, (1e-3,1) +.02, (1e-2,0) +.05,
    # (1e-2,1) .77 - .30 = +.47
    "effect_best_val_acc": [0.03, 0.02, 0.05, 0.47],
    # final_val_acc: the diverged run has none, so 3 pairs
    "effect_final_val_acc": [0.03, 0.02, 0.12],
    "lr_sens": {"layernorm": _lr_sens([[0.60, 0.90], [0.62, L0]]), "centernorm": _lr_sens([[0.55, 0.70],
                                                                                           [0.57, 0.72]])},
    "best_lr": {"layernorm": 1e-3, "centernorm": 1e-3},
    "max_stable_lr": {"layernorm": 1e-3, "centernorm": 1e-2},
}


def write_record(sweep: Path, seed: int, *, lr: float = 1e-3, status: str = "completed", name: str | None = None,
                 history: list[float] | None = None, **values: Any) -> Path:
    """A finished run's record alone (config.yaml + summary.json, no events): what claims are computed from.

    ``values``: toggles (``norm="centernorm"``), hparams (``weight_decay=0.1``) and summary fields
    (``final_val_acc=0.9``); ``history`` is the per-epoch training loss (default: a converged curve).
    """
    toggles = {**BASE_TOGGLES, **{k: v for k, v in values.items() if k in BASE_TOGGLES}}
    hparams = {**BASE_HPARAMS, "lr": lr, "seed": seed,
               **{k: v for k, v in values.items() if k in BASE_HPARAMS}}
    fields = {k: v for k, v in values.items() if k not in BASE_TOGGLES and k not in BASE_HPARAMS}
    config = config_for(toggles, hparams)
    name = name or run_name(config)
    run_dir = sweep / name
    run_dir.mkdir(parents=True)
    (run_dir / records.CONFIG).write_text(yaml.safe_dump(config, sort_keys=False))
    history = history if history is not None else [L0 * 0.5 ** i for i in range(8)] + [0.02] * 8
    records.RunSummary.from_dict({
        "status": status, "run_name": name, "run_id": name.rsplit("-", 1)[-1], "toggles": toggles_of(config),
        "hparams": hparams_of(config), "initial_loss": L0, "train_loss_history": history, **fields,
    }).write(run_dir)
    return run_dir


def write_claims(sweep: Path, claims: list[dict[str, Any]]) -> None:
    """A plan.json that carries only the grid's claims (the run folders are the records)."""
    import json

    (sweep / records.PLAN).write_text(json.dumps({"format": 1, "claims": claims, "runs": []}))
