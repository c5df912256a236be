"""Configuration errors as an operator reads them: where (the variable, or the file and its entry) and
what is wrong, one line each, and never the value given, which may be a key or a secret."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import ValidationError

# Parts of an error's location that are not fields: union and discriminator tags.
_TAGS = {"local", "upstream"}


class ConfigError(ValueError):
    """A setting, models file or keys file that cannot be served as given."""


def _what(error: Any) -> str:
    message = str(error["msg"])
    return message.removeprefix("Value error, ").removeprefix("Assertion failed, ")


def settings_error(exc: ValidationError) -> ConfigError:
    """Settings come from EMBEDSERVE_ variables (and serve's flags, which argparse checks first)."""
    problems = []
    for error in exc.errors(include_url=False, include_input=False, include_context=False):
        field = str(error["loc"][0]) if error["loc"] else ""
        problems.append(f"EMBEDSERVE_{field.upper()}: {_what(error)}" if field else _what(error))
    return ConfigError("; ".join(problems))


def file_error(path: Path | str, exc: ValidationError, data: Any, list_name: str) -> ConfigError:
    """An error of a YAML file holding a `list_name:` list: the file, the entry (by `id` or `name`
    where it has one, else its position) and the field."""
    problems = []
    for error in exc.errors(include_url=False, include_input=False, include_context=False):
        loc = [part for part in error["loc"] if part not in _TAGS]
        where = ""
        if len(loc) >= 2 and loc[0] == list_name and isinstance(loc[1], int):
            where = f"entry {_entry_name(data, list_name, loc[1])}"
            loc = loc[2:]
        field = ".".join(str(part) for part in loc)
        problems.append(", ".join(filter(None, [where, field])) + f": {_what(error)}")
    return ConfigError(f"{path}: " + "; ".join(problems))


def _entry_name(data: Any, list_name: str, index: int) -> str:
    try:
        entry = data[list_name][index]
    except (KeyError, IndexError, TypeError):
        entry = None
    label = next((entry[key] for key in ("id", "name") if isinstance(entry, dict) and entry.get(key)), None)
    return f"{index + 1} ({label!r})" if isinstance(label, str) else str(index + 1)
