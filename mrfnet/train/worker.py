"""The solving loop that runs in each training child process (one per GPU, or one on the CPU).

It is the python/train.py pattern (one process per GPU joined by caffe.NCCL), with the solver
type honoured (caffe.get_solver, not SGDSolver), a loop of single steps so the parent sees
progress, the loss-weight schedule applied between steps, a NaN/inf guard, and SIGINT/SIGTERM/SIGUSR1
turned into a snapshot before exiting. Messages to the parent go through a Pipe. Under MPI
(mrfnet.train.rank_agent) a :class:`Group` joins the ranks: they agree each iteration whether to stop,
and on the CPU they average gradients through it (on GPUs NCCL does).

The loop takes the snapshots itself (Caffe's own, inside ``step``, are switched off by the runtime
solver file): each iteration's progress row, validation included, goes to the parent before that
iteration's snapshot is written, so a snapshot never exists without its row (a resume starts from
the newest snapshot whose row was recorded), and the free space is checked before each one.
"""

from __future__ import annotations

import math
import os
import signal
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from google.protobuf import text_format

from mrfnet.runtime.caffe_env import import_caffe
from mrfnet.runtime.device import set_mode
from mrfnet.train.loss_schedule import weights_at
from mrfnet.train.snapshots import snapshot_bytes, snapshot_shortfall
from mrfnet.train.validation import Validator, is_better, save_best
from netgen.layers import scale_loss_values, set_scale_loss_weights
from netgen.layers.edge_state import set_edge_alpha, train_discriminators
from netgen.names import EDGE_LOSS_TOPS

PROGRESS_EVERY = 1  # iterations between progress messages to the parent
# each makes the solver snapshot and stop (`mrfnet train` exits 130); SIGUSR1 is a cluster's early warning
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1)


@dataclass
class SolveJob:
    """What one training child needs; picklable, built by mrfnet.train."""

    solver_path: str
    log_path: str
    loss_schedule: list[tuple[int, list[float]]]  # (first iteration, per-scale weights), sorted
    edge_alpha_from: int = 0  # iteration from which the edge branch reads refined instead of blurred input
    restore: str | None = None
    weights: str | None = None
    device: int | None = None  # the GPU of this solver; None: the CPU
    solver_count: int = 1  # solvers in the run (GPUs of one host, or MPI ranks); each has batch / count
    rank: int = 0
    nccl_uid: bytes | None = None  # several GPUs: NCCL's 128-byte id, from rank 0
    val_every: int | None = None  # validate on val_lmdb every this many iterations (rank 0 only)
    val_lmdb: str | None = None
    val_limit: int | None = None
    deploy_path: str | None = None
    best_path: str | None = None  # where the weights of the best val PSNR so far are kept
    best_psnr: float | None = None  # the best val PSNR of the run so far (a resumed run carries it on)
    snapshot_dir: str | None = None  # where the snapshots go (their free space is checked before each)
    snapshot_every: int = 0  # iterations between snapshots (the run's solver `snapshot`); 0: only at the end
    validate_first: bool = False  # the restored iteration's validation was cut short by a stop: score it first


class Group(Protocol):
    """The other solvers of an MPI run (mrfnet.train.rank_agent.MpiGroup)."""

    def any(self, *flags: bool) -> tuple[bool, ...]:
        """Each flag or-ed over the ranks (every rank calls it at the same point)."""

    def allgather(self, value: Any) -> list[Any]: ...

    def barrier(self) -> None: ...

    def broadcast_parameters(self, blobs: list[Any]) -> None: ...

    def average_gradients(self, blobs: list[Any]) -> None: ...


class _Alone:
    """The Group of a solver that has none (one process, or one host's GPUs joined by NCCL alone)."""

    def any(self, *flags: bool) -> tuple[bool, ...]:
        return flags

    def allgather(self, value: Any) -> list[Any]:
        return [value]

    def barrier(self) -> None:
        pass


class _StopRequest:
    def __init__(self) -> None:
        self.signal: int | None = None
        for signum in STOP_SIGNALS:  # also when one reaches the solver itself (a cluster signalling every process)
            signal.signal(signum, self._set)

    def _set(self, signum: int, _frame: Any) -> None:
        self.signal = signum


def _data_layer_index(net: Any) -> int:
    return next(i for i, layer in enumerate(net.layers) if layer.type == "Data")


def _fast_forward_data(net: Any, iterations: int) -> None:
    """Consume the batches an interrupted run already used, so a resumed run sees the same data.

    Caffe's solverstate holds weights, Adam moments and the iteration, but not the Data layer's
    cursor or its crop/mirror RNG; both are seeded from random_seed at net set-up, so running
    only the Data layer once per past iteration puts them where the uninterrupted run had them.
    """
    end = net._layer_names[_data_layer_index(net)]
    for _ in range(iterations):
        net.forward(end=end)


def _setup_caffe(caffe: Any, job: SolveJob) -> None:
    set_mode(caffe, job.device)
    if job.solver_count > 1:  # Caffe's Data layer keeps the records whose index % count == rank
        caffe.set_solver_count(job.solver_count)
        caffe.set_solver_rank(job.rank)
        caffe.set_multiprocess(True)


def _learnable_blobs(net: Any) -> list[Any]:
    """Each parameter blob once (a shared parameter's layers hold views of one blob)."""
    seen, blobs = set(), []
    for layer_blobs in net.params.values():
        for blob in layer_blobs:
            address = blob.diff.__array_interface__["data"][0]
            if address not in seen:
                seen.add(address)
                blobs.append(blob)
    return blobs


def _join(caffe: Any, solver: Any, job: SolveJob, param: Any, group: Group | None) -> None:
    """Tie this solver to the others: NCCL on GPUs (python/train.py's pattern), else the MPI group."""
    if job.solver_count == 1:
        return
    if job.device is not None:
        nccl = caffe.NCCL(solver, job.nccl_uid)
        nccl.bcast()
        solver.add_callback(nccl)
        if param.layer_wise_reduce:
            solver.net.after_backward(nccl)
        return
    if group is None:
        raise ValueError("several CPU solvers need an MPI group to average their gradients")
    blobs = _learnable_blobs(solver.net)
    group.broadcast_parameters(blobs)
    solver.add_callback(lambda: None, lambda: group.average_gradients(blobs))


def solve(job: SolveJob, conn: Any, group: Group | None = None) -> None:
    """Run the solver to max_iter, or until a stop signal (on any rank) or a non-finite loss; report to ``conn``."""
    log_fd = os.open(job.log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(log_fd, 2)  # Caffe's own log (glog on stderr) goes to the run folder
    stop = _StopRequest()
    caffe = import_caffe()

    _setup_caffe(caffe, job)
    param = _solver_parameter(job.solver_path)  # pycaffe's solver.param exposes only a few fields
    solver = caffe.get_solver(job.solver_path)
    if job.restore:
        solver.restore(job.restore)
        _fast_forward_data(solver.net, solver.iter)
    elif job.weights:
        solver.net.copy_from(job.weights)
    _join(caffe, solver, job, param, group)
    group = group or _Alone()
    leader = job.rank == 0
    max_iter = param.max_iter
    validator = None
    if leader and job.val_every:
        validator = Validator(caffe, job.deploy_path, solver.net, job.val_lmdb, limit=job.val_limit)
    best_psnr = job.best_psnr
    needed = snapshot_bytes(solver.net)
    out_of_room = False  # a write was refused for want of space (the parent was told): stop without a snapshot

    def has_room(folder: str | Path | None) -> bool:
        nonlocal out_of_room
        problem = snapshot_shortfall(Path(folder), needed) if folder is not None and leader else None
        if problem is not None:
            conn.send(("diskfull", {"iteration": solver.iter, "message": problem}))
            out_of_room = True
        return problem is None

    def validate() -> dict[str, Any] | None:
        """Score the weights on the val LMDB (None when a stop cut it short); keep them if the best."""
        nonlocal best_psnr
        score = validator.score(stop=lambda: stop.signal is not None)
        if score is None:
            return None
        val = {**score.columns(), "blur_psnr": score.blur_psnr, "blur_ssim": score.blur_ssim,
               "images": score.images, "best": is_better(score.psnr, best_psnr)}
        if val["best"]:
            if not has_room(Path(job.best_path).parent):
                return None
            best_psnr = score.psnr
            save_best(solver.net, Path(job.best_path))
        return val

    def snapshot() -> bool:
        """Rank 0 snapshots if the disk has room; every rank calls it at the same iteration, and none
        returns before rank 0's snapshot is whole (an MPI job ends when any rank exits)."""
        nonlocal out_of_room
        if leader and not out_of_room and has_room(job.snapshot_dir):
            solver.snapshot()
        out_of_room = group.any(out_of_room)[0]
        group.barrier()
        return not out_of_room

    conn.send(("start", {"iteration": solver.iter, "max_iter": max_iter}))
    if validator is not None and job.validate_first and (val := validate()) is not None:
        conn.send(("validation", {"iteration": solver.iter, "val": val}))
    weights = edge_alpha = None
    edge_tops = [top for top in EDGE_LOSS_TOPS if top in solver.net.blobs]  # none without --edge
    snapshot_at = solver.iter  # the iteration of the newest snapshot (the restored one counts)
    while solver.iter < max_iter:
        stopping, out_of_room = group.any(stop.signal is not None, out_of_room)
        if stopping or out_of_room:
            break
        wanted = weights_at(job.loss_schedule, solver.iter)
        if wanted != weights:
            set_scale_loss_weights(solver.net, wanted)
            weights = wanted
        alpha = 1.0 if solver.iter >= job.edge_alpha_from else 0.0
        if alpha != edge_alpha:
            set_edge_alpha(solver.net, alpha)
            edge_alpha = alpha
        solver.step(1)
        train_discriminators(solver.net)  # the edge GAN's alternating step; nothing without --edge
        losses = {**scale_loss_values(solver.net), **_edge_loss_values(solver.net, edge_tops)}
        finite = all(math.isfinite(v) for v in losses.values())
        val = None
        if finite and validator is not None and (solver.iter % job.val_every == 0 or solver.iter == max_iter):
            val = validate()
        if finite and leader and (solver.iter % PROGRESS_EVERY == 0 or val is not None):
            info = {"iteration": solver.iter, "losses": losses, "weights": weights,
                    "lr": _learning_rate(param, solver.iter)}
            if val is not None:
                info["val"] = val
            conn.send(("progress", info))  # before the ranks meet: a rank dying now cannot cost this row
        if group.any(not finite)[0]:
            bad = next(ls for ls in group.allgather(losses) if not all(math.isfinite(v) for v in ls.values()))
            conn.send(("nonfinite", {"iteration": solver.iter, "losses": bad}))
            return  # no snapshot: the weights are already poisoned; the last periodic one stands
        if job.snapshot_every and solver.iter % job.snapshot_every == 0:
            if not snapshot():
                return  # the parent was told
            snapshot_at = solver.iter
    if snapshot_at != solver.iter:  # the snapshot of a stop, or of the end (every rank: they agree on the room)
        snapshot()
    if out_of_room:
        return  # the parent was told; the newest snapshot written stands
    reason = "stopped" if solver.iter < max_iter else "finished"
    conn.send((reason, {"iteration": solver.iter, "signal": stop.signal}))


def _edge_loss_values(net: Any, tops: list[str]) -> dict[str, float]:
    """The edge branch's loss tops (weighted, as Caffe sums them)."""
    return {top: net.blobs[top].data.item() * net.blobs[top].diff.item() for top in tops}


def _solver_parameter(path: str) -> Any:
    from caffe.proto import caffe_pb2

    with open(path) as file:
        return text_format.Parse(file.read(), caffe_pb2.SolverParameter())


def _learning_rate(param: Any, iteration: int) -> float:
    """The `step` policy's rate used by the step just taken (pycaffe does not expose Caffe's)."""
    if param.lr_policy != "step":
        return param.base_lr
    return param.base_lr * param.gamma ** ((iteration - 1) // param.stepsize)
