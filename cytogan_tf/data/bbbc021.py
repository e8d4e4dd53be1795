"""Image-set tables: which files make up each field of view, and what was done to it.

`load_image_sets` turns a plate set on disk into one pandas row per image set (field of
view) with pycytominer-style `Metadata_*` columns and absolute paths to the DNA, Actin and
Tubulin images. The BBBC021 layout (two CSVs, as published by the Broad) is built in;
other layouts are described by a layout TOML (see `layouts.py`, `configs/examplefly.toml`).

Controls (documented here because every later stage depends on it):

* `Metadata_Control == "negative"`: DMSO wells, `Metadata_Compound == "DMSO"`,
  `Metadata_MOA == "DMSO"`.
* `Metadata_Control == "positive"`: positive-control wells (BBBC021: taxol 0.3 uM, 6 wells
  on every plate). They keep their compound and concentration but get
  `Metadata_MOA == "control"`, so grouping treatments by (compound, concentration) or by
  MOA never mixes them into the real taxol 0.3 uM treatment.
* `Metadata_Control == "treatment"`: everything else; MOA joined on (compound,
  concentration). A compound without an MOA row gets `Metadata_MOA == ""` (unknown) and is
  listed in `df.attrs["unknown_moa"]`.

Which taxol 0.3 wells are controls? The CSVs do not say. Controls sit at the same well
positions on the plates of every week, while a real treatment occupies a few plates of one
week (each compound is imaged in one week only). So a well holding a declared
positive-control (compound, concentration) is a control when that (compound,
concentration) holds the same well position in at least half of the weeks (and at least
two); the week is the first folder of `Image_PathName_DAPI` (`Week4/Week4_27481`). With a
single week the same rule counts plates; with a single plate all such wells are controls.
"""

from __future__ import annotations

import io
import logging
import os
import re
import warnings
from pathlib import Path
from typing import Iterable, Mapping

import numpy as np
import pandas as pd

from ..errors import ConfigError, DataError

log = logging.getLogger(__name__)

CHANNELS = ("DNA", "Actin", "Tubulin")

METADATA_COLUMNS = [
    "Metadata_Plate",
    "Metadata_Well",
    "Metadata_Site",
    "Metadata_Compound",
    "Metadata_Concentration",
    "Metadata_MOA",
    "Metadata_Replicate",
    "Metadata_ImageNumber",
    "Metadata_TableNumber",
    "Metadata_Control",
]
PATH_COLUMNS = [f"PathName_{c}" for c in CHANNELS]
OUTPUT_COLUMNS = METADATA_COLUMNS + PATH_COLUMNS

IMAGE_CSV = "BBBC021_v1_image.csv"
MOA_CSV = "BBBC021_v1_moa.csv"

IMAGE_COLUMNS = [
    "TableNumber",
    "ImageNumber",
    "Image_FileName_DAPI",
    "Image_PathName_DAPI",
    "Image_FileName_Tubulin",
    "Image_PathName_Tubulin",
    "Image_FileName_Actin",
    "Image_PathName_Actin",
    "Image_Metadata_Plate_DAPI",
    "Image_Metadata_Well_DAPI",
    "Replicate",
    "Image_Metadata_Compound",
    "Image_Metadata_Concentration",
]
MOA_COLUMNS = ["compound", "concentration", "moa"]

# BBBC021 stain -> our channel name (w1 DAPI, w2 Tubulin, w4 Actin in the file names).
BBBC021_STAINS = {"DNA": "DAPI", "Actin": "Actin", "Tubulin": "Tubulin"}

NEGATIVE_CONTROL = "DMSO"
POSITIVE_CONTROLS = (("taxol", 0.3),)
CONTROL_MOA = "control"
UNKNOWN_MOA = ""

ACCEPTED_DTYPES = (np.dtype(np.uint8), np.dtype(np.uint16), np.dtype(np.float32))

_SITE_RE = re.compile(r"_s(\d+)(?:_|$|\.)", re.IGNORECASE)


# --------------------------------------------------------------------------- tables


def load_image_sets(
    root: str | os.PathLike,
    layout: str | os.PathLike | Mapping = "bbbc021",
    image_csv: str | os.PathLike | None = None,
    moa_csv: str | os.PathLike | None = None,
    check_files: bool = True,
    skip_bad: bool = False,
    positive_controls: Iterable[tuple[str, float]] | None = None,
) -> pd.DataFrame:
    """One row per image set under `root`, in the column schema of `OUTPUT_COLUMNS`.

    `layout` is "bbbc021", the name of a bundled layout config ("examplefly"), a path to a
    layout TOML, or an already-loaded config dict. Bad rows (missing image file,
    unreadable concentration) raise `DataError`; with `skip_bad=True` they are dropped and
    listed as (file, reason) pairs in `df.attrs["skipped"]`.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: image root is not a directory")
    from .layouts import resolve_layout  # local: layouts imports this module's helpers

    spec = resolve_layout(layout)
    kind = spec.get("kind", "bbbc021")
    if kind == "bbbc021":
        if positive_controls is None:
            positive_controls = _positive_controls(spec)
        df = _load_bbbc021(
            root,
            Path(image_csv) if image_csv else root / spec.get("image_csv", IMAGE_CSV),
            Path(moa_csv) if moa_csv else root / spec.get("moa_csv", MOA_CSV),
            check_files=check_files,
            skip_bad=skip_bad,
            negative_control=spec.get("negative_control", NEGATIVE_CONTROL),
            positive_controls=positive_controls,
        )
    elif kind == "regex":
        from .layouts import load_regex_layout

        df = load_regex_layout(root, spec, check_files=check_files, skip_bad=skip_bad)
    else:
        raise ConfigError(f"layout {layout!s}: unknown kind {kind!r} (expected 'bbbc021' or 'regex')")
    return df


def _positive_controls(spec: Mapping) -> list[tuple[str, float]]:
    pairs = spec.get("positive_controls", POSITIVE_CONTROLS)
    try:
        return [(str(c), float(v)) for c, v in pairs]
    except (TypeError, ValueError):
        raise ConfigError(
            f"{spec.get('_source', 'layout')}: layout.positive_controls must be a list of "
            f"[compound, concentration] pairs, got {pairs!r}"
        ) from None


def _load_bbbc021(
    root: Path,
    image_csv: Path,
    moa_csv: Path,
    *,
    check_files: bool,
    skip_bad: bool,
    negative_control: str,
    positive_controls: Iterable[tuple[str, float]],
) -> pd.DataFrame:
    images = read_csv_table(image_csv, IMAGE_COLUMNS)
    moas = read_csv_table(moa_csv, MOA_COLUMNS, allow_empty=True)

    skipped: list[tuple[str, str]] = []
    rows = []
    root_abs = Path(os.path.abspath(root))
    for i, rec in enumerate(images.itertuples(index=False)):
        rec = dict(zip(images.columns, rec))
        try:
            rows.append(_parse_image_row(rec, root_abs, image_csv, check_files, line=i + 2))
        except _RowError as exc:
            if not skip_bad:
                raise
            skipped.append(exc.skip_entry)
    if not rows:
        raise DataError(f"{image_csv}: no usable image rows (all {len(images)} rows were bad)")

    df = pd.DataFrame(rows)
    duplicated = df["Metadata_ImageNumber"].duplicated()
    if duplicated.any():
        first = int(df.loc[duplicated, "Metadata_ImageNumber"].iloc[0])
        if not skip_bad:
            raise DataError(f"{image_csv}: column ImageNumber: duplicate value {first}")
        skipped += [(str(image_csv), f"duplicate ImageNumber {int(n)}")
                    for n in df.loc[duplicated, "Metadata_ImageNumber"]]
        df = df.loc[~duplicated].reset_index(drop=True)
    if skipped:
        log.warning("skipped %d bad image rows from %s", len(skipped), image_csv)
    moa_lookup = _moa_lookup(moas, moa_csv)
    _assign_controls_and_moa(df, moa_lookup, negative_control, positive_controls)
    df = df[OUTPUT_COLUMNS].sort_values("Metadata_ImageNumber", kind="stable").reset_index(drop=True)
    df.attrs["skipped"] = skipped
    unknown = sorted(set(df.loc[df["Metadata_MOA"] == UNKNOWN_MOA, "Metadata_Compound"]))
    df.attrs["unknown_moa"] = unknown
    if unknown:
        log.warning("compounds without an MOA row (kept, MOA ''): %s", ", ".join(unknown))
    return df


class _RowError(DataError):
    """A DataError about one row; `.skip_entry` is the (file, reason) pair for skip reports."""

    def __init__(self, message: str, skip_entry: tuple[str, str]):
        # Cell text from a CSV can hold quoted newlines; a user message stays on one line.
        super().__init__(_flatten(message))
        self.skip_entry = (skip_entry[0], _flatten(skip_entry[1]))


def _flatten(text: str) -> str:
    return text.replace("\r", "\\r").replace("\n", "\\n")


def _parse_image_row(rec: dict, root: Path, csv: Path, check_files: bool, line: int) -> dict:
    image_number = rec["ImageNumber"].strip()
    where = f"{csv}: row {line} (ImageNumber {image_number or '?'})"

    def fail(file: str, reason: str):
        raise _RowError(f"{where}: {reason}", (file, reason))

    try:
        image_no = int(float(image_number))
        table_no = int(float(rec["TableNumber"].strip()))
    except (ValueError, OverflowError):
        fail(str(csv), f"unreadable ImageNumber/TableNumber {image_number!r}/{rec['TableNumber']!r}")
    conc_text = rec["Image_Metadata_Concentration"].strip()
    conc = parse_concentration(conc_text)
    if conc is None:
        fail(str(csv), f"column Image_Metadata_Concentration: cannot read {conc_text!r} as a concentration")
    rep_text = rec["Replicate"].strip()
    try:
        replicate = int(float(rep_text)) if rep_text else 0
    except (ValueError, OverflowError):
        fail(str(csv), f"column Replicate: cannot read {rep_text!r} as an integer")
    plate = rec["Image_Metadata_Plate_DAPI"].strip()
    well = rec["Image_Metadata_Well_DAPI"].strip()
    compound = rec["Image_Metadata_Compound"].strip()
    if not plate or not well or not compound:
        fail(str(csv), "empty plate, well or compound")

    paths = {}
    for channel, stain in BBBC021_STAINS.items():
        name = rec[f"Image_FileName_{stain}"].strip()
        folder = rec[f"Image_PathName_{stain}"].strip().replace("\\", "/")
        if not name:
            fail(str(csv), f"column Image_FileName_{stain} is empty")
        path = root / folder / name
        if check_files and not os.path.isfile(path):  # isfile: False, not OSError, for odd names
            fail(str(path), f"image file not found: {path}")
        paths[f"PathName_{channel}"] = str(path)

    folder = rec["Image_PathName_DAPI"].strip().replace("\\", "/").strip("/")
    batch = folder.split("/")[0] if "/" in folder else plate  # Week4/Week4_27481 -> Week4
    match = _SITE_RE.search(rec["Image_FileName_DAPI"])
    site = int(match.group(1)) if match else 0  # 0: filled in per well below
    return {
        "Metadata_Plate": plate,
        "Metadata_Well": well,
        "Metadata_Site": site,
        "Metadata_Compound": compound,
        "Metadata_Concentration": conc,
        "Metadata_Replicate": replicate,
        "Metadata_ImageNumber": image_no,
        "Metadata_TableNumber": table_no,
        "_Batch": batch,
        **paths,
    }


def parse_concentration(text: str) -> float | None:
    """A finite, non-negative float, or None."""
    try:
        value = float(text)
    except (ValueError, OverflowError):
        return None
    if not np.isfinite(value) or value < 0:
        return None
    return value


def concentration_key(value: float) -> str:
    # Concentrations come from two CSVs as text ("0.3", "0.30", "3e-1"); compare them at
    # six significant digits so float spelling never breaks the MOA join.
    return f"{float(value):.6g}"


def _moa_lookup(moas: pd.DataFrame, moa_csv: Path) -> dict[tuple[str, str], str]:
    lookup = {}
    for i, rec in enumerate(moas.itertuples(index=False)):
        compound, conc_text, moa = (str(v).strip() for v in rec)
        conc = parse_concentration(conc_text)
        if conc is None:
            raise DataError(
                f"{moa_csv}: row {i + 2}: column concentration: cannot read {conc_text!r} as a concentration"
            )  # !r keeps quoted newlines on one line
        lookup[(compound.lower(), concentration_key(conc))] = moa
    return lookup


def _assign_controls_and_moa(
    df: pd.DataFrame,
    moa_lookup: Mapping[tuple[str, str], str],
    negative_control: str,
    positive_controls: Iterable[tuple[str, float]],
) -> None:
    compound_l = df["Metadata_Compound"].str.lower()
    conc_key = df["Metadata_Concentration"].map(concentration_key)
    negative = compound_l == negative_control.lower()
    df.loc[negative, "Metadata_Compound"] = negative_control

    positive = pd.Series(False, index=df.index)
    for compound, conc in positive_controls:
        candidate = (compound_l == str(compound).lower()) & (conc_key == concentration_key(conc))
        if candidate.any():
            positive |= candidate & df["Metadata_Well"].isin(_control_positions(df, candidate))

    moa = [moa_lookup.get((c, k), UNKNOWN_MOA) for c, k in zip(compound_l, conc_key)]
    df["Metadata_MOA"] = moa
    df.loc[negative, "Metadata_MOA"] = negative_control
    df.loc[positive & ~negative, "Metadata_MOA"] = CONTROL_MOA
    df["Metadata_Control"] = np.where(negative, "negative", np.where(positive, "positive", "treatment"))

    # Site numbers missing from file names: number the images of each well in order.
    missing_site = df["Metadata_Site"] == 0
    if missing_site.any():
        order = df.groupby(["Metadata_Plate", "Metadata_Well"])["Metadata_ImageNumber"].rank(method="first")
        df.loc[missing_site, "Metadata_Site"] = order[missing_site].astype(int)


def _control_positions(df: pd.DataFrame, candidate: pd.Series) -> set[str]:
    """Well positions where a positive-control (compound, concentration) is the control.

    Controls hold the same positions on most plates of every week; a real treatment of the
    same compound and dose sits on a few plates of one week (possibly at one position on
    all its replicate plates). So count weeks first (BBBC021's `Week4/Week4_27481` folder
    names the week), plates when there is a single week.
    """
    batch = df["_Batch"]
    if batch.nunique() >= 2:
        spread = df.loc[candidate].groupby("Metadata_Well")["_Batch"].nunique()
        need = max(2, batch.nunique() / 2)
    elif df["Metadata_Plate"].nunique() >= 2:
        spread = df.loc[candidate].groupby("Metadata_Well")["Metadata_Plate"].nunique()
        need = max(2, df["Metadata_Plate"].nunique() / 2)
    else:
        return set(df.loc[candidate, "Metadata_Well"])  # one plate: cannot tell, all controls
    return set(spread.index[spread >= need])


def read_csv_table(path: Path, required: list[str], allow_empty: bool = False) -> pd.DataFrame:
    """Read a CSV as text cells, whatever its line endings (BBBC021's use bare CR).

    Every cell stays a string (no NaN guessing) so callers parse and report each value.
    """
    path = Path(path)
    if not os.path.isfile(path):
        raise DataError(f"{path}: CSV file not found")
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise DataError(f"{path}: cannot read CSV ({exc.strerror or exc})") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        text = raw.decode("latin-1")  # never fails; odd bytes then show up as bad values
    text = text.replace("\r\n", "\n").replace("\r", "\n").replace("\x00", "")
    if not text.strip():
        raise DataError(f"{path}: CSV file is empty")
    try:
        with warnings.catch_warnings():
            # pandas only warns when a row has more fields than the header and drops them;
            # that is a broken table (an unquoted comma), so make it an error.
            warnings.simplefilter("error", pd.errors.ParserWarning)
            table = pd.read_csv(
                io.StringIO(text), dtype=str, keep_default_na=False, na_filter=False,
                skipinitialspace=True, index_col=False,
            )
    except Exception as exc:  # pandas raises several parser error types; all mean "bad CSV"
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DataError(f"{path}: cannot parse CSV: {msg}") from None
    table.columns = [str(c).strip() for c in table.columns]
    table.columns = [_flatten(c) for c in table.columns]
    missing = [c for c in required if c not in table.columns]
    if missing:
        raise DataError(f"{path}: missing required column(s): {', '.join(missing)}")
    table = table[required].astype(str)
    if table.empty and not allow_empty:
        raise DataError(f"{path}: table has no rows")
    return table


# --------------------------------------------------------------------------- pixels


def read_channel(path: str | os.PathLike) -> np.ndarray:
    """One channel image as a 2-D array in its original dtype (uint8, uint16 or float32)."""
    path = Path(path)
    if not os.path.isfile(path):
        raise DataError(f"{path}: image file not found")
    image = _decode(path)
    if image.ndim > 2:
        squeezed = np.squeeze(image)
        image = squeezed if squeezed.ndim == 2 else image
    if image.size == 0:
        raise DataError(f"{path}: unreadable or corrupt TIFF (no image data)")
    if image.ndim != 2:
        raise DataError(
            f"{path}: expected a single-channel 2-D image, got shape {tuple(image.shape)}"
        )
    if image.dtype not in ACCEPTED_DTYPES:
        raise DataError(
            f"{path}: unsupported pixel type {image.dtype} (expected uint8, uint16 or float32)"
        )
    if image.dtype.kind == "f" and not np.isfinite(image).all():
        raise DataError(f"{path}: image contains NaN or infinite pixels")
    return image


def _decode(path: Path) -> np.ndarray:
    import tifffile

    # tifffile logs its own complaint about broken files; the DataError says it once.
    tiff_log = logging.getLogger("tifffile")
    level = tiff_log.level
    tiff_log.setLevel(logging.CRITICAL)
    try:
        return np.asarray(tifffile.imread(path))
    except tifffile.TiffFileError as exc:
        first_error = exc  # not a TIFF at all: maybe PNG/JPEG, let scikit-image try
    except Exception as exc:  # truncated strips, bad compression, ...: corrupt TIFF
        raise DataError(f"{path}: unreadable or corrupt TIFF ({_one_line(exc)})") from None
    finally:
        tiff_log.setLevel(level)
    try:
        from skimage import io as skio

        return np.asarray(skio.imread(path))
    except Exception:
        raise DataError(f"{path}: unreadable or corrupt image ({_one_line(first_error)})") from None


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def read_image_set(row: Mapping | pd.Series) -> np.ndarray:
    """The image set of one table row as HxWx3 float32 (DNA, Actin, Tubulin), raw values."""
    channels = [read_channel(row[f"PathName_{c}"]) for c in CHANNELS]
    shapes = {c: ch.shape for c, ch in zip(CHANNELS, channels)}
    if len(set(shapes.values())) != 1:
        raise DataError(
            f"{row['PathName_DNA']}: channel shapes differ within the image set: "
            + ", ".join(f"{c} {s}" for c, s in shapes.items())
        )
    return np.stack(channels, axis=-1).astype(np.float32, copy=False)
