"""The configurable Vision Transformer: ``VisionTransformer(ViTConfig(norm="centernorm"))``.

``MODEL_TOGGLES`` maps each model toggle to its built-in values, baseline first; a toggle also takes a user's own
component by entry point or class path (:mod:`stability.model.registry`, through which every component is built).

The config (:mod:`stability.model.config`) is plain Python; the network needs torch. The package loads the
torch-backed names on first use (PEP 562 ``__getattr__``), so code that only names runs and reads records
(:mod:`stability.record.identity`, the sweep parent, the report) can import the config without importing torch.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

from stability.model.config import MODEL_TOGGLES, ViTConfig

if TYPE_CHECKING:
    from stability.model.flops import count_flops
    from stability.model.vit import VisionTransformer

_LAZY = {"VisionTransformer": "stability.model.vit", "count_flops": "stability.model.flops"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["MODEL_TOGGLES", "ViTConfig", "VisionTransformer", "count_flops"]
