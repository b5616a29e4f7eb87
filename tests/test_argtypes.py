"""Numeric options that make no sense are refused by argparse, before any folder or Caffe work (0 is not "default")."""

from __future__ import annotations

import argparse

import pytest

from data_prep.option_fields import fraction, non_negative_int, positive_float, positive_int
from mrfnet.cli import build_parser

REFUSED = [
    ["train", "--run-dir", "RUN", "--iterations", "0"],
    ["train", "--run-dir", "RUN", "--batch-size", "0"],
    ["train", "--run-dir", "RUN", "--crop-size", "-4"],
    ["train", "--run-dir", "RUN", "--snapshot-every", "0"],
    ["train", "--run-dir", "RUN", "--base-lr", "-1"],
    ["train", "--run-dir", "RUN", "--base-lr", "nan"],
    ["train", "--run-dir", "RUN", "--epochs", "0"],
    ["train", "--run-dir", "RUN", "--val-every", "0"],
    ["train", "--run-dir", "RUN", "--edge-alpha-at", "1.5"],
    ["data-prep", "--patch-size", "0"],
    ["data-prep", "--stride", "0"],
    ["data-prep", "--copies", "0"],
    ["data-prep", "--workers", "0"],
    ["data-prep", "--val-fraction", "2"],
    ["score", "MODEL", "--limit", "0"],
    ["score", "MODEL", "--overlap", "-1"],
    ["time", "--repeats", "0"],
]


@pytest.mark.parametrize("argv", REFUSED, ids=lambda argv: " ".join(argv[:1] + argv[-2:]))
def test_a_senseless_value_is_refused_by_the_parser(argv, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as info:
        build_parser().parse_args(argv)
    assert info.value.code == 2
    assert argv[-2] in capsys.readouterr().err
    assert not any(tmp_path.iterdir()), "nothing is created before the options are valid"


def test_meaningful_zeros_and_limits_pass():
    assert non_negative_int("0") == 0 and positive_int("3") == 3 and fraction("0") == 0.0 and fraction("1") == 1.0
    assert positive_float("1e-4") == 1e-4
    for convert, text in ((positive_int, "1.5"), (positive_int, "x"), (positive_float, "inf"),
                          (non_negative_int, "-1"), (fraction, "-0.1")):
        with pytest.raises(argparse.ArgumentTypeError):
            convert(text)
    args = build_parser().parse_args(["score", "MODEL", "--crop-border", "0", "--overlap", "0"])
    assert args.crop_border == 0 and args.overlap == 0
