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

from data_prep.errors import DataError, MissingData

CHANNELS = 6
CHANNEL_ORDER = "BGR"
REBUILD = "rebuild it with `mrfnet data-prep`"
DATUM_FIELDS_BYTES = 32  # at most, around the pixels: channels, height, width, label and data's tag and length


class LmdbError(DataError):
    """A damaged or foreign LMDB: the message names it, says what is wrong and what to do."""


def encode_pair(blur_bgr: np.ndarray, sharp_bgr: np.ndarray) -> bytes:
    """Serialise two HxWx3 uint8 BGR images of the same size into one Datum."""
    for name, image in (("blur", blur_bgr), ("sharp", sharp_bgr)):
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise DataError(f"{name} must be an HxWx3 uint8 image, got {image.dtype} {image.shape}")
    if blur_bgr.shape != sharp_bgr.shape:
        raise DataError(f"blur {blur_bgr.shape} and sharp {sharp_bgr.shape} differ in size")
    chw = np.concatenate([blur_bgr, sharp_bgr], axis=2).transpose(2, 0, 1)
    datum = caffe_pb2.Datum(channels=CHANNELS, height=chw.shape[1], width=chw.shape[2],
                            data=np.ascontiguousarray(chw).tobytes(), label=0)
    return datum.SerializeToString()


def encoded_pair_bytes(height: int, width: int) -> int:
    """At most the size of encode_pair's output for two images of ``height`` x ``width``, known before encoding."""
    return CHANNELS * height * width + DATUM_FIELDS_BYTES


def _pair_datum(value: bytes) -> caffe_pb2.Datum:
    """The Datum of one record, checked to be a raw pair of the sizes it states; ValueError saying what it is not."""
    datum = caffe_pb2.Datum()
    try:
        datum.ParseFromString(value)
    except DecodeError as exc:
        raise DataError(f"not a Datum ({exc})") from exc
    if datum.channels != CHANNELS or datum.encoded:
        raise DataError(f"not a raw {CHANNELS}-channel pair Datum (channels={datum.channels}, "
                         f"encoded={datum.encoded})")
    if len(datum.data) != CHANNELS * datum.height * datum.width or not datum.height or not datum.width:
        raise DataError(f"a {datum.height}x{datum.width} Datum with {len(datum.data)} bytes of pixels, "
                         f"not {CHANNELS * datum.height * datum.width}")
    return datum


def decode_pair(value: bytes) -> tuple[np.ndarray, np.ndarray]:
    """The (blur, sharp) HxWx3 uint8 BGR images of one serialised Datum."""
    return _images(_pair_datum(value))


def _images(datum: caffe_pb2.Datum) -> tuple[np.ndarray, np.ndarray]:
    chw = np.frombuffer(datum.data, dtype=np.uint8).reshape(CHANNELS, datum.height, datum.width)
    hwc = chw.transpose(1, 2, 0)
    return np.ascontiguousarray(hwc[:, :, :3]), np.ascontiguousarray(hwc[:, :, 3:])


def open_lmdb(path: str | Path) -> lmdb.Environment:
    """THE way this project opens an LMDB to read (train, score, validation, data_prep's checks).

    Refused with :class:`LmdbError` naming the LMDB: not an LMDB (lmdb's own header check), or a
    data.mdb shorter than the pages its header says are used (a copy or a build that was cut off:
    reading those pages through the memory map would kill the process with SIGBUS, no message).
    """
    path = Path(path)
    data = path / "data.mdb"
    if not data.is_file():
        raise MissingData(f"no LMDB at {path} (expected {data})")
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


def _damaged(path: str | Path, exc: lmdb.Error) -> LmdbError:
    return LmdbError(f"{path} is damaged ({type(exc).__name__}: {exc}); {REBUILD}")


def _records(path: str | Path, limit: int | None = None) -> Iterator[tuple[bytes, caffe_pb2.Datum]]:
    """(key, checked pair Datum) in key order; lmdb's errors (a damaged page) and a record that is not a
    pair each become an :class:`LmdbError` naming the LMDB."""
    with open_lmdb(path) as env, env.begin() as txn:
        try:
            for index, (key, value) in enumerate(txn.cursor()):
                if limit is not None and index == limit:
                    return
                yield key, _checked(path, key, value)
        except lmdb.Error as exc:
            raise _damaged(path, exc) from exc


def _checked(path: str | Path, key: bytes, value: bytes) -> caffe_pb2.Datum:
    try:
        return _pair_datum(value)
    except ValueError as exc:
        raise LmdbError(f"{path}: record {key.decode(errors='replace')!r} is {exc}: not an LMDB of blurred/sharp "
                        f"pairs made by `mrfnet data-prep`, or a damaged one; {REBUILD}") from exc


def count_records(path: str | Path) -> int:
    """How many records the LMDB at ``path`` holds."""
    with open_lmdb(path) as env:
        return int(env.stat()["entries"])


def check_pairs(path: str | Path, sample: int = 16) -> int:
    """Refuse an LMDB whose first ``sample`` records (and its last) are not pair Datums; its record count.

    Caffe's Data layer would CHECK-abort on them (``datum_channels > 0``), naming no LMDB.
    """
    with open_lmdb(path) as env, env.begin() as txn:
        records = int(env.stat()["entries"])
        if records == 0:
            raise LmdbError(f"the LMDB at {path} holds no records; {REBUILD}")
        cursor = txn.cursor()
        try:
            for index, (key, value) in enumerate(cursor):
                if index == sample:
                    break
                _checked(path, key, value)
            if cursor.last():
                _checked(path, *cursor.item())
        except lmdb.Error as exc:
            raise _damaged(path, exc) from exc
    return records


def smallest_side(path: str | Path, limit: int = 1000) -> int:
    """The smallest height or width among the first ``limit`` records: Caffe's crop must fit every one."""
    sides = [min(datum.height, datum.width) for _, datum in _records(path, limit)]
    if not sides:
        raise LmdbError(f"the LMDB at {path} holds no records; {REBUILD}")
    return min(sides)


def iter_pairs(path: str | Path) -> Iterator[tuple[str, np.ndarray, np.ndarray]]:
    """(key, blur, sharp) for every record, in key order (the order Caffe's Data layer reads)."""
    for key, datum in _records(path):
        yield key.decode(), *_images(datum)
