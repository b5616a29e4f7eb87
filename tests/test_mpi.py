"""`mpirun -np 2 mrfnet train` on this machine (loopback, CPU Caffe): the same weights as one process with the
whole batch, the LMDB sharded by rank, a stop or a killed rank handled, bad launches refused."""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from mrfnet.train.driver import train
from mrfnet.train.options import TrainOptions
from mrfnet.train.run_setup import prepare_run
from mrfnet.train.snapshots import resumable_solverstate
from tests.scoring_helpers import make_pair_lmdb

SIDE = 16  # records as large as the crop, and left-right symmetric: Caffe's random crop and mirror change nothing
MPIRUN = shutil.which("mpirun")
pytestmark = [pytest.mark.skipif(MPIRUN is None or not shutil.which("ompi_info"),
                                 reason="Open MPI's mpirun is missing (bash tools/bootstrap.sh test installs it)"),
              pytest.mark.slow]  # mpirun starts and training runs: minutes on 2 cores


def _symmetric_pairs(count: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(seed)
    pairs = []
    for _ in range(count):
        half = rng.integers(0, 256, (4, 2, 3), dtype=np.uint8)
        sharp = cv2.resize(np.concatenate([half, half[:, ::-1]], axis=1), (SIDE, SIDE),
                           interpolation=cv2.INTER_NEAREST)
        blur = cv2.blur(sharp, (5, 5), borderType=cv2.BORDER_REPLICATE)
        assert np.array_equal(sharp, sharp[:, ::-1]) and np.array_equal(blur, blur[:, ::-1])
        pairs.append((blur, sharp))
    return pairs


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("mpi-data")
    make_pair_lmdb(root / "train_lmdb", _symmetric_pairs(4, seed=0))
    return root


def _env() -> dict[str, str]:
    env = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
               OMPI_MCA_btl_vader_single_copy_mechanism="none")  # containers often forbid cross-memory attach
    env["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).resolve().parents[1]), env.get("PYTHONPATH", "")])
    return env


def _mpirun(ranks: int, *args: str) -> list[str]:
    return [MPIRUN, "-np", str(ranks), "--oversubscribe", sys.executable, *args]


def _train_command(run_dir: Path, dataset: Path, *extra: str) -> list[str]:
    return ["-m", "mrfnet.cli", "train", "--run-dir", str(run_dir), "--data", str(dataset), "--variant",
            "lwrefinenet", "--crop-size", str(SIDE), "--loss-schedule", "uniform", "--base-lr", "1e-3", *extra]


def _run(command: list[str], timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run(command, env=_env(), capture_output=True, text=True, timeout=timeout, check=False)


def _flat(caffemodel: Path) -> np.ndarray:
    """Every weight of a caffemodel, in one vector."""
    from caffe.proto import caffe_pb2

    net = caffe_pb2.NetParameter()
    net.ParseFromString(caffemodel.read_bytes())
    return np.concatenate([np.array(blob.data, dtype=np.float64) for layer in net.layer for blob in layer.blobs])


def _first_moments(solverstate: Path) -> list[np.ndarray]:
    """Adam's first moment of each parameter blob (Caffe's history holds m for every blob, then v)."""
    from caffe.proto import caffe_pb2

    state = caffe_pb2.SolverState()
    state.ParseFromString(solverstate.read_bytes())
    history = [np.array(blob.data, dtype=np.float64) for blob in state.history]
    return history[:len(history) // 2]


def _relative_error(expected: np.ndarray, got: np.ndarray) -> float:
    return float(np.linalg.norm(got - expected) / (np.linalg.norm(expected) or 1.0))  # all 0 (frozen): absolute


def _rows(run_dir: Path) -> list[dict[str, str]]:
    with (run_dir / "progress.csv").open() as file:
        return list(csv.DictReader(file))


def test_two_ranks_give_the_weights_of_one_process_with_the_whole_batch(caffe, dataset, tmp_path):
    one = prepare_run(TrainOptions(variant="lwrefinenet", data=str(dataset), run_dir=str(tmp_path / "one"),
                                   batch_size=4, crop_size=SIDE, iterations=2, base_lr=1e-3, snapshot_every=1,
                                   loss_schedule="uniform"), ["test"])
    assert train(one).iteration == 2
    two = tmp_path / "two"
    done = _run(_mpirun(2, *_train_command(two, dataset, "--batch-size", "4", "--iterations", "2",
                                            "--snapshot-every", "1")))
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads((two / "options.json").read_text())["ranks"] == 2
    assert "batch_size: 2" in (two / "train_val.prototxt").read_text()  # 4 in total, 2 per rank
    assert [int(r["iteration"]) for r in _rows(two)] == [1, 2]  # rank 0 alone writes progress
    # After one iteration: the weights, the net over (a weight that starts at 0 moves first by lr * g / (|g| + eps),
    # and where g is a sum that nearly cancels, |g| near eps, the two summation orders of the batch differ most);
    # Adam's first moments, 0.1 x the averaged gradients, blob by blob (Adam's steps hide a gradient's scale;
    # float32 sums in another order: 1.1e-6 at worst on the CAFFE engine, 2.7e-5 on the default DNNL engine, whose
    # backward-weights kernels block a batch of 4 otherwise than two of 2). After the second iteration, both
    # still together.
    for iteration, tolerance in ((1, 1e-6), (2, 1e-5)):
        prefix = f"snapshots/lwrefinenet_iter_{iteration}"
        weights = _relative_error(_flat(one / f"{prefix}.caffemodel"), _flat(two / f"{prefix}.caffemodel"))
        assert weights <= tolerance, f"weights at iteration {iteration}: relative error {weights:.2e}"
    expected, got = _first_moments(one / "snapshots/lwrefinenet_iter_1.solverstate"), \
        _first_moments(two / "snapshots/lwrefinenet_iter_1.solverstate")
    assert len(expected) == len(got) and any(np.any(m) for m in expected)
    errors = [_relative_error(e, g) for e, g in zip(expected, got, strict=True)]
    assert max(errors) <= 1e-4, f"first moments: relative error {max(errors):.2e} (blob {int(np.argmax(errors))})"
    assert sorted(os.listdir(two / "snapshots")) == sorted(os.listdir(one / "snapshots"))


SHARD_SCRIPT = """
import json, sys
import numpy as np
from mpi4py import MPI
from mrfnet.runtime.caffe_env import import_caffe
from mrfnet.train.worker import SolveJob, _setup_caffe
caffe = import_caffe()
rank = MPI.COMM_WORLD.Get_rank()
_setup_caffe(caffe, SolveJob(solver_path="", log_path="", loss_schedule=[], solver_count=2, rank=rank))
net = caffe.Net(sys.argv[1], caffe.TRAIN)
seen = []
for _ in range(2):  # one epoch: 8 records, 2 ranks x batch 2 x 2 iterations
    net.forward()
    seen += [int(round(float(image[0].mean()))) for image in net.blobs["data"].data]
with open(f"{sys.argv[2]}/rank{rank}.json", "w") as file:  # a file per rank: mpirun may interleave stdout
    json.dump({"rank": rank, "seen": seen}, file)
"""


def test_each_rank_reads_its_own_records_and_together_the_epoch(caffe, tmp_path):
    data = tmp_path / "shard_lmdb"
    flat = [(np.full((SIDE, SIDE, 3), 10 * i, np.uint8), np.full((SIDE, SIDE, 3), 10 * i, np.uint8)) for i in range(8)]
    make_pair_lmdb(data, flat)
    prototxt = tmp_path / "data.prototxt"
    prototxt.write_text('layer { name: "data" type: "Data" top: "data" include { phase: TRAIN }\n'
                        f'  data_param {{ source: "{data}" batch_size: 2 backend: LMDB }} }}\n')
    done = _run(_mpirun(2, "-c", SHARD_SCRIPT, str(prototxt), str(tmp_path)), timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    seen = {}
    for path in tmp_path.glob("rank*.json"):
        record = json.loads(path.read_text())
        seen[record["rank"]] = record["seen"]
    assert set(seen) == {0, 1}
    assert not set(seen[0]) & set(seen[1])
    assert sorted(seen[0] + seen[1]) == [10 * i for i in range(8)]


def _rank_processes(rank: int) -> dict[str, int]:
    """The pids of MPI rank ``rank``'s `mrfnet train` (the one mpirun started) and of its solver (rank_agent)."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            command = (entry / "cmdline").read_bytes().split(b"\0")
            environ = (entry / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if f"OMPI_COMM_WORLD_RANK={rank}".encode() not in environ:
            continue
        if b"mrfnet.train.rank_agent" in command:
            found["solver"] = int(entry.name)
        elif b"mrfnet.cli" in command:
            found["parent"] = int(entry.name)
    return found


def _start_long_run(run_dir: Path, dataset: Path) -> subprocess.Popen:
    command = _mpirun(2, *_train_command(run_dir, dataset, "--batch-size", "4", "--iterations", "100000",
                                         "--snapshot-every", "3"))
    process = subprocess.Popen(command, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and not (run_dir / "snapshots" / "lwrefinenet_iter_3.solverstate").is_file():
        assert process.poll() is None, process.communicate()[1][-3000:]
        time.sleep(0.2)
    time.sleep(0.5)  # a few iterations past the snapshot
    return process


def test_a_signal_on_one_rank_stops_every_rank_at_one_iteration_with_one_snapshot(dataset, tmp_path):
    run_dir = tmp_path / "run"
    process = _start_long_run(run_dir, dataset)
    os.kill(_rank_processes(1)["parent"], signal.SIGTERM)  # rank 1 only: rank 0 hears of it through MPI
    _, stderr = process.communicate(timeout=120)
    assert process.returncode != 0  # the ranks exit 130, as a stopped run does
    last = int(_rows(run_dir)[-1]["iteration"])
    assert (run_dir / "snapshots" / f"lwrefinenet_iter_{last}.caffemodel").is_file(), stderr[-3000:]
    assert resumable_solverstate(run_dir).name == f"lwrefinenet_iter_{last}.solverstate"


def test_a_killed_rank_ends_the_run_with_an_error_and_resume_continues(dataset, tmp_path):
    run_dir = tmp_path / "run"
    process = _start_long_run(run_dir, dataset)
    os.kill(_rank_processes(1)["solver"], signal.SIGKILL)
    began = time.monotonic()
    _, stderr = process.communicate(timeout=60)  # no hang: the others are ended too
    assert time.monotonic() - began < 30
    assert process.returncode != 0
    assert "the solver process died" in stderr, stderr[-3000:]
    state = resumable_solverstate(run_dir)
    assert state is not None
    resumed_from = int(state.stem.rsplit("_", 1)[1])
    # the same run with an end in sight (only max_iter differs)
    solver = (run_dir / "solver.prototxt").read_text().replace("max_iter: 100000", f"max_iter: {resumed_from + 2}")
    (run_dir / "solver.prototxt").write_text(solver)
    done = _run(_mpirun(2, "-m", "mrfnet.cli", "train", "--run-dir", str(run_dir), "--resume"))
    assert done.returncode == 0, done.stderr[-3000:]
    assert (run_dir / "snapshots" / f"lwrefinenet_iter_{resumed_from + 2}.caffemodel").is_file()
    assert [int(r["iteration"]) for r in _rows(run_dir)] == list(range(1, resumed_from + 3))


@pytest.mark.parametrize(("gpus", "message"), [("0,1,2,3", "--gpus names 4 but"),
                                               ("0,1", "--gpus needs a Caffe built with CUDA")])
def test_a_bad_launch_is_refused_before_any_run_folder(dataset, tmp_path, gpus, message):
    run_dir = tmp_path / "run"
    done = _run(_mpirun(2, *_train_command(run_dir, dataset, "--batch-size", "4", "--iterations", "2",
                                            "--gpus", gpus)), timeout=120)
    assert done.returncode != 0
    assert message in done.stderr and done.stderr.count(message) == 1, done.stderr[-3000:]  # said once, by rank 0
    assert not run_dir.exists() and not list(tmp_path.glob(".*"))


NCCL_ID_SCRIPT = """
import sys
from pathlib import Path
from mrfnet.train.ranks import Ranks
ranks = Ranks()
uid = bytes(range(128))  # NUL first, as a real ncclUniqueId has NULs in it
got = ranks.bcast(uid if ranks.world.rank == 0 else None)
# a file per rank: mpirun may interleave the ranks' stdout within a line
Path(sys.argv[1], f"rank{ranks.world.rank}").write_text(f"RANK {ranks.world.rank} {got == uid} {len(got)}")
ranks.close()
"""


def test_rank_0s_128_byte_nccl_id_reaches_every_rank_whole(tmp_path):
    done = _run(_mpirun(2, "-c", NCCL_ID_SCRIPT, str(tmp_path)), timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    assert sorted(path.read_text() for path in tmp_path.glob("rank*")) == ["RANK 0 True 128", "RANK 1 True 128"]
