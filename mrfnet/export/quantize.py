"""INT8 static quantisation (QDQ) of an exported model, calibrated on validation patches.

ONNX Runtime's own tools: its pre-processing (shape inference, graph optimisation), then
``quantize_static`` with per-channel INT8 weights and UINT8 activations, whose ranges come from
running the float model on blurred validation patches (docs/architecture.md, "Deployment").
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnx
from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType, quantize_static
from onnxruntime.quantization.shape_inference import quant_pre_process

from data_prep.records import check_pairs, iter_pairs
from mrfnet.export.exporter import export_model
from mrfnet.infer.model import Model
from mrfnet.infer.tiling import pad_to_stride
from mrfnet.runtime.errors import InvalidValue
from netgen import INPUT

log = logging.getLogger(__name__)

DEFAULT_CALIBRATION_PATCHES = 32
INT8 = "mrfnet.int8"  # metadata key: how the model was quantised


class _Patches(CalibrationDataReader):
    """The calibration patches, one batch of one at a time, as quantize_static reads them."""

    def __init__(self, patches: Sequence[np.ndarray], input_name: str) -> None:
        self._items = iter(patches)
        self._input_name = input_name

    def get_next(self) -> dict[str, np.ndarray] | None:
        patch = next(self._items, None)
        return None if patch is None else {self._input_name: patch[None]}


def calibration_patches(lmdb_path: str | Path, count: int = DEFAULT_CALIBRATION_PATCHES) -> list[np.ndarray]:
    """``count`` blurred patches spread evenly over a data_prep LMDB, as C x H x W inputs on the 0..1 scale."""
    if count < 1:
        raise InvalidValue(f"the calibration needs at least one patch, got {count}")
    records = check_pairs(lmdb_path)
    chosen = {int(round(i)) for i in np.linspace(0, records - 1, num=min(count, records))}
    patches = []
    for index, (_, blur, _) in enumerate(iter_pairs(lmdb_path)):
        if index in chosen:
            patches.append(pad_to_stride(blur.transpose(2, 0, 1).astype(np.float32) / 255.0))
    log.info("calibrating on %d of the %d patches of %s", len(patches), records, lmdb_path)
    return patches


def quantize_int8(model: onnx.ModelProto, patches: Sequence[np.ndarray], *, input_name: str = INPUT,
                  keep_float: Sequence[str] = ()) -> onnx.ModelProto:
    """The QDQ INT8 model of ``model``, activation ranges by min/max over ``patches``; the nodes named in
    ``keep_float`` stay in float. Metadata is carried over, with how it was quantised."""
    if not patches:
        raise InvalidValue("no calibration patches")
    with tempfile.TemporaryDirectory(prefix="mrfnet-int8-") as tmp:
        folder = Path(tmp)
        onnx.save(model, folder / "float.onnx")
        quant_pre_process(str(folder / "float.onnx"), str(folder / "prepared.onnx"), skip_symbolic_shape=True)
        quantize_static(folder / "prepared.onnx", folder / "int8.onnx", _Patches(patches, input_name),
                        quant_format=QuantFormat.QDQ, per_channel=True, activation_type=QuantType.QUInt8,
                        weight_type=QuantType.QInt8, calibrate_method=CalibrationMethod.MinMax,
                        nodes_to_exclude=list(keep_float))
        quantized = onnx.load(str(folder / "int8.onnx"))
    properties = {prop.key: prop.value for prop in model.metadata_props}
    properties[INT8] = (f"QDQ, per-channel int8 weights, uint8 activations, min/max over {len(patches)} "
                        f"calibration patches" + (f", float nodes: {', '.join(keep_float)}" if keep_float else ""))
    onnx.helper.set_model_props(quantized, properties)
    return quantized


def export_int8(model: Model, patches: Sequence[np.ndarray], *, variant: str | None = None) -> onnx.ModelProto:
    """A loaded Caffe model exported for quantisation (phase-convolution deconvolutions) and quantised."""
    return quantize_int8(export_model(model, variant=variant, for_int8=True), patches)
