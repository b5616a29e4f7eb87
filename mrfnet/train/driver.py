"""Training a run folder: what each start decides (the options, the snapshot to resume, NCCL's id), the
solver files of this start, and its solvers under a Supervisor (mrfnet.train.supervisor).

A new run folder is made by mrfnet.train.run_setup; its options are mrfnet.train.options'.
"""

from __future__ import annotations

import json
import logging
import tempfile
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from google.protobuf import text_format

from data_prep.atomic import reporting_no_room, write_json_atomic
from data_prep.records import check_pairs
from mrfnet.runtime.caffe_env import CaffeError, import_caffe
from mrfnet.runtime.errors import InvalidValue, MissingInput
from mrfnet.runtime.run_files import (
    BEST_MODEL,
    BEST_RECORD,
    CAFFE_LOG,
    DEPLOY,
    OPTIONS,
    SNAPSHOT_DIR,
    SOLVER,
    TRAIN_VAL,
    iteration_of,
    snapshot_files,
)
from mrfnet.train.loss_schedule import loss_schedule
from mrfnet.train.options import TrainOptions, load_options
from mrfnet.train.progress import recorded_rows
from mrfnet.train.ranks import Ranks, World
from mrfnet.train.run_setup import check_data, check_gpus, check_precision, check_ranks
from mrfnet.train.snapshots import learned_net, resumable_solverstate
from mrfnet.train.supervisor import Supervision, Supervisor, TrainResult
from mrfnet.train.worker import SolveJob

log = logging.getLogger(__name__)


NCCL_UID_BYTES = 128  # NCCL_UNIQUE_ID_BYTES


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


@dataclass(frozen=True)
class StartPlan:
    """What rank 0 decides at each start and every solver uses (picklable: under MPI it is broadcast)."""

    options: TrainOptions
    restore: Path | None  # the solverstate to resume from
    nccl_uid: bytes | None  # several GPUs: NCCL's bootstrap id
    best_psnr: float | None  # the run's best val PSNR so far
    validate_first: bool  # the restored iteration's validation was cut short by a stop


def _plan(run_dir: Path, resume: bool, data: Path | None, worlds: list[World] | None) -> StartPlan:
    """What one process decides at each start (rank 0 under MPI) and every solver uses: the options, the
    solverstate to resume, NCCL's id and the best val PSNR so far."""
    options = load_options(run_dir)
    if data is not None:
        check_data(Path(data), options.crop_size)  # before options.json points at it
        options = TrainOptions(**{**asdict(options), "data": str(Path(data).resolve())})
        write_json_atomic(run_dir / OPTIONS, asdict(options))
    world_size = len(worlds) if worlds else 1
    if options.ranks != world_size:  # the batch per solver is written into train_val.prototxt
        how = f"mpirun -np {options.ranks} mrfnet train ..." if options.ranks > 1 else "mrfnet train without mpirun"
        raise InvalidValue(f"{run_dir} was made for {options.ranks} MPI rank(s), not {world_size}: "
                           f"resume it with {how}")
    if worlds:
        check_ranks(options, worlds)
    check_gpus(options.gpus)
    check_precision(options.precision, options.gpus)
    caffe = import_caffe()
    if not (run_dir / SOLVER).is_file():
        raise MissingInput(f"{run_dir} was not fully created (no solver.prototxt): remove it and start the run "
                                "again without --resume")
    recorded = recorded_rows(run_dir)
    restore = resumable_solverstate(run_dir, recorded=set(recorded) if recorded is not None else None) \
        if resume else None
    if resume and restore is None:
        if snapshot_files(run_dir, ".caffemodel"):  # trained, but its solverstates are gone
            raise MissingInput(f"{run_dir / SNAPSHOT_DIR} holds caffemodels but no solverstate to resume from "
                                    "(deleted?): a resume would start again at iteration 0 and overwrite them. "
                                    "To start over, move the snapshots folder away (or train into a new --run-dir)")
        log.warning("no solverstate in %s yet: starting from iteration 0", run_dir / SNAPSHOT_DIR)
    # several GPUs: one process owns NCCL's bootstrap root and hands its id to all, as in python/train.py
    nccl_uid = caffe.NCCL.new_uid() if options.gpus and options.solvers > 1 else None
    if nccl_uid is not None and len(nccl_uid) != NCCL_UID_BYTES:
        raise CaffeError(f"caffe.NCCL.new_uid() returned {len(nccl_uid)} bytes, not {NCCL_UID_BYTES}: this Caffe lacks "
                         "tools/caffe-patches/gpu/0003-pycaffe-nccl-uid-all-bytes.patch (rebuild it)")
    best = json.loads((run_dir / BEST_RECORD).read_text()) if (restore and (run_dir / BEST_RECORD).is_file()) else None
    return StartPlan(options, restore, nccl_uid, best["val_psnr"] if best else None,
                     _validation_cut_short(run_dir, options, restore, recorded))


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
    options = plan.options
    import_caffe()
    from caffe.proto import caffe_pb2

    solver_param = text_format.Parse((run_dir / SOLVER).read_text(), caffe_pb2.SolverParameter())
    restore = plan.restore
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
                       nccl_uid=plan.nccl_uid, val_every=options.val_every,
                       val_lmdb=str(Path(options.data) / "val_lmdb"), val_limit=options.val_limit,
                       deploy_path=str(here / DEPLOY), best_path=str(here / SNAPSHOT_DIR / BEST_MODEL),
                       best_psnr=plan.best_psnr, snapshot_dir=str(here / SNAPSHOT_DIR),
                       snapshot_every=solver_param.snapshot, validate_first=plan.validate_first)
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
        supervision = Supervision(run_dir, jobs, start, solver_param.max_iter, options.batch_size,
                                  bool(options.val_every), options.keep_snapshots, leader=leader)
        return Supervisor(supervision, agent=ranks.agent if ranks else None).run()
