"""The edge reconstruction branch of section 3.3.3, a training-time addition to train_val.

Ground-truth edges are the Sobel magnitude of the grayscale sharp image. A small edge generator
G_e reads the grayscale blurred image and a second grayscale input that AlphaMix moves from the
blurred image (alpha = 0, early training: G_e learns edges on its own) to the network's
prediction (alpha = 1, from the middle of training: the edge losses now reach the deblurring
network through the prediction, which must carry edges that G_e can turn into real-looking ones).
Its losses: an L2 edge reconstruction term and the adversarial + feature-matching objective of
Eq. (3) (EdgeAdversarialLoss, which owns the discriminator D_e). Every layer is TRAIN-only, so the
validation pass and the deploy net are the plain network: the branch costs nothing at inference.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import caffe
from caffe import layers as L
from caffe.net_spec import Top

from netgen import blocks
from netgen.names import EDGE_LOSS_TOPS, EDGE_MODULE

GENERATOR_WIDTH = 32
GENERATOR_LAYERS = 3


@dataclass(frozen=True)
class EdgeOptions:
    """Weights of the edge branch: ``l2_weight`` on the mean squared edge error, ``adversarial_weight``
    on a_adv * L_adv + a_fm * L_FM, and the discriminator's learning rate."""

    l2_weight: float = 1.0
    adversarial_weight: float = 0.01
    a_adv: float = 1.0
    a_fm: float = 10.0
    d_lr: float = 1e-5


def _train_only(n: caffe.NetSpec, name: str, layer: Top) -> Top:
    layer.fn.params["include"] = dict(phase=caffe.TRAIN)
    n[name] = layer
    return layer


def _python(n: caffe.NetSpec, name: str, layer: str, *bottoms: Top, params: dict | None = None, **extra) -> Top:
    python_param = dict(module=EDGE_MODULE, layer=layer)
    if params is not None:
        python_param["param_str"] = json.dumps(params, sort_keys=True)
    return _train_only(n, name, L.Python(*bottoms, python_param=python_param, **extra))


def add_edge_branch(n: caffe.NetSpec, blur: Top, sharp: Top, prediction: Top, crop_size: int,
                    options: EdgeOptions) -> None:
    """Add the TRAIN-phase edge branch; its loss tops are ``loss_edge`` and ``loss_edge_adv``."""
    blur_gray = _python(n, "blur_gray", "Grayscale", blur)
    sharp_gray = _python(n, "sharp_gray", "Grayscale", sharp)
    prediction_gray = _python(n, "prediction_gray", "Grayscale", prediction)
    edge_gt = _python(n, "edge_gt", "SobelMagnitude", sharp_gray)
    mixed = _python(n, "edge_input", "AlphaMix", blur_gray, prediction_gray, params={"alpha": 0.0})
    x = _train_only(n, "edge_gen_cat", L.Concat(blur_gray, mixed, axis=1))
    for index in range(1, GENERATOR_LAYERS + 1):
        name = f"edge_gen_conv{index}"
        _train_only(n, name, L.Convolution(x, num_output=GENERATOR_WIDTH, kernel_size=3, pad=1,
                                           weight_filler=blocks.WEIGHT_FILLER, bias_filler=blocks.BIAS_FILLER))
        x = _train_only(n, f"{name}_relu", L.ReLU(n[name], in_place=True))
    _train_only(n, "edge_gen_out", L.Convolution(x, num_output=1, kernel_size=3, pad=1,
                                                 weight_filler=blocks.WEIGHT_FILLER, bias_filler=blocks.BIAS_FILLER))
    edge = _train_only(n, "edge", L.Sigmoid(n["edge_gen_out"]))
    # EuclideanLoss gives sum/(2N): dividing by h*w makes it the per-pixel mean squared error / 2.
    _train_only(n, EDGE_LOSS_TOPS[0], L.EuclideanLoss(edge, edge_gt,
                                                      loss_weight=options.l2_weight / (crop_size * crop_size)))
    params = dict(a_adv=options.a_adv, a_fm=options.a_fm, d_lr=options.d_lr)
    _python(n, EDGE_LOSS_TOPS[1], "EdgeAdversarialLoss", edge, edge_gt, sharp_gray, params=params,
            loss_weight=options.adversarial_weight)
