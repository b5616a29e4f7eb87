"""The errors of mrfnet the user can act on: the command line prints their message as one line (exit 1).

Anything else, a bug included, keeps its traceback (mrfnet.cli): a ValueError from deep in NumPy is
not the user's mistake. They subclass the built-in error of the same meaning, so callers that catch
ValueError or FileNotFoundError still catch them.
"""

from __future__ import annotations


class UserError(Exception):
    """A problem with what the user asked for or gave, said so that they can fix it."""


class InvalidValue(UserError, ValueError):
    """An option, a file's content or a combination of them that makes no sense."""


class MissingInput(UserError, FileNotFoundError):
    """A file or folder the command needs is not there."""


class OutputExists(UserError, FileExistsError):
    """The output would replace something the command may not replace."""
