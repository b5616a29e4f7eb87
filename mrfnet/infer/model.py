"""A loaded deploy net with checked weights: what deblur, score and timing run images through."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from mrfnet.infer.memory import MemoryEstimate, memory_estimate, pixels_for_budget
from mrfnet.infer.tiling import (
    BLENDS,
    DEFAULT_MAX_MEMORY_GB,
    AutoTile,
    Tile,
    caffe_forward,
    check_tiling,
    predict_with,
    to_uint8,
)
from mrfnet.infer.weights import LOAD_TIMEOUT_S, DeployInfo, check_weights, inspect_deploy
from mrfnet.runtime.caffe_env import import_caffe, run_isolated
from mrfnet.runtime.device import open_gpu, set_mode
from mrfnet.runtime.errors import InvalidValue

log = logging.getLogger(__name__)


class Engine(Protocol):
    """What deblur, score and timing run images through: :class:`Model` (Caffe), or ONNX Runtime's
    (mrfnet.export.engines)."""

    engine: str
    parameters: int

    def load_weights(self, weights: str | Path) -> None: ...

    def forward(self, chw: np.ndarray) -> np.ndarray: ...

    def predict(self, bgr: np.ndarray, **options: Any) -> np.ndarray: ...

    def deblur(self, bgr: np.ndarray, **options: Any) -> np.ndarray: ...

    def forward_costs(self) -> tuple[float, float]: ...

    def max_tile_pixels(self, max_memory_gb: float = DEFAULT_MAX_MEMORY_GB) -> int: ...


class Model:
    """A checked deploy net in this process, with weights that were checked before Caffe read them."""

    engine = "caffe"

    def __init__(self, deploy: str | Path, weights: str | Path | None = None, *, info: DeployInfo | None = None,
                 gpu: int | None = None) -> None:
        self.info = info or inspect_deploy(deploy)
        caffe = import_caffe()
        if gpu is not None:
            run_isolated(open_gpu, gpu, timeout=LOAD_TIMEOUT_S)  # a CPU-only build aborts on set_device
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

    def forward(self, chw: np.ndarray) -> np.ndarray:
        """One C x H x W float32 array through the net (reshaped to it), the prediction blob copied out."""
        return caffe_forward(self.net, self.info.input_blob, self.info.output_blob)(chw)

    def predict(self, bgr: np.ndarray, **options: Any) -> np.ndarray:
        return predict_with(self.forward, bgr, **options)

    def deblur(self, bgr: np.ndarray, **options: Any) -> np.ndarray:
        return to_uint8(self.predict(bgr, **options))

    def memory(self) -> MemoryEstimate:
        """Caffe's forward memory for the net as shaped now (see :func:`memory_estimate`)."""
        return memory_estimate(self.net, self.info.proto)

    def forward_costs(self) -> tuple[float, float]:
        """(fixed bytes, bytes per input pixel) of a forward pass in Caffe memory: the parameters, and the rest
        of the estimate scaled from the net's input shape now."""
        estimate = self.memory()
        height, width = self.net.blobs[self.info.input_blob].data.shape[2:]
        return estimate.parameters, (estimate.total - estimate.parameters) / (height * width)

    def max_tile_pixels(self, max_memory_gb: float = DEFAULT_MAX_MEMORY_GB) -> int:
        """Input pixels whose forward pass fits ``max_memory_gb`` of Caffe memory (:meth:`forward_costs`)."""
        fixed, per_pixel = self.forward_costs()
        return pixels_for_budget(per_pixel, fixed, max_memory_gb)


def resolve_tile(model: Engine, tile: int | str | None, overlap: int, max_memory_gb: float) -> Tile:
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
        raise InvalidValue(f"tile must be a number of pixels, 0 or 'auto', got {tile!r}")
    check_tiling((tile, tile), overlap, BLENDS[0])
    return tile
