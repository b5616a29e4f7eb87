"""The errors data_prep raises for input it cannot use (the command line says them in one line)."""

from __future__ import annotations


class DataError(ValueError):
    """Images, LMDBs, folders or options that cannot make (or be read as) a dataset; what to do instead."""


class MissingData(DataError, FileNotFoundError):
    """A file or folder the dataset needs is not there."""


class DataExists(DataError, FileExistsError):
    """An output that would replace a dataset without --force."""
