"""Real motion blur from frames (issue 26): `mrfnet data-prep --source frames|video`, data_prep.frames.

Synthetic frames and videos made here: a bright square moving v pixels per frame on a dark background.
Averaging N frames spreads its edge over about N*v pixels; gamma 1 is the plain mean; --interpolate 1
averages 2N-1 frames and halves the steps a fast edge leaves; splits take whole sequences; bad input (short
sequences, mixed sizes, truncated videos, variable frame rates, undecodable frames) is one line naming the
file and leaves no output behind.
"""

from __future__ import annotations

import json
import logging
import struct
from pathlib import Path

import cv2
import numpy as np
import pytest
from image_files import write_image

from data_prep.build import SUMMARY
from data_prep.errors import DataError
from data_prep.flow import check_flow_size
from data_prep.frames import FrameSettings, Window, average_frames, motion_stats, window_starts
from data_prep.lmdb_writer import META_INFO
from data_prep.options import BuildOptions
from data_prep.records import iter_pairs
from data_prep.sources import EMBEDDED_VIDEO, embedded_path, frame_items, video_items
from data_prep.videos import check_frame_times, find_cuts, scan_video
from mrfnet import cli

HEIGHT, WIDTH = 48, 192
DARK, BRIGHT = 30, 220
ROW = HEIGHT // 2
# Lossless codecs first, so a video's frames are exactly what was written; MJPG (lossy) is OpenCV's own.
VIDEO_CODECS = (("FFV1", ".avi"), ("HFYU", ".avi"), ("MJPG", ".avi"))


def square_frame(index: int, speed: int, x0: int = 24, side: int = 80, height: int = HEIGHT,
                 width: int = WIDTH) -> np.ndarray:
    """Frame ``index`` of a bright square moving ``speed`` pixels per frame to the right on a dark background."""
    frame = np.full((height, width, 3), DARK, np.uint8)
    x = x0 + index * speed
    frame[8:height - 8, x:x + side] = BRIGHT
    return frame


def write_sequence(folder, count: int, speed: int, **kwargs) -> list:
    return [write_image(folder / f"frame{i}.png", square_frame(i, speed, **kwargs)) for i in range(count)]


def write_video(path_stem, count: int, speed: int, fps: float = 30.0, codecs=VIDEO_CODECS):
    """A video of the moving square with the first codec this OpenCV can write; skip the test if none."""
    for fourcc, suffix in codecs:
        path = path_stem.with_suffix(suffix)
        path.parent.mkdir(parents=True, exist_ok=True)
        writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), fps, (WIDTH, HEIGHT))
        if writer.isOpened():
            for i in range(count):
                writer.write(square_frame(i, speed))
            writer.release()
            return path
        writer.release()
    pytest.skip(f"this OpenCV build writes none of the codecs {', '.join(code for code, _ in codecs)}, so no test "
                "video can be made")


def decoded(path) -> list[np.ndarray]:
    capture = cv2.VideoCapture(str(path))
    out = []
    while True:
        ok, frame = capture.read()
        if not ok:
            return out
        out.append(frame)


def leading_edge(row: np.ndarray, tolerance: int = 1) -> np.ndarray:
    """The values of the right-hand (leading) edge's ramp: from the last bright pixel to the first dark one."""
    row = row.astype(int)
    bright = np.flatnonzero(row >= BRIGHT - tolerance)
    last_bright = bright[-1]
    dark = np.flatnonzero(row[last_bright:] <= DARK + tolerance)
    return row[last_bright + 1:last_bright + dark[0]]


def longest_run(values: np.ndarray, within: int = 2) -> int:
    """The longest stretch of neighbouring pixels whose values stay within ``within`` of its first one."""
    best, start = 0, 0
    for i in range(1, len(values) + 1):
        if i == len(values) or abs(int(values[i]) - int(values[start])) > within:
            best, start = max(best, i - start), i
    return best


# --- averaging ------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("count", "speed"), [(7, 2), (5, 4), (9, 3), (13, 1)])
@pytest.mark.parametrize("gamma", [1.0, 2.2])
def test_averaging_n_frames_blurs_an_edge_over_about_n_times_v_pixels(count, speed, gamma):
    blurred, averaged, _ = average_frames([square_frame(i, speed) for i in range(count)], gamma)
    assert averaged == count
    ramp = leading_edge(blurred[ROW, :, 1])
    # N positions of the edge, v apart: a staircase of N-1 steps between dark and bright, (N-1)*v pixels
    assert len(ramp) == (count - 1) * speed
    assert abs(len(ramp) - count * speed) <= speed  # "about N*v"
    assert np.all(np.diff(ramp) <= 0)  # falls from bright to dark


def test_gamma_one_is_the_plain_mean_and_2_2_averages_in_linear_light():
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 256, (16, 20, 3), dtype=np.uint8) for _ in range(5)]
    plain, _, _ = average_frames(frames, 1.0)
    np.testing.assert_array_equal(plain, np.rint(np.mean(np.stack(frames).astype(np.float64), axis=0)))
    linear, _, _ = average_frames(frames, 2.2)
    expected = np.mean((np.stack(frames) / 255.0) ** 2.2, axis=0) ** (1 / 2.2) * 255
    assert np.abs(linear.astype(float) - expected).max() <= 0.5 + 1e-3
    assert linear.astype(float).mean() > plain.astype(float).mean()  # power means: gamma 2.2 lifts the average


def test_interpolating_one_frame_averages_2n_minus_1_and_closes_the_ghost_gaps_of_a_fast_edge():
    count, speed = 5, 8  # 8 px per frame: plain averaging leaves N-1 separate 8-px steps (copies of the edge)
    frames = [square_frame(i, speed) for i in range(count)]
    plain, plain_count, _ = average_frames(frames, 1.0)
    smooth, smooth_count, _ = average_frames(frames, 1.0, interpolate=1)
    assert (plain_count, smooth_count) == (count, 2 * count - 1)
    plain_ramp, smooth_ramp = leading_edge(plain[ROW, :, 1]), leading_edge(smooth[ROW, :, 1], tolerance=3)
    # plain: 4 flat steps, each as wide as the motion of one frame, jumps of (220-30)/5 = 38 between them
    assert longest_run(plain_ramp) == speed and np.abs(np.diff(plain_ramp)).max() == 38
    # interpolated: the edge also sits halfway between frames, so the steps are half as wide and half as high
    assert abs(len(smooth_ramp) - len(plain_ramp)) <= 2  # the same extent of blur
    assert longest_run(smooth_ramp) <= speed // 2 + 1
    assert np.abs(np.diff(smooth_ramp.astype(int))).max() <= 0.6 * 38


def test_windows_step_through_a_sequence():
    assert window_starts(20, FrameSettings(7).checked()) == [0, 7]  # step defaults to N: no frame in two pairs
    assert window_starts(20, FrameSettings(7, step=3).checked()) == [0, 3, 6, 9, 12]
    assert window_starts(6, FrameSettings(7).checked()) == []


@pytest.mark.parametrize(("settings", "message"), [
    (FrameSettings(4), "odd"), (FrameSettings(1), "at least 3"), (FrameSettings(5, gamma=0), "gamma"),
    (FrameSettings(5, gamma=float("nan")), "gamma"), (FrameSettings(5, interpolate=-1), "interpolate"),
    (FrameSettings(5, step=0), "step")])
def test_nonsense_settings_are_refused(settings, message):
    with pytest.raises(DataError, match=message):
        settings.checked()


# --- frame folders --------------------------------------------------------------------------------------------------

def make_tree(root, sequences: dict[str, int], speed: int = 2, **kwargs) -> None:
    for name, count in sequences.items():
        write_sequence(root / name, count, speed, **kwargs)


def test_frame_source_takes_windows_of_each_sequence_and_splits_by_sequence(tmp_path):
    make_tree(tmp_path, {f"seq{i}": 12 for i in range(6)})
    items = frame_items(tmp_path, FrameSettings(5, step=3), val_fraction=0.2, test_fraction=0.2, seed=3)
    by_sequence: dict[str, set[str]] = {}
    for item in items:
        by_sequence.setdefault(item.frames.sequence.name, set()).add(item.split)
    assert all(len(splits) == 1 for splits in by_sequence.values())  # never a sequence in two splits
    assert sorted(split for splits in by_sequence.values() for split in splits) == sorted(
        ["test", "val", "train", "train", "train", "train"])
    first = next(item for item in items if item.frames.sequence.name == "seq0")
    assert [item.frames.start for item in items if item.frames.sequence.name == "seq0"] == [0, 3, 6]
    assert first.name == "seq0_frame2" and first.sharp == tmp_path / "seq0" / "frame2.png"  # the middle frame
    assert first.frames.files == tuple(f"frame{i}.png" for i in range(5))
    assert first.blur is None and (first.height, first.width) == (HEIGHT, WIDTH)


def test_frames_sort_naturally_and_the_sharp_image_is_the_middle_frame(tmp_path):
    write_sequence(tmp_path / "a", 11, speed=3)  # frame10.png sorts after frame9.png
    write_sequence(tmp_path / "b", 11, speed=3)
    item = next(item for item in frame_items(tmp_path, FrameSettings(11), val_fraction=0.0, test_fraction=0.5)
                if item.frames.sequence.name == "a")
    assert item.frames.files[-2:] == ("frame9.png", "frame10.png")
    blurred, sharp, notes, _ = item.frames.read()
    np.testing.assert_array_equal(sharp, square_frame(5, 3))
    np.testing.assert_array_equal(blurred, average_frames([square_frame(i, 3) for i in range(11)], 2.2)[0])
    assert notes == []


def test_gopro_all_layout_keeps_its_test_sequences_and_takes_val_from_train(tmp_path):
    make_tree(tmp_path / "train", {"GOPR0001_00_00": 5, "GOPR0002_00_00": 5, "GOPR0003_00_00": 5})
    make_tree(tmp_path / "test", {"GOPR0009_00_00": 5})
    items = frame_items(tmp_path, FrameSettings(5), val_fraction=0.3, seed=0)
    splits = {item.name: item.split for item in items}
    assert splits["GOPR0009_00_00_frame2"] == "test"
    assert sorted(splits.values()) == ["test", "train", "train", "val"]


def one_line_error(excinfo, path) -> str:
    message = str(excinfo.value)
    assert "\n" not in message and str(path) in message
    return message


def test_a_sequence_shorter_than_n_is_refused_naming_it(tmp_path):
    make_tree(tmp_path, {"long": 9, "short": 4})
    with pytest.raises(DataError) as excinfo:
        frame_items(tmp_path, FrameSettings(5), val_fraction=0, test_fraction=0.5)
    assert "4 frame(s), fewer than the 5" in one_line_error(excinfo, tmp_path / "short")


def test_mixed_frame_sizes_are_refused_naming_the_frame(tmp_path):
    write_sequence(tmp_path / "a", 5, 2)
    write_sequence(tmp_path / "b", 5, 2)
    write_image(tmp_path / "b" / "frame3.png", square_frame(3, 2, height=HEIGHT + 2))
    with pytest.raises(DataError) as excinfo:
        frame_items(tmp_path, FrameSettings(5), val_fraction=0, test_fraction=0.5)
    assert "mixes frame sizes" in one_line_error(excinfo, tmp_path / "b" / "frame3.png")


def test_frames_directly_in_root_or_no_sequences_are_refused(tmp_path):
    write_sequence(tmp_path, 5, 2)
    with pytest.raises(DataError, match="a folder of its own"):
        frame_items(tmp_path, FrameSettings(5))
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    with pytest.raises(DataError, match="no sequence folders"):
        frame_items(tmp_path / "empty", FrameSettings(5))


# --- videos ---------------------------------------------------------------------------------------------------------

def test_video_source_averages_the_decoded_frames_and_splits_by_video(tmp_path):
    paths = [write_video(tmp_path / "clips" / f"clip{i}", 15, speed=3) for i in range(3)]
    items = video_items(tmp_path / "clips", FrameSettings(5, gamma=1.0), val_fraction=0.0, test_fraction=0.34)
    assert {(item.sharp, item.split) for item in items} == {(paths[0], items[0].split), (paths[1], items[3].split),
                                                             (paths[2], items[6].split)}  # one split per video
    assert sorted(item.split for item in items) == ["test"] * 3 + ["train"] * 6
    frames = decoded(paths[0])
    for item in items[:3]:  # frames 0-4, 5-9, 10-14 of clip0, read by seeking
        assert item.name == f"clip0_f{item.frames.sharp_index:06d}"
        blurred, sharp, _, _ = item.frames.read()
        window = frames[item.frames.start:item.frames.start + 5]
        np.testing.assert_array_equal(sharp, window[2])
        np.testing.assert_array_equal(blurred, average_frames(window, 1.0)[0])
        ramp = leading_edge(blurred[ROW, :, 1], tolerance=12)  # a lossy codec (MJPG) rings a little
        assert abs(len(ramp) - 5 * 3) <= 3 + 2  # about N*v


def test_a_missed_seek_falls_back_to_reading_from_the_start(tmp_path, caplog):
    path = write_video(tmp_path / "clip", 12, speed=2)
    info = scan_video(path)
    settings = FrameSettings(5, gamma=1.0).checked()
    window = Window(settings, 6, info.height, info.width, video=path, fps=info.fps,
                    start_ms=info.times_ms[6] + 200)  # not where OpenCV's seek lands: it must read from frame 0
    with caplog.at_level(logging.DEBUG, logger="data_prep.frames"):
        blurred, sharp, _, _ = window.read()
    assert "seeking to frame 6 missed" in caplog.text
    frames = decoded(path)
    np.testing.assert_array_equal(sharp, frames[8])
    np.testing.assert_array_equal(blurred, average_frames(frames[6:11], 1.0)[0])


def test_a_truncated_video_is_refused_naming_it(tmp_path):
    path = write_video(tmp_path / "clips" / "clip", 30, speed=2)
    write_video(tmp_path / "clips" / "other", 10, speed=2)
    data = path.read_bytes()
    path.write_bytes(data[:len(data) * 6 // 10])
    with pytest.raises(DataError) as excinfo:
        video_items(tmp_path / "clips", FrameSettings(5), val_fraction=0, test_fraction=0.5)
    assert "truncated" in one_line_error(excinfo, path)


def test_a_file_that_is_no_video_and_a_video_shorter_than_n_are_refused(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "clip.mp4").write_bytes(b"not a video at all" * 100)
    with pytest.raises(DataError) as excinfo:
        scan_video(tmp_path / "a" / "clip.mp4")
    assert "cannot open video" in one_line_error(excinfo, tmp_path / "a" / "clip.mp4")
    short = write_video(tmp_path / "b" / "short", 3, speed=2)
    write_video(tmp_path / "b" / "long", 10, speed=2)
    with pytest.raises(DataError) as excinfo:
        video_items(tmp_path / "b", FrameSettings(5), val_fraction=0, test_fraction=0.5)
    assert "3 frame(s), fewer than the 5" in one_line_error(excinfo, short)


def _vint(data: bytes, pos: int, keep_marker: bool = False) -> tuple[int, int]:
    first, length, mask = data[pos], 1, 0x80
    while not first & mask:
        mask >>= 1
        length += 1
    value = first if keep_marker else first & (mask - 1)
    for i in range(1, length):
        value = (value << 8) | data[pos + i]
    return value, length


def _block_times(data: bytes, start: int = 0, end: int | None = None) -> list[int]:
    """Offsets of the 16-bit relative timestamps of a Matroska file's blocks (EBML: Segment, Cluster, BlockGroup
    hold the blocks; SimpleBlock and Block start with the track number, then the timestamp)."""
    end = len(data) if end is None else end
    found = []
    while start < end:
        element, id_length = _vint(data, start, keep_marker=True)
        size, size_length = _vint(data, start + id_length)
        body = start + id_length + size_length
        if element in (0x18538067, 0x1F43B675, 0xA0):
            found += _block_times(data, body, min(body + size, end))
        elif element in (0xA3, 0xA1):
            found.append(body + _vint(data, body)[1])
        start = body + size
    return found


def test_a_variable_frame_rate_is_refused_naming_the_video(tmp_path):
    # OpenCV writes constant rates only: write a Matroska file, then delay its frames from the 10th by 100 ms
    # (three frames of 30 fps dropped), as a phone's variable-rate recording does
    path = write_video(tmp_path / "clips" / "clip", 20, speed=2, codecs=(("FFV1", ".mkv"), ("MJPG", ".mkv")))
    data = bytearray(path.read_bytes())
    offsets = _block_times(bytes(data))
    assert len(offsets) == 20
    for offset in offsets[10:]:
        data[offset:offset + 2] = struct.pack(">h", struct.unpack(">h", data[offset:offset + 2])[0] + 100)
    path.write_bytes(bytes(data))
    with pytest.raises(DataError) as excinfo:
        scan_video(path)
    message = one_line_error(excinfo, path)
    assert "variable frame rate: frame 10 comes 133.0 ms after frame 9, not the 33.3 ms of its 30 fps" in message


def test_frame_time_check_passes_jitter_and_says_when_it_cannot_check(tmp_path, caplog):
    steady = [i * 1000 / 30 + (1 if i % 2 else 0) for i in range(10)]  # millisecond rounding and jitter
    assert check_frame_times(tmp_path / "a.mp4", steady, 30.0)
    with pytest.raises(DataError, match="frame 3 comes 0.0 ms after frame 2"):
        check_frame_times(tmp_path / "a.mp4", [0, 33, 67, 67, 100], 30.0)  # a doubled frame
    with caplog.at_level(logging.WARNING):
        assert not check_frame_times(tmp_path / "b.mp4", [0.0] * 5, 30.0)
        assert not check_frame_times(tmp_path / "c.mp4", steady, 0.0)
    assert "OpenCV reports no frame timestamps" in caplog.text and "no frame rate in its header" in caplog.text


# --- the command, end to end ----------------------------------------------------------------------------------------

def meta_lines(path):
    return [json.loads(line) for line in (path / META_INFO).read_text().splitlines()]


def test_data_prep_frames_end_to_end_records_name_frames_n_gamma_and_k(tmp_path):
    make_tree(tmp_path / "root" / "train", {f"s{i}": 7 for i in range(3)}, speed=4)
    make_tree(tmp_path / "root" / "test", {"t0": 7}, speed=4)
    out = tmp_path / "out"
    assert cli.main(["data-prep", "--source", "frames", "--root", str(tmp_path / "root"), "--out", str(out),
                     "--average", "3", "--step", "2", "--gamma", "1", "--interpolate", "1", "--patch-size", "48",
                     "--val-fraction", "0.3"]) == 0
    summary = json.loads((out / SUMMARY).read_text())
    assert summary["frames"] == {"average": 3, "step": 2, "gamma": 1.0, "interpolate": 1}
    assert summary["blur_per"] is None and summary["max_motion"] is None  # no synthetic blur
    sequences = {}
    for split in ("train", "val", "test"):
        for meta in meta_lines(out / f"{split}_lmdb"):
            frames = meta["frames"]
            assert frames["source"] == "frames" and (frames["average"], frames["gamma"], frames["interpolate"]) == (
                3, 1.0, 1)
            assert frames["averaged_frames"] == 5 and len(frames["frames"]) == 3
            assert frames["files"] == [f"frame{i}.png" for i in frames["frames"]]
            assert meta["sharp"].endswith(f"frame{frames['sharp_frame']}.png") and meta["blur_params"] is None
            sequences.setdefault(frames["sequence"], set()).add(split)
    assert all(len(splits) == 1 for splits in sequences.values()) and len(sequences) == 4
    assert sequences[str(tmp_path / "root" / "test" / "t0")] == {"test"}
    test_metas = {meta["key"]: meta for meta in meta_lines(out / "test_lmdb")}
    assert len(test_metas) == 3  # t0's windows 0-2, 2-4, 4-6, each a whole frame
    for key, blur, sharp in iter_pairs(out / "test_lmdb"):
        frames = test_metas[key]["frames"]
        np.testing.assert_array_equal(sharp, square_frame(frames["sharp_frame"], 4))
        expected, _, _ = average_frames([square_frame(i, 4) for i in frames["frames"]], 1.0, interpolate=1)
        np.testing.assert_array_equal(blur, expected)


def test_frame_options_are_refused_for_other_sources_and_nothing_is_written_on_bad_input(tmp_path, caplog):
    with pytest.raises(DataError, match="are for the frame sources \\(frames, video, embedded-video\\), not embedded"):
        BuildOptions(average=5).resolved()
    make_tree(tmp_path / "root", {"a": 5, "b": 5, "c": 5})
    broken = tmp_path / "root" / "b" / "frame4.png"
    broken.write_bytes(broken.read_bytes()[:-40])  # the header reads, the pixels do not: found by the worker
    out = tmp_path / "out"
    with caplog.at_level(logging.ERROR):
        assert cli.main(["data-prep", "--source", "frames", "--root", str(tmp_path / "root"), "--out", str(out),
                         "--average", "5", "--patch-size", "32", "--val-fraction", "0", "--test-fraction", "0.3"]) == 1
    errors = [record.getMessage() for record in caplog.records if record.levelno == logging.ERROR]
    assert len(errors) == 1 and str(broken) in errors[0] and "\n" not in errors[0]
    assert sorted(path.name for path in tmp_path.iterdir()) == ["root"]  # no out, no out.partial


def test_data_prep_video_end_to_end_in_worker_processes(tmp_path):
    clips = [write_video(tmp_path / "clips" / f"clip{i}", 10, speed=3) for i in range(3)]
    out = tmp_path / "out"
    assert cli.main(["data-prep", "--source", "video", "--root", str(tmp_path / "clips"), "--out", str(out),
                     "--average", "5", "--patch-size", "32", "--val-fraction", "0", "--test-fraction", "0.34",
                     "--workers", "2"]) == 0  # the windows cross to spawned workers (pickled) and decode there
    summary = json.loads((out / SUMMARY).read_text())
    assert summary["frames"] == {"average": 5, "step": 5, "gamma": 2.2, "interpolate": 0} and summary["workers"] == 2
    videos = {}
    for split in ("train", "test"):
        for meta in meta_lines(out / f"{split}_lmdb"):
            frames = meta["frames"]
            assert frames["source"] == "video" and frames["fps"] == 30.0 and frames["averaged_frames"] == 5
            assert frames["frames"] in ([0, 1, 2, 3, 4], [5, 6, 7, 8, 9]) and meta["sharp"] == frames["video"]
            videos.setdefault(frames["video"], set()).add(split)
    assert sorted(videos) == sorted(map(str, clips)) and all(len(splits) == 1 for splits in videos.values())
    test_clip = next(video for video, splits in videos.items() if splits == {"test"})
    frames = decoded(test_clip)
    metas = {meta["key"]: meta for meta in meta_lines(out / "test_lmdb")}
    assert len(metas) == 2
    for key, blur, sharp in iter_pairs(out / "test_lmdb"):
        sharp_frame = metas[key]["frames"]["sharp_frame"]
        np.testing.assert_array_equal(sharp, frames[sharp_frame])
        np.testing.assert_array_equal(blur, average_frames(frames[sharp_frame - 2:sharp_frame + 3], 2.2)[0])


# --- shot cuts, measured motion, the bundled clip -------------------------------------------------------------------

def test_a_cut_is_one_frame_changing_far_more_than_its_neighbours_and_a_pan_is_none():
    assert find_cuts([2.0] * 10 + [60.0] + [3.0] * 5) == (11,)
    assert find_cuts([60.0] + [2.0] * 6) == (1,)
    assert find_cuts([25.0] * 12) == ()  # a fast pan changes every frame a lot
    assert find_cuts([25.0, 26.0, 24.0, 55.0, 25.0, 27.0, 24.0]) == ()  # 2.2x its neighbours: under CUT_RATIO
    assert find_cuts([0.2] * 5 + [20.0] + [0.2] * 5) == ()  # a change under CUT_MIN_CHANGE: a flash, not a cut


def test_windows_restart_at_each_shot_and_never_span_a_cut():
    settings = FrameSettings(3, step=3).checked()
    assert window_starts(20, settings, cuts=(7,)) == [0, 3, 7, 10, 13, 16]
    assert window_starts(20, settings) == [0, 3, 6, 9, 12, 15]
    assert window_starts(8, settings, cuts=(1, 2, 7)) == [2]  # shots of 1 and 5 frames, then one of 1


def test_a_video_with_a_shot_cut_gives_no_pair_across_it(tmp_path):
    path = write_video(tmp_path / "clips" / "clip", 20, speed=2)
    frames = decoded(path)
    capture_size = frames[0].shape[1], frames[0].shape[0]
    for fourcc, suffix in VIDEO_CODECS:  # the same clip with its second half replaced by another scene
        cut = tmp_path / "cut" / f"clip{suffix}"
        cut.parent.mkdir(exist_ok=True)
        writer = cv2.VideoWriter(str(cut), cv2.VideoWriter_fourcc(*fourcc), 30.0, capture_size)
        if writer.isOpened():
            break
    for i in range(20):
        writer.write(square_frame(i, 2) if i < 12 else 255 - square_frame(i, 2))
    writer.release()
    assert scan_video(cut).cuts == (12,)
    items = video_items(cut.parent, FrameSettings(5, step=2), val_fraction=0, test_fraction=0, only=cut.name)
    spans = [item.frames.indices for item in items]
    assert spans and all(max(span) < 12 or min(span) >= 12 for span in spans)
    assert [span[0] for span in spans] == [0, 2, 4, 6, 12, 14]


def test_each_window_states_its_measured_motion_and_blur_length():
    rng = np.random.default_rng(0)
    texture = cv2.GaussianBlur(rng.integers(0, 256, (96, 400, 3), dtype=np.uint8), (0, 0), 2)
    for speed in (2, 4):
        pan = [np.ascontiguousarray(texture[:, 40 + i * speed:40 + i * speed + 256]) for i in range(5)]
        averaged = average_frames(pan, 1.0)
        assert averaged.motion_px == pytest.approx(speed, rel=0.2)
    window = Window(FrameSettings(5).checked(), 0, 96, 256, video=Path("clip.mp4"), fps=30.0)
    meta = window.meta(averaged.motion_px)
    assert meta["blur_px"] == pytest.approx(4 * meta["motion_px"], abs=0.01)
    assert motion_stats([1.0, 2.0, 3.0, None, float("nan")], 5)["blur_px"]["mean"] == 8.0


def test_frames_too_small_for_optical_flow_are_never_given_to_it(tmp_path):
    """OpenCV's DIS flow crashes the process on some frames under 32 pixels a side (12x48 with every preset)."""
    tiny = [np.full((12, 48, 3), 10 * i, np.uint8) for i in range(3)]
    assert np.isnan(average_frames(tiny, 1.0).motion_px)  # measured nowhere, and no crash
    with pytest.raises(DataError, match="at least 32 pixels a side .* is 48x12"):
        check_flow_size(12, 48, tmp_path / "clip.mp4")
    make_tree(tmp_path / "root", {"a": 5, "b": 5}, height=24, width=96, x0=4, side=20)
    with pytest.raises(DataError, match="--interpolate needs frames of at least 32 pixels"):
        frame_items(tmp_path / "root", FrameSettings(3, interpolate=1), val_fraction=0, test_fraction=0.5)


def test_the_bundled_clip_is_test_data_only_with_its_motion_in_the_summary(tmp_path):
    from mrfnet.reproduce.real_blur import CLIP_FPS

    clip = embedded_path(*EMBEDDED_VIDEO)
    info = scan_video(clip)
    assert (info.fps, info.width, info.height) == (CLIP_FPS, 640, 272)  # what the report says of it
    assert info.cuts == (30, 76, 137, 187, 242)  # measured: see data_prep.videos's CUT_* constants
    out = tmp_path / "real"
    assert cli.main(["data-prep", "--source", "embedded-video", "--out", str(out), "--average", "3", "--step", "40",
                     "--interpolate", "1"]) == 0
    summary = json.loads((out / SUMMARY).read_text())
    assert set(summary["splits"]) == {"test"} and summary["splits"]["test"]["records"] == 10  # 6 shots, step 40
    motion = summary["splits"]["test"]["motion"]
    assert 0 < motion["motion_px"]["median"] < motion["motion_px"]["p90"]
    assert sorted(path.name for path in out.iterdir()) == ["summary.json", "test_lmdb"]
