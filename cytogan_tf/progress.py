"""Progress bars that suit both a terminal and a log file.

On a terminal: an ordinary tqdm bar. When stderr is a file or pipe (a batch job, `2>log`)
tqdm's carriage-return redraws would pile up as one huge line, so the bar instead writes
a plain line at most every LOG_INTERVAL seconds.
"""

from __future__ import annotations

import sys

LOG_INTERVAL = 30.0


class _LineWriter:
    """A file-like for tqdm that turns each redraw into one newline-terminated line."""

    def __init__(self, stream):
        self.stream = stream

    def write(self, text):
        text = text.replace("\r", "").strip()
        if text:
            self.stream.write(text + "\n")

    def flush(self):
        self.stream.flush()


def progress_bar(iterable=None, *, enabled: bool = True, **kwargs):
    """`tqdm(iterable, **kwargs)` on stderr, line-per-interval when stderr is not a TTY."""
    from tqdm import tqdm

    stream = kwargs.pop("file", None) or sys.stderr
    if not enabled:
        return tqdm(iterable, disable=True, **kwargs)
    if hasattr(stream, "isatty") and stream.isatty():
        return tqdm(iterable, file=stream, dynamic_ncols=True, **kwargs)
    return tqdm(iterable, file=_LineWriter(stream), mininterval=LOG_INTERVAL,
                maxinterval=LOG_INTERVAL * 4, ncols=100, ascii=True, **kwargs)
