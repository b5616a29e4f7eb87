"""Validation while training: PSNR/SSIM of the current weights on the val LMDB, next to the blurry input's.

The training child builds the run's deploy net once and shares the training net's weights with it
(``Net.share_with``: no copy), then streams the val records from the LMDB one at a time (no second
copy of the data in memory) through the same inference and metric code as `mrfnet score`, so a
``val_psnr`` in progress.csv equals what `mrfnet score` reports for that snapshot on that LMDB.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from data_prep.records import iter_pairs
from mrfnet.evaluate.metrics import MetricOptions, psnr, ssim
from mrfnet.infer.tiling import predict, to_uint8
from mrfnet.runtime.errors import InvalidValue, MissingInput
from netgen import INPUT, PREDICTION

log = logging.getLogger(__name__)


COLUMNS = ("val_psnr", "val_ssim", "val_gain_db")


@dataclass(frozen=True)
class ValScore:
    psnr: float
    ssim: float
    blur_psnr: float
    blur_ssim: float
    images: int

    @property
    def gain_db(self) -> float:
        return self.psnr - self.blur_psnr

    def columns(self) -> dict[str, float]:
        return {"val_psnr": self.psnr, "val_ssim": self.ssim, "val_gain_db": self.gain_db}


class Validator:
    """Scores a training net's current weights on a val LMDB through a deploy net that shares them."""

    def __init__(self, caffe: Any, deploy: str | Path, train_net: Any, val_lmdb: str | Path,
                 metrics: MetricOptions | None = None, limit: int | None = None) -> None:
        self.net = caffe.Net(str(deploy), caffe.TEST)
        self.net.share_with(train_net)
        self.val_lmdb = Path(val_lmdb)
        self.metrics = metrics or MetricOptions()
        self.limit = limit
        self._baseline: tuple[float, float, int] | None = None

    def _rgb_scores(self, sharp: np.ndarray, image: np.ndarray) -> tuple[float, float]:
        sharp_rgb, image_rgb = sharp[..., ::-1], image[..., ::-1]
        return psnr(sharp_rgb, image_rgb, self.metrics), ssim(sharp_rgb, image_rgb, self.metrics)

    def score(self, stop: Callable[[], bool] | None = None) -> ValScore | None:
        """Mean PSNR/SSIM over the val records (each whole, padded to the stride like `mrfnet score`): all of
        them, or the first ``limit`` in the LMDB's (shuffled) order.

        None when ``stop()`` turns true between two records: a stop signal must not wait for a whole
        validation (mpirun kills one second after its SIGTERM).
        """
        scores, blurry = [], []
        for index, (_, blur, sharp) in enumerate(iter_pairs(self.val_lmdb)):
            if self.limit is not None and index >= self.limit:
                break
            if stop is not None and stop():
                return None
            output = to_uint8(predict(self.net, blur, input_blob=INPUT, output_blob=PREDICTION))
            scores.append(self._rgb_scores(sharp, output))
            if self._baseline is None:
                blurry.append(self._rgb_scores(sharp, blur))
        if not scores:
            raise InvalidValue(f"the val LMDB {self.val_lmdb} holds no records")
        if self._baseline is None:
            self._baseline = (float(np.mean([b[0] for b in blurry])), float(np.mean([b[1] for b in blurry])),
                              len(blurry))
        values = np.asarray(scores)
        return ValScore(float(values[:, 0].mean()), float(values[:, 1].mean()), self._baseline[0],
                        self._baseline[1], len(scores))


def save_best(net: Any, path: Path) -> None:
    """Write ``net``'s weights to ``path``: whole or not at all, as Caffe now writes every binary proto (patch
    0006: ``<path>.partial``, fsync, rename), so a kill mid-write leaves the previous best intact."""
    net.save(str(path))


def check_val_every(val_every: int | None, val_lmdb: Path, val_limit: int | None = None) -> None:
    """Refuse a nonsensical --val-every / --val-limit before a run folder exists."""
    if val_limit is not None and (not isinstance(val_limit, int) or val_limit < 1):
        raise InvalidValue(f"--val-limit is a number of val records (1 or more), got {val_limit!r}; "
                         "leave it out to validate on all of them")
    if val_every is None:
        if val_limit is not None:
            raise InvalidValue("--val-limit only makes sense with --val-every")
        return
    if not isinstance(val_every, int) or val_every < 1:
        raise InvalidValue(f"--val-every is a number of iterations (1 or more), got {val_every!r}; "
                         "leave it out to train without validation")
    if not val_lmdb.is_dir():
        raise MissingInput(f"--val-every needs a val LMDB at {val_lmdb} (build one with `mrfnet data-prep`)")


def is_better(value: float, best: float | None) -> bool:
    return math.isfinite(value) and (best is None or value > best)
