"""The registries of variants, data sources and ONNX layer converters: each is the one list its readers use,
refuses a name twice, and takes a new entry with no other edit (docs/architecture.md, "Adding a variant /
source / loss / converter"). Each test registers a scratch entry, shows it reaching every reader, and removes it."""

from __future__ import annotations

import json
import re

import numpy as np
import onnxruntime
import pytest
from google.protobuf import text_format
from image_files import random_image, write_image

from data_prep.sources import SOURCES, Source, register_source, visdrone_items
from mrfnet import cli
from mrfnet.export.onnx_graph import caffe_to_onnx, check_supported
from mrfnet.export.onnx_layers import CONVERTERS, UnsupportedLayer, converter, supported_layer_types
from mrfnet.reproduce.budgets import QUICK, run_plan
from mrfnet.reproduce.claims import VARIANT_ORDER
from netgen.network import committed_prototxts
from netgen.variants import VARIANTS, Variant, register_variant

PAPER_VARIANTS = ("refinenet", "lwrefinenet", "rcrefinenet", "mrfnet")


@pytest.fixture
def scratch_variant():
    variant = register_variant(Variant("scratchnet", lightweight=True, residual=False))
    yield variant
    del VARIANTS[variant.name]


def test_a_registered_variant_is_generated_and_offered_by_the_commands(scratch_variant, tmp_path):
    assert cli.build_parser().parse_args(["netgen", "--variants", "scratchnet"]).variants == ["scratchnet"]
    assert cli.main(["netgen", "--out-dir", str(tmp_path)]) == 0  # every registered variant by default
    assert sorted(path.name for path in tmp_path.iterdir()) == sorted([*PAPER_VARIANTS, "scratchnet"])
    written = {path.name: path.read_text() for path in (tmp_path / "scratchnet").iterdir()}
    assert written == committed_prototxts("scratchnet")


def test_the_main_job_lists_its_variants_and_a_registered_one_stays_out(scratch_variant):
    assert VARIANT_ORDER == PAPER_VARIANTS
    assert {spec.variant for spec in run_plan(QUICK).values()} == set(PAPER_VARIANTS)


def test_a_variant_name_twice_or_one_unfit_for_a_folder_and_run_name_is_refused():
    with pytest.raises(ValueError, match="registered twice"):
        register_variant(Variant("mrfnet", lightweight=False, residual=False))
    with pytest.raises(ValueError, match="lower case"):
        register_variant(Variant("MRF-net", lightweight=True, residual=True))
    assert list(VARIANTS) == list(PAPER_VARIANTS)


@pytest.fixture
def scratch_source():
    source = register_source(Source(
        "scratch", lambda options: visdrone_items(options.root, val_fraction=0, test_fraction=0, seed=options.seed),
        help="sharp images in one folder, all for training", synthetic=True, patch_size=16, half_overlap=True))
    yield source
    del SOURCES[source.name]


def test_a_registered_source_is_built_with_its_own_defaults(scratch_source, tmp_path, capsys):
    for seed in range(2):
        write_image(tmp_path / "images" / f"{seed}.png", random_image(32, 32, seed=seed))
    out = tmp_path / "out"
    assert cli.main(["data-prep", "--source", "scratch", "--root", str(tmp_path / "images"), "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["patch_size"], summary["stride"]) == (16, 8)  # its defaults: half-overlapping 16-pixel patches
    assert summary["blur_per"] == "patch" and summary["gopro_blur"] is None  # synthetic, no GOPRO folders
    assert summary["splits"]["train"]["records"] == 2 * 9
    with pytest.raises(SystemExit):
        cli.main(["data-prep", "--help"])
    assert re.search(r"\n  scratch +sharp images in one folder, all for training", capsys.readouterr().out)


def test_a_source_name_twice_is_refused():
    with pytest.raises(ValueError, match="registered twice"):
        register_source(Source("embedded", lambda options: [], help="", synthetic=True))
    assert list(SOURCES) == ["embedded", "gopro", "visdrone", "folder", "frames", "video", "embedded-video"]


TANH_NET = ('layer { name: "data" type: "Input" top: "blur" input_param { shape { dim: 1 dim: 3 dim: 8 dim: 8 } } }\n'
            'layer { name: "squash" type: "TanH" bottom: "blur" top: "out" }\n')


def test_a_registered_converter_is_all_a_new_layer_type_needs(caffe):
    proto = text_format.Parse(TANH_NET, caffe.proto.caffe_pb2.NetParameter())
    with pytest.raises(UnsupportedLayer, match=r"layer 'squash' \(type TanH\)"):
        check_supported(proto)
    register = converter("TanH")
    try:
        register(lambda graph, layer, position: graph.node("Tanh", [graph.bottom(layer)],
                                                           [graph.top(layer, position, 0)], layer.name))
        assert supported_layer_types()[-1] == "TanH"
        model = caffe_to_onnx(proto, {})
    finally:
        del CONVERTERS["TanH"]
    x = np.random.default_rng(0).standard_normal((1, 3, 8, 8)).astype(np.float32)
    session = onnxruntime.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(session.run(["out"], {"blur": x})[0], np.tanh(x), atol=1e-6)


def test_a_layer_type_converted_twice_is_refused():
    for layer_type in ("ReLU", "Input"):
        with pytest.raises(ValueError, match="registered twice"):
            converter(layer_type)(lambda graph, layer, position: None)
    assert supported_layer_types() == ("Input", "Convolution", "Deconvolution", "ReLU", "Eltwise", "Pooling",
                                       "Concat", "Crop", "Slice", "Split")


def test_a_registered_loss_is_built_and_offered_by_train():
    """A scale loss is one ScaleLoss entry: netgen builds it and `mrfnet train --loss` offers it; the run-time
    weights and values (netgen.layers.loss_weights) tell the implementations apart by the layer type that
    makes the loss tops, so a second loss of one layer type is refused (each trains in tests/test_train.py)."""
    from mrfnet.train.options import TrainOptions
    from netgen import build_train_val
    from netgen.losses import LOSSES, ScaleLoss, get_loss, register_loss
    from netgen.names import SCALE_LOSS_TOPS

    with pytest.raises(ValueError, match="already makes EuclideanLoss tops"):
        register_loss(ScaleLoss("native2", "EuclideanLoss", LOSSES["native"].add, normalised=False))
    with pytest.raises(ValueError, match="registered twice"):
        register_loss(ScaleLoss("native", "Scratch", LOSSES["native"].add, normalised=False))
    with pytest.raises(ValueError, match="unknown loss 'l1'; choose one of python, native"):
        get_loss("l1")
    assert tuple(TrainOptions.__dataclass_fields__["loss"].metadata["choices"]) == tuple(LOSSES)
    for name, loss in LOSSES.items():
        net = build_train_val("lwrefinenet", batch_size=1, crop_size=16, loss=name)
        makers = {top: layer.type for layer in net.layer for top in layer.top if top in SCALE_LOSS_TOPS}
        assert makers == dict.fromkeys(SCALE_LOSS_TOPS, loss.layer_type), name
