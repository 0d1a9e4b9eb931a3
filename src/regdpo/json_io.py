"""The one JSON reader of regdpo, and the typed field checks of what each reader relies on.

Every JSON file a command reads (``meta.json``, manifests, ``_failed`` records, ``audit.json``,
``selection.json``, ``score.json``, ``--captions``) goes through :func:`read_json`, which

* opens it through ``regdpo.safe_read`` (a named pipe, socket, device or link loop is an ``InputUnreadable``
  naming it, never waited on) and refuses a file larger than its kind's limit before reading it (``MAX_RECORD_BYTES`` for one video's records,
  ``MAX_INDEX_BYTES`` for indexes such as a manifest or ``audit.json``);
* refuses text that is not UTF-8 JSON, numbers Python cannot hold (an integer of more than 4300 digits,
  ``NaN``, ``Infinity``, a float that overflows to infinity) and nesting deeper than ``MAX_DEPTH``;
* raises :class:`~regdpo.errors.JSONFileError` (a ``FormatError``, exit 1) whose one-line message names
  the file and what is wrong.

:class:`Fields` then checks the type and range of each field a reader uses, naming the file and the field
(``manifest.json: videos[3].num_frames: '8' is not an integer in 1..100000``). The schemas themselves live
with their readers (``regdpo.format`` for ``meta.json``, manifests and failure records).
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

from .errors import InputUnreadable, JSONFileError
from .safe_read import read_input_bytes

MAX_RECORD_BYTES = 16 << 20
"""Largest per-video JSON record read (``meta.json``, a ``_failed`` record): 16 MiB."""
MAX_INDEX_BYTES = 1 << 30
"""Largest index read (a manifest, ``audit.json``, ``selection.json``, ``score.json``, ``--captions``): 1 GiB."""
MAX_DEPTH = 32
"""Deepest nesting of arrays and objects accepted (regdpo's own files nest at most 6 deep)."""
_MISSING = object()


def read_bytes(path: str | os.PathLike, max_bytes: int, what: str = "JSON file") -> bytes:
    """The bytes of the regular file ``path``, at most ``max_bytes``: opened through ``regdpo.safe_read`` (a
    FIFO, socket, device or link loop is an ``InputUnreadable`` naming it, never a blocking open); a missing
    or larger file is a ``JSONFileError`` naming it."""
    path = Path(path)
    try:
        return read_input_bytes(path, what, max_bytes=max_bytes)
    except FileNotFoundError:
        raise JSONFileError(f"{path}: file not found") from None
    except InputUnreadable as exc:
        if "bytes, more than the" in str(exc) or "grew while read" in str(exc):
            raise JSONFileError(str(exc)) from None
        raise


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"the number {text[:40]} is too large for a float")
    return value


def depth_of(data: Any, limit: int = MAX_DEPTH) -> int:
    """Nesting depth of parsed JSON (a scalar is 0), measured without recursion; stops past ``limit``."""
    deepest, stack = 0, [(data, 0)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, (dict, list)):
            depth += 1
            deepest = max(deepest, depth)
            if deepest > limit:
                return deepest
            stack.extend((v, depth) for v in (value.values() if isinstance(value, dict) else value))
    return deepest


def parse_json(text: str | bytes, where: str | os.PathLike) -> Any:
    """Parsed JSON text with the limits of :func:`read_json` (but no size limit); ``JSONFileError`` naming
    ``where`` otherwise."""
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise JSONFileError(f"{where}: not UTF-8 text (byte {exc.start})") from None
    try:
        data = json.loads(text, parse_constant=_refuse_constant, parse_float=_finite_float)
    except json.JSONDecodeError as exc:
        raise JSONFileError(f"{where}: not valid JSON ({exc})") from None
    except RecursionError:
        raise JSONFileError(f"{where}: nested deeper than {MAX_DEPTH} arrays or objects") from None
    except ValueError as exc:  # an integer past Python's 4300-digit limit, NaN, Infinity, 1e999
        reason = str(exc).split(";")[0]
        if "digits" in reason:
            reason = "holds an integer too large to read (more than 4300 digits)"
        raise JSONFileError(f"{where}: {reason}") from None
    if depth_of(data) > MAX_DEPTH:
        raise JSONFileError(f"{where}: nested deeper than {MAX_DEPTH} arrays or objects")
    return data


def read_json(path: str | os.PathLike, max_bytes: int = MAX_INDEX_BYTES) -> Any:
    """The parsed content of the JSON file ``path`` (see the module docstring for the limits)."""
    return parse_json(read_bytes(path, max_bytes), path)


def read_object(path: str | os.PathLike, max_bytes: int = MAX_INDEX_BYTES) -> "Fields":
    """:func:`read_json` of a file that must hold a JSON object, as :class:`Fields`."""
    return Fields(read_json(path, max_bytes), str(path))


# --------------------------------------------------------------------------- typed fields


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


class Fields:
    """The fields of one JSON object, each read with its type and range checked; every problem is a
    ``JSONFileError`` naming ``where`` (the file, and the path to the object in it) and the field."""

    def __init__(self, data: Any, where: str):
        if not isinstance(data, Mapping):
            raise JSONFileError(f"{where}: not a JSON object (got {type(data).__name__})")
        self.data, self.where = data, where

    def error(self, key: str, problem: str) -> JSONFileError:
        return JSONFileError(f"{self.where}: {key}: {problem}")

    def _get(self, key: str, default: Any) -> Any:
        if key in self.data:
            return self.data[key]
        if default is _MISSING:
            raise self.error(key, "missing")
        return default

    def has(self, key: str) -> bool:
        return key in self.data

    def string(self, key: str, default: Any = _MISSING, *, choices: Iterable[str] | None = None,
               max_len: int = 1 << 20, nullable: bool = False) -> Any:
        value = self._get(key, default)
        if (value is default and key not in self.data) or (value is None and nullable):
            return value
        if not isinstance(value, str):
            raise self.error(key, f"{_shown(value)} is not a string")
        if len(value) > max_len:
            raise self.error(key, f"a string of {len(value)} characters, more than {max_len}")
        if choices is not None and value not in choices:
            raise self.error(key, f"{_shown(value)} is not one of {', '.join(sorted(choices))}")
        return value

    def integer(self, key: str, lo: int, hi: int, default: Any = _MISSING) -> Any:
        value = self._get(key, default)
        if value is default and key not in self.data:
            return value
        if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
            raise self.error(key, f"{_shown(value)} is not an integer in {lo}..{hi}")
        return value

    def number(self, key: str, lo: float = -math.inf, hi: float = math.inf, default: Any = _MISSING,
               *, nullable: bool = False) -> Any:
        value = self._get(key, default)
        if (value is default and key not in self.data) or (value is None and nullable):
            return value
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not lo <= value <= hi:
            raise self.error(key, f"{_shown(value)} is not a number in [{lo:g}, {hi:g}]")
        return value

    def obj(self, key: str, default: Any = _MISSING, *, nullable: bool = False) -> Any:
        value = self._get(key, default)
        if (value is default and key not in self.data) or (value is None and nullable):
            return value
        if not isinstance(value, Mapping):
            raise self.error(key, f"{_shown(value)} is not an object")
        return value

    def fields(self, key: str) -> "Fields":
        """The object at ``key``, as ``Fields`` (the key must be there)."""
        return Fields(self.obj(key), f"{self.where}: {key}")

    def array(self, key: str, default: Any = _MISSING, *, item: Callable[[Any, str], Any] | None = None,
              nullable: bool = False) -> Any:
        """The list at ``key``; ``item(value, where)`` checks (and may convert) each element."""
        value = self._get(key, default)
        if (value is default and key not in self.data) or (value is None and nullable):
            return value
        if not isinstance(value, list):
            raise self.error(key, f"{_shown(value)} is not an array")
        if item is None:
            return value
        return [item(v, f"{self.where}: {key}[{k}]") for k, v in enumerate(value)]

    def objects(self, key: str, default: Any = _MISSING) -> list["Fields"]:
        """The array of objects at ``key``, each as ``Fields``."""
        return self.array(key, default, item=lambda v, where: Fields(v, where)) or []


def string_item(value: Any, where: str) -> str:
    """An array element that must be a string (``Fields.array(item=...)``)."""
    if not isinstance(value, str):
        raise JSONFileError(f"{where}: {_shown(value)} is not a string")
    return value
