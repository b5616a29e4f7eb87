"""The generated nets in real Caffe: shapes, forward/backward, the scale loss and its weights, the Table I counts.

Forward and backward run at small sizes (an odd crop of 61 and a 61x83 deploy input: neither a
multiple of the stride 8) to keep the CPU suite short; 256x256 and 250x330 are checked through
Caffe's shape inference, which is where a size that does not fit would fail.
"""

from __future__ import annotations

import math

import lmdb
import numpy as np
import pytest

import netgen
from mrfnet import cli
from mrfnet.analyze import layer_counts
from mrfnet.runtime.caffe_env import CaffeError
from netgen.layers import scale_loss_values, set_scale_loss_weights

CROP = 61  # odd: scales 8, 16, 31, 61


@pytest.fixture(scope="session")
def pairs_lmdb(caffe, tmp_path_factory):
    """Two raw 6-channel uint8 Datums (blurred BGR, sharp BGR), as data_prep writes them: with a batch of two,
    every TEST-phase forward reads the same centre-cropped batch."""
    path = tmp_path_factory.mktemp("lmdb") / "pairs_lmdb"
    rng = np.random.default_rng(0)
    with lmdb.open(str(path), map_size=1 << 26) as env, env.begin(write=True) as txn:
        for index in range(2):
            sharp = rng.integers(0, 256, (3, 260, 340), dtype=np.uint8)
            blurred = ((sharp.astype(np.uint16) + np.roll(sharp, 2, axis=2)) // 2).astype(np.uint8)
            datum = caffe.io.array_to_datum(np.concatenate([blurred, sharp]))
            txn.put(f"{index:08d}".encode(), datum.SerializeToString())
    return str(path)


def load(caffe, tmp_path, net_param, phase, weights=None):
    path = tmp_path / f"{net_param.name}_{len(list(tmp_path.iterdir()))}.prototxt"
    path.write_text(str(net_param))
    return caffe.Net(str(path), phase, weights=weights) if weights else caffe.Net(str(path), phase)


def train_val(caffe, tmp_path, source, variant, loss, phase=None, crop=CROP):
    net_param = netgen.build_train_val(variant, train_source=source, val_source=source, batch_size=2,
                                       crop_size=crop, loss=loss)
    return load(caffe, tmp_path, net_param, caffe.TEST if phase is None else phase)


def total_loss(net):
    return sum(float(net.blobs[t].data) * float(net.blobs[t].diff) for t in netgen.SCALE_LOSS_TOPS)


def out_shapes(net):
    return [net.blobs[name].data.shape for name in netgen.OUTPUTS]


def expected_shapes(height, width, batch=1):
    return [(batch, 3, h, w) for h, w in netgen.scale_sides(height, width)]


@pytest.mark.parametrize("variant", [  # the quick subset (-m "not slow") keeps MRFNet
    pytest.param(variant, marks=() if variant == "mrfnet" else pytest.mark.slow) for variant in netgen.VARIANTS])
def test_deploy_shapes_and_forward_backward(caffe, tmp_path, variant):
    for height, width in ((256, 256), (250, 330)):
        # read intermediate blobs below: without shared storage (tests/test_caffe_lean.py checks it)
        net_param = netgen.build_deploy(variant, height=height, width=width, share_blobs=False)
        net_param.force_backward = True  # a deploy net has no loss to pull gradients
        net = load(caffe, tmp_path, net_param, caffe.TEST)
        assert out_shapes(net) == expected_shapes(height, width)
    net.blobs[netgen.INPUT].reshape(1, 3, 61, 83)  # the documented way to run any size
    net.reshape()
    assert out_shapes(net) == expected_shapes(61, 83)
    net.blobs[netgen.INPUT].data[...] = np.random.default_rng(1).random((1, 3, 61, 83))
    outputs = net.forward()
    assert all(np.isfinite(outputs[name]).all() for name in netgen.OUTPUTS)
    blurred = {name: net.blobs[name.replace("out", "blur")].data for name in netgen.OUTPUTS[:-1]}
    for name, image in blurred.items():  # the untrained net returns its input at every scale (zero output convs)
        np.testing.assert_array_equal(outputs[name], image)
    np.testing.assert_array_equal(outputs[netgen.PREDICTION], net.blobs[netgen.INPUT].data)
    for name in netgen.OUTPUTS:
        net.blobs[name].diff[...] = 1
    net.backward()
    assert np.abs(net.params["conv_r4_out"][0].diff).sum() > 0  # the output convolutions learn first
    rng = np.random.default_rng(2)
    for k in range(1, len(netgen.OUTPUTS) + 1):  # once they are non-zero the gradient reaches the encoder
        weights = net.params[f"conv_r{k}_out"][0]
        weights.data[...] = rng.normal(0, 1e-3, weights.data.shape)
    net.forward()
    net.backward()
    gradient = net.params["Conv1"][0].diff
    assert np.isfinite(gradient).all() and np.abs(gradient).sum() > 0


@pytest.mark.parametrize("variant", list(netgen.VARIANTS))
@pytest.mark.parametrize("loss", ["native", "python"])
@pytest.mark.slow
def test_train_val_trains_on_lmdb_pairs(caffe, tmp_path, pairs_lmdb, variant, loss):
    for crop in (256, 250):  # Caffe's shape inference at set-up, no forward
        net = train_val(caffe, tmp_path, pairs_lmdb, variant, loss, phase=caffe.TRAIN, crop=crop)
        assert out_shapes(net) == expected_shapes(crop, crop, batch=2)
        assert [net.blobs[name].data.shape for name in netgen.TARGETS] == expected_shapes(crop, crop, batch=2)
    net = train_val(caffe, tmp_path, pairs_lmdb, variant, loss, phase=caffe.TRAIN)
    assert net.blobs["blur"].data.shape == net.blobs["sharp"].data.shape == (2, 3, CROP, CROP)
    net.forward()
    assert out_shapes(net) == expected_shapes(CROP, CROP, batch=2)
    assert [net.blobs[name].data.shape for name in netgen.TARGETS] == expected_shapes(CROP, CROP, batch=2)
    assert 0 < total_loss(net) < math.inf
    net.backward()
    assert np.abs(net.params["conv_r4_out"][0].diff).sum() > 0  # zero-initialised: the first to learn
    rng = np.random.default_rng(3)
    for k in range(1, len(netgen.OUTPUTS) + 1):  # once non-zero, the gradient reaches every layer
        weights = net.params[f"conv_r{k}_out"][0]
        weights.data[...] = rng.normal(0, 1e-3, weights.data.shape)
    net.clear_param_diffs()
    net.forward()
    net.backward()
    for name in ("Conv1", "conv_r1_1", "deconv3", "conv_r4_out"):
        gradient = net.params[name][0].diff
        assert np.isfinite(gradient).all() and np.abs(gradient).sum() > 0, name


def eq5(net):
    """Eq. 5 from the net's own blobs, in float64: 1/(2K) sum_k mean_over_batch ||L_k - S_k||^2 / (c h w)."""
    terms = []
    for output, target in zip(netgen.OUTPUTS, netgen.TARGETS, strict=True):
        difference = net.blobs[output].data.astype(np.float64) - net.blobs[target].data
        terms.append(np.sum(difference ** 2) / (2 * difference.size))  # size = N c h w
    return terms, sum(terms) / len(terms)


@pytest.mark.parametrize("variant", ["mrfnet", "refinenet"])
@pytest.mark.slow
def test_python_and_native_losses_agree_and_match_eq5(caffe, tmp_path, pairs_lmdb, variant):
    native = train_val(caffe, tmp_path, pairs_lmdb, variant, "native")
    weights = tmp_path / "weights.caffemodel"
    native.save(str(weights))
    python = load(caffe, tmp_path, netgen.build_train_val(variant, train_source=pairs_lmdb, val_source=pairs_lmdb,
                                                          batch_size=2, crop_size=CROP, loss="python"),
                  caffe.TEST, weights=str(weights))
    for net in (native, python):
        net.forward()
        net.backward()
    assert np.array_equal(native.blobs["blur"].data, python.blobs["blur"].data)  # same records, same crops
    terms, expected = eq5(native)
    for net in (native, python):
        assert total_loss(net) == pytest.approx(expected, rel=1e-5)
        assert list(scale_loss_values(net).values()) == pytest.approx(terms, rel=1e-5)
    for name in native.params:
        for a, b in zip(native.params[name], python.params[name], strict=True):
            np.testing.assert_allclose(b.diff, a.diff, rtol=1e-5, atol=1e-5 * np.abs(a.diff).max() + 1e-30,
                                       err_msg=name)


@pytest.mark.parametrize("loss", ["native", "python"])
def test_set_scale_loss_weights_changes_loss_and_gradients(caffe, tmp_path, pairs_lmdb, loss):
    net = train_val(caffe, tmp_path, pairs_lmdb, "lwrefinenet", loss)
    net.forward()
    net.backward()
    base_loss = total_loss(net)
    base_grads = [net.blobs[name].diff.copy() for name in netgen.OUTPUTS]
    terms = list(scale_loss_values(net).values())
    weights = (2.0, 0.0, 0.5, 3.0)
    set_scale_loss_weights(net, weights)
    caffe_total = net._forward(0, len(net.layers) - 1)  # Net::ForwardFromTo: Caffe's own weighted loss
    net.backward()
    expected = sum(w * t for w, t in zip(weights, terms, strict=True)) / 4
    assert caffe_total == pytest.approx(expected, rel=1e-5)
    assert total_loss(net) == pytest.approx(expected, rel=1e-5)
    assert total_loss(net) != pytest.approx(base_loss, rel=1e-3)
    for weight, name, before in zip(weights, netgen.OUTPUTS, base_grads, strict=True):
        np.testing.assert_allclose(net.blobs[name].diff, weight * before, rtol=1e-5, atol=1e-12)
    assert list(scale_loss_values(net).values()) == pytest.approx(terms, rel=1e-5)  # unweighted terms
    set_scale_loss_weights(net, (1, 1, 1, 1))
    net.forward()
    assert total_loss(net) == pytest.approx(base_loss, rel=1e-5)
    with pytest.raises(ValueError):
        set_scale_loss_weights(net, (1, 1, 1))
    with pytest.raises(ValueError):
        set_scale_loss_weights(net, (1, 1, -1, 1))


def test_set_scale_loss_weights_rejects_a_net_without_scale_losses(caffe, tmp_path):
    net = load(caffe, tmp_path, netgen.build_deploy("mrfnet", height=16, width=16), caffe.TEST)
    with pytest.raises(ValueError):
        set_scale_loss_weights(net, (1, 1, 1, 1))


def test_python_loss_gradient_matches_finite_differences(caffe, tmp_path):
    from caffe import layers as L

    n = caffe.NetSpec()
    shapes = [(2, 3, 3, 4), (2, 3, 5, 7)]
    bottoms = []
    for k, shape in enumerate(shapes):
        n[f"p{k}"] = L.Input(shape=dict(dim=list(shape)))
        n[f"t{k}"] = L.Input(shape=dict(dim=list(shape)))
        bottoms += [n[f"p{k}"], n[f"t{k}"]]
    n.l0, n.l1 = L.Python(*bottoms, ntop=2, loss_weight=[1, 1], python_param=dict(
        module="netgen.layers.scale_loss", layer="ScaleRefinementLoss", param_str='{"scales": 2}'))
    proto = n.to_proto()
    proto.force_backward = True
    net = load(caffe, tmp_path, proto, caffe.TEST)
    rng = np.random.default_rng(2)
    for name in ("p0", "t0", "p1", "t1"):
        net.blobs[name].data[...] = rng.random(net.blobs[name].data.shape)
    net.blobs["l0"].diff[...], net.blobs["l1"].diff[...] = 0.7, 1.9  # per-scale weights

    def loss():
        net.forward()
        return 0.7 * float(net.blobs["l0"].data) + 1.9 * float(net.blobs["l1"].data)

    loss()
    net.backward()
    for name in ("p0", "t0", "p1", "t1"):
        analytic = net.blobs[name].diff.copy()
        for index in [(0, 0, 0, 0), (1, 2, 2, 3), (0, 1, 1, 2)]:
            original = float(net.blobs[name].data[index])
            step = 1e-2
            net.blobs[name].data[index] = original + step
            up = loss()
            net.blobs[name].data[index] = original - step
            down = loss()
            net.blobs[name].data[index] = original
            assert analytic[index] == pytest.approx((up - down) / (2 * step), rel=1e-3, abs=1e-7), (name, index)


def test_python_loss_rejects_miswired_bottoms(caffe, tmp_path):
    from caffe import layers as L

    n = caffe.NetSpec()
    n.p = L.Input(shape=dict(dim=[1, 3, 4, 4]))
    n.t = L.Input(shape=dict(dim=[1, 3, 4, 4]))
    n.loss = L.Python(n.p, n.t, loss_weight=1, python_param=dict(
        module="netgen.layers.scale_loss", layer="ScaleRefinementLoss", param_str='{"scales": 2}'))
    path = tmp_path / "bad.prototxt"
    path.write_text(str(n.to_proto()))
    with pytest.raises(CaffeError, match="ScaleRefinementLoss"):
        from mrfnet.runtime.caffe_env import run_isolated

        run_isolated(_load_net, str(path), timeout=120)


def _load_net(path: str) -> None:
    import caffe

    caffe.Net(path, caffe.TEST)


def test_weights_load_by_name_into_regenerated_nets(caffe, tmp_path, pairs_lmdb):
    trained = train_val(caffe, tmp_path, pairs_lmdb, "mrfnet", "native", phase=caffe.TRAIN)
    weights = tmp_path / "trained.caffemodel"
    trained.save(str(weights))
    again = train_val(caffe, tmp_path, pairs_lmdb, "mrfnet", "python")
    again.copy_from(str(weights))
    deploy = load(caffe, tmp_path, netgen.build_deploy("mrfnet", height=32, width=48), caffe.TEST,
                  weights=str(weights))
    assert list(deploy.params) == list(trained.params) == list(again.params)
    for name, blobs in trained.params.items():
        for index, blob in enumerate(blobs):
            assert np.array_equal(deploy.params[name][index].data, blob.data), name
            assert np.array_equal(again.params[name][index].data, blob.data), name


def test_report_counts_from_caffe_shapes(caffe, tmp_path):
    deploy = netgen.build_deploy("mrfnet", height=64, width=96)
    rows = {row.name: row for row in layer_counts.layer_table(str(deploy))}
    net = load(caffe, tmp_path, deploy, caffe.TEST)
    assert sum(row.params for row in rows.values()) == sum(b.data.size for bs in net.params.values() for b in bs)
    conv1 = rows["Conv1"]
    assert (conv1.kernel, conv1.stride, conv1.pad, conv1.channels, conv1.size) == ("5x5", "1x1", "2x2", 32, (64, 96))
    assert conv1.macs == 64 * 96 * 32 * 3 * 5 * 5
    assert rows["Conv3"].size == (32, 48) and rows["Conv3"].macs == 32 * 48 * 128 * 64 * 25
    assert rows["deconv1"].macs == 8 * 12 * 256 * 128 * 16  # per input position of the 1/8 map
    assert rows["r1_crp_pool1"].kernel == "5x5" and rows["r1_crp_pool1"].macs == 0
    resized = {row.name: row for row in layer_counts.layer_table(str(deploy), 250, 330)}
    assert resized["out_r4"].size == (250, 330) and resized["out_r1"].size == (32, 42)


def test_report_turns_caffe_rejections_into_errors(caffe):
    broken = str(netgen.build_deploy("mrfnet")).replace('bottom: "Conv7"', 'bottom: "Conv77"', 1)
    with pytest.raises(CaffeError, match="Conv77"):
        layer_counts.layer_table(broken)
    with pytest.raises(ValueError):
        layer_counts.layer_table("layer { this is not a prototxt")


@pytest.mark.slow
def test_report_prints_every_variant_with_totals_and_ratios(caffe, capsys):
    assert cli.main(["netgen", "--report", "--sizes", "64x64,96x48"]) == 0
    text = capsys.readouterr().out
    for variant in netgen.VARIANTS:
        assert f"## {variant}" in text
    assert "lwrefinenet vs refinenet: whole net params -" in text and "refinement blocks params -" in text
    assert "MACs@96x48" in text and "conv_r4_m4" in text


@pytest.mark.slow
def test_draw_renders_a_png(caffe, tmp_path):
    pytest.importorskip("pydot")
    assert cli.main(["netgen", "--draw", str(tmp_path), "--variants", "lwrefinenet"]) == 0
    assert (tmp_path / "lwrefinenet.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
