"""The supervising parent of a training run: it starts the solver children, forwards stop signals to them,
records what they report (progress.csv, best.json, the progress bar), prunes snapshots, and turns how
they ended into a result or one clear error.

A child that dies without reporting (a Caffe abort) is diagnosed from the part of caffe.log written
since this start, never an older start's failure; a snapshot Caffe could not write becomes the full
disk it was, with its half-written file removed.
"""

from __future__ import annotations

import errno
import logging
import multiprocessing
import re
import signal
import time
from dataclasses import dataclass
from multiprocessing.connection import wait
from pathlib import Path
from typing import Any

from data_prep.atomic import DiskFull, format_bytes, free_bytes
from mrfnet.infer.model_source import latest_caffemodel
from mrfnet.runtime.caffe_env import CaffeError, child_environment, glog_failure
from mrfnet.runtime.run_files import SNAPSHOT_DIR
from mrfnet.train.hooks import STOP_SIGNALS
from mrfnet.train.progress import ProgressLog
from mrfnet.train.ranks import AgentProcess
from mrfnet.train.snapshots import SnapshotKeeper, TrainingError
from mrfnet.train.worker import SolveJob, solve

log = logging.getLogger(__name__)

# how a write that Caffe could not finish ends its log (tools/caffe-patches/0006: io.cpp's checks)
REFUSED_WRITE = re.compile(r"cannot (?:open|write|reopen|flush|rename) (\S+?)(?: for writing| to disk| to .*)?$", re.M)
OUTCOMES = ("finished", "stopped", "nonfinite", "diskfull")  # what a solver's last message says


@dataclass
class TrainResult:
    status: str  # "finished" or "stopped"
    iteration: int
    snapshot: Path | None
    seconds: float


@dataclass
class Supervision:
    """What the parent follows: the run folder, its solvers' jobs, and what it records (``leader``: rank 0)."""

    run_dir: Path
    jobs: list[SolveJob]
    start: int
    max_iter: int
    batch_size: int
    validate: bool
    keep_snapshots: int | None = None
    leader: bool = True


class Supervisor:
    """Runs the solvers of one start (``agent``: this MPI rank's, already started) and follows them."""

    def __init__(self, plan: Supervision, agent: AgentProcess | None = None) -> None:
        self.plan, self.agent = plan, agent
        self.processes: list[Any] = []
        self.connections: list[Any] = []
        self.stop_signals: list[int] = []
        self.outcome: tuple[str, dict[str, Any]] | None = None
        self.log_path = Path(plan.jobs[0].log_path)
        self.log_start = self.log_path.stat().st_size if self.log_path.is_file() else 0  # this start's lines follow

    def run(self) -> TrainResult:
        if self.plan.leader:
            remove_partial_snapshots(self.plan.run_dir)
        self._start_solvers()
        # SIGUSR1 is what a cluster sends ahead of its time limit (sbatch --signal=USR1@120), and what mpirun
        # forwards to every rank (SIGINT and SIGTERM it turns into SIGTERM, then SIGKILL 1 s later): all three
        # snapshot and stop, with or without mpirun
        previous = {signum: signal.signal(signum, self._forward_signal) for signum in STOP_SIGNALS}
        began = time.monotonic()
        try:
            self._follow()
        except BaseException:
            for process in self.processes:  # this process cannot go on recording (a full disk, say): they stop too
                if process.is_alive():
                    process.terminate()
            for process in self.processes:
                process.join()
            raise
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)
        return self._result(time.monotonic() - began)

    def _start_solvers(self) -> None:
        if self.agent is not None:
            self.agent.conn.send(("solve", self.plan.jobs[0]))
            self.processes, self.connections = [self.agent], [self.agent.conn]
            return
        context = multiprocessing.get_context("spawn")
        for job in self.plan.jobs:
            receiver, sender = context.Pipe(duplex=False)
            process = context.Process(target=solve, args=(job, sender), name=f"solver-rank{job.rank}")
            with child_environment(GLOG_minloglevel="0"):  # every glog line into caffe.log: read once, at import
                process.start()
            sender.close()
            self.processes.append(process)
            self.connections.append(receiver)

    def _forward_signal(self, signum: int, _frame: Any) -> None:
        log.warning("signal %s: the solver snapshots, then stops", signal.Signals(signum).name)
        self.stop_signals.append(signum)
        for process in self.processes:
            if process.is_alive():
                process.terminate()  # SIGTERM: the child's handler snapshots and exits

    def _follow(self) -> None:
        """Record each message until every solver has closed its end; then join them."""
        plan = self.plan
        progress = ProgressLog(plan.run_dir, plan.start, plan.max_iter, plan.batch_size, plan.validate) \
            if plan.leader else None
        keeper = SnapshotKeeper(plan.run_dir, plan.keep_snapshots if plan.leader else None)
        try:
            open_connections = list(self.connections)
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
                    elif kind in OUTCOMES and conn is self.connections[0]:
                        self.outcome = (kind, info)
                    elif kind == "nonfinite":
                        self.outcome = self.outcome or (kind, info)
            for process in self.processes:
                process.join()
            keeper.prune()
        finally:
            if progress is not None:
                progress.close()

    def _result(self, seconds: float) -> TrainResult:
        """The result of a finished or stopped run; an error saying why for any other end."""
        plan, outcome = self.plan, self.outcome
        snapshot = latest_caffemodel(plan.run_dir, finite_only=outcome is not None and outcome[0] == "nonfinite")
        if outcome is None and self.stop_signals and all(p.exitcode == -signal.SIGTERM for p in self.processes):
            # stopped before the solver could take over its signals (while it was still starting up)
            log.info("stopped before the first iteration; latest snapshot %s", snapshot)
            return TrainResult(status="stopped", iteration=plan.start, snapshot=snapshot, seconds=seconds)
        if outcome is None:
            failure = glog_failure(self._log_of_this_start())
            if plan.leader and (refused := _refused_write(failure)) is not None:
                remove_partial_snapshots(plan.run_dir)
                raise DiskFull(errno.ENOSPC, f"{_room_report(refused)}; the latest whole snapshot is {snapshot}: "
                                             "make room and resume with --resume")
            codes = [p.exitcode for p in self.processes]
            raise CaffeError(f"the solver process died (exit codes {codes}); from {self.log_path}:\n{failure}")
        kind, info = outcome
        if kind == "diskfull":
            raise DiskFull(errno.ENOSPC, f"{info['message']} (iteration {info['iteration']}; latest snapshot "
                                         f"{snapshot})")
        if kind == "nonfinite":
            raise TrainingError(f"the loss became non-finite at iteration {info['iteration']} ({info['losses']}); "
                                f"training stopped; last good snapshot: {snapshot or 'none yet'}. "
                                "Lower --base-lr or check the data.")
        log.log(logging.INFO if plan.leader else logging.DEBUG, "%s at iteration %d after %.1f s; latest snapshot %s",
                kind, info["iteration"], seconds, snapshot)
        return TrainResult(status=kind, iteration=info["iteration"], snapshot=snapshot, seconds=seconds)

    def _log_of_this_start(self) -> str:
        """The part of the run's caffe.log written since this start (an older start's failure is not this one's)."""
        if not self.log_path.is_file():
            return "(no log)"
        with self.log_path.open("rb") as file:
            file.seek(self.log_start)
            return file.read().decode(errors="replace") or "(nothing logged)"


def _refused_write(failure: str) -> Path | None:
    """The file Caffe aborted on because it could not write it (a full disk, a quota), if that is how it died."""
    match = REFUSED_WRITE.search(failure)
    return Path(match.group(1)) if match else None


def _room_report(path: Path) -> str:
    """What Caffe could not write, and what the file system has free there."""
    return (f"Caffe could not write {path} ({format_bytes(free_bytes(path))} free there): the disk is full, or a "
            "quota or file-size limit refused the write")


def remove_partial_snapshots(run_dir: Path) -> None:
    """Caffe's half-written snapshot files (``*.partial``, patch 0006) of a start that died writing them."""
    for partial in (run_dir / SNAPSHOT_DIR).glob("*.partial"):
        log.info("removing %s, left by a snapshot that was never finished", partial)
        partial.unlink(missing_ok=True)
