"""Inference and `mrfnet deblur` on real Caffe: tiling, pad-and-crop, image forms, output paths."""

from __future__ import annotations

import logging
import os
import re
import signal
import subprocess
import sys
import tracemalloc

import cv2
import numpy as np
import pytest
from scoring_helpers import SMALLEST_VARIANT, blurred, make_run, randomise, smooth_image, write_deploy

from mrfnet import cli
from mrfnet.infer.deblur import plan_outputs, read_image
from mrfnet.infer.memory import receptive_field
from mrfnet.infer.model import Model
from mrfnet.infer.tiling import (
    AutoTile,
    blend_weights,
    deblur_with,
    pad_to_stride,
    predict,
    tile_starts,
    to_uint8,
)
from mrfnet.infer.weights import read_prototxt
from netgen import INPUT, PREDICTION

TILED_TOLERANCE = 2e-3  # on the 0..1 scale, for overlap 64 with every residual branch active (see the test)


@pytest.fixture(scope="module")
def wide_model(caffe, tmp_path_factory):
    """The smallest variant with every weight random (scale 0.6): all residual branches act, unlike the
    fresh net whose branch ends start at zero, so the receptive field is as wide as a trained net's."""
    model = Model(write_deploy(tmp_path_factory.mktemp("wide")))
    randomise(model.net, 0.6)
    return model


@pytest.fixture(scope="module")
def run_dir(caffe, tmp_path_factory):
    return make_run(caffe, tmp_path_factory.mktemp("deblur") / "run", iterations=(3,))


@pytest.fixture
def images_budget(monkeypatch):
    """--max-memory-gb as the images' alone: the memory this test process holds already (pytest, every module
    imported, earlier tests' nets) and the allowance for the libraries' first use, which deblur takes off the
    budget first, counted as none, so that small budgets size the tiles and the staging the same wherever
    the test runs (tests/test_deblur_memory.py checks the real accounting in a fresh process)."""
    monkeypatch.setattr("mrfnet.infer.deblur.resident_bytes", lambda: 0)
    monkeypatch.setattr("mrfnet.infer.deblur.FIRST_USE_BYTES", 0)


def test_tiles_cover_the_image_on_the_stride_grid():
    assert tile_starts(100, 128, 64) == [0]
    assert tile_starts(256, 128, 64) == [0, 64, 128]
    assert tile_starts(200, 128, 64) == [0, 64, 72]  # the last flush with the end: neighbours overlap >= 64
    assert all(start % 8 == 0 for start in tile_starts(720, 256, 128))
    weights = blend_weights(256, 64, 128, 64, "cosine")
    assert weights[:24].max() == 0 and weights[-24:].max() == 0  # the outer 3/8 of the overlap is not used
    assert weights[40:88].min() == 1
    auto = AutoTile(max_pixels=100_000, overlap=64)
    assert auto.shape_for(200, 304) is None  # fits: one pass
    assert auto.shape_for(720, 1280) == (720, 136)  # spans the short side: one row of tiles
    assert auto.shape_for(1280, 720) == (136, 720)
    assert AutoTile(20_000, 64).shape_for(720, 1280) == (136, 136)  # too small to span: squares
    assert AutoTile(720 * 696, 128).shape_for(720, 1280) == (720, 512)  # 3 tiles either way: the narrowest
    for width in range(728, 2000, 8):  # never more tiles than the widest allowed would need
        chosen = AutoTile(720 * 256, 128).shape_for(720, width)
        assert chosen[0] == 720 and len(tile_starts(width, chosen[1], 128)) == len(tile_starts(width, 256, 128))
    # where two tiles overlap, their weights sum to 1
    left, right = blend_weights(256, 0, 128, 64, "linear"), blend_weights(256, 64, 128, 64, "linear")
    np.testing.assert_allclose(left[64:128] + right[:64], 1.0, atol=1e-6)


def test_pad_to_stride_replicates_and_the_net_keeps_any_size(wide_model):
    chw = np.arange(2 * 9 * 13, dtype=np.float32).reshape(2, 9, 13)
    padded = pad_to_stride(chw)
    assert padded.shape == (2, 16, 16)
    np.testing.assert_array_equal(padded[:, 9:, :13], np.repeat(chw[:, 8:9], 7, axis=1))
    assert pad_to_stride(np.zeros((3, 1, 1))).shape == (3, 8, 8)
    for height, width in ((1, 1), (9, 13), (33, 47)):  # the net itself also gives out_r4 at the input's size
        image = np.full((height, width, 3), 77, np.uint8)
        assert predict(wide_model.net, image).shape == (height, width, 3)


@pytest.mark.slow
def test_tiled_equals_whole_within_tolerance(wide_model):
    image = blurred(smooth_image(np.random.default_rng(1), 192, 256))
    whole = wide_model.predict(image)
    assert np.abs(whole - image / 255.0).std() > 0.02  # the net really changes the image
    tiled = wide_model.predict(image, tile=128, overlap=64)
    assert np.abs(tiled - whole).max() < TILED_TOLERANCE
    assert np.abs(to_uint8(tiled).astype(int) - to_uint8(whole)).max() <= 1
    hard = wide_model.predict(image, tile=128, overlap=0)  # without overlap the seams show: the test can fail
    assert np.abs(hard - whole).max() > 20 * TILED_TOLERANCE


def test_receptive_field_is_reported(wide_model):
    radius = receptive_field(read_prototxt(wide_model.info.path))
    assert 100 < radius < 400  # why tiles need a wide overlap to be exact


def test_tiling_options_are_checked(wide_model):
    image = np.zeros((16, 16, 3), np.uint8)
    for options in (dict(tile=100), dict(tile=64, overlap=12), dict(tile=64, overlap=40), dict(blend="gauss")):
        with pytest.raises(ValueError):
            predict(wide_model.net, image, **options)
    with pytest.raises(ValueError, match="H x W x 3 uint8"):
        predict(wide_model.net, image.astype(np.float32))


# ---------------------------------------------------------------- the command


@pytest.mark.slow
def test_grey_rgba_tiny_and_large_images(run_dir, tmp_path, images_budget):
    rng = np.random.default_rng(2)
    folder = tmp_path / "in"
    (folder / "nested").mkdir(parents=True)
    grey = cv2.cvtColor(blurred(smooth_image(rng, 40, 52)), cv2.COLOR_BGR2GRAY)
    rgba = np.dstack([blurred(smooth_image(rng, 24, 30)), rng.integers(0, 256, (24, 30), dtype=np.uint8)])
    large = blurred(smooth_image(rng, 150, 170))  # larger than the 64-pixel tile
    cv2.imwrite(str(folder / "grey.png"), grey)
    cv2.imwrite(str(folder / "nested" / "rgba.png"), rgba)
    cv2.imwrite(str(folder / "tiny.png"), np.full((1, 1, 3), 200, np.uint8))
    cv2.imwrite(str(folder / "large.jpg"), large)
    out = tmp_path / "new" / "folder"  # does not exist: it is created
    assert cli.main(["deblur", str(folder), str(out), "--model", str(run_dir), "--tile", "64", "--overlap",
                     "16"]) == 0
    # auto tiles from a memory budget too small for the large image: the whole image's result within 1 level
    for name, options in (("whole.png", ["--tile", "0"]), ("auto.png", ["--max-memory-gb", "0.05", "--overlap", "32"])):
        assert cli.main(["deblur", str(folder / "large.jpg"), str(tmp_path / name), "--model", str(run_dir),
                         *options]) == 0
    difference = cv2.imread(str(tmp_path / "auto.png")).astype(int) - cv2.imread(str(tmp_path / "whole.png"))
    assert np.abs(difference).max() <= 1
    result = read_image(out / "grey.png")
    assert result.grey and result.bgr.shape == (40, 52, 3)
    assert cv2.imread(str(out / "grey.png"), cv2.IMREAD_UNCHANGED).ndim == 2
    written = cv2.imread(str(out / "nested" / "rgba.png"), cv2.IMREAD_UNCHANGED)
    assert written.shape == (24, 30, 4)
    np.testing.assert_array_equal(written[:, :, 3], rgba[:, :, 3])  # alpha comes back unchanged
    tiny = cv2.imread(str(out / "tiny.png"), cv2.IMREAD_UNCHANGED)
    assert tiny.shape == (1, 1, 3) and np.abs(tiny.astype(int) - 200).max() < 30  # ~ the input: untrained net
    assert cv2.imread(str(out / "large.png")).shape == (150, 170, 3)
    # one file into a folder that does not exist, then to a named .png
    assert cli.main(["deblur", str(folder / "grey.png"), str(tmp_path / "x" / "y"), "--model", str(run_dir)]) == 0
    assert (tmp_path / "x" / "y" / "grey.png").is_file()
    assert cli.main(["deblur", str(folder / "tiny.png"), str(tmp_path / "z" / "t.png"), "--model",
                     str(run_dir / "snapshots" / f"{SMALLEST_VARIANT}_iter_3.caffemodel")]) == 0
    assert cv2.imread(str(tmp_path / "z" / "t.png")).shape == (1, 1, 3)


def test_bad_paths_are_clear_errors(run_dir, tmp_path, caplog):
    image = tmp_path / "a.png"
    cv2.imwrite(str(image), np.zeros((9, 9, 3), np.uint8))
    with pytest.raises(ValueError, match="PNG"):
        plan_outputs(image, tmp_path / "a.jpg")
    with pytest.raises(ValueError, match="overwrite the input"):
        plan_outputs(image, image)
    with pytest.raises(ValueError, match="inside the input folder"):
        plan_outputs(tmp_path, tmp_path / "out")
    (tmp_path / "b.jpg").write_bytes(b"not an image")
    (tmp_path / "sub").mkdir()
    cv2.imwrite(str(tmp_path / "sub" / "a.png"), np.zeros((9, 9, 3), np.uint8))
    cv2.imwrite(str(tmp_path / "a.bmp"), np.zeros((9, 9, 3), np.uint8))
    with pytest.raises(ValueError, match=r"a\.(png|bmp) and .*a\.(png|bmp) would both be written"):
        plan_outputs(tmp_path, tmp_path.parent / f"{tmp_path.name}-out")
    with pytest.raises(ValueError, match="cannot read image .*b.jpg"):
        read_image(tmp_path / "b.jpg")
    assert cli.main(["deblur", str(tmp_path / "missing.png"), str(tmp_path / "o.png"), "--model",
                     str(run_dir)]) == 1
    assert "missing.png does not exist" in caplog.text
    assert cli.main(["deblur", str(image), str(tmp_path / "o.png"), "--model", str(tmp_path / "nothing")]) == 1
    assert "model" in caplog.text and "does not exist" in caplog.text


def test_an_output_that_is_a_hard_link_of_the_input_is_refused(run_dir, tmp_path, caplog):
    """Issue 24: `deblur IN OUT` with OUT a hard link of IN overwrote the input; now refused, input intact."""
    image = tmp_path / "in" / "a.png"
    image.parent.mkdir()
    cv2.imwrite(str(image), smooth_image(np.random.default_rng(0), 16, 16))
    before = image.read_bytes()
    link = tmp_path / "link.png"
    os.link(image, link)
    assert cli.main(["deblur", str(image), str(link), "--model", str(run_dir)]) == 1
    assert "would overwrite the input" in caplog.text and "same file" in caplog.text
    (tmp_path / "out").mkdir()
    os.link(image, tmp_path / "out" / "a.png")  # folder mode: an output that is an input's hard link
    assert cli.main(["deblur", str(image.parent), str(tmp_path / "out"), "--model", str(run_dir)]) == 1
    assert image.read_bytes() == before


def test_without_model_the_main_jobs_mrfnet_is_used_or_the_command_to_make_it_named(caffe, run_dir, tmp_path,
                                                                                      monkeypatch, caplog):
    import shutil

    from mrfnet.reproduce.job import main_job_model

    image = tmp_path / "photo.png"
    cv2.imwrite(str(image), smooth_image(np.random.default_rng(0), 40, 48))
    monkeypatch.chdir(tmp_path)
    assert cli.main(["deblur", str(image), str(tmp_path / "out.png")]) == 1
    assert "bash tools/bootstrap.sh demo" in caplog.text and not (tmp_path / "out.png").exists()
    shutil.copytree(run_dir, main_job_model())  # where `mrfnet reproduce` leaves its headline run
    assert cli.main(["deblur", str(image), str(tmp_path / "out.png")]) == 0
    assert cv2.imread(str(tmp_path / "out.png")).shape == (40, 48, 3)


def test_non_finite_weights_are_refused_by_deblur_and_score(caffe, tmp_path, caplog):
    """A diverged run's weights deblur to a black image: refused with the layers named, nothing written."""
    from mrfnet.infer.weights import NonFiniteWeights, check_weights, read_caffemodel

    deploy = write_deploy(tmp_path / "net")
    net = caffe.Net(str(deploy), caffe.TEST)
    first = next(iter(net.params))
    net.params[first][0].data.flat[:5] = np.nan
    net.params[first][0].data.flat[5] = np.inf
    poisoned = tmp_path / "poisoned.caffemodel"
    net.save(str(poisoned))
    shapes = {name: [tuple(b.data.shape) for b in blobs] for name, blobs in net.params.items()}
    with pytest.raises(NonFiniteWeights, match=rf"6 non-finite .* {first} \(6\)"):
        check_weights(poisoned, shapes)
    assert read_caffemodel(poisoned)  # it parses: only the values are bad
    image = tmp_path / "in.png"
    cv2.imwrite(str(image), smooth_image(np.random.default_rng(0), 32, 32))
    out = tmp_path / "out.png"
    assert cli.main(["deblur", str(image), str(out), "--model", str(poisoned), "--deploy", str(deploy)]) == 1
    assert "non-finite" in caplog.text and not out.exists()
    caplog.clear()
    assert cli.main(["score", str(poisoned), "--deploy", str(deploy), "--blur-dir", str(tmp_path),
                     "--sharp-dir", str(tmp_path), "--out", str(tmp_path / "score")]) == 1
    assert "non-finite" in caplog.text


def test_a_folder_with_an_unreadable_image_deblurs_the_others_and_says_so(run_dir, tmp_path, capsys):
    source = tmp_path / "in"
    source.mkdir()
    cv2.imwrite(str(source / "good.png"), smooth_image(np.random.default_rng(1), 24, 40))
    (source / "bad.jpg").write_bytes(b"not an image")
    out = tmp_path / "out"
    assert cli.main(["deblur", str(source), str(out), "--model", str(run_dir)]) == 1
    assert (out / "good.png").is_file() and not (out / "bad.png").exists()
    printed = capsys.readouterr().out
    assert "1 of 2 image(s) written" in printed and "1 could not be read" in printed and "bad.jpg" in printed


# ---------------------------------------------------------------- huge images: memory, progress, stopping (issue 24)


def whole_image_blend(forward, bgr: np.ndarray, shape: tuple[int, int], overlap: int, blend: str) -> np.ndarray:
    """The blend as it was before issue 24: the whole padded image as float32 and one accumulator for all of it."""
    chw = pad_to_stride(bgr.transpose(2, 0, 1).astype(np.float32) / 255.0)
    height, width = chw.shape[1:]
    tile_h, tile_w = min(shape[0], height), min(shape[1], width)
    total = np.zeros(chw.shape, np.float32)
    weight_sum = np.zeros((height, width), np.float32)
    for y in tile_starts(height, tile_h, overlap):
        wy = blend_weights(height, y, tile_h, overlap, blend)
        for x in tile_starts(width, tile_w, overlap):
            weights = np.outer(wy, blend_weights(width, x, tile_w, overlap, blend))
            total[:, y:y + tile_h, x:x + tile_w] += forward(chw[:, y:y + tile_h, x:x + tile_w]) * weights
            weight_sum[y:y + tile_h, x:x + tile_w] += weights
    return (total / weight_sum)[:, :bgr.shape[0], :bgr.shape[1]].transpose(1, 2, 0)


@pytest.mark.parametrize("size, shape, overlap, blend", [
    ((100, 150), (64, 64), 16, "cosine"),
    ((100, 150), (48, 80), 16, "linear"),
    ((200, 150), (128, 128), 64, "cosine"),  # the last row of tiles flush with the end: a deep strip waits
])
@pytest.mark.slow
def test_the_streamed_blend_is_the_whole_image_blend_bit_for_bit(wide_model, size, shape, overlap, blend):
    """Cells finished as soon as their last tile is done give the same bits as the whole-image accumulator."""
    image = blurred(smooth_image(np.random.default_rng(3), *size))
    reference = whole_image_blend(wide_model.forward, image, shape, overlap, blend)
    np.testing.assert_array_equal(wide_model.predict(image, tile=shape, overlap=overlap, blend=blend), reference)
    out, times = np.zeros_like(image), np.zeros(size, int)

    def put(y, x, block):
        out[y:y + block.shape[0], x:x + block.shape[1]] = block
        times[y:y + block.shape[0], x:x + block.shape[1]] += 1

    deblur_with(wide_model.forward, image, put, tile=shape, overlap=overlap, blend=blend)
    np.testing.assert_array_equal(out, to_uint8(reference))
    assert (times == 1).all()  # every pixel finished once


def write_tiny_net(folder, caffe):
    """One 3x3 convolution from the input blob to the prediction blob: a real Caffe net so cheap that
    images of several megapixels go through `mrfnet deblur` in a second or two."""
    folder.mkdir(parents=True, exist_ok=True)
    deploy = folder / "tiny.prototxt"
    deploy.write_text(f'''name: "tiny"
layer {{ name: "{INPUT}" type: "Input" top: "{INPUT}" input_param {{ shape {{ dim: 1 dim: 3 dim: 32 dim: 32 }} }} }}
layer {{ name: "{PREDICTION}" type: "Convolution" bottom: "{INPUT}" top: "{PREDICTION}"
  convolution_param {{ num_output: 3 kernel_size: 3 pad: 1 weight_filler {{ type: "gaussian" std: 0.1 }} }} }}
''')
    net = caffe.Net(str(deploy), caffe.TEST)
    net.params[PREDICTION][0].data[:, :, 1, 1] += np.eye(3)  # about the identity: a real image comes out
    weights = folder / "tiny.caffemodel"
    net.save(str(weights))
    return ["--model", str(weights), "--deploy", str(deploy)]


@pytest.mark.slow
def test_a_large_image_stays_within_a_small_budget(caffe, tmp_path, caplog, images_budget):
    """3000x2000 (18 MB as uint8) with --max-memory-gb 0.05: the output is staged in a temporary file, and
    what Python holds (numpy's buffers, seen by tracemalloc; Caffe's own memory is the tiles', which the
    budget sizes) peaks within the budget: 38 MB when measured, mostly the decoding of the input. Before
    issue 24 this run peaked at 265 MB (whole-image float32 copies, ~39 bytes a pixel). The budget is the
    images' here (:func:`images_budget`); tests/test_deblur_memory.py measures a whole process's."""
    caplog.set_level(logging.INFO)
    model = write_tiny_net(tmp_path / "net", caffe)
    source = tmp_path / "large.png"
    cv2.imwrite(str(source), blurred(smooth_image(np.random.default_rng(4), 2000, 3000)))
    budget_gb = 0.05
    tracemalloc.start()
    try:
        assert cli.main(["deblur", str(source), str(tmp_path / "auto.png"), *model, "--overlap", "32",
                         "--max-memory-gb", str(budget_gb)]) == 0
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert "tiles of" in caplog.text and "staged in a temporary file" in caplog.text
    assert peak < budget_gb * 2**30, f"{peak / 2**20:.0f} MB"
    # staged or in memory, in given tiles, the same pixels; the output is a PNG any reader reads
    for name, budget in (("staged.png", "0.045"), ("memory.png", "4")):
        assert cli.main(["deblur", str(source), str(tmp_path / name), *model, "--tile", "512", "--overlap", "32",
                         "--max-memory-gb", budget]) == 0
    staged, memory = cv2.imread(str(tmp_path / "staged.png")), cv2.imread(str(tmp_path / "memory.png"))
    assert staged.shape == (2000, 3000, 3)
    np.testing.assert_array_equal(staged, memory)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["auto.png", "large.png", "memory.png", "net",
                                                               "staged.png"]


@pytest.mark.parametrize("signum, code, message", [(signal.SIGTERM, 143, "stopped by SIGTERM"),
                                                   (signal.SIGINT, 130, "interrupted (Ctrl-C)")])
@pytest.mark.slow
def test_a_signal_mid_deblur_leaves_no_output_and_no_temporary_file(run_dir, tmp_path, signum, code, message):
    """SIGTERM or Ctrl-C once tiles are done: one line, nothing under the output's name, no partial or staged
    file anywhere (issue 24: a SIGTERM left no output and said nothing). The budget is the images' alone (as
    :func:`images_budget` makes it), so that a tiny one stages the output."""
    source = tmp_path / "in" / "photo.png"
    source.parent.mkdir()
    cv2.imwrite(str(source), blurred(smooth_image(np.random.default_rng(5), 600, 600)))
    target = tmp_path / "out" / "photo.png"
    images_budget = ("import sys, mrfnet.infer.deblur as d; d.resident_bytes = lambda: 0; d.FIRST_USE_BYTES = 0; "
                     "import mrfnet.cli as c; ")
    process = subprocess.Popen(
        [sys.executable, "-c", images_budget + "sys.exit(c.main())", "deblur", str(source), str(target),
         "--model", str(run_dir), "--tile", "64", "--overlap", "16", "--max-memory-gb", "0.003"],  # ~170 tiles, staged
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,  # text: \r ends lines
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    lines = []
    for line in process.stdout:
        lines.append(line)
        if re.search(r"\| *[1-9]\d*/\d+ \[", line):  # the progress bar: a tile or more done
            process.send_signal(signum)
            break
    output = "".join(lines) + process.communicate(timeout=120)[0]
    assert process.returncode == code, output
    assert "staged in a temporary file" in output and "Traceback" not in output
    said = [line for line in output.splitlines() if line.strip() and "|" not in line][-1]
    assert message in said and sum(message in line for line in output.splitlines()) == 1, output
    assert sorted(path.relative_to(tmp_path).as_posix() for path in tmp_path.rglob("*")) == ["in", "in/photo.png"]
