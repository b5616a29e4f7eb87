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
from google.protobuf.message import DecodeError

CHANNELS = 6
CHANNEL_ORDER = "BGR"
REBUILD = "rebuild it with `mrfnet data-prep`"


class LmdbError(ValueError):
    """A damaged or foreign LMDB: the message names it, says what is wrong and what to do."""


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
    datum = _datum(value)
    if datum.channels != CHANNELS or datum.encoded:
        raise ValueError(f"not a raw {CHANNELS}-channel pair Datum (channels={datum.channels}, "
                         f"encoded={datum.encoded})")
    if len(datum.data) != CHANNELS * datum.height * datum.width or not datum.height or not datum.width:
        raise ValueError(f"a {datum.height}x{datum.width} Datum with {len(datum.data)} bytes of pixels, "
                         f"not {CHANNELS * datum.height * datum.width}")
    chw = np.frombuffer(datum.data, dtype=np.uint8).reshape(CHANNELS, datum.height, datum.width)
    hwc = chw.transpose(1, 2, 0)
    return np.ascontiguousarray(hwc[:, :, :3]), np.ascontiguousarray(hwc[:, :, 3:])


def _datum(value: bytes) -> caffe_pb2.Datum:
    datum = caffe_pb2.Datum()
    try:
        datum.ParseFromString(value)
    except DecodeError as exc:
        raise ValueError(f"not a Datum ({exc})") from exc
    return datum


def open_lmdb(path: str | Path) -> lmdb.Environment:
    """THE way this project opens an LMDB to read (train, score, validation, data_prep's checks).

    Refused with :class:`LmdbError` naming the LMDB: not an LMDB (lmdb's own header check), or a
    data.mdb shorter than the pages its header says are used (a copy or a build that was cut off:
    reading those pages through the memory map would kill the process with SIGBUS, no message).
    """
    path = Path(path)
    data = path / "data.mdb"
    if not data.is_file():
        raise FileNotFoundError(f"no LMDB at {path} (expected {data})")
    try:
        env = lmdb.open(str(path), readonly=True, lock=False, readahead=False, subdir=True)
    except lmdb.Error as exc:
        raise LmdbError(f"{path} is not a readable LMDB ({type(exc).__name__}: {exc}); {REBUILD}") from exc
    needed = (env.info()["last_pgno"] + 1) * env.stat()["psize"]
    size = data.stat().st_size
    if size < needed:
        env.close()
        raise LmdbError(f"{data} is truncated: {size} bytes, but its pages need {needed} (an interrupted copy "
                        f"or build?); {REBUILD}, or copy it again")
    return env


def _records(path: str | Path, limit: int | None = None) -> Iterator[tuple[bytes, bytes]]:
    """(key, value) in key order, lmdb's own errors (a damaged page) turned into :class:`LmdbError`."""
    with open_lmdb(path) as env, env.begin() as txn:
        cursor = txn.cursor()
        try:
            for index, (key, value) in enumerate(cursor):
                if limit is not None and index == limit:
                    return
                yield key, value
        except lmdb.Error as exc:
            raise LmdbError(f"{path} is damaged ({type(exc).__name__}: {exc}); {REBUILD}") from exc


def _bad_record(path: str | Path, key: bytes, exc: Exception) -> LmdbError:
    return LmdbError(f"{path}: record {key.decode(errors='replace')!r} is {exc}: not an LMDB of blurred/sharp "
                     f"pairs made by `mrfnet data-prep`, or a damaged one; {REBUILD}")


def count_records(path: str | Path) -> int:
    """How many records the LMDB at ``path`` holds."""
    with open_lmdb(path) as env:
        return int(env.stat()["entries"])


def check_pairs(path: str | Path, sample: int = 16) -> int:
    """Refuse an LMDB whose first ``sample`` records (and its last) are not pair Datums; its record count.

    Caffe's Data layer would CHECK-abort on them (``datum_channels > 0``), naming no LMDB.
    """
    records = count_records(path)
    if records == 0:
        raise LmdbError(f"the LMDB at {path} holds no records; {REBUILD}")
    for key, value in _records(path, sample):
        try:
            decode_pair(value)
        except ValueError as exc:
            raise _bad_record(path, key, exc) from exc
    with open_lmdb(path) as env, env.begin() as txn:
        cursor = txn.cursor()
        try:
            found = cursor.last()
            key, value = cursor.item()
        except lmdb.Error as exc:
            raise LmdbError(f"{path} is damaged ({type(exc).__name__}: {exc}); {REBUILD}") from exc
        if found:
            try:
                decode_pair(value)
            except ValueError as exc:
                raise _bad_record(path, key, exc) from exc
    return records


def smallest_side(path: str | Path, limit: int = 1000) -> int:
    """The smallest height or width among the first ``limit`` records: Caffe's crop must fit every one."""
    sides = []
    for key, value in _records(path, limit):
        try:
            blur, _ = decode_pair(value)
        except ValueError as exc:
            raise _bad_record(path, key, exc) from exc
        sides.append(min(blur.shape[:2]))
    if not sides:
        raise LmdbError(f"the LMDB at {path} holds no records; {REBUILD}")
    return min(sides)


def iter_pairs(path: str | Path) -> Iterator[tuple[str, np.ndarray, np.ndarray]]:
    """(key, blur, sharp) for every record, in key order (the order Caffe's Data layer reads)."""
    for key, value in _records(path):
        try:
            blur, sharp = decode_pair(value)
        except ValueError as exc:
            raise _bad_record(path, key, exc) from exc
        yield key.decode(), blur, sharp
