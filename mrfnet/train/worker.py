"""The training child process: one per GPU, or one on the CPU (one per MPI rank under mpirun).

It is the python/train.py pattern (one process per GPU joined by caffe.NCCL), with the solver type
honoured (caffe.get_solver, not SGDSolver): it builds the solver, restores or initialises it, joins
it to the other solvers, and runs the training loop (mrfnet.train.loop) with the run's hooks
(mrfnet.train.hooks: loss schedule, edge branch, validation, progress, non-finite guard, snapshots,
stop signals). Messages to the parent go through a Pipe. Under MPI (mrfnet.train.rank_agent) a
:class:`Group` joins the ranks: they agree on stopping, and on the CPU they average gradients through
it (on GPUs NCCL does).

The loop takes the snapshots itself (Caffe's own, inside ``step``, are switched off by the runtime
solver file): each iteration's progress row, validation included, goes to the parent before that
iteration's snapshot is written, so a snapshot never exists without its row (a resume starts from
the newest snapshot whose row was recorded), and the free space is checked before each one.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from google.protobuf import text_format

from mrfnet.runtime.caffe_env import import_caffe
from mrfnet.runtime.device import set_mode
from mrfnet.train import hooks, loop
from mrfnet.train.snapshots import snapshot_bytes
from mrfnet.train.validation import Validator, save_best
from netgen.layers import scale_loss_values, set_scale_loss_weights
from netgen.layers.edge_state import set_edge_alpha, train_discriminators
from netgen.names import EDGE_LOSS_TOPS


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


class Group(loop.Group, Protocol):
    """What a CPU solver also needs of the other MPI ranks: the same start, and averaged gradients."""

    def broadcast_parameters(self, blobs: list[Any]) -> None: ...

    def average_gradients(self, blobs: list[Any]) -> None: ...


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
    """Run the solver to max_iter, or until a stop signal (on any rank), a non-finite loss or a full disk;
    report each step and the outcome to ``conn``."""
    log_fd = os.open(job.log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(log_fd, 2)  # Caffe's own log (glog on stderr) goes to the run folder
    stop = hooks.StopRequest()
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
    training = loop.TrainLoop(solver, _hooks(caffe, solver, job, stop, conn), param.max_iter, group=group,
                              leader=job.rank == 0)
    conn.send(("start", {"iteration": solver.iter, "max_iter": param.max_iter}))
    outcome = training.run()
    conn.send((outcome.kind, {**outcome.info, "signal": stop.signal}))


def _hooks(caffe: Any, solver: Any, job: SolveJob, stop: hooks.StopRequest, conn: Any) -> list[loop.Hook]:
    """The run's hooks, in the order the loop calls them."""
    net = solver.net
    room = hooks.Room(snapshot_bytes(net))
    edge_tops = [top for top in EDGE_LOSS_TOPS if top in net.blobs]  # none without --edge
    run: list[loop.Hook] = [
        hooks.StopHook(stop, room),
        hooks.LossScheduleHook(job.loss_schedule, lambda weights: set_scale_loss_weights(net, weights)),
        hooks.EdgeHook(job.edge_alpha_from, lambda alpha: set_edge_alpha(net, alpha),
                       lambda: train_discriminators(net)),
        hooks.LossesHook(lambda: {**scale_loss_values(net), **_edge_loss_values(net, edge_tops)}),
    ]
    if job.rank == 0 and job.val_every:
        validator = Validator(caffe, job.deploy_path, net, job.val_lmdb, limit=job.val_limit)
        run.append(hooks.ValidationHook(validator, job.val_every, Path(job.best_path), job.best_psnr, stop, room,
                                        lambda path: save_best(net, path), first=job.validate_first, send=conn.send))
    return [*run,
            hooks.ProgressHook(conn.send, lambda: float(solver.lr)),
            hooks.NonFiniteHook(),
            hooks.SnapshotHook(Path(job.snapshot_dir or Path(job.solver_path).parent), job.snapshot_every, room,
                               solver.snapshot)]


def _edge_loss_values(net: Any, tops: list[str]) -> dict[str, float]:
    """The edge branch's loss tops (weighted, as Caffe sums them)."""
    return {top: net.blobs[top].data.item() * net.blobs[top].diff.item() for top in tops}


def _solver_parameter(path: str) -> Any:
    from caffe.proto import caffe_pb2

    with open(path) as file:
        return text_format.Parse(file.read(), caffe_pb2.SolverParameter())
