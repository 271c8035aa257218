"""User-facing errors.

Every mistake a user can make (bad file, bad data, bad option) raises an
``EdgeoptError`` whose message is one line naming the problem. The CLI prints
that line and exits non-zero; anything else is a bug and keeps its traceback.
"""


class EdgeoptError(Exception):
    """A problem with the user's input, reported as one line."""

    exit_code = 2


class ModelLoadError(EdgeoptError):
    """The model file is missing, corrupt or of an unknown kind."""


class DataError(EdgeoptError):
    """The dataset is missing, malformed, or does not fit the model."""


class ConfigError(EdgeoptError):
    """An option, recipe or config value is unknown or out of range."""


class ExportError(EdgeoptError):
    """The model cannot be lowered to the requested format or target."""


class ArtifactError(EdgeoptError):
    """An artifact folder is missing, incomplete or has been tampered with."""


class OutputError(EdgeoptError):
    """The output destination cannot be written: invalid, read-only, full, or busy."""


class OutputExistsError(EdgeoptError):
    """The output path exists and ``--force`` was not given."""


def first_line(exc: BaseException, limit: int = 200) -> str:
    """The first line of a third-party exception, cut to ``limit`` characters: parsers of
    damaged files put whole byte dumps and tracebacks in their messages (zipfile quotes
    the header it found), which would break the one-line rule."""
    text = (str(exc).strip().splitlines() or [""])[0] or type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."
