"""The cost of a planned run (what ``stability sweep --dry-run`` estimates): its work in FLOPs and steps, and
the FLOP rate a training step reaches on this machine (timed with :class:`StepTimer`, which
``stability bench model`` shares).
"""

from __future__ import annotations

import functools
import json
import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

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


def sync_device(device: torch.device) -> None:
    """Wait for the device's queued work (a no-op on the CPU), so that a clock read after it is honest."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class StepTimer:
    """One model, its AdamW optimiser and a fixed batch, to be timed: ``step()`` is one training step."""

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
        timer = StepTimer(VisionTransformer(ViTConfig(**vit)), dims, size, device)
        flops = timer.flops_per_step()
        timer.step()  # warm-up: allocations, first-call costs
        sync_device(device)
        start, steps = time.perf_counter(), 0
        while steps < 1 or time.perf_counter() - start < 0.5:
            timer.step()
            steps += 1
        sync_device(device)
        return flops * steps / (time.perf_counter() - start)
    finally:
        torch.set_num_threads(before)
