"""netgen without running a net: committed files, variant structure, Table I geometry, the loss wiring, errors, CLI."""

from __future__ import annotations

import json
import logging

import pytest

import netgen
from mrfnet import cli
from mrfnet.commands.netgen import stale_files
from netgen.network import committed_prototxts
from netgen.sizes import parse_sizes

from conftest import REPO


def layers_by_name(net):
    return {layer.name: layer for layer in net.layer}


def test_committed_prototxts_match_the_generator():
    assert stale_files(REPO / "prototxt", list(netgen.VARIANTS)) == []


def test_check_reports_an_edited_file_and_regeneration_fixes_it(tmp_path):
    assert cli.main(["netgen", "--out-dir", str(tmp_path), "--variants", "mrfnet"]) == 0
    deploy = tmp_path / "mrfnet" / "deploy.prototxt"
    assert deploy.read_text() == committed_prototxts("mrfnet")["deploy.prototxt"]
    deploy.write_text(deploy.read_text().replace("num_output: 32", "num_output: 33", 1))
    assert cli.main(["netgen", "--check", "--out-dir", str(tmp_path), "--variants", "mrfnet"]) == 1
    assert cli.main(["netgen", "--check", "--out-dir", str(tmp_path), "--variants", "refinenet"]) == 1  # missing
    assert cli.main(["netgen", "--out-dir", str(tmp_path), "--variants", "mrfnet"]) == 0
    assert cli.main(["netgen", "--check", "--out-dir", str(tmp_path), "--variants", "mrfnet"]) == 0


def test_generation_is_deterministic():
    assert str(netgen.build_train_val("mrfnet", loss="python")) == str(netgen.build_train_val("mrfnet", loss="python"))


# Table I after the documented repairs: (kernel, output channels, stride, pad).
TABLE_I = {
    "Conv1": (5, 32, 1, 2), "Conv2": (1, 64, 1, 0), "Conv3": (5, 128, 2, 2), "Conv4": (1, 128, 1, 0),
    "Conv5": (3, 256, 2, 1), "Conv6": (1, 256, 1, 0), "Conv7": (3, 256, 2, 1), "Conv8": (1, 256, 1, 0),
    "conv_r1_1": (3, 256, 1, 1), "conv_r1_m1": (3, 256, 1, 1), "conv_r1_m2": (1, 256, 1, 0),
    "conv_r1_m3": (3, 256, 1, 1), "conv_r1_m4": (1, 256, 1, 0), "deconv1": (4, 128, 2, 1),
    "conv_r2_1": (3, 128, 1, 1), "conv_r2_m1": (3, 128, 1, 1), "conv_r2_m2": (1, 128, 1, 0),
    "conv_r2_m3": (3, 128, 1, 1), "conv_r2_m4": (1, 128, 1, 0), "deconv2": (4, 64, 2, 1),
    "conv_r3_1": (3, 64, 1, 1), "conv_r3_m1": (3, 64, 1, 1), "conv_r3_m2": (1, 64, 1, 0),
    "conv_r3_m3": (3, 64, 1, 1), "conv_r3_m4": (1, 64, 1, 0), "deconv3": (4, 32, 2, 1),
    "conv_r4_1": (3, 32, 1, 1), "conv_r4_m1": (3, 32, 1, 1), "conv_r4_m2": (3, 32, 1, 1),
    "conv_r4_m3": (1, 32, 1, 0), "conv_r4_m4": (3, 32, 1, 1),
}


def test_mrfnet_has_table_one_layers_with_their_geometry():
    layers = layers_by_name(netgen.build_deploy("mrfnet"))
    for name, expected in TABLE_I.items():
        p = layers[name].convolution_param
        assert (p.kernel_size[0], p.num_output, p.stride[0], p.pad[0]) == expected, name


def _convolutions(net):
    return {layer.name: layer.convolution_param for layer in net.layer if layer.type == "Convolution"}


def test_variants_switch_exactly_the_documented_parts():
    nets = {variant: _convolutions(netgen.build_deploy(variant)) for variant in netgen.VARIANTS}
    for variant, convs in nets.items():
        spec = netgen.get_variant(variant)
        assert any(name.startswith("conv_r1_m") for name in convs) == spec.residual, variant
        assert ("r1_remote" in convs) == spec.residual, variant
        assert ("r1_rcu1_conv3" in convs) == spec.lightweight, variant  # LW-RCU's third (1x1) convolution
        assert convs["r2_crp_conv1"].kernel_size[0] == (1 if spec.lightweight else 3)
        assert convs["r2_fusion_up"].kernel_size[0] == (1 if spec.lightweight else 3)
        assert not convs["r2_crp_conv1"].bias_term
    assert {p.kernel_size[0] for name, p in nets["rcrefinenet"].items() if "_m" in name} == {3}
    encoder = [f"Conv{i}" for i in range(1, 9)]
    assert all(str(nets[v][c]) == str(nets["refinenet"][c]) for v in nets for c in encoder)  # shared encoder


def test_deploy_has_one_input_and_no_loss():
    net = netgen.build_deploy("lwrefinenet", height=720, width=1280)
    assert [layer.type for layer in net.layer].count("Input") == 1
    assert list(net.layer[0].input_param.shape[0].dim) == [1, 3, 720, 1280]
    assert not any("Loss" in layer.type or layer.type in ("Python", "Data") for layer in net.layer)


def test_train_val_reads_pairs_and_slices_them():
    net = netgen.build_train_val("refinenet", train_source="/t", val_source="/v", batch_size=3, crop_size=96)
    train, val, slice_ = net.layer[:3]
    assert (train.include[0].phase, val.include[0].phase) == (0, 1)  # TRAIN, TEST
    assert (train.data_param.source, val.data_param.source) == ("/t", "/v")
    assert train.data_param.backend == val.data_param.backend == 1  # LMDB
    assert train.data_param.batch_size == val.data_param.batch_size == 3
    assert train.transform_param.mirror and not val.transform_param.mirror
    assert train.transform_param.crop_size == val.transform_param.crop_size == 96
    assert train.transform_param.scale == pytest.approx(1 / 255)
    assert (slice_.type, slice_.slice_param.axis, list(slice_.slice_param.slice_point)) == ("Slice", 1, [3])
    assert list(slice_.top) == ["blur", "sharp"]


@pytest.mark.parametrize("crop", [256, 250])
def test_native_loss_weights_carry_eq5_normalisation(crop):
    layers = layers_by_name(netgen.build_train_val("mrfnet", crop_size=crop, loss_weights=(1, 2, 3, 4)))
    for index, ((h, w), top) in enumerate(zip(netgen.scale_sides(crop, crop), netgen.SCALE_LOSS_TOPS, strict=True)):
        layer = layers[top]
        assert layer.type == "EuclideanLoss"
        assert layer.loss_weight[0] == pytest.approx((index + 1) / (4 * 3 * h * w), rel=1e-6)
    assert list(layers["loss_r4"].bottom) == ["out_r4", "sharp"]


def test_python_loss_is_one_layer_with_a_top_per_scale():
    net = netgen.build_train_val("mrfnet", loss="python")
    (layer,) = [layer for layer in net.layer if layer.type == "Python"]
    assert list(layer.top) == list(netgen.SCALE_LOSS_TOPS)
    assert list(layer.loss_weight) == [1, 1, 1, 1]
    assert json.loads(layer.python_param.param_str) == {"scales": 4}
    assert list(layer.bottom[:2]) == ["out_r1", "sharp_r1"] and list(layer.bottom[-2:]) == ["out_r4", "sharp"]


def test_scale_sides_round_up():
    assert netgen.scale_sides(250, 330) == [(32, 42), (63, 83), (125, 165), (250, 330)]


@pytest.mark.parametrize("call", [
    lambda: netgen.build_deploy("unet"),
    lambda: netgen.build_train_val("MRFNet"),
    lambda: netgen.build_deploy("mrfnet", height=7, width=64),
    lambda: netgen.build_deploy("mrfnet", height=64, width=0),
    lambda: netgen.build_deploy("mrfnet", height=64.0, width=64),
    lambda: netgen.build_deploy("mrfnet", batch_size=0),
    lambda: netgen.build_train_val("mrfnet", crop_size=4),
    lambda: netgen.build_train_val("mrfnet", batch_size=0),
    lambda: netgen.build_train_val("mrfnet", loss="l1"),
    lambda: netgen.build_train_val("mrfnet", loss_weights=(1, 1, 1)),
    lambda: netgen.build_train_val("mrfnet", loss_weights=(0, 1, 1, 1)),
    lambda: netgen.build_train_val("mrfnet", loss_weights=(1, 1, 1, float("nan"))),
    lambda: parse_sizes("256"),
    lambda: parse_sizes("256x256,1280-720"),
])
def test_bad_input_raises_value_error(call):
    with pytest.raises(ValueError):
        call()


def _the_one_error_line(caplog) -> str:
    """The single ERROR the last command logged, checked to be one line without a traceback; clears the log."""
    errors = [record for record in caplog.records if record.levelno >= logging.ERROR]
    assert len(errors) == 1, [record.getMessage() for record in errors]
    message = errors[0].getMessage()
    assert "\n" not in message and errors[0].exc_info is None and "Traceback" not in caplog.text, caplog.text
    caplog.clear()
    return message


def test_cli_reports_bad_input_in_one_line(capsys, caplog, tmp_path):
    assert cli.main(["netgen", "--report", "--sizes", "abc"]) == 1
    message = _the_one_error_line(caplog)
    assert "--sizes" in message and "'abc'" in message, message
    missing = tmp_path / "missing.prototxt"
    assert cli.main(["netgen", "--report-prototxt", str(missing)]) == 1
    message = _the_one_error_line(caplog)
    assert "--report-prototxt" in message and str(missing) in message, message
    assert "Traceback" not in capsys.readouterr().err
    with pytest.raises(SystemExit) as exited:
        cli.main(["netgen", "--variants", "unet"])
    assert exited.value.code == 2  # argparse: its usage, then one error line
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if "error:" in line]
    assert len(errors) == 1 and "'unet'" in errors[0] and "Traceback" not in err, err


def test_parse_sizes_reads_width_by_height():
    assert parse_sizes("256x256, 1280x720") == [(256, 256), (720, 1280)]


def test_report_prototxt_refuses_an_empty_net_and_unknown_layer_types(tmp_path, caplog):
    empty = tmp_path / "empty.prototxt"
    empty.write_text("")
    unknown = tmp_path / "unknown.prototxt"
    unknown.write_text('layer { name: "in" type: "Input" top: "x" '
                       'input_param { shape { dim: 1 dim: 3 dim: 8 dim: 8 } } }\n'
                       'layer { name: "f" type: "Frobnicate" bottom: "x" top: "y" }\n')
    assert cli.main(["netgen", "--report-prototxt", str(empty)]) == 1
    assert "no layers" in caplog.text
    assert cli.main(["netgen", "--report-prototxt", str(unknown)]) == 1
    assert "'f' (Frobnicate)" in caplog.text and "Check failed" not in caplog.text


def test_the_coarse_output_convolutions_rate_is_set_alone_and_checked():
    """The three coarser paths' output convolutions take their own learning-rate multiplier (issue 27: how fast
    the scale loss's coarse terms reach the shared layers); the full-resolution one keeps 0.1."""
    from netgen.errors import NetgenError
    from netgen.network import OUTPUT_LR_MULT, build_train_val

    def rates(net):
        return {layer.name: [round(param.lr_mult, 6) for param in layer.param] for layer in net.layer
                if layer.name.startswith("conv_r") and layer.name.endswith("_out")}

    assert rates(build_train_val("mrfnet", crop_size=32)) == {f"conv_r{k}_out": [OUTPUT_LR_MULT] * 2
                                                              for k in range(1, 5)}
    faster = rates(build_train_val("lwrefinenet", crop_size=32, coarse_output_lr_mult=1.0))
    assert faster == {"conv_r1_out": [], "conv_r2_out": [], "conv_r3_out": [],  # Caffe's default rate, 1
                      "conv_r4_out": [OUTPUT_LR_MULT] * 2}
    for bad in (0, -1.0, float("nan")):
        with pytest.raises(NetgenError, match="coarse_output_lr_mult must be a positive number"):
            build_train_val("mrfnet", crop_size=32, coarse_output_lr_mult=bad)
