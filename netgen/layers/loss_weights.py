"""Per-scale weights of the scale refinement loss, changed on a built net (the paper's loss weight scheduling).

Caffe sets a loss top's diff to its ``loss_weight`` once, at net set-up, then takes the loss as
dot(top.data, top.diff) in Layer::Forward and scales the gradient by top.diff in Backward
(EuclideanLoss and ScaleRefinementLoss alike). Writing the diff therefore reweights a scale for
the following iterations without rebuilding the net. Weights are relative to Eq. 5: all ones is
Eq. 5 as written, whichever loss (native EuclideanLoss or the Python layer) the net uses.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from netgen.losses import LOSSES, loss_of_layer_type
from netgen.names import SCALE_LOSS_TOPS


def _per_image_size(net: Any, layer: str) -> int:
    """c * h * w of the prediction that ``layer`` compares."""
    shape = net.blobs[net.bottom_names[layer][0]].data.shape
    return math.prod(shape[1:])


def _loss_layers(net: Any) -> list[tuple[str, str, str]]:
    """(top, producing layer, its type) for each scale loss top of ``net``, coarsest first."""
    producer = {top: layer for layer, tops in net.top_names.items() for top in tops}
    found = [(top, producer[top], net.layer_dict[producer[top]].type) for top in SCALE_LOSS_TOPS if top in net.blobs]
    if not found:
        raise ValueError(f"the net has none of the scale loss tops {', '.join(SCALE_LOSS_TOPS)}")
    for top, _, kind in found:
        if loss_of_layer_type(kind) is None:
            raise ValueError(f"{top} comes from a {kind} layer, which no registered scale loss makes "
                             f"({', '.join(loss.layer_type for loss in LOSSES.values())})")
    return found


def set_scale_loss_weights(net: Any, weights: Sequence[float]) -> None:
    """Weight each scale's term of Eq. 5 by ``weights`` (coarsest first) from the next forward/backward on.

    A weight of 0 switches a scale off (its loss and gradient become 0) and a later call can switch
    it back on, as long as the net was built with a non-zero ``loss_weight`` for it.
    """
    found = _loss_layers(net)
    values = [float(w) for w in weights]
    if len(values) != len(found) or not all(math.isfinite(w) and w >= 0 for w in values):
        raise ValueError(f"need {len(found)} non-negative weights (coarsest scale first), got {list(weights)!r}")
    for (top, layer, kind), weight in zip(found, values, strict=True):
        # EuclideanLoss gives sum(d^2)/(2N): Eq. 5 needs a further 1/(K c h w); the Python layer normalises itself.
        factor = 1.0 if loss_of_layer_type(kind).normalised else 1.0 / (len(found) * _per_image_size(net, layer))
        net.blobs[top].diff[...] = weight * factor


def scale_loss_values(net: Any) -> dict[str, float]:
    """Each scale's unweighted term ||L_k - S_k||^2 / (2 N c_k h_k w_k) after the last forward, coarsest first."""
    found = _loss_layers(net)
    values = {}
    for top, layer, kind in found:
        data = float(net.blobs[top].data)
        values[top] = data * len(found) if loss_of_layer_type(kind).normalised else data / _per_image_size(net, layer)
    return values
