"""Python layers of the edge reconstruction branch (paper section 3.3.3).

The paper's objective, min_G max_D L_G = min_G(a_adv max_D L_adv + a_FM L_FM), is EdgeConnect's
edge-generator loss: a discriminator judges edge maps (conditioned on the grayscale image) and a
feature-matching term compares its activations on real and generated edges. Caffe has no GAN
machinery, so the discriminator is a small Caffe net with its own Adam solver, owned by the
:class:`EdgeAdversarialLoss` layer; the training driver calls ``train_discriminator`` after each
generator step (the alternating schedule). :class:`AlphaMix` is the paper's alpha that moves the
edge generator's input from blurred to refined features during training. :class:`Grayscale` and
:class:`SobelMagnitude` make the grayscale images and the ground-truth edge maps (section 3.3.3:
"the ground truth images are preprocessed into grayscale images for further edge feature extraction").
"""

from __future__ import annotations

import json
import os
import tempfile
from typing import Any

import caffe
import numpy as np

DISCRIMINATOR_FEATURES = ("act1", "act2")  # the activations that feature matching compares


GRAY_WEIGHTS_BGR = (0.114, 0.587, 0.299)  # ITU-R BT.601 luma, in the BGR channel order of the nets


SOBEL_X = np.array([[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]], dtype=np.float64)


SOBEL_NORM = 4 * np.sqrt(2)  # the largest Sobel magnitude of an image in [0, 1]: edge maps land in [0, 1]


class Grayscale(caffe.Layer):
    """N x 3 x H x W BGR -> N x 1 x H x W luma (BT.601); linear, so it passes gradients back."""

    def setup(self, bottom: Any, top: Any) -> None:
        if len(bottom) != 1 or len(top) != 1:
            raise ValueError("Grayscale takes one BGR image and gives one grayscale image")

    def reshape(self, bottom: Any, top: Any) -> None:
        batch, channels, height, width = bottom[0].data.shape
        if channels != 3:
            raise ValueError(f"Grayscale needs 3 channels (BGR), got {channels}")
        top[0].reshape(batch, 1, height, width)

    def forward(self, bottom: Any, top: Any) -> None:
        top[0].data[...] = np.tensordot(GRAY_WEIGHTS_BGR, bottom[0].data, axes=([0], [1]))[:, None]

    def backward(self, top: Any, propagate_down: Any, bottom: Any) -> None:
        if propagate_down[0]:
            bottom[0].diff[...] = np.asarray(GRAY_WEIGHTS_BGR)[None, :, None, None] * top[0].diff


class SobelMagnitude(caffe.Layer):
    """N x 1 x H x W image -> its Sobel gradient magnitude / 4 sqrt(2), replicate borders; no gradient.

    Used on the ground truth only (a fixed target), so it does not back-propagate.
    """

    def setup(self, bottom: Any, top: Any) -> None:
        if len(bottom) != 1 or len(top) != 1:
            raise ValueError("SobelMagnitude takes one grayscale image and gives one edge map")

    def reshape(self, bottom: Any, top: Any) -> None:
        if bottom[0].data.shape[1] != 1:
            raise ValueError(f"SobelMagnitude needs 1 channel, got {bottom[0].data.shape[1]}")
        top[0].reshape(*bottom[0].data.shape)

    def forward(self, bottom: Any, top: Any) -> None:
        image = np.pad(bottom[0].data[:, 0].astype(np.float64), ((0, 0), (1, 1), (1, 1)), mode="edge")
        height, width = image.shape[1] - 2, image.shape[2] - 2
        gx = sum(SOBEL_X[dy, dx] * image[:, dy:dy + height, dx:dx + width] for dy in range(3) for dx in range(3))
        gy = sum(SOBEL_X.T[dy, dx] * image[:, dy:dy + height, dx:dx + width] for dy in range(3) for dx in range(3))
        top[0].data[:, 0] = np.sqrt(gx ** 2 + gy ** 2) / SOBEL_NORM

    def backward(self, top: Any, propagate_down: Any, bottom: Any) -> None:
        if propagate_down[0]:
            raise ValueError("SobelMagnitude makes fixed targets; it cannot back-propagate")


class AlphaMix(caffe.Layer):
    """top = (1 - alpha) * bottom[0] + alpha * bottom[1]; the driver sets ``alpha`` during training."""

    def setup(self, bottom: Any, top: Any) -> None:
        if len(bottom) != 2:
            raise ValueError("AlphaMix takes two bottoms: the blurred and the refined input")
        self.alpha = float(json.loads(self.param_str or "{}").get("alpha", 0.0))

    def reshape(self, bottom: Any, top: Any) -> None:
        if bottom[0].data.shape != bottom[1].data.shape:
            raise ValueError(f"AlphaMix bottoms differ in shape: {bottom[0].data.shape} vs {bottom[1].data.shape}")
        top[0].reshape(*bottom[0].data.shape)

    def forward(self, bottom: Any, top: Any) -> None:
        top[0].data[...] = (1 - self.alpha) * bottom[0].data + self.alpha * bottom[1].data

    def backward(self, top: Any, propagate_down: Any, bottom: Any) -> None:
        for index, weight in enumerate((1 - self.alpha, self.alpha)):
            if propagate_down[index]:
                bottom[index].diff[...] = weight * top[0].diff


def discriminator_proto(batch: int, height: int, width: int, width_factor: int = 32) -> str:
    """A PatchGAN-style discriminator on [edge map, grayscale condition] with a per-patch sigmoid loss."""
    L, P = caffe.layers, caffe.params
    n = caffe.NetSpec()
    n.edge = L.Input(shape=dict(dim=[batch, 1, height, width]))
    n.cond = L.Input(shape=dict(dim=[batch, 1, height, width]))
    n.label = L.Input(shape=dict(dim=[batch, 1, _patches(height), _patches(width)]))
    n.pair = L.Concat(n.edge, n.cond, axis=1)
    filler = dict(type="gaussian", std=0.02)
    n.conv1 = L.Convolution(n.pair, num_output=width_factor, kernel_size=4, stride=2, pad=1, weight_filler=filler)
    n.act1 = L.ReLU(n.conv1, negative_slope=0.2)
    n.conv2 = L.Convolution(n.act1, num_output=2 * width_factor, kernel_size=4, stride=2, pad=1,
                            weight_filler=filler)
    n.act2 = L.ReLU(n.conv2, negative_slope=0.2)
    n.score = L.Convolution(n.act2, num_output=1, kernel_size=3, pad=1, weight_filler=filler)
    n.loss = L.SigmoidCrossEntropyLoss(n.score, n.label, loss_param=dict(normalization=P.Loss.VALID))
    proto = n.to_proto()
    proto.force_backward = True  # the generator needs d loss / d edge
    return str(proto)


def _patches(size: int) -> int:
    """Output side of two 4x4 stride-2 pad-1 convolutions."""
    for _ in range(2):
        size = (size + 2 - 4) // 2 + 1
    return size


class EdgeAdversarialLoss(caffe.Layer):
    """a_adv * BCE(D(fake), real) + a_FM * sum_l mean|D_l(real) - D_l(fake)|, gradient into the fake edges.

    Bottoms: generated edge map, ground-truth edge map, grayscale condition (all N x 1 x H x W).
    param_str (JSON): a_adv (default 1), a_fm (10, as EdgeConnect), d_lr (1e-5), d_width (32), seed.
    """

    def setup(self, bottom: Any, top: Any) -> None:
        if len(bottom) != 3:
            raise ValueError("EdgeAdversarialLoss takes generated edges, real edges and the grayscale condition")
        params = json.loads(self.param_str or "{}")
        self.a_adv = float(params.get("a_adv", 1.0))
        self.a_fm = float(params.get("a_fm", 10.0))
        self._d_lr = float(params.get("d_lr", 1e-5))
        self._d_width = int(params.get("d_width", 32))
        self._seed = int(params.get("seed", 0))
        self._solver = None
        self._shape: tuple[int, ...] | None = None
        self.discriminator_loss = float("nan")

    def _build(self, batch: int, height: int, width: int) -> None:
        """(Re)build the discriminator for twice the batch (real and fake together when it trains)."""
        old = self._solver.net if self._solver is not None else None
        folder = tempfile.mkdtemp(prefix="mrfnet-edge-d-")
        net_path, solver_path = os.path.join(folder, "d.prototxt"), os.path.join(folder, "d_solver.prototxt")
        with open(net_path, "w") as file:
            file.write(discriminator_proto(2 * batch, height, width, self._d_width))
        with open(solver_path, "w") as file:
            file.write(f'net: "{net_path}"\ntype: "Adam"\nbase_lr: {self._d_lr}\nmomentum: 0.5\n'
                       f'momentum2: 0.999\nlr_policy: "fixed"\ndisplay: 0\nrandom_seed: {self._seed}\n')
        self._solver = caffe.get_solver(solver_path)
        if old is not None:  # a new input size keeps the trained weights
            for name, blobs in old.params.items():
                for target, source in zip(self._solver.net.params[name], blobs, strict=True):
                    target.data[...] = source.data
        self._shape = (batch, height, width)

    def reshape(self, bottom: Any, top: Any) -> None:
        shapes = [bottom[i].data.shape for i in range(len(bottom))]  # Caffe's blob vectors do not slice
        batch, channels, height, width = shapes[0]
        if channels != 1 or len(set(shapes)) != 1:
            raise ValueError(f"edge maps and condition must be N x 1 x H x W alike, got {shapes}")
        if self._shape != (batch, height, width):
            self._build(batch, height, width)
        top[0].reshape(1)

    @property
    def discriminator(self) -> Any:
        return self._solver.net

    def _run(self, edge: np.ndarray, cond: np.ndarray, label: float) -> tuple[float, list[np.ndarray]]:
        """Forward D on a batch (padded to D's 2N rows by repetition); its loss and feature copies."""
        net = self.discriminator
        rows = net.blobs["edge"].data.shape[0]
        net.blobs["edge"].data[...] = np.concatenate([edge, edge])[:rows]
        net.blobs["cond"].data[...] = np.concatenate([cond, cond])[:rows]
        net.blobs["label"].data[...] = label
        loss = float(net.forward()["loss"].item())
        return loss, [net.blobs[name].data.copy() for name in DISCRIMINATOR_FEATURES]

    def forward(self, bottom: Any, top: Any) -> None:
        fake, real, cond = (bottom[i].data.copy() for i in range(3))
        _, real_features = self._run(real, cond, 1.0)
        adversarial, fake_features = self._run(fake, cond, 1.0)  # non-saturating: fake labelled real
        self._real_features = real_features
        self._fake_features = fake_features
        self._batch = (fake, real, cond)
        matching = sum(float(np.abs(f - r).mean()) for f, r in zip(fake_features, real_features, strict=True))
        self.adversarial_loss, self.matching_loss = adversarial, matching
        top[0].data[...] = self.a_adv * adversarial + self.a_fm * matching

    def backward(self, top: Any, propagate_down: Any, bottom: Any) -> None:
        if not propagate_down[0]:
            return
        net = self.discriminator
        rows = bottom[0].data.shape[0]
        edge_diff = net.blobs["edge"].diff
        # D holds the fake batch twice (rows and rows again): each copy carries half of the gradient.
        net.backward()  # D still holds the fake forward pass: d adversarial / d edge
        gradient = self.a_adv * (edge_diff[:rows] + edge_diff[rows:])
        layer_index = {name: i for i, name in enumerate(net._layer_names)}
        for name, fake, real in zip(DISCRIMINATOR_FEATURES, self._fake_features, self._real_features, strict=True):
            net.blobs[name].diff[...] = np.sign(fake - real) / fake.size
            net._backward(layer_index[name], 0)  # from the layer that produced the feature down to the input
            gradient += self.a_fm * (edge_diff[:rows] + edge_diff[rows:])
        bottom[0].diff[...] = top[0].diff[0] * gradient

    def train_discriminator(self) -> float:
        """One Adam step of D on the last forward's real (label 1) and generated (label 0) edges."""
        fake, real, cond = self._batch
        net = self.discriminator
        rows = fake.shape[0]
        net.blobs["edge"].data[:rows], net.blobs["edge"].data[rows:] = real, fake
        net.blobs["cond"].data[:rows], net.blobs["cond"].data[rows:] = cond, cond
        net.blobs["label"].data[:rows], net.blobs["label"].data[rows:] = 1.0, 0.0
        self._solver.step(1)
        self.discriminator_loss = float(net.blobs["loss"].data.item())
        return self.discriminator_loss
