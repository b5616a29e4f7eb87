"""`mrfnet train` under MPI (`mpirun -np N mrfnet train ...`, `srun mrfnet train ...`): one solver per rank.

Each rank's `mrfnet train` stays the supervising parent of one solver child, as in a single-process run;
that child (mrfnet.train.rank_agent) is the rank's MPI process. The parent never initialises MPI: it
reads only whether a launcher started it (its environment), and uses MPI through its child, which
answers broadcasts and allgathers over a pipe while the run is set up, then solves. Why this split:
docs/architecture.md, "Training on several processes and hosts (issue 16)".
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

from mrfnet.runtime.caffe_env import CaffeError
from mrfnet.runtime.errors import InvalidValue
from mrfnet.runtime.threads import THREAD_VARIABLES

log = logging.getLogger(__name__)

# What MPI launchers put in each rank's environment: Open MPI's mpirun, MPICH/Intel MPI's Hydra (and
# SLURM's srun --mpi=pmi2), PMIx launchers (srun --mpi=pmix, prterun). The size itself comes from MPI.
LAUNCH_VARIABLES = ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK")


class RankRefused(RuntimeError):
    """Rank 0 refused the run (its own error says why); the other ranks stop quietly."""


def launched_by_mpi() -> bool:
    """Whether an MPI launcher started this process (without initialising MPI here)."""
    return any(name in os.environ for name in LAUNCH_VARIABLES)


def split_threads(ranks_on_host: int) -> dict[str, str]:
    """Share this host's cores among its ranks: BLAS and OpenMP threads = cores / ranks (at least 1, at most
    the cores this process may run on), for each variable the user did not set; the values set."""
    cores = os.cpu_count() or 1
    allowed = len(os.sched_getaffinity(0))  # mpirun may bind each rank to a core
    threads = str(max(1, min(allowed, cores // max(1, ranks_on_host))))
    chosen = {name: threads for name in THREAD_VARIABLES if name not in os.environ}
    os.environ.update(chosen)
    return chosen


@dataclass(frozen=True)
class World:
    size: int
    rank: int
    local_rank: int
    local_size: int
    host: str

    @property
    def leader(self) -> bool:
        return self.rank == 0


class AgentProcess:
    """The rank's solver child (a subprocess running mrfnet.train.rank_agent), with the parts of
    multiprocessing.Process's interface the driver's supervision uses."""

    def __init__(self) -> None:
        ours, theirs = socket.socketpair()
        self._popen = subprocess.Popen([sys.executable, "-m", "mrfnet.train.rank_agent", str(theirs.fileno()),
                                        str(os.getpid())], pass_fds=[theirs.fileno()])
        theirs.close()
        self.conn = Connection(ours.detach())
        self.name = "rank-agent"

    def is_alive(self) -> bool:
        return self._popen.poll() is None

    def terminate(self) -> None:
        if self.is_alive():
            self._popen.send_signal(signal.SIGTERM)

    def join(self, timeout: float | None = None) -> None:
        try:
            self._popen.wait(timeout)
        except subprocess.TimeoutExpired:
            pass

    @property
    def exitcode(self) -> int | None:
        return self._popen.poll()


class Ranks:
    """This rank's place in the MPI world and its solver child, through which the parent speaks MPI."""

    def __init__(self) -> None:
        self.agent = AgentProcess()
        try:
            info, everyone = self.agent.conn.recv()
        except EOFError as exc:
            self.agent.join()
            raise InvalidValue(f"the MPI rank process failed to start (exit code {self.agent.exitcode}; its error is "
                             "above): is mpi4py installed (pip install -e .[mpi]) and built for this MPI?") from exc
        self.world = World(**info)
        self.worlds = [World(**w) for w in everyone]  # every rank's, in rank order
        log.debug("rank %d of %d (local %d of %d on %s)", self.world.rank, self.world.size, self.world.local_rank,
                  self.world.local_size, self.world.host)

    def _ask(self, kind: str, value: Any) -> Any:
        self.agent.conn.send((kind, value))
        try:
            return self.agent.conn.recv()
        except EOFError as exc:
            raise CaffeError(f"the MPI rank process died while the run was set up (exit code "
                             f"{self.agent.exitcode})") from exc

    def bcast(self, value: Any = None) -> Any:
        """Rank 0's ``value`` on every rank."""
        return self._ask("bcast", value)

    def allgather(self, value: Any) -> list[Any]:
        return self._ask("allgather", value)

    def agree(self, lead: Callable[[], Any]) -> Any:
        """Rank 0 runs ``lead`` and every rank gets its result; if it raises, rank 0 re-raises it and the others
        raise :class:`RankRefused` (so the reason is said once, by rank 0)."""
        if not self.world.leader:
            outcome = self.bcast()
            if outcome[0] == "error":
                raise RankRefused(outcome[1])
            return outcome[1]
        try:
            value = lead()
        except BaseException as exc:
            self.bcast(("error", f"{type(exc).__name__}: {exc}"))
            raise
        self.bcast(("ok", value))
        return value

    def close(self) -> None:
        """Let the child finish MPI (every rank must) and wait for it."""
        if self.agent.is_alive():
            try:
                self.agent.conn.send(("close", None))
            except OSError:
                pass
        self.agent.join()
        self.agent.conn.close()
