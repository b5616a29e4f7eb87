"""`mrfnet export` on real Caffe and real ONNX Runtime: parity with Caffe, the pooling rules, refusals, INT8."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest

from mrfnet.cli import main
from mrfnet.export.engines import ConvertedModel, OnnxFile, resolve_source
from mrfnet.export.exporter import export_model
from mrfnet.export.onnx_graph import caffe_to_onnx
from mrfnet.export.onnx_layers import UnsupportedLayer
from mrfnet.export.onnx_model import OnnxModel
from mrfnet.export.quantize import INT8, quantize_int8
from mrfnet.infer.model import Model
from mrfnet.infer.weights import WeightsMismatch, read_prototxt
from mrfnet.train.driver import train
from mrfnet.train.options import TrainOptions
from mrfnet.train.run_setup import prepare_run
from netgen import OUTPUTS, VARIANTS
from tests.scoring_helpers import make_lmdb, make_pairs, randomise, save_caffemodel, smooth_image, write_deploy

ODD_SIZES = ((37, 53), (64, 96), (257, 129))  # (height, width): odd and even, not multiples of the stride
TOLERANCE = 1e-4


def _random_input(height: int, width: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((3, height, width), dtype=np.float32)


def _random_model(caffe, folder: Path, variant: str) -> Model:
    """A deploy net with every weight random (biases too): each branch changes the output, which stays O(1)
    (the fillers alone make the net the identity)."""
    deploy = write_deploy(folder, variant)
    model = Model(deploy)
    randomise(model.net, scale=0.5, seed=list(VARIANTS).index(variant))
    return model


@pytest.fixture(scope="module")
def trained_run(caffe, tmp_path_factory) -> Path:
    """An MRFNet trained for a few Adam steps on smooth images: weights no filler would give."""
    root = tmp_path_factory.mktemp("trained")
    pairs = make_pairs(seed=3, sizes=((32, 32),) * 6)
    (root / "data").mkdir()
    make_lmdb(root / "data" / "train_lmdb", pairs[:4])
    make_lmdb(root / "data" / "val_lmdb", pairs[4:])
    options = TrainOptions(variant="mrfnet", data=str(root / "data"), run_dir=str(root / "run"), batch_size=2,
                           crop_size=16, iterations=6, base_lr=1e-3, snapshot_every=6, loss_schedule="uniform")
    run_dir = prepare_run(options, ["test"])
    train(run_dir)
    return run_dir


@pytest.mark.parametrize("variant", list(VARIANTS))
@pytest.mark.slow
def test_onnx_runtime_matches_caffe_for_every_variant_at_odd_sizes(caffe, tmp_path, variant):
    model = _random_model(caffe, tmp_path, variant)
    graphs = {form: OnnxModel(export_model(model, variant=variant, for_int8=form == "int8 graph"))
              for form in ("float graph", "int8 graph")}  # deconvolutions as ConvTranspose, as phase convolutions
    for height, width in ODD_SIZES:  # one session, three shapes: the dynamic axes really are dynamic
        chw = _random_input(height, width)
        caffe_out = model.forward(chw)
        for form, exported in graphs.items():
            onnx_out = exported.forward(chw)
            assert onnx_out.shape == caffe_out.shape == (3, height, width)
            assert np.max(np.abs(onnx_out - caffe_out)) <= TOLERANCE, (variant, form, height, width)


@pytest.mark.slow
def test_a_trained_snapshot_matches_on_a_photograph_and_on_every_output(caffe, trained_run, tmp_path):
    from skimage import data

    weights = sorted((trained_run / "snapshots").glob("mrfnet_iter_*.caffemodel"))[-1]
    model = Model(trained_run / "deploy.prototxt", weights)
    proto = export_model(model, variant="mrfnet")
    assert [output.name for output in proto.graph.output] == list(OUTPUTS)
    exported = OnnxModel(proto)
    photo = np.ascontiguousarray(data.astronaut()[100:301, 50:283, ::-1])  # RGB -> BGR, 201 x 233
    caffe_prediction = model.predict(photo)
    onnx_prediction = exported.predict(photo)
    assert np.max(np.abs(onnx_prediction - caffe_prediction)) <= TOLERANCE
    tiled = dict(tile=96, overlap=32)  # the same tiles, blended the same way
    assert np.max(np.abs(exported.predict(photo, **tiled) - model.predict(photo, **tiled))) <= TOLERANCE
    chw = _random_input(45, 61, seed=1)
    model.forward(chw)
    session_outputs = exported.session.run(None, {"blur": chw[None]})
    for name, value in zip(OUTPUTS, session_outputs, strict=True):
        assert np.max(np.abs(value[0] - model.net.blobs[name].data[0])) <= TOLERANCE, name


@pytest.mark.slow
def test_the_exported_file_passes_the_full_checker_and_runs_batches(caffe, trained_run, tmp_path):
    out = tmp_path / "model.onnx"
    assert main(["export", str(trained_run), "--out", str(out)]) == 0
    proto = onnx.load(str(out))
    onnx.checker.check_model(proto, full_check=True)
    dims = [d.dim_param or d.dim_value for d in proto.graph.input[0].type.tensor_type.shape.dim]
    assert dims == ["batch", 3, "height", "width"]
    metadata = {prop.key: prop.value for prop in proto.metadata_props}
    assert metadata["mrfnet.variant"] == "mrfnet"
    assert len(metadata["mrfnet.caffemodel_sha256"]) == 64
    assert metadata["caffe.version"].startswith("1.0.0")
    session = OnnxModel(out).session
    batch = np.random.default_rng(0).random((2, 3, 24, 40), dtype=np.float32)
    together = session.run(["out_r4"], {"blur": batch})[0]
    alone = session.run(["out_r4"], {"blur": batch[1:]})[0]
    assert together.shape == (2, 3, 24, 40)
    assert np.max(np.abs(together[1] - alone[0])) <= 1e-5


POOL_NET = """
layer {{ name: "data" type: "Input" top: "blur" input_param {{ shape {{ dim: 1 dim: 2 dim: 9 dim: 11 }} }} }}
layer {{ name: "pool" type: "Pooling" bottom: "blur" top: "pooled"
        pooling_param {{ pool: {pool} kernel_size: {kernel} stride: {stride} pad: {pad} }} }}
"""


def _pooling_case(caffe, tmp_path: Path, pool: str, kernel: int, stride: int, pad: int):
    deploy = tmp_path / f"{pool}_{kernel}_{stride}_{pad}.prototxt"
    deploy.write_text(POOL_NET.format(pool=pool, kernel=kernel, stride=stride, pad=pad))
    net = caffe.Net(str(deploy), caffe.TEST)
    proto = caffe_to_onnx(read_prototxt(deploy), {}, outputs=["pooled"])
    return net, proto


def _onnx_run(proto: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    return OnnxModel(proto, output_name="pooled").session.run(["pooled"], {"blur": x})[0]


@pytest.mark.parametrize(("pool", "kernel", "stride", "pad"), [
    ("AVE", 2, 2, 0), ("AVE", 3, 2, 1), ("AVE", 3, 3, 1), ("AVE", 4, 3, 2), ("MAX", 2, 2, 0), ("MAX", 3, 2, 1),
    ("MAX", 5, 1, 2)])
def test_pooling_keeps_caffes_ceil_rounding_and_edge_rule(caffe, tmp_path, pool, kernel, stride, pad):
    """9 x 11 and 10 x 13 planes: the last window overhangs the image, so CEIL and the divisor both matter."""
    net, proto = _pooling_case(caffe, tmp_path, pool, kernel, stride, pad)
    rng = np.random.default_rng(kernel * 10 + pad)
    for height, width in ((9, 11), (10, 13)):
        x = rng.standard_normal((1, 2, height, width)).astype(np.float32) + 1.0
        net.blobs["blur"].reshape(*x.shape)
        net.reshape()
        net.blobs["blur"].data[...] = x
        net.forward()
        expected = net.blobs["pooled"].data
        got = _onnx_run(proto, x)
        assert got.shape == expected.shape
        assert np.max(np.abs(got - expected)) <= 1e-6, (height, width)


@pytest.mark.parametrize(("attribute", "wrong", "kernel", "stride", "pad"), [
    ("ceil_mode", 0, 2, 2, 0),  # FLOOR: one output row and column short at odd sides
    ("count_include_pad", 0, 3, 2, 1),  # divisor without the padding: border averages change
])
def test_the_pooling_case_catches_a_wrong_mapping(caffe, tmp_path, attribute, wrong, kernel, stride, pad):
    """The cases above would fail if AVE pooling were mapped with FLOOR rounding or another divisor."""
    net, proto = _pooling_case(caffe, tmp_path, "AVE", kernel, stride, pad)
    node = next(n for n in proto.graph.node if n.op_type == "AveragePool")
    next(a for a in node.attribute if a.name == attribute).i = wrong
    x = np.random.default_rng(0).standard_normal((1, 2, 9, 11)).astype(np.float32) + 1.0
    net.blobs["blur"].data[...] = x
    net.forward()
    got = _onnx_run(proto, x)
    expected = net.blobs["pooled"].data
    assert got.shape != expected.shape or np.max(np.abs(got - expected)) > 1e-3


def test_an_unsupported_layer_is_named_and_nothing_is_written(caffe, tmp_path, capsys):
    deploy = tmp_path / "sigmoid.prototxt"
    deploy.write_text(
        'layer { name: "data" type: "Input" top: "blur" input_param { shape { dim: 1 dim: 3 dim: 8 dim: 8 } } }\n'
        'layer { name: "conv" type: "Convolution" bottom: "blur" top: "out_r4"\n'
        '        convolution_param { num_output: 3 kernel_size: 1 } }\n'
        'layer { name: "squash" type: "Sigmoid" bottom: "out_r4" top: "out_r4" }\n')
    weights = save_caffemodel(caffe, deploy, tmp_path / "sigmoid.caffemodel")
    out = tmp_path / "model.onnx"
    assert main(["export", str(weights), "--deploy", str(deploy), "--out", str(out)]) == 1
    assert not out.exists() and not list(tmp_path.glob(".model.onnx*"))
    with pytest.raises(UnsupportedLayer, match=r"layer 'squash' \(type Sigmoid\)"):
        export_model(Model(deploy, weights))


@pytest.mark.slow
def test_weights_of_another_net_get_the_caffe_paths_error(caffe, tmp_path, caplog):
    weights = save_caffemodel(caffe, write_deploy(tmp_path / "a", "mrfnet"), tmp_path / "mrfnet.caffemodel")
    out = tmp_path / "model.onnx"
    assert main(["export", str(weights), "--variant", "refinenet", "--out", str(out)]) == 1
    export_error = caplog.records[-1].getMessage()
    assert "does not fit" in export_error and not out.exists()
    caplog.clear()
    photo = tmp_path / "photo.png"
    import cv2

    cv2.imwrite(str(photo), smooth_image(np.random.default_rng(0), 16, 16))
    assert main(["deblur", str(photo), str(tmp_path / "out.png"), "--model", str(weights), "--variant",
                 "refinenet"]) == 1
    deblur_error = caplog.records[-1].getMessage()
    assert export_error.split("\n", 1)[1] == deblur_error.split("\n", 1)[1]  # the same mismatch lines
    with pytest.raises(WeightsMismatch):
        ConvertedModel(write_deploy(tmp_path / "b", "refinenet"), weights)


@pytest.mark.slow
def test_deblur_and_score_with_onnx_runtime_match_caffe(caffe, trained_run, tmp_path, capsys):
    from mrfnet.evaluate.scoring import ScoreOptions, score_model
    from mrfnet.evaluate.testsets import LmdbTestSet

    onnx_file = tmp_path / "model.onnx"
    assert main(["export", str(trained_run), "--out", str(onnx_file)]) == 0
    lmdb = make_lmdb(tmp_path / "test_lmdb", make_pairs(seed=5))
    weights = sorted((trained_run / "snapshots").glob("mrfnet_iter_*.caffemodel"))[-1]
    deploy = trained_run / "deploy.prototxt"
    by_caffe = score_model(deploy, weights, LmdbTestSet(lmdb), options=ScoreOptions(engine="caffe"))
    by_onnx = score_model(onnx_file, onnx_file, LmdbTestSet(lmdb))
    converted = score_model(deploy, weights, LmdbTestSet(lmdb), options=ScoreOptions(engine="onnxruntime"))
    assert by_onnx.engine == converted.engine == "onnxruntime" and by_caffe.engine == "caffe"
    for report in (by_onnx, converted):
        assert abs(report.last.psnr - by_caffe.last.psnr) < 1e-3
        assert report.last.parameters == by_caffe.last.parameters
    photo = tmp_path / "photo.png"
    import cv2

    cv2.imwrite(str(photo), smooth_image(np.random.default_rng(1), 41, 57))
    outputs = {}
    for engine, model in (("caffe", str(trained_run)), ("onnx", str(onnx_file))):
        outputs[engine] = tmp_path / f"{engine}.png"
        assert main(["deblur", str(photo), str(outputs[engine]), "--model", model]) == 0
    difference = np.abs(cv2.imread(str(outputs["caffe"])).astype(int) - cv2.imread(str(outputs["onnx"])))
    assert difference.max() <= 1  # uint8 rounding of outputs 1e-4 apart


@pytest.mark.slow
def test_engine_choices_that_make_no_sense_are_refused(caffe, trained_run, tmp_path, caplog):
    onnx_file = tmp_path / "model.onnx"
    assert main(["export", str(trained_run), "--out", str(onnx_file)]) == 0
    photo = tmp_path / "photo.png"
    import cv2

    cv2.imwrite(str(photo), smooth_image(np.random.default_rng(2), 16, 16))
    for extra, message in ((["--engine", "caffe"], "only --engine onnxruntime runs it"),
                           (["--variant", "mrfnet"], "defines its own net"),
                           (["--gpu", "0"], "CPU-only")):
        caplog.clear()
        assert main(["deblur", str(photo), str(tmp_path / "o.png"), "--model", str(onnx_file), *extra]) == 1
        assert message in caplog.records[-1].getMessage()
    assert main(["export", str(trained_run), "--out", str(tmp_path / "model.txt")]) == 1
    assert main(["export", str(trained_run), "--out", str(tmp_path / "m.onnx"), "--opset", "9"]) == 1
    assert main(["export", str(trained_run), "--out", str(tmp_path / "m.onnx"), "--int8"]) == 1
    assert not (tmp_path / "m.onnx").exists()
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(onnx_file.read_bytes()[:1000])
    with pytest.raises(ValueError, match="not an ONNX model"):
        resolve_source(broken)


@pytest.mark.slow
def test_int8_quantisation_keeps_the_interface_and_stays_close(caffe, trained_run, tmp_path):
    calibration = make_lmdb(tmp_path / "val_lmdb", make_pairs(seed=7, sizes=((32, 32),) * 4))
    out = tmp_path / "int8.onnx"
    assert main(["export", str(trained_run), "--out", str(out), "--int8", "--calibrate", str(calibration),
                 "--calibration-patches", "3"]) == 0
    quantized = OnnxFile(out)
    assert "3 calibration patches" in quantized.metadata[INT8]
    assert any(node.op_type == "QuantizeLinear" for node in quantized.proto.graph.node)
    weights = sorted((trained_run / "snapshots").glob("mrfnet_iter_*.caffemodel"))[-1]
    reference = Model(trained_run / "deploy.prototxt", weights)
    image = smooth_image(np.random.default_rng(4), 40, 48)
    error = np.abs(quantized.predict(image) - reference.predict(image))
    assert error.mean() < 0.02, error.mean()  # 8-bit activations: about a grey level, not a broken graph
    with pytest.raises(ValueError, match="no calibration patches"):
        quantize_int8(export_model(reference, for_int8=True), [])



@pytest.mark.slow
def test_time_with_onnx_runtime_times_whole_images_and_tiles(caffe):
    from mrfnet.analyze.timing import time_variants

    report = time_variants(["lwrefinenet"], sizes=[(24, 32), (400, 320)], repeats=1, warmup=1, max_memory_gb=0.15,
                           caffe_time=True, engine="onnxruntime")
    whole, tiled = report.measurements
    assert whole.seconds_mean > 0 and whole.tile is None
    assert tiled.seconds_mean > 0 and tiled.tile is not None  # too large for 0.15 GB: Caffe's tiles, in ORT
    assert not [m for m in report.measurements if m.kind == "training"]
    markdown = report.to_markdown()
    assert "ONNX Runtime (s)" in markdown and "caffe time" not in markdown and "Training memory" not in markdown
    with pytest.raises(ValueError, match="CPU"):
        time_variants(["lwrefinenet"], sizes=[(24, 32)], engine="onnxruntime", gpu=0)


DECONV_NET = """
layer {{ name: "data" type: "Input" top: "blur" input_param {{ shape {{ dim: 1 dim: 4 dim: 7 dim: 10 }} }} }}
layer {{ name: "up" type: "Deconvolution" bottom: "blur" top: "up"
        convolution_param {{ num_output: 4 kernel_size: {kernel} stride: {stride} pad: {pad} group: {group}
                            weight_filler {{ type: "gaussian" std: 0.5 }}
                            bias_filler {{ type: "gaussian" std: 0.5 }} }} }}
"""


@pytest.mark.parametrize(("kernel", "stride", "pad", "group"), [
    (4, 2, 1, 1), (2, 2, 0, 1), (3, 2, 1, 1), (5, 3, 1, 1), (3, 3, 0, 1), (1, 2, 0, 1), (4, 2, 1, 2), (3, 1, 1, 1)])
def test_deconvolutions_match_as_phase_convolutions_or_conv_transpose(caffe, tmp_path, kernel, stride, pad, group):
    """Strided deconvolutions become one Conv + DepthToSpace (Caffe's output size kept by trimming); the
    rest stay ConvTranspose. Either way the numbers are Caffe's."""
    deploy = tmp_path / "deconv.prototxt"
    deploy.write_text(DECONV_NET.format(kernel=kernel, stride=stride, pad=pad, group=group))
    caffe.set_random_seed(kernel * 10 + stride)
    net = caffe.Net(str(deploy), caffe.TEST)
    proto = caffe_to_onnx(read_prototxt(deploy), {name: [b.data for b in blobs] for name, blobs in net.params.items()},
                          outputs=["up"], phase_deconvolution=True)
    session = OnnxModel(proto, output_name="up").session
    for height, width in ((7, 10), (6, 9)):
        x = np.random.default_rng(height).standard_normal((1, 4, height, width)).astype(np.float32)
        net.blobs["blur"].reshape(*x.shape)
        net.reshape()
        net.blobs["blur"].data[...] = x
        net.forward()
        got = session.run(["up"], {"blur": x})[0]
        assert got.shape == net.blobs["up"].data.shape
        assert np.max(np.abs(got - net.blobs["up"].data)) <= 1e-5, (height, width)
    ops = {node.op_type for node in proto.graph.node}
    assert ("DepthToSpace" in ops) == (stride > 1 and kernel >= stride and group == 1)
