"""Real Caffe: a NetSpec net forward/backward against NumPy, and a Python layer round trip."""

from __future__ import annotations

import json

import numpy as np


def _load(caffe, tmp_path, net_spec):
    proto = net_spec.to_proto()
    proto.force_backward = True  # also back-propagate into the Input blobs
    path = tmp_path / "net.prototxt"
    path.write_text(str(proto))
    return caffe.Net(str(path), caffe.TRAIN)


def test_two_layer_netspec_forward_backward_matches_numpy(caffe, tmp_path):
    L = caffe.layers
    n = caffe.NetSpec()
    n.data, n.target = L.Input(ntop=2, shape=[dict(dim=[2, 5]), dict(dim=[2, 3])])
    n.fc = L.InnerProduct(n.data, num_output=3, weight_filler=dict(type="gaussian", std=0.5),
                          bias_filler=dict(type="constant", value=0.1))
    n.loss = L.EuclideanLoss(n.fc, n.target)
    net = _load(caffe, tmp_path, n)

    rng = np.random.default_rng(0)
    x, t = rng.normal(size=(2, 5)), rng.normal(size=(2, 3))
    net.blobs["data"].data[...] = x
    net.blobs["target"].data[...] = t
    weight, bias = (p.data for p in net.params["fc"])
    assert list(net.params) == ["fc"], "NetSpec top names become the weight names"

    net.forward()
    y = x @ weight.T + bias
    np.testing.assert_allclose(net.blobs["fc"].data, y, rtol=1e-5)
    np.testing.assert_allclose(net.blobs["loss"].data, ((y - t) ** 2).sum() / (2 * 2), rtol=1e-5)

    net.backward()
    grad_y = (y - t) / 2
    np.testing.assert_allclose(net.params["fc"][0].diff, grad_y.T @ x, rtol=1e-4)
    np.testing.assert_allclose(net.params["fc"][1].diff, grad_y.sum(0), rtol=1e-4)


def test_python_layer_round_trip(caffe, tmp_path):
    L = caffe.layers
    n = caffe.NetSpec()
    n.data = L.Input(shape=dict(dim=[2, 3, 4, 4]))
    n.scaled = L.Python(n.data, module="layers_for_tests", layer="ScaleLayer",
                        param_str=json.dumps({"factor": 2.5}))
    n.loss = L.Python(n.scaled, module="layers_for_tests", layer="ScaleLayer",
                      param_str=json.dumps({"factor": -1.0}), loss_weight=1)
    proto = str(n.to_proto())
    assert 'param_str: "{\\"factor\\": 2.5}"' in proto
    net = _load(caffe, tmp_path, n)

    x = np.random.default_rng(1).normal(size=(2, 3, 4, 4)).astype(np.float32)
    net.blobs["data"].data[...] = x
    net.forward()
    np.testing.assert_allclose(net.blobs["scaled"].data, 2.5 * x, rtol=1e-6)
    np.testing.assert_allclose(net.blobs["loss"].data, -2.5 * x, rtol=1e-6)

    net.blobs["loss"].diff[...] = 1.0
    net.backward()
    np.testing.assert_allclose(net.blobs["data"].diff, np.full_like(x, -2.5), rtol=1e-6)
