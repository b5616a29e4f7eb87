"""The training driver: a self-contained run folder, its solver children supervised, progress logged, resume."""

from __future__ import annotations

import errno
import json
import logging
import multiprocessing
import re
import shlex
import shutil
import signal
import tempfile
import time
from dataclasses import asdict, dataclass, field, replace
from multiprocessing.connection import wait
from pathlib import Path
from typing import Any

from google.protobuf import text_format

from data_prep.atomic import DiskFull, format_bytes, free_bytes, reporting_no_room
from data_prep.records import check_pairs, smallest_side
from mrfnet.infer.run_folder import (
    BEST_MODEL,
    BEST_RECORD,
    CAFFE_LOG,
    DEPLOY,
    OPTIONS,
    SNAPSHOT_DIR,
    SOLVER,
    TRAIN_VAL,
    iteration_of,
    latest_caffemodel,
    snapshot_files,
)
from mrfnet.infer.weights import check_weights, inspect_deploy
from mrfnet.runtime.caffe_env import CaffeError, child_environment, glog_failure, import_caffe, run_isolated
from mrfnet.runtime.device import probe_gpu
from mrfnet.runtime.doctor import probe_caffe
from mrfnet.runtime.folder_lock import hold, release
from mrfnet.train.footprint import check_batch
from mrfnet.train.loss_schedule import loss_schedule
from mrfnet.train.progress import _ProgressLog, recorded_rows
from mrfnet.train.ranks import AgentProcess, Ranks, World
from mrfnet.train.schedule import HALVE_EVERY_EPOCHS, Schedule, write_solver
from mrfnet.train.snapshots import SnapshotKeeper, TrainingError, learned_net, resumable_solverstate
from mrfnet.train.validation import check_val_every, write_json_atomic
from mrfnet.train.worker import STOP_SIGNALS, SolveJob, solve
from netgen import EdgeOptions, build_deploy, build_train_val
from netgen.engine import PRECISIONS, set_convolution_engine

log = logging.getLogger(__name__)


DEFAULT_DATA = Path("data/embedded")
NCCL_UID_BYTES = 128  # NCCL_UNIQUE_ID_BYTES


@dataclass
class TrainOptions:
    """Everything that defines a run; saved as options.json in the run folder."""

    variant: str
    data: str
    run_dir: str
    batch_size: int = 16
    crop_size: int = 256
    epochs: float = 50
    iterations: int | None = None
    base_lr: float = 1e-4
    halve_every_epochs: float = HALVE_EVERY_EPOCHS
    snapshot_every: int | None = None
    loss: str = "native"
    loss_schedule: str = "coarse-to-fine"
    gpus: list[int] = field(default_factory=list)
    seed: int = 0
    weights: str | None = None
    edge: bool = False
    edge_alpha_at: float = 0.5
    val_every: int | None = None
    val_limit: int | None = None
    keep_snapshots: int | None = None  # the newest good pairs kept; None: all
    ranks: int = 1  # MPI ranks the run was made for (mpirun -np N); each has batch_size / ranks
    precision: str = "fp32"  # the (de)convolutions' arithmetic (netgen.engine); bf16 on the DNNL engine only

    @property
    def solvers(self) -> int:
        """Solver processes sharing each iteration's batch: the MPI ranks, or one host's GPUs."""
        return self.ranks if self.ranks > 1 else max(1, len(self.gpus))


@dataclass
class TrainResult:
    status: str  # "finished" or "stopped"
    iteration: int
    snapshot: Path | None
    seconds: float


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
        raise ValueError(f"--gpus needs a Caffe built with CUDA; this one is not ({exc}). "
                         "Train on the CPU by leaving out --gpus.") from exc
    if len(gpus) > 1 and not run_isolated(probe_caffe, timeout=120)["nccl"]:
        raise ValueError("several GPUs need a Caffe built with NCCL (USE_NCCL=ON)")


def check_precision(precision: str, gpus: list[int]) -> None:
    """Refuse a precision this Caffe and CPU cannot run, before any run folder exists."""
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
    if precision == "fp32":
        return
    if gpus:
        raise ValueError(f"--precision {precision} runs on the CPU only (oneDNN's kernels): leave out --gpus")
    caffe = run_isolated(probe_caffe, timeout=120)
    if not caffe["dnnl"]:
        raise ValueError(f"--precision {precision} needs the DNNL engine, which this Caffe was built without "
                         "(bash tools/install_caffe.sh builds it)")
    if not caffe["dnnl_native_bf16"]:
        raise ValueError(f"--precision {precision} needs a CPU with native bfloat16 (AVX512_BF16 or AMX); this "
                         "one has none, and emulating it would be slower than fp32: train with --precision fp32")


def check_ranks(options: TrainOptions, worlds: list[World]) -> None:
    """Refuse an MPI launch that cannot work, before any run folder is made (``worlds``: every rank's)."""
    size = len(worlds)
    if options.batch_size % size:
        raise ValueError(f"--batch-size {options.batch_size} is the total over all ranks and does not split evenly "
                         f"over {size} ranks: choose a multiple of {size}")
    if options.edge and size > 1:
        raise ValueError("--edge is not supported with several ranks: its discriminators learn in Python, each "
                         "rank on its own batch, and would drift apart")
    if options.gpus:
        hosts = {w.host: w.local_size for w in worlds}
        wrong = {host: n for host, n in hosts.items() if n != len(options.gpus)}
        if wrong:
            named = ", ".join(f"{host} runs {n}" for host, n in sorted(wrong.items()))
            raise ValueError(f"under MPI each rank drives one GPU, and --gpus lists the GPUs of each host, one per "
                             f"rank there (rank k of a host takes the k-th): --gpus names {len(options.gpus)} but "
                             f"{named} rank(s); start {len(options.gpus)} ranks per host or name that many GPUs")


def _check_start_weights(options: TrainOptions) -> None:
    """Refuse --weights that Caffe would abort on or silently ignore: missing, empty (Caffe copies nothing
    and the run trains from scratch), truncated, non-finite, or another net's (its shapes differ)."""
    if not Path(options.weights).is_file():
        raise FileNotFoundError(f"--weights {options.weights} does not exist")
    with tempfile.TemporaryDirectory(prefix="mrfnet-weights-") as tmp:
        deploy = Path(tmp) / DEPLOY
        deploy.write_text(str(build_deploy(options.variant, height=options.crop_size, width=options.crop_size)))
        check_weights(options.weights, inspect_deploy(deploy).param_shapes, deploy=f"the {options.variant} net")


def _check_data(data: Path, crop_size: int) -> tuple[int, int]:
    """(training, validation) records of a data_prep folder, refused (naming why) where Caffe would abort."""
    train_lmdb, val_lmdb = data / "train_lmdb", data / "val_lmdb"
    if not train_lmdb.is_dir():
        raise FileNotFoundError(f"no training LMDB at {train_lmdb} (build one with `mrfnet data-prep`)")
    records = check_pairs(train_lmdb)  # damaged or foreign: refused here, naming it, not by a Caffe CHECK later
    val_records = check_pairs(val_lmdb) if val_lmdb.is_dir() else 0
    side = smallest_side(train_lmdb)
    if crop_size > side:  # Caffe's Data layer would abort on it
        raise ValueError(f"--crop-size {crop_size} is larger than the training records of {data} ({side} pixels "
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
        raise FileExistsError(f"run folder {run_dir} exists: continue it with --resume, or choose another --run-dir")
    data = Path(options.data)
    train_lmdb, val_lmdb = data / "train_lmdb", data / "val_lmdb"
    records, val_records = _check_data(data, options.crop_size)
    if not 0 <= options.edge_alpha_at <= 1:
        raise ValueError(f"--edge-alpha-at is a fraction of the run in [0, 1], got {options.edge_alpha_at}")
    loss_schedule(options.loss_schedule, 1)  # reject a malformed schedule before any work
    check_val_every(options.val_every, val_lmdb, options.val_limit)
    if options.weights:
        _check_start_weights(options)
    schedule = _schedule(options, records)
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
    (partial / SNAPSHOT_DIR).mkdir()
    try:
        stored = TrainOptions(**{**asdict(options), "data": str(data.resolve())})  # --data on resume overrides it
        (partial / OPTIONS).write_text(json.dumps(asdict(stored), indent=2) + "\n")
        (partial / "command.txt").write_text(shlex.join(argv) + "\n")
        net = set_convolution_engine(
            build_train_val(options.variant, train_source=str(train_lmdb.resolve()),
                            val_source=str(val_lmdb.resolve()), batch_size=schedule.batch_per_gpu,
                            crop_size=options.crop_size, loss=options.loss,
                            edge=EdgeOptions() if options.edge else None),
            precision=options.precision)
        (partial / TRAIN_VAL).write_text(str(net))
        (partial / DEPLOY).write_text(
            str(build_deploy(options.variant, height=options.crop_size, width=options.crop_size)))
        schedule = Schedule(**{**asdict(schedule), "val_records": val_records})
        # paths relative to the run folder, so it can be moved or copied; train() resolves them at each start
        write_solver(partial / SOLVER, schedule, net=TRAIN_VAL,
                     snapshot_prefix=f"{SNAPSHOT_DIR}/{options.variant}", base_lr=options.base_lr, seed=options.seed,
                     gpu=bool(options.gpus))
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


def load_options(run_dir: Path) -> TrainOptions:
    path = run_dir / OPTIONS
    if not path.is_file():
        raise FileNotFoundError(f"{run_dir} is not a run folder (no options.json)")
    try:
        return TrainOptions(**json.loads(path.read_text()))
    except (ValueError, TypeError) as exc:  # not JSON, or not this project's options
        raise ValueError(f"{path} is damaged ({exc}): restore it from the run's command.txt, or start a new "
                         "run") from None


def _runtime_files(run_dir: Path, options: TrainOptions, restore: Path | None,
                   folder: Path) -> tuple[Path, Path | None]:
    """Solver, train_val and (to resume) solverstate for this start, in ``folder``, with absolute paths.

    The run folder's own files name paths relative to it and the LMDBs of options.json, so the folder can
    be moved and its data too; a solverstate names its caffemodel by the path it was written at, so a
    moved folder's one is pointed at where the caffemodel is now.
    """
    from caffe.proto import caffe_pb2

    run_dir = run_dir.resolve()
    net = text_format.Parse((run_dir / TRAIN_VAL).read_text(), caffe_pb2.NetParameter())
    data = Path(options.data)
    for layer in net.layer:
        if layer.type == "Data":
            phases = {rule.phase for rule in layer.include}
            layer.data_param.source = str(data / ("val_lmdb" if caffe_pb2.TEST in phases else "train_lmdb"))
            if caffe_pb2.TEST not in phases or Path(layer.data_param.source).is_dir():
                check_pairs(layer.data_param.source)  # Caffe's Data layer would abort on a damaged one, naming none
    (folder / TRAIN_VAL).write_text(str(net))
    solver = text_format.Parse((run_dir / SOLVER).read_text(), caffe_pb2.SolverParameter())
    solver.net = str(folder / TRAIN_VAL)
    solver.snapshot_prefix = str(run_dir / solver.snapshot_prefix)  # an absolute prefix (an older run) stays
    solver.snapshot = 0  # the solving loop snapshots (mrfnet.train.worker), each after its progress row
    (folder / SOLVER).write_text(str(solver))
    if restore is None:
        return folder / SOLVER, None
    state = caffe_pb2.SolverState()
    state.ParseFromString(restore.read_bytes())
    state.learned_net = str(learned_net(restore, state.learned_net))
    (folder / restore.name).write_bytes(state.SerializeToString())
    return folder / SOLVER, folder / restore.name


def _plan(run_dir: Path, resume: bool, data: Path | None, worlds: list[World] | None) -> dict[str, Any]:
    """What one process decides at each start (rank 0 under MPI) and every solver uses: the options, the
    solverstate to resume, NCCL's id and the best val PSNR so far."""
    options = load_options(run_dir)
    if data is not None:
        _check_data(Path(data), options.crop_size)  # before options.json points at it
        options = TrainOptions(**{**asdict(options), "data": str(Path(data).resolve())})
        write_json_atomic(run_dir / OPTIONS, asdict(options))
    world_size = len(worlds) if worlds else 1
    if options.ranks != world_size:  # the batch per solver is written into train_val.prototxt
        how = f"mpirun -np {options.ranks} mrfnet train ..." if options.ranks > 1 else "mrfnet train without mpirun"
        raise ValueError(f"{run_dir} was made for {options.ranks} MPI rank(s), not {world_size}: resume it with {how}")
    if worlds:
        check_ranks(options, worlds)
    check_gpus(options.gpus)
    check_precision(options.precision, options.gpus)
    caffe = import_caffe()
    if not (run_dir / SOLVER).is_file():
        raise FileNotFoundError(f"{run_dir} was not fully created (no solver.prototxt): remove it and start the run "
                                "again without --resume")
    recorded = recorded_rows(run_dir)
    restore = resumable_solverstate(run_dir, recorded=set(recorded) if recorded is not None else None) \
        if resume else None
    if resume and restore is None:
        if snapshot_files(run_dir, ".caffemodel"):  # trained, but its solverstates are gone
            raise FileNotFoundError(f"{run_dir / SNAPSHOT_DIR} holds caffemodels but no solverstate to resume from "
                                    "(deleted?): a resume would start again at iteration 0 and overwrite them. "
                                    "To start over, move the snapshots folder away (or train into a new --run-dir)")
        log.warning("no solverstate in %s yet: starting from iteration 0", run_dir / SNAPSHOT_DIR)
    # several GPUs: one process owns NCCL's bootstrap root and hands its id to all, as in python/train.py
    nccl_uid = caffe.NCCL.new_uid() if options.gpus and options.solvers > 1 else None
    if nccl_uid is not None and len(nccl_uid) != NCCL_UID_BYTES:
        raise CaffeError(f"caffe.NCCL.new_uid() returned {len(nccl_uid)} bytes, not {NCCL_UID_BYTES}: this Caffe lacks "
                         "tools/caffe-patches/gpu/0003-pycaffe-nccl-uid-all-bytes.patch (rebuild it)")
    best = json.loads((run_dir / BEST_RECORD).read_text()) if (restore and (run_dir / BEST_RECORD).is_file()) else None
    return {"options": asdict(options), "restore": str(restore) if restore else None, "nccl_uid": nccl_uid,
            "best_psnr": best["val_psnr"] if best else None,
            "validate_first": _validation_cut_short(run_dir, options, restore, recorded)}


def _validation_cut_short(run_dir: Path, options: TrainOptions, restore: Path | None,
                          recorded: dict[int, bool] | None) -> bool:
    """Whether the restored iteration was due a validation that a stop cut short (its row has none)."""
    if restore is None or not options.val_every or not recorded:
        return False
    from caffe.proto import caffe_pb2

    start = iteration_of(restore)
    max_iter = text_format.Parse((run_dir / SOLVER).read_text(), caffe_pb2.SolverParameter()).max_iter
    return (start % options.val_every == 0 or start == max_iter) and recorded.get(start) is False


def train(run_dir: Path, *, resume: bool = False, data: Path | None = None, ranks: Ranks | None = None) -> TrainResult:
    """Solve the run in ``run_dir`` to its max_iter (or until stopped); resume from its last solverstate.

    ``data`` (with ``resume``) is where the run's LMDBs are now, if they moved; it is stored in options.json.
    ``ranks``: this process is one rank of an MPI run (mrfnet.train.ranks); rank 0 decides, all solve.
    """
    world = ranks.world if ranks else None
    if ranks is None:
        plan = _plan(run_dir, resume, data, None)
    else:
        plan = ranks.agree(lambda: _plan(run_dir, resume, data, ranks.worlds))
    options = TrainOptions(**plan["options"])
    import_caffe()
    from caffe.proto import caffe_pb2

    solver_param = text_format.Parse((run_dir / SOLVER).read_text(), caffe_pb2.SolverParameter())
    restore = Path(plan["restore"]) if plan["restore"] else None
    start = iteration_of(restore) if restore else 0
    schedule = loss_schedule(options.loss_schedule, solver_param.max_iter)
    leader = world is None or world.leader
    here = run_dir.resolve()
    with tempfile.TemporaryDirectory(prefix="mrfnet-train-") as tmp:
        with reporting_no_room(tmp):  # this start's solver files (a solverstate's copy: tens of MB); TMPDIR moves it
            solver_path, state_path = _runtime_files(run_dir, options, restore, Path(tmp))
        job = SolveJob(solver_path=str(solver_path), log_path=str(here / CAFFE_LOG),
                       loss_schedule=schedule, edge_alpha_from=round(options.edge_alpha_at * solver_param.max_iter),
                       restore=str(state_path) if state_path else None,
                       weights=None if restore else options.weights, solver_count=options.solvers,
                       nccl_uid=plan["nccl_uid"], val_every=options.val_every,
                       val_lmdb=str(Path(options.data) / "val_lmdb"), val_limit=options.val_limit,
                       deploy_path=str(here / DEPLOY), best_path=str(here / SNAPSHOT_DIR / BEST_MODEL),
                       best_psnr=plan["best_psnr"], snapshot_dir=str(here / SNAPSHOT_DIR),
                       snapshot_every=solver_param.snapshot, validate_first=plan["validate_first"])
        if world is not None:  # only rank 0 writes the run folder; the others' glog stays on their host
            jobs = [replace(job, rank=world.rank, device=options.gpus[world.local_rank] if options.gpus else None,
                            log_path=job.log_path if leader else str(Path(tmp) / f"caffe-rank{world.rank}.log"))]
        else:
            jobs = [replace(job, rank=rank, device=options.gpus[rank] if options.gpus else None)
                    for rank in range(options.solvers)]
        where = f"GPUs {options.gpus}" if options.gpus else "the CPU"
        if leader:
            log.info("training %s from iteration %d to %d on %s%s", options.variant, start, solver_param.max_iter,
                     where, f", {world.size} MPI ranks" if world else "")
        return _supervise(run_dir, jobs, start, solver_param.max_iter, options.batch_size, bool(options.val_every),
                          options.keep_snapshots, agent=ranks.agent if ranks else None, leader=leader)


def _supervise(run_dir: Path, jobs: list[SolveJob], start: int, max_iter: int, batch_size: int,
               validate: bool, keep_snapshots: int | None = None, agent: AgentProcess | None = None,
               leader: bool = True) -> TrainResult:
    """Run the solvers (``agent``: this MPI rank's, already started) and follow them; only the ``leader``
    records progress and prunes snapshots."""
    processes: list[Any] = []
    connections: list[Any] = []
    log_path = Path(jobs[0].log_path)
    log_start = log_path.stat().st_size if log_path.is_file() else 0  # this start's lines follow
    if leader:
        _remove_partial_snapshots(run_dir)
    if agent is not None:
        agent.conn.send(("solve", jobs[0]))
        processes, connections = [agent], [agent.conn]
    context = multiprocessing.get_context("spawn")
    for job in jobs if agent is None else []:
        receiver, sender = context.Pipe(duplex=False)
        process = context.Process(target=solve, args=(job, sender), name=f"solver-rank{job.rank}")
        with child_environment(GLOG_minloglevel="0"):  # every glog line into caffe.log: read once, at import
            process.start()
        sender.close()
        processes.append(process)
        connections.append(receiver)

    stop_signals: list[int] = []

    def forward_signal(signum: int, _frame: Any) -> None:
        log.warning("signal %s: the solver snapshots, then stops", signal.Signals(signum).name)
        stop_signals.append(signum)
        for process in processes:
            if process.is_alive():
                process.terminate()  # SIGTERM: the child's handler snapshots and exits

    # SIGUSR1 is what a cluster sends ahead of its time limit (sbatch --signal=USR1@120), and what mpirun
    # forwards to every rank (SIGINT and SIGTERM it turns into SIGTERM, then SIGKILL 1 s later): all three
    # snapshot and stop, with or without mpirun
    previous = {s: signal.signal(s, forward_signal) for s in STOP_SIGNALS}
    progress = _ProgressLog(run_dir, start, max_iter, batch_size, validate) if leader else None
    keeper = SnapshotKeeper(run_dir, keep_snapshots if leader else None)
    began = time.monotonic()
    outcome: tuple[str, dict] | None = None
    try:
        open_connections = list(connections)
        while open_connections:
            for conn in wait(open_connections):
                try:
                    kind, info = conn.recv()
                except EOFError:
                    open_connections.remove(conn)
                    continue
                if kind == "progress" and progress is not None:
                    progress.update(info)
                    keeper.prune()
                elif kind == "validation" and progress is not None:
                    progress.fill_validation(info["iteration"], info["val"])
                elif kind in ("finished", "stopped", "nonfinite", "diskfull") and conn is connections[0]:
                    outcome = (kind, info)
                elif kind == "nonfinite":
                    outcome = outcome or (kind, info)
        for process in processes:
            process.join()
        keeper.prune()
    except BaseException:
        for process in processes:  # this process cannot go on recording (a full disk, say): they stop too
            if process.is_alive():
                process.terminate()
        for process in processes:
            process.join()
        raise
    finally:
        if progress is not None:
            progress.close()
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    seconds = time.monotonic() - began
    snapshot = latest_caffemodel(run_dir, finite_only=outcome is not None and outcome[0] == "nonfinite")
    if outcome is None and stop_signals and all(p.exitcode == -signal.SIGTERM for p in processes):
        # stopped before the solver could take over its signals (while it was still starting up)
        log.info("stopped before the first iteration; latest snapshot %s", snapshot)
        return TrainResult(status="stopped", iteration=start, snapshot=snapshot, seconds=seconds)
    if outcome is None:
        failure = glog_failure(_log_since(log_path, log_start))
        if leader and (refused := _refused_write(failure)) is not None:
            _remove_partial_snapshots(run_dir)
            raise DiskFull(errno.ENOSPC, f"{_room_report(refused)}; the latest whole snapshot is {snapshot}: make "
                                         "room and resume with --resume")
        codes = [p.exitcode for p in processes]
        raise CaffeError(f"the solver process died (exit codes {codes}); from {log_path}:\n{failure}")
    kind, info = outcome
    if kind == "diskfull":
        raise DiskFull(errno.ENOSPC, f"{info['message']} (iteration {info['iteration']}; latest snapshot {snapshot})")
    if kind == "nonfinite":
        raise TrainingError(f"the loss became non-finite at iteration {info['iteration']} ({info['losses']}); "
                            f"training stopped; last good snapshot: {snapshot or 'none yet'}. "
                            "Lower --base-lr or check the data.")
    log.log(logging.INFO if leader else logging.DEBUG, "%s at iteration %d after %.1f s; latest snapshot %s", kind,
            info["iteration"], seconds, snapshot)
    return TrainResult(status=kind, iteration=info["iteration"], snapshot=snapshot, seconds=seconds)


# how a write that Caffe could not finish ends its log (tools/caffe-patches/0006: io.cpp's checks)
REFUSED_WRITE = re.compile(r"cannot (?:open|write|reopen|flush|rename) (\S+?)(?: for writing| to disk| to .*)?$", re.M)


def _log_since(log_path: Path, offset: int) -> str:
    """The part of the run's caffe.log written since ``offset`` (an older start's failure is not this one's)."""
    if not log_path.is_file():
        return "(no log)"
    with log_path.open("rb") as file:
        file.seek(offset)
        return file.read().decode(errors="replace") or "(nothing logged)"


def _refused_write(failure: str) -> Path | None:
    """The file Caffe aborted on because it could not write it (a full disk, a quota), if that is how it died."""
    match = REFUSED_WRITE.search(failure)
    return Path(match.group(1)) if match else None


def _room_report(path: Path) -> str:
    """What Caffe could not write, and what the file system has free there."""
    return (f"Caffe could not write {path} ({format_bytes(free_bytes(path))} free there): the disk is full, or a "
            "quota or file-size limit refused the write")


def _remove_partial_snapshots(run_dir: Path) -> None:
    """Caffe's half-written snapshot files (``*.partial``, patch 0006) of a start that died writing them."""
    for partial in (run_dir / SNAPSHOT_DIR).glob("*.partial"):
        log.info("removing %s, left by a snapshot that was never finished", partial)
        partial.unlink(missing_ok=True)
