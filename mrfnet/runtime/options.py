"""One source per option: a dataclass field carries its default, help, parser and choices, and the command line,
a ``--config`` file and ``KEY=VALUE`` overrides are all read through it.

    @dataclass
    class TrainOptions:
        batch_size: int = option(16, "total batch", parse=positive_int)

``add_arguments`` turns the fields into argparse flags (``--batch-size``) whose defaults are left out of
the namespace, so ``resolve`` can tell what the user gave: each field's value is its default, then the
config file's, then a ``KEY=VALUE`` override's, then the flag's. Unknown keys and values that do not
parse are refused naming them.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar

from mrfnet.runtime.errors import InvalidValue, MissingInput

T = TypeVar("T")
MISSING = dataclasses.MISSING


def option(default: Any = MISSING, help: str = "", *, parse: Callable[[str], Any] | None = None,  # noqa: A002
           choices: Iterable[str] | None = None, metavar: str | None = None, cli: bool = True) -> Any:
    """A dataclass field described for the command line (``cli=False``: stored, never a flag or override)."""
    metadata = {"help": help, "parse": parse, "choices": tuple(choices) if choices is not None else None,
                "metavar": metavar, "cli": cli}
    if isinstance(default, list):
        return dataclasses.field(default_factory=lambda: list(default), metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def flag_of(name: str) -> str:
    return "--" + name.replace("_", "-")


def _cli_fields(cls: type) -> list[dataclasses.Field]:
    return [f for f in dataclasses.fields(cls) if f.metadata.get("cli", False)]


def _default(field: dataclasses.Field) -> Any:
    if field.default is not MISSING:
        return field.default
    if field.default_factory is not MISSING:
        return field.default_factory()
    return MISSING


def add_arguments(parser: argparse.ArgumentParser | Any, cls: type, *, exclude: Iterable[str] = ()) -> None:
    """A flag per command-line field of ``cls``; given flags only reach the namespace (see ``resolve``)."""
    for field in _cli_fields(cls):
        if field.name in exclude:
            continue
        meta, default = field.metadata, _default(field)
        shown = "" if default is MISSING or default is None or default is False or default == [] \
            else f" (default: {default})"
        help_text = (meta["help"] + shown).replace("%", "%%")
        if default is False:
            parser.add_argument(flag_of(field.name), action="store_true", default=argparse.SUPPRESS, help=help_text)
            continue
        parser.add_argument(flag_of(field.name), type=meta["parse"], choices=meta["choices"], metavar=meta["metavar"],
                            default=argparse.SUPPRESS, help=help_text)


def read_config(path: Path) -> dict[str, Any]:
    """The options a JSON file holds (a run's options.json, or one written by hand)."""
    if not path.is_file():
        raise MissingInput(f"--config {path} does not exist")
    try:
        values = json.loads(path.read_text())
    except ValueError as exc:
        raise InvalidValue(f"--config {path} is not JSON ({exc})") from None
    if not isinstance(values, dict):
        raise InvalidValue(f"--config {path} holds {type(values).__name__}, not an object of option names and values")
    return values


def parse_override(cls: type, text: str) -> tuple[str, Any]:
    """``KEY=VALUE`` (KEY as in options.json or as its flag) parsed by the field's own parser."""
    key, sep, value = text.partition("=")
    name = key.strip().removeprefix("--").replace("-", "_")
    fields = {f.name: f for f in _cli_fields(cls)}
    if not sep or name not in fields:
        raise InvalidValue(f"{text!r} is not KEY=VALUE with KEY one of: {', '.join(fields)}")
    field = fields[name]
    return name, _parse(field, value, f"{key}={value}")


def _parse(field: dataclasses.Field, value: Any, where: str) -> Any:
    """A config or override value as its flag would give it (text parsed; JSON values checked the same way)."""
    meta = field.metadata
    if _default(field) is False:
        if isinstance(value, bool):
            return value
        if str(value).lower() in ("true", "1", "yes", "false", "0", "no"):
            return str(value).lower() in ("true", "1", "yes")
        raise InvalidValue(f"{where}: expected true or false")
    if value is None:
        return None
    if meta["choices"] is not None and str(value) not in meta["choices"]:
        raise InvalidValue(f"{where}: choose one of {', '.join(meta['choices'])}")
    parse = meta["parse"]
    if parse is None:
        return value
    if isinstance(value, list):
        value = ",".join(str(item) for item in value)
    try:
        return parse(str(value))
    except argparse.ArgumentTypeError as exc:
        raise InvalidValue(f"{where}: {exc}") from None


def resolve(cls: type[T], args: argparse.Namespace, *, config: dict[str, Any] | None = None,
            overrides: Iterable[str] = (), fixed: dict[str, Any] | None = None) -> T:
    """``cls`` from its defaults, then ``config``, then ``overrides``, then the flags given, then ``fixed``."""
    names = {f.name: f for f in dataclasses.fields(cls)}
    values: dict[str, Any] = {}
    for key, value in (config or {}).items():
        if key not in names:
            raise InvalidValue(f"--config: {key!r} is not an option (options: {', '.join(names)})")
        field = names[key]
        values[key] = _parse(field, value, f"--config {key}") if field.metadata.get("cli") else value
    values.update(parse_override(cls, text) for text in overrides)
    values.update({f.name: getattr(args, f.name) for f in _cli_fields(cls) if hasattr(args, f.name)})
    values.update(fixed or {})
    missing = [name for name, field in names.items() if name not in values and _default(field) is MISSING]
    if missing:
        raise InvalidValue(f"missing {', '.join(flag_of(name) for name in missing)}")
    return cls(**values)
