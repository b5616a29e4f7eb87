"""Re-export for prototxt that name ``mrfnet.layers.scale_loss`` (see mrfnet/layers/__init__.py)."""

from netgen.layers.scale_loss import ScaleRefinementLoss

__all__ = ["ScaleRefinementLoss"]
