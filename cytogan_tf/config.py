"""Configs: one TOML per architecture and per dataset, overridable from the CLI.

Configs live in the `cytogan_tf.configs` package (the repo's top-level `configs/`). A
config is a dict of sections (`[model]`, `[train]`, `[prepare]`, ...). CLI options
override keys with `apply_overrides(cfg, {"train.batch_size": 32})`; `None` means
"option not given" and leaves the config value alone.
"""

from __future__ import annotations

import copy
import os
import tomllib
from importlib import resources
from pathlib import Path
from typing import Any, Mapping

from .errors import ConfigError


def available_configs() -> list[str]:
    return sorted(
        p.name[: -len(".toml")]
        for p in resources.files("cytogan_tf.configs").iterdir()
        if p.name.endswith(".toml")
    )


def load_config(name_or_path: str | os.PathLike) -> dict[str, Any]:
    """Load a bundled config by name (`wgan`) or any TOML file by path.

    A path must end in `.toml`; anything else is a bundled name, so a folder that happens
    to be called like a config (the README's `./bbbc021` data folder) is never taken for
    one.
    """
    text = None
    path = Path(name_or_path)
    if path.suffix == ".toml":
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        text = path.read_text()
        where = str(path)
    else:
        res = resources.files("cytogan_tf.configs").joinpath(f"{name_or_path}.toml")
        if not res.is_file():
            raise ConfigError(
                f"unknown config {str(name_or_path)!r}; bundled: {', '.join(available_configs())}"
            )
        text = res.read_text()
        where = f"configs/{name_or_path}.toml"
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{where}: invalid TOML: {exc}") from None


def apply_overrides(cfg: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """Return a copy of `cfg` with dotted keys (`train.batch_size`) replaced.

    Unknown keys are an error, so a typo in an option never silently does nothing;
    values given as strings (from `--set key=value`) are converted to the type
    already in the config.
    """
    out = copy.deepcopy(dict(cfg))
    for dotted, value in overrides.items():
        if value is None:
            continue
        *sections, key = dotted.split(".")
        node = out
        for sec in sections:
            if not isinstance(node.get(sec), dict):
                raise ConfigError(f"unknown config section {'.'.join(sections)!r} in {dotted!r}")
            node = node[sec]
        if key not in node:
            raise ConfigError(f"unknown config key {dotted!r}")
        node[key] = _coerce(value, node[key], dotted)
    return out


def parse_set_options(items: tuple[str, ...] | list[str]) -> dict[str, str]:
    """Parse repeated `--set key=value` CLI options."""
    parsed = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"--set expects key=value, got {item!r}")
        key, value = item.split("=", 1)
        parsed[key.strip()] = value.strip()
    return parsed


def _coerce(value: Any, current: Any, key: str) -> Any:
    if not isinstance(value, str) or isinstance(current, str):
        return value
    try:
        if isinstance(current, bool):
            if value.lower() in ("1", "true", "yes", "on"):
                return True
            if value.lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError(value)
        if isinstance(current, int):
            return int(value)
        if isinstance(current, float):
            return float(value)
        if isinstance(current, list):
            return tomllib.loads(f"v = {value}")["v"]
    except (ValueError, tomllib.TOMLDecodeError):
        raise ConfigError(f"{key}: cannot read {value!r} as {type(current).__name__}") from None
    return value


def dump_toml(cfg: Mapping[str, Any]) -> str:
    """Serialise a config (sections of scalars/lists) back to TOML for the run directory.

    Written by hand because the stdlib reads TOML but cannot write it, and the subset
    configs use (tables of scalars and flat lists) is small.
    """
    lines: list[str] = []
    top = {k: v for k, v in cfg.items() if not isinstance(v, dict)}
    for k, v in top.items():
        lines.append(f"{k} = {_toml_value(v)}")
    for section, body in cfg.items():
        if isinstance(body, dict):
            _dump_table(section, body, lines)
    return "\n".join(lines) + "\n"


def _dump_table(name: str, body: Mapping[str, Any], lines: list[str]) -> None:
    if lines:
        lines.append("")
    lines.append(f"[{name}]")
    for k, v in body.items():
        if not isinstance(v, dict):
            lines.append(f"{k} = {_toml_value(v)}")
    for k, v in body.items():
        if isinstance(v, dict):
            _dump_table(f"{name}.{k}", v, lines)


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    if v is None:
        raise ConfigError("TOML has no null; drop the key instead")
    raise ConfigError(f"cannot write {type(v).__name__} to TOML")
