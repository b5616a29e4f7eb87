"""Running a deploy net on images: safe loading, pad-and-crop, tiled inference with blending.

Caffe aborts the process (glog CHECK) on a prototxt it rejects and on a caffemodel that is
corrupt or does not fit the net; a score or deblur run must report those, not die. So a deploy
net is loaded in this process only after (1) its prototxt parsed with protobuf, (2) Caffe built
it in a child process (:func:`mrfnet.caffe_env.run_isolated`), which also tells every layer's
parameter shapes, and (3) the caffemodel parsed with protobuf and matched against those shapes,
layer by layer. A caffemodel that leaves some of the net's layers without weights is refused too:
Caffe would silently keep their random initialisation.

Inference takes a uint8 BGR image (Caffe's and OpenCV's order), feeds it as 1 x 3 x H x W in
[0, 1], and reads back ``out_r4``. The image is first replicate-padded at the bottom and right to
a multiple of the network's stride (8, at least 8 pixels a side) and the prediction cropped back:
the net itself accepts any size of at least 8 (ceil-halving and Crop layers), but training only
ever showed it multiples of 8, and a 1x1 image needs the padding anyway. Large images are cut
into tiles whose origins and sizes are multiples of the stride, so each tile sees the same
pooling and stride-2 grid as the whole image; neighbouring tiles overlap and are blended with
weights that fall to ~0 at a tile's inner edges, where zero padding makes its prediction differ.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from google.protobuf import message, text_format

from mrfnet.caffe_env import import_caffe, run_isolated
from netgen import INPUT, PREDICTION
from netgen.variants import STRIDE

log = logging.getLogger(__name__)

DEFAULT_OVERLAP = 128  # pixels shared by neighbouring tiles; see docs/architecture.md for the tolerance
DEFAULT_MAX_MEMORY_GB = 4.0  # budget that picks the tile size when none is given
BLENDS = ("cosine", "linear")
LOAD_TIMEOUT_S = 600.0


class WeightsMismatch(ValueError):
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
        raise FileNotFoundError(f"{what} {path} does not exist")
    if not path.is_file():
        raise ValueError(f"{what} {path} is not a file")
    return path


def read_prototxt(path: str | Path) -> Any:
    """The NetParameter of a text prototxt; ValueError naming the file on a syntax error."""
    path = _require_file(path, "deploy prototxt")
    net = caffe_pb2().NetParameter()
    try:
        text_format.Merge(path.read_text(), net)
    except (text_format.ParseError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path} is not a valid prototxt: {exc}") from exc
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
            raise ValueError(f"{deploy} has no {what} blob {blob!r} (blobs: {', '.join(described['blobs'][:6])}, ...)")
    return DeployInfo(Path(deploy), proto, described["params"], described["blobs"], input_blob, output_blob)


def _open_gpu(gpu: int) -> str:
    caffe = import_caffe()
    caffe.set_device(gpu)
    caffe.set_mode_gpu()
    return f"device {gpu} opened"


def set_mode(caffe: Any, gpu: int | None) -> None:
    if gpu is None:
        caffe.set_mode_cpu()
    else:
        caffe.set_device(gpu)
        caffe.set_mode_gpu()


class Model:
    """A checked deploy net in this process, with weights that were checked before Caffe read them."""

    def __init__(self, deploy: str | Path, weights: str | Path | None = None, *, info: DeployInfo | None = None,
                 gpu: int | None = None) -> None:
        self.info = info or inspect_deploy(deploy)
        caffe = import_caffe()
        if gpu is not None:
            run_isolated(_open_gpu, gpu, timeout=LOAD_TIMEOUT_S)  # a CPU-only build aborts on set_device
        set_mode(caffe, gpu)
        self.net = caffe.Net(str(self.info.path), caffe.TEST)
        self.weights: Path | None = None
        self.parameters = 0
        if weights is not None:
            self.load_weights(weights)

    def load_weights(self, weights: str | Path) -> None:
        """Check ``weights`` against the net, then copy them in (Caffe's CopyTrainedLayersFrom)."""
        self.parameters = check_weights(weights, self.info.param_shapes, deploy=self.info.path)
        self.net.copy_from(str(weights))
        self.weights = Path(weights)

    def predict(self, bgr: np.ndarray, **options: Any) -> np.ndarray:
        return predict(self.net, bgr, input_blob=self.info.input_blob, output_blob=self.info.output_blob, **options)

    def deblur(self, bgr: np.ndarray, **options: Any) -> np.ndarray:
        return to_uint8(self.predict(bgr, **options))

    def memory(self) -> MemoryEstimate:
        """Caffe's forward memory for the net as shaped now (see :func:`memory_estimate`)."""
        return memory_estimate(self.net, self.info.proto)

    def max_tile_pixels(self, max_memory_gb: float = DEFAULT_MAX_MEMORY_GB) -> int:
        """Input pixels whose forward pass fits ``max_memory_gb`` of Caffe memory (scaled from the net's shape now)."""
        estimate = self.memory()
        height, width = self.net.blobs[self.info.input_blob].data.shape[2:]
        per_pixel = (estimate.total - estimate.parameters) / (height * width)
        return pixels_for_budget(per_pixel, estimate.parameters, max_memory_gb)


def pixels_for_budget(bytes_per_pixel: float, fixed_bytes: float, max_memory_gb: float) -> int:
    return int(max(0.0, max_memory_gb * 2**30 - fixed_bytes) / bytes_per_pixel)


@dataclass(frozen=True)
class AutoTile:
    """Tiles picked per image to fit ``max_pixels`` input pixels: none if the whole image fits; else tiles
    spanning the image's short side when they can (one row of tiles: fewest overlaps), else squares."""

    max_pixels: int
    overlap: int = DEFAULT_OVERLAP

    def shape_for(self, height: int, width: int) -> tuple[int, int] | None:
        """(tile height, tile width) for a padded image of ``height`` x ``width``, or None for one pass."""
        if height * width <= self.max_pixels:
            return None
        smallest = max(2 * self.overlap, 4 * STRIDE)
        for spans_height in (height <= width, height > width):
            span, other = (height, width) if spans_height else (width, height)
            side = self.max_pixels // span // STRIDE * STRIDE
            if smallest <= side < other:
                side = self._balanced(other, side, smallest)
                return (span, side) if spans_height else (side, span)
        side = max(smallest, math.isqrt(self.max_pixels) // STRIDE * STRIDE)
        return self._balanced(height, side, smallest), self._balanced(width, side, smallest)

    def _balanced(self, length: int, largest: int, smallest: int) -> int:
        """The narrowest tile side that still needs no more tiles than ``largest`` does (less overlap wasted)."""
        if length <= largest:
            return length
        count = math.ceil((length - self.overlap) / (largest - self.overlap))
        side = math.ceil((length + (count - 1) * self.overlap) / count / STRIDE) * STRIDE
        return min(largest, max(smallest, side))


Tile = int | tuple[int, int] | AutoTile | None


def resolve_tile(model: Model, tile: int | str | None, overlap: int, max_memory_gb: float) -> Tile:
    """What to tile with: None (whole images) for 0 or None, an :class:`AutoTile` within ``max_memory_gb`` for
    "auto", else square tiles of ``tile`` pixels."""
    if tile in (None, 0):
        return None
    if tile == "auto":
        auto = AutoTile(model.max_tile_pixels(max_memory_gb), overlap)
        log.info("tiles when an image is over %.2f megapixels (%.1f GB of Caffe memory), overlap %d",
                 auto.max_pixels / 1e6, max_memory_gb, overlap)
        return auto
    if not isinstance(tile, int):
        raise ValueError(f"tile must be a number of pixels, 0 or 'auto', got {tile!r}")
    check_tiling((tile, tile), overlap, BLENDS[0])
    return tile


# ---------------------------------------------------------------- memory


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes Caffe allocates for a forward pass (float32 data; diffs are allocated lazily, not in forward).

    Counted for the project's Caffe: one im2col workspace per thread (tools/caffe-patches/0004) and, in a
    deploy net with ``share_test_blobs``, intermediate blobs sharing storage by lifetime (0005). A Caffe
    without those patches is counted as BVLC Caffe allocates: a buffer per layer, a blob per top.
    """

    activations: int  # top blobs' data, each storage once (Split tops view their bottom; shared slots once)
    parameters: int
    col_buffers: int  # the im2col workspace: the largest non-1x1 (de)convolution's need (BVLC: the sum)
    pool_masks: int  # MAX pooling stores its argmax per output
    split_activations: int = 0  # Split tops: no data of their own, but a diff each in backward
    batch: int = 1
    unshared_activations: int = 0  # every top blob's data once, as a net without shared blobs holds it

    @property
    def total(self) -> int:
        """Forward only (inference)."""
        return self.activations + self.parameters + self.col_buffers + self.pool_masks

    @property
    def training(self) -> int:
        """Forward and backward: every blob's data and diff (Split tops' diffs too), parameter diffs too.

        A training net never shares its blobs (they are needed again in backward).
        """
        return (2 * (self.unshared_activations + self.parameters) + self.split_activations + self.col_buffers
                + self.pool_masks)


def lean_caffe(net: Any) -> bool:
    """Whether ``net`` comes from the project's patched Caffe (shared im2col workspace, shareable blobs)."""
    return hasattr(net, "_blob_storage_slots")


def _col_values(layer: Any, net: Any, name: str, weights: Any) -> int:
    """Floats of the im2col buffer of a Convolution or Deconvolution layer (0 for a 1x1 without stride/pad)."""
    _, per_group, kh, kw = weights.data.shape
    param = layer.convolution_param
    if layer.type == "Convolution":
        one_by_one = (kh, kw) == (1, 1) and all(s == 1 for s in param.stride) and all(p == 0 for p in param.pad)
        if one_by_one:
            return 0
        spatial = net.blobs[net.top_names[name][0]].data.shape[2:]
    else:
        spatial = net.blobs[net.bottom_names[name][0]].data.shape[2:]
    return per_group * kh * kw * spatial[0] * spatial[1] * max(1, param.group)


def memory_estimate(net: Any, proto: Any) -> MemoryEstimate:
    """Caffe's forward memory for ``net`` at its current shape, counted from its blobs and layers.

    Split tops share their bottom's data and in-place tops are one blob, so each is counted once; blobs
    that share a storage slot (Caffe's own plan, ``net._blob_storage_slots``) count as the slot's largest.
    """
    layers = {layer.name: layer for layer in proto.layer}
    views = {top for name, tops in net.top_names.items()  # Caffe inserts the Split layers itself
             if name not in layers or layers[name].type == "Split" for top in tops}
    counts = {name: blob.count for name, blob in net.blobs.items()}
    unshared = sum(count for name, count in counts.items() if name not in views)
    lean = lean_caffe(net)
    slots = list(net._blob_storage_slots) if lean else []
    if slots:
        slot_sizes: dict[int, int] = {}
        own = 0
        for (name, count), slot in zip(counts.items(), slots, strict=True):
            if slot >= 0:
                slot_sizes[slot] = max(slot_sizes.get(slot, 0), count)
            elif name not in views:
                own += count
        activations = own + sum(slot_sizes.values())
    else:
        activations = unshared
    split_activations = sum(count for name, count in counts.items() if name in views)
    parameters = sum(blob.count for blobs in net.params.values() for blob in blobs) * 4
    col_needs = [_col_values(layers[name], net, name, blobs[0]) for name, blobs in net.params.items()
                 if name in layers and layers[name].type in ("Convolution", "Deconvolution")]
    col = (max(col_needs, default=0) if lean else sum(col_needs)) * 4
    masks = sum(net.blobs[net.top_names[name][0]].count for name, layer in layers.items()
                if layer.type == "Pooling" and layer.pooling_param.pool == 0 and name in net.top_names)  # MAX
    batch = net.blobs[next(iter(net.blobs))].data.shape[0]
    return MemoryEstimate(activations * 4, parameters, col, masks * 4, split_activations * 4, batch, unshared * 4)


def receptive_field(proto: Any, blob: str = PREDICTION) -> int:
    """Theoretical receptive-field radius, in input pixels, of one pixel of ``blob`` (convolutions, poolings,
    deconvolutions; element-wise layers take the largest of their inputs)."""
    radius: dict[str, float] = {}
    jump: dict[str, float] = {}
    for layer in proto.layer:
        bottoms = list(layer.bottom)
        if not bottoms:
            for top in layer.top:
                radius[top], jump[top] = 0.0, 1.0
            continue
        r_in = max(radius.get(b, 0.0) for b in bottoms)
        j_in = jump.get(bottoms[0], 1.0)
        if layer.type in ("Convolution", "Deconvolution"):
            param = layer.convolution_param
            kernel = param.kernel_size[0] if param.kernel_size else max(param.kernel_h, 1)
            dilation = param.dilation[0] if param.dilation else 1
            stride = param.stride[0] if param.stride else 1
            if layer.type == "Convolution":
                r_out, j_out = r_in + (dilation * (kernel - 1)) / 2 * j_in, j_in * stride
            else:
                j_out = j_in / stride
                r_out = r_in + (kernel - 1) / 2 * j_out
        elif layer.type == "Pooling":
            param = layer.pooling_param
            kernel, stride = max(param.kernel_size, param.kernel_h, 1), max(param.stride, param.stride_h, 1)
            r_out, j_out = r_in + (kernel - 1) / 2 * j_in, j_in * stride
        else:
            r_out, j_out = r_in, j_in
        for top in layer.top:
            radius[top], jump[top] = r_out, j_out
    return math.ceil(radius[blob])


# ---------------------------------------------------------------- inference


def check_image(image: np.ndarray) -> None:
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected an H x W x 3 uint8 BGR image, got {getattr(image, 'dtype', type(image))} "
                         f"{getattr(image, 'shape', '')}")
    if image.shape[0] < 1 or image.shape[1] < 1:
        raise ValueError(f"empty image of shape {image.shape}")


def pad_to_stride(chw: np.ndarray, stride: int = STRIDE) -> np.ndarray:
    """Replicate-pad a C x H x W array at the bottom and right to multiples of ``stride`` (at least one)."""
    height, width = chw.shape[1:]
    pad_h = max(stride, math.ceil(height / stride) * stride) - height
    pad_w = max(stride, math.ceil(width / stride) * stride) - width
    if pad_h == pad_w == 0:
        return chw
    return np.pad(chw, ((0, 0), (0, pad_h), (0, pad_w)), mode="edge")


def tile_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Origins of ``tile``-pixel tiles covering ``length``, ``tile - overlap`` apart, the last flush with the end."""
    if length <= tile:
        return [0]
    step = tile - overlap
    starts = list(range(0, length - tile, step))
    return starts + [length - tile]


def blend_weights(length: int, start: int, size: int, overlap: int, blend: str) -> np.ndarray:
    """1-D weights of one tile: 1 inside; at an edge shared with a neighbour, 0 over the outer 3/8 of
    ``overlap`` (where zero padding spoils the prediction), then a ramp to 1 over its middle quarter.

    So every pixel comes from tiles in which it lies at least 3/8 ``overlap`` from an inner edge.
    """
    weights = np.ones(size, dtype=np.float32)
    if overlap == 0:
        return weights
    margin = overlap * 3 // 8
    x = np.clip((np.arange(overlap, dtype=np.float64) + 0.5 - margin) / (overlap - 2 * margin), 0.0, 1.0)
    ramp = (x if blend == "linear" else 0.5 - 0.5 * np.cos(np.pi * x)).astype(np.float32)
    if start > 0:
        weights[:overlap] = ramp
    if start + size < length:
        weights[-overlap:] = np.minimum(weights[-overlap:], ramp[::-1])
    return weights


def check_tiling(shape: tuple[int, int] | None, overlap: int, blend: str) -> None:
    if blend not in BLENDS:
        raise ValueError(f"unknown blend {blend!r}; choose one of {', '.join(BLENDS)}")
    if overlap < 0 or overlap % STRIDE:
        raise ValueError(f"overlap must be a non-negative multiple of the network stride {STRIDE}, got {overlap}")
    for side in shape or ():
        if side < STRIDE or side % STRIDE:
            raise ValueError(f"tile sides must be positive multiples of the network stride {STRIDE}, got {side}")
        if 2 * overlap > side:
            raise ValueError(f"overlap {overlap} must be at most half the tile side {side}")


def tile_shape(tile: Tile, height: int, width: int) -> tuple[int, int] | None:
    """The (height, width) of the tiles for a padded ``height`` x ``width`` image, None for one pass."""
    if tile is None:
        return None
    if isinstance(tile, AutoTile):
        return tile.shape_for(height, width)
    if isinstance(tile, int):
        return tile, tile
    return int(tile[0]), int(tile[1])


def _forward(net: Any, chw: np.ndarray, input_blob: str, output_blob: str) -> np.ndarray:
    blob = net.blobs[input_blob]
    shape = (1, *chw.shape)
    if blob.data.shape != shape:
        blob.reshape(*shape)
        net.reshape()
    blob.data[0] = chw
    net.forward()
    return net.blobs[output_blob].data[0].copy()  # read back: the next forward overwrites it


def tiled(forward: Callable[[np.ndarray], np.ndarray], chw: np.ndarray, shape: tuple[int, int] | None,
          overlap: int, blend: str) -> np.ndarray:
    """``forward`` over tiles of ``shape`` of a C x H x W array (sides multiples of the stride), blended together."""
    height, width = chw.shape[1:]
    if shape is None or (height <= shape[0] and width <= shape[1]):
        return forward(chw)
    tile_h, tile_w = min(shape[0], height), min(shape[1], width)
    total = np.zeros(chw.shape, dtype=np.float32)
    weight_sum = np.zeros((height, width), dtype=np.float32)
    for y in tile_starts(height, tile_h, overlap):
        wy = blend_weights(height, y, tile_h, overlap, blend)
        for x in tile_starts(width, tile_w, overlap):
            weights = np.outer(wy, blend_weights(width, x, tile_w, overlap, blend))
            out = forward(chw[:, y:y + tile_h, x:x + tile_w])
            total[:, y:y + tile_h, x:x + tile_w] += out * weights
            weight_sum[y:y + tile_h, x:x + tile_w] += weights
    return total / weight_sum


def predict(net: Any, bgr: np.ndarray, *, tile: Tile = None, overlap: int = DEFAULT_OVERLAP, blend: str = "cosine",
            input_blob: str = INPUT, output_blob: str = PREDICTION) -> np.ndarray:
    """The net's prediction for a uint8 BGR image: float32 H x W x 3 BGR on the 0..1 scale, unclipped.

    ``tile`` None runs the whole (padded) image in one pass; an int gives square tiles, a pair
    (height, width) tiles, an :class:`AutoTile` tiles picked for the image; neighbouring tiles
    share ``overlap`` pixels and are blended with ``blend`` ("cosine" or "linear") weights.
    """
    check_image(bgr)
    height, width = bgr.shape[:2]
    chw = pad_to_stride(bgr.transpose(2, 0, 1).astype(np.float32) / 255.0)
    shape = tile_shape(tile, *chw.shape[1:])
    check_tiling(shape, overlap, blend)
    out = tiled(lambda part: _forward(net, part, input_blob, output_blob), chw, shape, overlap, blend)
    return np.ascontiguousarray(out[:, :height, :width].transpose(1, 2, 0))


def to_uint8(prediction: np.ndarray) -> np.ndarray:
    """A 0..1 prediction as the uint8 image that is saved and scored: x 255, rounded, clipped."""
    return np.clip(np.rint(prediction * 255.0), 0, 255).astype(np.uint8)


def deblur_image(net: Any, bgr: np.ndarray, **options: Any) -> np.ndarray:
    """Deblur a uint8 BGR image with a loaded deploy net; returns uint8 BGR of the same size (see :func:`predict`)."""
    return to_uint8(predict(net, bgr, **options))
