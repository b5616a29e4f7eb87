"""`mrfnet time` on tiny sizes: positive times, `caffe time` parsed, memory counted, tiled fallback."""

from __future__ import annotations

import json

import pytest
from scoring_helpers import SMALLEST_VARIANT

from mrfnet import cli
from mrfnet.analyze.measure import caffe_cli, parse_caffe_time
from mrfnet.analyze.timing import time_variants
from netgen.sizes import parse_sizes

CAFFE_TIME_LOG = """\
I1127 05:40:01.000000  1234 caffe.cpp:404] *** Benchmark begins ***
I1127 05:40:01.100000  1234 caffe.cpp:437]       Conv1	forward: 1.25 ms.
I1127 05:40:02.000000  1234 caffe.cpp:442] Average Forward pass: 123.456 ms.
I1127 05:40:02.000000  1234 caffe.cpp:444] Average Backward pass: 0.01 ms.
I1127 05:40:02.000000  1234 caffe.cpp:446] Average Forward-Backward: 124 ms.
I1127 05:40:02.000000  1234 caffe.cpp:448] Total Time: 248 ms.
"""


def test_parse_caffe_time_and_sizes():
    assert parse_caffe_time(CAFFE_TIME_LOG) == {"forward_ms": 123.456, "forward_backward_ms": 124.0}
    assert parse_caffe_time("nothing") == {}
    assert parse_sizes("256x256, 1280x720") == [(256, 256), (720, 1280)]
    with pytest.raises(ValueError, match="WIDTHxHEIGHT"):
        parse_sizes("1280*720")


@pytest.mark.slow
def test_time_command_on_tiny_sizes(tmp_path):
    assert caffe_cli() is not None
    code = cli.main(["time", "--variants", SMALLEST_VARIANT, "--sizes", "48x32", "--repeats", "2",
                     "--memory-batches", "1,2", "--memory-side", "32", "--out", str(tmp_path)])
    assert code == 0
    data = json.loads((tmp_path / "timing.json").read_text())
    assert data["machine"]["cores"] >= 1 and data["machine"]["mode"] == "CPU"
    inference, *training = data["measurements"]
    assert inference["seconds_mean"] > 0 and inference["repeats"] == 2 and inference["tile"] is None
    assert inference["caffe_time"]["forward_ms"] > 0 and inference["peak_rss_mb"] > 0
    assert [m["batch"] for m in training] == [1, 2]
    assert 0 < training[0]["counted_mb"] < training[1]["counted_mb"]  # activations and diffs grow with the batch
    assert all(m["caffe_time"]["forward_backward_ms"] > 0 and m["peak_rss_mb"] > 0 for m in training)
    assert data["timing"] == {SMALLEST_VARIANT: {"48x32": inference["seconds_mean"]}}
    markdown = (tmp_path / "timing.md").read_text()
    assert f"| {SMALLEST_VARIANT} |" in markdown and " cores, " in markdown


# lwrefinenet at 80x64 counts 25 MB whole (17 MB of it parameters; the DNNL engine's workspace, smaller than
# im2col's); 19 MB fits a 32x32 tile
LIMIT_GB, TILE_GB = 0.023, 0.018


@pytest.mark.slow
def test_too_large_for_the_limit_is_timed_in_tiles():
    report = time_variants([SMALLEST_VARIANT], sizes=[(64, 80)], repeats=1, warmup=0, memory_batches=[4],
                           memory_side=64, max_memory_gb=LIMIT_GB, tile_memory_gb=TILE_GB, overlap=16, caffe_time=False)
    inference, training = report.measurements
    assert inference.tile == "32x32" and inference.seconds_mean > 0 and "tiles" in inference.skipped
    assert training.peak_rss_mb is None and training.counted_mb > 20 and "limit" in training.skipped
    timing, memory, timing_note, memory_note = report  # what `mrfnet reproduce` unpacks
    assert timing == {SMALLEST_VARIANT: {"80x64": inference.seconds_mean}}
    assert memory == {SMALLEST_VARIANT: {4: training.counted_mb}}
    assert "80x64 in 32x32 tiles" in timing_note and "Training memory" in memory_note


@pytest.mark.slow
def test_training_memory_can_be_counted_without_running_it():
    report = time_variants([SMALLEST_VARIANT], sizes=[(64, 80)], repeats=1, warmup=1, memory_batches=[2],
                           memory_side=64, max_memory_gb=LIMIT_GB, tile_memory_gb=TILE_GB, overlap=16, caffe_time=False,
                           run_training=False)
    inference, training = report.measurements
    assert inference.tile == "32x32" and inference.seconds_mean > 0  # warmed up on one tile, then timed whole
    assert training.peak_rss_mb is None and training.counted_mb > 0 and training.skipped == "counted only"
    assert "counted only, not run" in report.memory_note and "a warm-up is one tile" in report.timing_note


def test_options_are_checked_before_any_timing_work(tmp_path, capsys, caplog):
    for bad in (["--memory-batches", "0,4"], ["--memory-batches", "x"], ["--sizes", "12"]):
        with pytest.raises(SystemExit) as info:
            cli.main(["time", *bad])
        assert info.value.code == 2
    file = tmp_path / "a-file"
    file.write_text("")
    assert cli.main(["time", "--variants", SMALLEST_VARIANT, "--sizes", "64x64", "--out", str(file)]) == 1
    assert "is a file" in caplog.text and "Inference time" not in capsys.readouterr().out
