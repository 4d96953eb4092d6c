"""``stability bench``: performance checks.

Parses ``stability bench WHAT [options]`` and runs one of the benches: ``model`` (:mod:`~stability.bench.model`),
``telemetry`` (:mod:`~stability.bench.telemetry`), ``lipschitz`` (:mod:`~stability.bench.lipschitz`), or
``sweep`` (:mod:`~stability.bench.sweep`, which parses its own options).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

from stability.bench.lipschitz import bench_lipschitz
from stability.bench.model import SIZES, bench_model
from stability.bench.telemetry import bench_telemetry
from stability.errors import ArgumentParser, ConfigError


def at_least(low: int) -> Callable[[str], int]:
    """An argparse type: a whole number >= ``low`` (argparse names the option in its one-line error)."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"got {text!r}; give a whole number >= {low}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"got {value}; give a whole number >= {low}")
        return value

    parse.__name__ = f"whole number >= {low}"
    return parse


POSITIVE, COUNT = at_least(1), at_least(0)


def check_device(device: str) -> None:
    """``--device cuda`` on a machine without a GPU is one line, not a CUDA traceback."""
    import torch

    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"stability bench: --device {device}: no CUDA GPU is visible here; use --device cpu")


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(prog="stability bench", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="what", required=True)
    p = sub.add_parser("model", help="train-step time: our ViT vs timm's, and each toggle vs our baseline")
    p.add_argument("--size", choices=sorted(SIZES), default="digits",
                   help="model shape: digits (img 8, patch 2, embed 64, depth 6, heads 4) or cifar-ti "
                        "(img 32, patch 4, embed 192, depth 12, heads 3)")
    p.add_argument("--img", type=POSITIVE, help="override img_size")
    p.add_argument("--patch", type=POSITIVE, help="override patch_size")
    p.add_argument("--embed", type=POSITIVE, help="override embed_dim")
    p.add_argument("--depth", type=POSITIVE, help="override depth")
    p.add_argument("--heads", type=POSITIVE, help="override num_heads")
    p.add_argument("--in-chans", type=POSITIVE, help="override in_chans")
    p.add_argument("--classes", type=POSITIVE, help="override num_classes")
    p.add_argument("--batch", type=POSITIVE, default=64, help="images per step (default 64)")
    p.add_argument("--reps", type=POSITIVE, default=15, help="timed repetitions per model (default 15)")
    p.add_argument("--steps", type=POSITIVE, default=3, help="training steps per repetition (default 3)")
    p.add_argument("--warmup", type=COUNT, default=5, help="untimed steps per model first (default 5)")
    p.add_argument("--threads", type=COUNT, default=1,
                   help="torch threads (default 1: on a shared, busy machine OpenMP's spin-waiting makes "
                        "2+ threads slow and erratic for small models; 0 = torch's default)")
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"), help="cpu (default) or cuda")
    p.add_argument("--no-toggles", action="store_true", help="only baseline vs timm")
    p.set_defaults(func=bench_model)
    t = sub.add_parser("telemetry", help="step-time overhead of the default stability telemetry (target <= 5%%)")
    t.add_argument("--steps", type=POSITIVE, default=60, help="training steps per run (default 60)")
    t.add_argument("--reps", type=POSITIVE, default=5, help="paired repetitions (default 5)")
    t.add_argument("--every", type=POSITIVE, default=10, help="probe period, telemetry.every_n_steps (default 10)")
    t.add_argument("--threads", type=COUNT, default=1, help="torch threads (default 1; 0 = torch's default)")
    t.set_defaults(func=bench_telemetry)
    lp = sub.add_parser("lipschitz", help="cost of the Lipschitz measurements per run and per step")
    lp.add_argument("--reps", type=POSITIVE, default=5, help="timed repetitions of each measurement (default 5)")
    lp.add_argument("--steps", type=POSITIVE, default=20, help="timed training steps per configuration (default 20)")
    lp.add_argument("--threads", type=COUNT, default=1, help="torch threads (default 1; 0 = torch's default)")
    lp.set_defaults(func=bench_lipschitz)
    sub.add_parser("sweep", help="sweep overhead and parallel efficiency (see `stability bench sweep --help`)")
    return parser


def main(argv: list[str]) -> int:
    """Entry point of ``stability bench``; ``argv`` is what follows ``bench`` on the command line."""
    if argv and argv[0] == "sweep":
        from stability.bench.sweep import bench_sweep

        return bench_sweep(argv[1:])
    args = build_parser().parse_args(argv)
    check_device(getattr(args, "device", "cpu"))
    return args.func(args)


if __name__ == "__main__":
    import sys

    sys.exit(main(sys.argv[1:]))
