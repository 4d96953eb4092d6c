"""``stability bench lipschitz``: what the Lipschitz measurements cost a run (see :func:`bench_lipschitz`)."""

from __future__ import annotations

import argparse
import math
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F


def _lipschitz_configs() -> dict[str, tuple[dict, dict]]:
    """The Lipschitz study's configurations: name -> (model.vit, module options), from the shipped files."""
    from pathlib import Path

    from stability.record.config_files import load_config_files

    root = Path(__file__).resolve().parents[2] / "ablations" / "base"
    digits = load_config_files([root / "digits.yaml"])["model"]["vit"]
    lipshift = load_config_files([root / "lipshift.yaml"])["model"]["vit"]
    lipsformer = {**digits, "norm": "centernorm", "attention": "cosine_paper", "residual": "weighted",
                  "init": "spectral", "norm_placement": "post"}
    return {"baseline": (digits, {}), "LipsFormer": (lipsformer, {}), "LipShiFT": (lipshift, {}),
            "LipShiFT+margin": (lipshift, {"margin_eps": 36 / 255})}


def _median_time(fn: Callable[[], object], reps: int) -> float:
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _bench_lipschitz_row(vit: dict, options: dict, data, args: argparse.Namespace,
                         steps_per_run: int) -> dict[str, float]:
    """Timings of one configuration (see :func:`bench_lipschitz`)."""
    from stability.model import ViTConfig
    from stability.model.lipschitz import (
        DEFAULT_RADII,
        FINAL_ITERS,
        STEP_ITERS,
        LipschitzBound,
        certified_mask,
        input_normalization,
        input_scale,
        local_estimates,
        lower_bound,
        pixel_model,
    )
    from stability.training.lipschitz_monitor import LOCAL_BATCH, LOCAL_ITERS, LOWER_BATCH
    from stability.training.module import ViTClassifier

    mean, std = input_normalization(data)
    train_x, train_y = data.splits["train"].images[:64], data.splits["train"].labels[:64]  # one batch
    test_x, test_y = data.splits["test"].images, data.splits["test"].labels
    torch.manual_seed(0)
    module = ViTClassifier(ViTConfig(**vit), **options)
    model = module.model
    if module.lipschitz is not None:
        module.lipschitz.input_scale = input_scale(std)
    bound = LipschitzBound(model, input_scale(std))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)

    def step(margin: bool) -> None:
        opt.zero_grad(set_to_none=True)
        logits = model(train_x)
        loss = module._loss(logits, train_y, 0.0) if margin else F.cross_entropy(logits, train_y)
        loss.backward()
        opt.step()

    model.train()
    for _ in range(3):
        step(module.lipschitz is not None)
    out = {"step": _median_time(lambda: [step(False) for _ in range(args.steps)], 1) / args.steps,
           "margin": float("nan")}
    if module.lipschitz is not None:
        out["margin"] = _median_time(lambda: [step(True) for _ in range(args.steps)], 1) / args.steps
    model.eval()
    f = pixel_model(model, mean, std)
    pixels = train_x * std + mean
    bounds = bound.compute(FINAL_ITERS)
    backbone = None if bounds.backbone is None else float(bounds.backbone)

    def final() -> None:
        measured = bound.compute(FINAL_ITERS)
        lower_bound(f, pixels[:LOWER_BATCH], steps=10)
        if measured.unbounded:
            local_estimates(model, train_x[:LOCAL_BATCH], [layer.name for layer in measured.unbounded],
                            iters=LOCAL_ITERS)

    def certify() -> None:
        with torch.no_grad():
            for i in range(0, len(test_y), 64):
                logits = model(test_x[i:i + 64])
                for radius in DEFAULT_RADII:
                    certified_mask(logits, test_y[i:i + 64], backbone, bounds.head_weight, radius)

    def probe() -> None:
        bound.compute(STEP_ITERS)
        lower_bound(f, pixels, steps=0)

    out["final"], out["certify"], out["probe"] = (_median_time(fn, args.reps) for fn in (final, certify, probe))
    out["run"] = steps_per_run * out["step"]
    return out


def bench_lipschitz(args: argparse.Namespace) -> int:
    """What the Lipschitz measurements cost, on the digits configurations of ``ablations/lipschitz.yaml``:

    - the end-of-run measurement (bound with the final power iterations, refined lower bound, local
      estimates of unbounded layers) and the certification pass over the test split, per run;
    - one in-training measurement (``lipschitz.every_n_steps``), against a training step;
    - margin training: a step with the bound recomputed and differentiated, against a plain step.

    Medians over repetitions, one process, the same machine state for all.
    """
    from stability.data import DigitsDataModule

    if args.threads:
        torch.set_num_threads(args.threads)
    data = DigitsDataModule(batch_size=64)
    data.setup("fit")
    steps_per_run = 20 * len(data.train_dataloader())  # a 20-epoch digits run
    print(f"stability bench lipschitz: digits (batch 64, {len(data.splits['test'])} test images), "
          f"{torch.get_num_threads()} thread(s), medians of {args.reps} repetitions; a 20-epoch run = "
          f"{steps_per_run} steps")
    header = (f"{'configuration':<17}{'step ms':>9}{'final s':>9}{'certify s':>10}{'% of run':>9}"
              f"{'probe ms':>10}{'every 10':>9}{'margin step ms':>16}{'margin +%':>10}")
    print(header)
    print("-" * len(header))
    for name, (vit, options) in _lipschitz_configs().items():
        t = _bench_lipschitz_row(vit, options, data, args, steps_per_run)
        margin = f"{t['margin'] * 1e3:>16.1f}{100 * (t['margin'] / t['step'] - 1):>+9.0f}%" \
            if math.isfinite(t["margin"]) else f"{'':>26}"
        print(f"{name:<17}{t['step'] * 1e3:>9.1f}{t['final']:>9.2f}{t['certify']:>10.2f}"
              f"{100 * (t['final'] + t['certify']) / t['run']:>8.1f}%{t['probe'] * 1e3:>10.1f}"
              f"{100 * t['probe'] / (10 * t['step']):>8.1f}%{margin}")
    print()
    print("step ms: one training step (forward, backward, AdamW) on the CPU, plain cross-entropy; final s: the "
          "end-of-run measurement; certify s: certified accuracy at 5 radii over the test split; % of run: "
          "both against the training steps of a 20-epoch run; probe ms: one in-training measurement, "
          "'every 10': its overhead at lipschitz.every_n_steps=10; margin step: a step of margin training "
          "(bound recomputed and differentiated)")
    return 0
