"""Why does a network (not) learn? A pycaffe probe: train in-process on blur drawn on the fly, and measure.

    .venv/bin/python tools/probe_training.py --variant mrfnet --iterations 600 --out probe/mrfnet.csv

Training pairs are cut from the embedded training photographs and blurred with the authors' recipe,
one kernel per patch (``--kernels 0``) or from a fixed pool of ``--kernels K`` draws (K=12 is what
the per-copy LMDB of the old main job held). Every ``--eval-every`` iterations the current weights
are scored on held-out patches of the val and test photographs (fixed blur draws), as PSNR gain over
the blurry input, and the diagnostics the question needs are logged: the full-resolution loss next
to the identity loss of the same batch, the mean |output - input| residual, and gradient and update
norms per block type. Prints a table and writes one CSV row per evaluation.
"""

from __future__ import annotations

import argparse
import csv
import math
import os
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from data_prep import blur as blur_recipe  # noqa: E402
from data_prep.images import read_image  # noqa: E402
from data_prep.sources import embedded_items  # noqa: E402
from mrfnet.runtime.caffe_env import import_caffe

caffe = import_caffe()
from caffe import layers as L  # noqa: E402

from netgen import blocks, names, network  # noqa: E402
from netgen.layers import set_scale_loss_weights  # noqa: E402


def photographs(split: str) -> list[np.ndarray]:
    return [read_image(item.sharp)[0] for item in embedded_items() if item.split == split]


def blurred_patch(image: np.ndarray, y: int, x: int, size: int, params: dict) -> tuple[np.ndarray, np.ndarray]:
    """(blurred, sharp) patch: data_prep's own per-patch blur."""
    return blur_recipe.apply_blur_patch(image, y, x, size, params), image[y:y + size, x:x + size]


def scaled_params(rng: np.random.Generator, max_length: int) -> dict:
    return blur_recipe.sample_blur_params(rng, max_length)


class Sampler:
    def __init__(self, images: list[np.ndarray], crop: int, kernels: int, max_length: int, seed: int) -> None:
        self.images, self.crop = images, crop
        self.rng = np.random.default_rng(seed)
        self.max_length = max_length
        self.pool = [scaled_params(self.rng, max_length) for _ in range(kernels)]

    def batch(self, size: int) -> tuple[np.ndarray, np.ndarray]:
        blurs, sharps = [], []
        for _ in range(size):
            image = self.images[self.rng.integers(len(self.images))]
            y = self.rng.integers(image.shape[0] - self.crop + 1)
            x = self.rng.integers(image.shape[1] - self.crop + 1)
            params = (self.pool[self.rng.integers(len(self.pool))] if self.pool
                      else scaled_params(self.rng, self.max_length))
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
        b, s = blurred_patch(image, y, x, size, scaled_params(rng, max_length))
        blurs.append(b)
        sharps.append(s)
    return to_blob(blurs), to_blob(sharps)


def psnr(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = np.clip(np.rint(a * 255), 0, 255)
    b = np.clip(np.rint(b * 255), 0, 255)
    mse = ((a - b) ** 2).reshape(len(a), -1).mean(axis=1)
    return 10 * np.log10(255 ** 2 / np.maximum(mse, 1e-10))


def tiny_network(n: caffe.NetSpec, blur) -> list:
    """The sanity reference: 4 x (conv3x3/32 + ReLU), conv3x3 to 3, plus the input."""
    x = blur
    for index in range(1, 5):
        x = blocks.conv_relu(n, f"tiny{index}", x, 32, 3)
    correction = blocks.conv(n, "tiny_out", x, 3, 3, filler=network.OUTPUT_FILLER)
    return [blocks.eltwise_sum(n, names.PREDICTION, correction, blur)]


def build_net(variant: str, batch: int, side: int, train: bool) -> str:
    n = caffe.NetSpec()
    n.blur = L.Input(shape=dict(dim=[batch, 3, side, side]))
    if variant == "tiny":
        outputs = tiny_network(n, n.blur)
    else:
        outputs = network.add_network(n, network.get_variant(variant), n.blur)
    if train:
        n.sharp = L.Input(shape=dict(dim=[batch, 3, side, side]))
        if variant == "tiny":
            n.loss_r4 = L.EuclideanLoss(outputs[-1], n.sharp, loss_weight=1 / (3 * side * side))
        else:
            targets = network.pyramid(n, "sharp", n.sharp)
            network.add_scale_loss(n, outputs, targets, side, "native", (1.0,) * 4)
    return str(n.to_proto())


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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variant", default="mrfnet", help="mrfnet, lwrefinenet, refinenet, rcrefinenet or tiny")
    parser.add_argument("--iterations", type=int, default=600)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--crop-size", type=int, default=64)
    parser.add_argument("--base-lr", type=float, default=5e-4)
    parser.add_argument("--warmup", type=int, default=0,
                        help="warm the rate up over this many iterations (Caffe's sigmoid policy; no halvings)")
    parser.add_argument("--halvings", type=int, default=0, help="halve the rate this many times over the run")
    parser.add_argument("--schedule", default="uniform", choices=["uniform", "full-only", "coarse-to-fine"])
    parser.add_argument("--kernels", type=int, default=0, help="0: a new blur per patch; K: a fixed pool of K")
    parser.add_argument("--max-length", type=int, default=30, help="longest motion blur drawn (recipe: 30)")
    parser.add_argument("--branch-end", default="zero", choices=["zero", "msra"])
    parser.add_argument("--output-std", type=float, default=1e-3)
    parser.add_argument("--output-lr-mult", type=float, default=1.0, help="lr_mult of the output convolutions")
    parser.add_argument("--eval-every", type=int, default=100)
    parser.add_argument("--eval-count", type=int, default=32, help="held-out patches per split")
    parser.add_argument("--eval-size", type=int, default=96)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, help="CSV of the evaluations")
    args = parser.parse_args()

    if args.branch_end == "msra":
        blocks.BRANCH_END_FILLER = blocks.WEIGHT_FILLER
    network.OUTPUT_FILLER = (dict(type="gaussian", std=args.output_std) if args.output_std > 0
                             else dict(type="constant", value=0))
    network.OUTPUT_LR_MULT = args.output_lr_mult
    caffe.set_mode_cpu()
    caffe.set_random_seed(args.seed)
    folder = Path(tempfile.mkdtemp(prefix="probe-"))
    (folder / "train.prototxt").write_text(build_net(args.variant, args.batch_size, args.crop_size, True))
    (folder / "eval.prototxt").write_text(build_net(args.variant, 8, args.eval_size, False))
    solver_text = (f'net: "{folder / "train.prototxt"}"\ntype: "Adam"\nbase_lr: {args.base_lr}\nmomentum: 0.9\n'
                   f'momentum2: 0.999\ndelta: 1e-8\nmax_iter: {args.iterations}\n'
                   + (f'lr_policy: "sigmoid"\ngamma: {10 / args.warmup}\nstepsize: {args.warmup // 2}\n'
                      if args.warmup else
                      f'lr_policy: "step"\ngamma: 0.5\nstepsize: {max(1, args.iterations // (args.halvings + 1))}\n'
                      if args.halvings else 'lr_policy: "fixed"\n') +
                   f'snapshot: 0\nsnapshot_prefix: "{folder}/s"\nrandom_seed: {args.seed}\nsolver_mode: CPU\n'
                   'display: 0\n')
    (folder / "solver.prototxt").write_text(solver_text)
    solver = caffe.get_solver(str(folder / "solver.prototxt"))
    net = solver.net
    evaluator = caffe.Net(str(folder / "eval.prototxt"), caffe.TEST)
    evaluator.share_with(net)
    if args.variant != "tiny":
        weights = {"uniform": [1.0] * 4, "full-only": [0.0, 0.0, 0.0, 4.0],
                   "coarse-to-fine": [1.0] * 4}[args.schedule]
        set_scale_loss_weights(net, weights)

    train_images = photographs("train")
    sampler = Sampler(train_images, args.crop_size, args.kernels, args.max_length, args.seed)
    held_out = {split: eval_set(photographs(split), args.eval_size, args.eval_count, args.max_length, 1000 + i)
                for i, split in enumerate(("val", "test"))}
    train_eval = eval_set(train_images, args.eval_size, args.eval_count, args.max_length, 2000)

    def evaluate(blurs: np.ndarray, sharps: np.ndarray) -> float:
        gains = []
        for start in range(0, len(blurs), 8):
            chunk = blurs[start:start + 8]
            evaluator.blobs["blur"].reshape(*chunk.shape)
            evaluator.blobs["blur"].data[...] = chunk
            out = evaluator.forward()[names.PREDICTION].copy()
            target = sharps[start:start + 8]
            gains += list(psnr(out, target) - psnr(chunk, target))
        return float(np.mean(gains))

    params = {name: [blob for blob in blobs] for name, blobs in net.params.items()}
    grad_norms: dict[str, float] = defaultdict(float)

    def on_gradients() -> None:
        for name, blobs in params.items():
            grad_norms[block_type(name)] += float(np.sum(blobs[0].diff ** 2))

    solver.add_callback(lambda: None, on_gradients)
    rows, began = [], time.monotonic()
    loss_sum = ident_sum = resid_sum = 0.0
    count = 0
    for iteration in range(1, args.iterations + 1):
        lr = args.base_lr * (0.5 ** ((iteration - 1) // max(1, args.iterations // (args.halvings + 1)))
                             if args.halvings else 1.0)
        if args.variant != "tiny" and args.schedule == "coarse-to-fine":
            phase = min(3, (iteration - 1) * 4 // args.iterations)
            raw = [2.0 if k == phase else 1.0 for k in range(4)]
            set_scale_loss_weights(net, [w * 4 / sum(raw) for w in raw])
        blur, sharp = sampler.batch(args.batch_size)
        net.blobs["blur"].data[...] = blur
        net.blobs["sharp"].data[...] = sharp
        measure = iteration % args.eval_every == 0
        before = {name: blobs[0].data.copy() for name, blobs in params.items()} if measure else None
        grad_norms.clear()
        solver.step(1)
        out = net.blobs[names.PREDICTION].data
        loss_sum += float(np.mean((out - sharp) ** 2))
        ident_sum += float(np.mean((blur - sharp) ** 2))
        resid_sum += float(np.mean(np.abs(out - blur)))
        count += 1
        if iteration % args.eval_every == 0 or iteration == args.iterations:
            updates: dict[str, float] = defaultdict(float)
            if before is not None:
                for name, blobs in params.items():
                    updates[block_type(name)] += float(np.sum((blobs[0].data - before[name]) ** 2))
            row = {"iteration": iteration, "seconds": round(time.monotonic() - began, 1), "lr": lr,
                   "train_mse": loss_sum / count, "identity_mse": ident_sum / count,
                   "loss_ratio": loss_sum / ident_sum, "residual": resid_sum / count,
                   "train_gain": evaluate(*train_eval), "val_gain": evaluate(*held_out["val"]),
                   "test_gain": evaluate(*held_out["test"])}
            row.update({f"g_{k}": math.sqrt(v) for k, v in sorted(grad_norms.items())})
            row.update({f"u_{k}": math.sqrt(v) for k, v in sorted(updates.items())})
            rows.append(row)
            print(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()),
                  flush=True)
            if args.out:
                write_rows(args.out, rows)  # after every evaluation, so a stopped probe keeps its rows
            loss_sum = ident_sum = resid_sum = 0.0
            count = 0
    return 0


if __name__ == "__main__":
    os.environ.setdefault("GLOG_minloglevel", "2")
    sys.exit(main())
