"""What a forward pass takes in Caffe's memory (as the patched build counts it), and the largest image that fits."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from mrfnet.runtime.caffe_env import dnnl_facts, import_caffe
from netgen import PREDICTION


def pixels_for_budget(bytes_per_pixel: float, fixed_bytes: float, max_memory_gb: float) -> int:
    return int(max(0.0, max_memory_gb * 2**30 - fixed_bytes) / bytes_per_pixel)


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes Caffe allocates for a forward pass (float32 data; diffs are allocated lazily, not in forward).

    Counted for the project's Caffe: one workspace per thread (tools/caffe-patches/0004), which the DNNL
    engine's layers (0008, 0009) use to stage an input that arrives in another layout (their outputs stay
    blocked in the blobs, beside a plain copy where a plain-reading layer shares the blob's storage) and the
    CAFFE engine's for im2col,
    and, in a deploy net with ``share_test_blobs``, intermediate blobs sharing storage by lifetime (0005). A
    Caffe without those patches is counted as BVLC Caffe allocates: a buffer per layer, a blob per top.
    """

    activations: int  # top blobs' data, each storage once (Split tops view their bottom; shared slots once)
    parameters: int
    col_buffers: int  # the shared workspace: the largest (de)convolution's need (BVLC: the sum of im2col buffers)
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


DNNL_BLOCK = 16  # oneDNN's AVX-512 layouts hold channels in blocks of 16 (nChw16c)


def _dnnl_values(net: Any, name: str) -> int:
    """Floats of a DNNL-engine layer's forward beyond the blobs' own: its input and output in 16-channel blocks
    (the input's staging copy; the output's blocked copy where the blob's storage also holds a plain one)."""
    bottom = net.blobs[net.bottom_names[name][0]].data.shape
    top = net.blobs[net.top_names[name][0]].data.shape

    def blocked(shape: tuple[int, ...]) -> int:
        return shape[0] * math.ceil(shape[1] / DNNL_BLOCK) * DNNL_BLOCK * shape[2] * shape[3]

    return blocked(bottom) + blocked(top)


def _dnnl_engines() -> tuple[int, ...]:
    """The engine values that run on DNNL in the Caffe this process imports (DEFAULT and DNNL), or none."""
    from caffe.proto import caffe_pb2  # lazily, like every Caffe import of this package

    if not dnnl_facts(import_caffe())["dnnl"]:
        return ()
    engines = caffe_pb2.ConvolutionParameter.Engine
    return engines.Value("DEFAULT"), engines.Value("DNNL")


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
    dnnl = _dnnl_engines()
    col_needs = [_dnnl_values(net, name) if layers[name].convolution_param.engine in dnnl
                 else _col_values(layers[name], net, name, blobs[0]) for name, blobs in net.params.items()
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
