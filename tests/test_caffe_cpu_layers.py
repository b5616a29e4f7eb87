"""The CPU layers tools/caffe-patches/0003 threads with OpenMP: exact against NumPy, the same bits on 1 or 2 threads.

Pooling (max, threaded, and average), ReLU and Eltwise sum are checked bit for bit against loops written here
in Caffe's own order (window scan order, strict '>' for the argmax, float32 sums); convolution and
deconvolution (im2col / col2im) against a direct NumPy convolution to float32 rounding. Each net
runs in a child process started with OMP_NUM_THREADS=1 and with 2, and every output and gradient
must agree to the bit.
"""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from mrfnet.caffe_env import run_isolated

SHAPE = (2, 4, 13, 11)
POOLS = {  # name: (method, kernel, stride, pad)
    "max_k5_s1_p2": ("MAX", 5, 1, 2),
    "max_k3_s2": ("MAX", 3, 2, 0),
    "max_k2_s2_p1": ("MAX", 2, 2, 1),
    "ave_k3_s2_p1": ("AVE", 3, 2, 1),
}


def _net_prototxt() -> str:
    import caffe
    from caffe import layers as L
    from caffe import params as P

    n = caffe.NetSpec()
    n.data = L.Input(shape=dict(dim=list(SHAPE)))
    n.other = L.Input(shape=dict(dim=list(SHAPE)))
    for name, (method, kernel, stride, pad) in POOLS.items():  # each on its own copy, so its gradient is its own
        setattr(n, f"in_{name}", L.Input(shape=dict(dim=list(SHAPE))))
        pool = getattr(P.Pooling, method)
        setattr(n, name, L.Pooling(getattr(n, f"in_{name}"), pool=pool, kernel_size=kernel, stride=stride, pad=pad))
    n.relu = L.ReLU(n.other)
    n.sum = L.Eltwise(n.data, n.relu, operation=P.Eltwise.SUM)
    n.conv3 = L.Convolution(n.sum, num_output=6, kernel_size=3, pad=1, weight_filler=dict(type="gaussian", std=0.1),
                            bias_filler=dict(type="constant", value=0.1))
    n.conv5 = L.Convolution(n.data, num_output=4, kernel_size=5, stride=2, pad=2, group=2,
                            weight_filler=dict(type="gaussian", std=0.1), bias_term=False)
    n.deconv = L.Deconvolution(n.conv5, convolution_param=dict(num_output=4, kernel_size=4, stride=2, pad=1,
                                                               bias_term=False,
                                                               weight_filler=dict(type="gaussian", std=0.1)))
    proto = n.to_proto()
    proto.force_backward = True
    return str(proto)


def run_net(threads: int) -> dict[str, np.ndarray]:
    """In a child started with ``threads`` OpenMP threads: every top, every bottom diff, the weights."""
    import tempfile

    from mrfnet.caffe_env import import_caffe

    assert os.environ["OMP_NUM_THREADS"] == str(threads)
    caffe = import_caffe()
    caffe.set_mode_cpu()
    caffe.set_random_seed(3)
    with tempfile.NamedTemporaryFile("w", suffix=".prototxt", delete=False) as file:
        file.write(_net_prototxt())
    net = caffe.Net(file.name, caffe.TEST)
    os.unlink(file.name)
    rng = np.random.default_rng(0)
    net.blobs["data"].data[...] = rng.integers(-3, 4, SHAPE) / 2.0  # few levels: ties in every window
    for name in POOLS:
        net.blobs[f"in_{name}"].data[...] = net.blobs["data"].data
    net.blobs["other"].data[...] = rng.standard_normal(SHAPE)
    net.forward()
    for name in net.outputs:
        net.blobs[name].diff[...] = rng.standard_normal(net.blobs[name].diff.shape)
    net.backward()
    result = {f"top:{name}": net.blobs[name].data.copy() for name in net.blobs}
    result.update({f"top_diff:{name}": net.blobs[name].diff.copy() for name in net.outputs})
    diffs = ["data", "other", "sum", "relu", "conv5", *(f"in_{name}" for name in POOLS)]
    result.update({f"diff:{name}": net.blobs[name].diff.copy() for name in diffs})
    for name, params in net.params.items():
        for i, param in enumerate(params):
            result[f"param:{name}:{i}"] = param.data.copy()
            result[f"param_diff:{name}:{i}"] = param.diff.copy()
    return result


@pytest.fixture(scope="module")
def runs(caffe) -> dict[int, dict[str, np.ndarray]]:
    results = {}
    for threads in (1, 2):
        with pytest.MonkeyPatch.context() as patch:  # the spawned child takes this environment
            patch.setenv("OMP_NUM_THREADS", str(threads))
            patch.setenv("OPENBLAS_NUM_THREADS", "1")  # BLAS alike in both
            results[threads] = run_isolated(run_net, threads, timeout=120)
    return results


def _windows(size: int, pooled: int, kernel: int, stride: int, pad: int, average: bool):
    """Caffe's window bounds (start, end, pool_size contribution) along one axis, per output index."""
    for p in range(pooled):
        start = p * stride - pad
        end = min(start + kernel, size + pad) if average else min(start + kernel, size)
        full = end - start
        yield max(start, 0), min(end, size), full


def _pool_reference(x: np.ndarray, top_diff: np.ndarray, method: str, kernel: int, stride: int, pad: int):
    n, c, height, width = x.shape
    ph_count, pw_count = top_diff.shape[2:]
    top = np.zeros(top_diff.shape, np.float32)
    bottom_diff = np.zeros(x.shape, np.float32)
    average = method == "AVE"
    rows = list(_windows(height, ph_count, kernel, stride, pad, average))
    cols = list(_windows(width, pw_count, kernel, stride, pad, average))
    for i in range(n):
        for ch in range(c):
            plane, grad = x[i, ch], bottom_diff[i, ch]
            for ph, (h0, h1, fh) in enumerate(rows):
                for pw, (w0, w1, fw) in enumerate(cols):
                    g = top_diff[i, ch, ph, pw]
                    if average:
                        total = np.float32(0)
                        for h in range(h0, h1):
                            for w in range(w0, w1):
                                total = np.float32(total + plane[h, w])
                        size = np.float32(fh * fw)
                        top[i, ch, ph, pw] = total / size
                        share = np.float32(g / size)
                        for h in range(h0, h1):
                            for w in range(w0, w1):
                                grad[h, w] = np.float32(grad[h, w] + share)
                    else:
                        best, where = np.float32(-np.finfo(np.float32).max), None
                        for h in range(h0, h1):
                            for w in range(w0, w1):
                                if plane[h, w] > best:
                                    best, where = plane[h, w], (h, w)
                        top[i, ch, ph, pw] = best
                        grad[where] = np.float32(grad[where] + g)
    return top, bottom_diff


def test_every_output_and_gradient_is_the_same_on_one_and_two_threads(runs):
    one, two = runs[1], runs[2]
    assert one.keys() == two.keys()
    for key in one:
        np.testing.assert_array_equal(one[key], two[key], err_msg=key)


@pytest.mark.parametrize("name", list(POOLS))
def test_pooling_and_its_gradient_are_exactly_caffes_loop(runs, name):
    method, kernel, stride, pad = POOLS[name]
    run = runs[2]
    top, bottom_diff = _pool_reference(run["top:data"], run[f"top_diff:{name}"], method, kernel, stride, pad)
    np.testing.assert_array_equal(run[f"top:{name}"], top)
    np.testing.assert_array_equal(run[f"diff:in_{name}"], bottom_diff)


def test_relu_and_eltwise_sum_are_exact(runs):
    run = runs[2]
    relu = np.maximum(run["top:other"], np.float32(0))
    np.testing.assert_array_equal(run["top:relu"], relu)
    np.testing.assert_array_equal(run["top:sum"], np.float32(0) + run["top:data"] + relu)
    np.testing.assert_array_equal(run["diff:relu"], run["diff:sum"])
    np.testing.assert_array_equal(run["diff:other"], run["diff:relu"] * (run["top:other"] > 0))


def _conv(x: np.ndarray, w: np.ndarray, stride: int, pad: int, group: int) -> np.ndarray:
    n, c, height, width = x.shape
    out, per_group, k, _ = w.shape
    padded = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    oh, ow = (height + 2 * pad - k) // stride + 1, (width + 2 * pad - k) // stride + 1
    y = np.zeros((n, out, oh, ow))
    step = out // group
    for o in range(out):
        g = o // step
        for dy in range(k):
            for dx in range(k):
                patch = padded[:, g * per_group:(g + 1) * per_group, dy:dy + stride * oh:stride,
                               dx:dx + stride * ow:stride]
                y[:, o] += np.einsum("nchw,c->nhw", patch, w[o, :, dy, dx])
    return y


def test_convolutions_match_a_direct_convolution(runs):
    run = runs[2]
    conv3 = _conv(run["top:sum"], run["param:conv3:0"], 1, 1, 1) + run["param:conv3:1"][None, :, None, None]
    np.testing.assert_allclose(run["top:conv3"], conv3, rtol=1e-5, atol=1e-5)
    conv5 = _conv(run["top:data"], run["param:conv5:0"], 2, 2, 2)
    np.testing.assert_allclose(run["top:conv5"], conv5, rtol=1e-5, atol=1e-5)
    # a deconvolution is the adjoint of the convolution with its weights (stored bottom channels first):
    # <deconv(a), b> = <a, conv(b)>
    a, b = run["top:conv5"], run["top_diff:deconv"]
    lhs = float(np.sum(run["top:deconv"].astype(np.float64) * b))
    rhs = float(np.sum(a.astype(np.float64) * _conv(b, run["param:deconv:0"], 2, 1, 1)))
    assert lhs == pytest.approx(rhs, rel=1e-5)


def test_pycaffe_lets_idle_openmp_threads_sleep(caffe):
    """Spinning OpenMP threads starve OpenBLAS's on a small machine (docs/architecture.md, "Caffe's CPU threads")."""
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    code = "import os, caffe; print(os.environ['OMP_WAIT_POLICY'])"
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "PASSIVE"
    env["OMP_WAIT_POLICY"] = "ACTIVE"
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "ACTIVE", "a policy the user set is kept"
