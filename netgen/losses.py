"""The scale refinement loss (Eq. 5) and its implementations, one registered entry each.

Eq. 5, L = 1/(2K) sum_k ||L_k - S_k||^2 / (c_k h_k w_k) (batch mean), with one top per scale
(loss_r1..loss_rK, coarsest first). An implementation says how it adds its layers to a net and
whether its tops are already normalised per pixel: that is all the code that builds the nets
(netgen.network), reweights them while training and reads their values
(netgen.layers.loss_weights) needs, so a new implementation is one :func:`register_loss` entry
(plus its layer module, if it is a Python layer) and its test.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import caffe
from caffe import layers as L
from caffe.net_spec import Top

from netgen.errors import NetgenError
from netgen.names import SCALE_LOSS_LAYER, SCALE_LOSS_MODULE, SCALE_LOSS_TOPS
from netgen.variants import SCALES, scale_sides

# adds the loss layers to a NetSpec: (net, outputs coarsest first, their targets, crop side, per-scale loss_weight)
AddLoss = Callable[[caffe.NetSpec, Sequence[Top], Sequence[Top], int, Sequence[float]], None]


@dataclass(frozen=True)
class ScaleLoss:
    """One implementation of Eq. 5: its name (``--loss``), the Caffe layer type that makes its tops, how it is
    added to a net, and whether its tops are per-pixel terms already (else a top is sum(d^2)/(2N), as Caffe's
    EuclideanLoss gives, and is divided by c*h*w of its scale at run time)."""

    name: str
    layer_type: str
    add: AddLoss
    normalised: bool


LOSSES: dict[str, ScaleLoss] = {}  # name -> implementation, in registration order


def register_loss(loss: ScaleLoss) -> ScaleLoss:
    if loss.name in LOSSES:
        raise ValueError(f"loss {loss.name!r} is registered twice")
    if any(other.layer_type == loss.layer_type for other in LOSSES.values()):
        raise ValueError(f"loss {loss.name!r}: another loss already makes {loss.layer_type} tops (the run-time code "
                         "tells the implementations apart by their layer type)")
    LOSSES[loss.name] = loss
    return loss


def get_loss(name: str) -> ScaleLoss:
    if name not in LOSSES:
        raise NetgenError(f"unknown loss {name!r}; choose one of {', '.join(LOSSES)}")
    return LOSSES[name]


def loss_of_layer_type(layer_type: str) -> ScaleLoss | None:
    return next((loss for loss in LOSSES.values() if loss.layer_type == layer_type), None)


def _add_native(n: caffe.NetSpec, outputs: Sequence[Top], targets: Sequence[Top], crop_size: int,
                weights: Sequence[float]) -> None:
    """One EuclideanLoss per scale, whose sum/(2N) gets loss_weight w_k / (K c_k h_k w_k)."""
    for top, output, target, (h, w), weight in zip(SCALE_LOSS_TOPS, outputs, targets,
                                                   scale_sides(crop_size, crop_size), weights, strict=True):
        n[top] = L.EuclideanLoss(output, target, loss_weight=weight / (SCALES * 3 * h * w))


def _add_python(n: caffe.NetSpec, outputs: Sequence[Top], targets: Sequence[Top], crop_size: int,
                weights: Sequence[float]) -> None:
    """One ScaleRefinementLoss layer (netgen.layers.scale_loss) that normalises itself; its tops get w_k."""
    pairs = [blob for pair in zip(outputs, targets, strict=True) for blob in pair]
    tops = L.Python(*pairs, name="scale_loss", ntop=SCALES, loss_weight=list(weights),
                    python_param=dict(module=SCALE_LOSS_MODULE, layer=SCALE_LOSS_LAYER,
                                      param_str=json.dumps({"scales": SCALES})))
    for name, top in zip(SCALE_LOSS_TOPS, tops, strict=True):
        n[name] = top


register_loss(ScaleLoss("python", "Python", _add_python, normalised=True))
register_loss(ScaleLoss("native", "EuclideanLoss", _add_native, normalised=False))
