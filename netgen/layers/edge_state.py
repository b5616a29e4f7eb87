"""What training changes on a built net's edge layers between steps: AlphaMix's alpha, the discriminators' step.

Found by class name, so that the training loop need not import the layers' module (which imports
Caffe, and glog reads its settings once, at that import) before it has set Caffe up.
"""

from __future__ import annotations

from typing import Any


def edge_layers(net: Any, kind: str) -> list[Any]:
    """The Python layer objects of class ``kind`` (netgen.layers.edge) in ``net``."""
    return [layer for layer in net.layers if type(layer).__name__ == kind]


def set_edge_alpha(net: Any, alpha: float) -> None:
    for layer in edge_layers(net, "AlphaMix"):
        layer.alpha = float(alpha)


def train_discriminators(net: Any) -> list[float]:
    """The alternating step: train every edge discriminator of ``net`` once; their losses."""
    return [layer.train_discriminator() for layer in edge_layers(net, "EdgeAdversarialLoss")]
