"""One source per option: a dataclass field carries its default, help, parser and choices, and the command line,
a ``--config`` file and ``KEY=VALUE`` overrides are all read through it.

    @dataclass
    class TrainOptions:
        batch_size: int = option(16, "total batch", parse=positive_int)

(``option`` and the parsers: data_prep.option_fields, which BuildOptions shares.) ``add_arguments`` turns the
fields of one or more such dataclasses into argparse flags (``--batch-size``) whose defaults are left out of
the namespace, so ``resolve`` can tell what the user gave: each field's value is its default, then the
config file's, then a ``KEY=VALUE`` override's, then the flag's. Unknown keys and values that do not
parse are refused naming them.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from mrfnet.runtime.errors import InvalidValue, MissingInput

T = TypeVar("T")
MISSING = dataclasses.MISSING


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


def _choices(field: dataclasses.Field) -> tuple[str, ...] | None:
    """The field's choices as they are now (a registry's, its entries so far)."""
    choices = field.metadata["choices"]
    return None if choices is None else tuple(choices)


def _help(field: dataclasses.Field) -> str:
    """The field's help (a function's: as it reads now) with its default said once: where ``%(default)s`` puts
    it, else appended, unless the help words its default itself (it says "default") or there is none worth
    saying (None, off, empty)."""
    help_text, default = field.metadata["help"], _default(field)
    help_text = help_text() if callable(help_text) else help_text
    if "%(default)s" in help_text:
        help_text = help_text.replace("%(default)s", str(default))
    elif not ("default" in help_text or default is MISSING or default is None or isinstance(default, bool)
              or default == []):
        help_text += f" (default: {default})"
    return help_text.replace("%", "%%")


def _add_flag(container: argparse.ArgumentParser | Any, field: dataclasses.Field) -> None:
    """One field's flag: a switch for a boolean (``--no-X`` too where it is on by default), else a value."""
    meta, default, flag = field.metadata, _default(field), flag_of(field.name)
    if isinstance(default, bool):
        action = argparse.BooleanOptionalAction if default else "store_true"
        container.add_argument(flag, action=action, default=argparse.SUPPRESS, help=_help(field))
        return
    container.add_argument(flag, type=meta["parse"], choices=_choices(field), metavar=meta["metavar"],
                           required=default is MISSING, default=argparse.SUPPRESS, help=_help(field))


def add_arguments(parser: argparse.ArgumentParser | Any, *classes: type, exclude: Iterable[str] = (),
                  groups: Sequence[str] = ()) -> None:
    """A flag per command-line field of ``classes``; given flags only reach the namespace (see ``resolve``).

    Fields without a group come first, then each argument group in the order of ``groups``, then the others
    as they first appear; within a group the fields keep their order, class by class. So --help and the usage
    line list a command's options as its dataclasses order them, even where a group mixes several.
    """
    chosen = [f for cls in classes for f in _cli_fields(cls) if f.name not in exclude]
    used = [f.metadata.get("group") for f in chosen]
    order = [title for title in dict.fromkeys([None, *groups, *used]) if title is None or title in used]
    containers = {title: parser if title is None else parser.add_argument_group(title) for title in order}
    for field in sorted(chosen, key=lambda f: order.index(f.metadata.get("group"))):
        _add_flag(containers[field.metadata.get("group")], field)


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
    if isinstance(_default(field), bool):
        if isinstance(value, bool):
            return value
        if str(value).lower() in ("true", "1", "yes", "false", "0", "no"):
            return str(value).lower() in ("true", "1", "yes")
        raise InvalidValue(f"{where}: expected true or false")
    if value is None:
        return None
    choices = _choices(field)
    if choices is not None and str(value) not in choices:
        raise InvalidValue(f"{where}: choose one of {', '.join(choices)}")
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
