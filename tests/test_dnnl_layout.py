"""Activations and gradients kept in oneDNN's layouts between DNNL layers (tools/caffe-patches/0009, 0010).

A DNNL (de)convolution leaves its output in oneDNN's blocked layout, inside the blob; ReLU, MAX
pooling, Eltwise SUM, Split's gradient sum and Crop's forward run on oneDNN in that layout when their
input has it, an in-place ReLU after a convolution runs inside it, and Caffe's plain copy is made only
when something else (a Concat, loss or Python) reads the blob. One small net holds every such
boundary; it runs with DNNL convolutions and with CAFFE-engine layers throughout, on the same
weights, and the two must agree on every output, input gradient and parameter gradient; oneDNN's
verbose log shows which layers really ran on oneDNN; data that Python writes into a blob after a
forward replaces the blocked copy.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from scoring_helpers import net_from_text, relative_error

TOLERANCE = 1e-4  # of the blob's largest magnitude, as in tests/test_dnnl_engine.py
REPO = Path(__file__).resolve().parents[1]


def chain_prototxt(engine: str) -> str:
    """Conv -> in-place ReLU -> 5x5 MAX pool -> conv -> split into: an Eltwise SUM (coefficients 1, -0.5)
    with the pool, a not-in-place ReLU, and a 3x3 stride-2 ceil-rounded pool; then Crop (on oneDNN, 0010)
    and Concat (which reads plain data), and one more conv after the Concat with an in-place leaky ReLU. The two
    in-place ReLUs become their convolutions' post-ops on the DNNL engine (0010)."""
    import caffe
    from caffe import layers as L
    from caffe import params as P

    conv = dict(weight_filler=dict(type="gaussian", std=0.3), bias_filler=dict(type="gaussian", std=0.3))
    engines = {} if engine == "DNNL" else dict(engine=P.Convolution.CAFFE)
    relu = {} if engine == "DNNL" else dict(engine=P.ReLU.CAFFE)
    pool = {} if engine == "DNNL" else dict(engine=P.Pooling.CAFFE)
    n = caffe.NetSpec()
    n.data = L.Input(shape=dict(dim=[3, 5, 13, 11]))
    n.conv1 = L.Convolution(n.data, convolution_param=dict(num_output=16, kernel_size=3, pad=1, **conv, **engines))
    n.relu1 = L.ReLU(n.conv1, in_place=True, relu_param=relu)
    n.pool1 = L.Pooling(n.relu1, pooling_param=dict(pool=P.Pooling.MAX, kernel_size=5, stride=1, pad=2, **pool))
    n.conv2 = L.Convolution(n.pool1, convolution_param=dict(num_output=16, kernel_size=3, pad=1, **conv, **engines))
    n.sum = L.Eltwise(n.conv2, n.pool1, eltwise_param=dict(operation=P.Eltwise.SUM, coeff=[1, -0.5]))
    n.relu2 = L.ReLU(n.conv2, relu_param=dict(negative_slope=0.1, **relu))
    n.pool2 = L.Pooling(n.conv2, pooling_param=dict(pool=P.Pooling.MAX, kernel_size=3, stride=2, pad=1, **pool))
    n.crop = L.Crop(n.relu2, n.pool2, crop_param=dict(axis=2, offset=[1, 1]))
    n.concat = L.Concat(n.crop, n.pool2)
    n.conv3 = L.Convolution(n.concat, convolution_param=dict(num_output=4, kernel_size=3, pad=1, **conv, **engines))
    n.relu3 = L.ReLU(n.conv3, in_place=True, relu_param=dict(negative_slope=0.2, **relu))
    proto = n.to_proto()
    proto.force_backward = True
    return str(proto)



OUTPUTS = ("sum", "conv3")


def run_chain(caffe, engine: str, reference=None) -> dict[str, np.ndarray]:
    net = net_from_text(caffe, chain_prototxt(engine))
    rng = np.random.default_rng(3)
    for name, params in net.params.items():
        for index, blob in enumerate(params):
            blob.data[...] = reference.params[name][index].data if reference else rng.standard_normal(blob.shape)
            blob.diff[...] = 0
    net.blobs["data"].data[...] = np.random.default_rng(0).standard_normal(net.blobs["data"].shape)
    net.forward()
    diffs = np.random.default_rng(1)
    for name in OUTPUTS:
        net.blobs[name].diff[...] = diffs.standard_normal(net.blobs[name].shape)
    net.backward()
    found = {"net": net, "d_data": net.blobs["data"].diff.copy()}
    for name in ("conv1", "pool1", "conv2", "relu2", "pool2", *OUTPUTS):
        found[name] = net.blobs[name].data.copy()
    for name, params in net.params.items():
        for index, blob in enumerate(params):
            found[f"d_{name}_{index}"] = blob.diff.copy()
    return found



@pytest.fixture(scope="module")
def chains(caffe) -> dict[str, dict[str, np.ndarray]]:
    reference = run_chain(caffe, "CAFFE")
    return {"CAFFE": reference, "DNNL": run_chain(caffe, "DNNL", reference["net"])}


def test_blocked_layouts_across_layers_match_caffe_forward_and_backward(chains):
    caffe_net, dnnl = chains["CAFFE"], chains["DNNL"]
    errors = {key: relative_error(value, dnnl[key]) for key, value in caffe_net.items() if key != "net"}
    assert len(errors) == 7 + 1 + 6  # blobs, the input gradient, three convolutions' weights and biases
    assert all(error < TOLERANCE for error in errors.values()), errors


def test_python_writes_replace_the_blocked_copy(caffe, chains):
    """A blob that a DNNL layer left blocked, overwritten from Python, is read as written by the next layer."""
    replaced = np.random.default_rng(5).standard_normal(chains["CAFFE"]["pool1"].shape).astype(np.float32)
    results = []
    for engine in ("CAFFE", "DNNL"):
        net = chains[engine]["net"]
        net.blobs["pool1"].data[...] = replaced
        net.forward(start="conv2")
        results.append(net.blobs["conv3"].data.copy())
    assert relative_error(*results) < TOLERANCE
    assert relative_error(results[0], chains["CAFFE"]["conv3"]) > 1e-2  # the write changed the result


SCRIPT = textwrap.dedent("""
    import sys
    sys.path.insert(0, {tests!r})
    from mrfnet.runtime.caffe_env import import_caffe
    from scoring_helpers import net_from_text
    from test_dnnl_layout import chain_prototxt
    caffe = import_caffe()
    caffe.set_mode_cpu()
    net = net_from_text(caffe, chain_prototxt("DNNL"))
    net.forward()
    net.backward()
""")


def test_relu_pooling_eltwise_and_split_run_on_onednn(tmp_path):
    """oneDNN's verbose log of one forward and backward of the DNNL chain (a child process: verbose mode is
    read at oneDNN's start)."""
    env = {**os.environ, "DNNL_VERBOSE": "1",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    done = subprocess.run([sys.executable, "-c", SCRIPT.format(tests=str(REPO / "tests"))], env=env, text=True,
                          capture_output=True, timeout=300, check=True)
    executed = [line.split(",") for line in done.stdout.splitlines() if line.startswith("onednn_verbose,exec")]
    kinds = [("pooling" if fields[3].startswith("pooling") else fields[3], fields[5]) for fields in executed]
    # the in-place ReLUs run inside their convolutions' forward (0010), the other on its own
    fused = [fields[7] for fields in executed if fields[3] == "convolution" and fields[5] == "forward_training"]
    assert ["post-ops:eltwise_relu" in attributes for attributes in fused] == [True, False, True]
    assert "post-ops:eltwise_relu:0.2" in fused[2]
    implementations = [fields[4] for fields in executed if fields[3] == "convolution"]
    assert any(name.startswith("jit_wino") for name in implementations)  # 3x3, stride 1: Winograd (0010)
    assert kinds.count(("eltwise", "forward_training")) == 1 and ("eltwise", "backward_data") in kinds
    assert ("sum", "undef") in kinds  # Eltwise SUM with coefficients (1, -0.5), a three-way Split's gradients
    assert ("binary", "undef") in kinds  # a two-way Split's gradients
    # a TEST net's pooling keeps no argmax; its backward runs the training forward for one
    assert [kind for kind in kinds if kind[0] == "pooling"] == [
        ("pooling", "forward_inference")] * 2 + [("pooling", "forward_training"), ("pooling", "backward_data")] * 2
