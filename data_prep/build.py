"""The data-prep pipeline: source items -> (frame averaging, augmentation, synthetic blur) -> patches -> LMDBs.

The main process plans everything from file headers: which records each image gives and the
shuffled index of each (so the keys ``%08d_<name>`` put Caffe's sequential, index-sharded reading
in a random order fixed by the seed). Worker processes decode, augment, blur and crop one image
each and return finished records; the main process writes them. Every random draw comes from a
generator seeded by (seed, split, image, copy), so the records do not depend on the number of
workers or the order they finish in.

The whole output folder is built as ``<out>.partial`` and renamed to ``<out>`` at the end, so the
splits, their meta_info and summary.json appear together or not at all; an existing ``<out>`` is
replaced only with ``force`` and only once the new one is complete. A build that cannot fit is
refused before it starts (its size is known from the plan), and a disk that fills anyway ends it
with one DiskFull line naming ``<out>``, the staging folder removed and an older ``<out>`` untouched.
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import shutil
import signal
import time
import zlib
from collections import Counter
from collections.abc import Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from tqdm import tqdm

from data_prep.atomic import check_free_space, format_bytes, reporting_no_room, write_text_atomic
from data_prep.blur import (
    apply_blur_patch,
    augment,
    sample_augment_params,
    sample_blur_params,
    synthesize_blur,
)
from data_prep.errors import DataError, DataExists
from data_prep.frames import motion_stats
from data_prep.images import ImageError, read_image
from data_prep.lmdb_writer import (
    LmdbWriter,
    WriterStats,
    partial_path,
    record_footprint,
    replace_dir,
)
from data_prep.options import AUTO_WORKERS_MIN_PIXELS, BuildOptions
from data_prep.patches import crop, patch_origins
from data_prep.records import encode_pair, encoded_pair_bytes
from data_prep.sources import SPLITS, Item, get_source, load_items

log = logging.getLogger(__name__)

SUMMARY = "summary.json"
Record = tuple[str, bytes, dict[str, Any]]


@dataclass(frozen=True)
class Task:
    """One image (one copy of it) for a worker, with the shuffled index of each of its records."""

    item: Item
    copy: int
    base: str  # record name: the item's, plus _c<copy> when there are several copies
    indices: tuple[int, ...]  # one per patch, in patch_origins order; one for a whole image
    patch_size: int | None  # None: the whole image is one record
    stride: int
    augment: bool
    blur_per: str
    max_motion: int
    min_motion: int
    seed: int


def plan(items: Iterable[Item], options: BuildOptions) -> tuple[dict[str, list[Task]], list[str]]:
    """The tasks of each split, and the images skipped for being smaller than the patch."""
    items = list(items)
    tasks: dict[str, list[Task]] = {split: [] for split in SPLITS}
    skipped = []
    for split in SPLITS:
        whole = split == "test" and options.test_whole
        # Held-out patches do not overlap: a second view of the same pixels adds cost, not evidence.
        stride = options.stride if split == "train" else options.patch_size
        copies = options.test_copies if whole and options.test_copies is not None else options.copies
        entries = []
        for item in (item for item in items if item.split == split):
            count = 1 if whole else len(patch_origins(item.height, item.width, options.patch_size, stride))
            if count == 0:
                skipped.append(f"{item.sharp} ({item.height}x{item.width})")
                continue
            entries += [(item, copy, count) for copy in range(copies)]
        order = np.random.default_rng([options.seed, zlib.crc32(split.encode())])
        indices = order.permutation(sum(count for _, _, count in entries)).tolist()
        start = 0
        for item, copy, count in entries:
            base = item.name if copies == 1 else f"{item.name}_c{copy}"
            tasks[split].append(Task(item, copy, base, tuple(indices[start:start + count]),
                                     None if whole else options.patch_size, stride,
                                     options.augment and split == "train", options.blur_per, options.max_motion,
                                     options.min_motion, options.seed))
            start += count
    if skipped:
        log.warning("skipped %d image(s) smaller than the %d-pixel patch: %s", len(skipped), options.patch_size,
                    ", ".join(skipped[:5]) + (" ..." if len(skipped) > 5 else ""))
    return tasks, skipped


def read_item(item: Item) -> tuple[dict[str, np.ndarray], list[str], dict[str, Any] | None]:
    """An item's images by role ("sharp", and "blur" unless the build blurs it), the conversions they needed,
    and a frame source's meta_info of its frames (None for the other sources).

    A frame source's item is averaged here (data_prep.frames.Window.read): its blurred image is real, so the
    rest of the build treats it as a pair from files (no synthetic blur).
    """
    if item.frames is not None:
        pixels = item.frames.read()
        return ({"sharp": pixels.sharp, "blur": pixels.blurred}, [f"frames: {note}" for note in pixels.notes],
                item.frames.meta(pixels.motion_px))
    images, converted = {}, []
    for role, path in (("sharp", item.sharp), ("blur", item.blur)):
        if path is None:
            continue
        images[role], notes = read_image(path)
        if images[role].shape[:2] != (item.height, item.width):
            raise ImageError(f"image {path} decodes to {images[role].shape[1]}x{images[role].shape[0]} pixels "
                             f"but its header says {item.width}x{item.height}")
        converted += [f"{role}: {note}" for note in notes]
    return images, converted, None


def make_records(task: Task) -> tuple[str, list[Record], list[str]]:
    """Decode (or average), augment, blur and crop one image: (split, its records, the conversions its files
    needed)."""
    item = task.item
    rng = np.random.default_rng([task.seed, zlib.crc32(f"{item.split}/{item.name}/{task.copy}".encode())])
    images, converted, frames_meta = read_item(item)
    augment_params = sample_augment_params(rng) if task.augment else None
    if augment_params is not None:
        images = {role: augment(image, augment_params) for role, image in images.items()}
    height, width = images["sharp"].shape[:2]
    origins = [None] if task.patch_size is None else patch_origins(height, width, task.patch_size, task.stride)
    per_patch = "blur" not in images and task.blur_per == "patch" and task.patch_size is not None
    blur_params = None
    if "blur" not in images and not per_patch:
        images["blur"], blur_params = synthesize_blur(images["sharp"], rng, task.max_motion, task.min_motion)
    records = []
    for index, origin in zip(task.indices, origins, strict=True):
        if origin is None:
            key, blur, sharp = f"{index:08d}_{task.base}", images["blur"], images["sharp"]
        else:
            y, x = origin
            key = f"{index:08d}_{task.base}_y{y}_x{x}"
            sharp = crop(images["sharp"], y, x, task.patch_size)
            if per_patch:
                blur_params = sample_blur_params(rng, task.max_motion, task.min_motion)
                blur = apply_blur_patch(images["sharp"], y, x, task.patch_size, blur_params)
            else:
                blur = crop(images["blur"], y, x, task.patch_size)
        meta = {"split": item.split, "name": task.base, "sharp": str(item.sharp),
                "blur": None if item.blur is None else str(item.blur), "copy": task.copy,
                "image_size": [height, width], "crop": None if origin is None else list(origin),
                "size": list(sharp.shape[:2]), "blur_params": blur_params,
                "blur_scope": None if blur_params is None else ("patch" if per_patch else "image"),
                "augment": augment_params, "converted": converted,
                "frames": frames_meta}
        records.append((key, encode_pair(blur, sharp), meta))
    return item.split, records, converted


def _init_worker() -> None:
    cv2.setNumThreads(1)  # one process per core already
    # Ctrl-C reaches the whole process group: only the parent acts on it (it stops the workers and removes
    # its partial LMDBs); a worker that took it could die holding the task queue's lock, and hang the pool
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _stop_workers(executor: ProcessPoolExecutor, exc_type: type | None, *_: object) -> None:
    """Cancel what has not started; after a Ctrl-C also end the workers at once, not after their tasks.

    The pool's manager thread may then wait forever at interpreter exit, so the command line leaves
    with os._exit after an interrupt (mrfnet.cli); everything else waits for the workers as usual.
    """
    if exc_type is None or not issubclass(exc_type, KeyboardInterrupt):
        executor.shutdown(cancel_futures=True)
        return
    executor.shutdown(wait=False, cancel_futures=True)
    for process in multiprocessing.active_children():
        process.terminate()
        process.join(10)


def _results(tasks: list[Task], workers: int, stack: ExitStack) -> Iterator[tuple[str, list[Record], list[str]]]:
    """Each task's records as soon as they are ready; a worker's exception (or death) is raised here."""
    if workers == 1:
        return map(make_records, tasks)
    # spawn, not fork: the parent has Caffe, OpenCV and OpenBLAS loaded, with their threads. Not
    # multiprocessing.Pool: it waits forever for the result of a worker that was killed (OOM).
    # The workers start with SIGINT ignored (a spawned child inherits that), so none dies of a Ctrl-C while
    # it starts up, before _init_worker runs.
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        executor = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                                       initializer=_init_worker)
        stack.push(lambda *exc: _stop_workers(executor, *exc))
        futures = [executor.submit(make_records, task) for task in tasks]
    finally:
        signal.signal(signal.SIGINT, previous)
    return (future.result() for future in as_completed(futures))


def worker_count(options: BuildOptions, tasks: list[Task]) -> int:
    """How many worker processes to use (1: none, work in-process); see AUTO_WORKERS_MIN_PIXELS."""
    if options.workers is not None:
        return min(options.workers, len(tasks))
    # pixels decoded: a frame source's item reads a window of frames
    pixels = sum(task.item.height * task.item.width * (task.item.frames.settings.average if task.item.frames else 1)
                 for task in tasks)
    return 1 if pixels < AUTO_WORKERS_MIN_PIXELS else min(os.cpu_count() or 1, len(tasks))


def estimated_bytes(tasks: dict[str, list[Task]]) -> int:
    """About the most disk the LMDBs of ``tasks`` will take, from the plan alone (before any image is decoded)."""
    total = 0
    for task in (task for split_tasks in tasks.values() for task in split_tasks):
        height, width = ((task.patch_size, task.patch_size) if task.patch_size is not None
                         else (task.item.height, task.item.width))  # augmentation keeps the pixel count
        total += len(task.indices) * record_footprint(encoded_pair_bytes(height, width))
    return total


def _check_out(out: Path, force: bool) -> None:
    if out.exists() and not out.is_dir():
        raise DataExists(f"{out} exists and is not a folder")
    if out.exists() and any(out.iterdir()) and not force:
        raise DataExists(f"{out} exists; pass --force to replace it")


def _summary(options: BuildOptions, tasks: dict[str, list[Task]], stats: dict[str, WriterStats],
             skipped: list[str], converted: Counter, workers: int, seconds: float,
             motions: dict[str, list[float]]) -> dict[str, Any]:
    """summary.json: the options, and per split its records, size and (frame sources) measured motion."""
    source = get_source(options.source)
    splits = {split: {"images": len({task.item.name for task in tasks[split]}), "records": stats[split].records,
                      "bytes": stats[split].bytes, "map_size": stats[split].map_size}
              for split in stats}
    if source.reads_frames:
        for split in splits:
            splits[split]["motion"] = motion_stats(motions.get(split, []), options.average)
    return {
        "source": options.source, "root": None if options.root is None else str(options.root),
        "out": str(options.out), "gopro_blur": options.gopro_blur if source.reads_gopro_blur else None,
        "patch_size": options.patch_size, "stride": options.stride, "copies": options.copies,
        "test_copies": options.test_copies,
        "blur_per": options.blur_per if source.synthetic else None,
        "max_motion": options.max_motion if source.synthetic else None,
        "min_motion": options.min_motion if source.synthetic else None,
        "frames": options.frames.record() if source.reads_frames else None,
        "augment": options.augment, "test_whole": options.test_whole, "seed": options.seed,
        "workers": workers, "splits": splits, "skipped": {"smaller_than_patch": skipped},
        "converted": dict(converted), "records": sum(s["records"] for s in splits.values()),
        "bytes": sum(s["bytes"] for s in splits.values()), "seconds": round(seconds, 2),
    }


def build_dataset(options: BuildOptions) -> dict[str, Any]:
    """Build ``<out>/{train,val,test}_lmdb`` (each with meta_info.jsonl) and ``<out>/summary.json``.

    Splits without records get no LMDB; a build without training records is an error. Returns the
    summary (also logged).
    """
    start = time.perf_counter()
    options = options.resolved()
    _check_out(options.out, options.force)
    items = load_items(options.source, options.root, gopro_blur=options.gopro_blur, val_fraction=options.val_fraction,
                       test_fraction=options.test_fraction, seed=options.seed, frames=options.frames)
    tasks, skipped = plan(items, options)
    if not tasks["train"] and not get_source(options.source).test_only:
        raise DataError(f"no training records: every training image is smaller than the {options.patch_size}-pixel "
                         f"patch, or the source has none")
    staging = partial_path(options.out)
    if staging.exists():
        log.warning("removing %s left by an interrupted build", staging)
        shutil.rmtree(staging)
    needed = estimated_bytes(tasks)
    log.debug("the LMDBs will take about %s", format_bytes(needed))
    check_free_space(options.out, needed)  # an older <out> stays until the new one is complete: count it all
    try:
        with reporting_no_room(options.out):  # a full disk: one line naming <out>, which stays as it was
            staging.mkdir(parents=True)
            with ExitStack() as stack:  # on an error every writer aborts: no LMDB appears
                writers = {split: stack.enter_context(LmdbWriter(staging / f"{split}_lmdb",
                                                                 map_size=options.map_size))
                           for split in SPLITS if tasks[split]}
                converted: Counter = Counter()
                motions: dict[str, list[float]] = {}
                all_tasks = [task for split in SPLITS for task in tasks[split]]
                workers = worker_count(options, all_tasks)
                total = sum(len(task.indices) for task in all_tasks)
                with tqdm(total=total, unit="pair", desc=f"data-prep {options.source}", disable=None) as bar:
                    for split, records, notes in _results(all_tasks, workers, stack):
                        for key, value, meta in records:
                            writers[split].put(key, value, meta)
                            if meta["frames"] is not None:
                                motions.setdefault(split, []).append(meta["frames"]["motion_px"])
                        converted.update(notes)
                        bar.update(len(records))
            stats = {split: writer.stats for split, writer in writers.items()}
            summary = _summary(options, tasks, stats, skipped, converted, workers, time.perf_counter() - start,
                               motions)
            write_text_atomic(staging / SUMMARY, json.dumps(summary, indent=2, ensure_ascii=False) + "\n")
            replace_dir(staging, options.out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    _log_summary(summary)
    return summary


def _log_summary(summary: dict[str, Any]) -> None:
    for split, split_summary in summary["splits"].items():
        log.info("%s: %d pairs from %d image(s), %.1f MB", split, split_summary["records"], split_summary["images"],
                 split_summary["bytes"] / 1e6)
    skipped = len(summary["skipped"]["smaller_than_patch"])
    conversions = ", ".join(f"{count} {note}" for note, count in summary["converted"].items()) or "none"
    log.info("wrote %d pairs (%.1f MB) to %s in %.1f s; skipped %d image(s) smaller than the patch; "
             "conversions: %s", summary["records"], summary["bytes"] / 1e6, summary["out"], summary["seconds"],
             skipped, conversions)
