"""Re-export for prototxt that name ``mrfnet.layers.edge`` (see mrfnet/layers/__init__.py)."""

from netgen.layers.edge import AlphaMix, EdgeAdversarialLoss, Grayscale, SobelMagnitude

__all__ = ["AlphaMix", "EdgeAdversarialLoss", "Grayscale", "SobelMagnitude"]
