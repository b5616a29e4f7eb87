"""Building blocks of the refinement networks, in the style of Caffe's net_spec examples.

Each function adds named layers to a :class:`caffe.NetSpec` and returns its output top. Every
layer is named from the ``name`` it is given, so weight names stay stable from run to run and a
caffemodel loads into a regenerated net. Convolutions keep the spatial size ("same" padding)
unless they are strided; a stride-2 layer gives ceil(H/2) x ceil(W/2), like the AVE pooling of
the image pyramid, so the scales agree at any input size and the x2 upsampling is cropped back.
"""

from __future__ import annotations

from collections.abc import Sequence

import caffe
from caffe import layers as L
from caffe import params as P
from caffe.net_spec import Top

WEIGHT_FILLER = dict(type="msra")  # He et al. initialisation: every convolution here feeds a ReLU
BIAS_FILLER = dict(type="constant", value=0)
# The last convolution of a residual branch starts at zero, so every RCU, CRP and MRF unit starts as
# the identity (Goyal et al. 2017; Fixup): with He initialisation throughout, the 40-odd residual sums
# grow activations by about 10x per path and the untrained full-resolution output reaches ~1e4-1e6.
BRANCH_END_FILLER = dict(type="constant", value=0)


def conv(n: caffe.NetSpec, name: str, bottom: Top, width: int, kernel: int, *, stride: int = 1,
         pad: int | None = None, bias: bool = True, filler: dict = WEIGHT_FILLER, lr_mult: float = 1.0) -> Top:
    """A convolution with "same" padding by default; no activation. ``lr_mult`` scales its learning rate."""
    extra = dict(bias_filler=BIAS_FILLER) if bias else dict(bias_term=False)
    if lr_mult != 1.0:
        extra["param"] = [dict(lr_mult=lr_mult)] * (2 if bias else 1)
    n[name] = L.Convolution(bottom, num_output=width, kernel_size=kernel, stride=stride,
                            pad=kernel // 2 if pad is None else pad, weight_filler=filler, **extra)
    return n[name]


def relu(n: caffe.NetSpec, name: str, bottom: Top, *, in_place: bool = True) -> Top:
    """ReLU, in place unless the pre-activation is still needed (e.g. by an identity branch)."""
    n[name] = L.ReLU(bottom, in_place=in_place)
    return n[name]


def conv_relu(n: caffe.NetSpec, name: str, bottom: Top, width: int, kernel: int, *, stride: int = 1,
              pad: int | None = None, filler: dict = WEIGHT_FILLER) -> Top:
    """Convolution followed by an in-place ReLU named ``<name>_relu``."""
    return relu(n, f"{name}_relu", conv(n, name, bottom, width, kernel, stride=stride, pad=pad, filler=filler))


def eltwise_sum(n: caffe.NetSpec, name: str, *bottoms: Top) -> Top:
    n[name] = L.Eltwise(*bottoms, operation=P.Eltwise.SUM)
    return n[name]


def rcu(n: caffe.NetSpec, name: str, x: Top, width: int) -> Top:
    """RefineNet's residual conv unit: x + conv3x3(ReLU(conv3x3(ReLU(x))))."""
    h = relu(n, f"{name}_relu1", x, in_place=False)
    h = conv_relu(n, f"{name}_conv1", h, width, 3)
    h = conv(n, f"{name}_conv2", h, width, 3, filler=BRANCH_END_FILLER)
    return eltwise_sum(n, name, x, h)


def lw_rcu(n: caffe.NetSpec, name: str, x: Top, width: int, bottleneck: int) -> Top:
    """Lightweight RCU (Fig. 3(c)): x + conv1x1(ReLU(conv3x3(ReLU(conv1x1(ReLU(x)))))), narrow in the middle."""
    h = relu(n, f"{name}_relu1", x, in_place=False)
    h = conv_relu(n, f"{name}_conv1", h, bottleneck, 1)
    h = conv_relu(n, f"{name}_conv2", h, bottleneck, 3)
    h = conv(n, f"{name}_conv3", h, width, 1, filler=BRANCH_END_FILLER)
    return eltwise_sum(n, name, x, h)


def crp(n: caffe.NetSpec, name: str, x: Top, width: int, kernel: int, stages: int = 2) -> Top:
    """Chained residual pooling: ReLU, then chained (5x5 stride-1 max pool -> conv) stages, each summed in.

    The convolutions have no bias, as in RefineNet and Light-Weight RefineNet; ``kernel`` is 3
    (RefineNet) or 1 (the lightweight process).
    """
    x = relu(n, f"{name}_relu", x, in_place=False)
    chain, total = x, x
    for stage in range(1, stages + 1):
        n[f"{name}_pool{stage}"] = L.Pooling(chain, pool=P.Pooling.MAX, kernel_size=5, stride=1, pad=2)
        chain = conv(n, f"{name}_conv{stage}", n[f"{name}_pool{stage}"], width, kernel, bias=False,
                     filler=BRANCH_END_FILLER)
        total = eltwise_sum(n, f"{name}_sum{stage}", total, chain)
    return total


def fusion(n: caffe.NetSpec, name: str, path: Top, image: Top, coarse: Top, width: int, kernel: int) -> Top:
    """Fusion unit, Eqs. 1-2: c_k = b_k (+) l_{k+1} by concatenation, then conv(path) + conv(c_k).

    ``image`` is the blurred image at this scale (b_k), ``coarse`` the coarser path's upsampled
    refinement (l_{k+1}); ``kernel`` is 3 (RefineNet) or 1 (the lightweight process).
    """
    n[f"{name}_cat"] = L.Concat(image, coarse, axis=1)
    own = conv(n, f"{name}_path", path, width, kernel)
    other = conv(n, f"{name}_up", n[f"{name}_cat"], width, kernel)
    return eltwise_sum(n, name, own, other)


def mrf_unit(n: caffe.NetSpec, names: Sequence[str], x: Top, width: int, kernels: Sequence[int],
             name: str) -> Top:
    """MRF unit, Eq. 3: y = f2(f1(x)) + f4(f3(f2(f1(x)))), each f a convolution with ReLU."""
    f1, f2, f3, f4 = names
    g = conv_relu(n, f2, conv_relu(n, f1, x, width, kernels[0]), width, kernels[1])
    h = conv_relu(n, f4, conv_relu(n, f3, g, width, kernels[2]), width, kernels[3], filler=BRANCH_END_FILLER)
    return eltwise_sum(n, name, g, h)


def upsample(n: caffe.NetSpec, name: str, x: Top, like: Top, width: int) -> Top:
    """Learned x2 upsampling (4x4 deconvolution, stride 2, pad 1), cropped to ``like``'s height and width.

    A stride-2 layer rounds odd sizes up, so 2 x ceil(H/2) can be H + 1: the crop makes any input
    size work without padding the image.
    """
    n[name] = L.Deconvolution(x, convolution_param=dict(
        num_output=width, kernel_size=4, stride=2, pad=1, weight_filler=WEIGHT_FILLER, bias_filler=BIAS_FILLER))
    n[f"{name}_crop"] = L.Crop(n[name], like, axis=2, offset=[0])
    return n[f"{name}_crop"]


def half(n: caffe.NetSpec, name: str, x: Top) -> Top:
    """2x2 average pooling: the next level of an image pyramid (ceil(H/2): Caffe pools with CEIL rounding,
    averaging only the pixels inside the image at an odd edge)."""
    n[name] = L.Pooling(x, pool=P.Pooling.AVE, kernel_size=2, stride=2)
    return n[name]
