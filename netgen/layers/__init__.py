"""The Caffe Python layers of the networks (scale refinement loss, edge branch): part of the net definition.

Caffe loads them by module path (``python_param { module: "netgen.layers.<name>" }``, the paths in
netgen.names); the loss-weight helpers are how training sets the scale loss's per-scale weights.
"""

from netgen.layers.loss_weights import SCALE_LOSS_TOPS, scale_loss_values, set_scale_loss_weights

__all__ = ["SCALE_LOSS_TOPS", "scale_loss_values", "set_scale_loss_weights"]
