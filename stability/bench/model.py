"""``stability bench model``: the speed of our ViT against timm's, and the machine's matmul rate.

It times one training step (forward, backward, AdamW step) of our baseline ViT against timm's
``VisionTransformer`` of the same size, and of every single toggle against our baseline.
Each model is timed right next to its reference in every repetition, so drifting machine load hits both
sides of a ratio alike; step times are medians over repetitions, ratios medians of the paired ratios. It
also measures the machine's matmul rate and each model's achieved FLOP rate as a fraction of it.

Targets (``BASELINE_VS_TIMM_TARGET``, ``TOGGLE_TARGET``): baseline / timm <= 1.00, i.e. our ViT is no
slower than timm's; every single toggle <= 1.15 x baseline.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import torch
from torch import nn

from stability.sweep.cost import StepTimer, sync_device

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


def matmul_rate(m: int, k: int, n: int, device: torch.device, reps: int = 20) -> float:
    """GFLOP/s of torch.mm (m, k) x (k, n), median over ``reps`` timed calls after warmup."""
    a, b = torch.randn(m, k, device=device), torch.randn(k, n, device=device)
    inner = max(1, int(2e8 // (2 * m * k * n)))  # ~0.2 GFLOP per timed call
    for _ in range(3):
        torch.mm(a, b)
    times = []
    for _ in range(reps):
        sync_device(device)
        start = time.perf_counter()
        for _ in range(inner):
            torch.mm(a, b)
        sync_device(device)
        times.append((time.perf_counter() - start) / inner)
    return 2 * m * k * n / statistics.median(times) / 1e9


def _ours(dims: dict, toggles: dict[str, str]) -> nn.Module:
    from stability.model import VisionTransformer, ViTConfig
    from stability.model.config import with_requirements

    return VisionTransformer(ViTConfig(**dims, **with_requirements(toggles)))


def candidates(dims: dict, toggles: bool) -> list[Candidate]:
    from timm.models.vision_transformer import VisionTransformer as TimmViT

    from stability.model import MODEL_TOGGLES

    out = [
        Candidate("timm VisionTransformer", partial(TimmViT, **dims), None, None),
        Candidate("ours, baseline", partial(_ours, dims, {}), BASELINE_VS_TIMM_TARGET, "timm VisionTransformer"),
    ]
    if toggles:
        for name, values in MODEL_TOGGLES.items():
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
    timers = {c.name: StepTimer(c.build(), dims, batch, device) for c in cands}
    flops = {name: t.flops_per_step() for name, t in timers.items()}
    tokens = (dims["img_size"] // dims["patch_size"]) ** 2 + 1
    mm_shape = (batch * tokens, dims["embed_dim"], 4 * dims["embed_dim"])  # the MLP's first Linear
    rate = matmul_rate(*mm_shape, device=device)

    for t in timers.values():
        for _ in range(args.warmup):
            t.step()

    def timed(name: str) -> float:
        t = timers[name]
        sync_device(device)
        start = time.perf_counter()
        for _ in range(args.steps):
            t.step()
        sync_device(device)
        return (time.perf_counter() - start) / args.steps

    # Each model is timed right next to its reference (A B, then B A in the next repetition), so a burst of
    # load from other processes hits both sides of a ratio alike; pairs are visited in rotating order.
    pairs = [(c.name, c.reference) for c in cands if c.reference is not None]
    times: dict[str, list[float]] = {name: [] for name in timers}
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
