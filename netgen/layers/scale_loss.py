"""The scale refinement loss of Eq. 5 as a Caffe Python layer.

L = 1/(2K) sum_k ||L_k - S_k||^2 / (c_k h_k w_k), averaged over the batch. One top per scale
(``loss_r1`` .. ``loss_rK``, coarsest first), each holding its term of L, so Caffe logs every
scale and the training driver reweights a scale by writing its top's diff
(:func:`mrfnet.layers.set_scale_loss_weights`). Give every top ``loss_weight: 1``.
"""

from __future__ import annotations

import json
from typing import Any

import caffe
import numpy as np


class ScaleRefinementLoss(caffe.Layer):
    """Bottoms: prediction_1, target_1, ..., prediction_K, target_K (coarsest first); tops: K loss terms.

    param_str (JSON): {"scales": K}, checked against the bottoms so a miswired net fails at set-up.
    """

    def setup(self, bottom: Any, top: Any) -> None:
        params = json.loads(self.param_str or "{}")
        self.scales = int(params.get("scales", len(bottom) // 2))
        if len(bottom) != 2 * self.scales or len(top) != self.scales:
            raise ValueError(f"ScaleRefinementLoss with {self.scales} scales takes {2 * self.scales} bottoms "
                             f"(prediction, target per scale) and {self.scales} tops, got {len(bottom)} and {len(top)}")
        self.differences: list[np.ndarray] = []

    def reshape(self, bottom: Any, top: Any) -> None:
        for k in range(self.scales):
            prediction, target = bottom[2 * k].data.shape, bottom[2 * k + 1].data.shape
            if prediction != target:
                raise ValueError(f"scale {k + 1}: prediction {prediction} and target {target} differ in shape")
            top[k].reshape()  # a scalar, like Caffe's own loss layers

    def forward(self, bottom: Any, top: Any) -> None:
        self.differences = []
        for k in range(self.scales):
            difference = bottom[2 * k].data.astype(np.float64) - bottom[2 * k + 1].data
            self.differences.append(difference)
            top[k].data[...] = np.sum(difference ** 2) / (2 * self.scales * difference.size)

    def backward(self, top: Any, propagate_down: Any, bottom: Any) -> None:
        for k, difference in enumerate(self.differences):
            gradient = difference * (float(top[k].diff) / (self.scales * difference.size))
            for index, sign in ((2 * k, 1.0), (2 * k + 1, -1.0)):
                if propagate_down[index]:
                    bottom[index].diff[...] = sign * gradient
