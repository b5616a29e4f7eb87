"""Python layers that Caffe loads by module name (python_param { module: "mrfnet.layers.<name>" })."""

from mrfnet.layers.loss_weights import SCALE_LOSS_TOPS, scale_loss_values, set_scale_loss_weights

__all__ = ["SCALE_LOSS_TOPS", "scale_loss_values", "set_scale_loss_weights"]
