"""stability: which training-stability tricks make Vision Transformers train reliably."""

__version__ = "0.1.0"
