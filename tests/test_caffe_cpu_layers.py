"""The CPU loops of tools/caffe-patches/0003 and 0007: exact against NumPy, the same bits on 1 or 2 threads.

Pooling (max, separable since 0007, and average), ReLU (in place too, with a negative slope) and
Eltwise sum are checked bit for bit against loops written here in Caffe's own order (window scan
order, strict '>' for the argmax, float32 sums); convolution and deconvolution (im2col / col2im)
against a direct NumPy convolution to float32 rounding. Each net runs in a child process started
with OMP_NUM_THREADS=1 and with 2, and every output and gradient must agree to the bit; so must
the weights after Adam steps whose element-wise updates are threaded.
"""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from mrfnet.runtime.caffe_env import run_isolated

SHAPE = (2, 4, 13, 11)
POOLS = {  # name: (method, kernel, stride, pad, input shape: a corner of SHAPE's data)
    "max_k5_s1_p2": ("MAX", 5, 1, 2, SHAPE),
    "max_k3_s2": ("MAX", 3, 2, 0, SHAPE),
    "max_k2_s2_p1": ("MAX", 2, 2, 1, SHAPE),
    "max_k7_s3_p3": ("MAX", 7, 3, 3, SHAPE),  # windows clipped on both sides at a stride above 1
    "max_k5_s1_p2_narrow": ("MAX", 5, 1, 2, (1, 3, 4, 2)),  # kernel offsets that reach past the plane
    "ave_k3_s2_p1": ("AVE", 3, 2, 1, SHAPE),
}
SLOPE = 0.25  # the in-place ReLU's negative slope


def _net_prototxt() -> str:
    import caffe
    from caffe import layers as L
    from caffe import params as P

    n = caffe.NetSpec()
    n.data = L.Input(shape=dict(dim=list(SHAPE)))
    n.other = L.Input(shape=dict(dim=list(SHAPE)))
    for name, (method, kernel, stride, pad, shape) in POOLS.items():  # each on its own copy: its own gradient
        setattr(n, f"in_{name}", L.Input(shape=dict(dim=list(shape))))
        pool = getattr(P.Pooling, method)
        setattr(n, name, L.Pooling(getattr(n, f"in_{name}"), pool=pool, kernel_size=kernel, stride=stride, pad=pad))
    n.relu = L.ReLU(n.other)
    n.leaky = L.Input(shape=dict(dim=list(SHAPE)))
    n.leaky_relu = L.ReLU(n.leaky, negative_slope=SLOPE, in_place=True)  # as the variants run it: in place
    n.sum = L.Eltwise(n.data, n.relu, operation=P.Eltwise.SUM)
    # engine CAFFE: the im2col / col2im path these patches thread (the DNNL engine: tests/test_dnnl_engine.py)
    n.conv3 = L.Convolution(n.sum, num_output=6, kernel_size=3, pad=1, engine=P.Convolution.CAFFE,
                            weight_filler=dict(type="gaussian", std=0.1),
                            bias_filler=dict(type="constant", value=0.1))
    n.conv5 = L.Convolution(n.data, num_output=4, kernel_size=5, stride=2, pad=2, group=2, engine=P.Convolution.CAFFE,
                            weight_filler=dict(type="gaussian", std=0.1), bias_term=False)
    n.deconv = L.Deconvolution(n.conv5, convolution_param=dict(num_output=4, kernel_size=4, stride=2, pad=1,
                                                               engine=P.Convolution.CAFFE,
                                                               bias_term=False,
                                                               weight_filler=dict(type="gaussian", std=0.1)))
    proto = n.to_proto()
    proto.force_backward = True
    return str(proto)


def run_net(threads: int) -> dict[str, np.ndarray]:
    """In a child started with ``threads`` OpenMP threads: every top, every bottom diff, the weights."""
    import tempfile

    from mrfnet.runtime.caffe_env import import_caffe

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
    for name, (*_, shape) in POOLS.items():
        net.blobs[f"in_{name}"].data[...] = net.blobs["data"].data[tuple(slice(0, size) for size in shape)]
    net.blobs["other"].data[...] = rng.standard_normal(SHAPE)
    leaky_input = rng.standard_normal(SHAPE).astype(np.float32)
    leaky_input.flat[::7] = 0  # ReLU's x <= 0 branch at 0 itself
    net.blobs["leaky"].data[...] = leaky_input
    net.forward()
    top_diffs = {}
    for name in net.outputs:  # kept aside: an in-place layer's backward pass overwrites its top's diff
        top_diffs[f"top_diff:{name}"] = rng.standard_normal(net.blobs[name].diff.shape).astype(np.float32)
        net.blobs[name].diff[...] = top_diffs[f"top_diff:{name}"]
    net.backward()
    result = {f"top:{name}": net.blobs[name].data.copy() for name in net.blobs}
    result["input:leaky"] = leaky_input
    result.update(top_diffs)
    diffs = ["data", "other", "sum", "relu", "conv5", "leaky", *(f"in_{name}" for name in POOLS)]
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
            # BLAS alike in both with the pthread OpenBLAS; the OpenMP one follows OMP_NUM_THREADS, but
            # does not split GEMMs this small
            patch.setenv("OPENBLAS_NUM_THREADS", "1")
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
    method, kernel, stride, pad, _ = POOLS[name]
    run = runs[2]
    top, bottom_diff = _pool_reference(run[f"top:in_{name}"], run[f"top_diff:{name}"], method, kernel, stride, pad)
    np.testing.assert_array_equal(run[f"top:{name}"], top)
    np.testing.assert_array_equal(run[f"diff:in_{name}"], bottom_diff)


def test_relu_and_eltwise_sum_are_exact(runs):
    run = runs[2]
    relu = np.maximum(run["top:other"], np.float32(0))
    np.testing.assert_array_equal(run["top:relu"], relu)
    np.testing.assert_array_equal(run["top:sum"], np.float32(0) + run["top:data"] + relu)
    np.testing.assert_array_equal(run["diff:relu"], run["diff:sum"])
    np.testing.assert_array_equal(run["diff:other"], run["diff:relu"] * (run["top:other"] > 0))


def test_in_place_leaky_relu_is_exact(runs):
    """Caffe's arithmetic: max(x, 0) + slope * min(x, 0) forward, dy * ((x > 0) + slope * (x <= 0)) backward."""
    run = runs[2]
    x, slope = run["input:leaky"], np.float32(SLOPE)
    np.testing.assert_array_equal(run["top:leaky"], np.maximum(x, 0) + slope * np.minimum(x, 0))
    y = run["top:leaky"]  # in place: the backward pass sees the output where the input was
    factor = (y > 0).astype(np.float32) + slope * (y <= 0).astype(np.float32)
    np.testing.assert_array_equal(run["diff:leaky"], run["top_diff:leaky"] * factor)


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


def test_pycaffe_lets_idle_openmp_threads_spin_briefly(caffe):
    """A sleep per parallel region costs a wake-up, endless spinning starves other threads (docs/architecture.md)."""
    code = "import os, caffe; print(os.environ.get('OMP_WAIT_POLICY'), os.environ.get('GOMP_SPINCOUNT'))"
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert done.stdout.split() == ["None", "20000"]
    done = subprocess.run([sys.executable, "-c", code], env={**env, "OMP_WAIT_POLICY": "PASSIVE"},
                          capture_output=True, text=True, check=True)
    assert done.stdout.split() == ["PASSIVE", "None"], "a policy the user set is kept, and left alone"
    done = subprocess.run([sys.executable, "-c", code], env={**env, "GOMP_SPINCOUNT": "7"},
                          capture_output=True, text=True, check=True)
    assert done.stdout.split() == ["None", "7"], "a spin count the user set is kept"


def adam_weights(threads: int) -> dict[str, np.ndarray]:
    """In a child with ``threads`` OpenMP threads: the weights after three Adam steps on 40000 parameters.

    PReLU's slopes, so that no GEMM or dot product (whose bits follow the BLAS thread count, which
    the OpenMP build of OpenBLAS takes from OMP_NUM_THREADS) makes the gradients: only the
    element-wise loops of the update differ between the runs.
    """
    import tempfile

    import caffe
    from caffe import layers as L

    from mrfnet.runtime.caffe_env import import_caffe

    assert os.environ["OMP_NUM_THREADS"] == str(threads)
    import_caffe().set_mode_cpu()
    caffe.set_random_seed(5)
    n = caffe.NetSpec()
    n.data, n.target = L.DummyData(shape=[dict(dim=[2, 40000, 1, 1])] * 2,
                                   data_filler=[dict(type="gaussian", std=1.0)] * 2, ntop=2)
    n.prelu = L.PReLU(n.data, filler=dict(type="uniform", min=0.0, max=0.5))
    n.loss = L.EuclideanLoss(n.prelu, n.target)
    with tempfile.TemporaryDirectory() as tmp:
        net_file, solver_file = os.path.join(tmp, "net.prototxt"), os.path.join(tmp, "solver.prototxt")
        with open(net_file, "w") as file:
            file.write(str(n.to_proto()))
        with open(solver_file, "w") as file:
            file.write(f'net: "{net_file}" type: "Adam" base_lr: 0.01 momentum: 0.9 momentum2: 0.999 delta: 1e-8 '
                       'lr_policy: "fixed" max_iter: 10 snapshot: 0 solver_mode: CPU random_seed: 5\n')
        solver = caffe.get_solver(solver_file)
        solver.step(3)
        assert solver.net.params["prelu"][0].count >= 32768  # large enough for the threaded loops
        return {f"{name}:{i}": param.data.copy() for name, params in solver.net.params.items()
                for i, param in enumerate(params)}


def test_adam_steps_are_the_same_bits_on_one_and_two_threads(caffe):
    results = {}
    for threads in (1, 2):
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv("OMP_NUM_THREADS", str(threads))
            results[threads] = run_isolated(adam_weights, threads, timeout=120)
    assert results[1].keys() == results[2].keys()
    for key in results[1]:
        np.testing.assert_array_equal(results[1][key], results[2][key], err_msg=key)
