"""The configurable Vision Transformer: ``VisionTransformer(ViTConfig(norm="centernorm"))``.

``TOGGLES`` maps each stability toggle to its valid values, baseline first.
"""

from stability.model.config import TOGGLES, ViTConfig
from stability.model.flops import count_flops
from stability.model.vit import VisionTransformer

__all__ = ["TOGGLES", "ViTConfig", "VisionTransformer", "count_flops"]
