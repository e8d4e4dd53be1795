"""Layout TOMLs: how to find image sets in a folder that is not laid out like BBBC021.

A layout config has a `[layout]` section. `kind = "bbbc021"` means the two BBBC021 CSVs
(see `bbbc021.py`). `kind = "regex"` describes plain folders of single-channel images:

    [layout]
    kind = "regex"
    pattern = '(?P<well>\\d+)_POS(?P<site>\\d+)_(?P<channel>[DFR])\\.TIF'
    ignore_case = true        # optional
    recursive = false         # optional: match the pattern against paths below root
    [layout.channels]         # our channel -> the pattern's `channel` token
    DNA = "D"
    Actin = "F"
    Tubulin = "R"
    [layout.defaults]         # metadata for fields the pattern does not capture
    plate = "myplate"
    compound = "unknown"

The pattern must match the whole file name (or the path relative to root when recursive)
and have a `channel` group; optional groups: plate, well, site, compound, concentration,
moa, replicate. Files that do not match are ignored. Each distinct combination of the
non-channel groups is one image set.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Mapping

import pandas as pd

from ..config import load_config
from ..errors import ConfigError, DataError
from .bbbc021 import (
    CHANNELS,
    NEGATIVE_CONTROL,
    OUTPUT_COLUMNS,
    UNKNOWN_MOA,
    parse_concentration,
)

METADATA_GROUPS = ("plate", "well", "site", "compound", "concentration", "moa", "replicate")
DEFAULTS = {
    "plate": "plate1",
    "well": "A01",
    "compound": "unknown",
    "concentration": 0.0,
    "moa": UNKNOWN_MOA,
    "replicate": 1,
    "table_number": 1,
}


def resolve_layout(layout: str | os.PathLike | Mapping) -> dict:
    """The `[layout]` section for a layout name, a TOML path or a loaded config."""
    if isinstance(layout, Mapping):
        cfg = dict(layout)
        where = "layout"
    else:
        cfg = load_config(layout)
        where = str(layout)
    section = cfg.get("layout", cfg)
    if not isinstance(section, Mapping):
        raise ConfigError(f"{where}: [layout] must be a table")
    section = dict(section)
    section.setdefault("kind", "bbbc021")
    section["_source"] = where
    if section["kind"] == "regex":
        _check_regex_layout(section)
    return section


def _check_regex_layout(spec: dict) -> None:
    where = spec["_source"]
    pattern = spec.get("pattern")
    if not isinstance(pattern, str) or not pattern:
        raise ConfigError(f"{where}: layout.pattern is required for kind = 'regex'")
    try:
        regex = re.compile(pattern, re.IGNORECASE if spec.get("ignore_case", False) else 0)
    except re.error as exc:
        raise ConfigError(f"{where}: layout.pattern is not a valid regular expression: {exc}") from None
    if "channel" not in regex.groupindex:
        raise ConfigError(f"{where}: layout.pattern needs a named group (?P<channel>...)")
    unknown = set(regex.groupindex) - set(METADATA_GROUPS) - {"channel"}
    if unknown:
        raise ConfigError(
            f"{where}: layout.pattern has unknown group(s) {', '.join(sorted(unknown))}; "
            f"allowed: channel, {', '.join(METADATA_GROUPS)}"
        )
    channels = spec.get("channels")
    if not isinstance(channels, Mapping) or set(channels) != set(CHANNELS):
        raise ConfigError(f"{where}: layout.channels must map each of {', '.join(CHANNELS)} to a token")
    spec["_regex"] = regex


def load_regex_layout(root: Path, spec: dict, *, check_files: bool = True, skip_bad: bool = False) -> pd.DataFrame:
    """Image sets found by matching file names against the layout's pattern."""
    regex: re.Pattern = spec["_regex"]
    fold = (lambda s: s.lower()) if spec.get("ignore_case", False) else (lambda s: s)
    token_to_channel = {fold(str(tok)): ch for ch, tok in spec["channels"].items()}
    defaults = {**DEFAULTS, **dict(spec.get("defaults", {}))}
    root_abs = Path(os.path.abspath(root))
    files = root_abs.rglob("*") if spec.get("recursive", False) else root_abs.iterdir()

    groups: dict[tuple, dict[str, Path]] = {}
    for path in sorted(files):
        if not path.is_file():
            continue
        rel = path.relative_to(root_abs).as_posix()
        match = regex.fullmatch(rel)
        if not match:
            continue
        fields = match.groupdict()
        channel = token_to_channel.get(fold(fields.pop("channel") or ""))
        if channel is None:
            continue  # a channel this layout does not use (e.g. a brightfield image)
        key = tuple(sorted((k, v) for k, v in fields.items() if v is not None))
        groups.setdefault(key, {})[channel] = path
    if not groups:
        raise DataError(f"{root}: no files match layout pattern {regex.pattern!r} ({spec['_source']})")

    rows, skipped = [], []
    for number, (key, paths) in enumerate(sorted(groups.items()), start=1):
        missing = [c for c in CHANNELS if c not in paths]
        first = str(next(iter(paths.values())))
        try:
            if missing:
                raise DataError(f"{first}: image set lacks channel(s) {', '.join(missing)}")
            rows.append(_regex_row(dict(key), defaults, paths, number, first))
        except DataError as exc:
            if not skip_bad:
                raise
            skipped.append((first, str(exc).split(": ", 1)[-1]))
    if not rows:
        raise DataError(f"{root}: no complete image sets for layout {spec['_source']}")
    df = pd.DataFrame(rows)
    if (df["Metadata_Site"] == 0).any():  # no site in the name: number fields per well
        df["Metadata_Site"] = df.groupby(["Metadata_Plate", "Metadata_Well"]).cumcount() + 1
    df = df[OUTPUT_COLUMNS].reset_index(drop=True)
    df.attrs["skipped"] = skipped
    df.attrs["unknown_moa"] = sorted(set(df.loc[df["Metadata_MOA"] == UNKNOWN_MOA, "Metadata_Compound"]))
    return df


def _regex_row(fields: dict, defaults: dict, paths: dict, number: int, first: str) -> dict:
    value = {k: fields.get(k, defaults.get(k)) for k in METADATA_GROUPS}
    conc = parse_concentration(str(value["concentration"]))
    if conc is None:
        raise DataError(f"{first}: cannot read concentration {value['concentration']!r}")
    try:
        site = int(value["site"]) if value["site"] is not None else 0
        replicate = int(value["replicate"])
    except (TypeError, ValueError):
        raise DataError(f"{first}: cannot read site/replicate {value['site']!r}/{value['replicate']!r}") from None
    compound = str(value["compound"])
    negative = compound.lower() == NEGATIVE_CONTROL.lower()
    return {
        "Metadata_Plate": str(value["plate"]),
        "Metadata_Well": str(value["well"]),
        "Metadata_Site": site,
        "Metadata_Compound": NEGATIVE_CONTROL if negative else compound,
        "Metadata_Concentration": conc,
        "Metadata_MOA": NEGATIVE_CONTROL if negative else str(value["moa"]),
        "Metadata_Replicate": replicate,
        "Metadata_ImageNumber": number,
        "Metadata_TableNumber": int(defaults.get("table_number", 1)),
        "Metadata_Control": "negative" if negative else "treatment",
        **{f"PathName_{c}": str(paths[c]) for c in CHANNELS},
    }
