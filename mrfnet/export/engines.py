"""The inference engines behind deblur, score and time: Caffe itself, or ONNX Runtime on the exported graph.

Both present one interface (``load_weights``, ``predict``, ``deblur``, ``forward_costs``, ``max_tile_pixels``,
``parameters``), and both tile by Caffe's memory estimate, so their outputs compare image for image.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from mrfnet.export.exporter import export_model
from mrfnet.export.onnx_graph import DEFAULT_OPSET
from mrfnet.export.onnx_model import VARIANT, OnnxModel, read_onnx
from mrfnet.infer.model import Engine, Model
from mrfnet.infer.model_source import ModelSource, resolve_model
from mrfnet.infer.tiling import DEFAULT_MAX_MEMORY_GB
from mrfnet.infer.weights import DeployInfo
from mrfnet.runtime.errors import InvalidValue

log = logging.getLogger(__name__)

ENGINES = ("caffe", "onnxruntime")
ONNX_SUFFIX = ".onnx"


class ConvertedModel:
    """A Caffe deploy net run by ONNX Runtime: every ``load_weights`` checks the caffemodel as the Caffe path
    does, then exports the net with it (in memory) and opens a fresh session."""

    engine = "onnxruntime"

    def __init__(self, deploy: str | Path, weights: str | Path | None = None, *, info: DeployInfo | None = None,
                 variant: str | None = None, opset: int = DEFAULT_OPSET, threads: int | None = None) -> None:
        self.caffe = Model(deploy, info=info)
        self.info = self.caffe.info
        self.variant, self.opset, self.threads = variant, opset, threads
        self.onnx: OnnxModel | None = None
        if weights is not None:
            self.load_weights(weights)

    @property
    def parameters(self) -> int:
        return self.caffe.parameters

    def load_weights(self, weights: str | Path) -> None:
        self.caffe.load_weights(weights)
        self.onnx = OnnxModel(export_model(self.caffe, variant=self.variant, opset=self.opset), threads=self.threads)

    def _session(self) -> OnnxModel:
        if self.onnx is None:
            raise RuntimeError("no weights loaded: call load_weights first")
        return self.onnx

    def forward(self, chw: np.ndarray) -> np.ndarray:
        return self._session().forward(chw)

    def predict(self, bgr: np.ndarray, **options: Any) -> np.ndarray:
        return self._session().predict(bgr, **options)

    def deblur(self, bgr: np.ndarray, **options: Any) -> np.ndarray:
        return self._session().deblur(bgr, **options)

    def forward_costs(self) -> tuple[float, float]:
        return self.caffe.forward_costs()

    def max_tile_pixels(self, max_memory_gb: float = DEFAULT_MAX_MEMORY_GB) -> int:
        return self.caffe.max_tile_pixels(max_memory_gb)


class OnnxFile(OnnxModel):
    """An exported .onnx file as a scoring/deblurring model: its one set of weights is the file itself."""

    def load_weights(self, weights: str | Path) -> None:
        if self.path is None or Path(weights).resolve() != self.path.resolve():
            raise InvalidValue(f"an ONNX model carries its own weights; {weights} cannot be loaded into it")


def is_onnx(model: str | Path) -> bool:
    return Path(model).suffix.lower() == ONNX_SUFFIX


def resolve_source(model: str | Path, *, deploy: str | Path | None = None, variant: str | None = None,
                   work_dir: Path | None = None, last_only: bool = False) -> ModelSource:
    """:func:`mrfnet.infer.model_source.resolve_model`, and an exported .onnx file (its own deploy definition)."""
    if not is_onnx(model):
        return resolve_model(model, deploy=deploy, variant=variant, work_dir=work_dir, last_only=last_only)
    if deploy is not None or variant is not None:
        raise InvalidValue(f"{model} is an ONNX model: it defines its own net, leave out --deploy and --variant")
    path = Path(model)
    stored = {prop.key: prop.value for prop in read_onnx(path).metadata_props}
    return ModelSource(path, [(None, path)], stored.get(VARIANT) or None)


def choose_engine(engine: str | None, source: ModelSource, *, gpu: int | None = None) -> str:
    """The engine asked for, or the one that fits the model (ONNX Runtime for an .onnx file, else Caffe)."""
    onnx_file = is_onnx(source.deploy)
    if engine is None:
        engine = "onnxruntime" if onnx_file else "caffe"
    if engine not in ENGINES:
        raise InvalidValue(f"unknown engine {engine!r}; choose one of {', '.join(ENGINES)}")
    if onnx_file and engine != "onnxruntime":
        raise InvalidValue(f"{source.deploy} is an ONNX model: only --engine onnxruntime runs it")
    if engine == "onnxruntime" and gpu is not None:
        raise InvalidValue("--engine onnxruntime runs on the CPU here (the onnxruntime package is CPU-only): "
                         "leave out --gpu, or use --engine caffe with a CUDA build")
    return engine


def open_engine(engine: str, source: ModelSource, weights: str | Path | None = None, *,
                gpu: int | None = None, threads: int | None = None) -> Engine:
    """A model of ``engine`` for ``source`` (weights loaded if given): what deblur and score run."""
    if is_onnx(source.deploy):
        return OnnxFile(source.deploy, threads=threads)
    if engine == "onnxruntime":
        return ConvertedModel(source.deploy, weights, variant=source.variant, threads=threads)
    return Model(source.deploy, weights, gpu=gpu)
