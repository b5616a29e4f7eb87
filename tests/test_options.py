"""One source per option (mrfnet.runtime.options): every command's flags generated from its options dataclasses
(TrainOptions, BuildOptions, ScoreOptions, ...), and a run's options read back from --config with KEY=VALUE
overrides, in that order of precedence; nonsense refused naming it."""

from __future__ import annotations

import argparse
import json
import logging
from dataclasses import asdict, fields
from pathlib import Path

import pytest

from data_prep.options import BuildOptions
from mrfnet import cli
from mrfnet.analyze.options import TimeOptions
from mrfnet.cli import build_parser
from mrfnet.commands.score import ScoreTarget
from mrfnet.evaluate.metrics import METRICS, MetricOptions
from mrfnet.evaluate.scoring import OUTPUT, TEST_SET, ScoreOptions
from mrfnet.export.options import INFERENCE, DeblurOptions, ExportOptions
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


# Each command's options dataclasses, its flags written by hand beside them (positionals aside: --variants,
# the list `mrfnet netgen` shares; train's own), and the fewest arguments it parses.
COMMAND_OPTIONS = {
    "data-prep": ((BuildOptions,), set(), []),
    "score": ((ScoreTarget, MetricOptions, ScoreOptions), set(), ["MODEL"]),
    "deblur": ((DeblurOptions,), set(), ["IN", "OUT"]),
    "export": ((ExportOptions,), set(), ["MODEL", "--out", "m.onnx"]),
    "time": ((TimeOptions,), {"variants"}, []),
    "train": ((TrainOptions,), {"run_dir", "resume", "config"}, ["--run-dir", "r"]),
}


def _subparser(command: str) -> argparse.ArgumentParser:
    subparsers = next(action for action in build_parser()._actions if isinstance(action, argparse._SubParsersAction))
    return subparsers.choices[command]


@pytest.mark.parametrize("command", sorted(COMMAND_OPTIONS))
def test_every_flag_of_a_command_is_a_field_of_its_options_and_every_field_a_flag(command):
    classes, hand_written, argv = COMMAND_OPTIONS[command]
    parser = _subparser(command)
    flags = {action.dest for action in parser._actions if action.option_strings and action.dest != "help"}
    fields_ = {f.name for cls in classes for f in fields(cls) if f.metadata.get("cli")}
    assert flags - hand_written == fields_
    given = {arg.removeprefix("--").replace("-", "_") for arg in argv if arg.startswith("--")}
    assert fields_ & set(vars(parser.parse_args(argv))) == given - hand_written, \
        "defaults stay out of the namespace: resolve fills them in"


def test_generated_flags_keep_their_defaults_help_and_units():
    build = _subparser("data-prep")
    assert resolve(BuildOptions, build.parse_args([])) == BuildOptions()
    options = resolve(BuildOptions, build.parse_args(["--map-size", "2", "--no-test-whole", "--step", "3",
                                                      "--root", "frames"]))
    assert (options.map_size, options.test_whole, options.step, options.root) == (2 << 20, False, 3, Path("frames"))
    helps = {action.dest: action.help for action in build._actions}
    assert helps["map_size"].endswith(f"(default: {BuildOptions().map_size >> 20})")
    assert "default: 30)" in helps["max_motion"], "%(default)s in a help is its default"
    assert "(default: patch)" not in helps["blur_per"], "a help that words its default gets none appended"
    time = {action.dest: action.help for action in _subparser("time")._actions}
    assert time["sizes"].endswith("(default: 256x256,1280x720)") and time["repeats"].endswith("(default: 3)")
    score = _subparser("score")
    assert resolve(ScoreOptions, score.parse_args(["MODEL", "--tile", "256"])).tile == 256
    assert resolve(ScoreOptions, score.parse_args(["MODEL"])) == ScoreOptions()
    assert [group.title for group in score._action_groups][2:] == [TEST_SET, METRICS, INFERENCE, OUTPUT]


@pytest.mark.parametrize("argv", [
    ["data-prep", "--map-size", "0"],
    ["data-prep", "--test-copies", "-1"],
    ["score", "MODEL", "--montage-limit", "0"],
    ["score", "MODEL", "--crop-border", "-1"],
    ["deblur", "IN", "OUT", "--max-memory-gb", "0"],
    ["export", "MODEL", "--out", "m.onnx", "--opset", "0"],
    ["export", "MODEL", "--out", "m.onnx", "--calibration-patches", "-2"],
    ["time", "--memory-batches", "0"],
    ["time", "--sizes", "wide"],
], ids=lambda argv: " ".join([argv[0], *argv[-2:]]))
def test_a_senseless_generated_flag_is_refused_by_the_parser_naming_it(argv, capsys):
    with pytest.raises(SystemExit) as info:
        build_parser().parse_args(argv)
    assert info.value.code == 2 and f"argument {argv[-2]}" in capsys.readouterr().err


@pytest.mark.parametrize("argv, message", [
    (["deblur", "IN.png", "OUT.png", "--tile", "wide"], "--tile takes a number of pixels, 0 or auto, not 'wide'"),
    (["score", "MODEL", "--tile", "-"], "--tile takes a number of pixels"),
    (["data-prep", "--step", "2"], "--average, --step, --gamma and --interpolate are for the frame sources"),
    (["export", "MODEL", "--out", "model.txt"], "give a file name ending in .onnx"),
    (["export", "MODEL", "--out", "model.onnx", "--int8"], "--int8 needs --calibrate VAL_LMDB"),
])
def test_a_senseless_combination_or_value_is_a_one_line_error(argv, message, tmp_path, monkeypatch, caplog):
    monkeypatch.chdir(tmp_path)
    with caplog.at_level(logging.ERROR):
        assert cli.main(argv) == 1
    errors = [record for record in caplog.records if record.levelno == logging.ERROR]
    assert len(errors) == 1 and errors[0].exc_info is None and message in errors[0].getMessage()
    assert "\n" not in errors[0].getMessage()
    assert not any(tmp_path.iterdir()), "nothing is created before the options are valid"
