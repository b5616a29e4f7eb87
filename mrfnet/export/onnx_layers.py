"""The Caffe layer types the ONNX export knows, each with the converter that writes its ONNX nodes.

Each Caffe layer type has one converter, registered with ``@converter("Type")`` beside its code: the
types registered are exactly the types the export accepts (:func:`supported_layer_types`), so a new
layer type is one decorated function plus its test (docs/architecture.md, "Adding a variant / source /
loss / converter"). A converter reads its layer's weights from ``graph.params`` and adds nodes with
``graph.node``; mrfnet.export.onnx_graph walks the net and calls them.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from onnx import helper, numpy_helper

from mrfnet.runtime.errors import InvalidValue

INT64_MAX = np.iinfo(np.int64).max


class UnsupportedLayer(InvalidValue):
    """A layer (or a setting of one) that the exporter cannot express in ONNX: nothing is written."""


def layer_error(layer: Any, what: str) -> UnsupportedLayer:
    return UnsupportedLayer(f"layer {layer.name!r} (type {layer.type}): {what}")


def in_test_phase(layer: Any) -> bool:
    """Caffe's StateMeetsRule for the TEST phase, as a deploy net is built (no stages or levels used)."""
    test = 1  # caffe.TEST
    if layer.include:
        return any(not rule.HasField("phase") or rule.phase == test for rule in layer.include)
    return not any(rule.HasField("phase") and rule.phase == test for rule in layer.exclude)


def _spatial(param: Any, name: str, default: int, *, h: str | None = None, w: str | None = None) -> list[int]:
    """(height, width) of a repeated Caffe field (one value for both, two for each) or its _h/_w pair."""
    if h and (param.HasField(h) or param.HasField(w)):
        return [int(getattr(param, h)), int(getattr(param, w))]
    value = getattr(param, name)
    if isinstance(value, int):  # PoolingParameter's fields are scalars, ConvolutionParameter's repeated
        return [value if param.HasField(name) else default] * 2
    values = list(value)
    if not values:
        return [default, default]
    if len(values) == 1:
        return [int(values[0])] * 2
    if len(values) == 2:
        return [int(v) for v in values]
    raise InvalidValue(f"{name} has {len(values)} values; only 2-D (height, width) nets are exported")


@dataclass
class GraphBuilder:
    """The ONNX graph being built: nodes, weights and the Caffe blob -> tensor name bookkeeping, with what the
    converters read besides the layer: Caffe's weights and how deconvolutions are exported."""

    last_writer: dict[str, tuple[int, int]]  # blob -> (layer index, top index) of its final value
    params: Mapping[str, Sequence[np.ndarray]]  # layer name -> its blobs, as Caffe loaded them
    phase_deconvolution: bool  # strided deconvolutions as phase convolutions (for INT8), see _subpixel_weights
    nodes: list[Any] = field(default_factory=list)
    initializers: list[Any] = field(default_factory=list)
    tensor: dict[str, str] = field(default_factory=dict)  # blob -> the ONNX tensor holding its value now
    names: Counter = field(default_factory=Counter)

    def __post_init__(self) -> None:
        self.names.update(self.last_writer.keys())  # a blob's own name is kept for its final value (or an input)

    def unique(self, base: str) -> str:
        self.names[base] += 1
        return base if self.names[base] == 1 else f"{base}_{self.names[base] - 1}"

    def constant(self, name: str, value: np.ndarray) -> str:
        name = self.unique(name)
        self.initializers.append(numpy_helper.from_array(value, name))
        return name

    def bottom(self, layer: Any, index: int = 0) -> str:
        blob = layer.bottom[index]
        if blob not in self.tensor:
            raise layer_error(layer, f"bottom {blob!r} is produced by no earlier layer")
        return self.tensor[blob]

    def top(self, layer: Any, position: int, index: int) -> str:
        """The tensor name for top ``index``: the blob's own name for its final value, else a fresh one."""
        blob = layer.top[index]
        name = blob if self.last_writer[blob] == (position, index) else self.unique(f"{blob}/{layer.name}")
        self.tensor[blob] = name
        return name

    def node(self, op: str, inputs: Sequence[str], outputs: Sequence[str], name: str, **attributes: Any) -> None:
        self.nodes.append(helper.make_node(op, list(inputs), list(outputs), name=self.unique(name), **attributes))


# A converter adds the ONNX nodes of one Caffe layer (at ``position`` among the net's TEST-phase layers) to the graph.
Converter = Callable[[GraphBuilder, Any, int], None]
CONVERTERS: dict[str, Converter] = {}  # Caffe layer type -> its converter, in registration order
# Input layers become the graph's inputs (_input_shapes), not nodes: supported without a converter.
INPUT_TYPE = "Input"


def converter(*layer_types: str) -> Callable[[Converter], Converter]:
    """Register the decorated function as the converter of each Caffe type in ``layer_types``; a type
    registered twice is refused at import, since the second would silently replace the first."""

    def register(function: Converter) -> Converter:
        for layer_type in layer_types:
            if layer_type in supported_layer_types():
                raise ValueError(f"Caffe layer type {layer_type!r} is registered twice")
            CONVERTERS[layer_type] = function
        return function

    return register


def supported_layer_types() -> tuple[str, ...]:
    """The Caffe layer types the export accepts: Input and every registered converter's."""
    return (INPUT_TYPE, *CONVERTERS)


@converter("Convolution", "Deconvolution")
def _conv(graph: GraphBuilder, layer: Any, position: int) -> None:
    param = layer.convolution_param
    if param.axis != 1:
        raise layer_error(layer, f"axis {param.axis}: only channel axis 1 is supported")
    if param.force_nd_im2col:
        raise layer_error(layer, "force_nd_im2col (N-D convolution) is not supported")
    expected = 2 if param.bias_term else 1
    blobs = graph.params.get(layer.name, ())
    if len(blobs) != expected:
        raise layer_error(layer, f"{len(blobs)} weight blobs, expected {expected}")
    kernel = _spatial(param, "kernel_size", 0, h="kernel_h", w="kernel_w")
    pad = _spatial(param, "pad", 0, h="pad_h", w="pad_w")
    stride = _spatial(param, "stride", 1, h="stride_h", w="stride_w")
    dilation = _spatial(param, "dilation", 1)
    weight = np.asarray(blobs[0], dtype=np.float32)
    if list(weight.shape[2:]) != kernel:
        raise layer_error(layer, f"weights of shape {weight.shape} for a {kernel[0]}x{kernel[1]} kernel")
    bias = np.asarray(blobs[1], dtype=np.float32).reshape(-1) if param.bias_term else None
    if graph.phase_deconvolution and layer.type == "Deconvolution" and param.group == 1 and dilation == [1, 1]:
        phases = _subpixel_weights(weight, kernel, stride, pad)
        if phases is not None:
            _subpixel_deconvolution(graph, layer, position, phases, bias, stride[0])
            return
    inputs = [graph.bottom(layer), graph.constant(f"{layer.name}/weight", weight)]
    if bias is not None:
        inputs.append(graph.constant(f"{layer.name}/bias", bias))
    op = "Conv" if layer.type == "Convolution" else "ConvTranspose"
    graph.node(op, inputs, [graph.top(layer, position, 0)], layer.name, kernel_shape=kernel, strides=stride,
               pads=pad + pad, dilations=dilation, group=int(param.group))


@dataclass
class _Phases:
    """A strided deconvolution as one convolution computing every output phase, for DepthToSpace to interleave."""

    weight: np.ndarray  # (stride^2 x C_out) x C_in x J x J
    pads: list[int]  # top, left, bottom, right
    trim: int  # output rows/columns past Caffe's size, cut from the bottom and right


def _subpixel_weights(weight: np.ndarray, kernel: list[int], stride: list[int], pad: list[int]) -> _Phases | None:
    """The phase convolution of a deconvolution with square stride s: output pixel s*q + r of a deconvolution
    is sum_m x[q + c_r - m] * w[s*m + t_r] (t_r = (r + pad) mod s, c_r = (r + pad) div s), a correlation
    over x; the phases' taps are laid into one J x J kernel (zeros where a phase has no tap).

    ONNX Runtime has no INT8 ConvTranspose (the quantiser leaves it in float between a Dequantize and
    a Quantize); this runs as a quantised Conv. In float, ConvTranspose is the faster of the two.
    None where it does not apply (then ConvTranspose is used).
    """
    s = stride[0]
    if stride[1] != s or s < 2 or kernel[0] != kernel[1] or pad[0] != pad[1]:
        return None
    k, p = kernel[0], pad[0]
    offsets = [(r + p) // s for r in range(s)]  # c_r
    taps = [(r + p) % s for r in range(s)]  # t_r
    counts = [len(range(t, k, s)) for t in taps]  # M_r: kernel taps of phase r
    before = max(count - 1 - c for count, c in zip(counts, offsets, strict=True))
    span = before + max(offsets) + 1  # J
    excess = k - 2 * p - s  # Caffe's output is s*H + excess
    rows = -(-excess // s)  # phase rows past H
    after = rows + span - 1 - before
    if before < 0 or after < 0 or min(counts) < 1:
        return None
    c_in, c_out = weight.shape[:2]
    phase_kernel = np.zeros((s, s, c_out, c_in, span, span), dtype=np.float32)
    for rh in range(s):
        for jh in range(span):
            mh = offsets[rh] - (jh - before)
            if not 0 <= mh < counts[rh]:
                continue
            for rw in range(s):
                for jw in range(span):
                    mw = offsets[rw] - (jw - before)
                    if 0 <= mw < counts[rw]:
                        phase_kernel[rh, rw, :, :, jh, jw] = weight[:, :, s * mh + taps[rh], s * mw + taps[rw]].T
    # DepthToSpace (CRD) reads channel c * s^2 + rh * s + rw
    combined = phase_kernel.transpose(2, 0, 1, 3, 4, 5).reshape(c_out * s * s, c_in, span, span)
    return _Phases(np.ascontiguousarray(combined), [before, before, after, after], s * rows - excess)


def _subpixel_deconvolution(graph: GraphBuilder, layer: Any, position: int, phases: _Phases, bias: np.ndarray | None,
                            stride: int) -> None:
    inputs = [graph.bottom(layer), graph.constant(f"{layer.name}/phase_weight", phases.weight)]
    if bias is not None:
        inputs.append(graph.constant(f"{layer.name}/phase_bias", np.repeat(bias, stride * stride)))
    span = phases.weight.shape[2]
    conv = graph.unique(f"{layer.name}/phases")
    graph.node("Conv", inputs, [conv], f"{layer.name}/phases", kernel_shape=[span, span], strides=[1, 1],
               pads=phases.pads)
    out = graph.top(layer, position, 0) if not phases.trim else graph.unique(f"{layer.name}/untrimmed")
    graph.node("DepthToSpace", [conv], [out], layer.name, blocksize=stride, mode="CRD")
    if phases.trim:
        ends = graph.constant(f"{layer.name}/trim", np.asarray([-phases.trim] * 2, dtype=np.int64))
        graph.node("Slice", [out, graph.constant(f"{layer.name}/trim_starts", np.zeros(2, dtype=np.int64)), ends,
                             graph.constant(f"{layer.name}/trim_axes", np.asarray([2, 3], dtype=np.int64))],
                   [graph.top(layer, position, 0)], f"{layer.name}/trim")


@converter("ReLU")
def _relu(graph: GraphBuilder, layer: Any, position: int) -> None:
    slope = layer.relu_param.negative_slope
    op, attributes = ("LeakyRelu", {"alpha": float(slope)}) if slope else ("Relu", {})
    graph.node(op, [graph.bottom(layer)], [graph.top(layer, position, 0)], layer.name, **attributes)


@converter("Eltwise")
def _eltwise(graph: GraphBuilder, layer: Any, position: int) -> None:
    param = layer.eltwise_param
    inputs = [graph.bottom(layer, i) for i in range(len(layer.bottom))]
    if len(inputs) < 2:
        raise layer_error(layer, "Eltwise needs at least two bottoms")
    op = {0: "Mul", 1: "Add", 2: "Max"}[param.operation]  # PROD, SUM, MAX
    coeffs = list(param.coeff)
    if coeffs and op != "Add":
        raise layer_error(layer, "coeff is only defined for SUM")
    if coeffs and len(coeffs) != len(inputs):
        raise layer_error(layer, f"{len(coeffs)} coefficients for {len(inputs)} bottoms")
    if any(c != 1 for c in coeffs):
        scaled = []
        for i, (tensor, coeff) in enumerate(zip(inputs, coeffs, strict=True)):
            scale = graph.constant(f"{layer.name}/coeff{i}", np.asarray(coeff, dtype=np.float32))
            out = graph.unique(f"{layer.name}/scaled{i}")
            graph.node("Mul", [tensor, scale], [out], f"{layer.name}/scale{i}")
            scaled.append(out)
        inputs = scaled
    current = inputs[0]
    for i, tensor in enumerate(inputs[1:], start=1):  # a chain of binary ops, in Caffe's summation order
        out = graph.top(layer, position, 0) if i == len(inputs) - 1 else graph.unique(f"{layer.name}/partial{i}")
        graph.node(op, [current, tensor], [out], layer.name)
        current = out


@converter("Pooling")
def _pooling(graph: GraphBuilder, layer: Any, position: int) -> None:
    param = layer.pooling_param
    if param.global_pooling:
        if param.pool not in (0, 1):
            raise layer_error(layer, "only MAX and AVE global pooling are supported")
        op = "GlobalMaxPool" if param.pool == 0 else "GlobalAveragePool"
        graph.node(op, [graph.bottom(layer)], [graph.top(layer, position, 0)], layer.name)
        return
    kernel = _spatial(param, "kernel_size", 0, h="kernel_h", w="kernel_w")
    pad = _spatial(param, "pad", 0, h="pad_h", w="pad_w")
    stride = _spatial(param, "stride", 1, h="stride_h", w="stride_w")
    attributes: dict[str, Any] = dict(kernel_shape=kernel, strides=stride, pads=pad + pad,
                                      ceil_mode=int(param.round_mode == 0))  # 0: CEIL, Caffe's default
    if param.pool == 0:
        op = "MaxPool"
    elif param.pool == 1:
        op = "AveragePool"
        attributes["count_include_pad"] = 1  # Caffe divides by the window clipped to the padded image
    else:
        raise layer_error(layer, "STOCHASTIC pooling has no ONNX counterpart")
    graph.node(op, [graph.bottom(layer)], [graph.top(layer, position, 0)], layer.name, **attributes)


@converter("Concat")
def _concat(graph: GraphBuilder, layer: Any, position: int) -> None:
    param = layer.concat_param
    axis = param.concat_dim if param.HasField("concat_dim") else param.axis
    graph.node("Concat", [graph.bottom(layer, i) for i in range(len(layer.bottom))],
               [graph.top(layer, position, 0)], layer.name, axis=int(axis))


@converter("Crop")
def _crop(graph: GraphBuilder, layer: Any, position: int) -> None:
    param = layer.crop_param
    axis = param.axis if param.axis >= 0 else 4 + param.axis
    axes = list(range(axis, 4))
    offsets = list(param.offset)
    if len(offsets) > 1 and len(offsets) != len(axes):
        raise layer_error(layer, f"{len(offsets)} offsets for the {len(axes)} cropped axes")
    starts = np.asarray(offsets * len(axes) if len(offsets) == 1 else offsets or [0] * len(axes), dtype=np.int64)
    reference = graph.unique(f"{layer.name}/reference_shape")
    graph.node("Shape", [graph.bottom(layer, 1)], [reference], f"{layer.name}/shape", start=axis)
    start_name = graph.constant(f"{layer.name}/starts", starts)
    ends = graph.unique(f"{layer.name}/ends")
    graph.node("Add", [start_name, reference], [ends], f"{layer.name}/ends")
    graph.node("Slice", [graph.bottom(layer, 0), start_name, ends,
                         graph.constant(f"{layer.name}/axes", np.asarray(axes, dtype=np.int64))],
               [graph.top(layer, position, 0)], layer.name)


@converter("Slice")
def _slice(graph: GraphBuilder, layer: Any, position: int) -> None:
    param = layer.slice_param
    axis = int(param.slice_dim) if param.HasField("slice_dim") else int(param.axis)
    outputs = [graph.top(layer, position, i) for i in range(len(layer.top))]
    points = list(param.slice_point)
    if not points:
        graph.node("Split", [graph.bottom(layer)], outputs, layer.name, axis=axis, num_outputs=len(outputs))
        return
    if len(points) != len(outputs) - 1:
        raise layer_error(layer, f"{len(points)} slice points for {len(outputs)} tops")
    bounds = [0, *points, INT64_MAX]
    axes = graph.constant(f"{layer.name}/axes", np.asarray([axis], dtype=np.int64))
    for i, out in enumerate(outputs):
        graph.node("Slice", [graph.bottom(layer),
                             graph.constant(f"{layer.name}/start{i}", np.asarray([bounds[i]], dtype=np.int64)),
                             graph.constant(f"{layer.name}/end{i}", np.asarray([bounds[i + 1]], dtype=np.int64)),
                             axes], [out], f"{layer.name}/{i}")


@converter("Split")
def _split(graph: GraphBuilder, layer: Any, position: int) -> None:
    source = graph.bottom(layer)
    for i in range(len(layer.top)):
        graph.node("Identity", [source], [graph.top(layer, position, i)], f"{layer.name}/{i}")
