"""The options of running a trained model (`mrfnet deblur`, `mrfnet score`, `mrfnet time`) and of exporting one
(`mrfnet export`), each described once as a dataclass field (data_prep.option_fields) whose flag
mrfnet.runtime.options generates.

They live in export, not infer, because which engine runs a model (``--engine``: Caffe, or ONNX Runtime on
the exported graph) is export's (mrfnet.export.engines), and infer may not import it. Options several
commands share (``--deploy``, ``--variant``, ``--gpu``) are made by one function each, so every dataclass that
has them lists them where its --help shows them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from data_prep.option_fields import non_negative_int, option, positive_float, positive_int
from mrfnet.export.engines import ENGINES
from mrfnet.export.onnx_graph import DEFAULT_OPSET
from mrfnet.export.quantize import DEFAULT_CALIBRATION_PATCHES
from mrfnet.infer.tiling import DEFAULT_MAX_MEMORY_GB, DEFAULT_OVERLAP
from mrfnet.runtime.errors import InvalidValue

# Argument groups in --help.
INFERENCE = "inference"
INT8 = "INT8 quantisation (ONNX Runtime static QDQ)"


def deploy_option() -> Any:
    """--deploy: the deploy net for a caffemodel that does not say which it is."""
    return option(None, "deploy prototxt (default: the run's, or generated for --variant)", parse=Path)


def variant_option() -> Any:
    """--variant: the variant whose deploy net netgen generates for a bare caffemodel."""
    return option(None, "variant whose deploy net netgen generates, for a bare caffemodel")


def gpu_option(group: str | None = None) -> Any:
    """--gpu: the device (None: the CPU)."""
    return option(None, "GPU id (needs a CUDA build of Caffe; default: CPU)", parse=non_negative_int, group=group)


def parse_tile(text: str) -> int | str:
    """--tile's value: a number of pixels (0: whole images) or "auto"; checked when the options are made, so a
    bad one is the user's one-line error (argparse would say only "invalid value")."""
    if text == "auto":
        return text
    try:
        return int(text)
    except ValueError:
        raise InvalidValue(f"--tile takes a number of pixels, 0 or auto, not {text!r}") from None


@dataclass(frozen=True)
class InferenceOptions:
    """How a model runs over images, whatever it is run for: the tiles and their memory budget, the device and
    the engine (deblur's and score's "inference" flags)."""

    tile: int | str = option("auto", "tile side in pixels (a multiple of 8), 0 for whole images, or auto: the "
                                     "largest tile within --max-memory-gb", group=INFERENCE)
    overlap: int = option(DEFAULT_OVERLAP, "pixels shared by neighbouring tiles, a multiple of 8",
                          parse=non_negative_int, group=INFERENCE)
    max_memory_gb: float = option(DEFAULT_MAX_MEMORY_GB, "memory budget in GB that sets the auto tile size "
                                                         "(deblur: the whole process's)",
                                  parse=positive_float, group=INFERENCE)
    gpu: int | None = gpu_option(INFERENCE)
    engine: str | None = option(None, "what runs the net: caffe, or onnxruntime on the graph `mrfnet export` "
                                      "writes (default: onnxruntime for an .onnx model, else caffe)",
                                choices=ENGINES, group=INFERENCE)

    def __post_init__(self) -> None:
        if isinstance(self.tile, str):  # as given on the command line, in a config, or by a caller
            object.__setattr__(self, "tile", parse_tile(self.tile))


@dataclass(frozen=True)
class DeblurOptions(InferenceOptions):
    """`mrfnet deblur`'s options: which model, and how it runs (the input and output are its positionals)."""

    model: str | None = option(None, "a run folder (its latest snapshot), a .caffemodel, or an .onnx file from "
                                     "`mrfnet export` (default: the main job's MRFNet, from `mrfnet reproduce`)")
    deploy: Path | None = deploy_option()
    variant: str | None = variant_option()


@dataclass(frozen=True)
class ExportOptions:
    """`mrfnet export`'s options: the file to write, the deploy net, the opset and INT8 quantisation (the model is
    its positional)."""

    out: Path = option(help="the .onnx file to write", parse=Path)
    deploy: Path | None = deploy_option()
    variant: str | None = variant_option()
    opset: int = option(DEFAULT_OPSET, "ONNX opset to write, 18 or later", parse=positive_int)
    int8: bool = option(False, "quantise weights and activations to 8 bits", group=INT8)
    calibrate: Path | None = option(None, "data_prep LMDB of validation patches whose ranges calibrate the "
                                          "activations", parse=Path, metavar="VAL_LMDB", group=INT8)
    calibration_patches: int = option(DEFAULT_CALIBRATION_PATCHES, "patches used, spread over the LMDB",
                                      parse=positive_int, group=INT8)
