"""An exported ONNX model run by ONNX Runtime, with the same tiling, padding and rounding as the Caffe path."""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
from google.protobuf import message
from onnxruntime.capi import onnxruntime_pybind11_state as ort_state

from mrfnet.infer.memory import pixels_for_budget
from mrfnet.infer.tiling import DEFAULT_MAX_MEMORY_GB, predict_with, to_uint8
from mrfnet.runtime.errors import InvalidValue, MissingInput
from netgen import INPUT, PREDICTION

log = logging.getLogger(__name__)

# metadata_props keys written by mrfnet.export.exporter and read back here
VARIANT = "mrfnet.variant"
TILE_BYTES_PER_PIXEL = "mrfnet.tile_bytes_per_pixel"  # Caffe's forward memory per input pixel: same tiles
TILE_FIXED_BYTES = "mrfnet.tile_fixed_bytes"
PREDICTION_KEY = "mrfnet.prediction"
PARAMETERS = "mrfnet.parameters"  # the Caffe net's parameter count (an INT8 model's initializers differ)
REFERENCE_SIDE = 256  # shape at which a foreign model's activation memory is counted
# what InferenceSession raises on a model it cannot run
LOAD_ERRORS = (ort_state.Fail, ort_state.InvalidGraph, ort_state.InvalidArgument, ort_state.InvalidProtobuf,
               ort_state.NotImplemented, ort_state.RuntimeException)


def read_onnx(path: str | Path) -> onnx.ModelProto:
    """An ONNX file, or a ValueError naming it (missing, truncated, not ONNX)."""
    path = Path(path)
    if not path.is_file():
        raise MissingInput(f"ONNX model {path} does not exist")
    try:
        model = onnx.load(str(path))
    except (message.DecodeError, ValueError) as exc:
        raise InvalidValue(f"{path} is not an ONNX model ({exc}); the file may be truncated") from exc
    if not model.graph.node:
        raise InvalidValue(f"{path} is not an ONNX model (no graph nodes); the file may be truncated or not ONNX")
    return model


def session_options(threads: int | None = None) -> ort.SessionOptions:
    """Full graph optimisation; ``threads`` intra-op threads (default: OMP_NUM_THREADS if set, else ORT's own)."""
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3  # errors only: its warnings about unused initializers are noise here
    # no CPU arena: it keeps the largest buffers it ever held and grew tile after tile (a 6000x6000 deblur in
    # 24 tiles: 7.1 GB against a 4 GB budget); malloc returns them (docs/architecture.md, "Scoring and inference")
    options.enable_cpu_mem_arena = False
    if threads is None and os.environ.get("OMP_NUM_THREADS", "").isdigit():
        threads = int(os.environ["OMP_NUM_THREADS"])
    if threads is not None:
        if threads < 1:
            raise InvalidValue(f"threads must be at least 1, got {threads}")
        options.intra_op_num_threads = threads
    return options


def _activation_bytes_per_pixel(model: onnx.ModelProto) -> float:
    """Every intermediate tensor's float32 bytes per input pixel at a REFERENCE_SIDE square (an upper bound:
    ONNX Runtime reuses buffers)."""
    fixed = onnx.ModelProto()
    fixed.CopyFrom(model)
    del fixed.graph.value_info[:]
    for graph_input in fixed.graph.input:
        dims = graph_input.type.tensor_type.shape.dim
        for dim, value in zip(dims, (1, None, REFERENCE_SIDE, REFERENCE_SIDE), strict=False):
            if value is not None:
                dim.ClearField("dim_param")
                dim.dim_value = value
    inferred = onnx.shape_inference.infer_shapes(fixed)
    total = 0
    for info in list(inferred.graph.value_info) + list(inferred.graph.output):
        dims = [d.dim_value for d in info.type.tensor_type.shape.dim]
        if dims and all(dims):
            total += math.prod(dims) * 4
    return total / REFERENCE_SIDE**2


class OnnxModel:
    """An ONNX model in an ONNX Runtime session (CPU), with :class:`mrfnet.infer.model.Model`'s interface."""

    engine = "onnxruntime"

    def __init__(self, model: str | Path | onnx.ModelProto, *, threads: int | None = None,
                 input_name: str = INPUT, output_name: str | None = None) -> None:
        self.path = None if isinstance(model, onnx.ModelProto) else Path(model)
        self.proto = model if isinstance(model, onnx.ModelProto) else read_onnx(model)
        self.metadata = {prop.key: prop.value for prop in self.proto.metadata_props}
        try:
            self.session = ort.InferenceSession(self.proto.SerializeToString(), session_options(threads),
                                                providers=["CPUExecutionProvider"])
        except LOAD_ERRORS as exc:
            raise InvalidValue(f"ONNX Runtime cannot load {self.path or 'the model'}: {exc}") from exc
        inputs = [i.name for i in self.session.get_inputs()]
        outputs = [o.name for o in self.session.get_outputs()]
        self.input_name = input_name
        self.output_name = output_name or self.metadata.get(PREDICTION_KEY, PREDICTION)
        if self.input_name not in inputs:
            raise InvalidValue(f"{self.path or 'the model'} has no input {self.input_name!r} "
                             f"(inputs: {', '.join(inputs)})")
        if self.output_name not in outputs:
            raise InvalidValue(f"{self.path or 'the model'} has no output {self.output_name!r} "
                             f"(outputs: {', '.join(outputs)})")
        self.variant = self.metadata.get(VARIANT)
        self.parameters = int(self.metadata.get(PARAMETERS) or sum(
            math.prod(t.dims) for t in self.proto.graph.initializer if t.data_type == onnx.TensorProto.FLOAT))

    def forward(self, chw: np.ndarray) -> np.ndarray:
        """One C x H x W float32 array through the model (a batch of one)."""
        return self.session.run([self.output_name], {self.input_name: chw[None].astype(np.float32, copy=False)})[0][0]

    def predict(self, bgr: np.ndarray, **options: Any) -> np.ndarray:
        return predict_with(self.forward, bgr, **options)

    def deblur(self, bgr: np.ndarray, **options: Any) -> np.ndarray:
        return to_uint8(self.predict(bgr, **options))

    def forward_costs(self) -> tuple[float, float]:
        """(fixed bytes, bytes per input pixel) of a forward pass: the Caffe estimate the exporter stored (so both
        engines cut an image into the same tiles), else by counting this graph's tensors."""
        if TILE_BYTES_PER_PIXEL in self.metadata:
            return float(self.metadata.get(TILE_FIXED_BYTES, 0)), float(self.metadata[TILE_BYTES_PER_PIXEL])
        return 4.0 * self.parameters, _activation_bytes_per_pixel(self.proto)

    def max_tile_pixels(self, max_memory_gb: float = DEFAULT_MAX_MEMORY_GB) -> int:
        """Input pixels per tile within ``max_memory_gb`` (:meth:`forward_costs`)."""
        fixed, per_pixel = self.forward_costs()
        return pixels_for_budget(per_pixel, fixed, max_memory_gb)
