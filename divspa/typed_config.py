"""A strict YAML-to-dataclass loader: the part of the configuration that knows nothing of divspa.

Strict on purpose: a scheduled job that silently ignores a misspelt key (`trian.lr`) trains
with the wrong settings for weeks, so unknown keys, wrong types and out-of-range values fail at
start-up with one line naming the key and the file. divspa.config holds the sections and what
one setting implies for another; this module turns text into a checked dataclass tree.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
import re
import types
import typing
from collections.abc import Mapping
from dataclasses import field
from pathlib import Path
from typing import Any, Literal

import yaml

from divspa.errors import ConfigError

_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def opt(default: Any = None, *, ge: float | None = None, gt: float | None = None,
         le: float | None = None, lt: float | None = None, doc: str = "") -> Any:
    """A dataclass field with an inclusive/exclusive numeric range checked at load time."""
    meta = {"ge": ge, "gt": gt, "le": le, "lt": lt, "doc": doc}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda d=default: type(d)(d), metadata=meta)
    return field(default=default, metadata=meta)


def read_yaml(path: str | Path) -> dict[str, Any]:
    """A YAML file's mapping of sections, `${VAR}` expanded."""
    source = str(path)
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise ConfigError(f"{source}: cannot read config file: {exc.strerror}") from exc
    try:
        loaded = yaml.safe_load(text)
    except yaml.YAMLError as exc:  # one line: where, and what the parser expected
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(f"{source}: not valid YAML{where}: {getattr(exc, 'problem', None) or exc}") from exc
    if loaded is None:
        loaded = {}
    if not isinstance(loaded, dict):
        raise ConfigError(f"{source}: the top level must be a mapping of sections")
    return expand_env(loaded, "", source)


def env_overrides(root: type, prefix: str, environ: Mapping[str, str] | None = None) -> list[str]:
    """`<prefix>SECTION__KEY=value` variables as `section.key=value` overrides of dataclass `root`.

    A scheduler sets paths and switches per environment without editing the YAML; names are
    case-insensitive up to a map key (spark.conf's keys keep their spelling:
    DIVSPA__SPARK__CONF__spark.sql.shuffle.partitions=64)."""
    environ = os.environ if environ is None else environ
    out = []
    for name in sorted(n for n in environ if n.upper().startswith(prefix)):
        parts, tp = name[len(prefix):].split("__"), root
        for i, part in enumerate(parts):
            hints = typing.get_type_hints(tp) if dataclasses.is_dataclass(tp) else {}
            if part.lower() not in hints:
                break
            parts[i] = part.lower()
            tp = unwrap_optional(hints[part.lower()])
        out.append(f"{'.'.join(parts)}={environ[name]}")
    return out


def expand_env(value: Any, key: str, source: str) -> Any:
    """`${VAR}` / `${VAR:-default}` in YAML strings, so secrets stay out of config files."""
    if isinstance(value, dict):
        return {k: expand_env(v, f"{key}.{k}" if key else str(k), source) for k, v in value.items()}
    if isinstance(value, list):
        return [expand_env(v, f"{key}[{i}]", source) for i, v in enumerate(value)]
    if not isinstance(value, str) or "${" not in value:
        return value

    def sub(m: re.Match[str]) -> str:
        if m.group(1) in os.environ:
            return os.environ[m.group(1)]
        if m.group(2) is not None:
            return m.group(2)
        raise ConfigError(f"{source}: {key} refers to ${{{m.group(1)}}}, which is not set in the environment")

    return _ENV_REF.sub(sub, value)


def apply_override(raw: dict[str, Any], item: str, root: type, origin: str = "--set") -> None:
    if "=" not in item:
        raise ConfigError(f"{origin} {item!r}: expected key.sub=value")
    key, _, value_text = item.partition("=")
    parts = key.strip().split(".")
    if any(not p for p in parts):
        raise ConfigError(f"{origin} {item!r}: malformed key {key!r}")
    try:
        value = yaml.safe_load(value_text) if value_text.strip() else None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{origin} {item!r}: value is not valid YAML: {exc}") from exc
    # Walk the dataclass types alongside the key: inside a dict-typed field (spark.conf) the rest
    # of the key is one map key, dots included (spark.conf.spark.sql.foo=1).
    tp: Any = root
    for i, p in enumerate(parts):
        if typing.get_origin(tp) is dict:
            parts = parts[:i] + [".".join(parts[i:])]
            break
        hints = typing.get_type_hints(tp) if dataclasses.is_dataclass(tp) else {}
        tp = unwrap_optional(hints.get(p))
    node = raw
    for p in parts[:-1]:
        nxt = node.get(p)
        if nxt is None:
            nxt = node[p] = {}
        if not isinstance(nxt, dict):
            raise ConfigError(f"{origin} {item!r}: {p!r} is not a section")
        node = nxt
    node[parts[-1]] = value


def unwrap_optional(tp: Any) -> Any:
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    if typing.get_origin(tp) in (typing.Union, types.UnionType) and len(args) == 1:
        return args[0]
    return tp


def build(cls: type, data: Any, prefix: str, source: str) -> Any:
    where = prefix.rstrip(".") or "<top level>"
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: {where}: expected a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(
            f"{source}: unknown key {prefix}{unknown[0]!s} (known keys in {where}: {', '.join(sorted(fields))})"
        )
    kwargs: dict[str, Any] = {}
    for name, f in fields.items():
        key = f"{prefix}{name}"
        if name not in data:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise ConfigError(f"{source}: missing required key {key}")
            continue
        value = _convert(hints[name], data[name], key, source)
        _check_range(f, value, key, source)
        kwargs[name] = value
    return cls(**kwargs)


def _check_range(f: dataclasses.Field, value: Any, key: str, source: str) -> None:
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return
    m = f.metadata
    checks = [("ge", lambda b: value >= b, ">="), ("gt", lambda b: value > b, ">"),
              ("le", lambda b: value <= b, "<="), ("lt", lambda b: value < b, "<")]
    for name, ok, sym in checks:
        bound = m.get(name)
        if bound is not None and not ok(bound):
            raise ConfigError(f"{source}: {key} = {value!r} is out of range: must be {sym} {bound}")


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _convert(tp: Any, value: Any, key: str, source: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None:
            if type(None) in args:
                return None
            raise ConfigError(f"{source}: {key} must not be null")
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return _convert(arg, value, key, source)
            except ConfigError as exc:
                errors.append(str(exc))
        expected = " or ".join(_type_name(a) for a in args if a is not type(None))
        raise ConfigError(f"{source}: {key} = {value!r} has the wrong type: expected {expected}")
    if value is None:
        raise ConfigError(f"{source}: {key} must not be null (expected {_type_name(tp)})")
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{source}: {key} = {value!r} is not one of {', '.join(map(repr, args))}")
        return value
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{source}: {key} must be a list, got {type(value).__name__}")
        return [_convert(args[0], v, f"{key}[{i}]", source) for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{source}: {key} must be a mapping, got {type(value).__name__}")
        if args[1] is str:  # spark.conf: YAML's true / 4 / 0.5 are Spark's "true" / "4" / "0.5"
            value = {k: (str(v).lower() if isinstance(v, bool) else str(v) if isinstance(v, (int, float)) else v)
                     for k, v in value.items()}
        return {str(k): _convert(args[1], v, f"{key}.{k}", source) for k, v in value.items()}
    if dataclasses.is_dataclass(tp):
        return build(tp, value, f"{key}.", source)
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{source}: {key} = {value!r} must be true or false")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{source}: {key} = {value!r} must be an integer")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{source}: {key} = {value!r} must be a number")
        return float(value)
    if tp is str:
        if isinstance(value, (dt.date, dt.datetime)):
            return value.isoformat()  # YAML turns 2026-01-01 into a date; keep it as text
        if isinstance(value, int) and not isinstance(value, bool):
            return str(value)  # YAML reads a run id like 20261122 as a number
        if not isinstance(value, str):
            raise ConfigError(f"{source}: {key} = {value!r} must be a string")
        return value
    raise ConfigError(f"{source}: {key}: unsupported config type {tp!r}")  # pragma: no cover
