"""User-facing errors.

Anything a user can cause (a bad file, a wrong column, a diverged run) raises a
`CytoganError` whose message is one line naming the file or field. The CLI prints that
line and exits with status 1 instead of a traceback.
"""


class CytoganError(Exception):
    """Base class: the message is meant for the user, one line, no traceback."""


class DataError(CytoganError):
    """Bad input data: missing/corrupt image, wrong CSV columns, empty plate, ..."""


class ConfigError(CytoganError):
    """Unknown config key, bad value, unknown architecture."""


class TrainingDivergedError(CytoganError):
    """A loss became NaN/inf; the last good checkpoint is kept."""


class ExportError(CytoganError):
    """Export refused (existing version) or an export is unreadable."""
