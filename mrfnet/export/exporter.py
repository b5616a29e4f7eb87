"""A loaded Caffe model -> a checked ONNX model with its provenance, verified against Caffe, written atomically."""

from __future__ import annotations

import hashlib
import importlib.metadata
import logging
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from data_prep.atomic import write_atomic
from mrfnet.export.onnx_graph import DEFAULT_OPSET, MIN_OPSET, caffe_to_onnx, check_supported
from mrfnet.export.onnx_model import (
    PARAMETERS,
    PREDICTION_KEY,
    TILE_BYTES_PER_PIXEL,
    TILE_FIXED_BYTES,
    VARIANT,
    OnnxModel,
)
from mrfnet.infer.model import Model
from mrfnet.runtime.caffe_env import build_info, import_caffe
from mrfnet.runtime.errors import InvalidValue

log = logging.getLogger(__name__)

PARITY_SHAPE = (3, 40, 56)  # the random input the exported model is checked on against Caffe
PARITY_TOLERANCE = 1e-4  # float32 max abs difference allowed between the engines (the bound)


class ParityError(InvalidValue):
    """The exported model computes something else than Caffe does: a converter bug, nothing is written."""


def sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for chunk in iter(lambda: file.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def caffe_params(net: Any) -> dict[str, list[np.ndarray]]:
    """Layer name -> copies of its parameter blobs, as Caffe holds them (its shapes, its order)."""
    return {name: [np.array(blob.data, dtype=np.float32) for blob in blobs] for name, blobs in net.params.items()}


def check_opset(opset: int) -> None:
    newest = onnx.defs.onnx_opset_version()
    if not MIN_OPSET <= opset <= newest:
        raise InvalidValue(f"--opset {opset}: the exporter writes opsets {MIN_OPSET} to {newest} "
                         f"(the installed onnx package's newest)")


def provenance(model: Model, variant: str | None) -> dict[str, str]:
    """What the ONNX file records of where it came from, and what mrfnet needs to run it as Caffe does."""
    caffe = import_caffe()
    build = build_info(caffe)
    info = model.info
    height, width = model.net.blobs[info.input_blob].data.shape[2:]
    estimate = model.memory()
    metadata = {
        VARIANT: variant or "",
        "mrfnet.version": importlib.metadata.version("mrfnet"),
        "mrfnet.deploy": info.path.name,
        "mrfnet.deploy_sha256": sha256(info.path),
        "caffe.version": f"{caffe.__version__} (build {build.get('key', 'unknown')})",
        "mrfnet.input": f"{info.input_blob}: N x 3 x H x W float32, BGR, 0..1",
        PREDICTION_KEY: info.output_blob,
        PARAMETERS: str(model.parameters or info.parameters),
        TILE_BYTES_PER_PIXEL: repr((estimate.total - estimate.parameters) / (height * width)),
        TILE_FIXED_BYTES: str(estimate.parameters),
    }
    if model.weights is not None:
        metadata["mrfnet.caffemodel"] = model.weights.name
        metadata["mrfnet.caffemodel_sha256"] = sha256(model.weights)
    return {key: value for key, value in metadata.items() if value}


def export_model(model: Model, *, variant: str | None = None, opset: int = DEFAULT_OPSET,
                 for_int8: bool = False) -> onnx.ModelProto:
    """The checked ONNX model of a loaded Caffe model (its weights as Caffe read them), with provenance;
    ``for_int8``: the graph to quantise (deconvolutions as phase convolutions, which have INT8 kernels)."""
    check_opset(opset)
    check_supported(model.info.proto)
    return caffe_to_onnx(model.info.proto, caffe_params(model.net), outputs=list(model.net.outputs), opset=opset,
                         name=variant or model.info.path.stem, metadata=provenance(model, variant),
                         phase_deconvolution=for_int8)


def parity(model: Model, exported: OnnxModel, shape: tuple[int, int, int] = PARITY_SHAPE, seed: int = 0) -> float:
    """Max abs difference of the two engines' predictions on one random input of ``shape`` (C, H, W)."""
    chw = np.random.default_rng(seed).random(shape, dtype=np.float32)
    caffe_out = model.forward(chw)
    return float(np.max(np.abs(exported.forward(chw) - caffe_out)))


def verify(model: Model, proto: onnx.ModelProto, *, tolerance: float | None = PARITY_TOLERANCE) -> float:
    """Load ``proto`` in ONNX Runtime and compare it with Caffe; :class:`ParityError` above ``tolerance``."""
    difference = parity(model, OnnxModel(proto))
    log.info("ONNX Runtime vs Caffe on a random %dx%d input: max abs difference %.2e", PARITY_SHAPE[2],
             PARITY_SHAPE[1], difference)
    if tolerance is not None and not difference <= tolerance:
        raise ParityError(f"the exported model differs from Caffe by {difference:.3g} (more than {tolerance:g}) on a "
                          "random input: not written (a converter bug: please report it with the prototxt)")
    return difference


def save_onnx(proto: onnx.ModelProto, path: str | Path) -> Path:
    """Write ``proto`` to ``path`` whole or not at all (data_prep.atomic): a kill or a full disk leaves the old
    file or none."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_atomic(path, proto.SerializeToString())
