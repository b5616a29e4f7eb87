"""Why does a network (not) learn? A pycaffe probe: train in-process on blur drawn on the fly, and measure.

    .venv/bin/python tools/probe_training.py --variant mrfnet --iterations 600 --out probe/mrfnet.csv

Training pairs are cut from the embedded training photographs and blurred with the authors' recipe,
one kernel per patch (``--kernels 0``) or from a fixed pool of ``--kernels K`` draws (K=12 is what
the per-copy LMDB of the old main job held). Every ``--eval-every`` iterations the current weights
are scored on held-out patches of the val and test photographs (fixed blur draws), as PSNR gain over
the blurry input, and the diagnostics the question needs are logged: the full-resolution loss next
to the identity loss of the same batch, the mean |output - input| residual, and gradient and update
norms per block type. Prints a table and writes one CSV row per evaluation.

It trains on the project's loop (mrfnet.train.loop.TrainLoop), with the run's own hooks for the loss-weight
schedule (LossScheduleHook, mrfnet.train.loss_schedule), the losses and the non-finite guard (LossesHook,
NonFiniteHook), and its own concerns as hooks below: :class:`FeedHook` (the on-the-fly batches into the
Input blobs), :class:`NormsHook` (gradient and update norms), :class:`DiagnosticsHook` (loss against
identity, residual), :class:`EvalHook` (held-out PSNR gains) and :class:`RowHook` (the table and the CSV).
The solver is mrfnet.train.schedule's (Adam, the rate halved by `step`: ``--halvings H`` halves it every
iterations // (H + 1)), and the lr column is Caffe's own rate for the step (pycaffe's ``solver.lr``). The
nets are netgen's (``add_network``, ``pyramid``, ``add_scale_loss``) with Input layers; ``--output-std``,
``--output-lr-mult`` and ``--branch-end`` are applied to the generated NetParameter here, never by
changing netgen's module defaults. Defaults are the probe's, not netgen's: output convolutions drawn with
std 1e-3 at the full rate (netgen: zero, lr_mult 0.1); ``--output-std 0 --output-lr-mult 0.1`` is netgen's.

What differs from the probe's first version (its own loop, docs/architecture.md "Training on a small
budget"): coarse-to-fine phases start at iteration floor(p * N / 4) (loss_schedule), where they started at
ceil(p * N / 4); ``--output-lr-mult`` also applies to the tiny net's output convolution; the last row has
update norms too when it is not a multiple of ``--eval-every``; a non-finite loss ends the probe (rows so far
kept) instead of training on NaN; ``--warmup`` is the one change made to the project's solver (Caffe's
sigmoid policy, which the project does not use), and its lr column now shows the warmed-up rate, where it
showed the base rate; Caffe's INFO lines are quiet (Caffe was imported before the tool set GLOG_minloglevel).
"""

from __future__ import annotations

import argparse
import csv
import math
import re
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mrfnet.runtime.caffe_env import import_caffe  # noqa: E402

caffe = import_caffe()  # first, so Caffe's INFO lines stay quiet
from caffe import layers as L  # noqa: E402

from data_prep import blur as blur_recipe  # noqa: E402
from data_prep.images import read_image  # noqa: E402
from data_prep.sources import embedded_items  # noqa: E402
from mrfnet.train.hooks import LossesHook, LossScheduleHook, NonFiniteHook  # noqa: E402
from mrfnet.train.loop import Hook, TrainLoop  # noqa: E402
from mrfnet.train.loss_schedule import LOSS_SCHEDULES, loss_schedule  # noqa: E402
from mrfnet.train.schedule import Schedule, solver_parameter  # noqa: E402
from netgen import blocks, network  # noqa: E402
from netgen.layers import scale_loss_values, set_scale_loss_weights  # noqa: E402
from netgen.names import INPUT, PREDICTION, SCALE_LOSS_TOPS  # noqa: E402

TARGET = "sharp"
EVAL_BATCH = 8
OUTPUT_CONV = re.compile(r"conv_r\d+_out|tiny_out")


def photographs(split: str) -> list[np.ndarray]:
    return [read_image(item.sharp)[0] for item in embedded_items() if item.split == split]


def blurred_patch(image: np.ndarray, y: int, x: int, size: int, params: dict) -> tuple[np.ndarray, np.ndarray]:
    """(blurred, sharp) patch: data_prep's own per-patch blur."""
    return blur_recipe.apply_blur_patch(image, y, x, size, params), image[y:y + size, x:x + size]


class Sampler:
    def __init__(self, images: list[np.ndarray], crop: int, kernels: int, max_length: int, seed: int) -> None:
        self.images, self.crop = images, crop
        self.rng = np.random.default_rng(seed)
        self.max_length = max_length
        self.pool = [blur_recipe.sample_blur_params(self.rng, max_length) for _ in range(kernels)]

    def batch(self, size: int) -> tuple[np.ndarray, np.ndarray]:
        blurs, sharps = [], []
        for _ in range(size):
            image = self.images[self.rng.integers(len(self.images))]
            y = self.rng.integers(image.shape[0] - self.crop + 1)
            x = self.rng.integers(image.shape[1] - self.crop + 1)
            params = (self.pool[self.rng.integers(len(self.pool))] if self.pool
                      else blur_recipe.sample_blur_params(self.rng, self.max_length))
            b, s = blurred_patch(image, y, x, self.crop, params)
            if self.rng.integers(2):
                b, s = b[:, ::-1], s[:, ::-1]
            blurs.append(b)
            sharps.append(s)
        return to_blob(blurs), to_blob(sharps)


def to_blob(images: list[np.ndarray]) -> np.ndarray:
    return np.stack(images).transpose(0, 3, 1, 2).astype(np.float32) / 255


def eval_set(images: list[np.ndarray], size: int, count: int, max_length: int, seed: int) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(seed)
    blurs, sharps = [], []
    for index in range(count):
        image = images[index % len(images)]
        y, x = rng.integers(image.shape[0] - size + 1), rng.integers(image.shape[1] - size + 1)
        b, s = blurred_patch(image, y, x, size, blur_recipe.sample_blur_params(rng, max_length))
        blurs.append(b)
        sharps.append(s)
    return to_blob(blurs), to_blob(sharps)


def psnr(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = np.clip(np.rint(a * 255), 0, 255)
    b = np.clip(np.rint(b * 255), 0, 255)
    mse = ((a - b) ** 2).reshape(len(a), -1).mean(axis=1)
    return 10 * np.log10(255 ** 2 / np.maximum(mse, 1e-10))


# --- the nets ---------------------------------------------------------------------------------------------

def tiny_network(n: caffe.NetSpec, blur) -> list:
    """The sanity reference: 4 x (conv3x3/32 + ReLU), conv3x3 to 3, plus the input."""
    x = blur
    for index in range(1, 5):
        x = blocks.conv_relu(n, f"tiny{index}", x, 32, 3)
    correction = blocks.conv(n, "tiny_out", x, 3, 3)  # its filler and rate: initialise()
    return [blocks.eltwise_sum(n, PREDICTION, correction, blur)]


def build_net(variant: str, batch: int, side: int, train: bool):
    """Input ``blur`` -> network (-> loss against Input ``sharp``): a caffe_pb2.NetParameter."""
    n = caffe.NetSpec()
    n[INPUT] = L.Input(shape=dict(dim=[batch, 3, side, side]))
    if variant == "tiny":
        outputs = tiny_network(n, n[INPUT])
    else:
        outputs = network.add_network(n, network.get_variant(variant), n[INPUT])
    if train:
        n[TARGET] = L.Input(shape=dict(dim=[batch, 3, side, side]))
        if variant == "tiny":  # Eq. 5 with one scale: the native loss's weight for K = 1
            n[SCALE_LOSS_TOPS[-1]] = L.EuclideanLoss(outputs[-1], n[TARGET], loss_weight=1 / (3 * side * side))
        else:
            targets = network.pyramid(n, TARGET, n[TARGET])
            network.add_scale_loss(n, outputs, targets, side, "native", (1.0,) * len(outputs))
    return n.to_proto()


def initialise(net: Any, output_filler: dict, output_lr_mult: float, branch_end: dict | None) -> Any:
    """The probe's initialisation on a generated net: the output convolutions' filler and lr_mult, and (if
    ``branch_end``) the filler of every residual branch's last convolution (netgen starts those at zero)."""
    for layer in net.layer:
        if layer.type != "Convolution":
            continue
        conv = layer.convolution_param
        if OUTPUT_CONV.fullmatch(layer.name):
            conv.weight_filler.Clear()
            for key, value in output_filler.items():
                setattr(conv.weight_filler, key, value)
            while len(layer.param) < (2 if conv.bias_term else 1):
                layer.param.add()
            for param in layer.param:
                param.lr_mult = output_lr_mult
        elif branch_end is not None and conv.weight_filler.type == blocks.BRANCH_END_FILLER["type"]:
            conv.weight_filler.Clear()
            conv.weight_filler.type = branch_end["type"]
    return net


def block_type(param_name: str) -> str:
    for key in ("rcu", "crp", "fusion", "_m", "remote", "_out", "deconv", "tiny_out"):
        if key in param_name:
            return {"_m": "mrf", "_out": "out", "tiny_out": "out"}.get(key, key)
    if param_name.startswith("Conv") or param_name.startswith("tiny"):
        return "encoder"
    if param_name.startswith("conv_r"):
        return "adapt"
    return "other"


def write_rows(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    keys = list(dict.fromkeys(k for row in rows for k in row))
    with path.open("w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=keys)
        writer.writeheader()
        writer.writerows(rows)


# --- the probe's own hooks ----------------------------------------------------------------------------------

def row_due(loop: TrainLoop, every: int, iteration: int | None = None) -> bool:
    """Whether ``iteration`` (default: the step just taken) gets a row: every ``every`` and the last."""
    iteration = loop.iter if iteration is None else iteration
    return iteration % every == 0 or iteration == loop.max_iter


class FeedHook(Hook):
    """Before each step: a new batch of blurred crops into the net's Input blobs (``step["batch"]``)."""

    def __init__(self, net: Any, sampler: Sampler, batch: int) -> None:
        self.net, self.sampler, self.batch = net, sampler, batch

    def before_step(self) -> None:
        blur, sharp = self.sampler.batch(self.batch)
        self.net.blobs[INPUT].data[...] = blur
        self.net.blobs[TARGET].data[...] = sharp
        self.loop.step["batch"] = blur, sharp


class NormsHook(Hook):
    """Gradient norms (Caffe's on_gradients callback, inside the step) and update norms per block type, on the
    steps that get a row (``step["grad_norms"]``, ``step["update_norms"]``: sums of squares)."""

    def __init__(self, net: Any, every: int) -> None:
        self.params = {name: blobs[0] for name, blobs in net.params.items()}
        self.every = every
        self.grads: dict[str, float] = defaultdict(float)
        self.before: dict[str, np.ndarray] | None = None

    def before_train(self) -> None:
        self.loop.solver.add_callback(lambda: None, self._on_gradients)

    def before_step(self) -> None:
        self.grads.clear()
        due = row_due(self.loop, self.every, self.loop.iter + 1)
        self.before = {name: blob.data.copy() for name, blob in self.params.items()} if due else None

    def _on_gradients(self) -> None:
        if self.before is not None:
            for name, blob in self.params.items():
                self.grads[block_type(name)] += float(np.sum(blob.diff ** 2))

    def after_step(self) -> None:
        if self.before is None:
            return
        updates: dict[str, float] = defaultdict(float)
        for name, blob in self.params.items():
            updates[block_type(name)] += float(np.sum((blob.data - self.before[name]) ** 2))
        self.loop.step["grad_norms"], self.loop.step["update_norms"] = dict(self.grads), dict(updates)


class DiagnosticsHook(Hook):
    """The full-resolution MSE against the identity's on the same batches, and the mean |output - input|,
    averaged over the steps since the last row (``step["diagnostics"]`` on a row's step)."""

    def __init__(self, net: Any, every: int) -> None:
        self.net, self.every = net, every
        self.sums, self.count = [0.0, 0.0, 0.0], 0

    def after_step(self) -> None:
        blur, sharp = self.loop.step["batch"]
        out = self.net.blobs[PREDICTION].data
        for index, value in enumerate((np.mean((out - sharp) ** 2), np.mean((blur - sharp) ** 2),
                                       np.mean(np.abs(out - blur)))):
            self.sums[index] += float(value)
        self.count += 1
        if row_due(self.loop, self.every):
            loss, identity, residual = self.sums
            self.loop.step["diagnostics"] = {"train_mse": loss / self.count, "identity_mse": identity / self.count,
                                             "loss_ratio": loss / identity, "residual": residual / self.count}
            self.sums, self.count = [0.0, 0.0, 0.0], 0


class EvalHook(Hook):
    """On a row's step: the mean PSNR gain over the blurry input of each held-out set (``step["gains"]``),
    by a deploy net that shares the training net's weights."""

    def __init__(self, evaluator: Any, sets: dict[str, tuple[np.ndarray, np.ndarray]], every: int) -> None:
        self.evaluator, self.sets, self.every = evaluator, sets, every

    def gain(self, blurs: np.ndarray, sharps: np.ndarray) -> float:
        gains = []
        for start in range(0, len(blurs), EVAL_BATCH):
            chunk, target = blurs[start:start + EVAL_BATCH], sharps[start:start + EVAL_BATCH]
            self.evaluator.blobs[INPUT].reshape(*chunk.shape)
            self.evaluator.blobs[INPUT].data[...] = chunk
            out = self.evaluator.forward()[PREDICTION].copy()
            gains += list(psnr(out, target) - psnr(chunk, target))
        return float(np.mean(gains))

    def after_step(self) -> None:
        if row_due(self.loop, self.every):
            self.loop.step["gains"] = {f"{name}_gain": self.gain(*pair) for name, pair in self.sets.items()}


class RowHook(Hook):
    """On a row's step: the row of this step's findings, printed and (``out``) written to the CSV at once, so a
    stopped probe keeps its rows."""

    def __init__(self, every: int, out: Path | None) -> None:
        self.every, self.out = every, out
        self.rows: list[dict[str, Any]] = []
        self.began = self.rate = 0.0

    def before_train(self) -> None:
        self.began = time.monotonic()

    def before_step(self) -> None:
        self.rate = self.loop.solver.lr  # Caffe's own rate for the step about to be taken (SGDSolver.lr)

    def after_step(self) -> None:
        if not row_due(self.loop, self.every):
            return
        step = self.loop.step
        row = {"iteration": self.loop.iter, "seconds": round(time.monotonic() - self.began, 1),
               "lr": float(f"{self.rate:.7g}"), **step["diagnostics"], **step["gains"]}  # float32 as given
        row.update({f"g_{k}": math.sqrt(v) for k, v in sorted(step.get("grad_norms", {}).items())})
        row.update({f"u_{k}": math.sqrt(v) for k, v in sorted(step.get("update_norms", {}).items())})
        self.rows.append(row)
        print(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()), flush=True)
        if self.out:
            write_rows(self.out, self.rows)


# --- the run ----------------------------------------------------------------------------------------------

def solver_param(args: argparse.Namespace, net_path: Path, folder: Path) -> Any:
    """mrfnet.train.schedule's solver, one "epoch" per iteration: Adam, the rate halved ``--halvings`` times."""
    every = max(1, args.iterations // (args.halvings + 1)) if args.halvings else args.iterations
    schedule = Schedule(records=args.batch_size, batch_size=args.batch_size, epochs=args.iterations,
                        halve_every_epochs=every)
    param = solver_parameter(schedule, net=str(net_path), snapshot_prefix=str(folder / "s"), base_lr=args.base_lr,
                             seed=args.seed, display=0)
    param.snapshot = 0  # the probe keeps no weights
    if args.warmup:  # Caffe's sigmoid policy; no halvings
        param.lr_policy, param.gamma, param.stepsize = "sigmoid", 10 / args.warmup, args.warmup // 2
    return param


def build_solver(args: argparse.Namespace) -> tuple[Any, Any]:
    """(solver, an evaluation net of batch EVAL_BATCH sharing the solver net's weights)."""
    output_filler = (dict(type="gaussian", std=args.output_std) if args.output_std > 0
                     else dict(type="constant", value=0))
    branch_end = blocks.WEIGHT_FILLER if args.branch_end == "msra" else None
    with tempfile.TemporaryDirectory(prefix="probe-") as tmp:  # Caffe has read the files when it ends
        folder = Path(tmp)
        train_net = initialise(build_net(args.variant, args.batch_size, args.crop_size, True), output_filler,
                               args.output_lr_mult, branch_end)
        (folder / "train.prototxt").write_text(str(train_net))
        (folder / "eval.prototxt").write_text(str(build_net(args.variant, EVAL_BATCH, args.eval_size, False)))
        (folder / "solver.prototxt").write_text(str(solver_param(args, folder / "train.prototxt", folder)))
        solver = caffe.get_solver(str(folder / "solver.prototxt"))
        evaluator = caffe.Net(str(folder / "eval.prototxt"), caffe.TEST)
    evaluator.share_with(solver.net)
    return solver, evaluator


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variant", default="mrfnet", help="mrfnet, lwrefinenet, refinenet, rcrefinenet or tiny")
    parser.add_argument("--iterations", type=int, default=600)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--crop-size", type=int, default=64)
    parser.add_argument("--base-lr", type=float, default=5e-4)
    parser.add_argument("--warmup", type=int, default=0,
                        help="warm the rate up over this many iterations (Caffe's sigmoid policy; no halvings)")
    parser.add_argument("--halvings", type=int, default=0, help="halve the rate this many times over the run")
    parser.add_argument("--schedule", default="uniform", choices=list(LOSS_SCHEDULES))
    parser.add_argument("--kernels", type=int, default=0, help="0: a new blur per patch; K: a fixed pool of K")
    parser.add_argument("--max-length", type=int, default=30, help="longest motion blur drawn (recipe: 30)")
    parser.add_argument("--branch-end", default="zero", choices=["zero", "msra"])
    parser.add_argument("--output-std", type=float, default=1e-3, help="0: output convolutions start at zero")
    parser.add_argument("--output-lr-mult", type=float, default=1.0, help="lr_mult of the output convolutions")
    parser.add_argument("--eval-every", type=int, default=100)
    parser.add_argument("--eval-count", type=int, default=32, help="held-out patches per split")
    parser.add_argument("--eval-size", type=int, default=96)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, help="CSV of the evaluations")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    caffe.set_mode_cpu()
    caffe.set_random_seed(args.seed)
    solver, evaluator = build_solver(args)
    net = solver.net
    train_images = photographs("train")
    sampler = Sampler(train_images, args.crop_size, args.kernels, args.max_length, args.seed)
    held_out = {split: eval_set(photographs(split), args.eval_size, args.eval_count, args.max_length, 1000 + i)
                for i, split in enumerate(("val", "test"))}
    sets = {"train": eval_set(train_images, args.eval_size, args.eval_count, args.max_length, 2000), **held_out}
    scales = sum(top in net.blobs for top in SCALE_LOSS_TOPS)  # 4, or 1 for the tiny net
    every = args.eval_every
    hooks = [FeedHook(net, sampler, args.batch_size),
             LossScheduleHook(loss_schedule(args.schedule, args.iterations, scales),
                              lambda weights: set_scale_loss_weights(net, weights)),
             NormsHook(net, every),
             LossesHook(lambda: scale_loss_values(net)),
             DiagnosticsHook(net, every),
             EvalHook(evaluator, sets, every),
             RowHook(every, args.out),
             NonFiniteHook()]
    outcome = TrainLoop(solver, hooks, args.iterations).run()
    if outcome.kind != "finished":
        print(f"stopped: {outcome.kind} at iteration {outcome.info['iteration']} {outcome.info.get('losses', '')}",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
