"""A tiny real Caffe training run: NetSpec net, Adam solver, forward/backward, loss falls."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from mrfnet.runtime.caffe_env import import_caffe


def tiny_net_proto(batch: int = 4, channels: int = 3, size: int = 16) -> str:
    """conv3x3 -> ReLU -> conv3x3 regressing a target image through a EuclideanLoss."""
    caffe = import_caffe()
    L = caffe.layers
    n = caffe.NetSpec()
    n.data, n.target = L.Input(ntop=2, shape=[dict(dim=[batch, channels, size, size])] * 2)
    n.conv1 = L.Convolution(n.data, num_output=8, kernel_size=3, pad=1,
                            weight_filler=dict(type="msra"), bias_filler=dict(type="constant"))
    n.relu1 = L.ReLU(n.conv1, in_place=True)
    n.conv2 = L.Convolution(n.relu1, num_output=channels, kernel_size=3, pad=1,
                            weight_filler=dict(type="msra"), bias_filler=dict(type="constant"))
    n.loss = L.EuclideanLoss(n.conv2, n.target)
    return str(n.to_proto())


def train_tiny_net(iterations: int = 50, seed: int = 0) -> list[float]:
    """Train the tiny net to undo a 3x3 box blur of random images; returns the loss per iteration."""
    caffe = import_caffe()
    caffe.set_mode_cpu()
    caffe.set_random_seed(seed)
    rng = np.random.default_rng(seed)
    sharp = rng.random((4, 3, 16, 16), dtype=np.float32)
    padded = np.pad(sharp, ((0, 0), (0, 0), (1, 1), (1, 1)), mode="edge")
    blurred = sum(padded[:, :, dy:dy + 16, dx:dx + 16] for dy in range(3) for dx in range(3)) / 9
    with tempfile.TemporaryDirectory() as tmp:
        net_path = Path(tmp, "net.prototxt")
        net_path.write_text(tiny_net_proto())
        solver_path = Path(tmp, "solver.prototxt")
        solver_path.write_text(
            f'net: "{net_path}"\ntype: "Adam"\nbase_lr: 0.01\nmomentum: 0.9\nmomentum2: 0.999\n'
            f'lr_policy: "fixed"\nmax_iter: {iterations}\ndisplay: 0\nsnapshot: 0\n'
            f'random_seed: {seed}\nsolver_mode: CPU\n')
        solver = caffe.get_solver(str(solver_path))
        solver.net.blobs["data"].data[...] = blurred
        solver.net.blobs["target"].data[...] = sharp
        losses = []
        for _ in range(iterations):
            solver.step(1)
            losses.append(float(solver.net.blobs["loss"].data))
    return losses
