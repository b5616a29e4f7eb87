"""The edge branch's Python layers on real Caffe: AlphaMix, the adversarial edge loss and its discriminator."""

from __future__ import annotations

import json

import numpy as np
import pytest

SHAPE = (2, 1, 16, 16)


def _net(caffe, tmp_path, **params):
    L = caffe.layers
    n = caffe.NetSpec()
    n.fake, n.real, n.cond = L.Input(ntop=3, shape=[dict(dim=list(SHAPE))] * 3)
    n.loss = L.Python(n.fake, n.real, n.cond, module="mrfnet.layers.edge", layer="EdgeAdversarialLoss",
                      param_str=json.dumps(params), loss_weight=1)
    proto = n.to_proto()
    proto.force_backward = True
    path = tmp_path / "edge.prototxt"
    path.write_text(str(proto))
    net = caffe.Net(str(path), caffe.TRAIN)
    rng = np.random.default_rng(0)
    for name in ("fake", "real", "cond"):
        net.blobs[name].data[...] = rng.random(SHAPE)
    return net


def _loss(net) -> float:
    return float(net.forward()["loss"].item())


@pytest.mark.parametrize("params", [dict(a_adv=1.0, a_fm=0.0), dict(a_adv=1.0, a_fm=10.0)])
def test_the_generator_gradient_matches_finite_differences(caffe, tmp_path, params):
    net = _net(caffe, tmp_path, **params)
    _loss(net)
    net.backward()
    analytic = net.blobs["fake"].diff.copy()
    rng = np.random.default_rng(1)
    eps = 1e-2
    for index in [tuple(rng.integers(0, s) for s in SHAPE) for _ in range(8)]:
        original = net.blobs["fake"].data[index]
        net.blobs["fake"].data[index] = original + eps
        plus = _loss(net)
        net.blobs["fake"].data[index] = original - eps
        minus = _loss(net)
        net.blobs["fake"].data[index] = original
        numeric = (plus - minus) / (2 * eps)
        assert numeric == pytest.approx(analytic[index], rel=0.05, abs=2e-4), index


def test_training_the_discriminator_separates_real_from_fake(caffe, tmp_path):
    net = _net(caffe, tmp_path, d_lr=1e-3)
    net.blobs["fake"].data[...] = 0.0
    net.forward()
    layer = next(layer for layer in net.layers if type(layer).__name__ == "EdgeAdversarialLoss")
    losses = [layer.train_discriminator() for _ in range(40)]
    assert losses[-1] < 0.5 * losses[0]
    assert net.forward()["loss"] > 1.0, "a confident D makes the generator's adversarial loss large"


def test_alpha_mix_follows_the_drivers_alpha(caffe, tmp_path):
    from mrfnet.layers.edge import set_edge_alpha

    L = caffe.layers
    n = caffe.NetSpec()
    n.blurred, n.refined = L.Input(ntop=2, shape=[dict(dim=[1, 1, 2, 2])] * 2)
    n.mixed = L.Python(n.blurred, n.refined, module="mrfnet.layers.edge", layer="AlphaMix")
    proto = n.to_proto()
    proto.force_backward = True
    (tmp_path / "mix.prototxt").write_text(str(proto))
    net = caffe.Net(str(tmp_path / "mix.prototxt"), caffe.TRAIN)
    net.blobs["blurred"].data[...] = 2.0
    net.blobs["refined"].data[...] = 10.0
    assert np.all(net.forward()["mixed"] == 2.0), "alpha starts at 0: blurred only"
    set_edge_alpha(net, 0.25)
    assert np.allclose(net.forward()["mixed"], 4.0)
    net.blobs["mixed"].diff[...] = 1.0
    net.backward()
    assert np.allclose(net.blobs["blurred"].diff, 0.75) and np.allclose(net.blobs["refined"].diff, 0.25)
