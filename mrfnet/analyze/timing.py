"""Timing and memory of the variants' forward passes and training steps, each measured in a child process."""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mrfnet.analyze.measure import CHILD_TIMEOUT_S, MB, measure_in_child, run_caffe_time, write_deploy
from mrfnet.infer.memory import MemoryEstimate, pixels_for_budget
from mrfnet.infer.tiling import DEFAULT_OVERLAP, AutoTile
from mrfnet.runtime.caffe_env import run_isolated
from mrfnet.runtime.errors import InvalidValue
from mrfnet.runtime.machine import default_max_memory_gb, describe_machine, machine_info
from mrfnet.runtime.markdown import markdown_table, megabytes
from netgen.sizes import size_label
from netgen.variants import STRIDE

log = logging.getLogger(__name__)


DEFAULT_SIZES = ((256, 256), (720, 1280))  # (height, width)


DEFAULT_REPEATS, DEFAULT_WARMUP = 3, 1  # timed passes per size, after untimed ones


DEFAULT_MEMORY_BATCHES = (1, 8, 16)


DEFAULT_MEMORY_SIDE = 256


@dataclass
class Measurement:
    """One variant at one input shape: inference (batch 1) or training (forward + backward) memory."""

    variant: str
    kind: str  # "inference" or "training"
    height: int
    width: int
    batch: int
    counted_mb: float  # Caffe's allocation counted from the net
    seconds_mean: float | None = None
    seconds_std: float | None = None
    repeats: int = 0
    tile: str | None = None  # inference timed with tiles of this size, WxH (the whole image did not fit)
    peak_rss_mb: float | None = None
    rss_above_start_mb: float | None = None
    caffe_time: dict[str, Any] = field(default_factory=dict)
    skipped: str | None = None


@dataclass
class TimingReport:
    """Per-variant inference times and training memory, with the machine they were measured on.

    Unpacks as ``timing, memory, timing_note, memory_note`` (what `mrfnet reproduce` reports):
    timing[variant]["WxH"] = mean seconds per image, memory[variant][batch] = counted training MB.
    """

    machine: dict[str, Any]
    measurements: list[Measurement]
    settings: dict[str, Any]

    @property
    def timing(self) -> dict[str, dict[str, float]]:
        table: dict[str, dict[str, float]] = {}
        for m in self.measurements:
            if m.kind == "inference" and m.seconds_mean is not None:
                table.setdefault(m.variant, {})[size_label(m.height, m.width)] = m.seconds_mean
        return table

    @property
    def memory(self) -> dict[str, dict[int, float]]:
        table: dict[str, dict[int, float]] = {}
        for m in self.measurements:
            if m.kind == "training":
                table.setdefault(m.variant, {})[m.batch] = m.counted_mb
        return table

    @property
    def memory_rss(self) -> dict[str, dict[int, float]]:
        """memory[variant][batch] = peak RSS MB of the training pass, where it was run."""
        table: dict[str, dict[int, float]] = {}
        for m in self.measurements:
            if m.kind == "training" and m.peak_rss_mb is not None:
                table.setdefault(m.variant, {})[m.batch] = m.peak_rss_mb
        return table

    @property
    def timing_note(self) -> str:
        tiled = [f"{m.variant} {size_label(m.height, m.width)} in {m.tile} tiles" for m in self.measurements
                 if m.kind == "inference" and m.tile]
        note = (f"Wall clock per image (batch 1) on {describe_machine(self.machine)}: mean of "
                f"{self.settings['repeats']} forward passes after {self.settings['warmup']} warm-up, output read back.")
        if tiled:
            note += (f" Too large for {self.settings['max_memory_gb']} GB whole, so timed as `mrfnet deblur` runs "
                     f"them: {', '.join(tiled)} (overlap {self.settings['overlap']}; a warm-up is one tile).")
        return note

    @property
    def memory_note(self) -> str:
        return ("Training memory (forward + backward, batch on "
                f"{size_label(self.settings['memory_side'], self.settings['memory_side'])} inputs) as Caffe allocates "
                "it: activations and parameters with their diffs, the shared im2col workspace and "
                "max-pooling masks, counted from the net (what a GPU build without cuDNN holds); "
                + ("peak RSS where the machine could run it." if self.settings.get("run_training", True)
                   else "counted only, not run."))

    def __iter__(self):  # timing, memory, timing_note, memory_note = time_variants(...)
        return iter((self.timing, self.memory, self.timing_note, self.memory_note))

    def to_json(self) -> dict[str, Any]:
        return {"machine": self.machine, "settings": self.settings,
                "measurements": [asdict(m) for m in self.measurements],
                "timing": self.timing,
                "memory": {variant: {str(b): mb for b, mb in table.items()} for variant, table in self.memory.items()},
                "memory_rss": {variant: {str(b): mb for b, mb in table.items()}
                               for variant, table in self.memory_rss.items()},
                "timing_note": self.timing_note, "memory_note": self.memory_note}

    def to_markdown(self) -> str:
        lines = [f"Machine: {describe_machine(self.machine)}.", "", "### Inference time (Table IV analogue)", ""]
        sizes = list(dict.fromkeys(size_label(m.height, m.width) for m in self.measurements if m.kind == "inference"))
        onnx = self.settings.get("engine") == "onnxruntime"
        caffe_sizes = [] if onnx else sizes  # `caffe time` runs Caffe only
        head = ["variant", *[f"{s} {'ONNX Runtime' if onnx else 'pycaffe'} (s)" for s in sizes],
                *[f"{s} caffe time (ms)" for s in caffe_sizes],
                *[f"{s} counted (MB)" for s in sizes], *[f"{s} peak RSS (MB)" for s in sizes]]
        rows = []
        for variant in dict.fromkeys(m.variant for m in self.measurements):
            cells = {size_label(m.height, m.width): m for m in self.measurements
                     if m.variant == variant and m.kind == "inference"}
            rows.append([variant, *[_seconds(cells.get(s)) for s in sizes],
                         *[_caffe_ms(cells.get(s), "forward_ms") for s in caffe_sizes],
                         *[megabytes(cells[s].counted_mb if s in cells else None) for s in sizes],
                         *[megabytes(cells[s].peak_rss_mb if s in cells else None) for s in sizes]])
        lines += [markdown_table(head, rows), "", self.timing_note]
        batches = list(dict.fromkeys(m.batch for m in self.measurements if m.kind == "training"))
        if batches:
            lines += ["", "### Training memory (Table III analogue)", ""]
            head = ["variant", *[f"batch {b} counted (MB)" for b in batches],
                    *[f"batch {b} peak RSS (MB)" for b in batches],
                    *[f"batch {b} caffe time F-B (ms)" for b in batches]]
            rows = []
            for variant in dict.fromkeys(m.variant for m in self.measurements):
                cells = {m.batch: m for m in self.measurements if m.variant == variant and m.kind == "training"}
                rows.append([variant, *[megabytes(cells[b].counted_mb if b in cells else None) for b in batches],
                             *[megabytes(cells[b].peak_rss_mb if b in cells else None) for b in batches],
                             *[_caffe_ms(cells.get(b), "forward_backward_ms") for b in batches]])
            lines += [markdown_table(head, rows), "", self.memory_note]
        skipped = [f"{m.variant} {m.kind} {size_label(m.height, m.width)} batch {m.batch}: {m.skipped}"
                   for m in self.measurements if m.skipped]
        if skipped:
            lines += ["", "Not run whole: " + "; ".join(skipped) + "."]
        return "\n".join(lines) + "\n"


def _seconds(m: Measurement | None) -> str:
    if m is None or m.seconds_mean is None:
        return "-"
    text = f"{m.seconds_mean:.3f} ± {m.seconds_std:.3f}"
    return text + (f" (tiles {m.tile})" if m.tile else "")


def _caffe_ms(m: Measurement | None, key: str) -> str:
    return f"{m.caffe_time[key]:.1f}" if m is not None and key in m.caffe_time else "-"


def _measurement(variant: str, kind: str, height: int, width: int, batch: int, raw: dict[str, Any]) -> Measurement:
    estimate = MemoryEstimate(**raw["estimate"])
    counted = (estimate.training if kind == "training" else estimate.total) / MB
    m = Measurement(variant, kind, height, width, batch, counted_mb=round(counted, 1), skipped=raw.get("skipped"),
                    tile=raw.get("tile"))
    if "seconds" in raw:
        m.seconds_mean, m.seconds_std = float(np.mean(raw["seconds"])), float(np.std(raw["seconds"]))
        m.repeats = len(raw["seconds"])
        m.peak_rss_mb = round(raw["peak_rss"] / MB, 1)
        m.rss_above_start_mb = round(raw["rss_above_start"] / MB, 1)
    return m


def _time_tiled(variant: str, height: int, width: int, whole: dict[str, Any], folder: Path, tile_gb: float,
                common: dict[str, Any]) -> dict[str, Any]:
    """Time an image too large to run whole as `mrfnet deblur` runs it: in tiles that fit ``tile_gb``."""
    estimate = MemoryEstimate(**whole["estimate"])
    per_pixel = (estimate.total - estimate.parameters) / (height * width)
    auto = AutoTile(pixels_for_budget(per_pixel, estimate.parameters, tile_gb), common["overlap"])
    padded = [max(STRIDE, -(-side // STRIDE) * STRIDE) for side in (height, width)]
    shape = auto.shape_for(*padded) or padded
    log.info("%s at %s: %s; timing %s tiles", variant, size_label(height, width), whole["skipped"],
             size_label(*shape))
    prototxt = write_deploy(variant, shape[0], shape[1], 1, folder, train=False)
    tiled = run_isolated(measure_in_child, prototxt, train=False, image_size=(height, width), timeout=CHILD_TIMEOUT_S,
                         **common)
    reason = f"whole image needs {estimate.total / 2**30:.2f} GB counted"
    if "skipped" in tiled:
        reason += f", and {size_label(*shape)} tiles {tiled['skipped'].split(', ')[0]}"
    else:
        reason += f", timed in {size_label(*shape)} tiles"
    return {**tiled, "estimate": whole["estimate"], "skipped": reason}


def time_variants(variants: Sequence[str], *, sizes: Sequence[tuple[int, int]] = DEFAULT_SIZES,
                  repeats: int = DEFAULT_REPEATS, warmup: int = DEFAULT_WARMUP,
                  memory_batches: Sequence[int] = DEFAULT_MEMORY_BATCHES,
                  memory_side: int = DEFAULT_MEMORY_SIDE, max_memory_gb: float | None = None,
                  tile_memory_gb: float | None = None, overlap: int = DEFAULT_OVERLAP,
                  caffe_time: bool = True, gpu: int | None = None, run_training: bool = True,
                  engine: str = "caffe") -> TimingReport:
    """Time each variant at each (height, width) and count its training memory at each batch size.

    ``engine`` "onnxruntime" times inference of each net's ONNX export instead (same tiles); training
    memory and `caffe time` are Caffe's and are then left out.

    Inference that does not fit ``max_memory_gb`` (default: half the memory available) is timed
    with tiles that fit ``tile_memory_gb`` (default: the same); training memory that does not fit,
    or all of it without ``run_training``, is counted only (no forward/backward pass, no peak RSS).
    """
    if repeats < 1 or warmup < 0:
        raise InvalidValue("repeats must be at least 1 and warmup at least 0")
    if engine not in ("caffe", "onnxruntime"):
        raise InvalidValue(f"unknown engine {engine!r}")
    if engine != "caffe":
        if gpu is not None:
            raise InvalidValue("--engine onnxruntime runs on the CPU here: leave out --gpu")
        caffe_time, memory_batches = False, ()
    max_gb = max_memory_gb if max_memory_gb is not None else default_max_memory_gb()
    max_bytes = int(max_gb * 2**30)
    tile_gb = min(max_gb, tile_memory_gb if tile_memory_gb is not None else max_gb)
    machine = machine_info(gpu)
    measurements = []
    common = dict(repeats=repeats, warmup=warmup, max_bytes=max_bytes, overlap=overlap, gpu=gpu, engine=engine)
    with tempfile.TemporaryDirectory(prefix="mrfnet-time-") as tmp:
        folder = Path(tmp)
        for variant in variants:
            for height, width in sizes:
                prototxt = write_deploy(variant, height, width, 1, folder, train=False)
                raw = run_isolated(measure_in_child, prototxt, train=False, timeout=CHILD_TIMEOUT_S, **common)
                if "skipped" in raw:
                    raw = _time_tiled(variant, height, width, raw, folder, tile_gb, common)
                m = _measurement(variant, "inference", height, width, 1, raw)
                if caffe_time and m.tile is None:
                    m.caffe_time = run_caffe_time(prototxt, iterations=repeats, max_bytes=max_bytes, gpu=gpu)
                log.info("%s %s: %s s per image, %.0f MB counted", variant, size_label(height, width),
                         f"{m.seconds_mean:.3f}" if m.seconds_mean is not None else "-", m.counted_mb)
                measurements.append(m)
            for batch in memory_batches:
                prototxt = write_deploy(variant, memory_side, memory_side, batch, folder, train=True)
                raw = run_isolated(measure_in_child, prototxt, train=True, timeout=CHILD_TIMEOUT_S,
                                   count_only=not run_training, **{**common, "engine": "caffe"})
                m = _measurement(variant, "training", memory_side, memory_side, batch, raw)
                if caffe_time and m.skipped is None:
                    m.caffe_time = run_caffe_time(prototxt, iterations=repeats, max_bytes=max_bytes, gpu=gpu)
                log.info("%s training batch %d: %.0f MB counted, peak RSS %s MB", variant, batch, m.counted_mb,
                         f"{m.peak_rss_mb:.0f}" if m.peak_rss_mb is not None else "- (not run)")
                measurements.append(m)
    settings = dict(sizes=[list(s) for s in sizes], repeats=repeats, warmup=warmup,
                    memory_batches=list(memory_batches), memory_side=memory_side, max_memory_gb=max_gb,
                    tile_memory_gb=tile_gb, overlap=overlap, caffe_time=caffe_time, run_training=run_training,
                    engine=engine)
    return TimingReport(machine, measurements, settings)
