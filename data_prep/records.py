"""The record format every LMDB of this project uses, and reading it back.

One record is one blurred/sharp pair stored as a raw 6-channel uint8 ``caffe.proto.Datum`` in
CHW order: the blurred image's B, G, R planes, then the sharp image's B, G, R planes. BGR is
Caffe's own convention (``convert_imageset``, OpenCV), so the Data layer's ``crop_size`` and
``mirror`` treat both images identically and a ``Slice`` at channel 3 splits them in the net.
Encoding is done here with NumPy 2 calls, not with ``caffe.io.array_to_datum``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import lmdb
import numpy as np
from caffe.proto import caffe_pb2

CHANNELS = 6
CHANNEL_ORDER = "BGR"


def encode_pair(blur_bgr: np.ndarray, sharp_bgr: np.ndarray) -> bytes:
    """Serialise two HxWx3 uint8 BGR images of the same size into one Datum."""
    for name, image in (("blur", blur_bgr), ("sharp", sharp_bgr)):
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"{name} must be an HxWx3 uint8 image, got {image.dtype} {image.shape}")
    if blur_bgr.shape != sharp_bgr.shape:
        raise ValueError(f"blur {blur_bgr.shape} and sharp {sharp_bgr.shape} differ in size")
    chw = np.concatenate([blur_bgr, sharp_bgr], axis=2).transpose(2, 0, 1)
    datum = caffe_pb2.Datum(channels=CHANNELS, height=chw.shape[1], width=chw.shape[2],
                            data=np.ascontiguousarray(chw).tobytes(), label=0)
    return datum.SerializeToString()


def decode_pair(value: bytes) -> tuple[np.ndarray, np.ndarray]:
    """The (blur, sharp) HxWx3 uint8 BGR images of one serialised Datum."""
    datum = caffe_pb2.Datum()
    datum.ParseFromString(value)
    if datum.channels != CHANNELS or datum.encoded:
        raise ValueError(f"not a raw {CHANNELS}-channel pair Datum (channels={datum.channels}, "
                         f"encoded={datum.encoded})")
    chw = np.frombuffer(datum.data, dtype=np.uint8).reshape(CHANNELS, datum.height, datum.width)
    hwc = chw.transpose(1, 2, 0)
    return np.ascontiguousarray(hwc[:, :, :3]), np.ascontiguousarray(hwc[:, :, 3:])


def _open(path: str | Path) -> lmdb.Environment:
    if not Path(path, "data.mdb").is_file():
        raise FileNotFoundError(f"no LMDB at {path} (expected {Path(path, 'data.mdb')})")
    return lmdb.open(str(path), readonly=True, lock=False, readahead=False, subdir=True)


def count_records(path: str | Path) -> int:
    """How many records the LMDB at ``path`` holds."""
    with _open(path) as env:
        return int(env.stat()["entries"])


def smallest_side(path: str | Path, limit: int = 1000) -> int:
    """The smallest height or width among the first ``limit`` records: Caffe's crop must fit every one."""
    sides = []
    with _open(path) as env, env.begin() as txn:
        for index, (_, value) in enumerate(txn.cursor()):
            if index == limit:
                break
            datum = caffe_pb2.Datum()
            datum.ParseFromString(value)
            sides.append(min(datum.height, datum.width))
    if not sides:
        raise ValueError(f"the LMDB at {path} holds no records")
    return min(sides)


def iter_pairs(path: str | Path) -> Iterator[tuple[str, np.ndarray, np.ndarray]]:
    """(key, blur, sharp) for every record, in key order (the order Caffe's Data layer reads)."""
    with _open(path) as env, env.begin() as txn:
        for key, value in txn.cursor():
            blur, sharp = decode_pair(value)
            yield key.decode(), blur, sharp
