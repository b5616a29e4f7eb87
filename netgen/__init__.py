"""Prototxt generators of the paper's four variants (RefineNet, LWRefineNet, RCRefineNet, MRFNet).

``build_train_val`` and ``build_deploy`` return caffe_pb2.NetParameter messages; ``write_prototxts``
writes the committed ``prototxt/<variant>/{train_val,deploy}.prototxt``.
"""

from netgen.edge_branch import EdgeOptions
from netgen.names import EDGE_LOSS_TOPS, INPUT, OUTPUTS, PREDICTION, SCALE_LOSS_TOPS, TARGETS
from netgen.network import build_deploy, build_train_val, write_prototxts
from netgen.variants import VARIANTS, Variant, get_variant, scale_sides

__all__ = ["EDGE_LOSS_TOPS", "INPUT", "OUTPUTS", "PREDICTION", "SCALE_LOSS_TOPS", "TARGETS", "VARIANTS", "EdgeOptions",
           "Variant", "build_deploy", "build_train_val", "get_variant", "scale_sides", "write_prototxts"]
