"""data_prep's parts: blur kernels and recipe, augmentation, patches, the LMDB writer, sources and bad input."""

from __future__ import annotations

import json
import math
import os

import numpy as np
import pytest
from image_files import make_folder_pairs, make_gopro, random_image, write_image

from data_prep import blur, images, sources
from data_prep.lmdb_writer import META_INFO, LmdbWriter, partial_path
from data_prep.patches import patch_origins
from data_prep.records import count_records, encode_pair, iter_pairs

# --- blur -------------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("ksize", blur.GAUSSIAN_KSIZES)
def test_gaussian_kernel_sums_to_one_and_is_symmetric(ksize):
    kernel = blur.gaussian_kernel(ksize, 0.7)
    assert kernel.shape == (ksize, ksize)
    assert kernel.sum() == pytest.approx(1.0)
    np.testing.assert_allclose(kernel, kernel[::-1, ::-1])
    np.testing.assert_allclose(kernel, kernel.T)


def test_gaussian_kernel_rejects_even_sides():
    with pytest.raises(ValueError, match="odd"):
        blur.gaussian_kernel(4, 1.0)


def test_motion_kernel_horizontal_is_a_line_of_equal_weights():
    kernel = blur.motion_kernel(5, 0)
    assert kernel.shape == (5, 5)
    np.testing.assert_allclose(kernel[2], np.full(5, 0.2))
    assert kernel.sum() == pytest.approx(1.0)
    np.testing.assert_allclose(blur.motion_kernel(5, 90), kernel.T)


@pytest.mark.parametrize("length", blur.MOTION_LENGTHS)
@pytest.mark.parametrize("angle", [0, 15, 45, 80, 135, 210, 345])
def test_motion_kernel_has_the_requested_length_and_angle(length, angle):
    kernel = blur.motion_kernel(length, angle)
    assert kernel.sum() == pytest.approx(1.0)
    assert kernel.min() >= 0
    np.testing.assert_allclose(kernel, kernel[::-1, ::-1], atol=1e-12)  # centred, point-symmetric
    radius = kernel.shape[0] // 2
    rows, cols = np.mgrid[-radius:radius + 1, -radius:radius + 1]
    coords = np.stack([cols.ravel(), -rows.ravel()])  # x right, y up: angles as displayed
    covariance = np.cov(coords, aweights=kernel.ravel(), bias=True)
    eigenvalues, eigenvectors = np.linalg.eigh(covariance)
    axis = math.degrees(math.atan2(eigenvectors[1, 1], eigenvectors[0, 1])) % 180
    assert min(abs(axis - angle % 180), 180 - abs(axis - angle % 180)) < 2.0
    # a uniform segment of length L has variance (L^2 - 1) / 12 along it
    assert eigenvalues[1] == pytest.approx((length**2 - 1) / 12, rel=0.12)
    assert eigenvalues[0] < 0.25  # across: the 1-pixel anti-aliasing tent (variance 1/6) and the rounded ends


def test_blur_params_stay_in_the_recipe_ranges():
    rng = np.random.default_rng(1)
    for _ in range(200):
        params = blur.sample_blur_params(rng)
        assert params["gaussian_ksize"] in blur.GAUSSIAN_KSIZES
        assert blur.GAUSSIAN_SIGMA_RANGE[0] <= params["gaussian_sigma"] <= blur.GAUSSIAN_SIGMA_RANGE[1]
        assert params["motion_length"] in blur.MOTION_LENGTHS
        assert params["motion_angle"] in blur.MOTION_ANGLES
        assert blur.NOISE_SIGMA_RANGE[0] <= params["noise_sigma"] <= blur.NOISE_SIGMA_RANGE[1]
        assert json.loads(json.dumps(params)) == params  # recordable as it is


def test_synthetic_blur_is_seeded_and_its_params_reproduce_it():
    sharp = random_image(40, 50)
    blurred, params = blur.synthesize_blur(sharp, np.random.default_rng(7))
    again, params_again = blur.synthesize_blur(sharp, np.random.default_rng(7))
    assert params == params_again
    assert blurred.tobytes() == again.tobytes()
    assert blur.apply_blur(sharp, json.loads(json.dumps(params))).tobytes() == blurred.tobytes()
    other, _ = blur.synthesize_blur(sharp, np.random.default_rng(8))
    assert other.tobytes() != blurred.tobytes()
    assert blurred.dtype == np.uint8 and blurred.shape == sharp.shape


def test_motion_can_be_capped_and_nonsense_caps_are_refused():
    rng = np.random.default_rng(2)
    assert {blur.sample_blur_params(rng, 10)["motion_length"] for _ in range(100)} == {5, 10}
    for bad in (0, 4, -5, 7.5):
        with pytest.raises(ValueError, match="longest motion blur"):
            blur.motion_lengths(bad)


def test_a_minimum_motion_selects_one_length_and_leaves_the_default_draws_alone():
    assert blur.motion_lengths() == blur.MOTION_LENGTHS
    assert blur.motion_lengths(10, 10) == (10,) and blur.motion_lengths(30, 12) == (15, 20, 25, 30)
    rng = np.random.default_rng(3)
    assert {blur.sample_blur_params(rng, 10, 10)["motion_length"] for _ in range(50)} == {10}
    # no minimum given draws exactly what the explicit default minimum draws (default builds unchanged)
    draws = [blur.sample_blur_params(np.random.default_rng(seed), 20) for seed in range(20)]
    assert draws == [blur.sample_blur_params(np.random.default_rng(seed), 20, 5) for seed in range(20)]
    for max_length, min_length, message in ((10, 15, "longer than the longest"), (9, 7, "no motion length"),
                                            (30, 0, "shortest motion blur"), (30, 7.5, "shortest motion blur")):
        with pytest.raises(ValueError, match=message):
            blur.motion_lengths(max_length, min_length)


def test_a_patch_is_blurred_as_if_the_whole_image_had_been():
    sharp = random_image(80, 90)
    params = {"gaussian_ksize": 3, "gaussian_sigma": 0.8, "motion_length": 15, "motion_angle": 30,
              "noise_sigma": 0.0, "noise_seed": 0}
    whole = blur.apply_blur(sharp, params)
    margin = blur.blur_margin(params)
    for y, x in ((margin, margin), (20, 30), (80 - 32 - margin, 90 - 32 - margin)):
        patch = blur.apply_blur_patch(sharp, y, x, 32, params)
        assert patch.shape == (32, 32, 3)
        difference = np.abs(patch.astype(int) - whole[y:y + 32, x:x + 32].astype(int))
        assert difference.max() <= 1  # float summation order may round one level differently
    # At the image's edge the patch sees the sharp image continued by its edge pixels (then blurred), where the
    # whole-image blur replicates each stage's output: the two differ there, and only there.
    corner = blur.apply_blur_patch(sharp, 0, 0, 32, params).astype(int) - whole[:32, :32].astype(int)
    assert np.abs(corner[2 * margin:, 2 * margin:]).max() <= 1


def test_blur_replicates_borders_and_keeps_flat_images_flat():
    flat = np.full((30, 30, 3), 120, np.uint8)
    params = {"gaussian_ksize": 5, "gaussian_sigma": 1.0, "motion_length": 30, "motion_angle": 45,
              "noise_sigma": 0.0, "noise_seed": 0}
    np.testing.assert_array_equal(blur.apply_blur(flat, params), flat)  # zero padding would darken the edges


def test_augment_geometry_and_colour():
    image = random_image(6, 9)
    params = {"flip": True, "rot90": 1, "channels": [2, 0, 1], "saturation": 1.0}
    expected = np.rot90(image[:, ::-1], 1)[:, :, [2, 0, 1]]
    np.testing.assert_array_equal(blur.augment(image, params), expected)
    params = blur.sample_augment_params(np.random.default_rng(3))
    assert sorted(params["channels"]) == [0, 1, 2]
    assert blur.SATURATION_RANGE[0] <= params["saturation"] <= blur.SATURATION_RANGE[1]
    gray = np.full((4, 4, 3), 90, np.uint8)  # no saturation to scale
    np.testing.assert_array_equal(blur.augment(gray, {**params, "saturation": 1.4}), gray)
    colour = np.zeros((4, 4, 3), np.uint8)
    colour[..., 2], colour[..., 1] = 200, 100
    less = blur.augment(colour, {"flip": False, "rot90": 0, "channels": [0, 1, 2], "saturation": 0.5})
    assert int(less[0, 0, 2]) - int(less[0, 0, 0]) < 200 - 0  # less saturated: channels closer together


# --- patches ----------------------------------------------------------------------------------------------------------

def test_patches_cover_the_image_and_small_images_have_none():
    origins = patch_origins(100, 130, 48, 40)
    assert [y for y, x in origins if x == 0] == [0, 40, 52]
    assert [x for y, x in origins if y == 0] == [0, 40, 80, 82]
    assert patch_origins(96, 96, 96, 48) == [(0, 0)]
    assert patch_origins(95, 300, 96, 48) == []
    assert len(patch_origins(300, 451, 96, 48)) == len(patch_origins(451, 300, 96, 48))
    with pytest.raises(ValueError):
        patch_origins(10, 10, 0, 1)


# --- writer -----------------------------------------------------------------------------------------------------------

def pair_value(seed: int, side: int = 16) -> tuple[np.ndarray, np.ndarray, bytes]:
    blurred, sharp = random_image(side, side, seed), random_image(side, side, seed + 1000)
    return blurred, sharp, encode_pair(blurred, sharp)


def test_writer_round_trip_meta_info_and_atomic_rename(tmp_path):
    path = tmp_path / "train_lmdb"
    pairs = {f"{i:08d}_p{i}": pair_value(i) for i in (2, 0, 1)}
    with LmdbWriter(path, commit_every=2) as writer:
        for key, (_, _, value) in pairs.items():
            writer.put(key, value, {"source": key})
            assert not path.exists()  # only the .partial until the end
        assert partial_path(path).is_dir()
    assert not partial_path(path).exists()
    assert count_records(path) == 3 and writer.stats.records == 3
    read = list(iter_pairs(path))
    assert [key for key, _, _ in read] == sorted(pairs)
    for key, blurred, sharp in read:
        np.testing.assert_array_equal(blurred, pairs[key][0])
        np.testing.assert_array_equal(sharp, pairs[key][1])
    lines = [json.loads(line) for line in (path / META_INFO).read_text().splitlines()]
    assert lines == [{"key": key, "source": key} for key in sorted(pairs)]


def test_writer_grows_a_full_map(tmp_path):
    path = tmp_path / "lmdb"
    with LmdbWriter(path, map_size=32 << 10, commit_every=8) as writer:
        for i in range(40):
            writer.put(f"{i:08d}", pair_value(i, side=32)[2])  # 40 x 6 KiB > 32 KiB
    assert writer.stats.map_grows >= 3
    assert writer.stats.map_size >= 32 << 13
    assert count_records(path) == 40
    assert [key for key, _, _ in iter_pairs(path)] == [f"{i:08d}" for i in range(40)]


def test_writer_refuses_to_overwrite_unless_forced(tmp_path):
    path = tmp_path / "lmdb"
    with LmdbWriter(path) as writer:
        writer.put("a", pair_value(0)[2])
    with pytest.raises(FileExistsError, match="--force"):
        LmdbWriter(path)
    with LmdbWriter(path, force=True) as writer:
        writer.put("b", pair_value(1)[2])
        writer.put("c", pair_value(2)[2])
    assert [key for key, _, _ in iter_pairs(path)] == ["b", "c"]


def test_interrupted_writer_leaves_nothing_and_keeps_the_old_lmdb(tmp_path):
    path = tmp_path / "lmdb"
    with LmdbWriter(path) as writer:
        writer.put("old", pair_value(0)[2])
    with pytest.raises(RuntimeError, match="killed"), LmdbWriter(path, force=True, commit_every=1) as writer:
        writer.put("new", pair_value(1)[2])
        raise RuntimeError("killed")
    assert not partial_path(path).exists()
    assert [key for key, _, _ in iter_pairs(path)] == ["old"]


def test_writer_removes_a_stale_partial_and_rejects_duplicate_keys(tmp_path):
    path = tmp_path / "lmdb"
    partial_path(path).mkdir()
    (partial_path(path) / "data.mdb").write_bytes(b"half a build")
    with pytest.raises(ValueError, match="duplicate"), LmdbWriter(path) as writer:
        writer.put("a", pair_value(0)[2])
        writer.put("a", pair_value(1)[2])
    assert not path.exists() and not partial_path(path).exists()


# --- reading images ---------------------------------------------------------------------------------------------------

def test_read_image_conversions(tmp_path):
    colour = random_image(5, 7)
    image, notes = images.read_image(write_image(tmp_path / "colour.png", colour))
    np.testing.assert_array_equal(image, colour)
    assert notes == []
    gray = colour[:, :, 0]
    image, notes = images.read_image(write_image(tmp_path / "gray.png", gray))
    np.testing.assert_array_equal(image, np.stack([gray] * 3, axis=2))
    assert notes == ["grayscale replicated to BGR"]
    deep = colour.astype(np.uint16) * 257
    image, notes = images.read_image(write_image(tmp_path / "deep.png", deep))
    np.testing.assert_array_equal(image, colour)
    assert notes == ["16-bit rounded to 8-bit"]
    opaque = np.concatenate([colour, np.full((5, 7, 1), 255, np.uint8)], axis=2)
    image, notes = images.read_image(write_image(tmp_path / "opaque.png", opaque))
    np.testing.assert_array_equal(image, colour)
    assert notes == ["opaque alpha dropped"]
    transparent = opaque.copy()
    transparent[0, 0, 3] = 10
    path = write_image(tmp_path / "transparent.png", transparent)
    with pytest.raises(images.ImageError, match="transparent.png has transparent pixels"):
        images.read_image(path)


def test_read_image_non_ascii_name(tmp_path):
    colour = random_image(4, 4)
    path = write_image(tmp_path / "ñandú 画像.png", colour)
    np.testing.assert_array_equal(images.read_image(path)[0], colour)
    assert images.image_size(path) == (4, 4)


@pytest.mark.parametrize("content", [b"", b"not an image at all" * 10, "truncated"])
def test_corrupt_images_are_errors_naming_the_file(tmp_path, content):
    path = tmp_path / "bad.png"
    if content == "truncated":
        write_image(path, random_image(64, 64))
        content = path.read_bytes()[:300]
    path.write_bytes(content)
    with pytest.raises(images.ImageError, match=r"bad\.png"):
        images.read_image(path)
    if len(content) < 100:  # a truncated file still has a valid header
        with pytest.raises(images.ImageError, match=r"bad\.png"):
            images.image_size(path)


def test_unreadable_image_is_an_error_naming_the_file(tmp_path, monkeypatch):
    path = write_image(tmp_path / "locked.png", random_image(4, 4))
    path.chmod(0)
    if os.geteuid() == 0:  # root reads whatever the permissions: fail the reads as they fail for a user

        def denied(file, *args, **kwargs):
            raise PermissionError(13, "Permission denied", str(file))

        monkeypatch.setattr(images.np, "fromfile", denied)
        monkeypatch.setattr(images.Image, "open", denied)
    with pytest.raises(images.ImageError, match="locked.png.*Permission denied"):
        images.read_image(path)
    with pytest.raises(images.ImageError, match="locked.png.*Permission denied"):
        images.image_size(path)


def test_a_directory_named_like_an_image_is_an_error(tmp_path):
    (tmp_path / "folder.png").mkdir()
    with pytest.raises(images.ImageError, match="folder.png"):
        images.read_image(tmp_path / "folder.png")


# --- sources ----------------------------------------------------------------------------------------------------------

def test_folder_source_matches_by_relative_path_and_splits_by_pair(tmp_path):
    names = [f"scene{i // 4}/{i:03d}.png" for i in range(12)]
    make_folder_pairs(tmp_path, names)
    items = sources.load_items("folder", tmp_path, val_fraction=0.2, test_fraction=0.2, seed=3)
    assert sorted(item.name for item in items) == sorted(f"scene{i // 4}_{i:03d}" for i in range(12))
    assert [sum(item.split == split for item in items) for split in sources.SPLITS] == [8, 2, 2]
    for item in items:
        assert item.blur.relative_to(tmp_path / "blur") == item.sharp.relative_to(tmp_path / "sharp")
        assert (item.height, item.width) == (20, 24)
    again = sources.load_items("folder", tmp_path, val_fraction=0.2, test_fraction=0.2, seed=3)
    assert again == items


def test_folder_source_missing_partner_names_the_file(tmp_path):
    make_folder_pairs(tmp_path, ["a.png", "b.png"])
    write_image(tmp_path / "sharp" / "orphan.png", random_image(20, 24))
    with pytest.raises(ValueError, match=r"sharp/orphan\.png \(no blurred partner\)"):
        sources.load_items("folder", tmp_path, val_fraction=0, test_fraction=0)


def test_pair_size_mismatch_names_both_files(tmp_path):
    make_folder_pairs(tmp_path, ["a.png"])
    write_image(tmp_path / "blur" / "a.png", random_image(20, 25))
    with pytest.raises(images.ImageError, match=r"blur/a\.png is 20x25 but sharp .*sharp/a\.png is 20x24"):
        sources.load_items("folder", tmp_path, val_fraction=0, test_fraction=0)


def test_empty_and_missing_folders(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("no images here")
    with pytest.raises(ValueError, match="no images"):
        sources.load_items("visdrone", tmp_path / "empty")
    with pytest.raises(FileNotFoundError, match="nowhere"):
        sources.load_items("visdrone", tmp_path / "nowhere")
    with pytest.raises(ValueError, match="needs --root"):
        sources.load_items("folder", None)


def test_same_record_name_from_two_files_is_an_error(tmp_path):
    write_image(tmp_path / "x.png", random_image(4, 4))
    write_image(tmp_path / "x.jpg", random_image(4, 4))
    with pytest.raises(ValueError, match="same record name"):
        images.find_images(tmp_path)


def test_splits_are_disjoint_seeded_and_keep_training_data():
    groups = [f"g{i}" for i in range(20)]
    splits = sources.assign_splits(groups, 0.1, 0.2, seed=0)
    assert sorted(splits) == sorted(groups)
    assert [list(splits.values()).count(split) for split in sources.SPLITS] == [14, 2, 4]
    assert sources.assign_splits(groups, 0.1, 0.2, seed=0) == splits
    assert sources.assign_splits(groups, 0.1, 0.2, seed=1) != splits
    with pytest.raises(ValueError, match="cannot be split"):
        sources.assign_splits(["a", "b"], 0.1, 0.1, seed=0)


def test_gopro_source_pairs_by_sequence_and_takes_val_sequences(tmp_path):
    make_gopro(tmp_path, {"train": ["GOPR0001_00_00", "GOPR0002_00_00", "GOPR0003_00_00"], "test": ["GOPR0009_00_00"]})
    items = sources.load_items("gopro", tmp_path, gopro_blur="blur_gamma", val_fraction=0.3, seed=0)
    assert len(items) == 8
    for item in items:
        assert item.blur.parent.name == "blur_gamma"
        assert item.blur.parent.parent == item.sharp.parent.parent
        assert item.name == f"{item.sharp.parent.parent.name}_{item.sharp.stem}"
    by_sequence = {}
    for item in items:
        by_sequence.setdefault(item.sharp.parent.parent.name, set()).add(item.split)
    assert all(len(splits) == 1 for splits in by_sequence.values())  # no sequence in two splits
    assert by_sequence["GOPR0009_00_00"] == {"test"}
    assert sorted(split for (split,) in by_sequence.values()) == ["test", "train", "train", "val"]
    plain = sources.load_items("gopro", tmp_path, val_fraction=0.3, seed=0)
    assert {item.blur.parent.name for item in plain} == {"blur"}


def test_gopro_missing_partner_names_it(tmp_path):
    make_gopro(tmp_path, {"train": ["GOPR0001_00_00", "GOPR0002_00_00"], "test": ["GOPR0009_00_00"]})
    (tmp_path / "test" / "GOPR0009_00_00" / "blur" / "000001.png").unlink()
    with pytest.raises(ValueError, match=r"GOPR0009_00_00/sharp/000001\.png \(no blurred partner\)"):
        sources.load_items("gopro", tmp_path)
    with pytest.raises(FileNotFoundError, match="train/ and test/"):
        sources.load_items("gopro", tmp_path / "test")


def test_embedded_source_is_offline_photographs_split_by_image():
    items = sources.load_items("embedded")
    assert {item.split for item in items} == set(sources.SPLITS)
    assert len({item.name for item in items}) == len(items) == len(sources.EMBEDDED)
    for item in items:
        assert item.sharp.is_file() and item.blur is None
        image, notes = images.read_image(item.sharp)
        assert image.shape == (item.height, item.width, 3) and notes == []
