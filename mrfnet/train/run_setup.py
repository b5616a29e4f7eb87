"""A new run folder: every option checked before anything is written, then the folder made whole or not at all.

The checks are what Caffe would otherwise abort on, or silently ignore: data that is missing, damaged or
smaller than the crop, weights of another net or of none, a batch over Caffe's blob limit, GPUs or a
precision this Caffe cannot run, an MPI launch that cannot split the batch.
"""

from __future__ import annotations

import logging
import shlex
import shutil
import tempfile
from dataclasses import asdict
from pathlib import Path

from data_prep.atomic import write_json_atomic
from data_prep.records import check_pairs, smallest_side
from mrfnet.infer.weights import check_weights, inspect_deploy
from mrfnet.runtime.caffe_env import CaffeError, run_isolated
from mrfnet.runtime.device import probe_gpu
from mrfnet.runtime.doctor import probe_caffe
from mrfnet.runtime.errors import InvalidValue, MissingInput, OutputExists
from mrfnet.runtime.folder_lock import hold, release
from mrfnet.runtime.run_files import DEPLOY, OPTIONS, SNAPSHOT_DIR, SOLVER, TRAIN_VAL
from mrfnet.train.footprint import check_batch
from mrfnet.train.loss_schedule import loss_schedule
from mrfnet.train.options import TrainOptions
from mrfnet.train.ranks import World
from mrfnet.train.schedule import Schedule, write_solver
from mrfnet.train.validation import check_val_every
from netgen import EdgeOptions, build_deploy, build_train_val
from netgen.engine import PRECISIONS, set_convolution_engine

log = logging.getLogger(__name__)


def _schedule(options: TrainOptions, records: int) -> Schedule:
    gpus = options.solvers
    schedule = Schedule(records=records, batch_size=options.batch_size, gpus=gpus, epochs=options.epochs,
                        halve_every_epochs=options.halve_every_epochs)
    if options.iterations:
        schedule = Schedule(records=records, batch_size=options.batch_size, gpus=gpus,
                            epochs=options.iterations / schedule.iterations_per_epoch,
                            halve_every_epochs=options.halve_every_epochs)
    if options.snapshot_every:
        schedule = Schedule(**{**asdict(schedule),
                               "snapshot_every_epochs": options.snapshot_every / schedule.iterations_per_epoch})
    return schedule


def check_gpus(gpus: list[int]) -> None:
    if not gpus:
        return

    try:
        run_isolated(probe_gpu, timeout=120)
    except CaffeError as exc:
        raise InvalidValue(f"--gpus needs a Caffe built with CUDA; this one is not ({exc}). "
                         "Train on the CPU by leaving out --gpus.") from exc
    if len(gpus) > 1 and not run_isolated(probe_caffe, timeout=120)["nccl"]:
        raise InvalidValue("several GPUs need a Caffe built with NCCL (USE_NCCL=ON)")


def check_precision(precision: str, gpus: list[int]) -> None:
    """Refuse a precision this Caffe and CPU cannot run, before any run folder exists."""
    if precision not in PRECISIONS:
        raise InvalidValue(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
    if precision == "fp32":
        return
    if gpus:
        raise InvalidValue(f"--precision {precision} runs on the CPU only (oneDNN's kernels): leave out --gpus")
    caffe = run_isolated(probe_caffe, timeout=120)
    if not caffe["dnnl"]:
        raise InvalidValue(f"--precision {precision} needs the DNNL engine, which this Caffe was built without "
                         "(bash tools/install_caffe.sh builds it)")
    if not caffe["dnnl_native_bf16"]:
        raise InvalidValue(f"--precision {precision} needs a CPU with native bfloat16 (AVX512_BF16 or AMX); this "
                         "one has none, and emulating it would be slower than fp32: train with --precision fp32")


def check_ranks(options: TrainOptions, worlds: list[World]) -> None:
    """Refuse an MPI launch that cannot work, before any run folder is made (``worlds``: every rank's)."""
    size = len(worlds)
    if options.batch_size % size:
        raise InvalidValue(f"--batch-size {options.batch_size} is the total over all ranks and does not split evenly "
                         f"over {size} ranks: choose a multiple of {size}")
    if options.edge and size > 1:
        raise InvalidValue("--edge is not supported with several ranks: its discriminators learn in Python, each "
                         "rank on its own batch, and would drift apart")
    if options.gpus:
        hosts = {w.host: w.local_size for w in worlds}
        wrong = {host: n for host, n in hosts.items() if n != len(options.gpus)}
        if wrong:
            named = ", ".join(f"{host} runs {n}" for host, n in sorted(wrong.items()))
            raise InvalidValue(f"under MPI each rank drives one GPU, and --gpus lists the GPUs of each host, one per "
                             f"rank there (rank k of a host takes the k-th): --gpus names {len(options.gpus)} but "
                             f"{named} rank(s); start {len(options.gpus)} ranks per host or name that many GPUs")


def check_start_weights(options: TrainOptions) -> None:
    """Refuse --weights that Caffe would abort on or silently ignore: missing, empty (Caffe copies nothing
    and the run trains from scratch), truncated, non-finite, or another net's (its shapes differ)."""
    if not Path(options.weights).is_file():
        raise MissingInput(f"--weights {options.weights} does not exist")
    with tempfile.TemporaryDirectory(prefix="mrfnet-weights-") as tmp:
        deploy = Path(tmp) / DEPLOY
        deploy.write_text(str(build_deploy(options.variant, height=options.crop_size, width=options.crop_size)))
        check_weights(options.weights, inspect_deploy(deploy).param_shapes, deploy=f"the {options.variant} net")


def check_data(data: Path, crop_size: int) -> tuple[int, int]:
    """(training, validation) records of a data_prep folder, refused (naming why) where Caffe would abort."""
    train_lmdb, val_lmdb = data / "train_lmdb", data / "val_lmdb"
    if not train_lmdb.is_dir():
        raise MissingInput(f"no training LMDB at {train_lmdb} (build one with `mrfnet data-prep`)")
    records = check_pairs(train_lmdb)  # damaged or foreign: refused here, naming it, not by a Caffe CHECK later
    val_records = check_pairs(val_lmdb) if val_lmdb.is_dir() else 0
    side = smallest_side(train_lmdb)
    if crop_size > side:  # Caffe's Data layer would abort on it
        raise InvalidValue(f"--crop-size {crop_size} is larger than the training records of {data} ({side} pixels "
                         f"on their short side): choose --crop-size {side} or less, or rebuild with a larger "
                         "--patch-size")
    return records, val_records


def prepare_run(options: TrainOptions, argv: list[str], *, keep_lock: bool = False) -> Path:
    """Create the run folder with its options and generated prototxt; refuse an existing one.

    ``keep_lock``: this process goes on to train it, and keeps the folder's lock (held from before
    the folder existed; mrfnet.runtime.folder_lock), so no other process can start on it in between.
    """
    run_dir = Path(options.run_dir)
    if run_dir.exists():
        raise OutputExists(f"run folder {run_dir} exists: continue it with --resume, or choose another --run-dir")
    records, val_records = check_data(Path(options.data), options.crop_size)
    if not 0 <= options.edge_alpha_at <= 1:
        raise InvalidValue(f"--edge-alpha-at is a fraction of the run in [0, 1], got {options.edge_alpha_at}")
    loss_schedule(options.loss_schedule, 1)  # reject a malformed schedule before any work
    check_val_every(options.val_every, Path(options.data) / "val_lmdb", options.val_limit)
    if options.weights:
        check_start_weights(options)
    schedule = Schedule(**{**asdict(_schedule(options, records)), "val_records": val_records})
    check_batch(options.variant, options.crop_size, schedule.batch_per_gpu, on_cpu=not options.gpus)

    # Everything is written into a hidden sibling first and renamed into place at the end, so a failure
    # part-way leaves no half-made run folder (the generated files name the final folder). Its lock,
    # taken before anything is written, stays on the folder through the rename: this process then
    # trains it (a second `mrfnet train` on the same --run-dir is refused, naming this one).
    partial = run_dir.parent / f".{run_dir.name}.partial"
    if partial.exists():
        release(hold(partial))  # another process creating this run: FolderBusy; else a crashed one's
        shutil.rmtree(partial)
    try:
        partial.mkdir(parents=True)
    except FileExistsError:  # made by another process just now
        hold(partial)  # FolderBusy, naming it (held by none: the FileExistsError)
        raise
    lock = hold(partial)
    try:
        _write_run_files(partial, options, schedule, argv)
        partial.rename(run_dir)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        release(lock)
        raise
    if not keep_lock:
        release(lock)
    log.info("run %s: %d records, batch %d (%d per solver x %d), %d iterations/epoch, max_iter %d",
             run_dir, schedule.records, schedule.batch_size, schedule.batch_per_gpu, schedule.gpus,
             schedule.iterations_per_epoch, schedule.max_iter)
    return run_dir


def _write_run_files(folder: Path, options: TrainOptions, schedule: Schedule, argv: list[str]) -> None:
    """options.json, command.txt, the generated train_val and deploy nets and the solver, into ``folder``."""
    data = Path(options.data).resolve()
    (folder / SNAPSHOT_DIR).mkdir()
    stored = TrainOptions(**{**asdict(options), "data": str(data)})  # --data on resume overrides it
    write_json_atomic(folder / OPTIONS, asdict(stored))
    (folder / "command.txt").write_text(shlex.join(argv) + "\n")
    net = set_convolution_engine(
        build_train_val(options.variant, train_source=str(data / "train_lmdb"), val_source=str(data / "val_lmdb"),
                        batch_size=schedule.batch_per_gpu, crop_size=options.crop_size, loss=options.loss,
                        edge=EdgeOptions() if options.edge else None,
                        coarse_output_lr_mult=options.coarse_output_lr_mult),
        precision=options.precision)
    (folder / TRAIN_VAL).write_text(str(net))
    (folder / DEPLOY).write_text(str(build_deploy(options.variant, height=options.crop_size,
                                                  width=options.crop_size)))
    # paths relative to the run folder, so it can be moved or copied; train() resolves them at each start
    write_solver(folder / SOLVER, schedule, net=TRAIN_VAL, snapshot_prefix=f"{SNAPSHOT_DIR}/{options.variant}",
                 base_lr=options.base_lr, seed=options.seed, gpu=bool(options.gpus))
