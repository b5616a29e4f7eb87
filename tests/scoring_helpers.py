"""Small deploy nets, caffemodels, images and test sets for the scoring, deblur and timing tests."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import cv2
import lmdb
import numpy as np

from data_prep.records import encode_pair
from netgen import build_deploy

SMALLEST_VARIANT = "lwrefinenet"  # fewest parameters and multiply-adds


def net_from_text(caffe: Any, text: str) -> Any:
    """A TEST-phase caffe.Net from prototxt text (Caffe reads nets from files only)."""
    with tempfile.NamedTemporaryFile("w", suffix=".prototxt", delete=False) as file:
        file.write(text)
    try:
        return caffe.Net(file.name, caffe.TEST)
    finally:
        os.unlink(file.name)


def relative_error(a: np.ndarray, b: np.ndarray) -> float:
    """Largest difference over the largest magnitude of ``a``: how the engine tests compare blobs."""
    return float(np.abs(a - b).max() / max(np.abs(a).max(), 1e-6))


def write_deploy(folder: Path, variant: str = SMALLEST_VARIANT, side: int = 32) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{variant}_deploy.prototxt"
    path.write_text(str(build_deploy(variant, height=side, width=side)))
    return path


def save_caffemodel(caffe, deploy: Path, path: Path, *, seed: int = 0, scale: float | None = None) -> Path:
    """Weights from the prototxt's fillers (seeded), or with ``scale``, every weight N(0, scale / fan_in):
    a net whose residual branches all act, so its receptive field is as wide as a trained one's."""
    caffe.set_random_seed(seed)
    net = caffe.Net(str(deploy), caffe.TEST)
    if scale is not None:
        randomise(net, scale, seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    net.save(str(path))
    return path


def randomise(net, scale: float, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    for blobs in net.params.values():
        weights = blobs[0].data
        weights[...] = rng.normal(0.0, np.sqrt(scale / np.prod(weights.shape[1:])), weights.shape)
        for bias in blobs[1:]:
            bias.data[...] = rng.normal(0.0, 0.01, bias.data.shape)


def smooth_image(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """A uint8 BGR image with structure at several scales (edges for deblurring to find)."""
    noise = rng.normal(0.0, 1.0, (height, width, 3))
    image = cv2.GaussianBlur(noise, (0, 0), 2.0) * 60 + cv2.GaussianBlur(noise, (0, 0), 0.7) * 25 + 128
    return np.clip(image, 0, 255).astype(np.uint8)


def blurred(image: np.ndarray) -> np.ndarray:
    return cv2.GaussianBlur(image, (0, 0), 1.2)


def make_pairs(seed: int = 0, sizes=((40, 48), (33, 47), (24, 32))) -> list[tuple[str, np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(seed)
    pairs = []
    for index, (height, width) in enumerate(sizes):
        sharp = smooth_image(rng, height, width)
        pairs.append((f"img{index}", blurred(sharp), sharp))
    return pairs


def make_lmdb(path: Path, pairs) -> Path:
    """A data_prep-style test LMDB (keys %08d_<name>, whole images)."""
    with lmdb.open(str(path), map_size=1 << 26) as env, env.begin(write=True) as txn:
        for index, (name, blur, sharp) in enumerate(pairs):
            txn.put(f"{index:08d}_{name}".encode(), encode_pair(blur, sharp))
    return path


def make_pair_lmdb(path: Path, pairs: list[tuple[np.ndarray, np.ndarray]]) -> Path:
    """A training LMDB of (blur, sharp) pairs, keys %08d_pair<index> (the order Caffe's Data layer reads)."""
    return make_lmdb(path, [(f"pair{index}", blur, sharp) for index, (blur, sharp) in enumerate(pairs)])


def make_folders(root: Path, pairs, *, nested: bool = True) -> tuple[Path, Path]:
    """blur/ and sharp/ folders of PNGs with the same relative names (the last pair in a sub-folder)."""
    blur_dir, sharp_dir = root / "blur", root / "sharp"
    for index, (name, blur, sharp) in enumerate(pairs):
        relative = Path("sub", name) if nested and index == len(pairs) - 1 else Path(name)
        for folder, image in ((blur_dir, blur), (sharp_dir, sharp)):
            (folder / relative).parent.mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(folder / relative.with_suffix(".png")), image)
    return blur_dir, sharp_dir


def make_run(caffe, root: Path, variant: str = SMALLEST_VARIANT, iterations=(10, 2)) -> Path:
    """A run folder as `mrfnet train` leaves it: options.json, deploy.prototxt, snapshots/<variant>_iter_N."""
    root.mkdir(parents=True)
    (root / "options.json").write_text(json.dumps({"variant": variant}))
    deploy = write_deploy(root, variant)
    deploy.rename(root / "deploy.prototxt")
    for iteration in iterations:
        save_caffemodel(caffe, root / "deploy.prototxt", root / "snapshots" / f"{variant}_iter_{iteration}.caffemodel",
                        seed=iteration)
    return root
