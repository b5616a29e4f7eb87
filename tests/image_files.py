"""Small image files and dataset trees (GOPRO layout, blur/sharp folders) that the data_prep tests generate."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np


def random_image(height: int, width: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def write_image(path: Path, image: np.ndarray) -> Path:
    """Write with imencode + tofile, so non-ASCII names work the same as in read_image."""
    path.parent.mkdir(parents=True, exist_ok=True)
    ok, data = cv2.imencode(path.suffix, image)
    assert ok
    data.tofile(path)
    return path


def make_folder_pairs(root: Path, names: list[str], size: tuple[int, int] = (20, 24)) -> None:
    """root/sharp/<name> and root/blur/<name>, different random images of the same size."""
    for i, name in enumerate(names):
        write_image(root / "sharp" / name, random_image(*size, seed=i))
        write_image(root / "blur" / name, random_image(*size, seed=i + 100))


def make_gopro(root: Path, sequences: dict[str, list[str]], frames: int = 2, size: tuple[int, int] = (24, 32)) -> None:
    """A GOPRO_Large tree of tiny PNGs; blur and blur_gamma differ so the option is visible."""
    for part, names in sequences.items():
        for s, sequence in enumerate(names):
            for f in range(frames):
                seed = 1000 * s + 10 * f + (0 if part == "train" else 500)
                for kind, offset in (("sharp", 0), ("blur", 1), ("blur_gamma", 2)):
                    write_image(root / part / sequence / kind / f"{f:06d}.png", random_image(*size, seed=seed + offset))
