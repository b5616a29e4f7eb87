"""What `mrfnet` says when a command fails: the project's own errors in one line (exit 1), with their traceback
under -v; anything else is a bug and keeps its traceback (issue 25: a bug must not look like the user's mistake)."""

from __future__ import annotations

import logging

import pytest

from mrfnet import cli
from mrfnet.commands import doctor


def test_a_user_error_is_one_line_and_v_adds_its_traceback(tmp_path, caplog):
    command = ["train", "--run-dir", str(tmp_path / "run"), "--data", str(tmp_path / "none")]
    with caplog.at_level(logging.ERROR):
        assert cli.main(command) == 1
    errors = [record for record in caplog.records if record.levelno == logging.ERROR]
    assert len(errors) == 1 and errors[0].exc_info is None
    assert "no training LMDB at" in errors[0].getMessage()
    caplog.clear()
    with caplog.at_level(logging.ERROR):
        assert cli.main(["-v", *command]) == 1
    errors = [record for record in caplog.records if record.levelno == logging.ERROR]
    assert errors[0].exc_info is not None and "Traceback" in caplog.text


def test_a_bug_keeps_its_traceback(monkeypatch):
    def broken(_args):
        return int("not a number")  # a ValueError from Python itself, not one of the project's errors

    monkeypatch.setattr(doctor, "run", broken)
    with pytest.raises(ValueError, match="invalid literal"):
        cli.main(["doctor"])
