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
    n.loss = L.Python(n.fake, n.real, n.cond, module="netgen.layers.edge", layer="EdgeAdversarialLoss",
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
    from netgen.layers.edge_state import set_edge_alpha

    L = caffe.layers
    n = caffe.NetSpec()
    n.blurred, n.refined = L.Input(ntop=2, shape=[dict(dim=[1, 1, 2, 2])] * 2)
    n.mixed = L.Python(n.blurred, n.refined, module="netgen.layers.edge", layer="AlphaMix")
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


def _image_net(caffe, tmp_path, layer: str, channels: int, shape=(1, 8, 8)):
    L = caffe.layers
    n = caffe.NetSpec()
    n.image = L.Input(shape=dict(dim=[shape[0], channels, *shape[1:]]))
    n.out = L.Python(n.image, module="netgen.layers.edge", layer=layer)
    proto = n.to_proto()
    proto.force_backward = layer == "Grayscale"
    (tmp_path / f"{layer}.prototxt").write_text(str(proto))
    return caffe.Net(str(tmp_path / f"{layer}.prototxt"), caffe.TRAIN)


def test_grayscale_is_bt601_luma_of_bgr_and_passes_its_gradient(caffe, tmp_path):
    net = _image_net(caffe, tmp_path, "Grayscale", 3)
    net.blobs["image"].data[0, 0], net.blobs["image"].data[0, 1], net.blobs["image"].data[0, 2] = 1.0, 0.0, 0.0
    assert np.allclose(net.forward()["out"], 0.114), "blue weighs 0.114 in BT.601"
    net.blobs["out"].diff[...] = 2.0
    net.backward()
    assert np.allclose(net.blobs["image"].diff[0, :, 3, 3], [0.228, 1.174, 0.598])


def test_sobel_magnitude_of_a_step_edge(caffe, tmp_path):
    net = _image_net(caffe, tmp_path, "SobelMagnitude", 1)
    net.blobs["image"].data[...] = 0.0
    net.blobs["image"].data[0, 0, :, 4:] = 1.0
    edges = net.forward()["out"][0, 0]
    assert np.allclose(edges[:, 3], 4 / (4 * np.sqrt(2))) and np.allclose(edges[:, 4], 4 / (4 * np.sqrt(2)))
    assert np.allclose(edges[:, :3], 0) and np.allclose(edges[:, 5:], 0), "flat regions and borders have no edge"


def test_prototxt_naming_the_old_layer_modules_still_load(caffe, tmp_path):
    """Run folders written before the layers moved to netgen.layers name mrfnet.layers.*: the same classes."""
    from netgen.layers.edge import Grayscale
    from netgen.layers.scale_loss import ScaleRefinementLoss

    L = caffe.layers
    n = caffe.NetSpec()
    n.image = L.Input(shape=dict(dim=[1, 3, 4, 4]))
    n.target = L.Input(shape=dict(dim=[1, 1, 4, 4]))
    n.grey = L.Python(n.image, module="mrfnet.layers.edge", layer="Grayscale")
    n.loss = L.Python(n.grey, n.target, loss_weight=1, python_param=dict(
        module="mrfnet.layers.scale_loss", layer="ScaleRefinementLoss", param_str='{"scales": 1}'))
    (tmp_path / "old.prototxt").write_text(str(n.to_proto()))
    net = caffe.Net(str(tmp_path / "old.prototxt"), caffe.TRAIN)
    kinds = {type(layer) for layer in net.layers if layer.type == "Python"}
    assert kinds == {Grayscale, ScaleRefinementLoss}
    net.blobs["image"].data[...] = 0.5
    net.forward()
    assert np.allclose(net.blobs["grey"].data, 0.5, atol=1e-6)
