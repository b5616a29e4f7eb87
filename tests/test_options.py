"""One source per option (mrfnet.runtime.options): flags generated from TrainOptions, and a run's options read
back from --config with KEY=VALUE overrides, in that order of precedence; nonsense refused naming it."""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict, fields

import pytest

from mrfnet.runtime.options import add_arguments, parse_override, read_config, resolve
from mrfnet.train.options import TrainOptions


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    parser.add_argument("overrides", nargs="*")
    add_arguments(parser, TrainOptions)
    return parser.parse_args(argv)


def test_every_stored_option_but_the_folder_and_ranks_is_a_flag_with_its_default_in_the_help():
    parser = argparse.ArgumentParser()
    add_arguments(parser, TrainOptions)
    flags = {action.dest: action for action in parser._actions if action.dest != "help"}
    assert set(flags) == {f.name for f in fields(TrainOptions)} - {"run_dir", "ranks"}
    assert "(default: 16)" in flags["batch_size"].help and "(default: 0)" in flags["seed"].help
    assert _parse([]) == argparse.Namespace(overrides=[]), "defaults stay out of the namespace"


def test_flags_beat_overrides_beat_the_config_beats_the_defaults():
    config = {"batch_size": 8, "crop_size": 64, "variant": "refinenet", "gpus": [], "weights": None}
    args = _parse(["--crop-size", "32", "crop_size=48", "epochs=2.5", "--edge"])
    options = resolve(TrainOptions, args, config=config, overrides=args.overrides, fixed={"run_dir": "r"})
    assert (options.batch_size, options.crop_size, options.epochs, options.variant, options.edge) == \
        (8, 32, 2.5, "refinenet", True)
    assert options.base_lr == 1e-4 and options.run_dir == "r"


def test_a_runs_options_json_resolves_to_the_same_options():
    stored = TrainOptions(run_dir="runs/a", variant="lwrefinenet", batch_size=4, iterations=30, gpus=[0, 1],
                          val_every=10, edge=True, precision="bf16")
    config = json.loads(json.dumps(asdict(stored)))
    again = resolve(TrainOptions, _parse([]), config=config)
    assert again == stored


@pytest.mark.parametrize("text, message", [
    ("batch_size=0", "batch_size=0: must be at least 1"),
    ("batch_size", "is not KEY=VALUE"),
    ("colour=red", "is not KEY=VALUE with KEY one of"),
    ("ranks=2", "is not KEY=VALUE"),  # not an option a user sets
    ("variant=resnet", "choose one of"),
    ("edge=maybe", "expected true or false"),
])
def test_nonsense_overrides_are_refused_naming_them(text, message):
    with pytest.raises(ValueError, match=message):
        parse_override(TrainOptions, text)


def test_a_bad_config_is_refused_naming_the_file_and_key(tmp_path):
    path = tmp_path / "options.json"
    path.write_text("{not json")
    with pytest.raises(ValueError, match=f"--config {path} is not JSON"):
        read_config(path)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        read_config(tmp_path / "missing.json")
    with pytest.raises(ValueError, match="'colour' is not an option"):
        resolve(TrainOptions, _parse([]), config={"colour": "red"}, fixed={"run_dir": "r"})
    with pytest.raises(ValueError, match="--config batch_size: must be at least 1"):
        resolve(TrainOptions, _parse([]), config={"batch_size": -3}, fixed={"run_dir": "r"})
    with pytest.raises(ValueError, match="missing --run-dir"):
        resolve(TrainOptions, _parse([]))
