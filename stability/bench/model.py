"""``stability bench``: performance checks.

``stability bench lipschitz`` measures what the Lipschitz measurements cost a run (see
:func:`bench_lipschitz`).

``stability bench model`` times one training step (forward, backward, AdamW step) of our baseline ViT
against timm's ``VisionTransformer`` of the same size, and of every single toggle against our baseline.
Each model is timed right next to its reference in every repetition, so drifting machine load hits both
sides of a ratio alike; step times are medians over repetitions, ratios medians of the paired ratios. It
also measures the machine's matmul rate and each model's achieved FLOP rate as a fraction of it.

Targets (``BASELINE_VS_TIMM_TARGET``, ``TOGGLE_TARGET``): baseline / timm <= 1.00, i.e. our ViT is no
slower than timm's; every single toggle <= 1.15 x baseline.
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import torch
import torch.nn.functional as F
from torch import nn

from stability.errors import ArgumentParser

SIZES = {
    # the digits model (ViTConfig's defaults, as in ablations/base/digits.yaml): 8x8 greyscale, 10 classes
    "digits": dict(img_size=8, patch_size=2, in_chans=1, num_classes=10, embed_dim=64, depth=6, num_heads=4),
    # a ViT-Ti-like CIFAR shape: 32x32 RGB, patch 4 (8x8 tokens), ViT-Ti width/depth/heads
    "cifar-ti": dict(img_size=32, patch_size=4, in_chans=3, num_classes=10, embed_dim=192, depth=12,
                     num_heads=3),
}
BASELINE_VS_TIMM_TARGET = 1.00
TOGGLE_TARGET = 1.15


@dataclass
class Candidate:
    name: str
    build: Callable[[], nn.Module]
    target: float | None  # max ratio to its reference, None for the references themselves
    reference: str | None


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_rate(m: int, k: int, n: int, device: torch.device, reps: int = 20) -> float:
    """GFLOP/s of torch.mm (m, k) x (k, n), median over ``reps`` timed calls after warmup."""
    a, b = torch.randn(m, k, device=device), torch.randn(k, n, device=device)
    inner = max(1, int(2e8 // (2 * m * k * n)))  # ~0.2 GFLOP per timed call
    for _ in range(3):
        torch.mm(a, b)
    times = []
    for _ in range(reps):
        _sync(device)
        start = time.perf_counter()
        for _ in range(inner):
            torch.mm(a, b)
        _sync(device)
        times.append((time.perf_counter() - start) / inner)
    return 2 * m * k * n / statistics.median(times) / 1e9


class Trainer:
    """One model, its AdamW optimiser and a fixed batch: ``step()`` is one training step."""

    def __init__(self, model: nn.Module, dims: dict, batch: int, device: torch.device, seed: int = 0) -> None:
        g = torch.Generator().manual_seed(seed)
        self.model = model.to(device).train()
        self.x = torch.randn(batch, dims["in_chans"], dims["img_size"], dims["img_size"], generator=g).to(device)
        self.y = torch.randint(0, dims["num_classes"], (batch,), generator=g).to(device)
        params = [p for p in self.model.parameters() if p.requires_grad]
        self.opt = torch.optim.AdamW(params, lr=1e-4, weight_decay=0.05)

    def step(self) -> None:
        self.opt.zero_grad(set_to_none=True)
        F.cross_entropy(self.model(self.x), self.y).backward()
        self.opt.step()

    def flops_per_step(self) -> int:
        """Forward + backward FLOPs of one step (the optimiser's elementwise work is not counted)."""
        from torch.utils.flop_counter import FlopCounterMode

        from stability.model.flops import CPU_SDPA_FLOPS

        with FlopCounterMode(display=False, custom_mapping=CPU_SDPA_FLOPS) as counter:
            F.cross_entropy(self.model(self.x), self.y).backward()
        self.opt.zero_grad(set_to_none=True)
        return counter.get_total_flops()


def _ours(dims: dict, toggles: dict[str, str]) -> nn.Module:
    from stability.model import VisionTransformer, ViTConfig
    from stability.model.config import with_requirements

    return VisionTransformer(ViTConfig(**dims, **with_requirements(toggles)))


def candidates(dims: dict, toggles: bool) -> list[Candidate]:
    from timm.models.vision_transformer import VisionTransformer as TimmViT

    from stability.model import TOGGLES

    out = [
        Candidate("timm VisionTransformer", partial(TimmViT, **dims), None, None),
        Candidate("ours, baseline", partial(_ours, dims, {}), BASELINE_VS_TIMM_TARGET, "timm VisionTransformer"),
    ]
    if toggles:
        for name, values in TOGGLES.items():
            for value in values[1:]:
                out.append(Candidate(f"{name}={value}", partial(_ours, dims, {name: value}), TOGGLE_TARGET,
                                     "ours, baseline"))
    return out


def bench_model(args: argparse.Namespace) -> int:
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    dims = dict(SIZES[args.size])
    for key, arg in (("img_size", "img"), ("patch_size", "patch"), ("embed_dim", "embed"), ("depth", "depth"),
                     ("num_heads", "heads"), ("in_chans", "in_chans"), ("num_classes", "classes")):
        if getattr(args, arg) is not None:
            dims[key] = getattr(args, arg)
    batch = args.batch

    torch.manual_seed(0)
    cands = candidates(dims, toggles=not args.no_toggles)
    trainers = {c.name: Trainer(c.build(), dims, batch, device) for c in cands}
    flops = {name: t.flops_per_step() for name, t in trainers.items()}
    tokens = (dims["img_size"] // dims["patch_size"]) ** 2 + 1
    mm_shape = (batch * tokens, dims["embed_dim"], 4 * dims["embed_dim"])  # the MLP's first Linear
    rate = matmul_rate(*mm_shape, device=device)

    for t in trainers.values():
        for _ in range(args.warmup):
            t.step()

    def timed(name: str) -> float:
        t = trainers[name]
        _sync(device)
        start = time.perf_counter()
        for _ in range(args.steps):
            t.step()
        _sync(device)
        return (time.perf_counter() - start) / args.steps

    # Each model is timed right next to its reference (A B, then B A in the next repetition), so a burst of
    # load from other processes hits both sides of a ratio alike; pairs are visited in rotating order.
    pairs = [(c.name, c.reference) for c in cands if c.reference is not None]
    times: dict[str, list[float]] = {name: [] for name in trainers}
    ratios: dict[str, list[float]] = {name: [] for name, _ in pairs}
    for rep in range(args.reps):
        shift = rep % len(pairs)
        for i, (name, ref) in enumerate(pairs[shift:] + pairs[:shift]):
            if (rep + i) % 2:
                t_model, t_ref = timed(name), timed(ref)
            else:
                t_ref, t_model = timed(ref), timed(name)
            times[name].append(t_model)
            times[ref].append(t_ref)
            ratios[name].append(t_model / t_ref)

    print(f"stability bench model: size={args.size} {dims} batch={batch} device={device} "
          f"threads={torch.get_num_threads()} torch={torch.__version__}")
    print(f"timing: {args.warmup} warmup steps per model, then {args.reps} repetitions; in each, every model "
          f"runs {args.steps} steps right next to its reference (order alternating); medians over repetitions")
    print(f"matmul rate: torch.mm {mm_shape[0]}x{mm_shape[1]} @ {mm_shape[1]}x{mm_shape[2]} (the MLP fc1 "
          f"shape): {rate:.1f} GFLOP/s")
    print()
    header = (f"{'model':<24}{'median ms':>10}{'best ms':>9}{'ratio':>8}  {'vs':<24}{'target':>7}  {'ok':<5}"
              f"{'GFLOP/s':>8}{'of mm':>7}")
    print(header)
    print("-" * len(header))
    misses = 0
    for c in cands:
        med = statistics.median(times[c.name])
        gflops = flops[c.name] / med / 1e9
        if c.reference is None:
            ratio_s, vs, target_s, ok = "", "", "", ""
        else:
            ratio = statistics.median(ratios[c.name])
            ok = "yes" if ratio <= c.target else "MISS"
            misses += ok == "MISS"
            ratio_s, vs, target_s = f"{ratio:.3f}", c.reference, f"<={c.target:.2f}"
        print(f"{c.name:<24}{med * 1e3:>10.2f}{min(times[c.name]) * 1e3:>9.2f}{ratio_s:>8}  {vs:<24}"
              f"{target_s:>7}  {ok:<5}{gflops:>8.2f}{gflops / rate:>7.1%}")
    print()
    print("ratio = median over repetitions of (this model's time / its reference's time, measured next to it); "
          "GFLOP/s = forward + backward FLOPs of one step / median step time; 'of mm' = that / the matmul rate")
    print(f"{misses} target(s) missed" if misses else "all targets met")
    return 0


# -- the cost of a planned run (what `stability sweep --dry-run` estimates) ---------------------------------
# Measured on the project's machine (2 CPU cores, digits runs of ablations/digits.yaml, one thread per worker):
# what a run costs beyond its training steps' FLOPs: Lightning's per-step work (hooks, logging every step,
# the telemetry) and each run's fixed work (building the trainer, validation and test loaders, checkpoints).
# These are figures of an idle machine: a machine shared with other work runs slower than estimated.
STEP_OVERHEAD_S = 0.012
RUN_OVERHEAD_S = 1.5
SWEEP_STARTUP_S = 10.0  # the sweep's start: its workers import Lightning, then validate every cell
# Training images of data sets whose folder may be absent when a sweep is planned (the split sizes are facts
# of the data sets); other data modules are asked (their folder must then exist).
KNOWN_TRAIN_IMAGES = {"CIFAR10DataModule": 50_000, "CIFAR100DataModule": 50_000}


@dataclass
class RunWork:
    """The work of one run: ``train_steps`` optimiser steps of ``batch_size`` images, and ``eval_images``
    forward passes (validation every epoch, then the test), for a model of ``flops_per_image`` forward FLOPs."""

    flops_per_image: int
    batch_size: int
    train_steps: int
    eval_images: int

    @property
    def flops(self) -> float:
        # A backward pass costs about twice the forward (Kaplan et al. 2020, sec. 2.1: C = 6N per token).
        return 3.0 * self.flops_per_image * self.batch_size * self.train_steps + self.flops_per_image * self.eval_images

    def seconds(self, rate: float) -> float:
        """Wall time at ``rate`` FLOP/s plus the measured per-step and per-run overheads."""
        return self.flops / rate + self.train_steps * STEP_OVERHEAD_S + RUN_OVERHEAD_S


def _limited(batches: int, limit: float | int | None) -> int:
    """Lightning's ``limit_*_batches``: an int caps the batches, a float is a fraction of them."""
    if limit is None:
        return batches
    if isinstance(limit, int) and not isinstance(limit, bool):
        return min(batches, limit)
    return max(1, int(batches * float(limit))) if float(limit) > 0 else 0


@functools.lru_cache(maxsize=64)
def _batches(data_json: str) -> tuple[int, int, int]:
    """(train, validation, test) batches per epoch of a data module (its config as JSON: cells share it)."""
    from importlib import import_module

    from stability.errors import ConfigError

    data = json.loads(data_json)
    module, _, name = str(data.get("class_path", "")).rpartition(".")
    args = dict(data.get("init_args") or {})
    batch = int(args.get("batch_size", 1))
    try:
        datamodule = getattr(import_module(module), name)(**args)
        datamodule.setup("fit")
        train, val = len(datamodule.train_dataloader()), len(datamodule.val_dataloader())
        datamodule.setup("test")
        test = len(datamodule.test_dataloader())
    except ConfigError:
        if name not in KNOWN_TRAIN_IMAGES:
            raise
        images = KNOWN_TRAIN_IMAGES[name]
        n_val = int(images * float(args.get("val_fraction", 0.1)))
        train, val, test = -(-(images - n_val) // batch), -(-n_val // batch), -(-10_000 // batch)
    return train, val, test


def run_work(config: dict) -> RunWork:
    """The work of a planned run, from its resolved config (the model is built, the data module asked)."""
    trainer = config.get("trainer") or {}
    train, val, test = _batches(json.dumps(config.get("data") or {}, sort_keys=True))
    train = _limited(train, trainer.get("limit_train_batches"))
    val, test = _limited(val, trainer.get("limit_val_batches")), _limited(test, trainer.get("limit_test_batches"))
    epochs = int(trainer.get("max_epochs") or 1)
    steps = epochs * train
    if (trainer.get("max_steps") or -1) > 0:
        steps = min(steps, int(trainer["max_steps"]))
    batch = int(((config.get("data") or {}).get("init_args") or {}).get("batch_size", 1))
    return RunWork(_forward_flops(json.dumps(config["model"]["vit"], sort_keys=True)), batch, steps,
                   (epochs * val + test) * batch)


@functools.lru_cache(maxsize=256)
def _forward_flops(vit_json: str) -> int:
    from stability.model import VisionTransformer, ViTConfig, count_flops

    return count_flops(VisionTransformer(ViTConfig(**json.loads(vit_json))))


def measured_step_rate(config: dict, device: torch.device, threads: int, batch: int = 64) -> float:
    """FLOP/s a training step (forward, backward, AdamW) of the config's model reaches on this machine with
    ``threads`` torch threads, measured on ``min(batch, its batch size)`` images (a smaller batch is less
    efficient: the estimate errs long rather than short)."""
    from stability.model import VisionTransformer, ViTConfig

    vit = config["model"]["vit"]
    size = min(batch, int(((config.get("data") or {}).get("init_args") or {}).get("batch_size", batch)))
    dims = {"in_chans": vit.get("in_chans", 1), "img_size": vit.get("img_size", 8),
            "num_classes": vit.get("num_classes", 10)}
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        trainer = Trainer(VisionTransformer(ViTConfig(**vit)), dims, size, device)
        flops = trainer.flops_per_step()
        trainer.step()  # warm-up: allocations, first-call costs
        _sync(device)
        start, steps = time.perf_counter(), 0
        while steps < 1 or time.perf_counter() - start < 0.5:
            trainer.step()
            steps += 1
        _sync(device)
        return flops * steps / (time.perf_counter() - start)
    finally:
        torch.set_num_threads(before)


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(prog="stability bench", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="what", required=True)
    p = sub.add_parser("model", help="train-step time: our ViT vs timm's, and each toggle vs our baseline")
    p.add_argument("--size", choices=sorted(SIZES), default="digits",
                   help="model shape: digits (img 8, patch 2, embed 64, depth 6, heads 4) or cifar-ti "
                        "(img 32, patch 4, embed 192, depth 12, heads 3)")
    p.add_argument("--img", type=int, help="override img_size")
    p.add_argument("--patch", type=int, help="override patch_size")
    p.add_argument("--embed", type=int, help="override embed_dim")
    p.add_argument("--depth", type=int, help="override depth")
    p.add_argument("--heads", type=int, help="override num_heads")
    p.add_argument("--in-chans", type=int, help="override in_chans")
    p.add_argument("--classes", type=int, help="override num_classes")
    p.add_argument("--batch", type=int, default=64, help="images per step (default 64)")
    p.add_argument("--reps", type=int, default=15, help="timed repetitions per model (default 15)")
    p.add_argument("--steps", type=int, default=3, help="training steps per repetition (default 3)")
    p.add_argument("--warmup", type=int, default=5, help="untimed steps per model first (default 5)")
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads (default 1: on a shared, busy machine OpenMP's spin-waiting makes "
                        "2+ threads slow and erratic for small models; 0 = torch's default)")
    p.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    p.add_argument("--no-toggles", action="store_true", help="only baseline vs timm")
    p.set_defaults(func=bench_model)
    t = sub.add_parser("telemetry", help="step-time overhead of the default stability telemetry (target <= 5%%)")
    t.add_argument("--steps", type=int, default=60, help="training steps per run (default 60)")
    t.add_argument("--reps", type=int, default=5, help="paired repetitions (default 5)")
    t.add_argument("--every", type=int, default=10, help="probe period, telemetry.every_n_steps (default 10)")
    t.add_argument("--threads", type=int, default=1, help="torch threads (default 1; 0 = torch's default)")
    t.set_defaults(func=bench_telemetry)
    lp = sub.add_parser("lipschitz", help="cost of the Lipschitz measurements per run and per step")
    lp.add_argument("--reps", type=int, default=5, help="timed repetitions of each measurement (default 5)")
    lp.add_argument("--steps", type=int, default=20, help="timed training steps per configuration (default 20)")
    lp.add_argument("--threads", type=int, default=1, help="torch threads (default 1; 0 = torch's default)")
    lp.set_defaults(func=bench_lipschitz)
    sub.add_parser("sweep", help="sweep overhead and parallel efficiency (see `stability bench sweep --help`)")
    return parser


class _TrainLoopClock:
    """Wall time of the training loop only (on_train_start -> on_train_end), for the telemetry bench."""

    def __init__(self) -> None:
        import lightning as L

        class Clock(L.Callback):
            def on_train_start(inner, trainer, pl_module) -> None:  # noqa: N805
                self.start = time.perf_counter()

            def on_train_end(inner, trainer, pl_module) -> None:  # noqa: N805
                self.seconds = time.perf_counter() - self.start

        self.callback, self.start, self.seconds = Clock(), 0.0, 0.0


def bench_telemetry(args: argparse.Namespace) -> int:
    """Step time of a digits training run with the default telemetry (divergence check, per-step gradient norm,
    sampled block/attention probes) against the same run without it; both log loss/LR to TensorBoard."""
    import tempfile

    import lightning as L
    from lightning.pytorch.loggers import TensorBoardLogger

    from stability.data.modules import DigitsDataModule
    from stability.model import ViTConfig
    from stability.training.module import ViTClassifier
    from stability.training.telemetry import DivergenceDetector, StabilityTelemetry

    if args.threads:
        torch.set_num_threads(args.threads)

    def fit(with_telemetry: bool, folder: str) -> float:
        L.seed_everything(0, verbose=False)
        clock = _TrainLoopClock()
        callbacks = [clock.callback]
        if with_telemetry:
            callbacks += [DivergenceDetector(), StabilityTelemetry(every_n_steps=args.every)]
        trainer = L.Trainer(max_steps=args.steps, logger=TensorBoardLogger(folder, name="", version="v"),
                            callbacks=callbacks, log_every_n_steps=1, enable_checkpointing=False,
                            enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                            limit_val_batches=0, accelerator="cpu", devices=1)
        trainer.fit(ViTClassifier(ViTConfig()), datamodule=DigitsDataModule(batch_size=64))
        return clock.seconds / args.steps

    ratios, plain, watched = [], [], []
    with tempfile.TemporaryDirectory() as folder:
        fit(True, folder)  # warm-up: imports, allocator, first-call costs
        for rep in range(args.reps):
            a, b = fit(False, f"{folder}/a{rep}"), fit(True, f"{folder}/b{rep}")
            plain.append(a)
            watched.append(b)
            ratios.append(b / a)
    ratio = statistics.median(ratios)
    print(f"digits model, batch 64, {args.steps} steps per run, {args.reps} paired repetitions, "
          f"{torch.get_num_threads()} thread(s), probes every {args.every} steps")
    print(f"  without telemetry: {1e3 * statistics.median(plain):.1f} ms/step (median)")
    print(f"  with telemetry:    {1e3 * statistics.median(watched):.1f} ms/step (median)")
    print(f"  overhead: {100 * (ratio - 1):+.1f}% (median of paired ratios; target <= +5%)")
    return 0


def _lipschitz_configs() -> dict[str, tuple[dict, dict]]:
    """The Lipschitz study's configurations: name -> (model.vit, module options), from the shipped files."""
    from pathlib import Path

    from stability.record.config_files import load_config_files

    root = Path(__file__).resolve().parents[1] / "ablations" / "base"
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
    from stability.model.lipschitz.bounds import (
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
    from stability.data.modules import DigitsDataModule

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


def main(argv: list[str]) -> int:
    """Entry point of ``stability bench``; ``argv`` is what follows ``bench`` on the command line."""
    if argv and argv[0] == "sweep":
        from stability.bench.sweep import bench_sweep

        return bench_sweep(argv[1:])
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    import sys

    sys.exit(main(sys.argv[1:]))
