"""One MPI rank's solver process: started by its rank's `mrfnet train` (mrfnet.train.ranks), it is the process
that initialises MPI (importing mpi4py.MPI does), so the supervising parent never does and may start
processes freely. It answers the parent's collective requests (broadcast, allgather) during the run's
set-up, then solves (mrfnet.train.worker.solve) with :class:`MpiGroup` joining it to the other ranks.

Run as ``python -m mrfnet.train.rank_agent FD PARENT_PID``: FD is this end of a socket pair to the parent.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
from multiprocessing.connection import Connection
from typing import Any

import numpy as np
from mpi4py import MPI

from mrfnet.train.ranks import split_threads
from mrfnet.train.worker import solve

PR_SET_PDEATHSIG = 1  # linux/prctl.h


class MpiGroup:
    """What a solver needs of the other ranks (mrfnet.train.worker.Group), over MPI on the CPU.

    Gradients are summed with one allreduce over a flat buffer and divided by the world size, as Caffe's
    NCCL callback does on GPUs; each rank then applies the same update, so the weights stay identical.
    """

    def __init__(self, comm: Any) -> None:
        self.comm = comm
        self.size = comm.Get_size()
        self._buffer: np.ndarray | None = None

    def any(self, *flags: bool) -> tuple[bool, ...]:
        values = np.array(flags, dtype=np.int32)
        self.comm.Allreduce(MPI.IN_PLACE, values, op=MPI.MAX)
        return tuple(bool(v) for v in values)

    def allgather(self, value: Any) -> list[Any]:
        return self.comm.allgather(value)

    def barrier(self) -> None:
        self.comm.Barrier()

    def broadcast_parameters(self, blobs: list[Any]) -> None:
        """Rank 0's weights everywhere (Caffe seeds each rank's fillers with random_seed + rank)."""
        for blob in blobs:
            self.comm.Bcast(blob.data, root=0)

    def average_gradients(self, blobs: list[Any]) -> None:
        sizes = [blob.diff.size for blob in blobs]
        if self._buffer is None or self._buffer.size != sum(sizes):
            self._buffer = np.empty(sum(sizes), dtype=np.float32)
        flat, offset = self._buffer, 0
        for blob, size in zip(blobs, sizes, strict=True):
            flat[offset:offset + size] = blob.diff.ravel()
            offset += size
        self.comm.Allreduce(MPI.IN_PLACE, flat, op=MPI.SUM)
        flat *= np.float32(1.0 / self.size)
        offset = 0
        for blob, size in zip(blobs, sizes, strict=True):
            blob.diff[...] = flat[offset:offset + size].reshape(blob.diff.shape)
            offset += size


def _die_with_parent(parent_pid: int) -> None:
    """Be killed when the parent dies: a launcher that aborts the job kills the rank's own process (the
    parent), and a solver left blocked in a collective would otherwise wait forever."""
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent_pid:  # it died before prctl took effect
        os._exit(1)


def _world(comm: Any) -> dict[str, Any]:
    local = comm.Split_type(MPI.COMM_TYPE_SHARED)
    info = {"size": comm.Get_size(), "rank": comm.Get_rank(), "local_rank": local.Get_rank(),
            "local_size": local.Get_size(), "host": MPI.Get_processor_name()}
    local.Free()
    return info


def serve(conn: Connection) -> None:
    """Answer the parent's requests until it sends the job to solve (or closes)."""
    comm = MPI.COMM_WORLD
    world = _world(comm)
    split_threads(world["local_size"])  # before Caffe (and its BLAS) is loaded
    conn.send((world, comm.allgather(world)))
    while True:
        try:
            kind, value = conn.recv()
        except EOFError:
            return
        if kind == "bcast":
            conn.send(comm.bcast(value, root=0))
        elif kind == "allgather":
            conn.send(comm.allgather(value))
        elif kind == "solve":
            os.environ["GLOG_minloglevel"] = "0"  # every glog line into the log (glog reads it as Caffe loads)
            solve(value, conn, MpiGroup(comm))
            return
        elif kind == "close":
            return


def main() -> None:
    fd, parent_pid = int(sys.argv[1]), int(sys.argv[2])
    _die_with_parent(parent_pid)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides (it forwards stops as SIGTERM)
    conn = Connection(fd)
    try:
        serve(conn)
    finally:
        conn.close()


if __name__ == "__main__":
    main()
