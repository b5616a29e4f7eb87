"""Reading deploy prototxt and caffemodels, and checking weights before Caffe sees them (a mismatch aborts Caffe)."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from google.protobuf import message, text_format

from mrfnet.runtime.caffe_env import import_caffe, run_isolated
from mrfnet.runtime.errors import InvalidValue, MissingInput
from netgen import INPUT, PREDICTION

log = logging.getLogger(__name__)


LOAD_TIMEOUT_S = 600.0


class WeightsMismatch(InvalidValue):
    """A caffemodel whose layers or blob shapes do not fit the deploy net."""


class NonFiniteWeights(WeightsMismatch):
    """A caffemodel with NaN or infinite parameters: a diverged run's weights, which deblur to garbage."""


def caffe_pb2() -> Any:
    """Caffe's protobuf module (importing it needs pycaffe)."""
    import_caffe()
    from caffe.proto import caffe_pb2 as module

    return module


def _require_file(path: str | Path, what: str) -> Path:
    path = Path(path)
    if not path.exists():
        raise MissingInput(f"{what} {path} does not exist")
    if not path.is_file():
        raise InvalidValue(f"{what} {path} is not a file")
    return path


def read_prototxt(path: str | Path) -> Any:
    """The NetParameter of a text prototxt; ValueError naming the file on a syntax error."""
    path = _require_file(path, "deploy prototxt")
    net = caffe_pb2().NetParameter()
    try:
        text_format.Merge(path.read_text(), net)
    except (text_format.ParseError, UnicodeDecodeError) as exc:
        raise InvalidValue(f"{path} is not a valid prototxt: {exc}") from exc
    return net


def read_caffemodel(path: str | Path) -> Any:
    """The NetParameter of a binary caffemodel; :class:`WeightsMismatch` if protobuf cannot parse it."""
    path = _require_file(path, "caffemodel")
    if path.suffix == ".h5":
        raise WeightsMismatch(f"{path}: HDF5 weights are not supported here, use the binary .caffemodel snapshot")
    model = caffe_pb2().NetParameter()
    try:
        model.ParseFromString(path.read_bytes())
    except message.DecodeError as exc:
        raise WeightsMismatch(f"{path} is not a caffemodel (protobuf cannot parse it: {exc}); "
                         "the file may be truncated or corrupt") from exc
    return model


def _blob_shape(blob: Any) -> tuple[int, ...]:
    if blob.HasField("shape"):
        return tuple(int(d) for d in blob.shape.dim)
    return tuple(int(d) for d in (blob.num, blob.channels, blob.height, blob.width))  # legacy 4-D blobs


def _blob_values(blob: Any) -> int:
    return len(blob.double_data) or len(blob.data)


def caffemodel_shapes(model: Any) -> dict[str, list[tuple[int, ...]]]:
    """Layer name -> shapes of its stored blobs (layers without blobs left out; V1 ``layers`` too)."""
    shapes: dict[str, list[tuple[int, ...]]] = {}
    for layer in list(model.layer) + list(model.layers):
        if layer.blobs:
            shapes[layer.name] = [_blob_shape(blob) for blob in layer.blobs]
    return shapes


def nonfinite_values(model: Any) -> dict[str, int]:
    """Layer name -> how many of its stored parameters are NaN or infinite (layers without any left out)."""
    found = {}
    for layer in list(model.layer) + list(model.layers):
        bad = sum(int(np.count_nonzero(~np.isfinite(np.asarray(blob.double_data or blob.data, dtype=np.float64))))
                  for blob in layer.blobs)
        if bad:
            found[layer.name] = bad
    return found


def check_finite(model: Any, weights: str | Path) -> None:
    """Refuse ``model`` (read from ``weights``) if any parameter is NaN or infinite."""
    bad = nonfinite_values(model)
    if bad:
        names = ", ".join(f"{name} ({count})" for name, count in list(bad.items())[:6])
        raise NonFiniteWeights(f"caffemodel {weights} holds {sum(bad.values())} non-finite (NaN or infinite) "
                               f"parameters in {len(bad)} layer(s): {names}{', ...' if len(bad) > 6 else ''}; "
                               "the run that wrote it diverged: use an earlier snapshot or retrain with a lower "
                               "--base-lr")


def _same_shape(a: tuple[int, ...], b: tuple[int, ...]) -> bool:
    """Caffe's Blob::ShapeEquals: legacy 4-D shapes compare after dropping leading 1s."""
    def strip(shape: tuple[int, ...]) -> tuple[int, ...]:
        shape = tuple(shape)
        while len(shape) > 1 and shape[0] == 1:
            shape = shape[1:]
        return shape

    return tuple(a) == tuple(b) or strip(a) == strip(b)


def check_weights(weights: str | Path, expected: dict[str, list[tuple[int, ...]]], *,
                  deploy: str | Path = "the deploy net") -> int:
    """Refuse a caffemodel that Caffe would abort on, that leaves layers of the net untrained, or whose
    parameters are not all finite (:class:`NonFiniteWeights`).

    ``expected`` maps each layer with parameters to its blob shapes, as Caffe built the net.
    Returns the number of parameters loaded.
    """
    model = read_caffemodel(weights)
    stored = caffemodel_shapes(model)
    if not stored:
        raise WeightsMismatch(f"{weights} holds no layer weights: not a trained caffemodel")
    problems = []
    for name, shapes in expected.items():
        if name not in stored:
            continue
        got = stored[name]
        if len(got) != len(shapes) or not all(_same_shape(a, b) for a, b in zip(got, shapes, strict=False)):
            problems.append(f"{name}: the net has {_fmt(shapes)}, the caffemodel {_fmt(got)}")
    missing = [name for name in expected if name not in stored]
    if problems or missing:
        lines = [f"caffemodel {weights} does not fit {deploy}"]
        if problems:
            lines.append(f"{len(problems)} layer(s) differ in shape: " + "; ".join(problems[:5])
                         + (f"; ... {len(problems) - 5} more" if len(problems) > 5 else ""))
        if missing:
            lines.append(f"{len(missing)} layer(s) of the net have no weights in it: " + ", ".join(missing[:8])
                         + (f", ... {len(missing) - 8} more" if len(missing) > 8 else ""))
        lines.append("(weights of another variant, or of another net?)")
        raise WeightsMismatch("\n".join(lines))
    by_name = {layer.name: layer for layer in list(model.layer) + list(model.layers)}
    total = 0
    for name, shapes in expected.items():
        for blob, shape in zip(by_name[name].blobs, shapes, strict=True):
            count = math.prod(shape)
            if _blob_values(blob) != count:
                raise WeightsMismatch(f"caffemodel {weights}: layer {name} stores {_blob_values(blob)} values "
                                      f"for a blob of shape {shape} ({count}); the file is corrupt")
            total += count
    check_finite(model, weights)
    return total


def _fmt(shapes: list[tuple[int, ...]]) -> str:
    return "[" + ", ".join("x".join(map(str, s)) for s in shapes) + "]"


@dataclass
class DeployInfo:
    """What Caffe made of a deploy prototxt: its parameter shapes and blob names."""

    path: Path
    proto: Any  # caffe_pb2.NetParameter
    param_shapes: dict[str, list[tuple[int, ...]]]
    blobs: list[str]
    input_blob: str = INPUT
    output_blob: str = PREDICTION
    parameters: int = field(init=False)

    def __post_init__(self) -> None:
        self.parameters = sum(math.prod(s) for shapes in self.param_shapes.values() for s in shapes)


def _describe_net(path: str) -> dict[str, Any]:
    """In a child: build the net in Caffe and list its parameter shapes and blobs."""
    caffe = import_caffe()
    caffe.set_mode_cpu()
    net = caffe.Net(path, caffe.TEST)
    return {"params": {name: [tuple(b.data.shape) for b in blobs] for name, blobs in net.params.items()},
            "blobs": list(net.blobs)}


def inspect_deploy(deploy: str | Path, *, input_blob: str = INPUT, output_blob: str = PREDICTION,
                   timeout: float = LOAD_TIMEOUT_S) -> DeployInfo:
    """Parse the prototxt, let Caffe build it in a child (a rejection is a CaffeError), check its blobs."""
    proto = read_prototxt(deploy)
    described = run_isolated(_describe_net, str(deploy), timeout=timeout)
    for blob, what in ((input_blob, "input"), (output_blob, "output")):
        if blob not in described["blobs"]:
            raise InvalidValue(f"{deploy} has no {what} blob {blob!r} "
                               f"(blobs: {', '.join(described['blobs'][:6])}, ...)")
    return DeployInfo(Path(deploy), proto, described["params"], described["blobs"], input_blob, output_blob)
