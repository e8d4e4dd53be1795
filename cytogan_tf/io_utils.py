"""Atomic file writes: a crash mid-write never leaves a half-written output behind.

Everything the toolkit writes goes to a temporary name in the same directory and is
renamed into place (os.replace is atomic on POSIX within one file system).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = ""):
    """Yield a temporary path next to `path`; rename it to `path` only on success.

    Use for writers that want a file name (pandas.to_parquet, savefig, TFRecordWriter).
    `suffix` keeps an extension that the writer uses to pick its format.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".tmp{suffix}", dir=path.parent)
    os.close(fd)
    # mkstemp makes the file private (0600); outputs should get the usual umask mode.
    os.chmod(tmp, 0o666 & ~_umask())
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n")


def _json_default(obj):
    # numpy scalars and paths show up in metadata dicts; store them as plain JSON.
    if hasattr(obj, "item"):
        return obj.item()
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


@contextlib.contextmanager
def atomic_directory(path: str | os.PathLike):
    """Yield a temporary directory; rename it to `path` on success.

    Refuses to replace an existing directory: callers that version their outputs
    (exports) rely on never overwriting one.
    """
    path = Path(path)
    if path.exists():
        raise FileExistsError(path)
    created = [p for p in reversed(path.parents) if not p.exists()]  # outermost first
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
        os.chmod(tmp, 0o777 & ~_umask())
        try:
            yield tmp
            os.rename(tmp, path)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    except BaseException:
        # A failed write (a full or read-only disk) leaves no empty folders of ours behind.
        for p in reversed(created):
            try:
                p.rmdir()
            except OSError:
                break
        raise


def write_table(df, stem: str | os.PathLike, formats=("parquet", "csv")) -> list[Path]:
    """Write a pandas table as `<stem>.parquet` and `<stem>.csv`, each atomically."""
    stem = Path(stem)
    written = []
    for fmt in formats:
        out = stem.with_name(stem.name + "." + fmt)
        with atomic_path(out, suffix="." + fmt) as tmp:
            if fmt == "parquet":
                df.to_parquet(tmp, index=False)
            elif fmt == "csv":
                df.to_csv(tmp, index=False)
            else:
                raise ValueError(f"unknown table format {fmt!r}")
        written.append(out)
    return written
