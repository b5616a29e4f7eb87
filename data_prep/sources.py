"""Where pairs come from: GOPRO, a folder of sharp images (VisDrone), a blur/sharp folder pair, or
photographs bundled with scikit-image.

A source returns :class:`Item` descriptions (names, split, files, size from the file header) and
reads no pixels, so a whole dataset is checked (missing partners, size mismatches, unreadable
files) before any work starts. Pixels are read by data_prep.images.read_image in the build's workers.

Bad input is an error that names the file, never a silent skip: a missing or extra partner, a
pair whose sizes differ, a file that cannot be opened or decoded (corrupt, truncated, no read
permission), an image with transparent pixels. Grayscale, 16-bit and opaque RGBA images are
converted (replicated to three channels, rounded to 8 bits, alpha dropped) and the conversion is
recorded in the record's meta_info line.
"""

from __future__ import annotations

import importlib.util
import logging
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from data_prep.images import ImageError, find_images, image_size, item_name, match_pairs

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
GOPRO_BLURS = ("blur", "blur_gamma")
SOURCES = ("embedded", "gopro", "visdrone", "folder")
SYNTHETIC_SOURCES = ("embedded", "visdrone")  # sharp images only: the pairs' blur is synthesized

# Colour photographs of real scenes shipped inside packages the project installs (no download), each
# in one split so no scene leaks: (package, folder inside it, file) -> split. Five train, two val and
# two test photographs; motorcycle_right is the same scene as motorcycle_left, so both train. Left out:
# scikit-image's microscopy, retina, telescope, texture and synthetic images.
EMBEDDED = {
    ("skimage", "data", "astronaut.png"): "train",
    ("skimage", "data", "motorcycle_left.png"): "train",
    ("skimage", "data", "motorcycle_right.png"): "train",
    ("skimage", "data", "rocket.jpg"): "train",
    ("sklearn", "datasets/images", "china.jpg"): "train",
    ("skimage", "data", "chelsea.png"): "val",
    ("matplotlib", "mpl-data/sample_data", "grace_hopper.jpg"): "val",
    ("skimage", "data", "coffee.png"): "test",
    ("sklearn", "datasets/images", "flower.jpg"): "test",
}


def embedded_path(package: str, folder: str, file_name: str) -> Path:
    """Where ``package`` keeps a bundled photograph (found from the package, never downloaded)."""
    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        raise FileNotFoundError(f"the embedded set needs the {package} package for {file_name}: "
                                f"pip install the project again (`bash tools/bootstrap.sh setup`)")
    return Path(spec.origin).parent / folder / file_name


@dataclass(frozen=True)
class Item:
    """One sharp image (blurred synthetically when ``blur`` is None) or one real blurred/sharp pair."""

    name: str
    split: str
    sharp: Path
    blur: Path | None
    height: int
    width: int


def assign_splits(groups: list[str], val_fraction: float, test_fraction: float, seed: int) -> dict[str, str]:
    """Split groups (images or sequences) into train/val/test at random, fixed by ``seed``.

    A non-zero fraction gets at least one group; train must keep at least one.
    """
    for label, fraction in (("val", val_fraction), ("test", test_fraction)):
        if not 0 <= fraction < 1:
            raise ValueError(f"{label} fraction must be in [0, 1), got {fraction}")
    counts = [max(1, round(len(groups) * f)) if f > 0 else 0 for f in (test_fraction, val_fraction)]
    if sum(counts) >= len(groups):
        raise ValueError(f"{len(groups)} group(s) cannot be split into train, {counts[1]} val and {counts[0]} test")
    order = np.random.default_rng([seed, zlib.crc32(b"splits")]).permutation(sorted(groups))
    splits = ["test"] * counts[0] + ["val"] * counts[1] + ["train"] * (len(groups) - sum(counts))
    return dict(zip(order.tolist(), splits, strict=True))


def _pair_item(name: str, split: str, blur: Path, sharp: Path) -> Item:
    size = image_size(sharp)
    if image_size(blur) != size:
        raise ImageError(f"blurred {blur} is {'x'.join(map(str, image_size(blur)))} but sharp {sharp} is "
                         f"{'x'.join(map(str, size))}")
    return Item(name, split, sharp, blur, *size)


def gopro_items(root: Path, *, blur_kind: str = "blur", val_fraction: float = 0.1, seed: int = 0) -> list[Item]:
    """GOPRO_Large: ``{train,test}/<sequence>/{blur,blur_gamma,sharp}/*.png``, pairs matched by
    sequence and file name; validation takes whole training sequences, so no scene leaks."""
    if blur_kind not in GOPRO_BLURS:
        raise ValueError(f"GOPRO blur folder must be one of {', '.join(GOPRO_BLURS)}, got {blur_kind!r}")
    sequences = {}
    for part in ("train", "test"):
        folder = root / part
        if not folder.is_dir():
            raise FileNotFoundError(f"no {folder}: GOPRO_Large has train/ and test/ folders of sequences")
        found = sorted(path for path in folder.iterdir() if path.is_dir())
        if not found:
            raise ValueError(f"no sequence folders in {folder}")
        sequences[part] = found
    splits = assign_splits([seq.name for seq in sequences["train"]], val_fraction, 0.0, seed)
    splits.update({seq.name: "test" for seq in sequences["test"]})
    return [_pair_item(item_name(f"{seq.name}/{relative}"), splits[seq.name], blur, sharp)
            for part in ("train", "test") for seq in sequences[part]
            for relative, blur, sharp in match_pairs(find_images(seq / blur_kind), find_images(seq / "sharp"))]


def visdrone_items(root: Path, *, val_fraction: float = 0.1, test_fraction: float = 0.1, seed: int = 0) -> list[Item]:
    """Any folder of sharp images (VisDrone2019-DET ``images/``), to be blurred; split by image."""
    images = find_images(root)
    splits = assign_splits(list(images), val_fraction, test_fraction, seed)
    return [Item(item_name(relative), splits[relative], path, None, *image_size(path))
            for relative, path in images.items()]


def folder_items(root: Path, *, val_fraction: float = 0.1, test_fraction: float = 0.1, seed: int = 0) -> list[Item]:
    """Users' own pairs: ``root/blur`` and ``root/sharp`` matched by relative path; split by pair."""
    pairs = match_pairs(find_images(root / "blur"), find_images(root / "sharp"))
    splits = assign_splits([relative for relative, _, _ in pairs], val_fraction, test_fraction, seed)
    return [_pair_item(item_name(relative), splits[relative], blur, sharp) for relative, blur, sharp in pairs]


def embedded_items() -> list[Item]:
    """The bundled photographs (:data:`EMBEDDED`), in their fixed splits."""
    items = []
    for (package, folder, file_name), split in EMBEDDED.items():
        path = embedded_path(package, folder, file_name)
        if not path.is_file():
            raise FileNotFoundError(f"the installed {package} does not bundle {file_name} (looked for {path}); "
                                    "use another --source")
        items.append(Item(item_name(file_name), split, path, None, *image_size(path)))
    return items


def load_items(source: str, root: Path | None = None, *, gopro_blur: str = "blur", val_fraction: float = 0.1,
               test_fraction: float = 0.1, seed: int = 0) -> list[Item]:
    """The items of ``source`` (one of :data:`SOURCES`); every source but ``embedded`` needs ``root``."""
    if source not in SOURCES:
        raise ValueError(f"unknown source {source!r}; choose one of {', '.join(SOURCES)}")
    if source != "embedded":
        if root is None:
            raise ValueError(f"--source {source} needs --root")
        if not root.is_dir():
            raise FileNotFoundError(f"no folder {root}")
    loaders: dict[str, Callable[[], list[Item]]] = {
        "embedded": embedded_items,
        "gopro": lambda: gopro_items(root, blur_kind=gopro_blur, val_fraction=val_fraction, seed=seed),
        "visdrone": lambda: visdrone_items(root, val_fraction=val_fraction, test_fraction=test_fraction, seed=seed),
        "folder": lambda: folder_items(root, val_fraction=val_fraction, test_fraction=test_fraction, seed=seed),
    }
    items = loaders[source]()
    log.info("%s: %d image(s) from %s (%s)", source, len(items), root or "bundled photographs",
             ", ".join(f"{sum(item.split == split for item in items)} {split}" for split in SPLITS))
    return items
