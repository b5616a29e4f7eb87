"""The DNNL engine of tools/caffe-patches/0008: oneDNN's (de)convolutions against BVLC's im2col code.

Every case of a grid over kernel, stride, pad, dilation, group, batch and odd sizes (and the
Deconvolution MRFNet upsamples with) is one layer of one net, built twice: engine CAFFE and engine
DNNL with the same weights (its 3x3 convolutions on Winograd's algorithm where oneDNN has it, and
again all direct: tools/caffe-patches/0010). Forward and all three gradients must agree within 1e-4
of the blob's largest value; the weight and bias gradients must add to what the diffs held (Caffe accumulates).
A finite-difference check stands in for Caffe's C++ GradientChecker. bf16 is held to a bfloat16
tolerance, refused where the CPU has no native bfloat16, and a short MRFNet training run on DNNL
must follow the CAFFE engine's losses.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
from scoring_helpers import net_from_text, relative_error

from mrfnet.runtime.caffe_env import CaffeError, run_isolated
from mrfnet.runtime.doctor import probe_caffe

CHANNELS = 4
TOLERANCE = 1e-4  # of the blob's largest magnitude: float rounding in another summation order
# bfloat16 keeps 8 significant bits: inputs and weights rounded by 2^-9 each, sums of up to ~100 terms
BF16_TOLERANCE = 2e-2


def _cases() -> list[tuple[str, dict[str, int], tuple[int, int, int, int]]]:
    """(layer type, convolution_param, input shape): the issue's grid, each value beside several others."""
    cases = []
    grid = itertools.product(("Convolution", "Deconvolution"), (1, 3, 4, 5), (1, 2, 3), (0, 1, 2), (1, 2),
                             (1, 2, CHANNELS))
    for index, (kind, kernel, stride, pad, dilation, group) in enumerate(grid):
        shape = (1 + 2 * (index % 2), CHANNELS, 11 + 2 * (index % 3), 9 + 2 * (index % 2))  # batch 1/3, odd sides
        extent = dilation * (kernel - 1) + 1
        if kind == "Convolution" and min(shape[2:]) + 2 * pad < extent:
            continue  # no output: Caffe refuses it too
        if kind == "Deconvolution" and stride * (min(shape[2:]) - 1) + extent - 2 * pad < 1:
            continue
        param = dict(num_output=CHANNELS if group == CHANNELS else 6 if kind == "Convolution" else 4,
                     kernel_size=kernel, stride=stride, pad=pad, dilation=dilation, group=group,
                     bias_term=index % 5 != 0)
        if kind == "Deconvolution" and group == 2:
            param["num_output"] = 6
        cases.append((kind, param, shape))
    # MRFNet's fixed bilinear x2 upsampling: kernel 4, stride 2, pad 1, group = channels, no bias
    cases.append(("Deconvolution", dict(num_output=CHANNELS, kernel_size=4, stride=2, pad=1, group=CHANNELS,
                                        bias_term=False), (2, CHANNELS, 7, 10)))
    return cases


CASES = _cases()


def _grid_prototxt(engine: str, precision: str = "FP32", cases: list = CASES, algorithm: str = "AUTO") -> str:
    import caffe
    from caffe import layers as L

    n = caffe.NetSpec()
    for index, (kind, param, shape) in enumerate(cases):
        setattr(n, f"in{index}", L.Input(shape=dict(dim=list(shape))))
        setattr(n, f"out{index}", getattr(L, kind)(getattr(n, f"in{index}"), convolution_param=dict(
            param, engine=engine, precision=precision, algorithm=algorithm,
            weight_filler=dict(type="gaussian", std=0.3), bias_filler=dict(type="gaussian", std=0.3))))
    proto = n.to_proto()
    proto.force_backward = True
    return str(proto)



def run_grid(caffe, engine: str, precision: str = "FP32", cases: list = CASES,
             reference=None, algorithm: str = "AUTO") -> dict[str, np.ndarray]:
    """Every top, bottom diff and parameter diff of the grid net (parameters copied from ``reference``)."""
    net = net_from_text(caffe, _grid_prototxt(engine, precision, cases, algorithm))
    weights = np.random.default_rng(1)
    for name, params in net.params.items():
        for index, blob in enumerate(params):
            blob.data[...] = reference.params[name][index].data if reference else weights.standard_normal(blob.shape)
            blob.diff[...] = 0.5  # gradients must add to this
    rng = np.random.default_rng(0)  # the same inputs and top diffs for every engine
    for index in range(len(cases)):
        net.blobs[f"in{index}"].data[...] = rng.standard_normal(net.blobs[f"in{index}"].shape)
    net.forward()
    for index in range(len(cases)):
        top = net.blobs[f"out{index}"]
        top.diff[...] = rng.standard_normal(top.shape)
    net.backward()
    found = {"net": net}
    for index in range(len(cases)):
        found[f"out{index}"] = net.blobs[f"out{index}"].data.copy()
        found[f"d_in{index}"] = net.blobs[f"in{index}"].diff.copy()
        for which, blob in enumerate(net.params[f"out{index}"]):
            found[f"d_param{index}_{which}"] = blob.diff.copy()
    return found


@pytest.fixture(scope="module")
def grids(caffe) -> dict[str, dict[str, np.ndarray]]:
    reference = run_grid(caffe, "CAFFE")
    return {"CAFFE": reference, "DNNL": run_grid(caffe, "DNNL", reference=reference["net"]),
            "DEFAULT": run_grid(caffe, "DEFAULT", reference=reference["net"]),
            "DIRECT": run_grid(caffe, "DNNL", reference=reference["net"], algorithm="DIRECT")}



@pytest.mark.parametrize("algorithm", ["DNNL", "DIRECT"])
@pytest.mark.parametrize("kind", ["Convolution", "Deconvolution"])
@pytest.mark.slow
def test_dnnl_matches_caffe_forward_and_every_gradient(grids, kind, algorithm):
    caffe_engine, dnnl = grids["CAFFE"], grids[algorithm]
    checked, failures = 0, []
    for index, (case_kind, param, shape) in enumerate(CASES):
        if case_kind != kind:
            continue
        keys = [f"out{index}", f"d_in{index}"] + [key for key in caffe_engine if key.startswith(f"d_param{index}_")]
        assert len(keys) == 3 + int(param["bias_term"])
        for key in keys:
            error = relative_error(caffe_engine[key], dnnl[key])
            checked += 1
            if not error < TOLERANCE:
                failures.append(f"{param} on {shape}, {key}: {error:.1e}")
    assert checked > 600 and not failures, "\n".join(failures)


@pytest.mark.slow
def test_direct_algorithm_keeps_winograd_off(grids):
    """Winograd (algorithm AUTO) rounds 3x3 stride-1 convolutions differently from DIRECT (where oneDNN has
    it for the case: not for every pad); every other case runs the same direct kernels in both, bit for bit."""
    winograd_shaped = differing = 0
    for index, (kind, param, _) in enumerate(CASES):
        candidate = kind == "Convolution" and param["kernel_size"] == 3 and param["stride"] == 1 and \
            param["dilation"] == 1 and param["group"] == 1
        same = np.array_equal(grids["DNNL"][f"out{index}"], grids["DIRECT"][f"out{index}"])
        winograd_shaped += candidate
        differing += candidate and not same
        assert same or candidate, (param, "differs without Winograd")
    assert 0 < differing <= winograd_shaped


@pytest.mark.slow
def test_default_is_dnnl_in_cpu_mode(grids):
    """DEFAULT gives DNNL's bits exactly, and those differ from CAFFE's somewhere (another summation order)."""
    for key, value in grids["DNNL"].items():
        if key != "net":
            np.testing.assert_array_equal(grids["DEFAULT"][key], value, err_msg=key)
    assert any(not np.array_equal(grids["CAFFE"][key], value) for key, value in grids["DNNL"].items() if key != "net")


def test_finite_differences_agree_with_the_dnnl_gradients(caffe):
    """Caffe's GradientChecker, in Python: loss = sum(top * R); central differences, step 1e-2, 1e-3 relative."""
    cases = [("Convolution", dict(num_output=3, kernel_size=3, stride=2, pad=1, dilation=2, group=1,
                                  bias_term=True), (2, 4, 7, 6)),
             ("Deconvolution", dict(num_output=4, kernel_size=4, stride=2, pad=1, dilation=1, group=2,
                                    bias_term=True), (1, 4, 5, 4))]
    net = net_from_text(caffe, _grid_prototxt("DNNL", cases=cases))
    rng = np.random.default_rng(1)
    for index in range(len(cases)):
        for blob in [net.blobs[f"in{index}"], *net.params[f"out{index}"]]:
            blob.data[...] = rng.standard_normal(blob.shape)
    net.forward()
    weights = {name: rng.standard_normal(net.blobs[name].shape) for name in net.outputs}

    def loss() -> float:
        net.forward()
        return sum(float((net.blobs[name].data.astype(np.float64) * weights[name]).sum()) for name in net.outputs)

    loss()
    for name in net.outputs:
        net.blobs[name].diff[...] = weights[name]
    for params in net.params.values():
        for blob in params:
            blob.diff[...] = 0
    net.backward()
    step = 1e-2
    for index in range(len(cases)):
        for blob in [net.blobs[f"in{index}"], *net.params[f"out{index}"]]:
            analytic = blob.diff.copy()
            flat = blob.data.reshape(-1)
            for position in rng.choice(flat.size, size=min(12, flat.size), replace=False):
                original = flat[position]
                flat[position] = original + step
                above = loss()
                flat[position] = original - step
                below = loss()
                flat[position] = original
                estimated = (above - below) / (2 * step)
                computed = analytic.reshape(-1)[position]
                scale = max(abs(computed), abs(estimated), 1.0)
                assert abs(computed - estimated) <= 1e-3 * scale, (cases[index][0], position, computed, estimated)


def _native_bf16() -> bool:
    return run_isolated(probe_caffe, timeout=120)["dnnl_native_bf16"]


@pytest.fixture(scope="module")
def native_bf16(caffe) -> bool:
    return _native_bf16()


@pytest.mark.slow
def test_bf16_stays_within_bfloat16_rounding_of_fp32(caffe, grids, native_bf16):
    if not native_bf16:
        pytest.skip("this CPU has no native bfloat16 (the refusal is tested below)")
    bf16 = run_grid(caffe, "DNNL", "BF16", reference=grids["CAFFE"]["net"])
    worst = max(relative_error(value, bf16[key]) for key, value in grids["CAFFE"].items() if key != "net")
    assert worst < BF16_TOLERANCE
    assert worst > TOLERANCE  # it really computed in bfloat16


def _bf16_net_in_child() -> None:
    import caffe

    caffe.set_mode_cpu()
    net_from_text(caffe, _grid_prototxt("DNNL", "BF16", cases=CASES[:1]))


def test_bf16_without_native_support_is_refused_with_one_clear_line(monkeypatch, tmp_path):
    """oneDNN limited to plain AVX-512 (DNNL_MAX_CPU_ISA) stands in for a CPU without bfloat16."""
    from mrfnet.train.run_setup import check_precision

    monkeypatch.setenv("DNNL_MAX_CPU_ISA", "AVX512_CORE")
    assert not _native_bf16()
    with pytest.raises(ValueError, match="native bfloat16"):
        check_precision("bf16", [])
    with pytest.raises(CaffeError, match="precision BF16 needs a CPU with native bfloat16"):
        run_isolated(_bf16_net_in_child, timeout=120)


def test_bf16_refuses_gpus_and_the_caffe_engine(caffe):
    from mrfnet.train.run_setup import check_precision
    from netgen import build_deploy
    from netgen.engine import set_convolution_engine

    with pytest.raises(ValueError, match="CPU only"):
        check_precision("bf16", [0])
    with pytest.raises(ValueError, match="DNNL engine only"):
        set_convolution_engine(build_deploy("mrfnet"), engine="caffe", precision="bf16")
    with pytest.raises(ValueError, match="unknown precision"):
        set_convolution_engine(build_deploy("mrfnet"), precision="fp16")


def test_netgen_names_the_engine_only_when_asked():
    from netgen import build_deploy
    from netgen.engine import set_convolution_engine

    plain = str(build_deploy("mrfnet"))
    assert "engine" not in plain and "precision" not in plain
    text = str(set_convolution_engine(build_deploy("mrfnet"), engine="caffe"))
    convolutions = text.count('type: "Convolution"') + text.count('type: "Deconvolution"')
    assert text.count("engine: CAFFE") == convolutions > 0


def _train_losses(engine: str, folder: str, iterations: int) -> list[float]:
    """Scale-loss MRFNet training on a small LMDB of random patches, one engine; the loss of each iteration."""
    import caffe

    from mrfnet.train.schedule import Schedule, solver_parameter
    from netgen import build_train_val
    from netgen.engine import set_convolution_engine

    caffe.set_mode_cpu()
    root = Path(folder)
    net = set_convolution_engine(build_train_val("mrfnet", train_source=str(root / "lmdb"),
                                                 val_source=str(root / "lmdb"), batch_size=2, crop_size=32),
                                 engine=engine)
    (root / f"{engine}.prototxt").write_text(str(net))
    param = solver_parameter(Schedule(records=8, batch_size=2, epochs=1000), net=str(root / f"{engine}.prototxt"),
                             snapshot_prefix=str(root / engine), base_lr=1e-4, seed=7)
    param.snapshot = 0
    (root / f"{engine}_solver.prototxt").write_text(str(param))
    solver = caffe.get_solver(str(root / f"{engine}_solver.prototxt"))
    losses = []
    for _ in range(iterations):
        solver.step(1)
        losses.append(sum(float(solver.net.blobs[name].data) for name in solver.net.outputs))
    return losses


@pytest.mark.slow
def test_twenty_mrfnet_iterations_on_dnnl_follow_the_caffe_engine(tmp_path):
    """At the paper's learning rate (1e-4). Training amplifies float rounding: at the main job's 5e-4 the two
    engines' losses drift 2.8e-3 apart by iteration 20 on this data, each the other's noise."""
    import cv2
    from scoring_helpers import make_pair_lmdb

    rng = np.random.default_rng(2)
    sharps = [cv2.resize(rng.integers(0, 256, (10, 10, 3), dtype=np.uint8), (40, 40)) for _ in range(8)]
    make_pair_lmdb(tmp_path / "lmdb", [(cv2.GaussianBlur(sharp, (5, 5), 1.5), sharp) for sharp in sharps])
    reference = run_isolated(_train_losses, "caffe", str(tmp_path), 20, timeout=600)
    dnnl = run_isolated(_train_losses, "dnnl", str(tmp_path), 20, timeout=600)
    assert reference[-1] < reference[0]  # it learns
    np.testing.assert_allclose(dnnl, reference, rtol=1e-3)
