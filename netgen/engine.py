"""Which engine and arithmetic a generated net's (de)convolutions ask Caffe for.

The project's Caffe (tools/caffe-patches/0008) runs Convolution and Deconvolution on oneDNN's
kernels (engine DNNL, its DEFAULT in CPU mode) or on BVLC's im2col + BLAS code (engine CAFFE), and
the DNNL engine can compute in bfloat16 (``precision: BF16``: float blobs, float accumulation,
float master weights). Its float 3x3 stride-1 convolutions run Winograd's F(4x4, 3x3) where oneDNN
has it (``algorithm: AUTO``, 0010); ``algorithm: DIRECT`` keeps direct convolution (for comparisons).
A net generated with the defaults names none of them, so its text is BVLC's and loads in any Caffe.
ReLU, MAX pooling, Eltwise, Split and Crop need no setting: in that Caffe they run on oneDNN exactly
when their input comes from a DNNL layer (tools/caffe-patches/0009, 0010), so engine "caffe" gives
BVLC's computation throughout.
"""

from __future__ import annotations

from caffe.proto import caffe_pb2

from netgen.errors import NetgenError

ENGINES = ("default", "caffe", "dnnl")
PRECISIONS = ("fp32", "bf16")
ALGORITHMS = ("auto", "direct")
CONVOLUTION_TYPES = ("Convolution", "Deconvolution")


def _enum_value(enum: str, name: str) -> int:
    try:
        return caffe_pb2.ConvolutionParameter.DESCRIPTOR.enum_types_by_name[enum].values_by_name[name].number
    except KeyError:
        raise NetgenError(f"this Caffe's ConvolutionParameter has no {enum} {name}: it was not built with the "
                         "project's DNNL engine (bash tools/install_caffe.sh builds it)") from None


def set_convolution_engine(net: caffe_pb2.NetParameter, *, engine: str = "default",
                           precision: str = "fp32", algorithm: str = "auto") -> caffe_pb2.NetParameter:
    """Set ``engine``, ``precision`` and ``algorithm`` on every Convolution and Deconvolution layer of ``net``
    (in place; the algorithm on convolutions only: oneDNN has no Winograd deconvolution).

    "default", "fp32" and "auto" leave the fields unset (Caffe's defaults: DNNL where built, float,
    Winograd where oneDNN has it). bf16 needs the DNNL engine: with engine "caffe" it is refused here
    rather than by a Caffe abort.
    """
    if engine not in ENGINES:
        raise NetgenError(f"unknown convolution engine {engine!r}; choose one of {', '.join(ENGINES)}")
    if precision not in PRECISIONS:
        raise NetgenError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
    if algorithm not in ALGORITHMS:
        raise NetgenError(f"unknown algorithm {algorithm!r}; choose one of {', '.join(ALGORITHMS)}")
    if precision == "bf16" and engine == "caffe":
        raise NetgenError("precision bf16 runs on the DNNL engine only, not on engine caffe")
    engine_value = None if engine == "default" else _enum_value("Engine", engine.upper())
    precision_value = None if precision == "fp32" else _enum_value("Precision", precision.upper())
    algorithm_value = None if algorithm == "auto" else _enum_value("Algorithm", algorithm.upper())
    for layer in net.layer:
        if layer.type not in CONVOLUTION_TYPES:
            continue
        if engine_value is not None:
            layer.convolution_param.engine = engine_value
        if precision_value is not None:
            layer.convolution_param.precision = precision_value
        if algorithm_value is not None and layer.type == "Convolution":
            layer.convolution_param.algorithm = algorithm_value
    return net
