"""Caffe deploy net + its loaded weights -> an ONNX graph, for exactly the layer types the project's nets use.

No maintained Caffe-to-ONNX converter exists, so this one maps each Caffe layer to the ONNX
operators that compute the same numbers (docs/architecture.md, "Deployment"). Height and width
stay dynamic: Crop reads its reference blob's shape at run time, and pooling keeps Caffe's CEIL
rounding (ONNX ``ceil_mode``) and its edge rule (a window never counts pixels past the padding:
ONNX Runtime's ``count_include_pad=1`` counts exactly those Caffe counts).

Each Caffe layer type has one converter, registered with ``@converter("Type")`` beside its code: the
types registered are exactly the types the export accepts (:func:`supported_layer_types`), so a new
layer type is one decorated function plus its test (docs/architecture.md, "Adding a variant / source /
converter").
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper

from mrfnet.export.onnx_layers import (
    CONVERTERS,
    INPUT_TYPE,
    GraphBuilder,
    UnsupportedLayer,
    in_test_phase,
    layer_error,
    supported_layer_types,
)
from mrfnet.runtime.errors import InvalidValue

log = logging.getLogger(__name__)

MIN_OPSET = 18  # Split's num_outputs and Shape's start/end attributes
DEFAULT_OPSET = 21
DYNAMIC_DIMS = ("batch", None, "height", "width")  # the input's named dynamic axes (channels stay fixed)


def _input_shapes(proto: Any) -> list[tuple[str, list[int]]]:
    """(blob, shape) of the net's inputs: Input layers' tops, or the legacy ``input:`` fields."""
    found = []
    for layer in proto.layer:
        if layer.type == INPUT_TYPE and in_test_phase(layer):
            shapes = list(layer.input_param.shape)
            for i, top in enumerate(layer.top):
                shape = shapes[i] if len(shapes) > 1 else shapes[0] if shapes else None
                if shape is None:
                    raise layer_error(layer, "Input without a shape")
                found.append((top, [int(d) for d in shape.dim]))
    for i, name in enumerate(proto.input):
        if proto.input_shape:
            dims = list(proto.input_shape[i].dim)
        else:
            dims = list(proto.input_dim[4 * i:4 * i + 4])
        found.append((name, [int(d) for d in dims]))
    return found


def check_supported(proto: Any) -> None:
    """Refuse, before any work, a net with a layer the exporter cannot express (named in the error)."""
    if proto.layers:
        raise UnsupportedLayer("the prototxt uses the V1 `layers` syntax; upgrade it with Caffe's "
                               "upgrade_net_proto_text first")
    supported = supported_layer_types()
    for layer in proto.layer:
        if in_test_phase(layer) and layer.type not in supported:
            raise layer_error(layer, f"this layer type cannot be exported (supported: {', '.join(supported)})")


def caffe_to_onnx(proto: Any, params: Mapping[str, Sequence[np.ndarray]], *, outputs: Sequence[str] | None = None,
                  opset: int = DEFAULT_OPSET, name: str = "mrfnet", metadata: Mapping[str, str] | None = None,
                  phase_deconvolution: bool = False) -> onnx.ModelProto:
    """The ONNX model of a deploy NetParameter with ``params`` (layer name -> its blobs, as Caffe loaded them).

    Inputs keep their channel count and get dynamic batch, height and width. ``outputs`` are the
    blobs exposed (default: Caffe's net outputs, the blobs no later layer reads), in that order.
    """
    if opset < MIN_OPSET:
        raise InvalidValue(f"opset {opset}: the exporter needs opset {MIN_OPSET} or later")
    check_supported(proto)
    layers = [layer for layer in proto.layer if in_test_phase(layer)]
    last_writer = {blob: (p, i) for p, layer in enumerate(layers) for i, blob in enumerate(layer.top)}
    graph = GraphBuilder(last_writer, params, phase_deconvolution)
    inputs = []
    shapes = _input_shapes(proto)
    input_blobs = {blob for blob, _ in shapes}
    for blob, shape in shapes:
        if len(shape) != 4:
            raise UnsupportedLayer(f"input {blob!r} has shape {shape}; only N x C x H x W inputs are exported")
        dims = [dynamic or value for dynamic, value in zip(DYNAMIC_DIMS, shape, strict=True)]
        inputs.append(helper.make_tensor_value_info(blob, TensorProto.FLOAT, dims))
        graph.names[blob] += 1
        graph.tensor[blob] = blob
    read: set[str] = set()
    for position, layer in enumerate(layers):
        read.update(layer.bottom)
        if layer.type == INPUT_TYPE:
            continue
        if input_blobs.intersection(layer.top):
            raise layer_error(layer, "writes over the net's input blob")
        CONVERTERS[layer.type](graph, layer, position)
    produced = [blob for layer in layers if layer.type != INPUT_TYPE for blob in layer.top]
    chosen = list(outputs) if outputs is not None else list(dict.fromkeys(b for b in produced if b not in read))
    missing = [blob for blob in chosen if blob not in graph.tensor]
    if missing:
        raise InvalidValue(f"the net has no blob(s) {', '.join(missing)} to output")
    graph_outputs = [helper.make_tensor_value_info(blob, TensorProto.FLOAT, None) for blob in chosen]
    onnx_graph = helper.make_graph(graph.nodes, name, inputs, graph_outputs, initializer=graph.initializers)
    model = helper.make_model(onnx_graph, opset_imports=[helper.make_opsetid("", opset)], producer_name="mrfnet")
    model.ir_version = min(model.ir_version, onnx.helper.find_min_ir_version_for([helper.make_opsetid("", opset)]))
    helper.set_model_props(model, dict(metadata or {}))
    inferred = onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True)
    onnx.checker.check_model(inferred, full_check=True)
    log.info("converted %d Caffe layers into %d ONNX nodes (opset %d)", len(layers), len(graph.nodes), opset)
    return inferred
