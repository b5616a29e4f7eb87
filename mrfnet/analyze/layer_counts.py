"""The Table I report: per layer type, kernel, stride, pad, output channels and size, parameters and multiply-adds.

Shapes and parameter counts come from Caffe's own shape inference (``caffe.Net`` on the
prototxt, in a child process so a prototxt Caffe rejects becomes a CaffeError); kernel, stride
and pad are read from the same prototxt. Multiply-adds count convolutions, deconvolutions and
inner products (pooling, ReLU, sums and crops do no multiplications) for a batch of one.
"""

from __future__ import annotations

import math
import re
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass

from google.protobuf import text_format

from mrfnet.runtime.caffe_env import import_caffe, run_isolated
from mrfnet.runtime.errors import InvalidValue
from netgen.network import build_deploy
from netgen.sizes import size_label

SIZES = ((256, 256), (720, 1280))  # (height, width): the training crop and a GOPRO frame


CLAIMED_PARAMS_CUT, CLAIMED_MACS_CUT = 0.50, 0.75  # Sec. III.B: "more than 50%" and "more than 75%"


MULTIPLYING = ("Convolution", "Deconvolution", "InnerProduct")


# Layers of the blocks the lightweight process rewrites (RCU, CRP, fusion, MRF unit); the encoder, the
# path adapters conv_r{k}_1, the deconvolutions, remote and output convolutions are the same in all variants.
REFINEMENT_BLOCK = re.compile(r"_rcu\d|_crp_|_fusion|^conv_r\d_m\d")


@dataclass(frozen=True)
class LayerRow:
    name: str
    type: str
    kernel: str
    stride: str
    pad: str
    channels: int | None
    size: tuple[int, ...]  # output height, width (empty for a scalar or flat top)
    params: int
    macs: int


def _shapes(prototxt: str) -> dict[str, dict[str, list[tuple[int, ...]]]]:
    """Top, bottom and parameter shapes of each layer, as Caffe infers them (runs in a child)."""
    caffe = import_caffe()
    caffe.set_mode_cpu()
    with tempfile.NamedTemporaryFile("w", suffix=".prototxt") as handle:
        handle.write(prototxt)
        handle.flush()
        net = caffe.Net(handle.name, caffe.TEST)
    params = {name: [tuple(blob.data.shape) for blob in blobs] for name, blobs in net.params.items()}
    return {layer: {"tops": [tuple(net.blobs[t].shape) for t in net.top_names[layer]],
                    "bottoms": [tuple(net.blobs[b].shape) for b in net.bottom_names[layer]],
                    "params": params.get(layer, [])}
            for layer in net._layer_names}


def _pair(values: Sequence[int], default: int) -> str:
    """Caffe's repeated kernel/stride/pad field as "HxW" (one value means both sides)."""
    values = list(values) or [default]
    return "x".join(map(str, values * 2 if len(values) == 1 else values))


def _geometry(layer) -> tuple[str, str, str]:
    """Kernel, stride and pad of a convolution or pooling layer as written in the prototxt."""
    if layer.type in ("Convolution", "Deconvolution"):
        p = layer.convolution_param
        kernel = [p.kernel_h, p.kernel_w] if p.kernel_h else p.kernel_size
        stride = [p.stride_h, p.stride_w] if p.stride_h else p.stride
        pad = [p.pad_h, p.pad_w] if p.pad_h or p.pad_w else p.pad
    elif layer.type == "Pooling":
        p = layer.pooling_param
        if p.global_pooling:
            return "global", "", ""
        kernel = [p.kernel_h, p.kernel_w] if p.kernel_h else [p.kernel_size]
        stride = [p.stride_h, p.stride_w] if p.stride_h else [p.stride]
        pad = [p.pad_h, p.pad_w] if p.pad_h or p.pad_w else [p.pad]
    else:
        return "", "", ""
    return _pair(kernel, 1), _pair(stride, 1), _pair(pad, 0)


def _macs(kind: str, shapes: dict[str, list[tuple[int, ...]]]) -> int:
    """Multiply-adds per image: every output (conv) or input (deconv) position applies the whole weight blob."""
    if kind not in MULTIPLYING or not shapes["params"]:
        return 0
    weights = math.prod(shapes["params"][0])
    if kind == "Convolution":
        return math.prod(shapes["tops"][0][2:]) * weights
    if kind == "Deconvolution":
        return math.prod(shapes["bottoms"][0][2:]) * weights
    return weights


def layer_table(prototxt: str, height: int | None = None, width: int | None = None,
                timeout: float = 600) -> list[LayerRow]:
    """One row per layer of a deploy prototxt's text; ``height``/``width`` resize its Input layers first.

    Raises ValueError for text that is not a NetParameter and CaffeError when Caffe rejects the net.
    """
    caffe = import_caffe()
    net = caffe.proto.caffe_pb2.NetParameter()
    try:
        text_format.Merge(prototxt, net)
    except text_format.ParseError as exc:
        raise InvalidValue(f"not a Caffe net definition: {exc}") from exc
    if not net.layer:
        raise InvalidValue("the net definition has no layers (an empty file, or one written with the old `layers` "
                         "field): nothing to count")
    known = set(caffe.layer_type_list())
    unknown = [f"{layer.name!r} ({layer.type})" for layer in net.layer if layer.type not in known]
    if unknown:  # Caffe would abort on them, listing every type it knows
        raise InvalidValue(f"layer type(s) this Caffe does not have: {', '.join(unknown)}")
    if height is not None and width is not None:
        for layer in net.layer:
            for shape in layer.input_param.shape:
                if len(shape.dim) == 4:
                    shape.dim[:] = [1, shape.dim[1], height, width]
    shapes = run_isolated(_shapes, str(net), timeout=timeout)
    rows = []
    for layer in net.layer:
        if layer.name not in shapes:
            continue  # excluded from the TEST phase
        found = shapes[layer.name]
        top = found["tops"][0] if found["tops"] else ()
        rows.append(LayerRow(layer.name, layer.type, *_geometry(layer), channels=top[1] if len(top) > 1 else None,
                             size=tuple(top[2:]), params=sum(math.prod(s) for s in found["params"]),
                             macs=_macs(layer.type, found)))
    return rows


def variant_tables(variant: str, sizes: Sequence[tuple[int, int]] = SIZES) -> list[list[LayerRow]]:
    """The report rows of ``variant``'s deploy net at each (height, width)."""
    return [layer_table(str(build_deploy(variant, height=h, width=w))) for h, w in sizes]


def _labels(sizes: Sequence[tuple[int, int]]) -> list[str]:
    return [size_label(h, w) for h, w in sizes]


def _count(value: float) -> str:
    for unit, factor in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(value) >= factor:
            return f"{value / factor:.2f}{unit}"
    return f"{value:.0f}"


def format_layers(title: str, tables: Sequence[list[LayerRow]], sizes: Sequence[tuple[int, int]]) -> str:
    """A text table, one line per layer, with output size and multiply-adds at each input size, and totals."""
    head = ["layer", "type", "kernel", "stride", "pad", "ch", "params"]
    for label in _labels(sizes):
        head += [f"HxW@{label}", f"MACs@{label}"]
    lines = [[*head]]
    for rows in zip(*tables, strict=True):
        first = rows[0]
        line = [first.name, first.type, first.kernel, first.stride, first.pad,
                "" if first.channels is None else str(first.channels), _count(first.params)]
        for row in rows:
            line += ["x".join(map(str, row.size)), _count(row.macs) if row.macs else ""]
        lines.append(line)
    total = ["total", "", "", "", "", "", _count(sum(r.params for r in tables[0]))]
    for rows in tables:
        total += ["", _count(sum(r.macs for r in rows))]
    lines.append(total)
    widths = [max(len(line[i]) for line in lines) for i in range(len(head))]
    text = [" ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip() for line in lines]
    return "\n".join([f"## {title}", *text[:1], " ".join("-" * w for w in widths), *text[1:]])


@dataclass(frozen=True)
class Totals:
    """Parameters and multiply-adds (one per input size), of the whole net and of the refinement blocks alone."""

    params: int
    macs: list[int]
    block_params: int
    block_macs: list[int]


def totals(tables: Sequence[list[LayerRow]]) -> Totals:
    """Sum a net's rows; "blocks" are the RCU, CRP, fusion and MRF layers that the lightweight process changes."""
    def block(row: LayerRow) -> bool:
        return bool(REFINEMENT_BLOCK.search(row.name))

    return Totals(params=sum(r.params for r in tables[0]), macs=[sum(r.macs for r in rows) for rows in tables],
                  block_params=sum(r.params for r in tables[0] if block(r)),
                  block_macs=[sum(r.macs for r in rows if block(r)) for rows in tables])


def _change(light: Totals, heavy: Totals, labels: Sequence[str], blocks: bool) -> str:
    params = (light.block_params / heavy.block_params) if blocks else light.params / heavy.params
    macs = zip(light.block_macs if blocks else light.macs, heavy.block_macs if blocks else heavy.macs, strict=True)
    cuts = "  ".join(f"MACs@{label} {m / n - 1:+.1%}" for label, (m, n) in zip(labels, macs, strict=True))
    return f"params {params - 1:+.1%}  {cuts}"


def format_summary(results: dict[str, Totals], sizes: Sequence[tuple[int, int]]) -> str:
    """Totals per variant and the lightweight process's cuts against the paper's claims."""
    labels = _labels(sizes)
    lines = ["## Totals", "variant      params     " + "  ".join(f"MACs@{label}".ljust(14) for label in labels)
             + "  refinement blocks: params, MACs"]
    for variant, total in results.items():
        lines.append(f"{variant:<12} {_count(total.params):<10} " + "  ".join(f"{_count(m):<14}" for m in total.macs)
                     + f"  {_count(total.block_params)}, " + ", ".join(_count(m) for m in total.block_macs))
    lines += ["", "## Lightweight process: change against the heavy net "
                  f"(paper: params -{CLAIMED_PARAMS_CUT:.0%} or more, FLOPs -{CLAIMED_MACS_CUT:.0%} or more)"]
    for light, heavy in (("lwrefinenet", "refinenet"), ("mrfnet", "rcrefinenet"), ("mrfnet", "refinenet")):
        if light in results and heavy in results:
            lines.append(f"{light} vs {heavy}: whole net {_change(results[light], results[heavy], labels, False)}")
            lines.append(f"{'':>{len(light) + len(heavy) + 4}}  refinement blocks "
                         f"{_change(results[light], results[heavy], labels, True)}")
    return "\n".join(lines)
